//! The evaluation loop: for each item not yet in the log, ask the backend for k samples, score
//! them, and append one JSON line (so an interrupted run resumes where it stopped); then summarize
//! every logged item of this set: accuracy (pass@1) with a 95% interval, pass@k, format compliance.
//! Also the paired comparison of two logs.

use crate::backend::{Backend, ChatRequest, Reply, Sampling};
use crate::items::{Gold, Item, Kind};
use crate::score;
use crate::stats;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Config {
    pub samples: usize,
    pub parallel: usize,
    pub sampling: Sampling,
    pub seed: u64,
    /// Wall-clock limit for one code sample's tests.
    pub code_timeout: Duration,
    /// Code items with a benchmark input and a reference solution: time every passing sample
    /// against the reference (median of this many calls; 0: off) and log the speedup.
    pub efficiency: usize,
}

/// Score one sample: (score in [0, 1], extra fields for the log).
pub fn score_reply(item: &Item, reply: &Reply, code_timeout: Duration) -> Result<(f64, Value)> {
    Ok(match &item.gold {
        Gold::Number(g) => {
            let got = score::extract_number(&reply.text);
            (score::score_math(&reply.text, g), json!({"extracted": got}))
        }
        Gold::Countdown { numbers, target } => (
            score::score_countdown(&reply.text, numbers, *target),
            json!({"extracted": score::extract_expression(&reply.text)}),
        ),
        Gold::Code(tests) => {
            let r = score::score_code(&reply.text, tests, code_timeout)?;
            (
                r.share(),
                json!({"tests_passed": r.passed, "tests_total": r.total, "timed_out": r.timed_out, "load_error": r.load_error}),
            )
        }
        Gold::Choice { letter, n } => {
            let got = score::extract_choice(&reply.text, *n);
            ((got == Some(*letter)) as u8 as f64, json!({"extracted": got.map(String::from)}))
        }
        Gold::Tool(expected) => {
            let (name_ok, ok) = score::score_tool_call(&reply.tool_calls, expected);
            let calls: Vec<Value> = reply.tool_calls.iter().map(|(n, a)| json!({"name": n, "arguments": a})).collect();
            (ok as u8 as f64, json!({"name_ok": name_ok, "calls": calls}))
        }
    })
}

fn gold_json(g: &Gold) -> Value {
    match g {
        Gold::Number(n) => json!(n),
        Gold::Countdown { numbers, target } => json!({"numbers": numbers, "target": target}),
        Gold::Code(t) => json!({"entry_point": t.entry_point, "tests": t.tests.len()}),
        Gold::Choice { letter, .. } => json!(letter.to_string()),
        Gold::Tool(e) => e.clone(),
    }
}

/// Evaluate several items with one batched call (all their samples together); their log records.
fn eval_items_batched(items: &[&Item], backend: &dyn Backend, cfg: &Config) -> Vec<Result<Value>> {
    let reqs: Vec<ChatRequest> = items
        .iter()
        .flat_map(|it| {
            (0..cfg.samples).map(move |j| ChatRequest {
                messages: it.messages.clone(),
                tools: it.tools.clone(),
                seed: cfg.seed.wrapping_add(j as u64),
            })
        })
        .collect();
    let t = Instant::now();
    let mut replies = backend.chat_many(&reqs, &cfg.sampling).into_iter();
    // Samples share the batch's time; each is charged an equal part.
    let secs = t.elapsed().as_secs_f64() / reqs.len().max(1) as f64;
    items
        .iter()
        .map(|it| {
            let mut got = vec![];
            let mut err = None;
            for _ in 0..cfg.samples {
                match replies.next().expect("one reply per request") {
                    Ok(r) => got.push((r, secs)),
                    Err(e) => err = err.or(Some(e)),
                }
            }
            match err {
                Some(e) => Err(e.context(format!("item {}", it.id))),
                None => record(it, &got, cfg),
            }
        })
        .collect()
}

