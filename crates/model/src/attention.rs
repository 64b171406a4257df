//! Inference attention over a sequence's KV cache, straight from the cache store (f32 or int8
//! rows) with no intermediate tensors: prefill (flash-attention style, key chunks with a running
//! softmax) and decode, which is prefill with one query row so both give the same bits. The query
//! heads that share a kv head are served together so each cached row is read once per step.
//! Score and value products have AVX-512 and AVX2 kernels (chosen by the kernel path, as the
//! matmuls are) and a scalar one, each summing in a fixed order per row.
//!
//! Done as candle ops, decode attention cost a dozen tensor allocations per layer and sequence,
//! which dominated batched decoding. Training keeps the differentiable tensor version in llama.rs.

use anyhow::{bail, Result};
use candle_core::{CpuStorage, Storage, Tensor};
use std::sync::Mutex;
use std::ops::Range;
use nanbeige_kernels::Isa;

/// Below this much work (positions x heads x head_dim) threads cost more than they save.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// Run `f` on the f32 data of a CPU tensor, from its first element on.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(d)) => Ok(f(&d[layout.start_offset()..])),
        _ => bail!("decode attention expects f32 tensors on the CPU"),
    }
}

/// Cached keys or values of one layer.
pub(crate) trait Rows: Sync {
    /// Rows `range` of kv head `g` as one row-major (len, hd) f32 block: borrowed in place, or
    /// dequantized into `buf`.
    fn block<'b>(&'b self, g: usize, range: Range<usize>, buf: &'b mut Vec<f32>) -> &'b [f32];
}

/// f32 rows laid out (kv head, capacity, head_dim), as the f32 cache tensors are.
pub(crate) struct F32Rows<'a> {
    pub data: &'a [f32],
    pub cap: usize,
    pub hd: usize,
}

impl Rows for F32Rows<'_> {
    fn block<'b>(&'b self, g: usize, range: Range<usize>, _buf: &'b mut Vec<f32>) -> &'b [f32] {
        &self.data[(g * self.cap + range.start) * self.hd..(g * self.cap + range.end) * self.hd]
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
    #[inline(always)]
    fn block<'b>(&'b self, g: usize, range: Range<usize>, buf: &'b mut Vec<f32>) -> &'b [f32] {
        let hd = self.hd;
        buf.clear();
        buf.resize(range.len() * hd, 0.0);
        for (dst, i) in buf.chunks_exact_mut(hd).zip(range) {
            let r = i * self.nkv + g;
            let s = self.scale[r];
            for (o, q) in dst.iter_mut().zip(&self.data[r * hd..(r + 1) * hd]) {
                *o = *q as f32 * s;
            }
        }
        buf
    }
}

/// a . b in a fixed order (8 running lanes, then a fixed tree), so a score never depends on how
/// many query rows share the call: decode (one row) and prefill must give the same numbers. (A
/// general GEMM picks its kernel, and with it the summation order, by the matrix shape.)
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

/// scores[r * n + j] = scale * q_r . k_j
#[allow(clippy::too_many_arguments)]
fn qk(isa: Isa, rep: usize, n: usize, hd: usize, scores: &mut [f32], q: &[f32], kb: &[f32], scale: f32) {
    assert!(q.len() >= rep * hd && kb.len() >= n * hd && scores.len() >= rep * n);
    #[cfg(target_arch = "x86_64")]
    match isa {
        // Safety (both): the path is supported here; the slices hold the asserted sizes.
        Isa::Avx512 if hd == 64 => return unsafe { qk_avx512::<4>(rep, n, scores, q, kb, scale) },
        Isa::Avx512 if hd == 128 => return unsafe { qk_avx512::<8>(rep, n, scores, q, kb, scale) },
        Isa::Avx2 | Isa::Avx512 if hd.is_multiple_of(32) => return unsafe { qk_avx2(rep, n, hd, scores, q, kb, scale) },
        _ => {}
    }
    let _ = isa;
    for (r, row) in scores[..rep * n].chunks_exact_mut(n).enumerate() {
        let qr = &q[r * hd..(r + 1) * hd];
        for (j, sc) in row.iter_mut().enumerate() {
            *sc = scale * dot(qr, &kb[j * hd..(j + 1) * hd]);
        }
    }
}

