//! `nanbeige train grpo|pairwise|rm|dpo|trajectories`: argument parsing for the RL stages of nanbeige-train (grpo.rs,
//! rewards.rs). Prompts come from a built-in generator's train split or a JSONL file of eval items;
//! rollouts from the policy itself or an OpenAI-compatible endpoint.

use anyhow::{bail, Context, Result};
use clap::Args;
use nanbeige_engine::hub;
use nanbeige_eval::backend::Endpoint;
use nanbeige_eval::items::{self, Kind};
use nanbeige_eval::tasks::Split;
use nanbeige_train::checkpoint::Origin;
use nanbeige_train::grpo::{self, GrpoOptions, Sampler};
use nanbeige_train::distill::{self, DpoOptions, Pair};
use nanbeige_train::rewards::{CodeEfficiency, GroupReward, Judge, Pairwise, Pool, Verifiable};
use nanbeige_train::rm::{self, RewardModel, RmOptions};
use nanbeige_train::trajectory;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct RlArgs {
    /// Policy to train: HF directory, .gguf (dequantized), or a short name.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Output directory: the trained model, metrics.jsonl, reward/pass_rate/length/kl plots.
    #[arg(long)]
    out: PathBuf,
    /// Prompts from a built-in generator's train split: arith, add, add-compare, word, countdown, code.
    #[arg(long)]
    gen: Option<String>,
    /// How many generated prompts to draw from.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Prompts as eval items in JSONL (needs --task: math, countdown, code, mc, tool).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    task: Option<String>,
    #[arg(long, default_value_t = 50)]
    steps: u64,
    /// Prompts per step.
    #[arg(long, default_value_t = 4)]
    prompts: usize,
    /// Replies sampled per prompt.
    #[arg(long, default_value_t = 8)]
    group: usize,
    #[arg(long, default_value_t = 2e-6)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Lower clip range of the ratio (1 - eps_low).
    #[arg(long, default_value_t = 0.2)]
    eps_low: f64,
    /// Upper clip range (1 + eps_high); above eps_low is DAPO's clip-higher.
    #[arg(long, default_value_t = 0.28)]
    eps_high: f64,
    /// Weight of the KL penalty to the starting model (keeps a frozen copy; 0: none).
    #[arg(long, default_value_t = 0.0)]
    kl: f64,
    /// Only center advantages (Dr. GRPO) instead of dividing by the group's std.
    #[arg(long)]
    no_std: bool,
    /// Keep groups that all pass or all fail (they contribute no gradient, only cost).
    #[arg(long)]
    no_filter: bool,
    /// Train on replies cut at --max-tokens too (default: masked out).
    #[arg(long)]
    keep_overlong: bool,
    /// Reward for the `<think>…</think>` answer format, added to the task's score.
    #[arg(long, default_value_t = 0.1)]
    format_reward: f64,
    /// For numeric answers that are wrong: this weight × the share of the answer's digits right,
    /// place by place (dense credit for column arithmetic; 0: exact match only).
    #[arg(long, default_value_t = 0.0)]
    digit_reward: f64,
    /// Code RL stage two: weight of the efficiency term (counts only when every test passes).
    #[arg(long, default_value_t = 0.0)]
    efficiency: f64,
    /// Timed runs per efficiency measurement (the median is used).
    #[arg(long, default_value_t = 3)]
    efficiency_repeats: usize,
    #[arg(long, default_value_t = 10)]
    code_timeout: u64,
    /// Tokens per packed row in the update.
    #[arg(long, default_value_t = 2048)]
    batch_tokens: usize,
    /// Sequences decoded together in local rollouts.
    #[arg(long, default_value_t = 16)]
    rollout_batch: usize,
    /// Sample rollouts from this OpenAI-compatible server instead of the policy in process.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    api_model: Option<String>,
    #[arg(long, env = "OPENAI_API_KEY")]
    api_key: Option<String>,
    /// Concurrent endpoint requests.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// With --endpoint: save the policy to OUT/policy every N steps for the server to reload.
    #[arg(long, default_value_t = 1)]
    sync_every: u64,
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Saved weight dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Train LoRA adapters of this rank on every block projection instead of all weights.
    #[arg(long)]
    lora: Option<usize>,
    /// LoRA alpha (default 2 × rank).
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Save the model every N steps (always at the end).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// The first reply of each group is greedy (temperature 0), trained like the sampled ones: RL
    /// then sees the answer greedy decoding gives, not only what sampling gets wrong.
    #[arg(long)]
    greedy_first: bool,
    /// Process credit on arithmetic prompts: the tokens of a failing reply that match the worked
    /// solution from its start get no negative advantage (the blame starts at the first wrong step).
    #[arg(long)]
    process_credit: bool,
    /// First-step credit on arithmetic prompts: a reply passes only as the worked solution token for
    /// token (GRPO's pass/fail rewards), and a failing reply is trained only on the line where it
    /// first leaves it.
    #[arg(long)]
    step_credit: bool,
    /// A negative advantage trains only the tokens that were the policy's argmax at their position
    /// (the errors greedy decoding would make), not unlikely sampled ones; with --step-credit only
    /// the first wrong token is blamed, and only when it was the argmax.
    #[arg(long)]
    greedy_negatives: bool,
    #[arg(long, short = 'q')]
    quiet: bool,
}

