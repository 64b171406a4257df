//! The Llama-family decoder: embeddings, blocks of (RMSNorm, GQA attention with RoPE, RMSNorm,
//! SwiGLU MLP), final norm and LM head. Covers Nanbeige4.1 / Llama, SmolLM2 and Qwen2 (q/k/v bias,
//! tied embeddings) — the differences are all in `Config`.
//!
//! Each linear is either a float tensor (f32/bf16/f16; differentiable, used for training and exact
//! comparisons) or a GGUF quantized tensor (inference). The model itself is immutable; per-sequence
//! state lives in `Cache`, so one model can serve many sequences.
//! Not here: sampling, tokenization, batching of sequences at different positions.

use crate::config::Config;
pub use crate::kv_cache::{Cache, KvType};
use crate::rope::RopeTables;
use crate::weights::{LoadOptions, Weight, WeightSource};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{CpuStorage, DType, Device, Module, Storage, Tensor, Var, D};
use nanbeige_kernels::{FloatWeights, Format, PackedMatrix};
use std::sync::Arc;

mod decode;

/// Most prompt tokens one forward pass takes; longer prompts are prefilled in chunks.
const PREFILL_CHUNK: usize = 512;

/// Upper bound on cos/sin table length when the config allows a huge context (Nanbeige: 262,144).
/// Longer contexts extend the table lazily through `Llama::with_context`.
const DEFAULT_ROPE_POSITIONS: usize = 32768;

/// A linear layer y = x W^T (+ b).
///
/// Inference runs on nanbeige-kernels: GGUF quantized weights are repacked at load into the
/// kernels' layout (candle's QTensor is then dropped, so the weights sit in memory once), and
/// bf16/f16 tensors are read in place. Whenever autograd needs the graph (the weight is a `Var` or
/// the input depends on one), float weights go through candle's matmul instead, which training
/// differentiates. Quantized types the kernels do not cover (Q2_K, Q3_K, ...) stay on candle's
/// QMatMul.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    /// Low-rank adapter for LoRA training: y += scale * (x A^T) B^T. None for inference.
    lora: Option<Lora>,
}

/// A LoRA adapter: `a` (rank, in), `b` (out, rank), trained while the base weight stays frozen.
#[derive(Clone, Debug)]
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

#[derive(Clone, Debug)]
enum LinearWeight {
    Float(Tensor),
    Packed(Arc<PackedMatrix>, GgmlDType),
    Quant(QMatMul),
}

fn kernel_format(t: GgmlDType) -> Option<Format> {
    Some(match t {
        GgmlDType::Q4_0 => Format::Q4_0,
        GgmlDType::Q4_1 => Format::Q4_1,
        GgmlDType::Q5_0 => Format::Q5_0,
        GgmlDType::Q5_1 => Format::Q5_1,
        GgmlDType::Q8_0 => Format::Q8_0,
        GgmlDType::Q4K => Format::Q4K,
        GgmlDType::Q5K => Format::Q5K,
        GgmlDType::Q6K => Format::Q6K,
        _ => return None,
    })
}

/// Run `f` on the rows of `x` as one contiguous f32 slice (rows, k).
fn with_rows<R>(x: &Tensor, f: impl FnOnce(&[f32], usize) -> R) -> Result<R> {
    let x = if x.dtype() == DType::F32 { x.contiguous()? } else { x.to_dtype(DType::F32)?.contiguous()? };
    let k = x.dims().last().copied().unwrap_or(1);
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else { bail!("linear: expected f32 activations on the CPU") };
    let data = &data[layout.start_offset()..layout.start_offset() + x.elem_count()];
    Ok(f(data, x.elem_count() / k.max(1)))
}

/// Run `f` on a bf16/f16 weight matrix (n, k) read in place, as the kernels take it.
fn with_half_weights<R>(w: &Tensor, f: impl FnOnce(FloatWeights, usize, usize) -> R) -> Result<R> {
    let (n, k) = w.dims2()?;
    let w = w.contiguous()?;
    let (ws, wl) = w.storage_and_layout();
    let range = wl.start_offset()..wl.start_offset() + n * k;
    Ok(match &*ws {
        Storage::Cpu(CpuStorage::BF16(v)) => f(FloatWeights::Bf16(&v[range]), n, k),
        Storage::Cpu(CpuStorage::F16(v)) => f(FloatWeights::F16(&v[range]), n, k),
        _ => bail!("linear: expected half-precision weights on the CPU"),
    })
}

/// The output shape: x's with the last dimension replaced by `n`.
fn out_shape(x: &Tensor, n: usize) -> Vec<usize> {
    let mut dims = x.dims().to_vec();
    *dims.last_mut().unwrap() = n;
    dims
}

impl Linear {
    fn new(w: Weight, bias: Option<Tensor>) -> Result<Self> {
        let weight = match w {
            Weight::Float(t) => LinearWeight::Float(t),
            Weight::Quant(q) => match kernel_format(q.dtype()) {
                Some(f) => {
                    let (n, k) = q.shape().dims2()?;
                    let packed = PackedMatrix::from_gguf(f, n, k, &q.data()?).map_err(anyhow::Error::msg)?;
                    LinearWeight::Packed(Arc::new(packed), q.dtype())
                }
                None => LinearWeight::Quant(QMatMul::from_arc(q)?),
            },
        };
        Ok(Self { weight, bias, lora: None })
    }

