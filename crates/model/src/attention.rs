//! Single-query attention over a sequence's KV cache, for decode steps, straight from the cache
//! store (f32 or int8 rows) with no intermediate tensors. The query heads that share a kv head are
//! served together so each cached row is read once per step; long contexts are split into chunks
//! with their own softmax, merged at the end, so both cores work at any depth.
//!
//! Decode attention is a few small dot products per cached position; done as candle ops it costs a
//! dozen tensor allocations per layer and sequence, which dominated batched decoding. Prefill and
//! training keep the tensor version in llama.rs (it is differentiable and masks many queries).

use anyhow::{bail, Result};
use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// Below this much work (positions x heads x head_dim) threads cost more than they save.
const PARALLEL_MIN_WORK: usize = 1 << 16;
/// Positions per work item: big enough to amortise a softmax merge, small enough to split 8K
/// tokens across both cores.
const CHUNK: usize = 512;

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

fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i] as f32;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * *y as f32;
    }
    s
}

/// Run `f` on the f32 data of a CPU tensor, from its first element on.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(d)) => Ok(f(&d[layout.start_offset()..])),
        _ => bail!("decode attention expects f32 tensors on the CPU"),
    }
}

/// Cached keys or values of one layer, row (kv head `g`, position `i`) at a time.
pub(crate) trait Rows: Sync {
    fn dot(&self, g: usize, i: usize, q: &[f32]) -> f32;
    /// out += w * row
    fn add_scaled(&self, g: usize, i: usize, w: f32, out: &mut [f32]);
}

/// f32 rows laid out (kv head, capacity, head_dim), as the f32 cache tensors are.
pub(crate) struct F32Rows<'a> {
    pub data: &'a [f32],
    pub cap: usize,
    pub hd: usize,
}

impl Rows for F32Rows<'_> {
    fn dot(&self, g: usize, i: usize, q: &[f32]) -> f32 {
        let o = (g * self.cap + i) * self.hd;
        dot(q, &self.data[o..o + self.hd])
    }
    fn add_scaled(&self, g: usize, i: usize, w: f32, out: &mut [f32]) {
        let o = (g * self.cap + i) * self.hd;
        for (x, y) in out.iter_mut().zip(&self.data[o..o + self.hd]) {
            *x += w * y;
        }
    }
}

/// int8 rows with one scale each, position-major: row `i * nkv + g`.
pub(crate) struct Q8Rows<'a> {
    pub data: &'a [i8],
    pub scale: &'a [f32],
    pub nkv: usize,
    pub hd: usize,
}

impl Rows for Q8Rows<'_> {
    fn dot(&self, g: usize, i: usize, q: &[f32]) -> f32 {
        let r = i * self.nkv + g;
        dot_i8(q, &self.data[r * self.hd..(r + 1) * self.hd]) * self.scale[r]
    }
    fn add_scaled(&self, g: usize, i: usize, w: f32, out: &mut [f32]) {
        let r = i * self.nkv + g;
        let w = w * self.scale[r];
        for (x, y) in out.iter_mut().zip(&self.data[r * self.hd..(r + 1) * self.hd]) {
            *x += w * *y as f32;
        }
    }
}

/// Softmax state of one query head over a range of positions: running max, sum of exponentials
/// and the unnormalised weighted sum of values.
struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
    acc: Vec<f32>,
}

/// The `rep` query heads `q` (rep * hd) that share kv head `g`, over positions `range`: each key
/// and value row is read once for all of them.
#[allow(clippy::too_many_arguments)]
fn chunk<R: Rows>(
    q: &[f32],
    k: &R,
    v: &R,
    g: usize,
    range: Range<usize>,
    rep: usize,
    hd: usize,
    scale: f32,
) -> Partial {
    let n = range.len();
    let mut scores = vec![0f32; rep * n];
    for (j, i) in range.clone().enumerate() {
        for r in 0..rep {
            scores[r * n + j] = k.dot(g, i, &q[r * hd..(r + 1) * hd]) * scale;
        }
    }
    let mut p = Partial { max: vec![f32::NEG_INFINITY; rep], sum: vec![0.0; rep], acc: vec![0.0; rep * hd] };
    for r in 0..rep {
        let s = &mut scores[r * n..(r + 1) * n];
        let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - m).exp();
            sum += *x;
        }
        p.max[r] = m;
        p.sum[r] = sum;
    }
    for (j, i) in range.enumerate() {
        for r in 0..rep {
            v.add_scaled(g, i, scores[r * n + j], &mut p.acc[r * hd..(r + 1) * hd]);
        }
    }
    p
}

