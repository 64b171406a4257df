//! AVX2 micro-kernels, for x86 CPUs without AVX-512 VNNI. Same packed layout and same arithmetic
//! as `avx512.rs`, on half a group at a time (8 weight rows per ymm: the low or high 32 bytes of
//! each 64-byte vector). Several activation rows take one half over the whole row, then the other,
//! reusing unpacked codes across rows; one row (decode) takes both halves of each piece together,
//! so every cache line is used whole while it is in L1 and the memory stream never waits. Int8
//! products use `vpmaddubsw` (unsigned codes x signed activations -> int16 pairs), then `vpmaddwd`
//! widens to int32 (by ones, or by the sub-block scale). As many `vpmaddubsw` results are added in
//! int16 first as the code width allows without overflow (each is at most 2 * max_code * 128):
//! 8 for 4-bit codes (30720), 4 for 5-bit (31744), 2 for 6-bit (32256); integer sums are exact in
//! any order. Q8_0's full-range codes use the sign trick instead (|w| x sign(a, w)).
//! Float steps match the scalar kernel's order exactly, so results are bit-identical to it.
//! Each block also asks for the weights `prefetch_distance()` bytes ahead (dispatch.rs says when).

use crate::acts::Acts;
use crate::dispatch::{prefetch_distance, prefetch_l2};
use crate::gemm::{Out, MT_MAX};
use crate::layout::{hb_at, q6k_at, qs_at, Format, PackedMatrix, Tile};
use core::arch::x86_64::*;
use core::ops::Range;

/// Activation rows per inner tile. Codes are unpacked once per block for all of them (the
/// compiler keeps what does not fit in 16 registers on the stack, in L1).
const MT: usize = 4;

/// See `scalar::tile`. Safety: the CPU must support the `Isa::Avx2` features; `row0 + mt` must
/// not exceed the activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile(w: &PackedMatrix, g: usize, a: &Acts, row0: usize, mt: usize, out: &mut Out) {
    debug_assert!((1..=MT_MAX).contains(&mt) && row0 + mt <= a.m);
    let p = w.group_ptr(g);
    let nb = w.blocks();
    let f = w.format();
    let mut j = 0;
    while j < mt {
        let n = (mt - j).min(MT);
        let r = row0 + j;
        // Out of the kernels: [half][activation row][weight row of the half].
        let mut o = [[[0f32; 8]; MT]; 2];
        if n == 1 {
            // Decode: both halves of each cache line together (`q6k_m1` says why).
            match f {
                Format::Q4K | Format::Q5K => q45k::<1>(f == Format::Q5K, p, 0..2, nb, a, r, &mut o),
                Format::Q6K => q6k_m1(p, nb, a, r, &mut o),
                _ => q32::<1>(f, p, 0..2, nb, a, r, &mut o),
            }
            out[j][..8].copy_from_slice(&o[0][0]);
            out[j][8..].copy_from_slice(&o[1][0]);
            j += 1;
            continue;
        }
        // Several rows: one half at a time over the whole row, so the codes unpacked for a
        // block stay in registers for every activation row.
        for half in 0..2 {
            macro_rules! by_n {
                ($k:ident $(, $arg:expr)*) => {
                    match n {
                        2 => $k::<2>($($arg,)* p, half..half + 1, nb, a, r, &mut o),
                        3 => $k::<3>($($arg,)* p, half..half + 1, nb, a, r, &mut o),
                        _ => $k::<4>($($arg,)* p, half..half + 1, nb, a, r, &mut o),
                    }
                };
            }
            match f {
                Format::Q4K | Format::Q5K => by_n!(q45k, f == Format::Q5K),
                Format::Q6K => by_n!(q6k),
                _ => by_n!(q32, f),
            }
            for (jj, o) in o[half].iter().enumerate().take(n) {
                out[j + jj][8 * half..8 * half + 8].copy_from_slice(o);
            }
        }
        j += n;
    }
}

/// Kernel output: [half][activation row][weight row of the half].
type HalfOut = [[[f32; 8]; MT]; 2];

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bcast_i32(p: *const i8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load_f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// 0xFF in byte i where bit i of `x` is set (ggml's bytes_from_bits_32).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bytes_from_bits(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bits = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bits, _mm256_set1_epi64x(-1))
}

