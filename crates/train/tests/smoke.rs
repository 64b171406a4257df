//! End-to-end training smoke tests on a tiny chat model (the 3-layer random nanbeige-tiny weights
//! with the synthetic Nanbeige-style tokenizer and the Nanbeige chat template), seconds each:
//! the loss falls on a learnable task (full and LoRA), an interrupted + resumed run ends with
//! exactly the weights of an uninterrupted one, bad data lines are reported and skipped, the saved
//! directory loads in the engine and gives the trained model's logits, the FG-WSD schedule drives
//! the dataset mixture, and the three distillation modes run.

use candle_core::{DType, Device};
use nanbeige_model::synth::vocab::Vocab;
use nanbeige_train::data;
use nanbeige_train::lora::LoraSpec;
use nanbeige_train::metrics;
use nanbeige_train::sft::{self, SftOptions};
use serde_json::json;
use std::path::Path;

mod common;
use common::{tiny_chat_model, tmp};

fn task() -> ([&'static str; 8], [&'static str; 8]) {
    (
        ["cat", "dog", "sun", "sea", "red", "big", "hot", "low"],
        ["one", "two", "six", "ten", "zero", "four", "five", "nine"],
    )
}

/// A learnable task: the answer to each of 8 words is fixed.
fn task_data(path: &Path, n: usize) {
    let (words, answers) = task();
    let mut s = String::new();
    for i in 0..n {
        let k = i % words.len();
        let line = json!({"messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": words[k]},
            {"role": "assistant", "content": answers[k], "reasoning_content": "r"}]});
        s += &format!("{line}\n");
    }
    std::fs::write(path, s).unwrap();
}

fn opts(model: &Path, data: &Path, out: &Path) -> SftOptions {
    let mut o = SftOptions::new(model.to_path_buf(), Some(data.to_path_buf()), out.to_path_buf());
    o.lr = 3e-3;
    o.batch_tokens = 160;
    o.accum = 2;
    o.schedule = "constant".into();
    o.progress = false;
    o
}

fn tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let m = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut v: Vec<_> = m
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn sft_loss_falls_and_the_saved_model_loads() {
    let d = tmp("falls");
    let model = tiny_chat_model(&d);
    let data = d.join("data.jsonl");
    task_data(&data, 32);
    let out = d.join("out");
    let mut o = opts(&model, &data, &out);
    o.steps = Some(60);
    let s = sft::train(&o).unwrap();
    let losses: Vec<f64> =
        metrics::read_series(&out.join("metrics.jsonl"), "loss").unwrap().iter().map(|p| p.1).collect();
    assert_eq!(losses.len(), 60);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[57..].iter().sum::<f64>() / 3.0;
    eprintln!("loss {first:.3} -> {last:.3}, {:.0} tokens/s", s.tokens_per_sec);
    assert!(last < 0.3 * first, "loss did not fall: {first} -> {last}");
    assert!(std::fs::read_to_string(out.join("loss.svg")).unwrap().contains("<polyline"));

    // The saved directory is a complete HF model that the engine loads, and it computes what the
    // trained model computed: its loss on the data is as low as the end of training.
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let lm = nanbeige_engine::load(&out, &Default::default()).unwrap();
    let (text, tpl) = nanbeige_engine::load::load_text(&out).unwrap();
    let (good, _) = data::load_jsonl(&data, &text, tpl.as_ref().unwrap(), 160).unwrap();
    let mut row = data::Packed::default();
    row.push(&good[0]);
    let logits = lm.model.forward_packed(&row.ids, &row.positions, &row.segments).unwrap();
    let l = nanbeige_train::loss::ce_sum(&logits, &row.targets, &row.weights).unwrap().to_scalar::<f32>().unwrap()
        as f64
        / row.trained() as f64;
    assert!(l < 0.5 * first, "saved model's loss {l} vs initial {first}");
    // Greedy generation through the engine gives the trained answers, in the trained format.
    let (words, answers) = task();
    let mut right = 0;
    for (w, a) in words.iter().zip(answers) {
        let msgs = json!([{"role": "system", "content": "s"}, {"role": "user", "content": w}]);
        let reply =
            nanbeige_train::distill::sample_reply(&lm, &msgs, None, &nanbeige_train::distill::gen_params(12, 0.0, 0))
                .unwrap();
        assert_eq!(reply["reasoning_content"], "r", "{reply}");
        right += usize::from(reply["content"] == a);
    }
    eprintln!("{right}/8 answers right");
    assert!(right >= 7, "{right}/8 answers right");
}