impl RlArgs {
    fn options(&self) -> Result<GrpoOptions> {
        if self.steps == 0 || self.prompts == 0 {
            bail!("--steps and --prompts must be at least 1");
        }
        if self.group < 2 {
            bail!("--group must be at least 2");
        }
        if !(self.temperature > 0.0) {
            bail!("--temperature must be positive (RL needs sampled replies)");
        }
        Ok(GrpoOptions {
            out: self.out.clone(),
            steps: self.steps,
            prompts_per_step: self.prompts,
            group: self.group,
            lr: self.lr,
            warmup: self.warmup,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            eps_low: self.eps_low,
            eps_high: self.eps_high,
            kl: self.kl,
            scale_std: !self.no_std,
            filter: !self.no_filter,
            mask_overlong: !self.keep_overlong,
            batch_tokens: self.batch_tokens.max(64),
            rollout_batch: self.rollout_batch.max(1),
            clip: self.clip,
            seed: self.seed,
            dtype: match self.dtype.as_str() {
                "f32" => candle_core::DType::F32,
                "bf16" => candle_core::DType::BF16,
                other => bail!("--dtype {other}: f32 or bf16"),
            },
            save_every: self.save_every,
            sync_every: self.sync_every,
            quiet: self.quiet,
            lora: self.lora.map(|r| nanbeige_train::lora::LoraSpec::new(r, self.lora_alpha, None)).transpose()?,
            greedy_first: self.greedy_first,
            process_credit: self.process_credit,
            step_credit: self.step_credit,
            greedy_negatives: self.greedy_negatives,
        })
    }

    fn items(&self) -> Result<Vec<items::Item>> {
        match (&self.gen, &self.data) {
            (Some(g), None) => Ok(items::generated_split(g, Split::Train, self.n, self.seed)?.1),
            (None, Some(d)) => {
                let kind = Kind::parse(self.task.as_deref().context("--data needs --task (math, countdown, code, mc, tool)")?)?;
                items::load_file(d, kind)
            }
            (Some(_), Some(_)) => bail!("give --gen or --data, not both"),
            (None, None) => bail!("no prompts: give --gen TASK or --data FILE --task KIND"),
        }
    }

    fn verifiable(&self) -> Verifiable {
        Verifiable {
            format_weight: self.format_reward,
            digit_weight: self.digit_reward,
            code_timeout: Duration::from_secs(self.code_timeout.max(1)),
        }
    }
}

/// Run RL with `reward` on the prompts and rollout source the flags name.
fn run(a: &RlArgs, reward: &dyn GroupReward) -> Result<()> {
    let o = a.options()?;
    let items = a.items()?;
    let model = hub::resolve(a.model.as_deref())?;
    let mut lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, !a.quiet)?;
    let reference = if a.kl > 0.0 { Some(nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false)?) } else { None };
    let (text, _) = nanbeige_engine::load::load_text(&model)?;
    let origin = Origin { path: model.clone(), text, eos_ids: lm.eos_ids.clone() };
    let endpoint = match &a.endpoint {
        Some(url) => Some(Endpoint::new(url, a.api_model.clone(), a.api_key.clone(), Duration::from_secs(600))?),
        None => None,
    };
    let sampler = match &endpoint {
        Some(e) => Sampler::Remote { backend: e, parallel: a.parallel },
        None => Sampler::Local,
    };
    eprintln!(
        "RL on {} prompts: {} steps x {} prompts x {} replies, lr {}, max {} tokens",
        items.len(),
        o.steps,
        o.prompts_per_step,
        o.group,
        o.lr,
        o.max_tokens
    );
    let s = grpo::train(&mut lm, reference.as_ref(), &origin, &items, reward, sampler, &o)?;
    println!(
        "{} steps in {:.0}s: mean reward {:.3} -> {:.3}; model saved to {}",
        s.steps,
        s.seconds,
        s.first_reward,
        s.last_reward,
        o.out.display()
    );
    Ok(())
}