/// int32 lanes += products of two code vectors with two broadcast activation dwords.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot2(acc: __m256i, w0: __m256i, a0: *const i8, w1: __m256i, a1: *const i8) -> __m256i {
    let p = _mm256_add_epi16(_mm256_maddubs_epi16(w0, bcast_i32(a0)), _mm256_maddubs_epi16(w1, bcast_i32(a1)));
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// int16 lanes: sum over c of the products of code vector w[c] with the activation dword at
/// a + 4c, as a tree. The caller keeps len(w) * 2 * max_code * 128 below 2^15.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum16<const L: usize>(w: &[__m256i; L], a: *const i8) -> __m256i {
    let mut p: [__m256i; L] = std::array::from_fn(|c| _mm256_maddubs_epi16(w[c], bcast_i32(a.add(4 * c))));
    let mut n = L;
    while n > 1 {
        for i in 0..n / 2 {
            p[i] = _mm256_add_epi16(p[2 * i], p[2 * i + 1]);
        }
        n /= 2;
    }
    p[0]
}

/// int32 lanes: the dot products of 8 code vectors (32 elements of each of 8 rows) with the
/// activations at `a`, times `scale` (int16 pairs: one value per row in both halves of its lane).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot8(wv: &[__m256i; 8], a: *const i8, five: bool, scale: __m256i) -> __m256i {
    if five {
        let (lo, hi): (&[__m256i; 4], &[__m256i; 4]) = (wv[..4].try_into().unwrap(), wv[4..].try_into().unwrap());
        _mm256_add_epi32(_mm256_madd_epi16(sum16(lo, a), scale), _mm256_madd_epi16(sum16(hi, a.add(16)), scale))
    } else {
        _mm256_madd_epi16(sum16(wv, a), scale)
    }
}

/// Fifth bits of one unpacked vector (its u64 mask at `hb`) for this half, as 0x10 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fifth_bits(hb: *const u8, half: usize) -> __m256i {
    let m = (hb as *const u64).read_unaligned() >> (32 * half);
    _mm256_and_si256(bytes_from_bits(m as u32), _mm256_set1_epi8(16))
}

/// 32-element formats, for the weight-row halves in `halves` (both, per block, for decode).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q32<const N: usize>(f: Format, w: *const u8, halves: Range<usize>, blocks: usize, a: &Acts, row0: usize, out: &mut HalfOut) {
    let lay = Tile::of(f);
    let tb = f.tile_bytes();
    let has_min = matches!(f, Format::Q4_1 | Format::Q5_1);
    let five = matches!(f, Format::Q5_0 | Format::Q5_1);
    let k = a.k;
    let low4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    // Prefetch on the first pass over the row only (a second half re-reads it from cache).
    let pd = if halves.start == 0 { prefetch_distance() } else { 0 };
    for b in 0..blocks {
        let t = w.add(b * tb);
        if pd != 0 {
            prefetch_l2(t.wrapping_add(pd), tb);
        }
        for half in halves.clone() {
            let (vo, so) = (32 * half, 16 * half);
            let dw = load_f16x8(t.add(lay.d + so));
            // wv[c]: elements 4c..4c+4 of the 8 rows. Q8_0: the signed values (codes ^ 0x80).
            let mut wv = [_mm256_setzero_si256(); 8];
            if f == Format::Q8_0 {
                for (i, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_xor_si256(load(t.add(qs_at(f, i) + vo)), _mm256_set1_epi8(-128));
                }
            } else {
                for i in 0..4 {
                    let v = load(t.add(qs_at(f, i) + vo));
                    wv[i] = _mm256_and_si256(v, low4);
                    wv[4 + i] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                    if five {
                        wv[i] = _mm256_or_si256(wv[i], fifth_bits(t.add(hb_at(f, 2 * i)), half));
                        wv[4 + i] = _mm256_or_si256(wv[4 + i], fifth_bits(t.add(hb_at(f, 2 * i + 1)), half));
                    }
                }
            }
            for (j, acc) in acc[half].iter_mut().enumerate() {
                let row = row0 + j;
                let ib = row * (k / 32) + b;
                let aq = a.qs.as_ptr().add(row * k + 32 * b);
                let mut s;
                if f == Format::Q8_0 {
                    // |w| x sign(a, w): products fit int16 one pair at a time.
                    s = _mm256_setzero_si256();
                    for (c, v) in wv.iter().enumerate() {
                        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(*v), _mm256_sign_epi8(bcast_i32(aq.add(4 * c)), *v));
                        s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
                    }
                } else {
                    s = dot8(&wv, aq, five, ones);
                    if !has_min {
                        s = _mm256_add_epi32(s, _mm256_set1_epi32(*a.bias.get_unchecked(ib)));
                    }
                }
                let da = _mm256_set1_ps(*a.d.get_unchecked(ib));
                *acc = _mm256_fmadd_ps(dw, _mm256_mul_ps(_mm256_cvtepi32_ps(s), da), *acc);
                if has_min {
                    let mw = load_f16x8(t.add(lay.m + so));
                    *acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(*a.s.get_unchecked(ib)), *acc);
                }
            }
        }
    }
    store_halves(&acc, halves, out);
}

