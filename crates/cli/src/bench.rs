//! `nanbeige bench`: prefill and decode speed of a model on this machine, next to the machine's
//! memory read bandwidth and the decode ceiling it implies (bandwidth / weight bytes per token).
//! Same tests as llama.cpp's llama-bench (pp: a p-token prompt into an empty cache; tg: n tokens
//! one at a time), so `scripts/bench/compare-llamacpp.sh` can put the two side by side.
//!
//! Decode at a context depth fills the cache with a chunked prefill first, which is slow at 32K
//! tokens with today's kernels; depths are therefore opt-in (`--ctx-depths 0,8192,32768`).
//! The measuring is in nanbeige_engine::{bench, machine}; this file parses, validates and prints.

use crate::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use nanbeige_engine::bench::{self, Decode};
use nanbeige_engine::machine;
use nanbeige_model::LoadOptions;
use serde_json::json;
use std::time::Instant;

/// Buffer for the bandwidth measurement: far beyond any cache.
const BANDWIDTH_BUFFER: usize = 1 << 30;
const BANDWIDTH_RUNS: usize = 5;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens for the prefill test.
    #[arg(short = 'p', long = "prompt-tokens", default_value_t = 512)]
    pub prompt: usize,
    /// Tokens to decode in each decode test.
    #[arg(short = 'n', long = "gen-tokens", default_value_t = 128)]
    pub gen: usize,
    /// Threads for the compute pool (default: all logical CPUs).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Comma-separated context depths to decode at (the cache is filled by chunked prefill first).
    #[arg(long, default_value = "0")]
    pub ctx_depths: String,
    /// Fill the cache for --ctx-depths with random keys and values instead of a prefill: the same
    /// decode cost, without hours of prefill for 32K tokens of a 3B model on a small machine.
    #[arg(long)]
    pub random_fill: bool,
    /// Also decode this many sequences together (the server's batched step) and report the
    /// aggregate tokens/s against one sequence's (1: skip).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Repetitions of each test (results are the mean, with the standard deviation).
    #[arg(short = 'r', long, default_value_t = 1)]
    pub reps: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Validated settings.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub threads: usize,
    pub depths: Vec<usize>,
}

