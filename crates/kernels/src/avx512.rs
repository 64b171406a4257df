//! AVX-512 VNNI micro-kernels: one packed 16-row group (one zmm lane per weight row) against up to
//! `MT_MAX` quantized activation rows, over the whole row length.
//!
//! Per block, the weight codes are unpacked once into 64-byte vectors (16 rows x 4 consecutive
//! elements) and reused for every activation row; each `vpdpbusd` multiplies one such vector (the
//! unsigned operand) by a broadcast dword of 4 activation codes (signed) and adds the 4 products of
//! each row into its int32 lane. The int32 block sums start from the activation's `bias`
//! (-offset * sum), so they equal ggml's integer sums; float work (scales) happens once per block,
//! in the same order as the scalar kernel, so results are bit-identical to it.
//! Each block also asks for the weights `prefetch_distance()` bytes ahead (dispatch.rs says when).
//! Uses only AVX-512 F/BW/VL/VNNI (never AMX).

use crate::acts::Acts;
use crate::dispatch::{prefetch_distance, prefetch_l2};
use crate::gemm::{Out, MT_MAX};
use crate::layout::{hb_at, q6k_at, qs_at, Format, PackedMatrix, Tile};
use core::arch::x86_64::*;

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

const fn format_of(f: u8) -> Format {
    match f {
        Q4_0 => Format::Q4_0,
        Q4_1 => Format::Q4_1,
        Q5_0 => Format::Q5_0,
        Q5_1 => Format::Q5_1,
        _ => Format::Q8_0,
    }
}

/// See `scalar::tile`. Safety: the CPU must support the `Isa::Avx512` features; `row0 + mt` must
/// not exceed the activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub unsafe fn tile(w: &PackedMatrix, g: usize, a: &Acts, row0: usize, mt: usize, out: &mut Out) {
    debug_assert!((1..=MT_MAX).contains(&mt) && row0 + mt <= a.m);
    let p = w.group_ptr(g);
    let nb = w.blocks();
    macro_rules! by_mt {
        ($f:ident $(::<$c:tt>)?) => {
            match mt {
                1 => $f::<$($c,)? 1>(p, nb, a, row0, out),
                2 => $f::<$($c,)? 2>(p, nb, a, row0, out),
                3 => $f::<$($c,)? 3>(p, nb, a, row0, out),
                4 => $f::<$($c,)? 4>(p, nb, a, row0, out),
                5 => $f::<$($c,)? 5>(p, nb, a, row0, out),
                6 => $f::<$($c,)? 6>(p, nb, a, row0, out),
                7 => $f::<$($c,)? 7>(p, nb, a, row0, out),
                _ => $f::<$($c,)? 8>(p, nb, a, row0, out),
            }
        };
    }
    match w.format() {
        Format::Q4_0 => by_mt!(q32::<Q4_0>),
        Format::Q4_1 => by_mt!(q32::<Q4_1>),
        Format::Q5_0 => by_mt!(q32::<Q5_0>),
        Format::Q5_1 => by_mt!(q32::<Q5_1>),
        Format::Q8_0 => by_mt!(q32::<Q8_0>),
        Format::Q4K => by_mt!(q45k::<false>),
        Format::Q5K => by_mt!(q45k::<true>),
        Format::Q6K => {
            // 16 unpacked code vectors per quarter leave registers for 4 rows at a time.
            let mut j = 0;
            while j < mt {
                let n = (mt - j).min(4);
                let mut o = [[0f32; 16]; MT_MAX];
                match n {
                    1 => q6k::<1>(p, nb, a, row0 + j, &mut o),
                    2 => q6k::<2>(p, nb, a, row0 + j, &mut o),
                    3 => q6k::<3>(p, nb, a, row0 + j, &mut o),
                    _ => q6k::<4>(p, nb, a, row0 + j, &mut o),
                }
                out[j..j + n].copy_from_slice(&o[..n]);
                j += n;
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bcast_i32(p: *const i8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

#[inline]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn load_f16x16(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const _)
}

/// The 128 values of a Q4_K/Q5_K 6-bit plane pair (`layout::six_bit_at`) widened to bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn widen_six_bit(p: *const u8, dst: *mut u8) {
    let n = load(p);
    let h = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(64) as *const __m256i));
    let (m0f, m30) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    // Values 0..31 take bit pair 0 of the pair bytes, 32..63 pair 1, 64..95 pair 2, 96..127 pair 3;
    // each is moved to bits 4..5 (16-bit shifts: what crosses into the other byte is masked off).
    let ha = _mm512_mask_blend_epi64(0xF0, _mm512_slli_epi16::<4>(h), _mm512_slli_epi16::<2>(h));
    let hb = _mm512_mask_blend_epi64(0xF0, h, _mm512_srli_epi16::<2>(h));
    // Bits of the pair vector where m30 is set, else of the nibbles: one ternary-logic op.
    let lo = _mm512_and_si512(n, m0f);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(n), m0f);
    _mm512_storeu_si512(dst as *mut _, _mm512_ternarylogic_epi32::<0xD8>(lo, ha, m30));
    _mm512_storeu_si512(dst.add(64) as *mut _, _mm512_ternarylogic_epi32::<0xD8>(hi, hb, m30));
}

