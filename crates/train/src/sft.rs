//! The supervised training loop (`nanbeige train sft`, and token-level distillation, which is the
//! same loop with a teacher's distribution in the loss): load the model (HF dir or GGUF,
//! dequantized to float), make its weights (or LoRA adapters) trainable, pack chat data into rows,
//! and per optimizer step run `accum` rows forward and backward, clip, and take an AdamW step at the
//! schedule's learning rate. Checkpoints (HF dir + optimizer + data position) let `--resume`
//! continue exactly; metrics go to metrics.jsonl and loss.svg.
//!
//! The loss of a step is the mean over all its trained (assistant) tokens, across micro-batches.

use crate::checkpoint::{self, Origin, Resumable, TrainerState};
use crate::data::{self, BadLine, Packed, Rng, Stream};
use crate::lora::{self, LoraSpec};
use crate::loss;
use crate::metrics::{self, MetricsLog};
use crate::optim::{AdamW, GradAccum};
use crate::schedule::Schedule;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use nanbeige_engine::{EngineOptions, LoadedModel};
use nanbeige_model::LoadOptions;
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Token-level distillation settings: the teacher and how its distribution enters the loss.
#[derive(Clone, Debug)]
pub struct KdOptions {
    pub teacher: PathBuf,
    /// Softmax temperature for both distributions.
    pub temperature: f64,
    /// loss = alpha * KL + (1 - alpha) * cross-entropy on the data.
    pub alpha: f64,
}

#[derive(Clone, Debug)]
pub struct SftOptions {
    pub model: PathBuf,
    /// Training data (ignored when the schedule file names its own datasets).
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub lora: Option<LoraSpec>,
    pub steps: Option<u64>,
    pub epochs: Option<f64>,
    pub lr: f64,
    pub min_lr: Option<f64>,
    pub warmup: u64,
    /// `constant`, `cosine`, `wsd`, or the path of an FG-WSD JSON config.
    pub schedule: String,
    pub batch_tokens: usize,
    pub accum: usize,
    /// Longest example kept (tokens); longer ones are reported and skipped.
    pub max_len: Option<usize>,
    pub clip: f64,
    pub weight_decay: f64,
    /// Weight dtype: f32, or bf16 (with f32 master weights in the optimizer).
    pub dtype: DType,
    pub seed: u64,
    /// Save a resumable checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    pub resume: bool,
    /// Stop after this many steps of this invocation (a planned interruption, for tests).
    pub stop_after: Option<u64>,
    pub progress: bool,
    pub kd: Option<KdOptions>,
}

impl SftOptions {
    /// Defaults for everything but the paths.
    pub fn new(model: PathBuf, data: Option<PathBuf>, out: PathBuf) -> Self {
        Self {
            model,
            data,
            out,
            lora: None,
            steps: None,
            epochs: None,
            lr: 1e-5,
            min_lr: None,
            warmup: 0,
            schedule: "cosine".into(),
            batch_tokens: 2048,
            accum: 1,
            max_len: None,
            clip: 1.0,
            weight_decay: 0.0,
            dtype: DType::F32,
            seed: 0,
            save_every: 0,
            resume: false,
            stop_after: None,
            progress: true,
            kd: None,
        }
    }
}

pub struct Summary {
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub tokens: u64,
    pub seconds: f64,
    pub tokens_per_sec: f64,
    pub bad_lines: usize,
    pub out: PathBuf,
}

/// Load a model for training: float weights (GGUF dequantized) of `dtype`.
pub fn load_model(path: &Path, dtype: DType, progress: bool) -> Result<LoadedModel> {
    let opts =
        EngineOptions { load: LoadOptions { dtype: Some(dtype), dequantize: true, progress }, context_len: None, ..Default::default() };
    nanbeige_engine::load(path, &opts)
}

/// Print skipped lines, one per line, naming the file.
pub fn report_bad_lines(path: &Path, bad: &[BadLine]) {
    for b in bad.iter().take(50) {
        eprintln!("warning: {}:{}: {} (skipped)", path.display(), b.line, b.reason);
    }
    if bad.len() > 50 {
        eprintln!("warning: {}: {} more bad lines skipped", path.display(), bad.len() - 50);
    }
}

