//! Rotary position embeddings: inverse frequencies (plain, linear, llama3 and yarn scaling, computed
//! the way transformers' `modeling_rope_utils` does) and the cos/sin tables the attention uses.
//!
//! Tables are built once per model for every position up to the context length we allow, so decode
//! only slices them. The rotation itself is candle-nn's fused rope kernels.

use crate::config::{Config, RopeScaling};
use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};
use std::f64::consts::PI;

/// Inverse frequencies (one per rotated pair) and the attention factor yarn multiplies cos/sin by.
pub fn inv_freqs(cfg: &Config) -> (Vec<f64>, f64) {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta;
    let plain: Vec<f64> = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64)).collect();
    match &cfg.rope_scaling {
        None => (plain, 1.0),
        Some(RopeScaling::Linear { factor }) => (plain.iter().map(|f| f / factor).collect(), 1.0),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
            let low_wavelen = original_max_position_embeddings / low_freq_factor;
            let high_wavelen = original_max_position_embeddings / high_freq_factor;
            let freqs = plain
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (freqs, 1.0)
        }
        Some(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
            mscale,
            mscale_all_dim,
            truncate,
        }) => {
            let get_mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
            let attn = attention_factor.unwrap_or_else(|| match (mscale, mscale_all_dim) {
                (Some(m), Some(ma)) if *m != 0.0 && *ma != 0.0 => get_mscale(*factor, *m) / get_mscale(*factor, *ma),
                _ => get_mscale(*factor, 1.0),
            });
            let d = dim as f64;
            let correction_dim =
                |rot: f64| d * (original_max_position_embeddings / (rot * 2.0 * PI)).ln() / (2.0 * base.ln());
            let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let high = high.min(d - 1.0);
            let high = if low == high { high + 0.001 } else { high };
            let freqs = plain
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation = 1.0 - ramp;
                    (f / factor) * (1.0 - extrapolation) + f * extrapolation
                })
                .collect();
            (freqs, attn)
        }
    }
}

/// cos and sin tables, shape (positions, head_dim / 2), f32.
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTables {
    pub fn new(cfg: &Config, positions: usize, device: &Device) -> Result<Self> {
        let (freqs, attn) = inv_freqs(cfg);
        let half = freqs.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &freqs {
                // transformers computes the angle in f32 from an f32 inverse frequency; do the same so
                // long positions round identically.
                let angle = (f as f32) * (p as f32);
                cos.push(angle.cos() * attn as f32);
                sin.push(angle.sin() * attn as f32);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
        })
    }

    pub fn len(&self) -> usize {
        self.cos.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotate q or k, shape (batch, heads, seq, head_dim), for positions start..start+seq.
    pub fn apply(&self, x: &Tensor, start: usize, interleaved: bool) -> Result<Tensor> {
        let seq = x.dims()[2];
        let cos = self.cos.narrow(0, start, seq)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, start, seq)?.to_dtype(x.dtype())?;
        let x = x.contiguous()?;
        if interleaved {
            candle_nn::rotary_emb::rope_i(&x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(&x, &cos, &sin)
        }
    }

    /// Rotate, in place, one token's `heads` vectors of `hd` values (heads after each other) for
    /// position `pos`: the batched decode path works on plain slices, not tensors.
    pub fn rotate_row(&self, x: &mut [f32], heads: usize, hd: usize, pos: usize, interleaved: bool) -> Result<()> {
        let half = hd / 2;
        if pos >= self.len() || x.len() < heads * hd || self.cos.dims()[1] != half {
            candle_core::bail!("rope: position {pos} or shape out of range");
        }
        let (cs, cl) = self.cos.storage_and_layout();
        let (ss, sl) = self.sin.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(c)), Storage::Cpu(CpuStorage::F32(s))) = (&*cs, &*ss) else {
            candle_core::bail!("rope: tables must be f32 on the CPU");
        };
        let cos = &c[cl.start_offset() + pos * half..cl.start_offset() + (pos + 1) * half];
        let sin = &s[sl.start_offset() + pos * half..sl.start_offset() + (pos + 1) * half];
        for h in x.chunks_exact_mut(hd).take(heads) {
            for i in 0..half {
                let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (x1, x2) = (h[a], h[b]);
                h[a] = x1 * cos[i] - x2 * sin[i];
                h[b] = x2 * cos[i] + x1 * sin[i];
            }
        }
        Ok(())
    }

    /// Rotate q or k (batch, heads, seq, head_dim) at explicit per-token positions (u32, seq), for
    /// packed sequences whose positions restart; `slow` picks the differentiable ops.
    pub fn apply_at(&self, x: &Tensor, positions: &Tensor, interleaved: bool, slow: bool) -> Result<Tensor> {
        let cos = self.cos.index_select(positions, 0)?.to_dtype(x.dtype())?;
        let sin = self.sin.index_select(positions, 0)?.to_dtype(x.dtype())?;
        match (interleaved, slow) {
            (true, true) => candle_nn::rotary_emb::rope_i_slow(x, &cos, &sin),
            (false, true) => candle_nn::rotary_emb::rope_slow(x, &cos, &sin),
            (true, false) => candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin),
            (false, false) => candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin),
        }
    }

    /// Differentiable rotation with plain tensor ops, for training (the fused kernels have no backward).
    pub fn apply_slow(&self, x: &Tensor, start: usize, interleaved: bool) -> Result<Tensor> {
        let seq = x.dims()[2];
        let cos = self.cos.narrow(0, start, seq)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, start, seq)?.to_dtype(x.dtype())?;
        if interleaved {
            candle_nn::rotary_emb::rope_i_slow(x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope_slow(x, &cos, &sin)
        }
    }
}

pub fn dtype_ok(dt: DType) -> bool {
    matches!(dt, DType::F32 | DType::BF16 | DType::F16)
}