pub fn parse_depths(s: &str) -> Result<Vec<usize>> {
    let mut out = vec![];
    for part in s.split(',') {
        let p = part.trim();
        let Ok(d) = p.parse::<usize>() else {
            bail!("--ctx-depths: `{p}` is not a token count (expected e.g. 0,8192,32768)");
        };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

pub fn validate(a: &BenchArgs) -> Result<Plan> {
    if a.prompt == 0 {
        bail!("-p/--prompt-tokens must be at least 1");
    }
    if a.gen == 0 {
        bail!("-n/--gen-tokens must be at least 1");
    }
    if a.reps == 0 {
        bail!("-r/--reps must be at least 1");
    }
    if a.batch == 0 || a.batch > 256 {
        bail!("--batch must be 1 to 256");
    }
    let threads = match a.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) if t > 1024 => bail!("--threads {t} is more than 1024"),
        Some(t) => t,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    Ok(Plan { threads, depths: parse_depths(&a.ctx_depths)? })
}

pub fn bench(mut a: BenchArgs) -> Result<()> {
    let plan = validate(&a)?;
    // candle sizes its CPU work pools from these (read when the pools start, i.e. before any
    // tensor work); setting them here, first thing, makes --threads hold for every kernel.
    std::env::set_var("RAYON_NUM_THREADS", plan.threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", plan.threads.to_string());
    let max_depth = plan.depths.iter().copied().max().unwrap_or(0);
    let need = a.prompt.max(max_depth + a.gen);
    if a.model.ctx.is_none() {
        a.model.ctx = Some(need);
    }
    let log = |msg: String| {
        if !a.json {
            eprintln!("{msg}");
        }
    };

    let t_load = Instant::now();
    let lm = a.model.load()?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    // Before any test runs, so a too-deep request fails at once rather than after the prefill.
    bench::check_fits(&lm, need)?;
    let opts = LoadOptions {
        dtype: a.model.dtype.as_deref().map(nanbeige_engine::load::parse_dtype).transpose()?,
        dequantize: a.model.dequantize,
        progress: false,
    };
    let weights = bench::weight_bytes(&lm, &opts)?;
    bench::warmup(&lm)?;
    log(format!("bench: prefill of {} tokens ...", a.prompt));
    let pp = bench::prefill(&lm, a.prompt, a.reps, 42)?;
    let mut decodes: Vec<Decode> = vec![];
    for &d in &plan.depths {
        log(format!("bench: decode of {} tokens at depth {d} ...", a.gen));
        decodes.push(bench::decode(&lm, d, a.gen, a.reps, 43, a.random_fill)?);
    }
    let batched = if a.batch > 1 {
        log(format!("bench: decode of {} tokens for {} sequences together ...", a.gen, a.batch));
        Some(bench::decode_batch(&lm, a.batch, a.gen, a.reps, 44)?)
    } else {
        None
    };
    let peak_rss = machine::peak_rss_bytes();
    let cfg = lm.model.cfg.clone();
    let (path, format, context_len, kv_type) = (lm.path.clone(), lm.format, lm.context_len, lm.model.kv_type);
    drop(lm);

    log("bench: measuring memory read bandwidth ...".into());
    // With the benchmark's thread count (the ceiling) and with one thread (for reference: one core
    // cannot saturate the memory system on its own).
    let bw = machine::read_bandwidth(BANDWIDTH_BUFFER, &[plan.threads, 1], BANDWIDTH_RUNS);
    let (bandwidth, bandwidth_1) = (bw[0], bw[1]);
    let cpu = machine::cpu_info();
    // The cache holds K and V for every layer: what a decode step reads besides weights.
    let kv_bytes_per_token = (cfg.num_layers * kv_type.bytes_per_token_layer(cfg.num_kv_heads, cfg.head_dim)) as f64;
    let ceiling = |depth: usize| bandwidth / (weights.per_token as f64 + depth as f64 * kv_bytes_per_token);
    let threads = candle_core::utils::get_num_threads();

    // The batched test decodes from empty caches: compare it with the depth-0 run.
    let one_sequence = decodes.iter().find(|d| d.depth == 0).map(|d| d.stat.tokens_per_sec);
    let decode_json: Vec<_> = decodes
        .iter()
        .map(|d| {
            let c = ceiling(d.depth);
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["ceiling_tokens_per_sec"] = json!(c);
            v["fraction_of_ceiling"] = json!(d.stat.tokens_per_sec / c);
            v
        })
        .collect();
    if a.json {
        let out = json!({
            "model": {
                "path": path, "format": format!("{format:?}"), "arch": cfg.arch.name(),
                "params": cfg.num_params(), "quant": weights.label,
                "weight_bytes_per_token": weights.per_token, "weight_types": weights.by_type,
                "load_seconds": load_seconds, "context_len": context_len, "kv_cache": kv_type.name(),
            },
            "machine": {
                "cpu": cpu.model, "logical_cpus": cpu.logical_cpus, "threads": threads,
                "features": cpu.features, "kernel_path": cpu.kernel_path, "prefetch_bytes": cpu.prefetch_bytes,
                "decode_streams": cpu.decode_streams, "amx_used": cpu.amx_used,
                "read_bandwidth_bytes_per_sec": bandwidth,
                "read_bandwidth_1_thread_bytes_per_sec": bandwidth_1,
            },
            "prefill": pp,
            "decode": decode_json.first(),
            "decode_at_depths": decode_json,
            "decode_batch": batched.as_ref().map(|b| json!({"sequences": a.batch, "stat": b,
                "vs_one_sequence": one_sequence.map(|o| b.tokens_per_sec / o)})),
            "peak_rss_bytes": peak_rss,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    let gb = |b: f64| b / 1e9;
    println!(
        "model    {} ({}, {:.2}B parameters, {}, {:.2} GB of weights read per token)",
        path.display(),
        cfg.arch.name(),
        cfg.num_params() as f64 / 1e9,
        weights.label,
        gb(weights.per_token as f64)
    );
    println!(
        "machine  {} ({} logical CPUs), {threads} threads; {}; kernels: {}, {}, {} weight stream(s) per core in decode; AMX never used",
        cpu.model.as_deref().unwrap_or("unknown CPU"),
        cpu.logical_cpus,
        cpu.features.join(" "),
        cpu.kernel_path,
        match cpu.prefetch_bytes {
            0 => "no software prefetch".to_string(),
            b => format!("prefetch {b} bytes ahead"),
        },
        cpu.decode_streams
    );
    let rss = peak_rss.map(|b| format!("{:.2} GB", gb(b as f64))).unwrap_or_else(|| "unknown".into());
    println!(
        "memory   read bandwidth {:.1} GB/s with {} threads ({:.1} GB/s with 1; 1 GiB buffer, best of {BANDWIDTH_RUNS}); peak RSS {rss}",
        gb(bandwidth),
        plan.threads,
        gb(bandwidth_1)
    );
    println!("load     {load_seconds:.1} s; KV cache {}", kv_type.name());
    println!();
    println!("{:<16} {:>12} {:>10} {:>14} {:>11}", "test", "tokens/s", "±", "ceiling t/s", "of ceiling");
    println!(
        "{:<16} {:>12.2} {:>10.2} {:>14} {:>11}",
        format!("pp{}", a.prompt),
        pp.stat.tokens_per_sec,
        pp.stat.stddev,
        "-",
        "-"
    );
    for d in &decodes {
        let c = ceiling(d.depth);
        println!(
            "{:<16} {:>12.2} {:>10.2} {:>14.2} {:>10.0}%",
            format!("tg{} @ d{}", a.gen, d.depth),
            d.stat.tokens_per_sec,
            d.stat.stddev,
            c,
            100.0 * d.stat.tokens_per_sec / c
        );
        if let (Some(s), Some(tps)) = (d.fill_seconds, d.fill_tokens_per_sec) {
            println!("{:<16} {:>12.2}   (filling the cache to depth {} took {s:.1} s)", "", tps, d.depth);
        }
    }
    if let Some(b) = &batched {
        println!(
            "{:<16} {:>12.2} {:>10.2}   aggregate of {} sequences decoded together{}",
            format!("tg{} x{}", a.gen, a.batch),
            b.tokens_per_sec,
            b.stddev,
            a.batch,
            one_sequence.map(|o| format!(": {:.2}x one sequence", b.tokens_per_sec / o)).unwrap_or_default()
        );
    }
    println!();
    println!("time to first token ({}-token prompt): {:.0} ms", a.prompt, pp.time_to_first_token_ms);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        b: BenchArgs,
    }

    fn args(extra: &[&str]) -> BenchArgs {
        let mut v = vec!["bench"];
        v.extend_from_slice(extra);
        Wrap::try_parse_from(v).unwrap().b
    }

    #[test]
    fn defaults_match_llama_bench() {
        let a = args(&[]);
        assert_eq!((a.prompt, a.gen, a.reps), (512, 128, 1));
        assert_eq!(validate(&a).unwrap().depths, vec![0]);
    }

    #[test]
    fn depths_parse_and_dedupe() {
        assert_eq!(parse_depths("0, 8192,32768,8192").unwrap(), vec![0, 8192, 32768]);
        let e = parse_depths("0,8k").unwrap_err().to_string();
        assert!(e.contains("`8k` is not a token count"), "{e}");
        assert!(parse_depths("").is_err());
        assert!(parse_depths("-1").is_err());
    }

    #[test]
    fn bad_numbers_are_one_clear_error() {
        for (flags, needle) in [
            (&["-p", "0"][..], "--prompt-tokens must be at least 1"),
            (&["-n", "0"][..], "--gen-tokens must be at least 1"),
            (&["--threads", "0"][..], "--threads must be at least 1"),
            (&["--threads", "5000"][..], "more than 1024"),
            (&["-r", "0"][..], "--reps must be at least 1"),
            (&["--batch", "0"][..], "--batch must be 1 to 256"),
        ] {
            let e = validate(&args(flags)).unwrap_err().to_string();
            assert!(e.contains(needle), "{flags:?}: {e}");
        }
        assert_eq!(
            validate(&args(&["-t", "2", "--ctx-depths", "0,64"])).unwrap(),
            Plan { threads: 2, depths: vec![0, 64] }
        );
    }
}
