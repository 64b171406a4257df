//! One decode step of one sequence on plain f32 slices: `Llama::forward_last` with a single token,
//! without tensors. On the tensor path each layer makes ~25 candle ops (an allocation, a dispatch,
//! often a copy each) on the calling core while the other cores wait for the next matmul; the
//! calling core spent 0.8 ms of a 3.4 ms SmolLM2-135M step outside kernel calls. Here the same
//! operations run in the same order on buffers reused across layers, so the logits are
//! bit-identical to the tensor path (tests/synth.rs, `slice_decode_equals_tensor_path`).
//! Not here: prompts and batches (`forward_batch`), training, LoRA adapters, and weights the
//! kernels do not cover: for those `decode_step` returns None and the caller takes the tensor path.

use super::{one_kernel_call, swiglu_slices, with_half_weights, Linear, LinearWeight, Llama};
use crate::attention::with_f32;
use crate::kv_cache::Cache;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

impl Llama {
    /// Logits after feeding `token` to `cache`, or None when this model needs the tensor path.
    pub(super) fn decode_step(&self, token: u32, cache: &mut Cache) -> Result<Option<Vec<f32>>> {
        if !self.slices_ok() {
            return Ok(None);
        }
        let cfg = &self.cfg;
        let pos = cache.len;
        if pos + 1 > cache.max_len || pos + 1 > self.rope.len() {
            bail!(
                "context overflow: {} tokens exceed the context length of {}",
                pos + 1,
                cache.max_len.min(self.rope.len())
            );
        }
        if token as usize >= cfg.vocab_size {
            bail!("token id {token} is outside the vocabulary ({} tokens)", cfg.vocab_size);
        }
        let (nh, nkv, hd, eps) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps as f32);
        let mut x = self.embed(&Tensor::new(&[[token]], &Device::Cpu)?)?.flatten_all()?.to_vec1::<f32>()?;
        // Outputs are sized by `linears_into` on first use and reused by every layer.
        let mut xn = vec![0f32; x.len()];
        let (mut q, mut k, mut v, mut o, mut g, mut u) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (l, block) in self.blocks.iter().enumerate() {
            rms_norm_into(&x, &block.attn_norm, eps, &mut xn)?;
            let a = &block.attn;
            linears_into([&a.q, &a.k, &a.v], &xn, [&mut q, &mut k, &mut v])?;
            self.rope.rotate_row(&mut q, nh, hd, pos, cfg.rope_interleaved)?;
            self.rope.rotate_row(&mut k, nkv, hd, pos, cfg.rope_interleaved)?;
            cache.append_rows(l, &k, &v, 1, nkv, hd)?;
            let att = cache.attend_decode_row(l, &q, pos + 1, nh, nkv, hd, true)?;
            linears_into([&a.o], &att, [&mut o])?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            rms_norm_into(&x, &block.ffn_norm, eps, &mut xn)?;
            let m = &block.mlp;
            linears_into([&m.gate, &m.up], &xn, [&mut g, &mut u])?;
            linears_into([&m.down], &swiglu_slices(&g, &u), [&mut o])?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
        }
        cache.len += 1;
        rms_norm_into(&x, &self.norm, eps, &mut xn)?;
        let mut logits = vec![];
        linears_into([&self.lm_head], &xn, [&mut logits])?;
        Ok(Some(logits))
    }

    /// Whether every linear runs on the kernels without an adapter and the norms are f32, which
    /// is what the slice path covers.
    fn slices_ok(&self) -> bool {
        let f32_vec = |t: &Tensor| t.dtype() == DType::F32 && t.rank() == 1 && t.is_contiguous();
        !self.differentiable
            && self.lm_head.on_kernels()
            && f32_vec(&self.norm)
            && self.blocks.iter().all(|b| {
                let (a, m) = (&b.attn, &b.mlp);
                [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down].iter().all(|l| l.on_kernels())
                    && f32_vec(&b.attn_norm)
                    && f32_vec(&b.ffn_norm)
            })
    }
}

impl Linear {
    /// Packed or half-precision weights, no adapter, an f32 bias if any.
    fn on_kernels(&self) -> bool {
        let weight = match &self.weight {
            LinearWeight::Packed(..) => true,
            LinearWeight::Float(w) => matches!(w.dtype(), DType::BF16 | DType::F16) && !w.track_op(),
            LinearWeight::Quant(_) => false,
        };
        weight
            && self.lora.is_none()
            && self.bias.as_ref().is_none_or(|b| b.dtype() == DType::F32 && b.rank() == 1 && b.is_contiguous())
    }

    /// Output features of a linear the slice path covers (`on_kernels`; 0 for the others).
    fn rows(&self) -> usize {
        match &self.weight {
            LinearWeight::Packed(p, _) => p.n(),
            LinearWeight::Float(w) => w.dims().first().copied().unwrap_or(0),
            LinearWeight::Quant(_) => 0,
        }
    }
}

/// candle-nn's RMSNorm row (`rms_norm` on the tensor path), the same operations in the same
/// order: a sequential f32 sum of squares, then x / rms * w.
fn rms_norm_into(x: &[f32], w: &Tensor, eps: f32, out: &mut [f32]) -> Result<()> {
    with_f32(w, |w| {
        let sum2 = x.iter().map(|&v| v * v).sum::<f32>();
        let m = (sum2 / x.len() as f32 + eps).sqrt();
        for ((o, &s), &a) in out.iter_mut().zip(x).zip(&w[..x.len()]) {
            *o = s / m * a;
        }
    })
}

/// ys[i] = x W_i^T (+ b_i) for one row, each y resized to its linear's outputs. Packed matrices
/// of one format and row length share one kernel call (same numbers as separate calls, as
/// `forward_many` does); the rest run one by one.
fn linears_into<const N: usize>(ls: [&Linear; N], x: &[f32], mut ys: [&mut Vec<f32>; N]) -> Result<()> {
    for (l, y) in ls.iter().zip(ys.iter_mut()) {
        y.resize(l.rows(), 0.0);
    }
    match one_kernel_call(&ls) {
        Some(ps) => {
            let mut views: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
            nanbeige_kernels::matmul_many(&ps, x, 1, &mut views);
        }
        _ => {
            for (l, y) in ls.iter().zip(ys.iter_mut()) {
                match &l.weight {
                    LinearWeight::Packed(p, _) => nanbeige_kernels::matmul(p, x, 1, y),
                    LinearWeight::Float(w) => {
                        with_half_weights(w, |ws, n, k| nanbeige_kernels::matmul_float(ws, n, k, x, 1, &mut y[..n]))?
                    }
                    LinearWeight::Quant(_) => bail!("linear: quantized type not on the kernels"),
                }
            }
        }
    }
    for (l, y) in ls.iter().zip(ys.iter_mut()) {
        if let Some(b) = &l.bias {
            with_f32(b, |b| y.iter_mut().zip(b).for_each(|(y, b)| *y += b))?;
        }
    }
    Ok(())
}