    /// x: (..., in) f32 -> (..., out) f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Float(w)
                if matches!(w.dtype(), DType::BF16 | DType::F16) && !w.track_op() && !x.track_op() =>
            {
                let (y, n) = with_half_weights(w, |weights, n, k| {
                    with_rows(x, |xs, m| {
                        let mut y = vec![0f32; m * n];
                        nanbeige_kernels::matmul_float(weights, n, k, xs, m, &mut y);
                        (y, n)
                    })
                })??;
                Tensor::from_vec(y, out_shape(x, n), &Device::Cpu)?
            }
            LinearWeight::Float(w) => {
                let dims = x.dims().to_vec();
                let (rows, k) = (x.elem_count() / dims[dims.len() - 1], dims[dims.len() - 1]);
                // The autograd path: half-precision weights are widened per call so candle can
                // differentiate through an f32 matmul.
                let w = if w.dtype() == DType::F32 { w.clone() } else { w.to_dtype(DType::F32)? };
                let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
                y.reshape(out_shape(x, w.dims()[0]))?
            }
            LinearWeight::Packed(p, _) => {
                let y = with_rows(x, |xs, m| {
                    let mut y = vec![0f32; m * p.n()];
                    nanbeige_kernels::matmul(p, xs, m, &mut y);
                    y
                })?;
                Tensor::from_vec(y, out_shape(x, p.n()), &Device::Cpu)?
            }
            LinearWeight::Quant(q) => q.forward(x)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        Ok(match &self.lora {
            Some(l) => {
                let dims = x.dims().to_vec();
                let (rows, k) = (x.elem_count() / dims[dims.len() - 1], dims[dims.len() - 1]);
                let low = x.reshape((rows, k))?.matmul(&l.a.t()?)?.matmul(&l.b.t()?)?;
                (y + (low * l.scale)?.reshape(out_shape(x, l.b.dims()[0]))?)?
            }
            None => y,
        })
    }

    /// Make the float weight a trainable `Var` (in place; the model then reads the Var's storage).
    fn make_var(&mut self, name: &str) -> Result<Var> {
        let LinearWeight::Float(w) = &self.weight else {
            bail!("`{name}` is quantized; training needs float weights (load the GGUF dequantized)")
        };
        let v = Var::from_tensor(w)?;
        self.weight = LinearWeight::Float(v.as_tensor().clone());
        Ok(v)
    }

    /// The weight as used: with a LoRA adapter, W + scale * B A (a new tensor; nothing changes).
    pub fn effective_weight(&self) -> Result<Option<Tensor>> {
        let LinearWeight::Float(w) = &self.weight else { return Ok(None) };
        Ok(Some(match &self.lora {
            Some(l) => {
                let delta =
                    (l.b.as_tensor().to_dtype(DType::F32)?.matmul(&l.a.as_tensor().to_dtype(DType::F32)?)? * l.scale)?;
                (w.to_dtype(DType::F32)?.detach() + delta)?.to_dtype(w.dtype())?
            }
            None => w.detach(),
        }))
    }

    /// Fold the LoRA adapter into the weight (W += scale * B A) and drop it.
    fn merge_lora(&mut self) -> Result<()> {
        if self.lora.is_some() {
            if let Some(merged) = self.effective_weight()? {
                self.weight = LinearWeight::Float(merged);
            }
        }
        self.lora = None;
        Ok(())
    }

    pub fn float_weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::Float(t) => Some(t),
            _ => None,
        }
    }

    /// Storage type, for `info`.
    fn type_name(&self) -> String {
        match &self.weight {
            LinearWeight::Float(w) => format!("{:?}", w.dtype()).to_lowercase(),
            LinearWeight::Packed(_, t) => format!("{t:?}"),
            LinearWeight::Quant(QMatMul::QTensor(q)) => format!("{:?}", q.dtype()),
            LinearWeight::Quant(QMatMul::Tensor(w)) | LinearWeight::Quant(QMatMul::TensorF16(w)) => {
                format!("{:?}", w.dtype()).to_lowercase()
            }
        }
    }
}

/// The packed matrices of `ls` when one `matmul_many` call can take them all: every one packed,
/// without an adapter, in one format with one row length.
fn one_kernel_call<'a>(ls: &[&'a Linear]) -> Option<Vec<&'a PackedMatrix>> {
    let ps: Vec<&PackedMatrix> = ls
        .iter()
        .map(|l| match (&l.weight, &l.lora) {
            (LinearWeight::Packed(p, _), None) => Some(&**p),
            _ => None,
        })
        .collect::<Option<_>>()?;
    ps.windows(2).all(|w| w[0].format() == w[1].format() && w[0].k() == w[1].k()).then_some(ps)
}

/// Several linears applied to the same input (q/k/v, gate/up). When all are packed in one format
/// with one row length and carry no adapter, x is quantized once and the products share one kernel
/// call (same numbers as separate calls); otherwise each runs on its own.
fn forward_many<const N: usize>(ls: [&Linear; N], x: &Tensor) -> Result<[Tensor; N]> {
    let outs: Vec<Tensor> = match one_kernel_call(&ls) {
        Some(ps) => {
            let ys = with_rows(x, |xs, m| {
                let mut ys: Vec<Vec<f32>> = ps.iter().map(|p| vec![0f32; m * p.n()]).collect();
                let mut views: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
                nanbeige_kernels::matmul_many(&ps, xs, m, &mut views);
                ys
            })?;
            let mut outs = Vec::with_capacity(N);
            for ((l, p), y) in ls.iter().zip(&ps).zip(ys) {
                let t = Tensor::from_vec(y, out_shape(x, p.n()), &Device::Cpu)?;
                outs.push(match &l.bias {
                    Some(b) => t.broadcast_add(b)?,
                    None => t,
                });
            }
            outs
        }
        _ => ls.iter().map(|l| l.forward(x)).collect::<Result<_>>()?,
    };
    Ok(outs.try_into().unwrap_or_else(|_| unreachable!("one output per linear")))
}

