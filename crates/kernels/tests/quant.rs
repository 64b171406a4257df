//! Quantized kernels against plain references (tests/common), for every format on every path this
//! CPU can run (scalar always; AVX2 and AVX-512 VNNI when present), on fresh random inputs of odd
//! sizes. Checked:
//! - the packed layout decodes every row bit-identically to ggml's and candle's dequantization;
//! - activations quantize exactly as ggml's quantize_row_q8_0 / q8_1 / q8_K;
//! - matmul equals ggml's quantized dot product (integer sums, then scales) to f32 rounding, stays
//!   within the bound activation quantization allows of an f32 matmul on the dequantized weights,
//!   and is bit-identical across paths.

mod common;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use common::*;
use nanbeige_kernels::acts::Acts;
use nanbeige_kernels::{matmul_isa, supported_isas, Format, Isa, PackedMatrix};

fn candle_dtype(f: Format) -> GgmlDType {
    match f {
        Format::Q4_0 => GgmlDType::Q4_0,
        Format::Q4_1 => GgmlDType::Q4_1,
        Format::Q5_0 => GgmlDType::Q5_0,
        Format::Q5_1 => GgmlDType::Q5_1,
        Format::Q8_0 => GgmlDType::Q8_0,
        Format::Q4K => GgmlDType::Q4K,
        Format::Q5K => GgmlDType::Q5K,
        Format::Q6K => GgmlDType::Q6K,
    }
}

fn paths() -> Vec<Isa> {
    let v = supported_isas();
    eprintln!("paths under test: {:?}", v);
    v
}

