//! `nanbeige train sft|distill|bench|export` (RL commands: train_rl.rs): argument parsing for the training crate (nanbeige-train), which
//! holds all the logic. Models resolve like everywhere else (a directory, a .gguf, or a short name).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use nanbeige_engine::hub;
use nanbeige_train::checkpoint::Origin;
use nanbeige_train::distill::{self, DpoOptions};
use nanbeige_train::lora::LoraSpec;
use nanbeige_train::sft::{self, KdOptions, SftOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    cmd: TrainCmd,
}

#[derive(Subcommand)]
enum TrainCmd {
    /// Supervised fine-tuning on chat JSONL (loss on assistant tokens only), full or LoRA.
    Sft(SftArgs),
    /// Distill a teacher into a student: token-level KD, sequence-level, or DPO toward the teacher.
    Distill(DistillArgs),
    /// Point-wise RL (GRPO): groups of sampled replies, verifiable rewards (math, code tests, code
    /// efficiency with --efficiency), group-normalized advantages, clipped token-level loss.
    Grpo(crate::train_rl::RlArgs),
    /// Pair-wise RL: the GRPO loop with rewards = win rates inside each group, under a reward
    /// model (--rm) or an LLM judge (--judge URL).
    Pairwise(crate::train_rl::PairwiseArgs),
    /// Train a pairwise reward model (scalar head, Bradley-Terry loss) on preference pairs.
    Rm(crate::train_rl::PairArgs),
    /// Offline DPO on preference pairs.
    Dpo(crate::train_rl::PairArgs),
    /// Agent trajectories (`research --log`) to SFT data with a turn filter, and agentic RL with
    /// the final reward credited to the turns.
    Trajectories(crate::train_rl::TrajectoryArgs),
    /// Training throughput: forward + backward tokens/s on one packed row (and the AdamW step).
    Bench(BenchArgs),
    /// Write a model (e.g. a GGUF, dequantized) as an HF safetensors directory, as training saves.
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long, short = 'm')]
    model: Option<String>,
    #[arg(long)]
    out: PathBuf,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Tokens in the row.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Benchmark LoRA of this rank instead of full fine-tuning.
    #[arg(long)]
    lora: Option<usize>,
    /// Also time the AdamW step.
    #[arg(long)]
    optimizer: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Flags shared by SFT and distillation.