#[test]
fn resume_equals_uninterrupted() {
    let d = tmp("resume");
    let model = tiny_chat_model(&d);
    let data = d.join("data.jsonl");
    task_data(&data, 13);
    for lora in [false, true] {
        let full = d.join(format!("full-{lora}"));
        let parts = d.join(format!("parts-{lora}"));
        let mk = |out: &Path| {
            let mut o = opts(&model, &data, out);
            o.steps = Some(8);
            o.schedule = "cosine".into();
            o.warmup = 2;
            if lora {
                o.lora = Some(LoraSpec::new(4, None, None).unwrap());
            }
            o
        };
        sft::train(&mk(&full)).unwrap();
        let mut a = mk(&parts);
        a.stop_after = Some(3);
        let s = sft::train(&a).unwrap();
        assert_eq!(s.steps, 3);
        assert!(!parts.join("model.safetensors").exists(), "an interrupted run leaves only the checkpoint");
        let mut b = mk(&parts);
        b.resume = true;
        let s = sft::train(&b).unwrap();
        assert_eq!(s.steps, 8);
        let (x, y) = (tensors(&full), tensors(&parts));
        assert_eq!(x.len(), y.len());
        for ((n, a), (_, b)) in x.iter().zip(&y) {
            assert_eq!(a, b, "lora={lora}: {n} differs between resumed and uninterrupted runs");
        }
        let la = metrics::read_series(&full.join("metrics.jsonl"), "loss").unwrap();
        let lb = metrics::read_series(&parts.join("metrics.jsonl"), "loss").unwrap();
        assert_eq!(la, lb, "lora={lora}: loss curves differ");
        // Changing a setting on resume is refused.
        let mut c = mk(&parts);
        c.resume = true;
        c.lr = 1.0;
        assert!(sft::train(&c).is_err());
    }
}

#[test]
fn bad_lines_are_reported_with_line_numbers_and_skipped() {
    let d = tmp("bad");
    let model = tiny_chat_model(&d);
    let (text, tpl) = nanbeige_engine::load::load_text(&model).unwrap();
    let long = "x ".repeat(400);
    let lines = [
        json!({"messages": [{"role": "user", "content": "cat"}, {"role": "assistant", "content": "one"}]}).to_string(),
        "{not json".to_string(),
        json!({"conversation": []}).to_string(),
        json!({"messages": [{"role": "user", "content": "only a question"}]}).to_string(),
        String::new(),
        json!({"messages": [{"role": "user", "content": long}, {"role": "assistant", "content": "ok"}]}).to_string(),
        json!({"messages": [{"content": "no role"}, {"role": "assistant", "content": "x"}]}).to_string(),
        json!({"messages": "nope"}).to_string(),
        "\u{0}\u{1}garbage".to_string(),
        json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "dog"}, {"role": "assistant", "content": "two"}]}).to_string(),
    ];
    let p = d.join("mixed.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    let (good, bad) = data::load_jsonl(&p, &text, tpl.as_ref().unwrap(), 256).unwrap();
    assert_eq!(good.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 10]);
    let got: Vec<(usize, &str)> = bad.iter().map(|b| (b.line, b.reason.as_str())).collect();
    let expect = [
        (2, "invalid JSON"),
        (3, "missing field `messages`"),
        (4, "no assistant message"),
        (6, "too long"),
        (7, "no `role`"),
        (8, "must be an array"),
        (9, "invalid JSON"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:?}");
    for ((l, r), (el, er)) in got.iter().zip(expect) {
        assert_eq!(*l, el);
        assert!(r.contains(er), "line {l}: `{r}` should mention `{er}`");
    }
    // Only assistant tokens are trained: the good example's masked text is the reply.
    let e = &good[0];
    let trained: Vec<u32> = e.ids.iter().zip(&e.mask).filter(|(_, m)| **m).map(|(i, _)| *i).collect();
    let s = text.tokenizer.decode(&trained, false).unwrap();
    assert!(s.contains("one") && !s.contains("cat") && s.contains("<|im_end|>"), "trained text: {s:?}");
}

#[test]
fn fg_wsd_config_drives_the_mixture() {
    let d = tmp("fgwsd");
    let model = tiny_chat_model(&d);
    task_data(&d.join("a.jsonl"), 8);
    // Dataset b: a different fixed answer, so which dataset a row came from is visible.
    let b: String = (0..8)
        .map(|_| format!("{}\n", json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "zzz"}]})))
        .collect();
    std::fs::write(d.join("b.jsonl"), b).unwrap();
    let cfg = json!({"lr": 3e-3, "min_lr": 1e-4, "warmup_steps": 1,
        "datasets": {"a": "a.jsonl", "b": "b.jsonl"},
        "stable": [{"steps": 3, "mix": {"a": 1.0}}],
        "decay": {"steps": 2, "mix": {"b": 1.0}}});
    std::fs::write(d.join("fg.json"), cfg.to_string()).unwrap();
    let out = d.join("out");
    let mut o = opts(&model, Path::new("unused"), &out);
    o.data = None;
    o.schedule = d.join("fg.json").display().to_string();
    let s = sft::train(&o).unwrap();
    assert_eq!(s.steps, 5);
    let phases = metrics::read_series(&out.join("metrics.jsonl"), "phase").unwrap();
    assert_eq!(phases.iter().map(|p| p.1 as usize).collect::<Vec<_>>(), vec![0, 0, 0, 1, 1]);
    let lrs = metrics::read_series(&out.join("metrics.jsonl"), "lr").unwrap();
    assert!((lrs[0].1 - 3e-3).abs() < 1e-12 && (lrs[4].1 - 1e-4).abs() < 1e-12, "{lrs:?}");
}