/// Attention of one query token (`q`: nh * hd, roped) over the first `t` cached positions.
/// Work is split by kv head and by chunks of positions (each chunk its own softmax, merged after),
/// so both cores stay busy at any depth and each cached row is read once per step.
/// Returns nh * hd values.
pub(crate) fn decode<R: Rows>(q: &[f32], k: &R, v: &R, t: usize, nh: usize, nkv: usize, hd: usize) -> Vec<f32> {
    let rep = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let chunks = t.div_ceil(CHUNK).max(1);
    let items: Vec<(usize, usize)> = (0..nkv).flat_map(|g| (0..chunks).map(move |c| (g, c))).collect();
    let work = |&(g, c): &(usize, usize)| {
        let range = c * CHUNK..((c + 1) * CHUNK).min(t);
        chunk(&q[g * rep * hd..(g + 1) * rep * hd], k, v, g, range, rep, hd, scale)
    };
    let parts: Vec<Partial> = if t * nh * hd >= PARALLEL_MIN_WORK {
        items.par_iter().map(work).collect()
    } else {
        items.iter().map(work).collect()
    };
    let mut out = vec![0f32; nh * hd];
    for g in 0..nkv {
        let parts = &parts[g * chunks..(g + 1) * chunks];
        for r in 0..rep {
            let m = parts.iter().map(|p| p.max[r]).fold(f32::NEG_INFINITY, f32::max);
            let o = &mut out[(g * rep + r) * hd..(g * rep + r + 1) * hd];
            let mut sum = 0f32;
            for p in parts {
                let w = (p.max[r] - m).exp();
                sum += w * p.sum[r];
                for (x, a) in o.iter_mut().zip(&p.acc[r * hd..(r + 1) * hd]) {
                    *x += w * a;
                }
            }
            o.iter_mut().for_each(|x| *x /= sum);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Plain softmax attention, one query head at a time, on f32 rows (nkv, t, hd).
    fn naive(q: &[f32], k: &[f32], v: &[f32], t: usize, nh: usize, nkv: usize, hd: usize) -> Vec<f32> {
        let rep = nh / nkv;
        let mut out = vec![0f32; nh * hd];
        for h in 0..nh {
            let g = h / rep;
            let qh = &q[h * hd..(h + 1) * hd];
            let s: Vec<f64> = (0..t)
                .map(|i| {
                    let kr = &k[(g * t + i) * hd..(g * t + i + 1) * hd];
                    qh.iter().zip(kr).map(|(a, b)| (a * b) as f64).sum::<f64>() / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for j in 0..hd {
                let acc: f64 = (0..t).map(|i| e[i] * v[(g * t + i) * hd + j] as f64).sum();
                out[h * hd + j] = (acc / z) as f32;
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn chunked_grouped_decode_matches_plain_softmax() {
        // Odd sizes, several chunks (t > 2 * CHUNK), grouped heads, both the serial and parallel paths.
        let mut seed = 7;
        for &(t, nh, nkv, hd) in &[(5usize, 3usize, 1usize, 7usize), (1300, 6, 2, 20), (2 * CHUNK, 4, 4, 33)] {
            let (q, k, v) = (rand(nh * hd, &mut seed), rand(nkv * t * hd, &mut seed), rand(nkv * t * hd, &mut seed));
            let want = naive(&q, &k, &v, t, nh, nkv, hd);
            let got = decode(&q, &F32Rows { data: &k, cap: t, hd }, &F32Rows { data: &v, cap: t, hd }, t, nh, nkv, hd);
            assert!(max_diff(&got, &want) < 1e-5, "t={t}: {}", max_diff(&got, &want));
        }
    }

    #[test]
    fn int8_rows_decode_matches_their_dequantized_values() {
        let (t, nh, nkv, hd) = (700usize, 4usize, 2usize, 24usize);
        let mut seed = 11;
        let q = rand(nh * hd, &mut seed);
        let mut rows = |seed: &mut u64| {
            let data: Vec<i8> = rand(t * nkv * hd, seed).iter().map(|x| (x * 60.0) as i8).collect();
            let scale = rand(t * nkv, seed).iter().map(|x| x.abs() / 50.0 + 0.001).collect::<Vec<f32>>();
            // The same values as f32 rows in (kv head, position, hd) layout.
            let mut f = vec![0f32; nkv * t * hd];
            for i in 0..t {
                for g in 0..nkv {
                    for j in 0..hd {
                        f[(g * t + i) * hd + j] = data[(i * nkv + g) * hd + j] as f32 * scale[i * nkv + g];
                    }
                }
            }
            (data, scale, f)
        };
        let (kd, ks, kf) = rows(&mut seed);
        let (vd, vs, vf) = rows(&mut seed);
        let want = naive(&q, &kf, &vf, t, nh, nkv, hd);
        let k = Q8Rows { data: &kd, scale: &ks, nkv, hd };
        let v = Q8Rows { data: &vd, scale: &vs, nkv, hd };
        let got = decode(&q, &k, &v, t, nh, nkv, hd);
        assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
    }
}