#[derive(Args, Clone)]
pub struct LoopArgs {
    /// Output directory: the trained model (HF format), metrics.jsonl, loss.svg, checkpoint/.
    #[arg(long)]
    out: PathBuf,
    /// Chat JSONL: one {"messages": [...], "tools": [...]?} per line.
    #[arg(long)]
    data: Option<PathBuf>,
    /// LoRA rank (default: full fine-tuning). The saved model has the adapters merged in.
    #[arg(long)]
    lora: Option<usize>,
    /// LoRA alpha (default 2 x rank).
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Comma-separated module names to adapt (default: all attention and MLP projections).
    #[arg(long)]
    lora_targets: Option<String>,
    /// Optimizer steps (default: one epoch, or --epochs).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    epochs: Option<f64>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// Final learning rate of cosine/WSD (default lr / 10).
    #[arg(long)]
    min_lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// constant, cosine, wsd, or an FG-WSD JSON config (phases with data mixtures).
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Tokens per packed row (micro-batch); examples are packed without crossing attention.
    #[arg(long, default_value_t = 2048)]
    batch_tokens: usize,
    /// Rows per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Longest example in tokens (default: --batch-tokens); longer lines are reported and skipped.
    #[arg(long)]
    max_len: Option<usize>,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Weight dtype: f32, or bf16 (f32 master weights in the optimizer).
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a resumable checkpoint every N steps (always at the end).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Continue from OUT/checkpoint (same command otherwise).
    #[arg(long)]
    resume: bool,
    /// Stop after N steps of this invocation, leaving a checkpoint (for interruption tests).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
    /// No progress output.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
pub struct SftArgs {
    /// Model to fine-tune: HF directory, .gguf (dequantized), or a short name (smollm2).
    #[arg(long, short = 'm')]
    model: Option<String>,
    #[command(flatten)]
    common: LoopArgs,
}

#[derive(Args)]
pub struct DistillArgs {
    #[arg(long)]
    teacher: String,
    #[arg(long)]
    student: String,
    /// token (KL to the teacher, same vocabulary), seq (SFT on teacher answers), dpo (prefer the
    /// teacher's answer over the student's own sample).
    #[arg(long, default_value = "token")]
    mode: String,
    /// Token-level: softmax temperature.
    #[arg(long, default_value_t = 1.0)]
    kd_temperature: f64,
    /// Token-level: weight of the KL term (the rest is cross-entropy on the data).
    #[arg(long, default_value_t = 1.0)]
    kd_alpha: f64,
    /// seq/dpo: most tokens per generated answer.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// seq/dpo: sampling temperature of the generations.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// dpo: strength of the preference (beta).
    #[arg(long, default_value_t = 0.1)]
    beta: f64,
    /// dpo: pairs per optimizer step.
    #[arg(long, default_value_t = 4)]
    pairs_per_step: usize,
    /// seq: teacher answers decoded together in one batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[command(flatten)]
    common: LoopArgs,
}

fn sft_options(model: PathBuf, a: &LoopArgs) -> Result<SftOptions> {
    let mut o = SftOptions::new(model, a.data.clone(), a.out.clone());
    o.lora = a.lora.map(|r| LoraSpec::new(r, a.lora_alpha, a.lora_targets.as_deref())).transpose()?;
    o.steps = a.steps;
    o.epochs = a.epochs;
    o.lr = a.lr;
    o.min_lr = a.min_lr;
    o.warmup = a.warmup;
    o.schedule = a.schedule.clone();
    o.batch_tokens = a.batch_tokens;
    o.accum = a.accum;
    o.max_len = a.max_len;
    o.clip = a.clip;
    o.weight_decay = a.weight_decay;
    o.dtype = match a.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "bf16" => candle_core::DType::BF16,
        other => bail!("--dtype {other}: training supports f32 and bf16"),
    };
    o.seed = a.seed;
    o.save_every = a.save_every;
    o.resume = a.resume;
    o.stop_after = a.stop_after;
    o.progress = !a.quiet;
    Ok(o)
}

fn print_summary(s: &sft::Summary) {
    println!(
        "trained {} steps: loss {:.4} -> {:.4}, {} tokens in {:.1}s ({:.0} tokens/s){}; model saved to {}",
        s.steps,
        s.first_loss,
        s.last_loss,
        s.tokens,
        s.seconds,
        s.tokens_per_sec,
        if s.bad_lines > 0 { format!(", {} bad lines skipped", s.bad_lines) } else { String::new() },
        s.out.display()
    );
}

pub fn train(a: TrainArgs) -> Result<()> {
    match a.cmd {
        TrainCmd::Sft(s) => {
            let model = hub::resolve(s.model.as_deref())?;
            let o = sft_options(model, &s.common)?;
            print_summary(&sft::train(&o)?);
            Ok(())
        }
        TrainCmd::Distill(d) => distill_cmd(d),
        TrainCmd::Grpo(g) => crate::train_rl::grpo_cmd(g),
        TrainCmd::Pairwise(p) => crate::train_rl::pairwise_cmd(p),
        TrainCmd::Rm(p) => crate::train_rl::rm_cmd(p),
        TrainCmd::Dpo(p) => crate::train_rl::dpo_cmd(p),
        TrainCmd::Trajectories(t) => crate::train_rl::trajectories_cmd(t),
        TrainCmd::Bench(b) => bench_cmd(b),
        TrainCmd::Export(e) => {
            let model = hub::resolve(e.model.as_deref())?;
            let dtype = match e.dtype.as_str() {
                "f32" => candle_core::DType::F32,
                "bf16" => candle_core::DType::BF16,
                other => bail!("--dtype {other}: f32 or bf16"),
            };
            nanbeige_train::checkpoint::export(&model, &e.out, dtype)?;
            println!("wrote {}", e.out.display());
            Ok(())
        }
    }
}

