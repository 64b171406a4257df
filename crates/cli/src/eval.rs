//! `nanbeige eval TASK`: evaluates a model (in-process, or any OpenAI-compatible endpoint) on math,
//! countdown, code (pass@k), multiple-choice or tool-call items from a JSONL file or a built-in
//! held-out set; logs every item (re-running resumes) and prints accuracy with 95% intervals.
//! `nanbeige eval compare A.jsonl B.jsonl`: paired comparison of two logs.

use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use nanbeige_eval::backend::{Backend, Endpoint, Engine, Sampling};
use nanbeige_eval::items::{self, Kind};
use nanbeige_eval::runner::{self, Config};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct EvalArgs {
    /// math, countdown, code, mc, tool; or `compare` / `winrate` followed by two log files.
    pub task: String,
    /// For `compare`: the two logs (A, then B).
    pub logs: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Use an OpenAI-compatible server instead of a local model (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name to send to the endpoint.
    #[arg(long)]
    pub api_model: Option<String>,
    /// API key for the endpoint (default: $OPENAI_API_KEY).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Items as JSONL (GSM8K, HumanEval, MBPP, multiple-choice, tool-call or our chat layout).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use a built-in held-out set instead: arith, add, add-compare, word, countdown or code.
    #[arg(long)]
    pub gen: Option<String>,
    /// Items to generate with --gen, or the first N items of --data.
    #[arg(long)]
    pub n: Option<usize>,
    /// Seed of the generated set and of sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples per item (pass@k with k = samples).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Requests in flight at once: for an endpoint, concurrent HTTP requests (default 1); for the
    /// local engine, sequences decoded together in one batch (default 8)
    #[arg(long)]
    pub parallel: Option<usize>,
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Default: 0 (greedy) with one sample, 0.8 with several.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Per-item JSONL log; items already in it are skipped (resume).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds allowed for one sample's code tests.
    #[arg(long, default_value_t = 10)]
    pub code_timeout: u64,
    /// Code: time each passing sample against the item's reference solution on its benchmark
    /// input (built-in code set), median of N calls; logs the speedup (0: off).
    #[arg(long, default_value_t = 0)]
    pub efficiency: usize,
    /// `winrate`: the judge first answers each question itself and judges against its own answer
    /// (for numbers: the reply whose final number is the judge's wins).
    #[arg(long)]
    pub judge_solves: bool,
    /// Score the replies already in --out again (after a scorer change) instead of generating.
    #[arg(long)]
    pub rescore: bool,
    /// Seconds allowed for one endpoint request.
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    if a.task == "compare" {
        return compare(&a.logs);
    }
    if a.task == "winrate" {
        return winrate(&a);
    }
    if a.judge_solves {
        bail!("--judge-solves is for `eval winrate` (the judge of two logs)");
    }
    if !a.logs.is_empty() {
        bail!("unexpected arguments after the task: {:?}", a.logs);
    }
    let kind = Kind::parse(&a.task)?;
    let items = match (&a.data, &a.gen) {
        (Some(_), Some(_)) => bail!("give --data or --gen, not both"),
        (None, None) => bail!("give the items: --data FILE.jsonl or --gen TASK --n N"),
        (Some(p), None) => {
            let mut it = items::load_file(p, kind)?;
            if let Some(n) = a.n {
                it.truncate(n);
            }
            it
        }
        (None, Some(g)) => {
            let (gk, it) = items::generated(g, a.n.unwrap_or(100), a.seed)?;
            if gk != kind {
                bail!("--gen {g} makes {} items, not {}", gk.name(), kind.name());
            }
            it
        }
    };
    let cfg = Config {
        samples: a.samples,
        parallel: a.parallel.unwrap_or(1),
        sampling: Sampling {
            max_tokens: a.max_tokens,
            temperature: a.temperature.unwrap_or(if a.samples > 1 { 0.8 } else { 0.0 }),
            top_p: a.top_p,
        },
        seed: a.seed,
        code_timeout: Duration::from_secs(a.code_timeout.max(1)),
        efficiency: a.efficiency,
    };
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if a.rescore {
        let log = a.out.as_deref().context("--rescore needs the log: --out LOG.jsonl")?;
        let n = runner::rescore_log(&items, log, &cfg)?;
        eprintln!("rescored {n} logged items");
        let logged = runner::read_log(log)?;
        let records: Vec<_> = items.iter().filter_map(|it| logged.get(&it.id).cloned()).collect();
        return print_summary(kind, &records, a.json);
    }
    let backend: Box<dyn Backend> = match &a.endpoint {
        Some(url) => Box::new(Endpoint::new(
            url,
            a.api_model.clone(),
            a.api_key.clone(),
            Duration::from_secs(a.request_timeout),
        )?),
        None => Box::new(Engine { lm: a.model.load()?, batch: a.parallel.unwrap_or(8) }),
    };
    let records = runner::run(&items, backend.as_ref(), &cfg, a.out.as_deref())?;
    print_summary(kind, &records, a.json)
}

fn print_summary(kind: Kind, records: &[serde_json::Value], json: bool) -> Result<()> {
    let summary = runner::summarize(kind, records);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    } else {
        summary.print();
    }
    Ok(())
}