/// One q32 tile's weight codes as 8 vectors: `wv[c]` holds elements 4c..4c+4 of the 16 rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q32_codes<const F: u8>(t: *const u8) -> [__m512i; 8] {
    let f = format_of(F);
    let five = F == Q5_0 || F == Q5_1;
    let low4 = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(16);
    let mut wv = [_mm512_setzero_si512(); 8];
    if F == Q8_0 {
        for (i, v) in wv.iter_mut().enumerate() {
            *v = load(t.add(qs_at(f, i)));
        }
    } else {
        for i in 0..4 {
            let v = load(t.add(qs_at(f, i)));
            wv[i] = _mm512_and_si512(v, low4);
            wv[4 + i] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low4);
            if five {
                let mask = |v: usize| (t.add(hb_at(f, v)) as *const u64).read_unaligned();
                wv[i] = _mm512_mask_add_epi8(wv[i], mask(2 * i), wv[i], sixteen);
                wv[4 + i] = _mm512_mask_add_epi8(wv[4 + i], mask(2 * i + 1), wv[4 + i], sixteen);
            }
        }
    }
    wv
}

/// `acc` plus one activation row's products with one q32 tile (block `b`), codes from `q32_codes`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q32_row<const F: u8>(t: *const u8, wv: &[__m512i; 8], a: &Acts, row: usize, b: usize, acc: __m512) -> __m512 {
    let lay = Tile::of(format_of(F));
    let has_min = F == Q4_1 || F == Q5_1;
    let ib = row * (a.k / 32) + b;
    let aq = a.qs.as_ptr().add(row * a.k + 32 * b);
    let mut s = if has_min { _mm512_setzero_si512() } else { _mm512_set1_epi32(*a.bias.get_unchecked(ib)) };
    for (c, v) in wv.iter().enumerate() {
        s = _mm512_dpbusd_epi32(s, *v, bcast_i32(aq.add(4 * c)));
    }
    let dw = load_f16x16(t.add(lay.d));
    let da = _mm512_set1_ps(*a.d.get_unchecked(ib));
    let mut acc = _mm512_fmadd_ps(dw, _mm512_mul_ps(_mm512_cvtepi32_ps(s), da), acc);
    if has_min {
        let mw = load_f16x16(t.add(lay.m));
        acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(*a.s.get_unchecked(ib)), acc);
    }
    acc
}

/// 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q32<const F: u8, const MT: usize>(w: *const u8, blocks: usize, a: &Acts, row0: usize, out: &mut Out) {
    let tb = format_of(F).tile_bytes();
    let mut acc = [_mm512_setzero_ps(); MT];
    let pd = prefetch_distance();
    for b in 0..blocks {
        q32_block::<F, MT>(w.add(b * tb), b, a, row0, &mut acc, pd);
    }
    store(&acc, out);
}

