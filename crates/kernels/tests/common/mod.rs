//! Plain reference implementations for the kernel tests, written from ggml's scalar code
//! (ggml-quants.c: dequantize_row_*, quantize_row_q8_0/q8_1/q8_K, ggml_vec_dot_*_generic) and
//! working on raw GGUF block bytes, independently of the crate's packed layout.
//! Also: random GGUF blocks and activations, with the seed printed so a failure can be replayed
//! (NANBEIGE_TEST_SEED=<seed>).

#![allow(dead_code)]

use half::f16;
use nanbeige_kernels::Format;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(test: &str) -> StdRng {
    let seed =
        std::env::var("NANBEIGE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: NANBEIGE_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Byte offsets of a block's f16 fields.
fn f16_fields(f: Format) -> &'static [usize] {
    match f {
        Format::Q4_0 | Format::Q5_0 | Format::Q8_0 => &[0],
        Format::Q4_1 | Format::Q5_1 | Format::Q4K | Format::Q5K => &[0, 2],
        Format::Q6K => &[208],
    }
}

/// Random GGUF blocks for an n x k matrix: random quant bytes (every bit pattern occurs), finite
/// scales of either sign over two decades.
pub fn random_blocks(rng: &mut StdRng, f: Format, n: usize, k: usize) -> Vec<u8> {
    let bb = f.gguf_block_bytes();
    let blocks = n * k / f.block_len();
    let mut v = vec![0u8; blocks * bb];
    rng.fill(&mut v[..]);
    for b in 0..blocks {
        for &at in f16_fields(f) {
            let mag = 10f32.powf(rng.random_range(-3.0..-1.0));
            let x = if rng.random_bool(0.5) { mag } else { -mag };
            v[b * bb + at..b * bb + at + 2].copy_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
        }
    }
    v
}

/// Random activations: mostly N(0,1)-like, a few large outliers (as real hidden states have), and
/// row 1 (if any) all zeros to exercise the zero-scale path.
pub fn random_acts(rng: &mut StdRng, m: usize, k: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..m * k)
        .map(|_| {
            let u: f32 = (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            if rng.random_bool(0.01) {
                u * 20.0
            } else {
                u
            }
        })
        .collect();
    if m > 1 {
        x[k..2 * k].fill(0.0);
    }
    x
}

fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// ggml's dequantize_row_* for one block.
pub fn dequant_block(f: Format, b: &[u8], y: &mut [f32]) {
    match f {
        Format::Q4_0 => {
            let d = f16_at(b, 0);
            for j in 0..16 {
                y[j] = ((b[2 + j] & 0xF) as i32 - 8) as f32 * d;
                y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        Format::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            for j in 0..16 {
                y[j] = (b[4 + j] & 0xF) as f32 * d + m;
                y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
        }
        Format::Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes(b[2..6].try_into().unwrap());
            for j in 0..16 {
                let xh0 = ((qh >> j) << 4) & 0x10;
                let xh1 = (qh >> (j + 12)) & 0x10;
                y[j] = (((b[6 + j] & 0xF) as u32 | xh0) as i32 - 16) as f32 * d;
                y[j + 16] = (((b[6 + j] >> 4) as u32 | xh1) as i32 - 16) as f32 * d;
            }
        }
        Format::Q5_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
            for j in 0..16 {
                let xh0 = ((qh >> j) << 4) & 0x10;
                let xh1 = (qh >> (j + 12)) & 0x10;
                y[j] = ((b[8 + j] & 0xF) as u32 | xh0) as f32 * d + m;
                y[j + 16] = ((b[8 + j] >> 4) as u32 | xh1) as f32 * d + m;
            }
        }
        Format::Q8_0 => {
            let d = f16_at(b, 0);
            for j in 0..32 {
                y[j] = b[2 + j] as i8 as f32 * d;
            }
        }
        Format::Q4K | Format::Q5K => {
            let five = f == Format::Q5K;
            let (d, min) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let (qh, qs) = if five { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
            let mut out = 0;
            for j in 0..4 {
                let (sc, m) = scale_min_k4(2 * j, scales);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = scale_min_k4(2 * j + 1, scales);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                for l in 0..32 {
                    let hi = if five && qh[l] >> (2 * j) & 1 == 1 { 16 } else { 0 };
                    y[out + l] = d1 * ((qs[32 * j + l] & 0xF) as i32 + hi) as f32 - m1;
                }
                for l in 0..32 {
                    let hi = if five && qh[l] >> (2 * j + 1) & 1 == 1 { 16 } else { 0 };
                    y[out + 32 + l] = d2 * ((qs[32 * j + l] >> 4) as i32 + hi) as f32 - m2;
                }
                out += 64;
            }
        }
        Format::Q6K => {
            let d = f16_at(b, 208);
            for n in 0..2 {
                let (ql, qh, sc) = (&b[64 * n..], &b[128 + 32 * n..], &b[192 + 8 * n..]);
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    let y = &mut y[128 * n..];
                    y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                    y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                    y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                    y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
                }
            }
        }
    }
}

/// The whole matrix dequantized, row-major n x k.
pub fn dequant(f: Format, bytes: &[u8], n: usize, k: usize) -> Vec<f32> {
    let (bl, bb) = (f.block_len(), f.gguf_block_bytes());
    let mut y = vec![0f32; n * k];
    for (blk, out) in bytes.chunks_exact(bb).zip(y.chunks_exact_mut(bl)) {
        dequant_block(f, blk, out);
    }
    y
}

/// A quantized activation row in ggml's own structures.
pub enum RefActs {
    /// Q8_0 / Q8_1: per 32-block (d as f32 from f16, s as f32 from f16, codes).
    Q8 { d: Vec<f32>, s: Vec<f32>, qs: Vec<i8> },
    /// Q8_K: per 256-block d (f32), codes, per-16 sums.
    Q8K { d: Vec<f32>, qs: Vec<i8>, bsums: Vec<i32> },
}

/// ggml quantize_row_q8_0_ref / quantize_row_q8_1_ref (same codes and d; q8_1 adds s).
pub fn ref_quantize_q8(x: &[f32]) -> RefActs {
    let (mut d, mut s, mut qs) = (vec![], vec![], vec![]);
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let dd = amax / 127.0;
        let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
        let mut sum = 0;
        for &v in blk {
            let q = (v * id).round() as i32;
            sum += q;
            qs.push(q as i8);
        }
        d.push(f16::from_f32(dd).to_f32());
        s.push(f16::from_f32(sum as f32 * dd).to_f32());
    }
    RefActs::Q8 { d, s, qs }
}

