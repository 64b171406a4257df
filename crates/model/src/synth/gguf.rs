//! Writing a synthetic model as one GGUF v3 file the way llama.cpp's `convert_hf_to_gguf.py` +
//! `llama-quantize` would: llama.cpp tensor names, q/k rows permuted for interleaved RoPE (arch
//! `llama`), llama.cpp's per-tensor type choice for each file type, and the metadata a converted
//! Nanbeige4.1 file carries (hyper-parameters, SentencePiece `llama` vocabulary, special token ids,
//! chat template).
//!
//! The file is streamed: the header (with every tensor's type, shape and offset, all known in
//! advance) goes first, then each tensor is generated, quantized and written in turn, so memory holds
//! one tensor at a time. Not here: the values themselves (rng.rs) or HF output (hf.rs).

use super::plan::{BiasOf, Role, TensorSpec};
use super::vocab::Vocab;
use super::Quant;
use crate::config::{Arch, Config, RopeScaling};
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::io::Write;
use std::path::Path;

const ALIGNMENT: u64 = 32;

/// llama.cpp's `llama_ftype` number for `general.file_type`.
pub fn file_type(q: Quant) -> u32 {
    match q {
        Quant::F32 => 0,
        Quant::Q4_0 => 2,
        Quant::Q8_0 => 7,
        Quant::Q4KM => 15,
        Quant::Bf16 => 32,
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one between.
fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    let (i, n) = (layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Storage type of one tensor, following llama.cpp's `llama_tensor_get_type` for the file types we
/// write: 1-D tensors stay F32; the output matrix (or the tied embedding) is Q6_K unless the file
/// is Q8_0; Q4_K_M raises attn_v and ffn_down to Q6_K in the `use_more_bits` layers; a row length
/// that does not fit the block size falls back as llama.cpp does (Q4_K→Q5_0, Q6_K→Q8_0, then F16).
pub fn tensor_type(quant: Quant, spec: &TensorSpec, cfg: &Config) -> GgmlDType {
    if spec.shape.len() == 1 {
        return GgmlDType::F32;
    }
    let base = match quant {
        Quant::F32 => return GgmlDType::F32,
        Quant::Bf16 => return GgmlDType::BF16,
        Quant::Q4_0 => GgmlDType::Q4_0,
        Quant::Q8_0 => GgmlDType::Q8_0,
        Quant::Q4KM => GgmlDType::Q4K,
    };
    let cols = spec.shape[1];
    let is_output = spec.role == Role::LmHead || (spec.role == Role::Embed && cfg.tie_word_embeddings);
    let more_bits = |l: Option<usize>| l.is_some_and(|l| use_more_bits(l, cfg.num_layers));
    let t = if is_output {
        if cols % base.block_size() != 0 || base == GgmlDType::Q8_0 {
            GgmlDType::Q8_0
        } else {
            GgmlDType::Q6K
        }
    } else if quant == Quant::Q4KM && matches!(spec.role, Role::V | Role::Down) && more_bits(spec.layer) {
        GgmlDType::Q6K
    } else {
        base
    };
    if cols % t.block_size() == 0 {
        return t;
    }
    let fallback = match t {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    };
    if cols % fallback.block_size() == 0 {
        fallback
    } else {
        GgmlDType::F16
    }
}

/// GGUF type number of a tensor type (ggml's `ggml_type`).
fn ggml_type_id(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

pub fn storage_bytes(t: GgmlDType, elems: usize) -> u64 {
    (elems / t.block_size() * t.type_size()) as u64
}

/// The metadata llama.cpp's converter writes for a Llama-family checkpoint with a SentencePiece
/// tokenizer (gguf-py's key names and value types).
pub fn metadata(
    cfg: &Config,
    head_dim_in_config: bool,
    vocab: &Vocab,
    quant: Quant,
    name: &str,
    chat_template: &str,
) -> Result<Vec<(String, Value)>> {
    let arch = cfg.arch.name();
    let u32v =
        |x: usize| -> Result<Value> { Ok(Value::U32(u32::try_from(x).context("value too large for GGUF u32")?)) };
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name.into())),
        (format!("{arch}.block_count"), u32v(cfg.num_layers)?),
        (format!("{arch}.context_length"), u32v(cfg.max_position_embeddings)?),
        (format!("{arch}.embedding_length"), u32v(cfg.hidden_size)?),
        (format!("{arch}.feed_forward_length"), u32v(cfg.intermediate_size)?),
        (format!("{arch}.attention.head_count"), u32v(cfg.num_heads)?),
        (format!("{arch}.attention.head_count_kv"), u32v(cfg.num_kv_heads)?),
        (format!("{arch}.rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_norm_eps as f32)),
    ];
    if head_dim_in_config {
        md.push((format!("{arch}.attention.key_length"), u32v(cfg.head_dim)?));
        md.push((format!("{arch}.attention.value_length"), u32v(cfg.head_dim)?));
    }
    md.push(("general.file_type".into(), Value::U32(file_type(quant))));
    if cfg.arch == Arch::Llama {
        md.push((format!("{arch}.vocab_size"), u32v(cfg.vocab_size)?));
        md.push((format!("{arch}.rope.dimension_count"), u32v(cfg.head_dim)?));
    }
    match &cfg.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => {
            md.push((format!("{arch}.rope.scaling.type"), Value::String("linear".into())));
            md.push((format!("{arch}.rope.scaling.factor"), Value::F32(*factor as f32)));
        }
        Some(RopeScaling::Yarn { factor, original_max_position_embeddings, .. }) => {
            md.push((format!("{arch}.rope.scaling.type"), Value::String("yarn".into())));
            md.push((format!("{arch}.rope.scaling.factor"), Value::F32(*factor as f32)));
            md.push((
                format!("{arch}.rope.scaling.original_context_length"),
                u32v(*original_max_position_embeddings as usize)?,
            ));
        }
        Some(RopeScaling::Llama3 { .. }) => {
            bail!("GGUF output of llama3 RoPE scaling is not supported (llama.cpp stores it as a rope_freqs tensor)")
        }
    }
    md.push(("general.quantization_version".into(), Value::U32(2)));
    md.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
    md.push(("tokenizer.ggml.pre".into(), Value::String("default".into())));
    md.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(vocab.tokens.iter().map(|t| Value::String(t.clone())).collect()),
    ));
    md.push(("tokenizer.ggml.scores".into(), Value::Array(vocab.scores.iter().map(|&s| Value::F32(s)).collect())));
    md.push(("tokenizer.ggml.token_type".into(), Value::Array(vocab.types.iter().map(|&t| Value::I32(t)).collect())));
    md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(vocab.bos_id())));
    md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab.eos_id())));
    md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)));
    md.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(0)));
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)));
    md.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)));
    md.push(("tokenizer.chat_template".into(), Value::String(chat_template.into())));
    Ok(md)
}