pub fn grpo_cmd(a: RlArgs) -> Result<()> {
    if a.efficiency > 0.0 {
        let r = CodeEfficiency { base: a.verifiable(), weight: a.efficiency, repeats: a.efficiency_repeats.max(1) };
        run(&a, &r)
    } else {
        run(&a, &a.verifiable())
    }
}

#[derive(Args)]
pub struct PairwiseArgs {
    /// Reward model directory (from `train rm`): win rates from σ(r_i - r_j).
    #[arg(long)]
    rm: Option<PathBuf>,
    /// Or an LLM judge behind this OpenAI-compatible server (each pair judged in both orders).
    #[arg(long)]
    judge: Option<String>,
    #[arg(long)]
    judge_model: Option<String>,
    /// The judge first answers each prompt itself (greedy, once) and judges against its own
    /// answer: for numeric tasks the reply whose final number is the judge's wins the pair (no
    /// call per pair); otherwise its answer is shown as the reference. For a judge too small to
    /// compare two replies but able to solve the task.
    #[arg(long)]
    judge_solves: bool,
    /// Also score every rollout with the task's checker and log its pass rate (never part of the
    /// reward): watches for reward hacking while the policy trains.
    #[arg(long)]
    watch_checker: bool,
    /// Keep training the reward model during RL (0: frozen): after it scores a group, the
    /// checker's labels of those replies give (right, wrong) pairs for one Bradley-Terry step at
    /// this learning rate, so it follows the policy. Needs --watch-checker (the annotator).
    /// The refreshed model is saved to OUT/reward_model.
    #[arg(long, default_value_t = 0.0)]
    rm_refresh_lr: f64,
    /// Pairs per group for --rm-refresh-lr.
    #[arg(long, default_value_t = 2)]
    rm_refresh_pairs: usize,
    /// Replies giving the same final answer (numeric tasks) share their win rates: `mean` (the flag
    /// alone) gives each the mean over its answer, so the advantage tells answers apart, not
    /// wordings of one; `vote` gives each its answer's share of the group's total win rate, so an
    /// answer many replies reach beats one the judge likes once; `off` (default): each its own.
    #[arg(long, num_args = 0..=1, default_missing_value = "mean", default_value = "off")]
    pool_answers: Pool,
    /// With `--pool-answers vote`: the share of the vote (0-1) the leading answer needs for the
    /// group to count; below it all replies get the same reward and the group is dropped (the vote
    /// abstains where the replies scatter). 0: always counts.
    #[arg(long, default_value_t = 0.0)]
    vote_quorum: f64,
    #[command(flatten)]
    rl: RlArgs,
}

pub fn pairwise_cmd(a: PairwiseArgs) -> Result<()> {
    let watch = a.watch_checker.then(|| a.rl.verifiable());
    if !(0.0..=1.0).contains(&a.vote_quorum) {
        bail!("--vote-quorum {} is not a share between 0 and 1", a.vote_quorum);
    }
    if a.judge_solves && a.judge.is_none() {
        bail!("--judge-solves is for an LLM judge (--judge URL)");
    }
    if a.vote_quorum > 0.0 && a.pool_answers != Pool::Vote {
        bail!("--vote-quorum counts the vote: it needs --pool-answers vote");
    }
    match (&a.rm, &a.judge) {
        (Some(dir), None) => {
            let mut rm = RewardModel::load(dir)?;
            let annotate = a.rm_refresh_lr > 0.0;
            if annotate {
                if watch.is_none() {
                    bail!("--rm-refresh-lr needs --watch-checker: the checker labels the pairs it learns from");
                }
                rm.enable_refresh(a.rm_refresh_lr, a.rm_refresh_pairs)?;
            }
            let mut pw = Pairwise::new(rm, watch);
            (pw.annotate, pw.pool, pw.quorum) = (annotate, a.pool_answers, a.vote_quorum);
            run(&a.rl, &pw)?;
            if annotate {
                let out = a.rl.out.join("reward_model");
                let (text, _) = nanbeige_engine::load::load_text(dir)?;
                let origin = Origin { path: dir.clone(), text, eos_ids: pw.judge.lm.eos_ids.clone() };
                pw.judge.save(&out, &origin)?;
                println!("refreshed reward model saved to {}", out.display());
            }
            Ok(())
        }
        (None, Some(url)) => {
            let e = Endpoint::new(url, a.judge_model.clone(), a.rl.api_key.clone(), Duration::from_secs(600))?;
            if a.rm_refresh_lr > 0.0 {
                bail!("--rm-refresh-lr needs a reward model (--rm); an LLM judge does not learn");
            }
            let mut pw = Pairwise::new(Judge::new(&e, 16, a.judge_solves), watch);
            (pw.pool, pw.quorum) = (a.pool_answers, a.vote_quorum);
            run(&a.rl, &pw)
        }
        _ => bail!("give the pair-wise reward: --rm DIR (a reward model) or --judge URL (an LLM judge)"),
    }
}