/// ggml's nearest_int: round half to even via the 1.5*2^23 trick.
fn nearest_int(v: f32) -> i32 {
    let val = v + 12582912.0;
    (val.to_bits() as i32 & 0x007fffff) - 0x00400000
}

/// ggml quantize_row_q8_K_ref.
pub fn ref_quantize_q8k(x: &[f32]) -> RefActs {
    let (mut d, mut qs, mut bsums) = (vec![], vec![], vec![]);
    for blk in x.chunks_exact(256) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in blk {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            d.push(0.0);
            qs.extend(std::iter::repeat_n(0i8, 256));
            bsums.extend(std::iter::repeat_n(0, 16));
            continue;
        }
        let iscale = -127.0 / max;
        let start = qs.len();
        for &v in blk {
            qs.push(nearest_int(iscale * v).min(127) as i8);
        }
        for j in 0..16 {
            bsums.push(qs[start + 16 * j..start + 16 * j + 16].iter().map(|&q| q as i32).sum());
        }
        d.push(1.0 / iscale);
    }
    RefActs::Q8K { d, qs, bsums }
}

pub fn ref_quantize(f: Format, x: &[f32]) -> RefActs {
    if f.is_kquant() {
        ref_quantize_q8k(x)
    } else {
        ref_quantize_q8(x)
    }
}