/// Evaluate one item: k samples, scored; the log record.
fn eval_item(item: &Item, backend: &dyn Backend, cfg: &Config) -> Result<Value> {
    let mut replies = vec![];
    for j in 0..cfg.samples {
        let t = Instant::now();
        let reply =
            backend.chat(&item.messages, item.tools.as_ref(), &cfg.sampling, cfg.seed.wrapping_add(j as u64))?;
        replies.push((reply, t.elapsed().as_secs_f64()));
    }
    record(item, &replies, cfg)
}

/// The log record of an item from its sampled replies (and the seconds each took).
fn record(item: &Item, replies: &[(Reply, f64)], cfg: &Config) -> Result<Value> {
    let mut samples = vec![];
    let (mut passes, mut score_sum, mut fmt) = (0usize, 0.0, 0usize);
    let mut timer = match &item.gold {
        Gold::Code(t) if cfg.efficiency > 0 => score::SpeedTimer::new(t, cfg.efficiency, cfg.code_timeout),
        _ => None,
    };
    for (reply, secs) in replies {
        let (s, mut extra) = score_reply(item, reply, cfg.code_timeout)?;
        if let (Some(timer), true) = (timer.as_mut(), s == 1.0) {
            let sp = timer.time(&reply.text)?;
            extra["bench_s"] = json!(sp.reply_s);
            extra["reference_bench_s"] = json!(sp.reference_s);
            extra["speedup"] = json!(sp.speedup);
        }
        let f = score::format_ok(&reply.text);
        passes += (s == 1.0) as usize;
        score_sum += s;
        fmt += f as usize;
        let mut rec = json!({"text": reply.text, "score": s, "format_ok": f, "tokens": reply.completion_tokens, "finish": reply.finish_reason, "secs": secs});
        if let (Value::Object(r), Value::Object(e)) = (&mut rec, extra) {
            r.extend(e);
        }
        samples.push(rec);
    }
    let k = replies.len();
    Ok(json!({
        "id": item.id,
        "task": item.kind.name(),
        "prompt": item.messages.as_array().and_then(|m| m.last()).and_then(|m| m.get("content")).cloned().unwrap_or(Value::Null),
        "gold": gold_json(&item.gold),
        "n": k,
        "correct": passes,
        "pass1": stats::pass_at_k(k, passes, 1),
        "pass_k": stats::pass_at_k(k, passes, k),
        "mean_score": score_sum / k as f64,
        "format_ok": fmt as f64 / k as f64,
        "samples": samples,
    }))
}

/// Scores a logged record again from its saved replies (after a scorer fix), without generating.
fn rescore(item: &Item, rec: &Value, cfg: &Config) -> Result<Value> {
    let samples = rec["samples"].as_array().filter(|s| !s.is_empty()).context("no samples to rescore")?;
    let replies: Vec<(Reply, f64)> = samples
        .iter()
        .map(|s| {
            let calls = s["calls"].as_array().map(|c| {
                c.iter().filter_map(|c| Some((c["name"].as_str()?.to_string(), c["arguments"].clone()))).collect()
            });
            let reply = Reply {
                text: s["text"].as_str().unwrap_or("").to_string(),
                tool_calls: calls.unwrap_or_default(),
                completion_tokens: s["tokens"].as_u64().unwrap_or(0) as usize,
                finish_reason: s["finish"].as_str().unwrap_or("").to_string(),
            };
            (reply, s["secs"].as_f64().unwrap_or(0.0))
        })
        .collect();
    record(item, &replies, cfg)
}

/// Re-scores every logged item of this set from its saved replies and rewrites the log (other
/// lines are kept as they are).
pub fn rescore_log(items: &[Item], log: &Path, cfg: &Config) -> Result<usize> {
    let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let by_id: HashMap<&str, &Item> = items.iter().map(|it| (it.id.as_str(), it)).collect();
    let (mut out, mut n) = (String::new(), 0);
    for line in text.lines() {
        let rec: Option<Value> = serde_json::from_str(line).ok();
        let item = rec.as_ref().and_then(|r| r["id"].as_str()).and_then(|id| by_id.get(id));
        match (rec.as_ref(), item) {
            (Some(r), Some(it)) => {
                out += &rescore(it, r, cfg)?.to_string();
                n += 1;
            }
            _ => out += line,
        }
        out.push('\n');
    }
    let tmp = log.with_extension("rescore.tmp");
    std::fs::write(&tmp, out).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, log).with_context(|| format!("replacing {}", log.display()))?;
    Ok(n)
}