/// One q32 tile (block `b`) against MT activation rows from `row0`, added to `acc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q32_block<const F: u8, const MT: usize>(
    t: *const u8,
    b: usize,
    a: &Acts,
    row0: usize,
    acc: &mut [__m512; MT],
    pd: usize,
) {
    if pd != 0 {
        prefetch_l2(t.wrapping_add(pd), format_of(F).tile_bytes());
    }
    let wv = q32_codes::<F>(t);
    for (j, acc) in acc.iter_mut().enumerate() {
        *acc = q32_row::<F>(t, &wv, a, row0 + j, b, *acc);
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn store<const MT: usize>(acc: &[__m512; MT], out: &mut [[f32; 16]]) {
    for (j, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(out[j].as_mut_ptr(), *acc);
    }
}

/// Decode (one activation row) against two 16-row groups in lockstep, tile by tile: each core
/// then reads two weight streams at once, which its prefetchers keep further ahead than one
/// (docs/PERFORMANCE.md). Each group's arithmetic is exactly `tile`'s.
/// Safety: as `tile`, with `row` an activation row and g0, g1 groups of `w`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub unsafe fn tile_two(w: &PackedMatrix, g0: usize, g1: usize, a: &Acts, row: usize, out: &mut [[f32; 16]; 2]) {
    let (p0, p1, nb) = (w.group_ptr(g0), w.group_ptr(g1), w.blocks());
    let tb = w.format().tile_bytes();
    // The prefetch distance is the core's, so the two streams share it.
    let pd = prefetch_distance() / 2;
    let mut wide = Wide([0; 256]);
    let sm = wide.0.as_mut_ptr();
    macro_rules! lockstep {
        ($blk:ident [$($c:tt),*] $(, $extra:expr)*) => {{
            let mut acc = [[_mm512_setzero_ps(); 1]; 2];
            for b in 0..nb {
                $blk::<$($c,)* 1>(p0.add(b * tb), b, a, row, &mut acc[0] $(, $extra)*, pd);
                $blk::<$($c,)* 1>(p1.add(b * tb), b, a, row, &mut acc[1] $(, $extra)*, pd);
            }
            store(&acc[0], &mut out[..1]);
            store(&acc[1], &mut out[1..]);
        }};
    }
    match w.format() {
        Format::Q4_0 => lockstep!(q32_block[Q4_0]),
        Format::Q4_1 => lockstep!(q32_block[Q4_1]),
        Format::Q5_0 => lockstep!(q32_block[Q5_0]),
        Format::Q5_1 => lockstep!(q32_block[Q5_1]),
        Format::Q8_0 => lockstep!(q32_block[Q8_0]),
        Format::Q4K => lockstep!(q45k_block[false], sm),
        Format::Q5K => lockstep!(q45k_block[true], sm),
        Format::Q6K => lockstep!(q6k_block []),
    }
}

#[repr(align(64))]
struct Wide([u8; 256]);

/// Q4_K (FIVE = false) and Q5_K: 8 sub-blocks of 32 with 6-bit scales and minimums.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q45k<const FIVE: bool, const MT: usize>(w: *const u8, blocks: usize, a: &Acts, row0: usize, out: &mut Out) {
    let tb = if FIVE { Format::Q5K } else { Format::Q4K }.tile_bytes();
    let mut acc = [_mm512_setzero_ps(); MT];
    // Widened scales (bytes 0..128, [sub-block][row]) and minimums (128..256).
    let mut wide = Wide([0; 256]);
    let sm = wide.0.as_mut_ptr();
    let pd = prefetch_distance();
    for b in 0..blocks {
        q45k_block::<FIVE, MT>(w.add(b * tb), b, a, row0, &mut acc, sm, pd);
    }
    store(&acc, out);
}