fn bench_cmd(b: BenchArgs) -> Result<()> {
    if b.tokens < 2 || b.runs == 0 {
        bail!("--tokens must be at least 2 and --runs at least 1");
    }
    let model = hub::resolve(b.model.as_deref())?;
    let r = nanbeige_train::bench::throughput(&model, b.tokens, b.warmup, b.runs, b.lora, b.optimizer)?;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let fb = median(&r.fwd_bwd_s);
    let opt = median(&r.opt_s);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if b.json {
        println!(
            "{}",
            serde_json::json!({"impl": "nanbeige", "model": model, "tokens": b.tokens, "trainable_params": r.params,
                "lora": b.lora, "loss": r.loss, "fwd_bwd_s": r.fwd_bwd_s, "median_fwd_bwd_s": fb,
                "tokens_per_s": b.tokens as f64 / fb, "opt_s": r.opt_s, "threads": threads})
        );
    } else {
        println!(
            "{} tokens, {} trainable params: forward+backward {:.3}s (median of {}) = {:.0} tokens/s; loss {:.4}{}",
            b.tokens,
            r.params,
            fb,
            b.runs,
            b.tokens as f64 / fb,
            r.loss,
            if r.opt_s.is_empty() { String::new() } else { format!("; AdamW step {opt:.3}s") }
        );
    }
    Ok(())
}

fn distill_cmd(d: DistillArgs) -> Result<()> {
    let teacher = hub::resolve(Some(&d.teacher))?;
    let student = hub::resolve(Some(&d.student))?;
    let mut o = sft_options(student.clone(), &d.common)?;
    let data = d.common.data.clone().context("--data is required (chat JSONL; for seq/dpo its prompts are used)")?;
    let params = distill::gen_params(d.max_new_tokens, d.temperature, d.common.seed);
    std::fs::create_dir_all(&o.out)?;
    match d.mode.as_str() {
        "token" => {
            o.kd = Some(KdOptions { teacher, temperature: d.kd_temperature, alpha: d.kd_alpha });
            print_summary(&sft::train(&o)?);
        }
        "seq" => {
            let gen = o.out.join("teacher_data.jsonl");
            if !(o.resume && gen.is_file()) {
                let t = nanbeige_engine::load(&teacher, &Default::default())?;
                let prompts = distill::read_prompts(&data)?;
                let n = distill::teacher_data(&t, &prompts, &gen, &params, d.batch)?;
                eprintln!("wrote {n} teacher answers to {}", gen.display());
            }
            o.data = Some(gen);
            print_summary(&sft::train(&o)?);
        }
        "dpo" => {
            let t = nanbeige_engine::load(&teacher, &Default::default())?;
            let mut s = sft::load_model(&student, o.dtype, o.progress)?;
            let prompts = distill::read_prompts(&data)?;
            let pairs = distill::preference_pairs(&t, &s, &prompts, &params, &o.out.join("pairs.jsonl"))?;
            drop(t);
            let (text, _) = nanbeige_engine::load::load_text(&student)?;
            let origin = Origin { path: student.clone(), text, eos_ids: s.eos_ids.clone() };
            let dpo = DpoOptions {
                out: o.out.clone(),
                steps: o.steps.unwrap_or(pairs.len().div_ceil(d.pairs_per_step) as u64),
                pairs_per_step: d.pairs_per_step,
                lr: o.lr,
                beta: d.beta,
                nll: 0.0,
                clip: o.clip,
                seed: o.seed,
                dtype: o.dtype,
            };
            let r = distill::train_dpo(&mut s, &origin, &pairs, &dpo)?;
            println!(
                "DPO on {} pairs, {} steps: loss {:.4} -> {:.4}, reward accuracy {:.2} at the end, {:.1}s; model saved to {}",
                pairs.len(),
                r.steps,
                r.first_loss,
                r.last_loss,
                r.last_accuracy,
                r.seconds,
                o.out.display()
            );
        }
        other => bail!("unknown --mode `{other}` (token, seq, dpo)"),
    }
    Ok(())
}