/// Gradient of one optimizer step: run `loss_of(row)` (already normalized over the whole step)
/// forward and backward for every row and accumulate. Returns the summed loss.
pub fn accumulate(
    opt: &AdamW,
    grads: &mut GradAccum,
    rows: &[Packed],
    mut loss_of: impl FnMut(&Packed) -> Result<Tensor>,
) -> Result<f64> {
    let mut total = 0.0;
    for row in rows {
        let l = loss_of(row)?;
        total += l.to_scalar::<f32>()? as f64;
        let g = l.backward()?;
        grads.add(opt, &g)?;
    }
    Ok(total)
}

/// Rows of one optimizer step, drawn deterministically from (seed, step): a resumed run draws the
/// same rows as an uninterrupted one.
pub fn step_rows(
    streams: &mut [Stream],
    mix: &[f64],
    batch_tokens: usize,
    accum: usize,
    seed: u64,
    step: u64,
) -> Vec<Packed> {
    (0..accum)
        .map(|m| {
            let mut rng = Rng::new(seed ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ ((m as u64) << 48));
            data::pack_row(streams, mix, batch_tokens, &mut rng)
        })
        .collect()
}

/// How many rows one pass over `stream` packs into.
fn rows_per_epoch(stream: &Stream, batch_tokens: usize) -> u64 {
    let mut s = stream.clone();
    s.seek(0, 0);
    let mut rng = Rng::new(0);
    let mut rows = 0;
    while s.epoch == 0 {
        data::pack_row(std::slice::from_mut(&mut s), &[1.0], batch_tokens, &mut rng);
        rows += 1;
    }
    rows
}

fn run_settings(o: &SftOptions) -> Value {
    json!({
        "model": o.model, "data": o.data, "lora": o.lora.as_ref().map(|l| json!({"rank": l.rank, "alpha": l.alpha, "targets": l.targets})),
        "steps": o.steps, "epochs": o.epochs, "lr": o.lr, "min_lr": o.min_lr, "warmup": o.warmup, "schedule": o.schedule,
        "batch_tokens": o.batch_tokens, "accum": o.accum, "clip": o.clip, "weight_decay": o.weight_decay,
        "dtype": format!("{:?}", o.dtype), "seed": o.seed,
        "kd": o.kd.as_ref().map(|k| json!({"teacher": k.teacher, "temperature": k.temperature, "alpha": k.alpha})),
    })
}

/// Check that teacher and student share a vocabulary (same size, same token for every id).
pub fn check_same_vocab(student: &LoadedModel, teacher: &LoadedModel) -> Result<()> {
    let (s, t) = (student.model.cfg.vocab_size, teacher.model.cfg.vocab_size);
    if s != t {
        bail!(
            "token-level distillation needs one vocabulary, but the student has {s} tokens and the teacher {t}; \
             use sequence-level distillation (--mode seq) across vocabularies"
        );
    }
    let (st, tt) = (&student.text.tokenizer, &teacher.text.tokenizer);
    for id in 0..s.min(st.vocab_size()) as u32 {
        if st.id_to_token(id) != tt.id_to_token(id) {
            bail!(
                "token-level distillation needs one vocabulary, but token {id} is {:?} for the student and {:?} for the teacher; \
                 use sequence-level distillation (--mode seq)",
                st.id_to_token(id),
                tt.id_to_token(id)
            );
        }
    }
    Ok(())
}

