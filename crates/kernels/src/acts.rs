//! Activation quantization, once per matmul call, exactly as ggml does it for the weight format's
//! `vec_dot_type`:
//! - 32-element formats: Q8_0 (Q4_0, Q5_0, Q8_0) or Q8_1 (Q4_1, Q5_1) blocks: d = amax/127 stored
//!   as f16, codes round(x/d) (half away from zero), Q8_1 adds s = f16(d * sum(codes));
//! - K-quants: Q8_K blocks of 256: d = max/-127 in f32 (max = the signed value of largest
//!   magnitude), codes nearest_int(x * -127/max) (half to even), with per-16 sums.
//!
//! Besides ggml's fields each block carries what the kernels need precomputed: `bias`, the integer
//! term -offset*sum(codes) that re-centers unsigned weight codes (so the int32 a kernel accumulates
//! equals ggml's sumi exactly), and for Q4_K/Q5_K the per-32 sums the minimums multiply.
//! Buffers are reused between calls (one set per calling thread); nothing is allocated once they
//! have grown to the largest shape seen.

use crate::dispatch::Isa;
use crate::layout::{Format, QK_K};
use crate::pool::{self, SendPtr};
use half::f16;

#[derive(Default)]
pub struct Acts {
    pub m: usize,
    pub k: usize,
    pub format: Option<Format>,
    /// Codes, row-major m x k.
    pub qs: Vec<i8>,
    /// Per block (32, or 256 for K-quants): the activation scale, as the dot product uses it.
    pub d: Vec<f32>,
    /// Per 32-block (Q4_0/Q5_0/Q8_0) or per 16 elements (Q6_K): -offset * sum(codes).
    pub bias: Vec<i32>,
    /// Q4_1/Q5_1: per 32-block, ggml's s = f16(d * sum(codes)).
    pub s: Vec<f32>,
    /// Q4_K/Q5_K: per 32 elements, sum(codes).
    pub bs32: Vec<i16>,
}

impl Acts {
    /// Blocks of `d` per row.
    pub fn d_per_row(&self) -> usize {
        self.k / if self.format.is_some_and(|f| f.is_kquant()) { QK_K } else { 32 }
    }
    pub fn bias_per_row(&self) -> usize {
        match self.format {
            Some(Format::Q6K) => self.k / 16,
            Some(Format::Q4K | Format::Q5K) => 0,
            _ => self.k / 32,
        }
    }

    /// Quantize `m` rows of `k` activations for weights of `format`. `isa` only picks how the
    /// loops are compiled; the codes are the same on every path.
    pub fn quantize(&mut self, format: Format, x: &[f32], m: usize, k: usize, isa: Isa) {
        assert_eq!(x.len(), m * k, "activations: {} values for {m}x{k}", x.len());
        assert!(k.is_multiple_of(format.block_len()));
        self.m = m;
        self.k = k;
        self.format = Some(format);
        let (nd, nbias) = (self.d_per_row(), self.bias_per_row());
        resize(&mut self.qs, m * k);
        resize(&mut self.d, m * nd);
        resize(&mut self.bias, m * nbias);
        if matches!(format, Format::Q4_1 | Format::Q5_1) {
            resize(&mut self.s, m * (k / 32));
        }
        if matches!(format, Format::Q4K | Format::Q5K) {
            resize(&mut self.bs32, m * (k / 32));
        }
        let (qs, d, bias) = (SendPtr(self.qs.as_mut_ptr()), SendPtr(self.d.as_mut_ptr()), SendPtr(self.bias.as_mut_ptr()));
        let (s, bs32) = (SendPtr(self.s.as_mut_ptr()), SendPtr(self.bs32.as_mut_ptr()));
        // Rows are independent; large prompts quantize on all cores.
        let rows_per_item = (65536 / k).clamp(1, m.max(1));
        pool::for_each(m.div_ceil(rows_per_item), |item| {
            for row in item * rows_per_item..((item + 1) * rows_per_item).min(m) {
                let x = &x[row * k..][..k];
                // SAFETY: each row writes only its own slice of every buffer, sized above.
                unsafe {
                    let qs = std::slice::from_raw_parts_mut(qs.get().add(row * k), k);
                    let d = std::slice::from_raw_parts_mut(d.get().add(row * nd), nd);
                    let bias = std::slice::from_raw_parts_mut(bias.get().add(row * nbias), nbias);
                    if format.is_kquant() {
                        let bs32 = if format == Format::Q6K {
                            &mut []
                        } else {
                            std::slice::from_raw_parts_mut(bs32.get().add(row * (k / 32)), k / 32)
                        };
                        match isa {
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx512 => q8k_avx512(format, x, qs, d, bias, bs32),
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx2 => q8k_avx2(format, x, qs, d, bias, bs32),
                            _ => quantize_row_q8k(format, x, qs, d, bias, bs32),
                        }
                    } else {
                        let s = if matches!(format, Format::Q4_1 | Format::Q5_1) {
                            std::slice::from_raw_parts_mut(s.get().add(row * (k / 32)), k / 32)
                        } else {
                            &mut []
                        };
                        match isa {
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx512 => q8_avx512(format, x, qs, d, bias, s),
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx2 => q8_avx2(format, x, qs, d, bias, s),
                            _ => quantize_row_q8(format, x, qs, d, bias, s, f16_round),
                        }
                    }
                }
            }
        });
    }
}

