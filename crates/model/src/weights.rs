//! Reading weight tensors from an HF safetensors directory (single file or sharded with an index)
//! or from a GGUF file, under HF tensor names.
//!
//! Safetensors files are memory-mapped; each tensor is copied once into its candle tensor and its
//! pages are then dropped from the mapping, so a 7.9 GB bf16 model never sits in RAM twice.
//! GGUF tensors stay in their quantized form unless the caller asks for float weights.
//! This file knows file formats and names, not the model's structure.

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A weight as the model will use it: a float tensor (the differentiable path) or a quantized one.
#[derive(Clone, Debug)]
pub enum Weight {
    Float(Tensor),
    Quant(Arc<QTensor>),
}

impl Weight {
    pub fn dims(&self) -> &[usize] {
        match self {
            Weight::Float(t) => t.dims(),
            Weight::Quant(q) => q.shape().dims(),
        }
    }

    /// Human-readable storage type ("bf16", "Q4_K", ...).
    pub fn type_name(&self) -> String {
        match self {
            Weight::Float(t) => format!("{:?}", t.dtype()).to_lowercase(),
            Weight::Quant(q) => format!("{:?}", q.dtype()),
        }
    }

    pub fn to_float(&self, dtype: DType) -> Result<Tensor> {
        Ok(match self {
            Weight::Float(t) => t.to_dtype(dtype)?,
            Weight::Quant(q) => q.dequantize(&Device::Cpu)?.to_dtype(dtype)?,
        })
    }
}

/// How weights are materialised.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// dtype of float weights; `None` keeps what the file stores (f32/f16/bf16; GGUF float types as f32).
    pub dtype: Option<DType>,
    /// Dequantize GGUF quantized tensors to float (the path training and exact comparisons use).
    pub dequantize: bool,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: None, dequantize: false, progress: true }
    }
}

struct StEntry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

enum Store {
    Safetensors { maps: Vec<(PathBuf, Mmap)>, entries: HashMap<String, StEntry> },
    Gguf { path: PathBuf, file: File, content: Arc<gguf_file::Content> },
}

pub struct WeightSource {
    store: Store,
    opts: LoadOptions,
    bar: Option<ProgressBar>,
}

fn st_dtype(d: safetensors::Dtype, name: &str) -> Result<DType> {
    Ok(match d {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        other => bail!("tensor `{name}` has unsupported dtype {other:?} (supported: f32, f16, bf16)"),
    })
}

/// HF tensor name to the llama.cpp GGUF name.
fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

