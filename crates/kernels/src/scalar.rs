//! Portable micro-kernel: one packed 16-row group against up to `MT_MAX` quantized activation rows,
//! written as plainly as possible. It is the fallback on CPUs without AVX2 and the reference the
//! SIMD kernels are tested against: they compute the same int32 block sums and then the same float
//! operations in the same order (one fused multiply-add per step), so all paths agree bit for bit.

use crate::acts::Acts;
use crate::gemm::{Out, MT_MAX};
use crate::layout::{kquant_scale_min, tile_f16, unpack_block, Format, PackedMatrix, Tile, QK_K, ROWS};

fn idot(w: &[i8], a: &[i8]) -> i32 {
    w.iter().zip(a).map(|(&w, &a)| w as i32 * a as i32).sum()
}

/// out[j][r] = row `row0 + j` of the activations . weight row 16g + r, for j < mt.
pub fn tile(w: &PackedMatrix, g: usize, a: &Acts, row0: usize, mt: usize, out: &mut Out) {
    debug_assert!(mt <= MT_MAX);
    let f = w.format();
    let (k, bl) = (w.k(), f.block_len());
    let lay = Tile::of(f);
    let nd = a.d_per_row();
    let mut acc = [[0f32; ROWS]; MT_MAX];
    let mut q = [[0i8; QK_K]; ROWS];
    for b in 0..w.blocks() {
        let t = w.tile(g, b);
        for (r, q) in q.iter_mut().enumerate() {
            unpack_block(f, t, r, &mut q[..bl]);
        }
        for (j, acc) in acc.iter_mut().enumerate().take(mt) {
            let row = row0 + j;
            let aq = &a.qs[row * k + b * bl..][..bl];
            let da = a.d[row * nd + b];
            for r in 0..ROWS {
                let q = &q[r][..bl];
                match f {
                    Format::Q4_0 | Format::Q5_0 | Format::Q8_0 => {
                        let isum = idot(q, aq);
                        acc[r] = tile_f16(t, lay.d, r).mul_add(isum as f32 * da, acc[r]);
                    }
                    Format::Q4_1 | Format::Q5_1 => {
                        let isum = idot(q, aq);
                        acc[r] = tile_f16(t, lay.d, r).mul_add(isum as f32 * da, acc[r]);
                        acc[r] = tile_f16(t, lay.m, r).mul_add(a.s[row * (k / 32) + b], acc[r]);
                    }
                    Format::Q4K | Format::Q5K => {
                        let (mut tot, mut mins) = (0i32, 0i32);
                        for s in 0..8 {
                            let (sc, mn) = kquant_scale_min(t, r, s);
                            tot += sc as i32 * idot(&q[32 * s..][..32], &aq[32 * s..][..32]);
                            mins += mn as i32 * a.bs32[row * (k / 32) + 8 * b + s] as i32;
                        }
                        acc[r] = tile_f16(t, lay.d, r).mul_add(tot as f32 * da, acc[r]);
                        acc[r] = (-tile_f16(t, lay.m, r)).mul_add(mins as f32 * da, acc[r]);
                    }
                    Format::Q6K => {
                        let mut tot = 0i32;
                        for s in 0..16 {
                            let sc = t[lay.sc + ROWS * s + r] as i8;
                            tot += sc as i32 * idot(&q[16 * s..][..16], &aq[16 * s..][..16]);
                        }
                        acc[r] = tile_f16(t, lay.d, r).mul_add(tot as f32 * da, acc[r]);
                    }
                }
            }
        }
    }
    out[..mt].copy_from_slice(&acc[..mt]);
}