pub fn train(o: &SftOptions) -> Result<Summary> {
    if o.batch_tokens < 2 || o.accum == 0 {
        bail!("--batch-tokens must be at least 2 and --accum at least 1");
    }
    if !(o.lr > 0.0 && o.lr.is_finite()) {
        bail!("--lr must be a positive number");
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let ckpt_dir = o.out.join("checkpoint");
    let resume = o.resume && ckpt_dir.join("trainer_state.json").is_file();
    if o.resume && !resume {
        eprintln!("note: no checkpoint in {}; starting from the beginning", ckpt_dir.display());
    }
    let saved = if resume { Some(checkpoint::load_resumable(&ckpt_dir)?) } else { None };
    if let Some(s) = &saved {
        if s.state.run != run_settings(o) {
            bail!(
                "{}: the checkpoint was made with different settings; resume with the same command (saved: {})",
                ckpt_dir.display(),
                s.state.run
            );
        }
    }

    // Full fine-tuning resumes from the checkpoint's weights; LoRA from the base plus adapters.
    let from_ckpt = saved.is_some() && o.lora.is_none();
    let load_path = if from_ckpt { ckpt_dir.clone() } else { o.model.clone() };
    let mut lm = load_model(&load_path, o.dtype, o.progress)?;
    let (text, template) = load_model_text(&o.model)?;
    let template = template.context("the model has no chat template; SFT needs one to render conversations")?;
    let origin = Origin { path: o.model.clone(), text, eos_ids: lm.eos_ids.clone() };
    let vars: Vec<(String, Var)> = match &o.lora {
        Some(spec) => spec.attach(&mut lm.model, o.seed)?,
        None => lm.model.trainable_vars()?,
    };
    let adapter_vars = o.lora.as_ref().map(|_| vars.clone());
    let mut opt = AdamW::new(vars, o.weight_decay)?;
    if let (Some(s), Some(av)) = (&saved, &adapter_vars) {
        lora::restore(av, s.adapters.as_ref().context("the checkpoint has no adapters")?)?;
    }

    let teacher = match &o.kd {
        Some(k) => {
            let t = nanbeige_engine::load(&k.teacher, &EngineOptions::default())?;
            check_same_vocab(&lm, &t)?;
            Some(t)
        }
        None => None,
    };

    // Data and schedule.
    let max_len = o.max_len.unwrap_or(o.batch_tokens).min(o.batch_tokens).min(lm.model.max_positions());
    let file_schedule = !matches!(o.schedule.as_str(), "constant" | "cosine" | "wsd");
    let (sched_file, datasets) = if file_schedule {
        let s = Schedule::from_file(Path::new(&o.schedule), Some(o.lr))?;
        let d = s.datasets.clone();
        (Some(s), d)
    } else {
        let d = o.data.clone().context("--data is required (or an FG-WSD schedule file naming datasets)")?;
        (None, vec![("data".to_string(), d)])
    };
    let mut streams = Vec::new();
    let mut bad_total = 0;
    for (i, (name, path)) in datasets.iter().enumerate() {
        let (good, bad) = data::load_jsonl(path, &origin.text, &template, max_len)?;
        report_bad_lines(path, &bad);
        bad_total += bad.len();
        if good.is_empty() {
            bail!("{}: no usable examples (dataset `{name}`)", path.display());
        }
        streams.push(Stream::new(good, o.seed.wrapping_add(i as u64))?);
    }
    let sched = match sched_file {
        Some(s) => s,
        None => {
            let total = match (o.steps, o.epochs) {
                (Some(s), _) => s,
                (None, Some(e)) => {
                    ((e * rows_per_epoch(&streams[0], o.batch_tokens) as f64) / o.accum as f64).ceil() as u64
                }
                (None, None) => (rows_per_epoch(&streams[0], o.batch_tokens) as f64 / o.accum as f64).ceil() as u64,
            };
            Schedule::named(&o.schedule, o.lr, o.min_lr.unwrap_or(o.lr * 0.1), o.warmup, total.max(1))?
        }
    };
    let total = sched.total;

    let mut step = 0;
    let mut tokens: u64 = 0;
    if let Some(s) = &saved {
        opt.load_state(&s.optimizer, s.t)?;
        if s.state.streams.len() != streams.len() {
            bail!("the checkpoint has {} data streams, this run {}", s.state.streams.len(), streams.len());
        }
        for (st, (e, c)) in streams.iter_mut().zip(&s.state.streams) {
            st.seek(*e, *c);
        }
        step = s.state.step;
        tokens = s.state.tokens;
        eprintln!("resuming at step {step} of {total}");
    }

    let log_path = o.out.join("metrics.jsonl");
    let mut log = MetricsLog::open(&log_path, step)?;
    let tty = std::io::stderr().is_terminal();
    let bar = if o.progress && tty {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_position(step);
        Some(b)
    } else {
        None
    };
    eprintln!(
        "training {} params ({}) on {} examples, {} steps of {} x {} tokens, lr {} ({})",
        opt.num_params(),
        if o.lora.is_some() { "LoRA" } else { "full" },
        streams.iter().map(|s| s.examples.len()).sum::<usize>(),
        total,
        o.accum,
        o.batch_tokens,
        o.lr,
        o.schedule
    );

    let run = run_settings(o);
    let save = |lm: &LoadedModel, opt: &AdamW, dir: &Path, state: &TrainerState| -> Result<()> {
        checkpoint::save_model_dir(dir, &lm.model, &origin, o.dtype)?;
        let adapters = adapter_vars.as_ref().map(|v| lora::adapter_tensors(v));
        checkpoint::save_resumable(dir, &lm.model.cfg, &Resumable { state, optimizer: opt.state()?, adapters })
    };

    let t0 = Instant::now();
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut run_tokens = 0u64;
    let mut steps_here = 0;
    while step < total {
        if o.stop_after.is_some_and(|n| steps_here >= n) {
            break;
        }
        let ts = Instant::now();
        let lr = sched.lr_at(step);
        let rows = step_rows(&mut streams, &sched.mix_at(step), o.batch_tokens, o.accum, o.seed, step);
        let n_trained: usize = rows.iter().map(Packed::trained).sum();
        let n_tokens: usize = rows.iter().map(Packed::len).sum();
        let norm = n_trained.max(1) as f64;
        let mut grads = GradAccum::new(&opt);
        let model = &lm.model;
        let l = accumulate(&opt, &mut grads, &rows, |row| {
            let logits = model.forward_packed(&row.ids, &row.positions, &row.segments)?;
            let ce = (loss::ce_sum(&logits, &row.targets, &row.weights)? / norm)?;
            Ok(match (&teacher, &o.kd) {
                (Some(t), Some(k)) => {
                    let tl = t.model.forward_packed(&row.ids, &row.positions, &row.segments)?;
                    let kl = (loss::kl_sum(&logits, &tl, &row.weights, k.temperature)? / norm)?;
                    ((kl * k.alpha)? + (ce * (1.0 - k.alpha))?)?
                }
                _ => ce,
            })
        })?;
        let gnorm = grads.clip(o.clip);
        opt.step(&grads.grads, lr)?;
        drop(grads);
        step += 1;
        steps_here += 1;
        tokens += n_tokens as u64;
        run_tokens += n_tokens as u64;
        if !l.is_finite() {
            bail!("the loss became {l} at step {step}; lower --lr");
        }
        if first_loss.is_nan() {
            first_loss = l;
        }
        last_loss = l;
        let dt = ts.elapsed().as_secs_f64();
        let tps = run_tokens as f64 / t0.elapsed().as_secs_f64();
        log.write(&json!({"step": step - 1, "loss": l, "lr": lr, "grad_norm": gnorm, "tokens": n_tokens,
            "trained_tokens": n_trained, "step_s": dt, "tok_per_s": n_tokens as f64 / dt,
            "phase": sched.phase_at(step - 1), "elapsed_s": t0.elapsed().as_secs_f64()}))?;
        let msg = format!("loss {l:.4} | lr {lr:.2e} | {tps:.0} tok/s");
        match &bar {
            Some(b) => {
                b.set_message(msg);
                b.set_position(step);
            }
            None if o.progress && (step % 10 == 0 || step == total) => eprintln!("step {step}/{total} {msg}"),
            None => {}
        }
        let state = TrainerState {
            step,
            tokens,
            streams: streams.iter().map(|s| (s.epoch, s.cursor)).collect(),
            run: run.clone(),
        };
        if o.save_every > 0 && step % o.save_every == 0 && step < total {
            save(&lm, &opt, &ckpt_dir, &state)?;
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let state = TrainerState { step, tokens, streams: streams.iter().map(|s| (s.epoch, s.cursor)).collect(), run };
    save(&lm, &opt, &ckpt_dir, &state)?;
    if step >= total {
        checkpoint::save_model_dir(&o.out, &lm.model, &origin, o.dtype)?;
    }
    metrics::write_plot(&log_path, "loss", &o.out.join("loss.svg"), "training loss")?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Summary {
        steps: step,
        first_loss,
        last_loss,
        tokens,
        seconds,
        tokens_per_sec: run_tokens as f64 / seconds.max(1e-9),
        bad_lines: bad_total,
        out: o.out.clone(),
    })
}

/// Tokenizer and template of a model path, without its weights.
fn load_model_text(path: &Path) -> Result<(nanbeige_text::TextAssets, Option<nanbeige_text::ChatTemplate>)> {
    nanbeige_engine::load::load_text(path)
}