/// llama.cpp's `LlamaModel.permute`: within each head, rows [first half | second half] become
/// interleaved pairs (row i of the first half, row i of the second half), which turns HF's
/// half-split RoPE into llama.cpp's interleaved RoPE. Works on matrices (rows of `cols`) and biases
/// (`cols` = 1).
pub fn permute_rows(values: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..n_head {
        for i in 0..half {
            for a in 0..2 {
                let src = h * head_dim + a * half + i;
                let dst = h * head_dim + 2 * i + a;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Heads of a q/k tensor (matrix or bias) that the llama converter permutes, if any.
pub fn permute_heads(cfg: &Config, spec: &TensorSpec) -> Option<usize> {
    if cfg.arch != Arch::Llama {
        return None;
    }
    match spec.role {
        Role::Q | Role::Bias { of: BiasOf::Q } => Some(cfg.num_heads),
        Role::K | Role::Bias { of: BiasOf::K } => Some(cfg.num_kv_heads),
        _ => None,
    }
}

/// Encode f32 values (row-major, rows of `cols`) as tensor type `t`; quantization runs on all cores.
pub fn encode(values: &[f32], cols: usize, t: GgmlDType) -> Result<Vec<u8>> {
    if t == GgmlDType::F32 {
        return Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let rows = values.len() / cols;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let rows_per = rows.div_ceil(threads).max(1);
    // A thread quantizes its rows a slice at a time: candle copies its input more than once, and
    // small slices keep those copies small next to the tensor itself.
    let quantize = |rows: &[f32]| -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(storage_bytes(t, rows.len()) as usize);
        for slice in rows.chunks(cols * 64) {
            let t_in = Tensor::from_slice(slice, (slice.len() / cols, cols), &Device::Cpu)?;
            out.extend_from_slice(&QTensor::quantize(&t_in, t)?.data()?);
        }
        Ok(out)
    };
    // Whole rows per thread; results are concatenated in row order.
    std::thread::scope(|s| {
        let handles: Vec<_> = values.chunks(rows_per * cols).map(|c| s.spawn(move || quantize(c))).collect();
        let mut out = Vec::with_capacity(storage_bytes(t, values.len()) as usize);
        for h in handles {
            let part = h.join().map_err(|_| anyhow::anyhow!("quantization thread panicked"))??;
            out.extend_from_slice(&part);
        }
        Ok(out)
    })
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn value_type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn write_value(w: &mut impl Write, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes())?,
        Value::I8(x) => w.write_all(&x.to_le_bytes())?,
        Value::U16(x) => w.write_all(&x.to_le_bytes())?,
        Value::I16(x) => w.write_all(&x.to_le_bytes())?,
        Value::U32(x) => w.write_all(&x.to_le_bytes())?,
        Value::I32(x) => w.write_all(&x.to_le_bytes())?,
        Value::F32(x) => w.write_all(&x.to_le_bytes())?,
        Value::Bool(x) => w.write_all(&[*x as u8])?,
        Value::String(s) => write_str(w, s)?,
        Value::U64(x) => w.write_all(&x.to_le_bytes())?,
        Value::I64(x) => w.write_all(&x.to_le_bytes())?,
        Value::F64(x) => w.write_all(&x.to_le_bytes())?,
        Value::Array(items) => {
            let ty = items.first().map(value_type_id).unwrap_or(4);
            if items.iter().any(|x| value_type_id(x) != ty) {
                bail!("GGUF arrays must hold one value type");
            }
            w.write_all(&ty.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for x in items {
                write_value(w, x)?;
            }
        }
    }
    Ok(())
}

fn pad(w: &mut impl Write, written: u64) -> std::io::Result<u64> {
    let n = (ALIGNMENT - written % ALIGNMENT) % ALIGNMENT;
    w.write_all(&vec![0u8; n as usize])?;
    Ok(n)
}

/// Stream a GGUF file: header, metadata and tensor table first, then `data(spec, type)` for each
/// tensor in order. Returns the bytes written.
pub fn write(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[(TensorSpec, GgmlDType)],
    mut data: impl FnMut(&TensorSpec, GgmlDType) -> Result<Vec<u8>>,
) -> Result<u64> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    let mut head: Vec<u8> = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        write_str(&mut head, k)?;
        head.extend_from_slice(&value_type_id(v).to_le_bytes());
        write_value(&mut head, v)?;
    }
    let mut offset = 0u64;
    for (spec, t) in tensors {
        write_str(&mut head, &spec.gguf_name)?;
        head.extend_from_slice(&(spec.shape.len() as u32).to_le_bytes());
        // GGUF lists dimensions innermost first.
        for &d in spec.shape.iter().rev() {
            head.extend_from_slice(&(d as u64).to_le_bytes());
        }
        head.extend_from_slice(&ggml_type_id(*t).to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        let size = storage_bytes(*t, spec.elem_count());
        offset += size.div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    w.write_all(&head)?;
    let mut total = head.len() as u64;
    total += pad(&mut w, total)?;
    for (spec, t) in tensors {
        let bytes = data(spec, *t)?;
        if bytes.len() as u64 != storage_bytes(*t, spec.elem_count()) {
            bail!("internal error: tensor `{}` encoded to {} bytes", spec.gguf_name, bytes.len());
        }
        w.write_all(&bytes)?;
        total += bytes.len() as u64;
        total += pad(&mut w, total)?;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_picks_half_of_32_layers() {
        let picked: Vec<usize> = (0..32).filter(|&l| use_more_bits(l, 32)).collect();
        assert_eq!(picked, vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    }

    #[test]
    fn nanbeige_type_mix_and_file_sizes_match_llama_cpp() {
        let v: serde_json::Value = serde_json::from_str(crate::synth::NANBEIGE_3B_CONFIG).unwrap();
        let cfg = Config::from_hf_json(&v).unwrap();
        let plan = crate::synth::plan::tensors(&cfg);
        let ty = |q, name: &str| tensor_type(q, plan.iter().find(|t| t.gguf_name == name).unwrap(), &cfg);
        assert_eq!(ty(Quant::Q4KM, "token_embd.weight"), GgmlDType::Q4K);
        assert_eq!(ty(Quant::Q4KM, "output.weight"), GgmlDType::Q6K);
        assert_eq!(ty(Quant::Q4KM, "blk.0.attn_v.weight"), GgmlDType::Q6K);
        assert_eq!(ty(Quant::Q4KM, "blk.4.attn_v.weight"), GgmlDType::Q4K);
        assert_eq!(ty(Quant::Q4KM, "blk.6.ffn_down.weight"), GgmlDType::Q6K);
        assert_eq!(ty(Quant::Q4KM, "blk.6.ffn_up.weight"), GgmlDType::Q4K);
        assert_eq!(ty(Quant::Q4KM, "blk.6.attn_norm.weight"), GgmlDType::F32);
        assert_eq!(ty(Quant::Q4_0, "output.weight"), GgmlDType::Q6K);
        assert_eq!(ty(Quant::Q4_0, "token_embd.weight"), GgmlDType::Q4_0);
        assert_eq!(ty(Quant::Q8_0, "output.weight"), GgmlDType::Q8_0);
        let q6 = plan.iter().filter(|t| tensor_type(Quant::Q4KM, t, &cfg) == GgmlDType::Q6K).count();
        assert_eq!(q6, 16 + 16 + 1);
        // File sizes MODEL.md and the issue quote: Q4_0 ~2.3 GB, Q4_K_M ~2.4 GB, Q8_0 ~3.9 GiB.
        let gb =
            |q| plan.iter().map(|t| storage_bytes(tensor_type(q, t, &cfg), t.elem_count())).sum::<u64>() as f64 / 1e9;
        assert!((gb(Quant::Q4_0) - 2.3).abs() < 0.1, "{}", gb(Quant::Q4_0));
        assert!((gb(Quant::Q4KM) - 2.45).abs() < 0.15, "{}", gb(Quant::Q4KM));
        assert!((gb(Quant::Q8_0) / 1.073_741_824 - 3.9).abs() < 0.1, "{}", gb(Quant::Q8_0));
    }

    #[test]
    fn rows_that_do_not_fit_k_blocks_fall_back_like_llama_cpp() {
        let v = serde_json::json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 400});
        let cfg = Config::from_hf_json(&v).unwrap();
        let plan = crate::synth::plan::tensors(&cfg);
        let ty = |name: &str| tensor_type(Quant::Q4KM, plan.iter().find(|t| t.gguf_name == name).unwrap(), &cfg);
        assert_eq!(ty("blk.1.attn_q.weight"), GgmlDType::Q5_0); // Q4_K needs 256-wide rows
        assert_eq!(ty("output.weight"), GgmlDType::Q8_0); // Q6_K -> Q8_0
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlDType::Q5_0); // 96 columns
        assert_eq!(ty("blk.1.ffn_down.weight"), GgmlDType::Q8_0); // last layer: Q6_K -> Q8_0
    }

    #[test]
    fn permutation_interleaves_halves() {
        // One head of 4 rows, 1 column: [a0 a1 | b0 b1] -> [a0 b0 a1 b1].
        assert_eq!(permute_rows(&[0., 1., 10., 11.], 4, 1, 1), vec![0., 10., 1., 11.]);
    }
}
