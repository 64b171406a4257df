//! Gradient correctness of the differentiable model path on tiny random models:
//! - against PyTorch: loss, every parameter's gradient (norm and first/last values) and one AdamW
//!   step, for the same weights and batch (fixture from scripts/reference/make_train_fixture.py;
//!   PyTorch runs the two sequences separately, we pack them into one row);
//! - against finite differences, for full weights and LoRA adapters;
//! - packing: a packed row gives each sequence exactly the logits it gets alone.

use candle_core::{Device, Tensor, Var};
use nanbeige_model::{Config, Llama, LoadOptions};
use nanbeige_train::data::{Example, Packed};
use nanbeige_train::loss;
use nanbeige_train::optim::{AdamW, GradAccum};
use serde_json::Value;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(name: &str) -> Llama {
    let dir = root().join("tests/fixtures/tiny").join(name);
    let cfg = Config::from_hf_file(&dir.join("config.json")).unwrap();
    Llama::load_safetensors(cfg, &dir, LoadOptions { progress: false, ..Default::default() }).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The fixture's two sequences packed into one row.
fn packed_batch(r: &Value) -> Packed {
    let mut row = Packed::default();
    for (s, m) in r["seqs"].as_array().unwrap().iter().zip(r["masks"].as_array().unwrap()) {
        let mask: Vec<bool> = u32s(m).iter().map(|&x| x == 1).collect();
        row.push(&Example { ids: u32s(s), mask, line: 0 });
    }
    row
}

fn mean_loss(model: &Llama, row: &Packed) -> Tensor {
    let logits = model.forward_packed(&row.ids, &row.positions, &row.segments).unwrap();
    (loss::ce_sum(&logits, &row.targets, &row.weights).unwrap() / row.trained() as f64).unwrap()
}

fn check_against_torch(name: &str) {
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/train/grads.json")).unwrap())
            .unwrap();
    let r = &fx[name];
    let mut model = load(name);
    let vars = model.trainable_vars().unwrap();
    let row = packed_batch(r);
    let l = mean_loss(&model, &row);
    let lv = l.to_scalar::<f32>().unwrap() as f64;
    let want = r["loss"].as_f64().unwrap();
    assert!((lv - want).abs() < 1e-5 * want.abs(), "{name}: loss {lv} vs torch {want}");
    let store = l.backward().unwrap();
    let tg = r["grads"].as_object().unwrap();
    assert_eq!(tg.len(), vars.len(), "{name}: same parameter set as torch");
    let mut worst = 0f64;
    for (pname, var) in &vars {
        let t = tg.get(pname).unwrap_or_else(|| panic!("{name}: torch has no parameter {pname}"));
        let g = store.get(var.as_tensor()).unwrap_or_else(|| panic!("{pname}: no gradient")).flatten_all().unwrap();
        let g = g.to_vec1::<f32>().unwrap();
        let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let tn = t["norm"].as_f64().unwrap();
        let rel = (norm - tn).abs() / tn.max(1e-12);
        worst = worst.max(rel);
        assert!(rel < 1e-4, "{name} {pname}: grad norm {norm} vs torch {tn}");
        // Element values, scaled by the tensor's typical gradient size.
        let scale = tn / (g.len() as f64).sqrt();
        let (head, tail) = (f32s(&t["head"]), f32s(&t["tail"]));
        for (a, b) in g[..8.min(g.len())].iter().zip(&head).chain(g[g.len().saturating_sub(8)..].iter().zip(&tail)) {
            assert!(((a - b).abs() as f64) < 1e-3 * scale + 1e-7, "{name} {pname}: grad {a} vs torch {b}");
        }
    }
    eprintln!("{name}: loss {lv} (torch {want}), worst relative grad-norm difference {worst:.2e}");

    // One AdamW step from these gradients matches torch.optim.AdamW.
    let ad = &r["adamw"];
    let mut opt = AdamW::new(vars.clone(), ad["weight_decay"].as_f64().unwrap()).unwrap();
    let mut acc = GradAccum::new(&opt);
    acc.add(&opt, &store).unwrap();
    opt.step(&acc.grads, ad["lr"].as_f64().unwrap()).unwrap();
    for (pname, var) in &vars {
        let got = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = f32s(&ad["after"][pname]["head"]);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 2e-5, "{name} {pname} after AdamW: {a} vs torch {b}");
        }
    }
}