/// silu(g) * u in one pass over plain slices (inference): candle's silu and mul are two passes,
/// two allocations and a libm call per element. sigmoid(x) from e = e^-|x| (never overflows):
/// 1 / (1 + e) for x >= 0, e / (1 + e) below. In batched decode this runs on one core while the
/// other waits, so the loop is also compiled for AVX-512 and AVX2 (the same arithmetic per element,
/// so the same bits).
fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    let (g, u) = (g.contiguous()?, u.contiguous()?);
    if g.dims() != u.dims() || g.dtype() != DType::F32 || u.dtype() != DType::F32 {
        return Ok((g.silu()? * u)?);
    }
    let n = g.elem_count();
    let out = crate::attention::with_f32(&g, |gs| crate::attention::with_f32(&u, |us| swiglu_slices(&gs[..n], &us[..n])))??;
    Ok(Tensor::from_vec(out, g.dims(), &Device::Cpu)?)
}

/// `swiglu` on plain slices of equal length, compiled for the active path.
fn swiglu_slices(gs: &[f32], us: &[f32]) -> Vec<f32> {
    // Safety (both): the active path is one this CPU supports.
    #[cfg(target_arch = "x86_64")]
    match nanbeige_kernels::active_isa() {
        nanbeige_kernels::Isa::Avx512 => return unsafe { swiglu_avx512(gs, us) },
        nanbeige_kernels::Isa::Avx2 => return unsafe { swiglu_avx2(gs, us) },
        nanbeige_kernels::Isa::Scalar => {}
    }
    swiglu_rows(gs, us)
}