/// Flags of the preference-pair trainers (reward model, offline DPO).
#[derive(Args)]
pub struct PairArgs {
    /// Starting model: HF directory, .gguf (dequantized), or a short name.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Preference pairs, JSONL: {"prompt": [messages] | "text", "chosen": msg | "text", "rejected": ...}.
    #[arg(long)]
    data: PathBuf,
    /// Output directory (not needed with --eval).
    #[arg(long, required_unless_present = "eval")]
    out: Option<PathBuf>,
    /// Reward model only: train nothing, report the accuracy of an existing reward model (--model,
    /// a `train rm` output) on every pair of --data, e.g. pairs from the policy's own later samples.
    #[arg(long)]
    eval: bool,
    /// Optimizer steps (default: one epoch).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, default_value_t = 4)]
    pairs_per_step: usize,
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// DPO: strength of the preference.
    #[arg(long, default_value_t = 0.1)]
    beta: f64,
    /// DPO: weight of the chosen reply's per-token NLL (RPO; 0: plain DPO).
    #[arg(long, default_value_t = 0.0)]
    nll: f64,
    /// Hold out every k-th pair and report accuracy on them (0: none).
    #[arg(long, default_value_t = 5)]
    holdout: usize,
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn load_pairs(a: &PairArgs) -> Result<(PathBuf, nanbeige_engine::LoadedModel, Origin, Vec<Pair>, Vec<Pair>)> {
    let model = hub::resolve(a.model.as_deref())?;
    let lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, !a.quiet)?;
    let (text, _) = nanbeige_engine::load::load_text(&model)?;
    let origin = Origin { path: model.clone(), text, eos_ids: lm.eos_ids.clone() };
    let recs = rm::read_pairs(&a.data)?;
    let pairs = rm::tokenize_pairs(&lm, &recs);
    let (train, test) = rm::split_pairs(pairs, a.holdout);
    if train.is_empty() {
        bail!("{}: no pairs left to train on", a.data.display());
    }
    Ok((model, lm, origin, train, test))
}

pub fn rm_cmd(a: PairArgs) -> Result<()> {
    if a.eval {
        let dir = hub::resolve(a.model.as_deref())?;
        let model = RewardModel::load(&dir)?;
        let pairs = rm::tokenize_pairs(&model.lm, &rm::read_pairs(&a.data)?);
        if pairs.is_empty() {
            bail!("{}: no pairs to score", a.data.display());
        }
        let acc = rm::accuracy(&model, &pairs)?;
        println!("reward model {}: accuracy {acc:.3} on {} pairs of {}", dir.display(), pairs.len(), a.data.display());
        return Ok(());
    }
    let out = a.out.clone().context("--out is required")?;
    let (_, lm, origin, train, test) = load_pairs(&a)?;
    let mut model = RewardModel::new(lm)?;
    let o = RmOptions {
        out: out.clone(),
        steps: a.steps.unwrap_or(train.len().div_ceil(a.pairs_per_step.max(1)) as u64),
        pairs_per_step: a.pairs_per_step,
        lr: a.lr,
        clip: a.clip,
        seed: a.seed,
        quiet: a.quiet,
    };
    let s = rm::train_rm(&mut model, &origin, &train, &o)?;
    let held = if test.is_empty() { String::new() } else { format!(", held-out accuracy {:.3} on {} pairs", rm::accuracy(&model, &test)?, test.len()) };
    println!(
        "reward model: {} steps on {} pairs, loss {:.4} -> {:.4}, train accuracy {:.3}{held}, {:.0}s; saved to {}",
        s.steps,
        train.len(),
        s.first_loss,
        s.last_loss,
        s.train_accuracy,
        s.seconds,
        out.display()
    );
    Ok(())
}