/// Writes the accumulators of the halves a kernel computed.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_halves<const N: usize>(acc: &[[__m256; N]; 2], halves: Range<usize>, out: &mut HalfOut) {
    for half in halves {
        for (j, acc) in acc[half].iter().enumerate() {
            _mm256_storeu_ps(out[half][j].as_mut_ptr(), *acc);
        }
    }
}

/// The 128 values of a Q4_K/Q5_K 6-bit plane pair (`layout::six_bit_at`) widened to bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen_six_bit(p: *const u8, dst: *mut u8) {
    let (n0, n1, h) = (load(p), load(p.add(32)), load(p.add(64)));
    let (m0f, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    // Value o: nibble o / 64 of byte o % 64, bit pair o / 32 of pair byte o % 32, moved to bits 4..5
    // (16-bit shifts: what crosses into the other byte is masked off).
    let put = |i: usize, nib: __m256i, pair: __m256i| {
        let v = _mm256_or_si256(_mm256_and_si256(nib, m0f), _mm256_and_si256(pair, m30));
        _mm256_storeu_si256(dst.add(32 * i) as *mut __m256i, v);
    };
    put(0, n0, _mm256_slli_epi16::<4>(h));
    put(1, n1, _mm256_slli_epi16::<2>(h));
    put(2, _mm256_srli_epi16::<4>(n0), h);
    put(3, _mm256_srli_epi16::<4>(n1), _mm256_srli_epi16::<2>(h));
}

#[repr(align(32))]
struct Wide([u8; 256]);

/// Q4_K / Q5_K, for the weight-row halves in `halves`; with both (decode) they alternate per
/// sub-block, so each 64-byte piece is used whole while it is in L1.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k<const N: usize>(five: bool, w: *const u8, halves: Range<usize>, blocks: usize, a: &Acts, row0: usize, out: &mut HalfOut) {
    let f = if five { Format::Q5K } else { Format::Q4K };
    let lay = Tile::of(f);
    let tb = f.tile_bytes();
    let k = a.k;
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    // Widened scales (bytes 0..128, [sub-block][row]) and minimums (128..256).
    let mut wide = Wide([0; 256]);
    let sm = wide.0.as_mut_ptr();
    let pd = if halves.start == 0 { prefetch_distance() } else { 0 };
    for b in 0..blocks {
        let t = w.add(b * tb);
        widen_six_bit(t.add(lay.sc), sm);
        widen_six_bit(t.add(lay.mn), sm.add(128));
        let mut tot = [[_mm256_setzero_si256(); N]; 2];
        for s in 0..8 {
            let (jj, h) = (s / 2, s % 2);
            // An eighth of the tile ahead per eighth done: a whole Q4_K tile's 36 requests at
            // once would hold the line-fill buffers the demand loads need.
            if pd != 0 {
                prefetch_l2(t.wrapping_add(pd + s * tb / 8), tb / 8);
            }
            for half in halves.clone() {
                let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sm.add(16 * s + 8 * half) as *const __m128i));
                let sc = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
                let mut wv = [_mm256_setzero_si256(); 8];
                for (c, v) in wv.iter_mut().enumerate() {
                    let i = 8 * jj + c;
                    let raw = load(t.add(qs_at(f, i) + 32 * half));
                    *v = if h == 0 { _mm256_and_si256(raw, low4) } else { _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low4) };
                    if five {
                        *v = _mm256_or_si256(*v, fifth_bits(t.add(hb_at(f, 2 * i + h)), half));
                    }
                }
                for (j, tot) in tot[half].iter_mut().enumerate() {
                    let aq = a.qs.as_ptr().add((row0 + j) * k + 256 * b + 32 * s);
                    *tot = _mm256_add_epi32(*tot, dot8(&wv, aq, five, sc));
                }
            }
        }
        for half in halves.clone() {
            let d = load_f16x8(t.add(lay.d + 16 * half));
            let dmin = load_f16x8(t.add(lay.m + 16 * half));
            for (j, acc) in acc[half].iter_mut().enumerate() {
                let row = row0 + j;
                let bs = a.bs32.as_ptr().add(row * (k / 32) + 8 * b) as *const i32;
                let mut mins = _mm256_setzero_si256();
                for pair in 0..4 {
                    let mn = _mm256_cvtepu8_epi16(_mm_loadu_si128(sm.add(128 + 32 * pair + 16 * half) as *const __m128i));
                    mins = _mm256_add_epi32(mins, _mm256_madd_epi16(mn, _mm256_set1_epi32(bs.add(pair).read_unaligned())));
                }
                let da = _mm256_set1_ps(*a.d.get_unchecked(row * (k / 256) + b));
                *acc = _mm256_fmadd_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(tot[half][j]), da), *acc);
                *acc = _mm256_fnmadd_ps(dmin, _mm256_mul_ps(_mm256_cvtepi32_ps(mins), da), *acc);
            }
        }
    }
    store_halves(&acc, halves, out);
}