/// One Q4_K/Q5_K tile (block `b`) against MT activation rows from `row0`, added to `acc`; `sm`
/// is 256 bytes of scratch for the widened scales and minimums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q45k_block<const FIVE: bool, const MT: usize>(
    t: *const u8,
    b: usize,
    a: &Acts,
    row0: usize,
    acc: &mut [__m512; MT],
    sm: *mut u8,
    pd: usize,
) {
    let f = if FIVE { Format::Q5K } else { Format::Q4K };
    let lay = Tile::of(f);
    let tb = f.tile_bytes();
    let k = a.k;
    let low4 = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(16);
    widen_six_bit(t.add(lay.sc), sm);
    widen_six_bit(t.add(lay.mn), sm.add(128));
    let mut tot = [_mm512_setzero_si512(); MT];
    for jj in 0..4 {
        // A quarter of the tile ahead per quarter done: a burst of a whole Q4_K tile's 36
        // requests at once would hold the line-fill buffers the demand loads need.
        if pd != 0 {
            prefetch_l2(t.wrapping_add(pd + jj * tb / 4), tb / 4);
        }
        // Sub-blocks 2jj and 2jj + 1: the low and high nibbles of pieces 8jj..8jj+8, each
        // piece loaded once. Q4_K keeps the high nibble in place (16 x code, still a valid
        // u8 operand) and divides the int32 sum by 16 afterwards, exactly: one op per vector
        // instead of a shift and a mask (the kernel is bound by vector ALU throughput).
        let sc0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(sm.add(32 * jj) as *const __m128i));
        let sc1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(sm.add(32 * jj + 16) as *const __m128i));
        let mut lo = [_mm512_setzero_si512(); 8];
        let mut hi = [_mm512_setzero_si512(); 8];
        for c in 0..8 {
            let i = 8 * jj + c;
            let raw = load(t.add(qs_at(f, i)));
            lo[c] = _mm512_and_si512(raw, low4);
            if FIVE {
                hi[c] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low4);
                let m0 = (t.add(hb_at(f, 2 * i)) as *const u64).read_unaligned();
                let m1 = (t.add(hb_at(f, 2 * i + 1)) as *const u64).read_unaligned();
                lo[c] = _mm512_mask_add_epi8(lo[c], m0, lo[c], sixteen);
                hi[c] = _mm512_mask_add_epi8(hi[c], m1, hi[c], sixteen);
            } else {
                hi[c] = _mm512_andnot_si512(low4, raw);
            }
        }
        for (j, tot) in tot.iter_mut().enumerate() {
            let aq = a.qs.as_ptr().add((row0 + j) * k + 256 * b + 64 * jj);
            let (mut i0, mut i1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for c in 0..8 {
                i0 = _mm512_dpbusd_epi32(i0, lo[c], bcast_i32(aq.add(4 * c)));
                i1 = _mm512_dpbusd_epi32(i1, hi[c], bcast_i32(aq.add(32 + 4 * c)));
            }
            if !FIVE {
                i1 = _mm512_srai_epi32::<4>(i1);
            }
            *tot = _mm512_add_epi32(*tot, _mm512_mullo_epi32(i0, sc0));
            *tot = _mm512_add_epi32(*tot, _mm512_mullo_epi32(i1, sc1));
        }
    }
    let d = load_f16x16(t.add(lay.d));
    let dmin = load_f16x16(t.add(lay.m));
    for (j, acc) in acc.iter_mut().enumerate() {
        let row = row0 + j;
        // sum over sub-blocks of min * sum(codes), two sub-blocks per vpdpwssd.
        let bs = a.bs32.as_ptr().add(row * (k / 32) + 8 * b) as *const i32;
        let mut mins = _mm512_setzero_si512();
        for pair in 0..4 {
            let mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256(sm.add(128 + 32 * pair) as *const __m256i));
            mins = _mm512_dpwssd_epi32(mins, mn, _mm512_set1_epi32(bs.add(pair).read_unaligned()));
        }
        let da = _mm512_set1_ps(*a.d.get_unchecked(row * (k / 256) + b));
        *acc = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(tot[j]), da), *acc);
        *acc = _mm512_fnmadd_ps(dmin, _mm512_mul_ps(_mm512_cvtepi32_ps(mins), da), *acc);
    }
}