/// `eval winrate A.jsonl B.jsonl --endpoint JUDGE`: how often a judge prefers B's reply to A's on
/// the items both logs hold (first sample of each). Each pair is judged in both orders (position
/// bias cancels); a tie counts one half. Prints the win rate of B with its 95% interval.
fn winrate(a: &EvalArgs) -> Result<()> {
    use nanbeige_train::rewards::{Judge, Preference};
    let [la, lb] = a.logs.as_slice() else { bail!("usage: nanbeige eval winrate A.jsonl B.jsonl --endpoint JUDGE_URL") };
    let url = a.endpoint.as_deref().context("winrate needs the judge: --endpoint URL (an OpenAI-compatible server)")?;
    let judge_backend = Endpoint::new(url, a.api_model.clone(), a.api_key.clone(), Duration::from_secs(a.request_timeout))?;
    let judge = Judge::new(&judge_backend, 16, a.judge_solves);
    let (ra, rb) = (runner::read_log(la)?, runner::read_log(lb)?);
    let mut ids: Vec<&String> = ra.keys().filter(|k| rb.contains_key(*k)).collect();
    ids.sort();
    if let Some(n) = a.n {
        ids.truncate(n);
    }
    if ids.is_empty() {
        bail!("the two logs share no items");
    }
    let text = |r: &serde_json::Value| r["samples"][0]["text"].as_str().unwrap_or("").to_string();
    let mut scores = vec![];
    for id in &ids {
        let (x, y) = (&ra[*id], &rb[*id]);
        let q = x["prompt"].as_str().unwrap_or("");
        let item = nanbeige_eval::items::Item {
            id: (*id).clone(),
            kind: Kind::Math,
            messages: serde_json::json!([{"role": "user", "content": q}]),
            tools: None,
            gold: nanbeige_eval::items::Gold::Number(String::new()),
        };
        let rep = |t: String| nanbeige_eval::backend::Reply { text: t, ..Default::default() };
        scores.push(judge.prefer(&item, &rep(text(y)), &rep(text(x)))?);
        eprint!("\rjudged {}/{}", scores.len(), ids.len());
    }
    eprintln!();
    let (m, lo, hi) = nanbeige_eval::stats::mean_ci(&scores);
    let (wins, ties) = (scores.iter().filter(|&&s| s > 0.5).count(), scores.iter().filter(|&&s| s == 0.5).count());
    println!(
        "B over A: win rate {:.1}% (95% CI {:.1}–{:.1}%) on {} items: {wins} wins, {ties} ties, {} losses",
        100.0 * m,
        100.0 * lo,
        100.0 * hi,
        scores.len(),
        scores.len() - wins - ties
    );
    Ok(())
}

fn compare(logs: &[PathBuf]) -> Result<()> {
    let [a, b] = logs else { bail!("usage: nanbeige eval compare A.jsonl B.jsonl") };
    let (p, only_a, only_b) = runner::compare(a, b).context("comparing the logs")?;
    println!("{} items in both logs ({only_a} only in A, {only_b} only in B)", p.n);
    println!("  A: {}  pass@1 {:.1}%", a.display(), 100.0 * p.mean_a);
    println!("  B: {}  pass@1 {:.1}%", b.display(), 100.0 * p.mean_b);
    println!("  B - A: {:+.1} points  (paired 95% CI {:+.1} to {:+.1})", 100.0 * p.diff, 100.0 * p.lo, 100.0 * p.hi);
    if let Some(pv) = p.p_value {
        println!("  McNemar exact test: {} right only in A, {} only in B, p = {:.4}", p.only_a, p.only_b, pv);
    }
    // With the checker as the judge of each pair of answers (a tie when both or neither pass),
    // B's win rate is 1/2 + (B - A)/2, and so is its interval. With several samples per item the
    // per-item pass rates make it the expected win rate of one sample of B against one of A.
    let what = if p.p_value.is_some() { "" } else { " (one sample of each per item, expected)" };
    println!(
        "  win rate of B over A, the checker judging{what}: {:.1}% (95% CI {:.1} to {:.1}%)",
        50.0 + 50.0 * p.diff,
        50.0 + 50.0 * p.lo,
        50.0 + 50.0 * p.hi
    );
    Ok(())
}
