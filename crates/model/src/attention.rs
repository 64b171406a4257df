//! Single-query attention over a sequence's KV cache, for decode steps: one pass per head over the
//! cached keys and values, straight from the cache buffers, with no intermediate tensors.
//!
//! Decode attention is a few small dot products per cached position; done as candle ops it costs a
//! dozen tensor allocations per layer and sequence, which dominated batched decoding. Prefill and
//! training keep the tensor version in llama.rs (it is differentiable and masks many queries).

use anyhow::{bail, Result};
use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

/// Below this much work (positions x heads x head_dim) threads cost more than they save.
const PARALLEL_MIN_WORK: usize = 1 << 16;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Independent lanes let the compiler vectorize without reassociating a single sum.
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Attention of one query head over `t` cached positions of its kv head.
/// `k` and `v` are (t, hd) rows; writes the weighted sum of values into `out`.
fn head(q: &[f32], k: &[f32], v: &[f32], t: usize, hd: usize, scale: f32, out: &mut [f32]) {
    let mut scores: Vec<f32> = (0..t).map(|i| dot(q, &k[i * hd..(i + 1) * hd]) * scale).collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.iter_mut().for_each(|o| *o = 0.0);
    for (i, p) in scores.iter().enumerate() {
        let w = p / sum;
        for (o, x) in out.iter_mut().zip(&v[i * hd..(i + 1) * hd]) {
            *o += w * x;
        }
    }
}

/// Run `f` on the f32 data of a CPU tensor, from its first element on.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(d)) => Ok(f(&d[layout.start_offset()..])),
        _ => bail!("decode attention expects f32 tensors on the CPU"),
    }
}

/// q: (1, nh, 1, hd) roped query; `kbuf`/`vbuf`: the cache buffers (1, nkv, cap, hd) whose first
/// `t` positions are valid. Returns (1, 1, nh * hd).
pub fn decode(q: &Tensor, kbuf: &Tensor, vbuf: &Tensor, t: usize, nh: usize, nkv: usize) -> Result<Tensor> {
    let q = q.contiguous()?;
    let hd = q.dims()[3];
    let cap = kbuf.dims()[2];
    if !kbuf.is_contiguous() || !vbuf.is_contiguous() || t > cap {
        bail!("decode attention: unexpected cache layout");
    }
    let rep = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; nh * hd];
    with_f32(&q, |qd| {
        with_f32(kbuf, |kd| {
            with_f32(vbuf, |vd| {
                let run = |(h, o): (usize, &mut [f32])| {
                    let base = (h / rep) * cap * hd;
                    let (k, v) = (&kd[base..base + t * hd], &vd[base..base + t * hd]);
                    head(&qd[h * hd..(h + 1) * hd], k, v, t, hd, scale, o);
                };
                if t * nh * hd >= PARALLEL_MIN_WORK {
                    out.par_chunks_mut(hd).enumerate().for_each(run);
                } else {
                    out.chunks_mut(hd).enumerate().for_each(run);
                }
            })
        })
    })???;
    Ok(Tensor::from_vec(out, (1, 1, nh * hd), &Device::Cpu)?)
}