/// acc[r * hd + d] += sum_j p[r * n + j] * v_j[d]
fn pv(isa: Isa, rep: usize, hd: usize, n: usize, acc: &mut [f32], p: &[f32], vb: &[f32]) {
    assert!(acc.len() >= rep * hd && p.len() >= rep * n && vb.len() >= n * hd);
    // Safety (both): the path is supported here; each call's rows r0..r0+rg and columns
    // d0..d0+width are in bounds.
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && hd.is_multiple_of(64) {
        return pv_tiles(rep, hd, 64, |r0, rg, d0| unsafe {
            match rg {
                1 => pv_avx512::<1>(r0, d0, hd, n, acc, p, vb),
                2 => pv_avx512::<2>(r0, d0, hd, n, acc, p, vb),
                3 => pv_avx512::<3>(r0, d0, hd, n, acc, p, vb),
                _ => pv_avx512::<4>(r0, d0, hd, n, acc, p, vb),
            }
        });
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 && hd.is_multiple_of(16) {
        return pv_tiles(rep, hd, 16, |r0, rg, d0| unsafe {
            match rg {
                1 => pv_avx2::<1>(r0, d0, hd, n, acc, p, vb),
                2 => pv_avx2::<2>(r0, d0, hd, n, acc, p, vb),
                3 => pv_avx2::<3>(r0, d0, hd, n, acc, p, vb),
                _ => pv_avx2::<4>(r0, d0, hd, n, acc, p, vb),
            }
        });
    }
    // Row by row, keys in order: the same sums whatever `rep` is (see `dot`).
    for r in 0..rep {
        let (ar, pr) = (&mut acc[r * hd..(r + 1) * hd], &p[r * n..(r + 1) * n]);
        for (j, &pj) in pr.iter().enumerate() {
            ar.iter_mut().zip(&vb[j * hd..(j + 1) * hd]).for_each(|(a, v)| *a += pj * v);
        }
    }
}

/// `qk` for head sizes that are a multiple of 32, 8 wide: each row's dot product runs in 4
/// accumulators over the row, then a fixed tree, whatever the number of rows. Two query rows share
/// each load of the key row (16 ymm registers do not hold a whole 128-wide key as AVX-512 does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn qk_avx2(rep: usize, n: usize, hd: usize, scores: &mut [f32], q: &[f32], kb: &[f32], scale: f32) {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn total(a: [__m256; 4]) -> f32 {
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)))
    }
    for j in 0..n {
        let kp = kb.as_ptr().add(j * hd);
        let mut r = 0;
        while r < rep {
            let two = r + 1 < rep;
            let (q0, q1) = (q.as_ptr().add(r * hd), q.as_ptr().add((r + two as usize) * hd));
            let (mut a, mut b) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
            for c in (0..hd).step_by(32) {
                for x in 0..4 {
                    let k = _mm256_loadu_ps(kp.add(c + 8 * x));
                    a[x] = _mm256_fmadd_ps(_mm256_loadu_ps(q0.add(c + 8 * x)), k, a[x]);
                    b[x] = _mm256_fmadd_ps(_mm256_loadu_ps(q1.add(c + 8 * x)), k, b[x]);
                }
            }
            *scores.get_unchecked_mut(r * n + j) = total(a) * scale;
            if two {
                *scores.get_unchecked_mut((r + 1) * n + j) = total(b) * scale;
            }
            r += 2;
        }
    }
}

