//! bf16 / f16 weight kernels against an f64 dot product of the widened weights, on every path this
//! CPU can run, with odd sizes (k not a multiple of any vector width, n not a multiple of 4).
//! Tolerance: the kernels multiply exactly (a half-precision weight times an f32 is exact in f32
//! FMA) and only round when accumulating, so |error| <= k * 2^-24 * sum |w x| (the standard bound
//! for a length-k f32 sum), plus a denormal floor.

mod common;

use half::{bf16, f16};
use nanbeige_kernels::{matmul_float_isa, supported_isas, FloatWeights};
use rand::Rng;

#[test]
fn half_weights_match_f64_on_every_path() {
    let mut rng = common::rng("half_weights_match_f64_on_every_path");
    for (m, n, k) in [(1, 1, 1), (1, 37, 100), (1, 16 * 23 + 5, 40), (3, 5, 17), (17, 9, 333), (69, 6, 64), (130, 7, 48)] {
        let wf: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let x = common::random_acts(&mut rng, m, k);
        let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        for isa in supported_isas() {
            for (name, w) in [("bf16", FloatWeights::Bf16(&wb)), ("f16", FloatWeights::F16(&wh))] {
                let mut y = vec![f32::NAN; m * n];
                matmul_float_isa(isa, w, n, k, &x, m, &mut y);
                for r in 0..m {
                    for c in 0..n {
                        let (mut want, mut mag) = (0f64, 0f64);
                        for i in 0..k {
                            let wv = match w {
                                FloatWeights::Bf16(w) => w[c * k + i].to_f64(),
                                FloatWeights::F16(w) => w[c * k + i].to_f64(),
                            };
                            want += wv * x[r * k + i] as f64;
                            mag += (wv * x[r * k + i] as f64).abs();
                        }
                        let got = y[r * n + c] as f64;
                        let tol = k as f64 * 2f64.powi(-24) * mag + 1e-30;
                        assert!(
                            (got - want).abs() <= tol,
                            "{name} {} m={m} n={n} k={k} at ({r},{c}): {got} vs {want} (tolerance {tol:.3e})",
                            isa.name()
                        );
                    }
                }
            }
        }
    }
}
