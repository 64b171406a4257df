//! LoRA fine-tuning settings and adapter state. The adapters themselves live on the model's linear
//! layers (nanbeige-model `Llama::add_lora`): y = x W^T + (alpha / r) (x A^T) B^T with W frozen.
//! Saved model directories always hold the merged weights (W + (alpha / r) B A), so the result is a
//! plain HF model; checkpoints also keep the adapters so a run can resume.

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};
use nanbeige_model::Llama;
use std::collections::HashMap;

/// Every projection of attention and MLP (not embeddings or the LM head), as peft's "all-linear".
pub const DEFAULT_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
}

impl LoraSpec {
    /// Rank `r`, alpha 2r (a common default), all projections; `targets` as a comma list overrides.
    pub fn new(rank: usize, alpha: Option<f64>, targets: Option<&str>) -> Result<Self> {
        if rank == 0 {
            bail!("--lora rank must be at least 1");
        }
        let targets: Vec<String> = match targets {
            Some(t) => t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None => DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
        };
        if targets.iter().any(|t| t == "lm_head" || t.contains("embed")) {
            bail!("LoRA targets the projections inside the blocks; lm_head/embeddings are not supported");
        }
        Ok(Self { rank, alpha: alpha.unwrap_or(2.0 * rank as f64), targets })
    }

    /// Attach adapters to `model`; returns the trainable Vars.
    pub fn attach(&self, model: &mut Llama, seed: u64) -> Result<Vec<(String, Var)>> {
        let t: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        model.add_lora(self.rank, self.alpha, &t, seed)
    }
}

/// The adapters' current values, for a checkpoint.
pub fn adapter_tensors(vars: &[(String, Var)]) -> Vec<(String, Tensor)> {
    vars.iter().map(|(n, v)| (n.clone(), v.as_detached_tensor())).collect()
}

/// Load saved adapter values into freshly attached adapters.
pub fn restore(vars: &[(String, Var)], saved: &HashMap<String, Tensor>) -> Result<()> {
    for (name, var) in vars {
        let t =
            saved.get(name).with_context(|| format!("the checkpoint has no adapter `{name}` (different --lora?)"))?;
        if t.dims() != var.dims() {
            bail!("adapter `{name}` has shape {:?} in the checkpoint, {:?} now", t.dims(), var.dims());
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