/// Rows r0..r0+RG, columns d0..d0+16 of acc: 2 x RG accumulators stay in registers over all n
/// value rows (each element's sum in key order, as in the other paths).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pv_avx2<const RG: usize>(
    r0: usize,
    d0: usize,
    hd: usize,
    n: usize,
    acc: &mut [f32],
    p: &[f32],
    vb: &[f32],
) {
    use std::arch::x86_64::*;
    let mut a = [[_mm256_setzero_ps(); 2]; RG];
    for j in 0..n {
        let vp = vb.as_ptr().add(j * hd + d0);
        let v = [_mm256_loadu_ps(vp), _mm256_loadu_ps(vp.add(8))];
        for (r, ar) in a.iter_mut().enumerate() {
            let w = _mm256_set1_ps(*p.get_unchecked((r0 + r) * n + j));
            ar[0] = _mm256_fmadd_ps(w, v[0], ar[0]);
            ar[1] = _mm256_fmadd_ps(w, v[1], ar[1]);
        }
    }
    for (r, ar) in a.iter().enumerate() {
        let op = acc.as_mut_ptr().add((r0 + r) * hd + d0);
        for (x, ax) in ar.iter().enumerate() {
            _mm256_storeu_ps(op.add(8 * x), _mm256_add_ps(_mm256_loadu_ps(op.add(8 * x)), *ax));
        }
    }
}

/// `tile(r0, rg, d0)` over groups of up to 4 query rows and blocks of `width` value columns.
#[cfg(target_arch = "x86_64")]
fn pv_tiles(rep: usize, hd: usize, width: usize, mut tile: impl FnMut(usize, usize, usize)) {
    let mut r0 = 0;
    while r0 < rep {
        let rg = (rep - r0).min(4);
        for d0 in (0..hd).step_by(width) {
            tile(r0, rg, d0);
        }
        r0 += rg;
    }
}

/// Each key row (C vectors of 16) stays in registers while every query head of the group takes
/// its dot product with it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn qk_avx512<const C: usize>(rep: usize, n: usize, scores: &mut [f32], q: &[f32], kb: &[f32], scale: f32) {
    use std::arch::x86_64::*;
    let hd = 16 * C;
    for j in 0..n {
        let kp = kb.as_ptr().add(j * hd);
        let mut k = [_mm512_setzero_ps(); C];
        for (x, kx) in k.iter_mut().enumerate() {
            *kx = _mm512_loadu_ps(kp.add(16 * x));
        }
        for r in 0..rep {
            let qp = q.as_ptr().add(r * hd);
            let mut a = _mm512_mul_ps(_mm512_loadu_ps(qp), k[0]);
            for (x, kx) in k.iter().enumerate().skip(1) {
                a = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(16 * x)), *kx, a);
            }
            *scores.get_unchecked_mut(r * n + j) = _mm512_reduce_add_ps(a) * scale;
        }
    }
}

/// Rows r0..r0+RG, columns d0..d0+64 of acc: 4 x RG accumulators stay in registers over all n
/// value rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pv_avx512<const RG: usize>(
    r0: usize,
    d0: usize,
    hd: usize,
    n: usize,
    acc: &mut [f32],
    p: &[f32],
    vb: &[f32],
) {
    use std::arch::x86_64::*;
    let mut a = [[_mm512_setzero_ps(); 4]; RG];
    for j in 0..n {
        let vp = vb.as_ptr().add(j * hd + d0);
        let v = [
            _mm512_loadu_ps(vp),
            _mm512_loadu_ps(vp.add(16)),
            _mm512_loadu_ps(vp.add(32)),
            _mm512_loadu_ps(vp.add(48)),
        ];
        for (r, ar) in a.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*p.get_unchecked((r0 + r) * n + j));
            for x in 0..4 {
                ar[x] = _mm512_fmadd_ps(w, v[x], ar[x]);
            }
        }
    }
    for (r, ar) in a.iter().enumerate() {
        let op = acc.as_mut_ptr().add((r0 + r) * hd + d0);
        for (x, ax) in ar.iter().enumerate() {
            _mm512_storeu_ps(op.add(16 * x), _mm512_add_ps(_mm512_loadu_ps(op.add(16 * x)), *ax));
        }
    }
}