#[test]
fn distillation_modes_run() {
    let d = tmp("distill");
    let model = tiny_chat_model(&d);
    let data = d.join("data.jsonl");
    task_data(&data, 8);
    // Teacher: the tiny model after SFT; student: the untrained one.
    let teacher = d.join("teacher");
    let mut o = opts(&model, &data, &teacher);
    o.steps = Some(25);
    sft::train(&o).unwrap();

    // Token-level KD pulls the student's distribution toward the teacher's.
    let out = d.join("kd");
    let mut o = opts(&model, &data, &out);
    o.steps = Some(15);
    o.kd = Some(sft::KdOptions { teacher: teacher.clone(), temperature: 1.0, alpha: 1.0 });
    let s = sft::train(&o).unwrap();
    assert!(s.last_loss < 0.5 * s.first_loss, "KL {} -> {}", s.first_loss, s.last_loss);

    // Different vocabularies are refused for token-level KD with a clear message.
    let other = d.join("other-vocab");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json"] {
        std::fs::copy(model.join(f), other.join(f)).unwrap();
    }
    let mut tj = Vocab::new(384).unwrap().tokenizer_json();
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    // Same pieces, two ids swapped: same size, different vocabulary.
    let (a, b) = (vocab["a"].clone(), vocab["b"].clone());
    vocab.insert("a".to_string(), b);
    vocab.insert("b".to_string(), a);
    std::fs::write(other.join("tokenizer.json"), tj.to_string()).unwrap();
    let mut o = opts(&model, &data, &d.join("kd-bad"));
    o.steps = Some(1);
    o.kd = Some(sft::KdOptions { teacher: other, temperature: 1.0, alpha: 1.0 });
    let e = sft::train(&o).err().expect("different vocabularies must be refused");
    assert!(format!("{e:#}").contains("one vocabulary"), "{e:#}");

    // Dual preference distillation: teacher reply preferred over the student's own sample.
    let t = nanbeige_engine::load(&teacher, &Default::default()).unwrap();
    let mut st = sft::load_model(&model, DType::F32, false).unwrap();
    let prompts = nanbeige_train::distill::read_prompts(&data).unwrap();
    let params = nanbeige_train::distill::gen_params(8, 1.0, 1);
    let pairs = nanbeige_train::distill::preference_pairs(&t, &st, &prompts, &params, &d.join("pairs.jsonl")).unwrap();
    assert!(!pairs.is_empty());
    let (text, _) = nanbeige_engine::load::load_text(&model).unwrap();
    let origin = nanbeige_train::checkpoint::Origin { path: model.clone(), text, eos_ids: st.eos_ids.clone() };
    let dpo = nanbeige_train::distill::DpoOptions {
        out: d.join("dpo"),
        steps: 10,
        pairs_per_step: 4,
        lr: 3e-3,
        beta: 0.5,
        nll: 0.0,
        clip: 1.0,
        seed: 0,
        dtype: DType::F32,
    };
    let r = nanbeige_train::distill::train_dpo(&mut st, &origin, &pairs, &dpo).unwrap();
    assert!((r.first_loss - 2f64.ln()).abs() < 1e-3, "DPO starts at ln 2 (policy == reference): {}", r.first_loss);
    assert!(
        r.last_loss < r.first_loss && r.last_accuracy > 0.5,
        "{} -> {}, acc {}",
        r.first_loss,
        r.last_loss,
        r.last_accuracy
    );
    assert!(d.join("dpo/model.safetensors").is_file());

    // RPO: with the chosen reply's NLL added, the chosen replies become more likely, not just
    // more likely than the rejected ones.
    let mut st = sft::load_model(&model, DType::F32, false).unwrap();
    let rpo = nanbeige_train::distill::DpoOptions { out: d.join("rpo"), nll: 1.0, ..dpo };
    let r = nanbeige_train::distill::train_dpo(&mut st, &origin, &pairs, &rpo).unwrap();
    assert!(r.last_chosen_shift > 0.0, "chosen log-prob per token moved by {}", r.last_chosen_shift);
}
