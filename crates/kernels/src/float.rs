//! bf16 / f16 weights used directly: y (m x n) = x (m x k, f32) . W^T with W (n x k) in half
//! precision, never widened to an f32 copy. Each weight is converted in registers (bf16 -> f32 is
//! a 16-bit shift; f16 uses `vcvtph2ps`) and multiplied with f32 FMAs, so activations keep full
//! precision and the result matches an f32 matmul on the widened weights up to summation order.
//! m = 1 (decode) walks the rows in memory order, one sequential stream per thread; m > 1 uses a
//! register tile of 4 weight rows x up to 4 activation rows, with activation rows chunked like
//! the quantized driver so a weight quad is read once per chunk. The decode rows prefetch their
//! stream `prefetch_distance()` bytes ahead, as the quantized kernels do.
//! Not here: quantized formats (gemm.rs), f32 weights (candle's gemm handles those well).

use crate::dispatch::Isa;
#[cfg(target_arch = "x86_64")]
use crate::dispatch::{prefetch_distance, prefetch_l2};
use crate::pool::{self, SendPtr};
use half::{bf16, f16};

/// Half-precision weights, row-major n x k.
#[derive(Clone, Copy, Debug)]
pub enum FloatWeights<'a> {
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl FloatWeights<'_> {
    fn len(&self) -> usize {
        match self {
            FloatWeights::Bf16(w) => w.len(),
            FloatWeights::F16(w) => w.len(),
        }
    }
    fn get(&self, i: usize) -> f32 {
        match self {
            FloatWeights::Bf16(w) => w[i].to_f32(),
            FloatWeights::F16(w) => w[i].to_f32(),
        }
    }
    fn ptr(&self) -> *const u16 {
        match self {
            FloatWeights::Bf16(w) => w.as_ptr() as *const u16,
            FloatWeights::F16(w) => w.as_ptr() as *const u16,
        }
    }
    fn is_bf16(&self) -> bool {
        matches!(self, FloatWeights::Bf16(_))
    }
}

const QUAD: usize = 4;
const MT: usize = 4;
type Out = [[f32; QUAD]; MT];

/// y = x . W^T; x is (m, k), y is (m, n), W is (n, k).
pub fn matmul_float(isa: Isa, w: FloatWeights, n: usize, k: usize, x: &[f32], m: usize, y: &mut [f32]) {
    assert_eq!(w.len(), n * k, "matmul_float: {} weights for {n}x{k}", w.len());
    assert_eq!(x.len(), m * k, "matmul_float: x has {} values, expected {m}x{k}", x.len());
    assert_eq!(y.len(), m * n, "matmul_float: y has {} values, expected {m}x{n}", y.len());
    assert!(isa.is_supported(), "matmul_float: the {} path cannot run on this CPU", isa.name());
    if m == 0 || n == 0 {
        return;
    }
    if m == 1 {
        return gemv(isa, w, n, k, x, y);
    }
    let quads = n.div_ceil(QUAD);
    // Activation rows per chunk: a weight quad (4 rows x k halves, 80 KiB at k = 10496) stays in
    // L2 while the chunk's rows stream past it from L2/L3; each chunk reads the weights once.
    let mc = if m <= MT { m } else { 64 };
    let chunks = m.div_ceil(mc);
    let want = if chunks == 1 { pool::threads() * 8 } else { pool::threads() * 2 };
    let per_item = quads.div_ceil(want.min(quads));
    let items_per_chunk = quads.div_ceil(per_item);
    let yp = SendPtr(y.as_mut_ptr());
    pool::for_each(chunks * items_per_chunk, |item| {
        let (c, qi) = (item / items_per_chunk, item % items_per_chunk);
        let (r0, r1) = (c * mc, ((c + 1) * mc).min(m));
        for q in qi * per_item..((qi + 1) * per_item).min(quads) {
            // A short last quad repeats the last row; its extra outputs are dropped.
            let rows: [usize; QUAD] = std::array::from_fn(|i| (QUAD * q + i).min(n - 1));
            let cols = (n - QUAD * q).min(QUAD);
            let mut r = r0;
            while r < r1 {
                let mt = (r1 - r).min(MT);
                let mut out = [[0f32; QUAD]; MT];
                let xr = &x[r * k..(r + mt) * k];
                match isa {
                    // SAFETY: the path was checked to be supported.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512::quad(w, k, rows, xr, mt, &mut out) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2::quad(w, k, rows, xr, mt, &mut out) },
                    _ => scalar_quad(w, k, rows, xr, mt, &mut out),
                }
                for (j, o) in out.iter().enumerate().take(mt) {
                    // SAFETY: this item alone writes rows r0..r1, columns 4q..4q+cols.
                    unsafe { std::ptr::copy_nonoverlapping(o.as_ptr(), yp.get().add((r + j) * n + QUAD * q), cols) };
                }
                r += mt;
            }
        }
    });
}