/// max(init, max of x), 16 independent lanes so it vectorizes (a plain fold is a serial chain).
#[inline(always)]
fn max_of(x: &[f32], init: f32) -> f32 {
    let mut lanes = [init; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    rest.iter().chain(lanes.iter()).copied().fold(init, f32::max)
}

/// x <- e^(x - m) in place; returns the sum. Two loops: a running float sum in the same loop
/// would keep the exponentials from vectorizing.
#[inline(always)]
fn exp_shifted_sum(x: &mut [f32], m: f32) -> f32 {
    for v in x.iter_mut() {
        *v = exp_nonpositive(*v - m);
    }
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lanes[i] += c[i];
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// e^x for x <= 0 (scores minus their maximum) in plain arithmetic that vectorizes: x = n ln2 + r,
/// e^r by its Taylor series to r^7 (|r| <= ln2/2: relative error below 1e-7), 2^n from the
/// exponent bits. libm's expf is a call per element, which dominated attention at long context.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps NaN, which must not reach the conversion below
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    // NaN becomes -87 here (`max` returns the number), so n below is always in range.
    let x = x.max(-87.0).min(0.0);
    // Round to nearest by the 1.5 * 2^23 trick: floor() is a libm call without SSE4.1.
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    // ln 2 in two parts (Cephes): n * 0.693359375 is exact for the n that occur.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // SAFETY: n is a whole number in [-126, 0] (-87 <= x <= 0), so the conversion is exact; `as i32`
    // would add saturation checks that keep the compiler from vectorizing callers' loops.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    f32::from_bits(((n + 127) << 23) as u32) * p
}

/// Attention of one query token (`q`: nh * hd, roped) over the first `t` cached positions.
/// It is `prefill` with one query row, on purpose: the same key chunks, the same arithmetic in the
/// same order, so a token's logits do not depend on whether it was decoded alone or prefilled with
/// others (a prefix-cache hit must not change what a seeded request samples; with int8
/// activations any last-bit difference can flip a rounding and grow through the layers).
/// Returns nh * hd values.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode<R: Rows>(isa: Isa, q: &[f32], k: &R, v: &R, t: usize, nh: usize, nkv: usize, hd: usize) -> Vec<f32> {
    prefill_isa(isa, q, k, v, 1, t - 1, nh, nkv, hd, true)
}

/// Query rows per prefill work item (times the query heads of one kv head).
const PREFILL_ROWS: usize = 16;
/// Key positions per step of a prefill work item.
const PREFILL_KEYS: usize = 256;

/// Causal attention of `s` new query tokens at positions `start..start + s` over keys and values
/// `0..start + s`, flash-attention style: per kv head and block of query rows, keys are visited in
/// chunks with a running softmax, so no (s x t) score matrix is ever built, key chunks entirely in
/// the future are skipped, and masked scores are never computed into the sums. `q` is (nh, s, hd)
/// roped; returns (s, nh * hd). With `parallel`, large calls are split over the kernel pool; a
/// caller that is itself one of several parallel items (batched decode) passes false, because a
/// nested split only hands the cores to another pool and back.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prefill<R: Rows>(
    q: &[f32],
    k: &R,
    v: &R,
    s: usize,
    start: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    parallel: bool,
) -> Vec<f32> {
    prefill_isa(nanbeige_kernels::active_isa(), q, k, v, s, start, nh, nkv, hd, parallel)
}

