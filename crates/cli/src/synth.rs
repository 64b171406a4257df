//! `nanbeige synth`: write a random-weight model of any Llama-family config (built in:
//! `nanbeige-3b`, the exact Nanbeige4.1-3B shape) as an HF bf16 directory or a GGUF file, for speed
//! and memory measurements without the real weights. The work is in nanbeige_model::synth.

use anyhow::Result;
use clap::Args;
use nanbeige_model::synth::{self, Format, Quant, SynthOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct SynthArgs {
    /// An HF config.json (or a directory holding one), or `nanbeige-3b` for the built-in
    /// Nanbeige4.1-3B config.
    #[arg(long)]
    pub config: String,
    /// Output: a directory for `--format hf`, a .gguf file path for `--format gguf`.
    #[arg(long)]
    pub out: PathBuf,
    /// hf (bf16 safetensors directory) or gguf; default: gguf when --out ends in .gguf, else hf.
    #[arg(long)]
    pub format: Option<String>,
    /// Weight type: bf16 (HF; also GGUF), f32, Q4_0, Q8_0, Q4_K_M (GGUF). Default: bf16 for HF,
    /// Q4_K_M for GGUF.
    #[arg(long)]
    pub quant: Option<String>,
    /// Override the number of layers (small variants for tests).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Seed of the random weights (same seed, same values in every format).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn synth(a: SynthArgs) -> Result<()> {
    let format = match a.format.as_deref() {
        Some(f) => Format::parse(f)?,
        None if a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) => Format::Gguf,
        None => Format::Hf,
    };
    let quant = match (a.quant.as_deref(), format) {
        (Some(q), _) => Quant::parse(q)?,
        (None, Format::Hf) => Quant::Bf16,
        (None, Format::Gguf) => Quant::Q4KM,
    };
    let (config, name) = synth::read_config(&a.config)?;
    let opts = SynthOptions {
        config,
        name,
        out: a.out,
        format,
        quant,
        layers: a.layers,
        seed: a.seed,
        shard_bytes: synth::DEFAULT_SHARD_BYTES,
        progress: true,
    };
    let s = synth::synthesize(&opts)?;
    let total: u64 = s.files.iter().map(|(_, n)| n).sum();
    eprintln!(
        "wrote {} ({}, {} layers, {:.2}B parameters, {} tensors, {:.2} GB) in {:.1} s",
        opts.out.display(),
        quant.name(),
        s.config.num_layers,
        s.config.num_params() as f64 / 1e9,
        s.tensors,
        total as f64 / 1e9,
        s.seconds
    );
    Ok(())
}
