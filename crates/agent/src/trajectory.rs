//! The trajectory log: one JSON object per line for every prompt sent, model output, tool call,
//! tool result, context compaction and the final answer, with timings. The trainer learns from
//! these files; the schema is documented in docs/AGENT.md ("Trajectory log"). Every line has
//! `type`, `run` (an id shared by the lines of one run), `turn` and `t_ms` (since the run started).
//!
//! Not here: reading or converting trajectories (the trainer does that).

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub const SCHEMA_VERSION: u32 = 1;

pub struct Trajectory {
    out: Option<BufWriter<File>>,
    t0: Instant,
    pub run: String,
    pub lines: usize,
}

impl Trajectory {
    /// Append to `path` (created if missing); None logs nothing.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let out = match path {
            Some(p) => Some(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening the log {}", p.display()))?,
            )),
            None => None,
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let run = format!("{}-{}", now.as_millis(), std::process::id());
        Ok(Self { out, t0: Instant::now(), run, lines: 0 })
    }

    pub fn event(&mut self, kind: &str, turn: usize, fields: Value) -> Result<()> {
        let Some(out) = self.out.as_mut() else { return Ok(()) };
        let mut line = json!({"type": kind, "run": self.run, "turn": turn, "t_ms": (self.t0.elapsed().as_secs_f64() * 1e3 * 10.0).round() / 10.0});
        if let (Value::Object(l), Value::Object(f)) = (&mut line, fields) {
            l.extend(f);
        }
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        // Flushed per line: a run killed midway still leaves a readable log.
        out.flush().context("writing the trajectory log")?;
        self.lines += 1;
        Ok(())
    }

    pub fn unix_time() -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
    }
}