fn resize<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

// The same loops compiled for AVX2: rounding and the int8 conversion become a few vector
// instructions instead of libm calls, and f16 rounding one F16C instruction. Results are
// identical (every step is exact IEEE arithmetic; both f16 conversions round to nearest even).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_avx2(format: Format, x: &[f32], qs: &mut [i8], d: &mut [f32], bias: &mut [i32], s: &mut [f32]) {
    use std::arch::x86_64::*;
    let f16_round = |v: f32| _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v))));
    quantize_row_q8(format, x, qs, d, bias, s, f16_round)
}

/// `quantize_row_q8` written out in AVX-512, 32 values (two registers) per block: the loop the
/// compiler makes of the plain version spends ~3 cycles a value, and in batched decode this runs
/// on one core while the other waits. Same codes: round half away from zero is
/// trunc(y + copysign(0.5 - 2^-25, y)), exact for |y| < 2^23 (here |y| <= 127).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q8_avx512(format: Format, x: &[f32], qs: &mut [i8], d: &mut [f32], bias: &mut [i32], s: &mut [f32]) {
    use std::arch::x86_64::*;
    let f16_round = |v: f32| _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v))));
    let off = format.code_offset();
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    let sign = _mm512_set1_epi32(i32::MIN);
    let half = _mm512_set1_epi32(0.499_999_97f32.to_bits() as i32);
    let nb = x.len() / 32;
    assert!(qs.len() >= 32 * nb && d.len() >= nb && bias.len() >= nb && (s.is_empty() || s.len() >= nb));
    for b in 0..nb {
        let p = x.as_ptr().add(32 * b);
        let (v0, v1) = (_mm512_loadu_si512(p as *const _), _mm512_loadu_si512(p.add(16) as *const _));
        let amax = _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_and_si512(v0, abs), _mm512_and_si512(v1, abs)));
        let dd = f32::from_bits(amax as u32) / 127.0;
        let id = _mm512_set1_ps(if dd != 0.0 { 1.0 / dd } else { 0.0 });
        let code = |v: __m512i| {
            let y = _mm512_mul_ps(_mm512_castsi512_ps(v), id);
            let h = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(y), sign), half);
            _mm512_cvttps_epi32(_mm512_add_ps(y, _mm512_castsi512_ps(h)))
        };
        let (c0, c1) = (code(v0), code(v1));
        let q = qs.as_mut_ptr().add(32 * b);
        _mm_storeu_si128(q as *mut __m128i, _mm512_cvtepi32_epi8(c0));
        _mm_storeu_si128(q.add(16) as *mut __m128i, _mm512_cvtepi32_epi8(c1));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(c0, c1));
        *d.get_unchecked_mut(b) = f16_round(dd);
        *bias.get_unchecked_mut(b) = -off * sum;
        if !s.is_empty() {
            *s.get_unchecked_mut(b) = f16_round(sum as f32 * dd);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8k_avx2(format: Format, x: &[f32], qs: &mut [i8], d: &mut [f32], bias: &mut [i32], bs32: &mut [i16]) {
    quantize_row_q8k(format, x, qs, d, bias, bs32)
}

/// `quantize_row_q8k` written out in AVX-512, a 256-value block in 16 registers: the plain loop
/// (find the first value of largest magnitude, round half to even, per-16 sums) compiles to
/// ~1.7 ns a value, a whole percent of a Q4_K_M decode step on one core while the other waits.
/// Same codes: `vcvtps2dq` rounds half to even under the default MXCSR mode, like
/// `round_ties_even`, and the first maximum is the lowest set bit of an equality mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn q8k_avx512(format: Format, x: &[f32], qs: &mut [i8], d: &mut [f32], bias: &mut [i32], bs32: &mut [i16]) {
    use std::arch::x86_64::*;
    let nb = x.len() / QK_K;
    assert!(qs.len() >= QK_K * nb && d.len() >= nb);
    assert!(format != Format::Q6K || bias.len() >= 16 * nb);
    assert!(bs32.is_empty() || bs32.len() >= 8 * nb);
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    let top = _mm512_set1_epi32(127);
    for b in 0..nb {
        let p = x.as_ptr().add(QK_K * b);
        let v: [__m512i; 16] = std::array::from_fn(|i| _mm512_loadu_si512(p.add(16 * i) as *const _));
        let mut m = _mm512_setzero_si512();
        for v in &v {
            m = _mm512_max_epu32(m, _mm512_and_si512(*v, abs));
        }
        let abits = _mm512_reduce_max_epu32(m);
        let q = qs.as_mut_ptr().add(QK_K * b);
        if abits == 0 {
            *d.get_unchecked_mut(b) = 0.0;
            std::ptr::write_bytes(q, 0, QK_K);
        } else {
            let want = _mm512_set1_epi32(abits as i32);
            // The first register holding the magnitude, and its lowest lane with it (always found).
            let (i, hits) = (0..16)
                .map(|i| (i, _mm512_cmpeq_epi32_mask(_mm512_and_si512(v[i], abs), want)))
                .find(|&(_, hits)| hits != 0)
                .unwrap_or((0, 1));
            let lane = hits.trailing_zeros() as usize;
            let max = *x.get_unchecked(QK_K * b + 16 * i + lane);
            let iscale = -127.0 / max;
            let is = _mm512_set1_ps(iscale);
            for (j, v) in v.iter().enumerate() {
                let c = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_castsi512_ps(*v), is)), top);
                _mm_storeu_si128(q.add(16 * j) as *mut __m128i, _mm512_cvtepi32_epi8(c));
            }
            *d.get_unchecked_mut(b) = 1.0 / iscale;
        }
        // Per-16 sums from the stored codes (zeros included), as the plain loop takes them.
        let mut s16 = [0i32; 16];
        for (j, s) in s16.iter_mut().enumerate() {
            *s = _mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(16 * j) as *const __m128i)));
        }
        if format == Format::Q6K {
            for (j, s) in s16.iter().enumerate() {
                *bias.get_unchecked_mut(16 * b + j) = -32 * s;
            }
        }
        if !bs32.is_empty() {
            for j in 0..8 {
                *bs32.get_unchecked_mut(8 * b + j) = (s16[2 * j] + s16[2 * j + 1]) as i16;
            }
        }
    }
}