/// A plain loop into a slice (not `collect`, whose body is a separate function that the
/// AVX-512 build would not inline).
#[inline(always)]
fn swiglu_rows(gs: &[f32], us: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; gs.len()];
    for ((o, &x), &y) in out.iter_mut().zip(gs).zip(us) {
        let e = crate::attention::exp_nonpositive(-x.abs());
        let num = if x >= 0.0 { 1.0 } else { e };
        *o = x * num / (1.0 + e) * y;
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn swiglu_avx512(gs: &[f32], us: &[f32]) -> Vec<f32> {
    swiglu_rows(gs, us)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gs: &[f32], us: &[f32]) -> Vec<f32> {
    swiglu_rows(gs, us)
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Block {
    attn_norm: Tensor,
    attn: Attention,
    ffn_norm: Tensor,
    mlp: Mlp,
}

enum Embedding {
    Float(Tensor),
    Quant(Arc<candle_core::quantized::QTensor>),
    /// Tied to a quantized LM head: rows are decoded from the head's packed weights, so the
    /// matrix is held once.
    Packed(Arc<PackedMatrix>),
}

pub struct Llama {
    pub cfg: Config,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    rope: RopeTables,
    /// Use plain tensor ops that candle can differentiate instead of fused kernels.
    pub differentiable: bool,
    /// How caches made by `new_cache` store keys and values.
    pub kv_type: KvType,
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, differentiable: bool) -> Result<Tensor> {
    Ok(if differentiable {
        candle_nn::ops::rms_norm_slow(x, w, eps as f32)?
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?
    })
}

fn softmax(x: &Tensor, differentiable: bool) -> Result<Tensor> {
    Ok(if differentiable {
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
    } else {
        candle_nn::ops::softmax_last_dim(x)?
    })
}

impl Llama {
    /// Build the model from a weight source. `cfg` must describe the weights; every tensor's shape is
    /// checked against it.
    pub fn load(cfg: Config, src: &mut WeightSource) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (q_out, kv_out) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
        let float = |w: Weight| w.to_float(DType::F32);
        let embed_w = src.get("model.embed_tokens.weight", &[cfg.vocab_size, h], true)?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            let mut lin = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let w = src.get(&format!("{p}.{name}.weight"), &[out, inp], true)?;
                let b = if bias { Some(float(src.get(&format!("{p}.{name}.bias"), &[out], false)?)?) } else { None };
                Linear::new(w, b)
            };
            let attn = Attention {
                q: lin("self_attn.q_proj", q_out, h, cfg.qkv_bias)?,
                k: lin("self_attn.k_proj", kv_out, h, cfg.qkv_bias)?,
                v: lin("self_attn.v_proj", kv_out, h, cfg.qkv_bias)?,
                o: lin("self_attn.o_proj", h, q_out, cfg.o_bias)?,
            };
            let mlp = Mlp {
                gate: lin("mlp.gate_proj", i, h, cfg.mlp_bias)?,
                up: lin("mlp.up_proj", i, h, cfg.mlp_bias)?,
                down: lin("mlp.down_proj", h, i, cfg.mlp_bias)?,
            };
            let attn_norm = float(src.get(&format!("{p}.input_layernorm.weight"), &[h], false)?)?;
            let ffn_norm = float(src.get(&format!("{p}.post_attention_layernorm.weight"), &[h], false)?)?;
            blocks.push(Block { attn_norm, attn, ffn_norm, mlp });
            // Per layer, so the freed reads never add up to more than about one layer.
            crate::weights::release_freed_memory();
        }
        let norm = float(src.get("model.norm.weight", &[h], false)?)?;
        // Some checkpoints say tie_word_embeddings=false yet ship no lm_head (or the reverse); the
        // tensors present decide.
        let lm_head = if !cfg.tie_word_embeddings || src.contains("lm_head.weight") {
            if !src.contains("lm_head.weight") {
                bail!("missing tensor `lm_head.weight` (config says embeddings are not tied)");
            }
            Linear::new(src.get("lm_head.weight", &[cfg.vocab_size, h], true)?, None)?
        } else {
            Linear::new(embed_w.clone(), None)?
        };
        let embed = match (embed_w, &lm_head.weight) {
            (Weight::Quant(q), LinearWeight::Packed(p, _)) if !src.contains("lm_head.weight") => {
                drop(q);
                Embedding::Packed(p.clone())
            }
            (Weight::Float(t), _) => Embedding::Float(t),
            (Weight::Quant(q), _) => Embedding::Quant(q),
        };
        src.finish();
        crate::weights::release_freed_memory();
        let positions = cfg.max_position_embeddings.min(DEFAULT_ROPE_POSITIONS);
        let rope = RopeTables::new(&cfg, positions, &Device::Cpu)?;
        Ok(Self { cfg, embed, blocks, norm, lm_head, rope, differentiable: false, kv_type: KvType::F32 })
    }

    /// Load from an HF directory's safetensors with a config already read.
    pub fn load_safetensors(cfg: Config, dir: &std::path::Path, opts: LoadOptions) -> Result<Self> {
        let mut src = WeightSource::open_safetensors_dir(dir, opts)?;
        Self::load(cfg, &mut src)
    }

    /// Make the RoPE tables cover `n` positions (capped by the model's trained context).
    pub fn ensure_positions(&mut self, n: usize) -> Result<()> {
        if n > self.rope.len() {
            let n = n.min(self.cfg.max_position_embeddings.max(n));
            self.rope = RopeTables::new(&self.cfg, n, &Device::Cpu)?;
        }
        Ok(())
    }

    /// A new empty cache for one sequence of at most `max_len` tokens (prompt + generated).
    pub fn new_cache(&self, max_len: usize) -> Cache {
        Cache::new(self.cfg.num_layers, max_len, self.kv_type)
    }

    /// Longest sequence this model instance can process (RoPE table length).
    pub fn max_positions(&self) -> usize {
        self.rope.len()
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match &self.embed {
            Embedding::Float(w) => {
                let (b, s) = ids.dims2()?;
                w.index_select(&ids.flatten_all()?, 0)?.to_dtype(DType::F32)?.reshape((b, s, self.cfg.hidden_size))?
            }
            Embedding::Quant(q) => q.embedding(ids)?,
            Embedding::Packed(p) => {
                let (b, s) = ids.dims2()?;
                let h = p.k();
                let mut out = vec![0f32; b * s * h];
                for (row, &id) in out.chunks_exact_mut(h).zip(ids.flatten_all()?.to_vec1::<u32>()?.iter()) {
                    p.dequantize_row(id as usize, row);
                }
                Tensor::from_vec(out, (b, s, h), &Device::Cpu)?
            }
        })
    }

    /// Final hidden states (after the last norm), shape (batch, seq, hidden). With a cache the
    /// tokens continue the cached sequence (batch must be 1); without, they start at position 0.
    pub fn hidden(&self, ids: &Tensor, mut cache: Option<&mut Cache>) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let start = cache.as_ref().map(|c| c.len).unwrap_or(0);
        if let Some(c) = cache.as_ref() {
            if b != 1 {
                bail!("a cache holds one sequence; got a batch of {b}");
            }
            if start + s > c.max_len {
                bail!("context overflow: {} tokens exceed the context length of {}", start + s, c.max_len);
            }
        }
        if start + s > self.rope.len() {
            bail!("context overflow: {} tokens exceed the model's {} positions", start + s, self.rope.len());
        }
        if let Some(&bad) = ids.flatten_all()?.to_vec1::<u32>()?.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary ({} tokens)", self.cfg.vocab_size);
        }
        let mask = causal_mask(s, start, self.cfg.num_heads / self.cfg.num_kv_heads)?;
        let h = self.run_blocks(ids, start, None, cache.as_deref_mut(), mask.as_ref())?;
        if let Some(c) = cache {
            c.len += s;
        }
        Ok(h)
    }

    /// The decoder stack and final norm. `pos` (per-token positions) overrides `start` for RoPE.
    fn run_blocks(
        &self,
        ids: &Tensor,
        start: usize,
        pos: Option<&Tensor>,
        mut cache: Option<&mut Cache>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut x = self.embed(ids)?;
        for (l, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &block.attn_norm, self.cfg.rms_norm_eps, self.differentiable)?;
            let a = self.attention(l, &block.attn, &h, start, pos, cache.as_deref_mut(), mask)?;
            x = (x + a)?;
            let h = rms_norm(&x, &block.ffn_norm, self.cfg.rms_norm_eps, self.differentiable)?;
            let m = &block.mlp;
            let [g, u] = forward_many([&m.gate, &m.up], &h)?;
            let gu = if self.differentiable { ((&g * candle_nn::ops::sigmoid(&g)?)? * u)? } else { swiglu(&g, &u)? };
            let f = m.down.forward(&gu)?;
            x = (x + f)?;
        }
        rms_norm(&x, &self.norm, self.cfg.rms_norm_eps, self.differentiable)
    }

    /// Final hidden states (1, n, hidden) of several sequences packed into one row: `positions[i]`
    /// is token i's position in its own sequence and `segments[i]` names that sequence; a token
    /// attends only to earlier tokens of its own segment (block-diagonal causal mask), so the
    /// result equals running each sequence alone. Training uses this to fill a batch without padding.
    pub fn hidden_packed(&self, ids: &[u32], positions: &[u32], segments: &[u32]) -> Result<Tensor> {
        let s = ids.len();
        if s == 0 || positions.len() != s || segments.len() != s {
            bail!("packed forward: {} ids, {} positions, {} segments", s, positions.len(), segments.len());
        }
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= self.rope.len()) {
            bail!("context overflow: position {p} exceeds the model's {} positions", self.rope.len());
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary ({} tokens)", self.cfg.vocab_size);
        }
        let mask = packed_mask(segments, self.cfg.num_heads / self.cfg.num_kv_heads)?;
        let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let pos = Tensor::new(positions, &Device::Cpu)?;
        self.run_blocks(&ids, 0, Some(&pos), None, Some(&mask))
    }

    /// Logits (1, n, vocab) of a packed row; see `hidden_packed`.
    pub fn forward_packed(&self, ids: &[u32], positions: &[u32], segments: &[u32]) -> Result<Tensor> {
        self.lm_head.forward(&self.hidden_packed(ids, positions, segments)?)
    }

    /// Logits for every position, (batch, seq, vocab).
    pub fn forward(&self, ids: &Tensor, cache: Option<&mut Cache>) -> Result<Tensor> {
        let h = self.hidden(ids, cache)?;
        self.lm_head.forward(&h)
    }

    /// Feed `ids` to a sequence's cache and return the logits of the last position as a Vec.
    pub fn forward_last(&self, ids: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        if ids.is_empty() {
            bail!("no tokens to process");
        }
        if cache.len + ids.len() > cache.max_len {
            bail!("context overflow: {} tokens exceed the context length of {}", cache.len + ids.len(), cache.max_len);
        }
        // A decode step takes the slice path (llama/decode.rs) where the model allows it.
        if let [token] = ids {
            if let Some(logits) = self.decode_step(*token, cache)? {
                return Ok(logits);
            }
        }
        // Long prompts go through in chunks: the attention scores of one pass grow with the square
        // of its length (2,000 tokens at once: ~150 MB per layer for SmolLM2), chunks keep them in
        // cache; the weights are re-read per chunk, which costs little next to that.
        let (head, tail) = ids.split_at(ids.len() - ((ids.len() - 1) % PREFILL_CHUNK + 1));
        for chunk in head.chunks(PREFILL_CHUNK) {
            let t = Tensor::new(chunk, &Device::Cpu)?.unsqueeze(0)?;
            self.hidden(&t, Some(cache))?;
        }
        let t = Tensor::new(tail, &Device::Cpu)?.unsqueeze(0)?;
        let h = self.hidden(&t, Some(cache))?;
        let last = h.narrow(1, tail.len() - 1, 1)?;
        let logits = self.lm_head.forward(&last)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        a: &Attention,
        x: &Tensor,
        start: usize,
        pos: Option<&Tensor>,
        cache: Option<&mut Cache>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let [q, k, v] = forward_many([&a.q, &a.k, &a.v], x)?;
        let q = q.reshape((b, s, nh, hd))?.transpose(1, 2)?;
        let k = k.reshape((b, s, nkv, hd))?.transpose(1, 2)?;
        let v = v.reshape((b, s, nkv, hd))?.transpose(1, 2)?;
        a.o.forward(&self.attend(layer, q, k, v, start, pos, cache, mask)?)
    }

    /// Attention of one sequence given its projected q (b, nh, s, hd), k and v (b, nkv, s, hd):
    /// RoPE at `start`, cache append, scores; returns (b, s, nh * hd) before the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        layer: usize,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        start: usize,
        pos: Option<&Tensor>,
        cache: Option<&mut Cache>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, nh, s, hd) = q.dims4()?;
        let nkv = cfg.num_kv_heads;
        let (q, k) = if let Some(p) = pos {
            let il = cfg.rope_interleaved;
            (
                self.rope.apply_at(&q.contiguous()?, p, il, self.differentiable)?,
                self.rope.apply_at(&k.contiguous()?, p, il, self.differentiable)?,
            )
        } else if self.differentiable {
            (
                self.rope.apply_slow(&q.contiguous()?, start, cfg.rope_interleaved)?,
                self.rope.apply_slow(&k.contiguous()?, start, cfg.rope_interleaved)?,
            )
        } else {
            (self.rope.apply(&q, start, cfg.rope_interleaved)?, self.rope.apply(&k, start, cfg.rope_interleaved)?)
        };
        let (k, v) = match cache {
            Some(c) => {
                c.append(layer, &k, &v).context("kv cache")?;
                if s == 1 && b == 1 && !self.differentiable {
                    // Decode step: attend straight from the cache store.
                    return c.attend_decode(layer, &q, c.len + 1, nkv);
                }
                if b == 1 && !self.differentiable {
                    // Prompt chunk: flash-style attention over the cache store, no score matrix.
                    let qv = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                    let out = c.attend_prefill_row(layer, &qv, s, c.len, nh, nkv, hd, true)?;
                    return Ok(Tensor::from_vec(out, (1, s, nh * hd), &Device::Cpu)?);
                }
                c.read(layer, c.len + s, nkv, hd)?
            }
            None => (k, v.contiguous()?),
        };
        // Grouped-query attention without copying K/V: the `rep` query heads sharing one kv head are
        // stacked along the row axis, so one matmul per kv head serves them all.
        let rep = nh / nkv;
        let q = q.contiguous()?.reshape((b, nkv, rep * s, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.contiguous()?.t()?)? * scale)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let p = softmax(&scores, self.differentiable)?;
        let o = p.matmul(&v.contiguous()?)?;
        Ok(o.reshape((b, nh, s, hd))?.transpose(1, 2)?.reshape((b, s, nh * hd))?)
    }

    /// A cache of its own holding a copy of the first `n` positions of `cache` (a shared prompt
    /// prefix handed to a new sequence while the original stays cached).
    pub fn copy_cache_prefix(&self, cache: &Cache, n: usize) -> Result<Cache> {
        cache.copy_prefix(n, self.cfg.num_kv_heads, self.cfg.head_dim)
    }

    /// One decode step for several sequences at once: `tokens[i]` continues `caches[i]`.
    /// Returns each sequence's next-token logits. `forward_batch` with one token per sequence.
    pub fn forward_decode_batch(&self, tokens: &[u32], caches: &mut [&mut Cache]) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<&[u32]> = tokens.iter().map(std::slice::from_ref).collect();
        self.forward_batch(&seqs, caches)
    }

    /// One forward pass for several sequences at once: `seqs[i]` (one token or more: a decode
    /// step, a prompt or a chunk of one) continues `caches[i]`. The linear layers run on all rows
    /// together, so each weight is read once for the whole batch and a prompt joining a running
    /// batch costs the decoding sequences little; only attention, which needs each sequence's own
    /// cache, runs per sequence. Returns each sequence's logits at its last position; they equal
    /// `forward_last` on that sequence alone, bit for bit.
    pub fn forward_batch(&self, seqs: &[&[u32]], caches: &mut [&mut Cache]) -> Result<Vec<Vec<f32>>> {
        let b = seqs.len();
        if b == 0 || b != caches.len() {
            bail!("forward_batch: {} sequences for {} caches", b, caches.len());
        }
        for (s, c) in seqs.iter().zip(caches.iter()) {
            if s.is_empty() {
                bail!("forward_batch: a sequence has no tokens to process");
            }
            if c.len + s.len() > c.max_len.min(self.rope.len()) {
                bail!(
                    "context overflow: {} tokens exceed the context length of {}",
                    c.len + s.len(),
                    c.max_len.min(self.rope.len())
                );
            }
        }
        // One sequence decoding alone (a server with one client): the slice path, as forward_last.
        if let ([[token]], [cache]) = (seqs, &mut *caches) {
            if let Some(logits) = self.decode_step(*token, cache)? {
                return Ok(vec![logits]);
            }
        }
        let all: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        if let Some(&bad) = all.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary ({} tokens)", self.cfg.vocab_size);
        }
        let rows = all.len();
        // First row of each sequence.
        let firsts: Vec<usize> = seqs.iter().scan(0, |r, s| Some(std::mem::replace(r, *r + s.len()))).collect();
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let ids = Tensor::new(all.as_slice(), &Device::Cpu)?.unsqueeze(1)?;
        let mut x = self.embed(&ids)?; // (rows, 1, hidden)
        for (l, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &block.attn_norm, cfg.rms_norm_eps, self.differentiable)?;
            let a = &block.attn;
            let [q, k, v] = forward_many([&a.q, &a.k, &a.v], &h)?;
            let o = if self.differentiable {
                let mut outs = Vec::with_capacity(b);
                for (i, cache) in caches.iter_mut().enumerate() {
                    let (r, s) = (firsts[i], seqs[i].len());
                    let qi = q.narrow(0, r, s)?.reshape((1, s, nh, hd))?.transpose(1, 2)?;
                    let ki = k.narrow(0, r, s)?.reshape((1, s, nkv, hd))?.transpose(1, 2)?;
                    let vi = v.narrow(0, r, s)?.reshape((1, s, nkv, hd))?.transpose(1, 2)?;
                    let start = cache.len;
                    let mask = causal_mask(s, start, nh / nkv)?;
                    let oi = self.attend(l, qi, ki, vi, start, None, Some(&mut **cache), mask.as_ref())?;
                    outs.push(oi.reshape((s, 1, nh * hd))?);
                }
                Tensor::cat(&outs, 0)?
            } else {
                let out = self.attend_rows(l, seqs, &q, &k, &v, caches)?;
                Tensor::from_vec(out, (rows, 1, nh * hd), &Device::Cpu)?
            };
            x = (x + a.o.forward(&o)?)?;
            let h = rms_norm(&x, &block.ffn_norm, cfg.rms_norm_eps, self.differentiable)?;
            let m = &block.mlp;
            let [g, u] = forward_many([&m.gate, &m.up], &h)?;
            x = (x + m.down.forward(&swiglu(&g, &u)?)?)?;
        }
        for (c, s) in caches.iter_mut().zip(seqs) {
            c.len += s.len();
        }
        // Only each sequence's last position goes through the final norm and the LM head.
        let x = if rows == b {
            x
        } else {
            let last = Tensor::new(
                seqs.iter().zip(&firsts).map(|(s, &r)| (r + s.len() - 1) as u32).collect::<Vec<u32>>().as_slice(),
                &Device::Cpu,
            )?;
            x.index_select(&last, 0)?
        };
        let h = rms_norm(&x, &self.norm, cfg.rms_norm_eps, self.differentiable)?;
        let logits = self.lm_head.forward(&h)?.squeeze(1)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// Inference attention of a batch on plain slices: RoPE, cache append and attention per
    /// sequence; returns (rows, nh * hd). Per-sequence tensor ops (narrow, reshape, rope, ...) cost
    /// more than the attention itself for small models. Single-token sequences are the parallel
    /// items of one pool call and run their attention serially; a prompt chunk is split over the
    /// pool on its own, since one item would leave the other cores idle while it runs.
    #[allow(clippy::too_many_arguments)]
    fn attend_rows(
        &self,
        l: usize,
        seqs: &[&[u32]],
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        caches: &mut [&mut Cache],
    ) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let mut qv = q.flatten_all()?.to_vec1::<f32>()?;
        let mut kv = k.flatten_all()?.to_vec1::<f32>()?;
        let vv = v.flatten_all()?.to_vec1::<f32>()?;
        let (qs, ks) = (nh * hd, nkv * hd);
        let (rope, interleaved) = (&self.rope, cfg.rope_interleaved);
        // (cache, q rows, k rows, v rows, tokens) per sequence.
        type Seq<'c, 'x> = (&'c mut Cache, &'x mut [f32], &'x mut [f32], &'x [f32], usize);
        let mut parts: Vec<Seq> = Vec::with_capacity(seqs.len());
        let (mut qrest, mut krest, mut vrest) = (qv.as_mut_slice(), kv.as_mut_slice(), vv.as_slice());
        for (c, s) in caches.iter_mut().zip(seqs) {
            let n = s.len();
            let (qi, qr) = std::mem::take(&mut qrest).split_at_mut(n * qs);
            let (ki, kr) = std::mem::take(&mut krest).split_at_mut(n * ks);
            let (vi, vr) = vrest.split_at(n * ks);
            (qrest, krest, vrest) = (qr, kr, vr);
            parts.push((&mut **c, qi, ki, vi, n));
        }
        let run = |(c, qi, ki, vi, n): &mut Seq, parallel: bool| -> Result<Vec<f32>> {
            let (n, pos) = (*n, c.len);
            for j in 0..n {
                rope.rotate_row(&mut qi[j * qs..(j + 1) * qs], nh, hd, pos + j, interleaved)?;
                rope.rotate_row(&mut ki[j * ks..(j + 1) * ks], nkv, hd, pos + j, interleaved)?;
            }
            c.append_rows(l, ki, vi, n, nkv, hd)?;
            if n == 1 {
                return c.attend_decode_row(l, qi, pos + 1, nh, nkv, hd, parallel);
            }
            // The prefill routine takes queries head-major: (nh, n, hd).
            let mut qh = vec![0f32; n * qs];
            for j in 0..n {
                for h in 0..nh {
                    qh[(h * n + j) * hd..(h * n + j + 1) * hd].copy_from_slice(&qi[(j * nh + h) * hd..(j * nh + h + 1) * hd]);
                }
            }
            c.attend_prefill_row(l, &qh, n, pos, nh, nkv, hd, parallel)
        };
        // A prompt chunk splits over the pool on its own; single tokens are the items of one pool
        // call (the kernel pool, like the matmuls around it: handing the cores to rayon's threads
        // for this and back costs wake-ups every layer).
        type Slot<'s, 'c, 'x> = std::sync::Mutex<(&'s mut Seq<'c, 'x>, Option<Result<Vec<f32>>>)>;
        let slots: Vec<Slot> = parts.iter_mut().map(|p| std::sync::Mutex::new((p, None))).collect();
        let mut singles: Vec<&Slot> = Vec::with_capacity(slots.len());
        for slot in &slots {
            let mut guard = slot.lock().unwrap();
            let (p, out) = &mut *guard;
            if p.4 > 1 {
                *out = Some(run(p, true));
            } else {
                singles.push(slot);
            }
        }
        nanbeige_kernels::pool::for_each(singles.len(), |i| {
            let mut guard = singles[i].lock().unwrap();
            let (p, out) = &mut *guard;
            *out = Some(run(p, false));
        });
        let mut flat = Vec::with_capacity(seqs.iter().map(|s| s.len()).sum::<usize>() * qs);
        for slot in slots {
            flat.extend(slot.into_inner().unwrap().1.context("batched attention: a sequence was not run")??);
        }
        Ok(flat)
    }

    /// Every linear layer with its HF module name (`model.layers.0.self_attn.q_proj`, `lm_head`).
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut v = Vec::new();
        for (l, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("model.layers.{l}");
            v.push((format!("{p}.self_attn.q_proj"), &mut b.attn.q));
            v.push((format!("{p}.self_attn.k_proj"), &mut b.attn.k));
            v.push((format!("{p}.self_attn.v_proj"), &mut b.attn.v));
            v.push((format!("{p}.self_attn.o_proj"), &mut b.attn.o));
            v.push((format!("{p}.mlp.gate_proj"), &mut b.mlp.gate));
            v.push((format!("{p}.mlp.up_proj"), &mut b.mlp.up));
            v.push((format!("{p}.mlp.down_proj"), &mut b.mlp.down));
        }
        v.push(("lm_head".to_string(), &mut self.lm_head));
        v
    }

    /// Whether the LM head is the embedding matrix itself (tied embeddings).
    fn head_is_tied(&self) -> bool {
        match (&self.embed, self.lm_head.float_weight()) {
            (Embedding::Float(e), Some(h)) => e.id() == h.id(),
            _ => false,
        }
    }

    /// Make every weight a trainable `Var` (full fine-tuning) and return them under their HF tensor
    /// names. The model keeps reading the same storage, so an optimizer updating the Vars updates
    /// the model. A tied LM head shares the embedding's Var and is not listed twice.
    /// Turns on the differentiable path. Quantized weights are an error.
    pub fn trainable_vars(&mut self) -> Result<Vec<(String, Var)>> {
        self.differentiable = true;
        let tied = self.head_is_tied();
        let mut out = Vec::new();
        let embed = match &self.embed {
            Embedding::Float(t) => Var::from_tensor(t)?,
            _ => bail!("the embedding is quantized; training needs float weights (load the GGUF dequantized)"),
        };
        self.embed = Embedding::Float(embed.as_tensor().clone());
        out.push(("model.embed_tokens.weight".to_string(), embed.clone()));
        for b in self.blocks.iter_mut() {
            for norm in [&mut b.attn_norm, &mut b.ffn_norm] {
                let v = Var::from_tensor(norm)?;
                *norm = v.as_tensor().clone();
            }
        }
        for (l, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), Var::from_tensor(&b.attn_norm)?));
            out.push((format!("{p}.post_attention_layernorm.weight"), Var::from_tensor(&b.ffn_norm)?));
        }
        let norm = Var::from_tensor(&self.norm)?;
        self.norm = norm.as_tensor().clone();
        out.push(("model.norm.weight".to_string(), norm));
        for (name, lin) in self.linears_mut() {
            if name == "lm_head" && tied {
                lin.weight = LinearWeight::Float(embed.as_tensor().clone());
                continue;
            }
            let v = lin.make_var(&name)?;
            out.push((format!("{name}.weight"), v));
            if let Some(bias) = &lin.bias {
                let bv = Var::from_tensor(bias)?;
                lin.bias = Some(bv.as_tensor().clone());
                out.push((format!("{name}.bias"), bv));
            }
        }
        Ok(out)
    }

    /// Attach LoRA adapters of rank `rank` (scale alpha / rank) to the linear layers whose HF module
    /// name ends with one of `targets` (e.g. "q_proj", "down_proj"); A is small random (seeded), B
    /// zero, so the model starts unchanged. Returns the adapter Vars (`<module>.lora_A` / `.lora_B`).
    /// Base weights stay frozen. Turns on the differentiable path.
    pub fn add_lora(&mut self, rank: usize, alpha: f64, targets: &[&str], seed: u64) -> Result<Vec<(String, Var)>> {
        if rank == 0 {
            bail!("LoRA rank must be at least 1");
        }
        self.differentiable = true;
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::new();
        for (name, lin) in self.linears_mut() {
            if !targets.iter().any(|t| name.ends_with(t)) {
                continue;
            }
            let Some(w) = lin.float_weight() else {
                bail!("`{name}` is quantized; LoRA training needs float base weights (load the GGUF dequantized)")
            };
            let (n, k) = w.dims2()?;
            // Kaiming-uniform-like init as peft: U(-1/sqrt(k), 1/sqrt(k)), from a small xorshift so
            // the same seed gives the same adapter everywhere.
            let bound = 1.0 / (k as f64).sqrt();
            let a: Vec<f32> = (0..rank * k)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    ((rng >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * bound as f32
                })
                .collect();
            let a = Var::from_vec(a, (rank, k), &Device::Cpu)?;
            let b = Var::zeros((n, rank), DType::F32, &Device::Cpu)?;
            out.push((format!("{name}.lora_A"), a.clone()));
            out.push((format!("{name}.lora_B"), b.clone()));
            lin.lora = Some(Lora { a, b, scale: alpha / rank as f64 });
        }
        if out.is_empty() {
            bail!("no linear layer matches the LoRA targets {targets:?}");
        }
        Ok(out)
    }

    /// Fold every LoRA adapter into its base weight (W += scale * B A) and remove the adapters.
    pub fn merge_lora(&mut self) -> Result<()> {
        for (_, lin) in self.linears_mut() {
            lin.merge_lora()?;
        }
        Ok(())
    }

    /// Every weight as a float tensor under its HF name (a tied LM head is left out), for saving.
    /// LoRA adapters are folded in (the weights as the model uses them); the model is unchanged.
    pub fn float_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        match &self.embed {
            Embedding::Float(t) => out.push(("model.embed_tokens.weight".to_string(), t.detach())),
            _ => bail!("the embedding is quantized; only float models can be saved"),
        }
        for (l, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), b.attn_norm.detach()));
            out.push((format!("{p}.post_attention_layernorm.weight"), b.ffn_norm.detach()));
            let lins = [
                ("self_attn.q_proj", &b.attn.q),
                ("self_attn.k_proj", &b.attn.k),
                ("self_attn.v_proj", &b.attn.v),
                ("self_attn.o_proj", &b.attn.o),
                ("mlp.gate_proj", &b.mlp.gate),
                ("mlp.up_proj", &b.mlp.up),
                ("mlp.down_proj", &b.mlp.down),
            ];
            for (n, lin) in lins {
                let w = lin
                    .effective_weight()?
                    .with_context(|| format!("{p}.{n} is quantized; only float models can be saved"))?;
                out.push((format!("{p}.{n}.weight"), w));
                if let Some(bias) = &lin.bias {
                    out.push((format!("{p}.{n}.bias"), bias.detach()));
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.detach()));
        if !self.head_is_tied() {
            let w = self.lm_head.effective_weight()?.context("lm_head is quantized; only float models can be saved")?;
            out.push(("lm_head.weight".to_string(), w));
        }
        Ok(out)
    }

    /// Describe each weight's storage for `info`: (what, type) pairs of the first block and heads.
    pub fn weight_types(&self) -> Vec<(&'static str, String)> {
        let t = |l: &Linear| l.type_name();
        let mut v = vec![];
        if let Some(b) = self.blocks.first() {
            v.push(("attn_q", t(&b.attn.q)));
            v.push(("attn_k", t(&b.attn.k)));
            v.push(("attn_v", t(&b.attn.v)));
            v.push(("attn_output", t(&b.attn.o)));
            v.push(("ffn_gate", t(&b.mlp.gate)));
            v.push(("ffn_up", t(&b.mlp.up)));
            v.push(("ffn_down", t(&b.mlp.down)));
        }
        v.push(("lm_head", t(&self.lm_head)));
        v
    }
}

