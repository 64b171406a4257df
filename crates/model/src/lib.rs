//! nanbeige-model: Llama-family model code (config, weights, RoPE, the decoder with its KV cache).
//! Knows tensors, not text: tokenization and chat templates live in nanbeige-text.

pub mod attention;
pub mod config;
pub mod kv_cache;
pub mod llama;
pub mod rope;
pub mod synth;
pub mod weights;

pub use config::{Arch, Config, RopeScaling};
pub use kv_cache::{Cache, KvType};
pub use llama::Llama;
pub use weights::{LoadOptions, Weight, WeightSource};

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use std::path::Path;
use std::sync::Arc;

/// Open a GGUF file and parse its header (metadata and tensor table), with errors that name the file.
pub fn open_gguf(path: &Path) -> Result<(std::fs::File, Arc<gguf_file::Content>)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{}: not a valid GGUF file: {e}", path.display()))?;
    // candle checks offsets lazily; check now that every tensor lies inside the file so a truncated
    // download fails at load with a clear message rather than midway.
    let len = file.metadata()?.len();
    for (name, t) in &content.tensor_infos {
        let bytes = (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64;
        let end = content.tensor_data_offset + t.offset + bytes;
        if end > len {
            anyhow::bail!("{}: truncated file: tensor `{name}` ends at byte {end}, file has {len}", path.display());
        }
    }
    Ok((file, Arc::new(content)))
}

/// Load a GGUF model: config from metadata, weights quantized (or dequantized per `opts`).
pub fn load_gguf(
    path: &Path,
    file: std::fs::File,
    content: Arc<gguf_file::Content>,
    opts: LoadOptions,
) -> Result<Llama> {
    let cfg = Config::from_gguf(&content)?;
    let mut src = WeightSource::from_gguf(path, file, content, opts)?;
    Llama::load(cfg, &mut src)
}