/// f32 -> nearest f16 -> f32, portably.
fn f16_round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// One row into 32-element blocks (ggml quantize_row_q8_0 / q8_1).
#[inline(always)]
fn quantize_row_q8(
    format: Format,
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    bias: &mut [i32],
    s: &mut [f32],
    f16_round: impl Fn(f32) -> f32,
) {
    let off = format.code_offset();
    for (b, (x, q)) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)).enumerate() {
        // Max of |x| on the bit patterns: integer max vectorizes where a float max reduction won't.
        let amax = f32::from_bits(x.iter().map(|v| v.to_bits() & 0x7fff_ffff).max().unwrap());
        let dd = amax / 127.0;
        let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in q.iter_mut().zip(x) {
            let c = (v * id).round() as i8;
            *q = c;
            sum += c as i32;
        }
        d[b] = f16_round(dd);
        bias[b] = -off * sum;
        if !s.is_empty() {
            s[b] = f16_round(sum as f32 * dd);
        }
    }
}

/// One row into Q8_K blocks (ggml quantize_row_q8_K).
#[inline(always)]
fn quantize_row_q8k(format: Format, x: &[f32], qs: &mut [i8], d: &mut [f32], bias: &mut [i32], bs32: &mut [i16]) {
    for (b, (x, q)) in x.chunks_exact(QK_K).zip(qs.chunks_exact_mut(QK_K)).enumerate() {
        // ggml takes the first value of largest magnitude; find the magnitude with an integer max
        // (it vectorizes), then its first occurrence.
        let abits = x.iter().map(|v| v.to_bits() & 0x7fff_ffff).max().unwrap();
        let amax = f32::from_bits(abits);
        let max = x.iter().copied().find(|v| v.to_bits() & 0x7fff_ffff == abits).unwrap_or(0.0);
        if amax == 0.0 {
            d[b] = 0.0;
            q.fill(0);
        } else {
            let iscale = -127.0 / max;
            for (q, &v) in q.iter_mut().zip(x) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            d[b] = 1.0 / iscale;
        }
        for (j, q16) in q.chunks_exact(16).enumerate() {
            let sum: i32 = q16.iter().map(|&c| c as i32).sum();
            if format == Format::Q6K {
                bias[16 * b + j] = -32 * sum;
            }
        }
        if !bs32.is_empty() {
            for (j, q32) in q.chunks_exact(32).enumerate() {
                bs32[8 * b + j] = q32.iter().map(|&c| c as i32).sum::<i32>() as i16;
            }
        }
    }
}