pub fn dpo_cmd(a: PairArgs) -> Result<()> {
    if a.eval {
        bail!("--eval scores a reward model: use it with `train rm`");
    }
    let out = a.out.clone().context("--out is required")?;
    let (_, mut lm, origin, train, test) = load_pairs(&a)?;
    let o = DpoOptions {
        out: out.clone(),
        steps: a.steps.unwrap_or(train.len().div_ceil(a.pairs_per_step.max(1)) as u64),
        pairs_per_step: a.pairs_per_step,
        lr: a.lr,
        beta: a.beta,
        nll: a.nll,
        clip: a.clip,
        seed: a.seed,
        dtype: candle_core::DType::F32,
    };
    let r = distill::train_dpo(&mut lm, &origin, &train, &o)?;
    println!(
        "DPO on {} pairs ({} held out), {} steps: loss {:.4} -> {:.4}, reward accuracy {:.2} and chosen log-prob per token {:+.3} at the end, {:.1}s; model saved to {}",
        train.len(),
        test.len(),
        r.steps,
        r.first_loss,
        r.last_loss,
        r.last_accuracy,
        r.last_chosen_shift,
        r.seconds,
        out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct TrajectoryArgs {
    /// Trajectory logs written by `nanbeige research --log` (several runs per file are fine).
    #[arg(long, required = true, num_args = 1..)]
    log: Vec<PathBuf>,
    /// Gold answers, JSONL {"question", "answer"}: a run's reward is whether its answer contains
    /// the gold one (default: answered with valid citations).
    #[arg(long)]
    gold: Option<PathBuf>,
    /// SFT data out: the kept turns of runs with reward ≥ --min-reward, as chat JSONL.
    #[arg(long)]
    sft_out: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    min_reward: f64,
    /// Agentic RL: train this model on the kept turns, each with its credited advantage.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Output directory of the agentic RL model.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Discount of the final reward toward earlier turns.
    #[arg(long, default_value_t = 0.9)]
    gamma: f64,
    #[arg(long, default_value_t = 1e-6)]
    lr: f64,
    #[arg(long, default_value_t = 8)]
    turns_per_step: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn trajectories_cmd(a: TrajectoryArgs) -> Result<()> {
    let mut runs = vec![];
    for p in &a.log {
        runs.extend(trajectory::read_runs(p)?);
    }
    let gold = match &a.gold {
        Some(p) => trajectory::read_gold(p)?,
        None => Default::default(),
    };
    let turns: usize = runs.iter().map(|r| r.turns.len()).sum();
    let kept: usize = runs.iter().map(|r| trajectory::keep_turns(r).iter().filter(|&&k| k).count()).sum();
    let rewarded = runs.iter().filter(|r| trajectory::run_reward(r, gold.get(r.question.trim()).map(String::as_str)) >= a.min_reward).count();
    eprintln!("{} runs, {turns} turns, {kept} kept by the turn filter; {rewarded} runs with reward ≥ {}", runs.len(), a.min_reward);
    if a.sft_out.is_none() && a.model.is_none() {
        bail!("nothing to do: give --sft-out FILE (SFT data) and/or --model M --out DIR (agentic RL)");
    }
    if let Some(path) = &a.sft_out {
        let recs = trajectory::sft_records(&runs, &gold, a.min_reward);
        let mut s = String::new();
        for r in &recs {
            s += &format!("{}\n", serde_json::to_string(r)?);
        }
        std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} SFT examples to {}", recs.len(), path.display());
    }
    if let Some(m) = &a.model {
        let out = a.out.clone().context("agentic RL needs --out DIR")?;
        let model = hub::resolve(Some(m))?;
        let mut lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, true)?;
        let (text, _) = nanbeige_engine::load::load_text(&model)?;
        let origin = Origin { path: model.clone(), text, eos_ids: lm.eos_ids.clone() };
        let credits = trajectory::credit(&runs, &gold, a.gamma);
        let mut o = GrpoOptions::for_offline(out.clone(), a.lr, a.seed);
        o.batch_tokens = a.batch_tokens;
        let steps = trajectory::train_agentic(&mut lm, &origin, &runs, &credits, &o, a.turns_per_step, a.epochs)?;
        println!("agentic RL: {} credited turns, {steps} steps; model saved to {}", credits.len(), out.display());
    }
    Ok(())
}