/// m = 1: one weight row at a time, rows in memory order, so each thread reads one sequential
/// stream (four interleaved row streams defeat the hardware prefetcher and cost ~half the
/// bandwidth); x stays in L1/L2.
/// Items are runs of 16 rows, shrinking toward the end of the call (`pool::shrinking_spans`).
fn gemv(isa: Isa, w: FloatWeights, n: usize, k: usize, x: &[f32], y: &mut [f32]) {
    const RUN: usize = 16;
    let mut spans = [(0u32, 0u32, 0u32); pool::SPANS_MAX];
    let items = pool::shrinking_spans(&[n.div_ceil(RUN)], 1, &mut spans);
    let yp = SendPtr(y.as_mut_ptr());
    pool::for_each(items, |item| {
        let (_, lo, hi) = spans[item];
        for row in RUN * lo as usize..(RUN * hi as usize).min(n) {
            let v = match isa {
                // SAFETY: the path was checked to be supported.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::row_dot(w, k, row, x) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2::row_dot(w, k, row, x) },
                _ => (0..k).map(|i| w.get(row * k + i) * x[i]).sum(),
            };
            // SAFETY: rows are split between items.
            unsafe { *yp.get().add(row) = v };
        }
    });
}

fn scalar_quad(w: FloatWeights, k: usize, rows: [usize; QUAD], x: &[f32], mt: usize, out: &mut Out) {
    for j in 0..mt {
        for (i, &row) in rows.iter().enumerate() {
            let mut s = 0f32;
            for kk in 0..k {
                s += w.get(row * k + kk) * x[j * k + kk];
            }
            out[j][i] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use core::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn widen(p: *const u16, bf: bool, mask: __mmask16) -> __m512 {
        let h = _mm256_maskz_loadu_epi16(mask, p as *const i16);
        if bf {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_cvtph_ps(h)
        }
    }

    /// Row `row` of w . x, with four accumulators to hide FMA latency.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub unsafe fn row_dot(w: FloatWeights, k: usize, row: usize, x: &[f32]) -> f32 {
        let bf = w.is_bf16();
        let wr = w.ptr().add(row * k);
        let xp = x.as_ptr();
        let mut acc = [_mm512_setzero_ps(); 4];
        let pd = prefetch_distance();
        let mut kk = 0;
        while kk + 64 <= k {
            if pd != 0 {
                // Rows lie back to back, so this runs on into the next row of the stream.
                prefetch_l2((wr.add(kk) as *const u8).wrapping_add(pd), 128);
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let o = kk + 16 * i;
                *acc = _mm512_fmadd_ps(widen(wr.add(o), bf, 0xFFFF), _mm512_loadu_ps(xp.add(o)), *acc);
            }
            kk += 64;
        }
        while kk < k {
            let left = k - kk;
            let mask: __mmask16 = if left >= 16 { 0xFFFF } else { (1u16 << left) - 1 };
            acc[0] = _mm512_fmadd_ps(widen(wr.add(kk), bf, mask), _mm512_maskz_loadu_ps(mask, xp.add(kk)), acc[0]);
            kk += 16;
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub unsafe fn quad(w: FloatWeights, k: usize, rows: [usize; QUAD], x: &[f32], mt: usize, out: &mut Out) {
        match (w.is_bf16(), mt) {
            (true, 1) => kernel::<true, 1>(w.ptr(), k, rows, x, out),
            (true, 2) => kernel::<true, 2>(w.ptr(), k, rows, x, out),
            (true, 3) => kernel::<true, 3>(w.ptr(), k, rows, x, out),
            (true, _) => kernel::<true, 4>(w.ptr(), k, rows, x, out),
            (false, 1) => kernel::<false, 1>(w.ptr(), k, rows, x, out),
            (false, 2) => kernel::<false, 2>(w.ptr(), k, rows, x, out),
            (false, 3) => kernel::<false, 3>(w.ptr(), k, rows, x, out),
            (false, _) => kernel::<false, 4>(w.ptr(), k, rows, x, out),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    unsafe fn kernel<const BF: bool, const N: usize>(w: *const u16, k: usize, rows: [usize; QUAD], x: &[f32], out: &mut Out) {
        let mut acc = [[_mm512_setzero_ps(); QUAD]; N];
        let wr: [*const u16; QUAD] = std::array::from_fn(|i| w.add(rows[i] * k));
        let mut kk = 0;
        while kk < k {
            // The tail (k % 16) is handled with masked loads that read zeros past the row end.
            let left = k - kk;
            let mask: __mmask16 = if left >= 16 { 0xFFFF } else { (1u16 << left) - 1 };
            let wv: [__m512; QUAD] = std::array::from_fn(|i| widen(wr[i].add(kk), BF, mask));
            for (j, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(j * k + kk));
                for i in 0..QUAD {
                    acc[i] = _mm512_fmadd_ps(wv[i], xv, acc[i]);
                }
            }
            kk += 16;
        }
        for j in 0..N {
            for i in 0..QUAD {
                out[j][i] = _mm512_reduce_add_ps(acc[j][i]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use core::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn widen(p: *const u16, bf: bool) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        if bf {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        } else {
            _mm256_cvtph_ps(h)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Row `row` of w . x, with four accumulators to hide FMA latency.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_dot(w: FloatWeights, k: usize, row: usize, x: &[f32]) -> f32 {
        let bf = w.is_bf16();
        let wr = w.ptr().add(row * k);
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let pd = prefetch_distance();
        let mut kk = 0;
        while kk + 32 <= k {
            if pd != 0 {
                prefetch_l2((wr.add(kk) as *const u8).wrapping_add(pd), 64);
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let o = kk + 8 * i;
                *acc = _mm256_fmadd_ps(widen(wr.add(o), bf), _mm256_loadu_ps(xp.add(o)), *acc);
            }
            kk += 32;
        }
        let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        for (t, &xv) in x.iter().enumerate().take(k).skip(kk) {
            s += w.get(row * k + t) * xv;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quad(w: FloatWeights, k: usize, rows: [usize; QUAD], x: &[f32], mt: usize, out: &mut Out) {
        let mut j = 0;
        while j < mt {
            if mt - j >= 2 {
                kernel::<2>(w, k, rows, &x[j * k..], j, out);
                j += 2;
            } else {
                kernel::<1>(w, k, rows, &x[j * k..], j, out);
                j += 1;
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel<const N: usize>(w: FloatWeights, k: usize, rows: [usize; QUAD], x: &[f32], j0: usize, out: &mut Out) {
        let bf = w.is_bf16();
        let wp = w.ptr();
        let wr: [*const u16; QUAD] = std::array::from_fn(|i| wp.add(rows[i] * k));
        let mut acc = [[_mm256_setzero_ps(); QUAD]; N];
        let body = k / 8 * 8;
        let mut kk = 0;
        while kk < body {
            let wv: [__m256; QUAD] = std::array::from_fn(|i| widen(wr[i].add(kk), bf));
            for (j, acc) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.as_ptr().add(j * k + kk));
                for i in 0..QUAD {
                    acc[i] = _mm256_fmadd_ps(wv[i], xv, acc[i]);
                }
            }
            kk += 8;
        }
        for j in 0..N {
            for i in 0..QUAD {
                let mut s = hsum(acc[j][i]);
                for t in body..k {
                    s += w.get(rows[i] * k + t) * x[j * k + t];
                }
                out[j0 + j][i] = s;
            }
        }
    }
}