/// Q6_K: 16 sub-blocks of 16 with int8 scales; 6-bit codes, offset 32, as `layout::q6k_at` packs them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q6k<const MT: usize>(w: *const u8, blocks: usize, a: &Acts, row0: usize, out: &mut Out) {
    let tb = Format::Q6K.tile_bytes();
    let mut acc = [_mm512_setzero_ps(); MT];
    let pd = prefetch_distance();
    for b in 0..blocks {
        q6k_block::<MT>(w.add(b * tb), b, a, row0, &mut acc, pd);
    }
    store(&acc, out);
}

/// One Q6_K tile (block `b`) against MT activation rows from `row0`, added to `acc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn q6k_block<const MT: usize>(t: *const u8, b: usize, a: &Acts, row0: usize, acc: &mut [__m512; MT], pd: usize) {
    let lay = Tile::of(Format::Q6K);
    let tb = Format::Q6K.tile_bytes();
    let k = a.k;
    let (m3f, m0c, m3c) = (_mm512_set1_epi8(0x3F), _mm512_set1_epi8(0x0C), _mm512_set1_epi8(0x3C));
    let mut tot = [_mm512_setzero_si512(); MT];
    // Quarter q = 2h + cg covers elements 128h + 32tt + 16cg + (0..16) for tt = 0..3, i.e.
    // sub-blocks 8h + 2tt + cg; chunk c = 4cg + c4 of half h.
    for q in 0..4 {
        let (h, cg) = (q / 2, q % 2);
        // codes[c4][tt]: elements 128h + 32tt + 4c .. +4 of the 16 rows.
        let mut codes = [[_mm512_setzero_si512(); 4]; 4];
        for (c4, cv) in codes.iter_mut().enumerate() {
            // A sixteenth of the tile ahead per sixteenth done (see q45k).
            if pd != 0 {
                prefetch_l2(t.wrapping_add(pd + (4 * q + c4) * tb / 16), tb / 16);
            }
            let at = q6k_at(8 * h + 4 * cg + c4);
            let v: [__m512i; 3] = std::array::from_fn(|j| load(t.add(at + 64 * j)));
            for j in 0..3 {
                cv[j] = _mm512_and_si512(v[j], m3f);
            }
            // The fourth code's bit pairs sit at bits 6..7 of each vector; move them to bits
            // 0..1, 2..3 and 4..5 (16-bit shifts: what crosses into the other byte lands where
            // the next select or the final mask drops it). ternlog 0xE4: c ? a : b, bit by bit.
            let (s0, s1, s2) = (_mm512_srli_epi16::<6>(v[0]), _mm512_srli_epi16::<4>(v[1]), _mm512_srli_epi16::<2>(v[2]));
            let hi = _mm512_ternarylogic_epi32::<0xE4>(s1, s2, m0c);
            cv[3] = _mm512_and_si512(_mm512_ternarylogic_epi32::<0xE4>(hi, s0, m3c), m3f);
        }
        for (j, tot) in tot.iter_mut().enumerate() {
            let row = row0 + j;
            let aq = a.qs.as_ptr().add(row * k + 256 * b + 128 * h + 16 * cg);
            let bias = a.bias.as_ptr().add(row * (k / 16) + 16 * b + 8 * h + cg);
            for tt in 0..4 {
                let sub = 8 * h + 2 * tt + cg;
                let mut isum = _mm512_set1_epi32(*bias.add(2 * tt));
                for (c4, cv) in codes.iter().enumerate() {
                    isum = _mm512_dpbusd_epi32(isum, cv[tt], bcast_i32(aq.add(32 * tt + 4 * c4)));
                }
                let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(t.add(lay.sc + 16 * sub) as *const __m128i));
                *tot = _mm512_add_epi32(*tot, _mm512_mullo_epi32(isum, sc));
            }
        }
    }
    let d = load_f16x16(t.add(lay.d));
    for (j, acc) in acc.iter_mut().enumerate() {
        let da = _mm512_set1_ps(*a.d.get_unchecked((row0 + j) * (k / 256) + b));
        *acc = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(tot[j]), da), *acc);
    }
}
