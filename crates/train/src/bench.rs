//! Training throughput: forward + backward (+ optionally the AdamW step) of one packed row of
//! `tokens` tokens, repeated, in tokens per second. The batch is a deterministic token pattern, so
//! scripts/bench/train_throughput.py can run the same one in PyTorch for a side-by-side number.

use crate::data::{Example, Packed};
use crate::loss;
use crate::optim::{AdamW, GradAccum};
use anyhow::Result;
use candle_core::DType;
use std::path::Path;
use std::time::Instant;

/// The benchmark batch: `tokens` ids (i * 7919 + 13) mod vocab, one sequence, all trained.
pub fn bench_ids(tokens: usize, vocab: usize) -> Vec<u32> {
    (0..tokens).map(|i| ((i as u64 * 7919 + 13) % vocab as u64) as u32).collect()
}

pub struct BenchResult {
    pub loss: f64,
    /// Seconds per forward + backward, each run.
    pub fwd_bwd_s: Vec<f64>,
    /// Seconds of the AdamW steps, each run (empty when not measured).
    pub opt_s: Vec<f64>,
    pub params: usize,
}

/// Run `warmup + runs` forward/backward passes (and optimizer steps when `with_opt`).
pub fn throughput(
    model: &Path,
    tokens: usize,
    warmup: usize,
    runs: usize,
    lora: Option<usize>,
    with_opt: bool,
) -> Result<BenchResult> {
    let mut lm = crate::sft::load_model(model, DType::F32, false)?;
    let vars = match lora {
        Some(r) => crate::lora::LoraSpec::new(r, None, None)?.attach(&mut lm.model, 0)?,
        None => lm.model.trainable_vars()?,
    };
    let mut opt = AdamW::new(vars, 0.0)?;
    let ids = bench_ids(tokens, lm.model.cfg.vocab_size);
    let mut row = Packed::default();
    row.push(&Example { mask: vec![true; ids.len()], ids, line: 0 });
    let mut res = BenchResult { loss: 0.0, fwd_bwd_s: vec![], opt_s: vec![], params: opt.num_params() };
    for i in 0..warmup + runs {
        let t = Instant::now();
        let logits = lm.model.forward_packed(&row.ids, &row.positions, &row.segments)?;
        let l = (loss::ce_sum(&logits, &row.targets, &row.weights)? / row.trained() as f64)?;
        let g = l.backward()?;
        let mut acc = GradAccum::new(&opt);
        acc.add(&opt, &g)?;
        let fb = t.elapsed().as_secs_f64();
        if i == 0 {
            res.loss = l.to_scalar::<f32>()? as f64;
        }
        let t = Instant::now();
        if with_opt {
            opt.step(&acc.grads, 1e-12)?;
        }
        if i >= warmup {
            res.fwd_bwd_s.push(fb);
            if with_opt {
                res.opt_s.push(t.elapsed().as_secs_f64());
            }
        }
    }
    Ok(res)
}