#[test]
fn packed_rows_decode_like_ggml_and_candle() {
    let mut rng = rng("packed_rows_decode_like_ggml_and_candle");
    for f in Format::ALL {
        for (n, blocks) in [(1, 1), (37, 3), (16, 2)] {
            let k = blocks * f.block_len();
            let bytes = random_blocks(&mut rng, f, n, k);
            let w = PackedMatrix::from_gguf(f, n, k, &bytes).unwrap();
            let reference = dequant(f, &bytes, n, k);
            let candle = qtensor_from_ggml(candle_dtype(f), &bytes, vec![n, k], &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut row = vec![0f32; k];
            for r in 0..n {
                w.dequantize_row(r, &mut row);
                for i in 0..k {
                    let (got, want, c) = (row[i], reference[r * k + i], candle[r * k + i]);
                    assert!(
                        got.to_bits() == want.to_bits(),
                        "{} {n}x{k} row {r} elem {i}: packed {got}, ggml {want}",
                        f.name()
                    );
                    assert!(
                        got.to_bits() == c.to_bits(),
                        "{} {n}x{k} row {r} elem {i}: packed {got}, candle {c}",
                        f.name()
                    );
                }
            }
        }
    }
}

/// Ties: values that land exactly on .5 after scaling round away from zero on every path
/// (the AVX-512 path rounds with an add and a truncation, not a rounding instruction).
#[test]
fn activation_ties_round_away_from_zero() {
    // amax 127 makes the scale 1, so each value is its own scaled value.
    let mut x: Vec<f32> = vec![0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.499_999_97, -0.499_999_97, 0.0, -0.0];
    x.extend([3.5, 4.5, -5.5, 100.5, 63.75, -63.25, 7.0, 8.49, 9.51, 10.5, 11.5, 12.5, 13.5, 14.5, 15.5, 16.5]);
    x.extend([17.5, 18.5, 19.5, 127.0]);
    assert_eq!(x.len(), 32);
    let want: Vec<i8> = x.iter().map(|v| v.round() as i8).collect();
    for f in [Format::Q4_0, Format::Q4_1, Format::Q8_0] {
        for isa in paths() {
            let mut a = Acts::default();
            a.quantize(f, &x, 1, 32, isa);
            assert_eq!(&a.qs[..32], &want[..], "{} {}", f.name(), isa.name());
        }
    }
}

/// K-quant activations (Q8_K) at their edges, on every path: ties round half to even, the
/// first value of largest magnitude sets the sign of the scale (here the negative one comes
/// first), an all-zero block, and a block whose largest value is positive.
#[test]
fn kquant_activation_edges_match_ggml() {
    let mut x = vec![0f32; 3 * 256];
    // Block 0: max magnitude 127 (scale 1) first as -127 at index 40, then +127 at 200.
    for (i, v) in x[..256].iter_mut().enumerate() {
        *v = (i as f32 - 128.0) * 0.5; // many exact .5 ties
    }
    x[40] = -127.0;
    x[200] = 127.0;
    // Block 1 stays all zeros. Block 2: positive maximum, ties after scaling by -127/max.
    for (i, v) in x[512..].iter_mut().enumerate() {
        *v = ((i % 17) as f32 - 8.0) * 1.5;
    }
    x[512 + 255] = 254.0;
    let RefActs::Q8K { d, qs, bsums } = ref_quantize(Format::Q6K, &x) else { unreachable!() };
    for f in [Format::Q4K, Format::Q6K] {
        for isa in paths() {
            let mut a = Acts::default();
            a.quantize(f, &x, 1, x.len(), isa);
            let what = format!("{} {}", f.name(), isa.name());
            assert_eq!(&a.qs[..x.len()], &qs[..], "{what}: codes");
            for (b, d) in d.iter().enumerate() {
                assert_eq!(a.d[b].to_bits(), d.to_bits(), "{what}: d of block {b}");
            }
            if f == Format::Q6K {
                for (j, bs) in bsums.iter().enumerate() {
                    assert_eq!(a.bias[j], -32 * bs, "{what}: bias of 16-group {j}");
                }
            } else {
                for j in 0..x.len() / 32 {
                    assert_eq!(a.bs32[j] as i32, bsums[2 * j] + bsums[2 * j + 1], "{what}: sum of 32-group {j}");
                }
            }
        }
    }
    // The reference itself: block 0's maximum is the -127 (first), so the scale -127/max is 1 and
    // each code is x rounded half to even; block 2's is +254, a scale of -1/2.
    assert_eq!((d[0], qs[1], qs[3], qs[40], qs[200]), (1.0, -64, -62, -127, 127));
    assert_eq!((d[1], d[2], qs[512 + 255]), (0.0, -2.0, -127));
}

#[test]
fn activations_quantize_like_ggml() {
    let mut rng = rng("activations_quantize_like_ggml");
    for f in Format::ALL {
        let (m, k) = (3, 3 * f.block_len());
        let x = random_acts(&mut rng, m, k);
        for isa in paths() {
            let mut a = Acts::default();
            a.quantize(f, &x, m, k, isa);
            for row in 0..m {
                let what = format!("{} {} row {row}", f.name(), isa.name());
                let xr = &x[row * k..][..k];
                match ref_quantize(f, xr) {
                    RefActs::Q8 { d, s, qs } => {
                        assert_eq!(&a.qs[row * k..][..k], &qs[..], "{what}: codes");
                        let nb = k / 32;
                        for (b, d) in d.iter().enumerate() {
                            assert_eq!(a.d[row * nb + b].to_bits(), d.to_bits(), "{what}: d of block {b}");
                            let sum: i32 = qs[32 * b..32 * b + 32].iter().map(|&q| q as i32).sum();
                            if matches!(f, Format::Q4_1 | Format::Q5_1) {
                                assert_eq!(a.s[row * nb + b].to_bits(), s[b].to_bits(), "{what}: s of block {b}");
                            } else {
                                assert_eq!(a.bias[row * nb + b], -f.code_offset() * sum, "{what}: bias of block {b}");
                            }
                        }
                    }
                    RefActs::Q8K { d, qs, bsums } => {
                        assert_eq!(&a.qs[row * k..][..k], &qs[..], "{what}: codes");
                        let nb = k / 256;
                        for (b, d) in d.iter().enumerate() {
                            assert_eq!(a.d[row * nb + b].to_bits(), d.to_bits(), "{what}: d of block {b}");
                        }
                        if f == Format::Q6K {
                            for (j, bs) in bsums.iter().enumerate() {
                                assert_eq!(a.bias[row * (k / 16) + j], -32 * bs, "{what}: bias of 16-group {j}");
                            }
                        }
                        if f != Format::Q6K {
                            for j in 0..k / 32 {
                                let want = bsums[2 * j] + bsums[2 * j + 1];
                                assert_eq!(a.bs32[row * (k / 32) + j] as i32, want, "{what}: sum of 32-group {j}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One format, one shape, every path.
fn check_matmul(rng: &mut rand::rngs::StdRng, f: Format, m: usize, n: usize, k: usize) {
    let bytes = random_blocks(rng, f, n, k);
    let x = random_acts(rng, m, k);
    let w = PackedMatrix::from_gguf(f, n, k, &bytes).unwrap();
    let wf = dequant(f, &bytes, n, k);
    let row_bytes = k / f.block_len() * f.gguf_block_bytes();
    let acts: Vec<RefActs> = (0..m).map(|r| ref_quantize(f, &x[r * k..][..k])).collect();
    let mut first: Option<(Isa, Vec<f32>)> = None;
    for isa in supported_isas() {
        let mut y = vec![f32::NAN; m * n];
        matmul_isa(isa, &w, &x, m, &mut y);
        for r in 0..m {
            for c in 0..n {
                let what = format!("{} {} m={m} n={n} k={k} at ({r},{c})", f.name(), isa.name());
                let got = y[r * n + c] as f64;
                let wrow = &bytes[c * row_bytes..][..row_bytes];
                // ggml's quantized dot product.
                let (want, mag) = ref_vec_dot(f, wrow, &acts[r]);
                let tol = 1e-5 * mag + 1e-6;
                assert!((got - want).abs() <= tol, "{what}: {got} vs ggml's {want} (tolerance {tol:.3e})");
                // The f32 matmul on dequantized weights, within the quantization bound.
                let (wr, xr) = (&wf[c * k..][..k], &x[r * k..][..k]);
                let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let bound = quantization_bound(f, wrow, wr, xr);
                assert!((got - exact).abs() <= bound, "{what}: {got} vs f32 {exact}, beyond the bound {bound:.3e}");
            }
        }
        match &first {
            None => first = Some((isa, y)),
            Some((i0, y0)) => {
                for (idx, (a, b)) in y0.iter().zip(&y).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits(),
                        "{} m={m} n={n} k={k}: {} and {} differ at {idx}: {a} vs {b}",
                        f.name(),
                        i0.name(),
                        isa.name()
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_matches_references_on_every_path() {
    let mut rng = rng("matmul_matches_references_on_every_path");
    paths();
    for f in Format::ALL {
        let bl = f.block_len();
        let kb = if f.is_kquant() { 3 } else { 7 };
        // Odd n (short last 16-row group), m covering GEMV, partial and full micro-tiles, and
        // one call spanning several activation chunks.
        for (m, n, k) in [
            (1, 37, kb * bl),
            (1, 16 * 37 + 5, kb * bl),
            (1, 1, bl),
            (3, 19, kb * bl),
            (17, 45, bl),
            (69, 21, kb * bl),
            (300, 33, kb * bl),
        ] {
            check_matmul(&mut rng, f, m, n, k);
        }
    }
}

#[test]
fn packed_tiles_are_no_larger_than_the_file() {
    // Decode is memory-bound: every extra byte of the layout is read once per token.
    for f in Format::ALL {
        assert_eq!(f.tile_bytes(), 16 * f.gguf_block_bytes(), "{}", f.name());
        let (n, k) = (48, 2 * f.block_len());
        let w = PackedMatrix::from_gguf(f, n, k, &vec![0u8; n * k / f.block_len() * f.gguf_block_bytes()]).unwrap();
        assert_eq!(w.size_in_bytes(), (n * k / f.block_len() * f.gguf_block_bytes()).div_ceil(64) * 64, "{}", f.name());
    }
}

#[test]
fn bad_shapes_are_rejected() {
    assert!(PackedMatrix::from_gguf(Format::Q4_0, 2, 48, &[0u8; 2 * 27]).is_err());
    assert!(PackedMatrix::from_gguf(Format::Q4K, 1, 256, &[0u8; 100]).is_err());
    assert!(PackedMatrix::from_gguf(Format::Q8_0, 0, 32, &[]).is_err());
}

#[test]
fn concurrent_callers_get_the_same_results() {
    // Several threads calling at once: one holds the pool, the others fall back to rayon; each
    // has its own activation buffers. Results must equal a lone call's, bit for bit.
    let mut rng = rng("concurrent_callers_get_the_same_results");
    let (n, k) = (70, 512);
    let w = PackedMatrix::from_gguf(Format::Q4K, n, k, &random_blocks(&mut rng, Format::Q4K, n, k)).unwrap();
    let xs: Vec<Vec<f32>> = (0..4).map(|i| random_acts(&mut rng, 1 + 7 * i, k)).collect();
    let want: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| {
            let mut y = vec![0f32; x.len() / k * n];
            nanbeige_kernels::matmul(&w, x, x.len() / k, &mut y);
            y
        })
        .collect();
    std::thread::scope(|s| {
        for (x, want) in xs.iter().zip(&want) {
            let w = &w;
            s.spawn(move || {
                for _ in 0..50 {
                    let mut y = vec![0f32; want.len()];
                    nanbeige_kernels::matmul(w, x, x.len() / k, &mut y);
                    assert!(y.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            });
        }
    });
}

#[test]
fn isa_names_parse() {
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
        assert_eq!(Isa::parse(isa.name()), Some(isa));
    }
    assert_eq!(Isa::parse("AVX512"), Some(Isa::Avx512));
    assert_eq!(Isa::parse("neon"), None);
    assert!(Isa::Scalar.is_supported());
}

/// A row's result must not depend on which other rows share the call: a prompt split across
/// calls (prefix cache, chunked prefill, decode) has to give the same numbers.
#[test]
fn each_row_is_independent_of_the_batch() {
    let mut rng = common::rng("batch_independence");
    for f in Format::ALL {
        let (n, k) = (48, 2 * f.block_len().max(256));
        let w = PackedMatrix::from_gguf(f, n, k, &common::random_blocks(&mut rng, f, n, k)).unwrap();
        for &m in &[2usize, 9, 33] {
            let x = common::random_acts(&mut rng, m, k);
            for isa in nanbeige_kernels::supported_isas() {
                let mut y = vec![0f32; m * n];
                nanbeige_kernels::matmul_isa(isa, &w, &x, m, &mut y);
                for r in [0, m / 2, m - 1] {
                    let mut y1 = vec![0f32; n];
                    nanbeige_kernels::matmul_isa(isa, &w, &x[r * k..(r + 1) * k], 1, &mut y1);
                    assert_eq!(&y[r * n..(r + 1) * n], &y1[..], "{f:?} {isa:?} m={m} row {r}");
                }
            }
        }
    }
}

/// Several matrices on one input (q/k/v, gate/up) in one call give exactly what one call per
/// matrix gives, for every format and path, with matrices of different heights (odd ones too,
/// and one of many groups, so that work items of several sizes cross from matrix to matrix).
#[test]
fn matmul_many_equals_one_call_per_matrix() {
    let mut rng = common::rng("matmul_many");
    for f in Format::ALL {
        let k = 2 * f.block_len().max(64);
        let ns = [16 * 21 + 5, 37usize, 16, 5];
        let ws: Vec<PackedMatrix> = ns
            .iter()
            .map(|&n| PackedMatrix::from_gguf(f, n, k, &common::random_blocks(&mut rng, f, n, k)).unwrap())
            .collect();
        let refs: Vec<&PackedMatrix> = ws.iter().collect();
        for &m in &[1usize, 8, 21] {
            let x = common::random_acts(&mut rng, m, k);
            for isa in nanbeige_kernels::supported_isas() {
                let mut outs: Vec<Vec<f32>> = ns.iter().map(|&n| vec![f32::NAN; m * n]).collect();
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
                nanbeige_kernels::matmul_many_isa(isa, &refs, &x, m, &mut ys);
                for (w, got) in ws.iter().zip(&outs) {
                    let mut want = vec![0f32; m * w.n()];
                    matmul_isa(isa, w, &x, m, &mut want);
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{f:?} {isa:?} m={m} n={}: matmul_many differs from matmul", w.n());
                }
            }
        }
    }
}

/// Decode with two weight streams per core (a work item's groups read in pairs, in lockstep)
/// gives exactly what one stream gives, for every format and path, on matrices whose work items
/// hold several groups (an odd count too, so one group is left unpaired) and a short last group.
#[test]
fn two_decode_streams_equal_one() {
    let mut rng = common::rng("two_decode_streams");
    for f in Format::ALL {
        let k = 3 * f.block_len().max(64);
        for n in [16 * 37 + 5, 16 * 50, 16 * 3] {
            let w = PackedMatrix::from_gguf(f, n, k, &common::random_blocks(&mut rng, f, n, k)).unwrap();
            let x = common::random_acts(&mut rng, 1, k);
            for isa in nanbeige_kernels::supported_isas() {
                let run = |streams| {
                    let mut y = vec![f32::NAN; n];
                    nanbeige_kernels::matmul_streams_isa(isa, streams, &[&w], &x, 1, &mut [&mut y]);
                    y
                };
                let (one, two) = (run(1), run(2));
                let same = one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{f:?} {isa:?} n={n}: two decode streams differ from one");
            }
        }
    }
}