/// Records already in the log, by id (later lines win). Broken lines (a run killed mid-write) are
/// skipped with a warning.
pub fn read_log(path: &Path) -> Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => match v.get("id").and_then(Value::as_str) {
                Some(id) => {
                    out.insert(id.to_string(), v);
                }
                None => eprintln!("warning: {}:{}: no id, ignored", path.display(), i + 1),
            },
            Err(e) => eprintln!("warning: {}:{}: ignored ({e})", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// Runs the items not yet logged, appending to `log`; returns every record of this item set.
pub fn run(items: &[Item], backend: &dyn Backend, cfg: &Config, log: Option<&Path>) -> Result<Vec<Value>> {
    if cfg.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let mut done = match log {
        Some(p) => read_log(p)?,
        None => HashMap::new(),
    };
    let mut seen = HashSet::new();
    let todo: Vec<&Item> = items.iter().filter(|it| !done.contains_key(&it.id) && seen.insert(it.id.clone())).collect();
    if !done.is_empty() {
        let have = items.iter().filter(|it| done.contains_key(&it.id)).count();
        eprintln!("resuming: {have} of {} items already in the log, {} to run", items.len(), todo.len());
    }
    let mut file = match log {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?,
            )
        }
        None => None,
    };
    let workers = if backend.parallel_ok() { cfg.parallel.max(1) } else { 1 }.min(todo.len().max(1));
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<Result<Value>>();
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let total = todo.len();
    // A batching backend takes a chunk of items per call, on one thread: four batches' worth, so
    // the batch stays full while the chunk's stragglers finish, and the log still grows steadily.
    let chunk = (4 * backend.batch_size()).div_ceil(cfg.samples).max(1);
    std::thread::scope(|sc| -> Result<()> {
        if backend.batch_size() > 1 {
            let tx = tx.clone();
            let todo = &todo;
            sc.spawn(move || {
                for part in todo.chunks(chunk) {
                    for r in eval_items_batched(part, backend, cfg) {
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            return;
                        }
                    }
                }
            });
        }
        for _ in 0..if backend.batch_size() > 1 { 0 } else { workers } {
            let tx = tx.clone();
            let (next, todo) = (&next, &todo);
            sc.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= todo.len() {
                    break;
                }
                let r = eval_item(todo[i], backend, cfg).with_context(|| format!("item {}", todo[i].id));
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    // Stop handing out work after an error; the others finish their current item.
                    next.store(todo.len(), Ordering::SeqCst);
                    break;
                }
            });
        }
        drop(tx);
        let (mut n, mut correct) = (0usize, 0.0);
        let mut first_err = None;
        for r in rx {
            match r {
                Ok(rec) => {
                    if let Some(f) = file.as_mut() {
                        writeln!(f, "{rec}").context("writing the log")?;
                        f.flush().context("writing the log")?;
                    }
                    n += 1;
                    correct += rec["pass1"].as_f64().unwrap_or(0.0);
                    if tty || n % 10 == 0 || n == total {
                        let el = start.elapsed().as_secs_f64();
                        let eta = el / n as f64 * (total - n) as f64;
                        eprint!(
                            "{}[{n}/{total}] pass@1 {:.3}  {:.0}s elapsed, ETA {:.0}s{}",
                            if tty { "\r" } else { "" },
                            correct / n as f64,
                            el,
                            eta,
                            if tty { "   " } else { "\n" }
                        );
                    }
                    done.insert(rec["id"].as_str().unwrap_or_default().to_string(), rec);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if tty && total > 0 {
            eprintln!();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    let mut seen = HashSet::new();
    Ok(items.iter().filter(|it| seen.insert(&it.id)).filter_map(|it| done.get(&it.id).cloned()).collect())
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub task: String,
    pub n: usize,
    pub samples: usize,
    /// Mean pass@1 and its 95% interval.
    pub pass1: (f64, f64, f64),
    pub pass_k: Option<(f64, f64, f64)>,
    /// Mean per-sample score (share of tests passed for code).
    pub mean_score: (f64, f64, f64),
    /// Share of samples in the `<think>…</think>` answer format, 95% Wilson interval.
    pub format: (f64, f64, f64),
    /// Tool calls with the right function name (tool task only).
    pub name_acc: Option<(f64, f64, f64)>,
    pub mean_tokens: f64,
    /// Passing code samples timed against the reference (`--efficiency`): how many, and the
    /// median and geometric mean of t_reference / t_sample.
    pub speedup: Option<(usize, f64, f64)>,
}

pub fn summarize(task: Kind, records: &[Value]) -> Summary {
    let col = |k: &str| records.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).collect::<Vec<_>>();
    let samples = records.first().and_then(|r| r["n"].as_u64()).unwrap_or(1) as usize;
    let all: Vec<&Value> = records.iter().flat_map(|r| r["samples"].as_array().into_iter().flatten()).collect();
    let fmt_ok = all.iter().filter(|s| s["format_ok"].as_bool() == Some(true)).count();
    let (flo, fhi) = stats::wilson(fmt_ok as f64, all.len());
    let name_acc = (task == Kind::Tool).then(|| {
        let v: Vec<f64> = all.iter().map(|s| (s["name_ok"].as_bool() == Some(true)) as u8 as f64).collect();
        stats::mean_ci(&v)
    });
    let tokens: f64 = all.iter().map(|s| s["tokens"].as_f64().unwrap_or(0.0)).sum();
    let mut speedups: Vec<f64> = all.iter().filter_map(|s| s["speedup"].as_f64()).filter(|x| *x > 0.0).collect();
    speedups.sort_by(f64::total_cmp);
    let speedup = (!speedups.is_empty()).then(|| {
        let geo = (speedups.iter().map(|x| x.ln()).sum::<f64>() / speedups.len() as f64).exp();
        (speedups.len(), speedups[speedups.len() / 2], geo)
    });
    Summary {
        task: task.name().into(),
        n: records.len(),
        samples,
        pass1: stats::mean_ci(&col("pass1")),
        pass_k: (samples > 1).then(|| stats::mean_ci(&col("pass_k"))),
        mean_score: stats::mean_ci(&col("mean_score")),
        format: (if all.is_empty() { 0.0 } else { fmt_ok as f64 / all.len() as f64 }, flo, fhi),
        name_acc,
        mean_tokens: if all.is_empty() { 0.0 } else { tokens / all.len() as f64 },
        speedup,
    }
}

impl Summary {
    pub fn to_json(&self) -> Value {
        let t = |x: (f64, f64, f64)| json!({"mean": x.0, "ci95": [x.1, x.2]});
        json!({
            "task": self.task, "items": self.n, "samples_per_item": self.samples,
            "pass@1": t(self.pass1),
            "pass@k": self.pass_k.map(t),
            "mean_score": t(self.mean_score),
            "format_compliance": t(self.format),
            "tool_name_accuracy": self.name_acc.map(t),
            "mean_completion_tokens": self.mean_tokens,
            "speedup_vs_reference": self.speedup.map(|(n, med, geo)| json!({"timed": n, "median": med, "geomean": geo})),
        })
    }

    pub fn print(&self) {
        let pct = |x: (f64, f64, f64)| format!("{:5.1}%  (95% CI {:.1}–{:.1}%)", 100.0 * x.0, 100.0 * x.1, 100.0 * x.2);
        println!("task {}: {} items, {} sample(s) each", self.task, self.n, self.samples);
        println!("  pass@1             {}", pct(self.pass1));
        if let Some(p) = self.pass_k {
            println!("  pass@{:<2}            {}", self.samples, pct(p));
        }
        if self.task == "code" {
            println!("  tests passed       {}", pct(self.mean_score));
        }
        if let Some(p) = self.name_acc {
            println!("  right function     {}", pct(p));
        }
        println!("  format compliance  {}", pct(self.format));
        println!("  mean output tokens {:.0}", self.mean_tokens);
        if let Some((n, med, geo)) = self.speedup {
            println!("  speed vs reference {med:.2}x median, {geo:.2}x geometric mean ({n} passing samples timed)");
        }
    }
}

/// Paired comparison of two logs on the items both contain, by pass@1.
pub fn compare(a: &Path, b: &Path) -> Result<(stats::Paired, usize, usize)> {
    let (la, lb) = (read_log(a)?, read_log(b)?);
    let mut ids: Vec<&String> = la.keys().filter(|k| lb.contains_key(*k)).collect();
    ids.sort();
    if ids.is_empty() {
        bail!("{} and {} have no item in common", a.display(), b.display());
    }
    let get =
        |l: &HashMap<String, Value>| ids.iter().map(|id| l[*id]["pass1"].as_f64().unwrap_or(0.0)).collect::<Vec<_>>();
    Ok((stats::paired(&get(&la), &get(&lb)), la.len() - ids.len(), lb.len() - ids.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--efficiency`: passing code is timed against the reference on the benchmark input (in
    /// milliseconds, so a loaded machine's noise stays small); a loop through strings is measured
    /// far slower than `sum`, failing code is not timed.
    #[test]
    fn efficiency_times_passing_code_against_the_reference() {
        let item = crate::items::item(
            &json!({"messages": [{"role": "user", "content": "Write f(xs) returning the sum."}],
                "tests": ["assert f([1, 2, 3]) == 6", "assert f([]) == 0"], "entry_point": "f",
                "answer": "def f(xs):\n    return sum(xs)", "bench": "args = (list(range(300000)),)"}),
            Kind::Code,
        )
        .unwrap();
        let reply = |code: &str| (Reply { text: format!("```python\n{code}\n```"), ..Default::default() }, 0.0);
        let replies = [
            reply("def f(xs):\n    return sum(xs)"),
            reply("def f(xs):\n    t = 0\n    for x in xs:\n        t += int(str(x))\n    return t"),
            reply("def f(xs):\n    return 0"),
            // Cut at the token limit mid-way through an extra function: timed on what the tests ran.
            (Reply { text: "```python\ndef f(xs):\n    return sum(xs)\n\ndef check(f):\n    assert f([1, 2".into(), ..Default::default() }, 0.0),
        ];
        let sampling = Sampling { max_tokens: 16, temperature: 0.0, top_p: 1.0 };
        let cfg = Config { samples: 4, parallel: 1, sampling, seed: 0, code_timeout: Duration::from_secs(20), efficiency: 3 };
        let rec = record(&item, &replies, &cfg).unwrap();
        let s = rec["samples"].as_array().unwrap();
        let (fast, slow) = (s[0]["speedup"].as_f64().unwrap(), s[1]["speedup"].as_f64().unwrap());
        // Only rankings: the same code as the reference, timed at ~1 ms on a shared host, measured
        // 0.499 of it on one CI run and 0.215 on another (while an evaluation held both cores), so
        // no absolute bound holds; the ~50x slower loop stays far below either way.
        assert!(fast > 5.0 * slow, "fast {fast}, slow {slow}: {s:?}");
        assert!(s[2].get("speedup").is_none(), "failing code is not timed: {:?}", s[2]);
        assert!(s[3]["speedup"].as_f64().is_some_and(|x| x > 5.0 * slow), "truncated reply: {:?}", s[3]);
        let sum = summarize(Kind::Code, &[rec.clone()]);
        assert_eq!(sum.speedup.map(|x| x.0), Some(3));
        // Off by default: nothing is timed.
        let rec = record(&item, &replies, &Config { efficiency: 0, ..cfg }).unwrap();
        assert!(rec["samples"][0].get("speedup").is_none());
    }
}
