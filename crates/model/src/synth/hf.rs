//! Writing a synthetic model as an HF model directory: bf16 safetensors (one `model.safetensors`,
//! or `model-0000i-of-0000N.safetensors` shards of at most `MAX_SHARD_BYTES` with a
//! `model.safetensors.index.json`, as transformers' `save_pretrained` does), `config.json`,
//! `generation_config.json`, `tokenizer.json` and `tokenizer_config.json`.
//!
//! Each shard's header (names, shapes, offsets) is computed up front, then tensors are generated and
//! written one at a time, so memory holds one tensor. Not here: values (rng.rs), GGUF (gguf.rs).

use super::plan::TensorSpec;
use super::vocab::Vocab;
use anyhow::{Context, Result};
use half::bf16;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Shard size limit (transformers' `max_shard_size`, decimal gigabytes as it counts them).
pub const MAX_SHARD_BYTES: u64 = 2_000_000_000;

/// Group tensors into shards in order, starting a new shard when the next tensor would overflow it
/// (a tensor larger than the limit gets a shard of its own).
fn shards(tensors: &[TensorSpec], max_bytes: u64) -> Vec<Vec<&TensorSpec>> {
    let mut out: Vec<Vec<&TensorSpec>> = vec![];
    let mut size = 0u64;
    for t in tensors {
        let bytes = t.elem_count() as u64 * 2;
        if out.is_empty() || (size + bytes > max_bytes && size > 0) {
            out.push(vec![]);
            size = 0;
        }
        out.last_mut().expect("pushed above").push(t);
        size += bytes;
    }
    out
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Write the safetensors files; `values(spec)` returns a tensor's bf16-exact values. Returns the
/// files written with their sizes.
pub fn write_weights(
    dir: &Path,
    tensors: &[TensorSpec],
    max_shard_bytes: u64,
    mut values: impl FnMut(&TensorSpec) -> Result<Vec<f32>>,
) -> Result<Vec<(PathBuf, u64)>> {
    let groups = shards(tensors, max_shard_bytes);
    let n = groups.len();
    let mut files = vec![];
    let mut weight_map = Map::new();
    let mut total_size = 0u64;
    for (k, group) in groups.iter().enumerate() {
        let name = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", k + 1, n)
        };
        let path = dir.join(&name);
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut offset = 0u64;
        for t in group {
            let bytes = t.elem_count() as u64 * 2;
            header.insert(
                t.hf_name.clone(),
                json!({"dtype": "BF16", "shape": t.shape, "data_offsets": [offset, offset + bytes]}),
            );
            weight_map.insert(t.hf_name.clone(), json!(name));
            offset += bytes;
        }
        total_size += offset;
        let mut header = serde_json::to_string(&Value::Object(header))?.into_bytes();
        // Data must start 8-byte aligned; the format pads the header with spaces.
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for t in group {
            let v = values(t)?;
            // Converted in slices so the bf16 copy never costs a second tensor's worth of memory.
            for part in v.chunks(1 << 20) {
                let bytes: Vec<u8> = part.iter().flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
        }
        w.flush().with_context(|| format!("writing {}", path.display()))?;
        files.push((path, 8 + header.len() as u64 + offset));
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
        let path = dir.join("model.safetensors.index.json");
        write_json(&path, &index)?;
    }
    Ok(files)
}

/// config.json, generation_config.json, tokenizer.json, tokenizer_config.json.
pub fn write_side_files(
    dir: &Path,
    config: &Value,
    vocab: &Vocab,
    chat_template: &str,
    max_positions: usize,
) -> Result<()> {
    write_json(&dir.join("config.json"), config)?;
    // The authors' recommended sampling (MODEL.md).
    let generation = json!({
        "bos_token_id": vocab.bos_id(),
        "eos_token_id": vocab.eos_id(),
        "pad_token_id": 0,
        "do_sample": true,
        "temperature": 0.6,
        "top_p": 0.95,
        "repetition_penalty": 1.0
    });
    write_json(&dir.join("generation_config.json"), &generation)?;
    // tokenizer.json is large (a vocabulary and its merges); compact like transformers writes it.
    let tok = serde_json::to_string(&vocab.tokenizer_json())?;
    std::fs::write(dir.join("tokenizer.json"), tok).context("writing tokenizer.json")?;
    write_json(&dir.join("tokenizer_config.json"), &vocab.tokenizer_config_json(chat_template, max_positions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::plan::Role;

    fn t(n: usize) -> TensorSpec {
        TensorSpec { hf_name: format!("t{n}"), gguf_name: String::new(), shape: vec![n], role: Role::Norm, layer: None }
    }

    #[test]
    fn shards_fill_in_order_and_oversized_tensors_stand_alone() {
        let ts = [t(10), t(10), t(30), t(5), t(5)];
        let g = shards(&ts, 40); // bf16: 20, 20, 60, 10, 10 bytes
        let sizes: Vec<Vec<usize>> = g.iter().map(|s| s.iter().map(|t| t.shape[0]).collect()).collect();
        assert_eq!(sizes, vec![vec![10, 10], vec![30], vec![5, 5]]);
    }
}