fn make_bar(total: u64, show: bool) -> Option<ProgressBar> {
    // Small files load in a blink; a bar would only flicker.
    if !show || total < (64 << 20) || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

impl WeightSource {
    /// Open the safetensors of an HF model directory: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`.
    pub fn open_safetensors_dir(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{}: no weight_map", index.display()))?;
            let mut names: Vec<String> = map.values().filter_map(|x| x.as_str().map(String::from)).collect();
            names.sort();
            names.dedup();
            for n in &names {
                if n.contains('/') || n.contains("..") {
                    bail!("{}: invalid shard name `{n}`", index.display());
                }
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                bail!("{}: no model.safetensors or model.safetensors.index.json", dir.display());
            }
            vec![single]
        };
        let mut maps = Vec::new();
        let mut entries = HashMap::new();
        let mut total = 0u64;
        for (i, path) in files.iter().enumerate() {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: the file is opened read-only; like every mmap-based loader we assume it is not
            // truncated by another process while we read it.
            let mmap = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&mmap)
                .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let dtype = match st_dtype(info.dtype, &name) {
                    Ok(d) => d,
                    // Unused tensors of other types (e.g. int buffers) are fine until someone asks.
                    Err(_) => continue,
                };
                let (s, e) = info.data_offsets;
                let entry = StEntry { file: i, dtype, shape: info.shape.clone(), start: base + s, end: base + e };
                total += (e - s) as u64;
                entries.insert(name, entry);
            }
            maps.push((path.clone(), mmap));
        }
        Ok(Self { store: Store::Safetensors { maps, entries }, opts, bar: make_bar(total, opts.progress) })
    }

    /// Use an already-parsed GGUF header; `file` is the open GGUF file.
    pub fn from_gguf(path: &Path, file: File, content: Arc<gguf_file::Content>, opts: LoadOptions) -> Result<Self> {
        let total: u64 = content
            .tensor_infos
            .values()
            .map(|t| (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64)
            .sum();
        Ok(Self {
            store: Store::Gguf { path: path.to_path_buf(), file, content },
            opts,
            bar: make_bar(total, opts.progress),
        })
    }

    pub fn is_gguf(&self) -> bool {
        matches!(self.store, Store::Gguf { .. })
    }

    pub fn contains(&self, hf_name: &str) -> bool {
        match &self.store {
            Store::Safetensors { entries, .. } => entries.contains_key(hf_name),
            Store::Gguf { content, .. } => {
                gguf_name(hf_name).is_some_and(|g| content.tensor_infos.contains_key(&g))
            }
        }
    }

    /// Load a tensor by HF name and check its shape. `allow_quant` says whether the caller can use a
    /// quantized weight (matmuls, embeddings); norms and biases always come back as float.
    pub fn get(&mut self, hf_name: &str, shape: &[usize], allow_quant: bool) -> Result<Weight> {
        let w = self.get_inner(hf_name, allow_quant)?;
        if w.dims() != shape {
            bail!("tensor `{hf_name}` has shape {:?}, expected {:?} from the config", w.dims(), shape);
        }
        if let Some(bar) = &self.bar {
            let bytes = match &w {
                Weight::Float(t) => t.elem_count() * t.dtype().size_in_bytes(),
                Weight::Quant(q) => q.storage_size_in_bytes(),
            };
            bar.inc(bytes as u64);
        }
        Ok(w)
    }

    fn get_inner(&mut self, hf_name: &str, allow_quant: bool) -> Result<Weight> {
        let opts = self.opts;
        let target = |stored| opts.dtype.unwrap_or(stored);
        match &mut self.store {
            Store::Safetensors { maps, entries } => {
                let e = entries.get(hf_name).with_context(|| format!("missing tensor `{hf_name}`"))?;
                let (path, mmap) = &maps[e.file];
                let bytes = mmap
                    .get(e.start..e.end)
                    .with_context(|| format!("{}: tensor `{hf_name}` lies outside the file", path.display()))?;
                let t = Tensor::from_raw_buffer(bytes, e.dtype, &e.shape, &Device::Cpu)
                    .with_context(|| format!("reading tensor `{hf_name}`"))?;
                let t = t.to_dtype(target(e.dtype))?;
                // The copy is made; drop the mapped pages so peak memory stays one model's worth.
                // SAFETY: nothing else borrows this range after the copy above.
                #[cfg(unix)]
                unsafe {
                    let _ = mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, e.start, e.end - e.start);
                }
                Ok(Weight::Float(t))
            }
            Store::Gguf { path, file, content } => {
                let g = gguf_name(hf_name).with_context(|| format!("no GGUF name for tensor `{hf_name}`"))?;
                let q = content
                    .tensor(file, &g, &Device::Cpu)
                    .map_err(|e| anyhow::anyhow!("{}: reading tensor `{g}`: {e}", path.display()))?;
                let is_float = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
                if allow_quant && !opts.dequantize && !is_float {
                    Ok(Weight::Quant(Arc::new(q)))
                } else {
                    // candle dequantizes to f32; GGUF float tensors are small (norms) or wanted as f32.
                    let t = q.dequantize(&Device::Cpu)?;
                    Ok(Weight::Float(t.to_dtype(target(DType::F32))?))
                }
            }
        }
    }

    /// Storage types of every tensor, for `info`.
    pub fn tensor_types(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut v: Vec<_> = match &self.store {
            Store::Safetensors { entries, .. } => entries
                .iter()
                .map(|(n, e)| (n.clone(), format!("{:?}", e.dtype).to_lowercase(), e.shape.clone()))
                .collect(),
            Store::Gguf { content, .. } => content
                .tensor_infos
                .iter()
                .map(|(n, t)| (n.clone(), format!("{:?}", t.ggml_dtype), t.shape.dims().to_vec()))
                .collect(),
        };
        v.sort();
        v
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Hands memory the allocator holds free back to the OS. A GGUF tensor is read into the heap and
/// repacked into its own mapping (kernels' buffer.rs), so without this the freed reads pile up
/// (the CLI tells glibc not to trim on its own, for prefill's sake): 0.9 GB more resident while
/// decoding the Q4_0 3B (3.30 against 2.39 GB).
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the OS; it may be called at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Half-precision tensors, small and over 2 MiB, load bit for bit, and a dtype change converts.
    #[test]
    fn half_precision_tensors_load_bit_for_bit() {
        let dir = std::env::temp_dir().join(format!("nanbeige-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big: Vec<bf16> = (0..(1usize << 20) + 777).map(|i| bf16::from_f32(i as f32 * 0.37 - 5e4)).collect();
        let small: Vec<f16> = (0..1000).map(|i| f16::from_f32(i as f32 / 7.0)).collect();
        let bytes = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let big_b = bytes(&big.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        let small_b = bytes(&small.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        let views = [
            ("big", safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![big.len()], &big_b).unwrap()),
            ("small", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![10, 100], &small_b).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        let opts = LoadOptions { progress: false, ..Default::default() };
        let mut src = WeightSource::open_safetensors_dir(&dir, opts).unwrap();
        let Weight::Float(t) = src.get("big", &[big.len()], true).unwrap() else { panic!("float expected") };
        assert_eq!(t.dtype(), DType::BF16);
        assert_eq!(t.to_vec1::<bf16>().unwrap(), big);
        let Weight::Float(t) = src.get("small", &[10, 100], true).unwrap() else { panic!("float expected") };
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f16>().unwrap(), small);
        let opts = LoadOptions { dtype: Some(DType::F32), ..opts };
        let mut src = WeightSource::open_safetensors_dir(&dir, opts).unwrap();
        let Weight::Float(t) = src.get("big", &[big.len()], true).unwrap() else { panic!("float expected") };
        let want: Vec<f32> = big.iter().map(|x| x.to_f32()).collect();
        assert_eq!(t.to_vec1::<f32>().unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