/// ggml's quantized dot product of one weight row (raw blocks) with one quantized activation row
/// (ggml_vec_dot_<f>_q8_<...>_generic), in f64 so only the kernel's f32 rounding differs.
/// Also returns the sum of the magnitudes of the per-block float terms (a scale for tolerances).
pub fn ref_vec_dot(f: Format, row: &[u8], a: &RefActs) -> (f64, f64) {
    let bb = f.gguf_block_bytes();
    let (mut sum, mut mag) = (0f64, 0f64);
    for (ib, b) in row.chunks_exact(bb).enumerate() {
        let term: f64 = match (f, a) {
            (Format::Q4_0 | Format::Q5_0 | Format::Q8_0, RefActs::Q8 { d, qs, .. }) => {
                let codes = codes_32(f, b);
                let isum: i32 = (0..32).map(|i| codes[i] * qs[32 * ib + i] as i32).sum();
                isum as f64 * f16_at(b, 0) as f64 * d[ib] as f64
            }
            (Format::Q4_1 | Format::Q5_1, RefActs::Q8 { d, s, qs }) => {
                let codes = codes_32(f, b);
                let isum: i32 = (0..32).map(|i| codes[i] * qs[32 * ib + i] as i32).sum();
                let t1 = isum as f64 * f16_at(b, 0) as f64 * d[ib] as f64;
                let t2 = f16_at(b, 2) as f64 * s[ib] as f64;
                mag += t1.abs() + t2.abs();
                t1 + t2
            }
            (Format::Q4K | Format::Q5K, RefActs::Q8K { d, qs, bsums }) => {
                let (dd, dmin) = (f16_at(b, 0) as f64, f16_at(b, 2) as f64);
                let scales = &b[4..16];
                let codes = codes_k(f, b);
                let (mut tot, mut mins) = (0i64, 0i64);
                for s in 0..8 {
                    let (sc, m) = scale_min_k4(s, scales);
                    let isum: i32 = (0..32).map(|i| codes[32 * s + i] * qs[256 * ib + 32 * s + i] as i32).sum();
                    tot += sc as i64 * isum as i64;
                    mins += m as i64 * (bsums[16 * ib + 2 * s] + bsums[16 * ib + 2 * s + 1]) as i64;
                }
                let t1 = dd * d[ib] as f64 * tot as f64;
                let t2 = dmin * d[ib] as f64 * mins as f64;
                mag += t1.abs() + t2.abs();
                t1 - t2
            }
            (Format::Q6K, RefActs::Q8K { d, qs, .. }) => {
                let codes = codes_k(f, b);
                let mut tot = 0i64;
                for s in 0..16 {
                    let isum: i32 = (0..16).map(|i| codes[16 * s + i] * qs[256 * ib + 16 * s + i] as i32).sum();
                    tot += b[192 + s] as i8 as i64 * isum as i64;
                }
                f16_at(b, 208) as f64 * d[ib] as f64 * tot as f64
            }
            _ => unreachable!("activation type does not match the format"),
        };
        if !matches!(f, Format::Q4_1 | Format::Q5_1 | Format::Q4K | Format::Q5K) {
            mag += term.abs();
        }
        sum += term;
    }
    (sum, mag)
}

/// Signed integer codes of a 32-element block (Q4_0: q-8, Q5_0: q-16, Q8_0: q; Q4_1/Q5_1: q).
fn codes_32(f: Format, b: &[u8]) -> [i32; 32] {
    let mut c = [0i32; 32];
    let (qs, qh, off) = match f {
        Format::Q4_0 => (&b[2..18], None, 8),
        Format::Q4_1 => (&b[4..20], None, 0),
        Format::Q5_0 => (&b[6..22], Some(u32::from_le_bytes(b[2..6].try_into().unwrap())), 16),
        Format::Q5_1 => (&b[8..24], Some(u32::from_le_bytes(b[4..8].try_into().unwrap())), 0),
        Format::Q8_0 => {
            for (i, c) in c.iter_mut().enumerate() {
                *c = b[2 + i] as i8 as i32;
            }
            return c;
        }
        _ => unreachable!(),
    };
    for j in 0..16 {
        let (mut lo, mut hi) = ((qs[j] & 0xF) as i32, (qs[j] >> 4) as i32);
        if let Some(qh) = qh {
            lo |= (((qh >> j) & 1) << 4) as i32;
            hi |= (((qh >> (j + 16)) & 1) << 4) as i32;
        }
        c[j] = lo - off;
        c[j + 16] = hi - off;
    }
    c
}