/// `prefill` on a chosen kernel path (tests run every path the machine supports).
#[allow(clippy::too_many_arguments)]
fn prefill_isa<R: Rows>(
    isa: Isa,
    q: &[f32],
    k: &R,
    v: &R,
    s: usize,
    start: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    parallel: bool,
) -> Vec<f32> {
    let rep = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let blocks = s.div_ceil(PREFILL_ROWS);
    let items: Vec<(usize, usize)> = (0..nkv).flat_map(|g| (0..blocks).map(move |b| (g, b))).collect();
    let work = |&(g, b): &(usize, usize)| {
        let (i0, i1) = (b * PREFILL_ROWS, ((b + 1) * PREFILL_ROWS).min(s));
        (g, i0, prefill_block_dispatch(isa, &Item { q, k, v, g, rows: i0..i1, s, start, rep, hd, scale }))
    };
    // (kv head, first query row, outputs) per item.
    type Part = (usize, usize, Vec<f32>);
    let parts: Vec<Part> = if parallel && s * (start + s) * nh * hd >= PARALLEL_MIN_WORK {
        // The same pool as the matmuls around it, so the cores are not handed to rayon and back.
        let slots: Vec<Mutex<Option<Part>>> = items.iter().map(|_| Mutex::new(None)).collect();
        nanbeige_kernels::pool::for_each(items.len(), |i| *slots[i].lock().unwrap() = Some(work(&items[i])));
        slots.into_iter().map(|m| m.into_inner().unwrap().expect("every attention item ran")).collect()
    } else {
        items.iter().map(work).collect()
    };
    let mut out = vec![0f32; s * nh * hd];
    for (g, i0, acc) in parts {
        let rows = acc.len() / (rep * hd);
        for r in 0..rep {
            let h = g * rep + r;
            for i in 0..rows {
                let src = &acc[(r * rows + i) * hd..(r * rows + i + 1) * hd];
                out[((i0 + i) * nh + h) * hd..((i0 + i) * nh + h + 1) * hd].copy_from_slice(src);
            }
        }
    }
    out
}

/// One `prefill` work item: query rows `rows` of the `rep` heads sharing kv head `g`, over the
/// call's queries (`s` rows per head, from position `start`) and cache rows.
struct Item<'a, R> {
    q: &'a [f32],
    k: &'a R,
    v: &'a R,
    g: usize,
    rows: Range<usize>,
    s: usize,
    start: usize,
    rep: usize,
    hd: usize,
    scale: f32,
}