/// The four code vectors (t = 0..4) of a Q6_K chunk's half at `p` (`layout::q6k_at`): three
/// masks, and the fourth code gathered from the top bit pairs (16-bit shifts; what crosses into
/// the other byte is masked off).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6k_codes(p: *const u8) -> [__m256i; 4] {
    let v: [__m256i; 3] = std::array::from_fn(|j| load(p.add(64 * j)));
    let m = |x: __m256i, b: i8| _mm256_and_si256(x, _mm256_set1_epi8(b));
    let top = _mm256_or_si256(
        _mm256_or_si256(m(_mm256_srli_epi16::<6>(v[0]), 0x03), m(_mm256_srli_epi16::<4>(v[1]), 0x0C)),
        m(_mm256_srli_epi16::<2>(v[2]), 0x30),
    );
    [m(v[0], 0x3F), m(v[1], 0x3F), m(v[2], 0x3F), top]
}

/// Q6_K for several activation rows, one half at a time (same quarter-by-quarter order as the
/// AVX-512 kernel; see there). One row: `q6k_m1`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k<const N: usize>(w: *const u8, halves: Range<usize>, blocks: usize, a: &Acts, row0: usize, out: &mut HalfOut) {
    debug_assert_eq!(halves.len(), 1);
    let half = halves.start;
    let lay = Tile::of(Format::Q6K);
    let tb = Format::Q6K.tile_bytes();
    let k = a.k;
    let (vo, so) = (32 * half, 16 * half);
    let mut acc = [_mm256_setzero_ps(); N];
    let pd = if halves.start == 0 { prefetch_distance() } else { 0 };
    for b in 0..blocks {
        let t = w.add(b * tb);
        if pd != 0 {
            prefetch_l2(t.wrapping_add(pd), tb);
        }
        let mut tot = [_mm256_setzero_si256(); N];
        for q in 0..4 {
            let (h, cg) = (q / 2, q % 2);
            // by_chunk[c4][tt]: elements 128h + 32tt + 4c .. +4 of the 8 rows, c = 4cg + c4.
            let by_chunk: [[__m256i; 4]; 4] = std::array::from_fn(|c4| {
                q6k_codes(t.add(q6k_at(8 * h + 4 * cg + c4) + vo))
            });
            let codes: [[__m256i; 4]; 4] = std::array::from_fn(|tt| std::array::from_fn(|c4| by_chunk[c4][tt]));
            for (j, tot) in tot.iter_mut().enumerate() {
                let row = row0 + j;
                let aq = a.qs.as_ptr().add(row * k + 256 * b + 128 * h + 16 * cg);
                let bias = a.bias.as_ptr().add(row * (k / 16) + 16 * b + 8 * h + cg);
                for (tt, c) in codes.iter().enumerate() {
                    let sub = 8 * h + 2 * tt + cg;
                    let a0 = aq.add(32 * tt);
                    let mut isum = _mm256_set1_epi32(*bias.add(2 * tt));
                    isum = dot2(isum, c[0], a0, c[1], a0.add(4));
                    isum = dot2(isum, c[2], a0.add(8), c[3], a0.add(12));
                    let sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(t.add(lay.sc + 16 * sub + 8 * half) as *const __m128i));
                    *tot = _mm256_add_epi32(*tot, _mm256_mullo_epi32(isum, sc));
                }
            }
        }
        let d = load_f16x8(t.add(lay.d + so));
        for (j, acc) in acc.iter_mut().enumerate() {
            let da = _mm256_set1_ps(*a.d.get_unchecked((row0 + j) * (k / 256) + b));
            *acc = _mm256_fmadd_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(tot[j]), da), *acc);
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        _mm256_storeu_ps(out[half][j].as_mut_ptr(), *acc);
    }
}