/// Additive block-diagonal causal mask for a packed row, in the GQA row-stacked layout: (rep * s, s).
fn packed_mask(segments: &[u32], rep: usize) -> Result<Tensor> {
    let s = segments.len();
    let mut m = vec![0f32; rep * s * s];
    for r in 0..rep * s {
        let i = r % s;
        for j in 0..s {
            if j > i || segments[j] != segments[i] {
                m[r * s + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(m, (rep * s, s), &Device::Cpu)?)
}

/// Additive causal mask for `s` new queries starting at absolute position `start`, laid out for
/// the GQA row stacking above: (rep * s, start + s). None for a single query (it sees everything).
fn causal_mask(s: usize, start: usize, rep: usize) -> Result<Option<Tensor>> {
    if s == 1 {
        return Ok(None);
    }
    let t = start + s;
    let mut m = vec![0f32; rep * s * t];
    for r in 0..rep * s {
        let i = r % s;
        for j in (start + i + 1)..t {
            m[r * t + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Some(Tensor::from_vec(m, (rep * s, t), &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused silu(g) * u equals candle's silu then multiply (to float rounding) on every code
    /// path, and the AVX-512 build gives the portable loop's bits.
    #[test]
    fn swiglu_matches_silu_times_up() {
        let n = 1000 + 7;
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 40.0 - 20.0
        };
        let mut g: Vec<f32> = (0..n).map(|_| next()).collect();
        let u: Vec<f32> = (0..n).map(|_| next()).collect();
        g[..6].copy_from_slice(&[0.0, -0.0, 88.0, -88.0, 1e-30, -200.0]);
        let (gt, ut) = (Tensor::new(g.as_slice(), &Device::Cpu).unwrap(), Tensor::new(u.as_slice(), &Device::Cpu).unwrap());
        let fused = swiglu(&gt, &ut).unwrap().to_vec1::<f32>().unwrap();
        let want = (gt.silu().unwrap() * &ut).unwrap().to_vec1::<f32>().unwrap();
        for i in 0..n {
            let tol = 2e-6 * want[i].abs().max(1e-6);
            assert!((fused[i] - want[i]).abs() <= tol, "at {i}: g {} u {}: {} vs {}", g[i], u[i], fused[i], want[i]);
        }
        let plain = swiglu_rows(&g, &u);
        assert!(plain.iter().zip(&fused).all(|(a, b)| a.to_bits() == b.to_bits()), "the AVX-512 build differs");
    }
}