#[test]
fn loss_gradients_and_adamw_match_pytorch_untied_gqa() {
    check_against_torch("nanbeige-tiny");
}

#[test]
fn loss_gradients_and_adamw_match_pytorch_tied_with_bias() {
    check_against_torch("qwen2-tiny");
}

/// A deterministic pseudo-random direction with unit RMS.
fn direction(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 1.732
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Directional derivative check: (L(w + eps d) - L(w - eps d)) / (2 eps) against <grad, d>, for
/// every parameter tensor separately (each with its own direction, scaled to the tensor's RMS so
/// eps is a relative perturbation).
fn finite_differences(model: &Llama, vars: &[(String, Var)], row: &Packed, eps: f64, tol: f64) {
    let l = mean_loss(model, row);
    let store = l.backward().unwrap();
    for (i, (name, var)) in vars.iter().enumerate() {
        let w0 = var.as_tensor().copy().unwrap();
        let rms = w0.sqr().unwrap().mean_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap().max(1e-3) as f64;
        let d = (direction(var.dims(), 1000 + i as u64) * rms).unwrap();
        let g = store.get(var.as_tensor()).unwrap();
        let analytic = (g * &d).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        var.set(&(&w0 + (&d * eps).unwrap()).unwrap()).unwrap();
        let lp = mean_loss(model, row).to_scalar::<f32>().unwrap() as f64;
        var.set(&(&w0 - (&d * eps).unwrap()).unwrap()).unwrap();
        let lm = mean_loss(model, row).to_scalar::<f32>().unwrap() as f64;
        var.set(&w0).unwrap();
        let numeric = (lp - lm) / (2.0 * eps);
        let err = (numeric - analytic).abs();
        eprintln!("{name}: <grad, d> {analytic:.6} finite difference {numeric:.6}");
        assert!(
            err <= tol * analytic.abs().max(numeric.abs()) + 2e-3,
            "{name}: finite difference {numeric} vs gradient {analytic}"
        );
    }
}

fn fd_batch(vocab: u32) -> Packed {
    let mut row = Packed::default();
    for (seg, n) in [(0u32, 11usize), (1, 7)] {
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 37 + seg * 101 + 5) % vocab).collect();
        let mask: Vec<bool> = (0..n).map(|i| i > 2).collect();
        row.push(&Example { ids, mask, line: 0 });
    }
    row
}

#[test]
fn full_gradients_match_finite_differences() {
    for name in ["nanbeige-tiny", "qwen2-tiny"] {
        let mut model = load(name);
        let vars = model.trainable_vars().unwrap();
        let row = fd_batch(model.cfg.vocab_size as u32);
        finite_differences(&model, &vars, &row, 1e-2, 2e-2);
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    let mut model = load("nanbeige-tiny");
    let vars = model.add_lora(4, 8.0, &["q_proj", "v_proj", "down_proj"], 3).unwrap();
    // B starts at zero, so the loss does not depend on A yet: move B off zero first.
    for (i, (n, v)) in vars.iter().enumerate() {
        if n.ends_with("lora_B") {
            v.set(&(direction(v.dims(), 77 + i as u64) * 0.05).unwrap()).unwrap();
        }
    }
    let row = fd_batch(model.cfg.vocab_size as u32);
    finite_differences(&model, &vars, &row, 1e-2, 2e-2);
}

#[test]
fn packed_row_equals_separate_sequences() {
    let model = load("nanbeige-tiny");
    let a: Vec<u32> = (0..9).map(|i| (i * 13 + 4) % 384).collect();
    let b: Vec<u32> = (0..6).map(|i| (i * 29 + 8) % 384).collect();
    let mut row = Packed::default();
    row.push(&Example { ids: a.clone(), mask: vec![true; 9], line: 0 });
    row.push(&Example { ids: b.clone(), mask: vec![true; 6], line: 0 });
    let packed = model.forward_packed(&row.ids, &row.positions, &row.segments).unwrap().squeeze(0).unwrap();
    let alone = |ids: &[u32]| {
        let t = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        model.forward(&t, None).unwrap().squeeze(0).unwrap()
    };
    let want = Tensor::cat(&[alone(&a), alone(&b)], 0).unwrap();
    let diff = (packed - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "packed vs separate: {diff}");
}