/// Q6_K against one activation row (decode), all 16 rows of the group in one pass: `q6k` takes
/// the two halves one after the other over the whole row, so its first pass touched every cache
/// line and used half of it, with the memory stream stalled while the second pass ran from cache;
/// one row at a time is latency-bound (one core streamed Q6_K at 9.7 GB/s of the 19 it can read).
/// Here each quarter's lines are used in both halves back to back, while they are in L1. Each
/// high-bit / low-bit vector triple is loaded once and gives the codes of all four sub-rows (16
/// code vectors live at once would spill, so two chunks at a time feed four running sums).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_m1(w: *const u8, blocks: usize, a: &Acts, row: usize, out: &mut HalfOut) {
    let lay = Tile::of(Format::Q6K);
    let tb = Format::Q6K.tile_bytes();
    let k = a.k;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 2];
    let pd = prefetch_distance();
    for b in 0..blocks {
        let t = w.add(b * tb);
        let mut tot = [_mm256_setzero_si256(); 2];
        for q in 0..4 {
            // A quarter of the tile ahead per quarter done (see q45k).
            if pd != 0 {
                prefetch_l2(t.wrapping_add(pd + q * tb / 4), tb / 4);
            }
            let (h, cg) = (q / 2, q % 2);
            let aq = a.qs.as_ptr().add(row * k + 256 * b + 128 * h + 16 * cg);
            let bias = a.bias.as_ptr().add(row * (k / 16) + 16 * b + 8 * h + cg);
            for (half, tot) in tot.iter_mut().enumerate() {
                // isum[tt]: sub-row tt (sub-block 8h + 2tt + cg) of the 8 weight rows of this half.
                let mut isum: [__m256i; 4] = std::array::from_fn(|tt| _mm256_set1_epi32(*bias.add(2 * tt)));
                for pair in 0..2 {
                    let mut p16 = [_mm256_setzero_si256(); 4];
                    for e in 0..2 {
                        let codes = q6k_codes(t.add(q6k_at(8 * h + 4 * cg + 2 * pair + e) + 32 * half));
                        for (tt, p) in p16.iter_mut().enumerate() {
                            let m = _mm256_maddubs_epi16(codes[tt], bcast_i32(aq.add(32 * tt + 8 * pair + 4 * e)));
                            // Two 6-bit products per int16 lane at most (see the header).
                            *p = if e == 0 { m } else { _mm256_add_epi16(*p, m) };
                        }
                    }
                    for (s, p) in isum.iter_mut().zip(p16) {
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
                    }
                }
                for (tt, s) in isum.iter().enumerate() {
                    let sub = 8 * h + 2 * tt + cg;
                    let sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(t.add(lay.sc + 16 * sub + 8 * half) as *const __m128i));
                    *tot = _mm256_add_epi32(*tot, _mm256_mullo_epi32(*s, sc));
                }
            }
        }
        let da = _mm256_set1_ps(*a.d.get_unchecked(row * (k / 256) + b));
        for (half, acc) in acc.iter_mut().enumerate() {
            let d = load_f16x8(t.add(lay.d + 16 * half));
            *acc = _mm256_fmadd_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(tot[half]), da), *acc);
        }
    }
    store_halves(&[[acc[0]], [acc[1]]], 0..2, out);
}