/// `prefill_block` compiled for the chosen path's vector width (the mask, softmax and rescaling
/// loops then run 16 or 8 wide; plain x86-64 code is 4 wide).
fn prefill_block_dispatch<R: Rows>(isa: Isa, it: &Item<R>) -> Vec<f32> {
    // Safety (both): the caller's path is one this CPU supports.
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => return unsafe { prefill_block_avx512(isa, it) },
        Isa::Avx2 => return unsafe { prefill_block_avx2(isa, it) },
        Isa::Scalar => {}
    }
    prefill_block(isa, it)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn prefill_block_avx512<R: Rows>(isa: Isa, it: &Item<R>) -> Vec<f32> {
    prefill_block(isa, it)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn prefill_block_avx2<R: Rows>(isa: Isa, it: &Item<R>) -> Vec<f32> {
    prefill_block(isa, it)
}

/// One work item of `prefill`. Returns its outputs, (rep, rows, hd).
#[inline(always)]
fn prefill_block<R: Rows>(isa: Isa, it: &Item<R>) -> Vec<f32> {
    let Item { q, k, v, g, s, start, rep, hd, scale, .. } = *it;
    let rows = it.rows.clone();
    let nr = rows.len();
    let m_rows = rep * nr;
    // Query row (r, i) at index r * nr + i.
    let mut qb = Vec::with_capacity(m_rows * hd);
    for r in 0..rep {
        let h = g * rep + r;
        qb.extend_from_slice(&q[(h * s + rows.start) * hd..(h * s + rows.end) * hd]);
    }
    let mut max = vec![f32::NEG_INFINITY; m_rows];
    let mut sum = vec![0f32; m_rows];
    let mut acc = vec![0f32; m_rows * hd];
    let (mut kbuf, mut vbuf) = (Vec::new(), Vec::new());
    let mut scores = vec![0f32; m_rows * PREFILL_KEYS];
    let keys = start + rows.end;
    let mut c0 = 0;
    while c0 < keys {
        let c1 = (c0 + PREFILL_KEYS).min(keys);
        let n = c1 - c0;
        let kb = k.block(g, c0..c1, &mut kbuf);
        // The same kernel as a decode step (not a GEMM): per score, the same operations in the same
        // order whatever the number of query rows.
        qk(isa, m_rows, n, hd, &mut scores[..m_rows * n], &qb, kb, scale);
        for r in 0..rep {
            for i in 0..nr {
                let row = r * nr + i;
                // Keys up to the query's own position are visible.
                let visible = (start + rows.start + i + 1).saturating_sub(c0).min(n);
                let sc = &mut scores[row * n..(row + 1) * n];
                if visible == 0 {
                    sc.iter_mut().for_each(|x| *x = 0.0);
                    continue;
                }
                let m_new = max_of(&sc[..visible], max[row]);
                let correction = exp_nonpositive(max[row] - m_new);
                let total = exp_shifted_sum(&mut sc[..visible], m_new);
                sc[visible..].iter_mut().for_each(|x| *x = 0.0);
                sum[row] = sum[row] * correction + total;
                max[row] = m_new;
                if correction != 1.0 {
                    acc[row * hd..(row + 1) * hd].iter_mut().for_each(|a| *a *= correction);
                }
            }
        }
        let vb = v.block(g, c0..c1, &mut vbuf);
        pv(isa, m_rows, hd, n, &mut acc, &scores[..m_rows * n], vb);
        c0 = c1;
    }
    for (row, a) in acc.chunks_exact_mut(hd).enumerate() {
        let inv = 1.0 / sum[row];
        a.iter_mut().for_each(|x| *x *= inv);
    }
    acc
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
    fn fast_exp_is_accurate() {
        let mut x = 0f32;
        while x > -100.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!((got - want).abs() <= 5e-7 * want + 1e-37, "exp({x}) = {got}, want {want}");
            x -= 0.0137;
        }
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn chunked_grouped_decode_matches_plain_softmax() {
        // Odd sizes, several chunks (t > 2 key chunks), grouped heads, both the serial and parallel paths.
        let mut seed = 7;
        for &(t, nh, nkv, hd) in &[
            (5usize, 3usize, 1usize, 7usize),
            (1300, 6, 2, 20),
            (2 * PREFILL_KEYS + 7, 4, 4, 33),
            (1300, 10, 2, 64),
            (600, 5, 1, 128),
            (9, 7, 1, 64),
            (700, 6, 2, 48),
            (300, 3, 1, 96),
        ] {
            let (q, k, v) = (rand(nh * hd, &mut seed), rand(nkv * t * hd, &mut seed), rand(nkv * t * hd, &mut seed));
            let want = naive(&q, &k, &v, t, nh, nkv, hd);
            for isa in nanbeige_kernels::supported_isas() {
                let (kr, vr) = (F32Rows { data: &k, cap: t, hd }, F32Rows { data: &v, cap: t, hd });
                let got = decode(isa, &q, &kr, &vr, t, nh, nkv, hd);
                assert!(max_diff(&got, &want) < 1e-5, "{isa:?} t={t} hd={hd}: {}", max_diff(&got, &want));
            }
        }
    }

    #[test]
    fn flash_prefill_matches_masked_softmax() {
        // New queries at positions start..start+s over all keys 0..start+s, for odd sizes, the
        // AVX-512 head sizes and several key chunks; each query row must equal plain decode
        // attention over its visible prefix.
        let mut seed = 3;
        for &(s, start, nh, nkv, hd) in &[
            (5usize, 0usize, 3usize, 1usize, 7usize),
            (37, 300, 6, 2, 20),
            (300, 0, 4, 2, 64),
            (40, 500, 5, 1, 128),
            (70, 250, 3, 1, 48),
            (33, 100, 4, 2, 96),
        ] {
            let t = start + s;
            let q = rand(nh * s * hd, &mut seed);
            let (k, v) = (rand(nkv * t * hd, &mut seed), rand(nkv * t * hd, &mut seed));
            let (kr, vr) = (F32Rows { data: &k, cap: t, hd }, F32Rows { data: &v, cap: t, hd });
            for isa in nanbeige_kernels::supported_isas() {
                let got = prefill_isa(isa, &q, &kr, &vr, s, start, nh, nkv, hd, true);
                // Split over the pool or not (batched decode runs it serially): the same numbers.
                let serial = prefill_isa(isa, &q, &kr, &vr, s, start, nh, nkv, hd, false);
                assert!(got.iter().zip(&serial).all(|(a, b)| a.to_bits() == b.to_bits()), "s={s} start={start}");
                for i in 0..s {
                    // Query i's heads as one (nh * hd) row; keys visible: 0..=start + i. The same
                    // path must give the same bits decoding it alone (a prefix-cache hit must not
                    // change the logits).
                    let qi: Vec<f32> =
                        (0..nh).flat_map(|h| q[(h * s + i) * hd..(h * s + i + 1) * hd].to_vec()).collect();
                    let want = decode(isa, &qi, &kr, &vr, start + i + 1, nh, nkv, hd);
                    let row = &got[i * nh * hd..(i + 1) * nh * hd];
                    assert!(
                        row.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} s={s} start={start} hd={hd} row {i}: {}",
                        max_diff(row, &want)
                    );
                }
                if isa == Isa::Scalar {
                    continue;
                }
                // A vector path against the scalar one: the same attention up to rounding.
                let plain = prefill_isa(Isa::Scalar, &q, &kr, &vr, s, start, nh, nkv, hd, true);
                assert!(max_diff(&got, &plain) < 1e-5, "{isa:?} vs scalar, hd={hd}: {}", max_diff(&got, &plain));
            }
        }
    }

    #[test]
    fn int8_rows_decode_matches_their_dequantized_values() {
        for (t, nh, nkv, hd) in [(700usize, 4usize, 2usize, 24usize), (700, 14, 2, 64)] {
            let mut seed = 11;
            let q = rand(nh * hd, &mut seed);
            let rows = |seed: &mut u64| {
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
            for isa in nanbeige_kernels::supported_isas() {
                let got = decode(isa, &q, &k, &v, t, nh, nkv, hd);
                assert!(max_diff(&got, &want) < 1e-5, "{isa:?}: {}", max_diff(&got, &want));
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    fn cpu_seconds() -> f64 {
        let mut u: libc_rusage = unsafe { std::mem::zeroed() };
        unsafe { getrusage(0, &mut u) };
        (u.utime[0] + u.stime[0]) as f64 + (u.utime[1] + u.stime[1]) as f64 * 1e-6
    }
    #[repr(C)]
    struct libc_rusage {
        utime: [i64; 2],
        stime: [i64; 2],
        rest: [i64; 14],
    }
    extern "C" {
        fn getrusage(who: i32, usage: *mut libc_rusage) -> i32;
    }

    /// cargo test --release -p nanbeige-model --lib speed -- --ignored --nocapture
    #[test]
    #[ignore]
    fn decode_attention_throughput() {
        let t: usize = std::env::var("ATTN_T").ok().and_then(|v| v.parse().ok()).unwrap_or(32000);
        let (nh, nkv, hd) = (14usize, 2usize, 64usize);
        let q = vec![0.01f32; nh * hd];
        let k: Vec<f32> = (0..nkv * t * hd).map(|i| ((i % 97) as f32 - 48.0) / 100.0).collect();
        let kq: Vec<i8> = k.iter().map(|x| (x * 100.0) as i8).collect();
        let sc = vec![0.01f32; nkv * t];
        for name in ["f32", "q8"] {
            let (c0, w0) = (cpu_seconds(), std::time::Instant::now());
            let reps = 20;
            for _ in 0..reps {
                let out = if name == "f32" {
                    let r = F32Rows { data: &k, cap: t, hd };
                    decode(nanbeige_kernels::active_isa(), &q, &r, &r, t, nh, nkv, hd)
                } else {
                    let r = Q8Rows { data: &kq, scale: &sc, nkv, hd };
                    decode(nanbeige_kernels::active_isa(), &q, &r, &r, t, nh, nkv, hd)
                };
                std::hint::black_box(out);
            }
            let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
            let fma = (reps * nh * t * hd * 2) as f64;
            println!(
                "{name}: {:.2} ms/call wall, {:.2} GFMA per CPU-second",
                wall * 1e3 / reps as f64,
                fma / cpu / 1e9
            );
        }
    }
}