/// Integer codes of a K-quant super-block in element order (Q4_K/Q5_K: q; Q6_K: q-32).
fn codes_k(f: Format, b: &[u8]) -> [i32; 256] {
    let mut c = [0i32; 256];
    match f {
        Format::Q4K | Format::Q5K => {
            let five = f == Format::Q5K;
            let (qh, qs) = if five { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
            for j in 0..4 {
                for l in 0..32 {
                    let h0 = if five { ((qh[l] >> (2 * j)) & 1) as i32 * 16 } else { 0 };
                    let h1 = if five { ((qh[l] >> (2 * j + 1)) & 1) as i32 * 16 } else { 0 };
                    c[64 * j + l] = (qs[32 * j + l] & 0xF) as i32 + h0;
                    c[64 * j + 32 + l] = (qs[32 * j + l] >> 4) as i32 + h1;
                }
            }
        }
        Format::Q6K => {
            for n in 0..2 {
                let (ql, qh) = (&b[64 * n..], &b[128 + 32 * n..]);
                for l in 0..32 {
                    c[128 * n + l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    c[128 * n + l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    c[128 * n + l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    c[128 * n + l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                }
            }
        }
        _ => unreachable!(),
    }
    c
}

/// The bound on |quantized result - f32 result| that int8 activation quantization allows.
///
/// For the 32-element formats each activation becomes code * d16 with code = round(x/d),
/// d = amax/127 and d16 = d rounded to f16: |code*d16 - x| <= d/2 + 127*d*2^-11 (= 0.562 d).
/// Q4_1/Q5_1 use s = f16(d * sum(codes)) in place of the sum of the activations, which adds
/// |m| * (32 * 0.562 d + 2^-10 * d * |sum(codes)|), and |d_w q| <= |w| + |m| another 32 |m| e. For Q8_K, d is exact f32 and codes are
/// nearest_int(x/d): |code*d - x| <= d/2. Each weight multiplies its activation's error, so the
/// bound is sum_i |w_i| * e_block(i) (+ the min term), plus 1e-5 of sum |w_i x_i| for the f32
/// rounding of two different summation orders.
pub fn quantization_bound(f: Format, row: &[u8], w: &[f32], x: &[f32]) -> f64 {
    let bl = f.block_len();
    let bb = f.gguf_block_bytes();
    let mut bound = 0f64;
    for (ib, (xb, wb)) in x.chunks_exact(bl).zip(w.chunks_exact(bl)).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let sabs: f64 = wb.iter().map(|&v| v.abs() as f64).sum();
        if f.is_kquant() {
            bound += sabs * amax / 127.0 * 0.5 * (1.0 + 1e-5);
        } else {
            let d = amax / 127.0;
            let e = d * (0.5 + 127.0 / 2048.0) * (1.0 + 1e-5);
            bound += sabs * e;
            if matches!(f, Format::Q4_1 | Format::Q5_1) {
                let m = f16_at(&row[ib * bb..], 2).abs() as f64;
                // |d_w q| <= |w| + |m| for the first term, then the error of s.
                bound += m * (64.0 * e + d * 32.0 * 127.0 / 1024.0);
            }
        }
    }
    let scale: f64 = w.iter().zip(x).map(|(&w, &x)| (w as f64 * x as f64).abs()).sum();
    bound + 1e-5 * scale + 1e-6
}
