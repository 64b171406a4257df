//! RL smoke on the tiny chat model (seconds): with a trivial reward (the share of the letter `e`
//! in the reply) GRPO raises the mean reward; the run writes its metrics, plots and a model the
//! engine loads. Also the pass-rate filter: groups with no signal are dropped, not trained on.

use nanbeige_eval::backend::Reply;
use nanbeige_eval::items::{self, Item, Kind};
use nanbeige_model::synth::vocab::Vocab;
use nanbeige_train::checkpoint::Origin;
use nanbeige_train::grpo::{self, GrpoOptions, Sampler};
use nanbeige_train::rewards::{GroupReward, Scored, Verifiable};
use serde_json::json;
use std::path::Path;

mod common;
use common::tiny_chat_model;

/// Reward: the share of characters of the reply that are `e`.
struct LetterE;
impl GroupReward for LetterE {
    fn score(&self, _item: &Item, replies: &[Reply]) -> anyhow::Result<Vec<Scored>> {
        Ok(replies
            .iter()
            .map(|r| {
                let n = r.text.chars().count().max(1) as f64;
                let e = r.text.chars().filter(|&c| c == 'e').count() as f64;
                Scored { reward: e / n, passed: false, extra: json!({}) }
            })
            .collect())
    }
    fn has_pass(&self) -> bool {
        false
    }
}

fn options(out: &Path, steps: u64) -> GrpoOptions {
    GrpoOptions {
        steps,
        prompts_per_step: 2,
        group: 6,
        max_tokens: 12,
        mask_overlong: false,
        batch_tokens: 256,
        rollout_batch: 12,
        quiet: true,
        ..GrpoOptions::for_offline(out.to_path_buf(), 3e-3, 3)
    }
}

/// GRPO with `LetterE` on four prompts for 30 steps: the mean reward of the first and last 5.
fn letter_e_run(d: &Path, o: GrpoOptions) -> (f64, f64, nanbeige_engine::LoadedModel) {
    let model = tiny_chat_model(d);
    let items: Vec<Item> = ["cat", "dog", "sun", "sea"]
        .iter()
        .map(|w| items::item(&json!({"question": w, "answer": "1"}), Kind::Math).unwrap())
        .collect();
    let mut lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let (text, _) = nanbeige_engine::load::load_text(&model).unwrap();
    let origin = Origin { path: model.clone(), text, eos_ids: lm.eos_ids.clone() };
    grpo::train(&mut lm, None, &origin, &items, &LetterE, Sampler::Local, &o).unwrap();
    let log: Vec<serde_json::Value> = std::fs::read_to_string(o.out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 30);
    // Every scored reply is logged, and the step's mean reward is theirs.
    let groups: Vec<serde_json::Value> = std::fs::read_to_string(o.out.join("rollouts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(groups.len(), 30 * o.prompts_per_step);
    for (step, rec) in log.iter().enumerate() {
        let rs: Vec<f64> = groups
            .iter()
            .filter(|g| g["step"] == step)
            .flat_map(|g| g["replies"].as_array().unwrap().iter().map(|r| r["reward"].as_f64().unwrap()))
            .collect();
        assert_eq!(rs.len(), o.prompts_per_step * o.group);
        let m = rs.iter().sum::<f64>() / rs.len() as f64;
        assert!((m - rec["reward"].as_f64().unwrap()).abs() < 1e-9, "step {step}: {m} vs {}", rec["reward"]);
    }
    let mean = |r: &[serde_json::Value]| r.iter().map(|x| x["reward"].as_f64().unwrap()).sum::<f64>() / r.len() as f64;
    (mean(&log[..5]), mean(&log[25..]), lm)
}

#[test]
fn grpo_raises_a_trivial_reward() {
    let d = common::tmp("rl");
    let out = d.join("out");
    let (first, last, lm) = letter_e_run(&d, options(&out, 30));
    assert!(last > first + 0.1 && last > 2.0 * first, "reward {first:.3} -> {last:.3}");
    for f in ["reward.svg", "length.svg", "model.safetensors", "config.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The saved policy loads in the engine and still prefers `e`.
    let trained = nanbeige_engine::load(&out, &Default::default()).unwrap();
    assert_eq!(trained.model.cfg.vocab_size, lm.model.cfg.vocab_size);
    std::fs::remove_dir_all(&d).unwrap();
}

/// The same with LoRA adapters (rank 4): rollouts go through the adapters, so the reward rises,
/// and the saved model (the merged weights) loads.
#[test]
fn grpo_with_lora_raises_a_trivial_reward() {
    let d = common::tmp("rl-lora");
    let out = d.join("out");
    let o = GrpoOptions {
        lora: Some(nanbeige_train::lora::LoraSpec::new(4, None, None).unwrap()),
        lr: 1e-2,
        ..options(&out, 30)
    };
    let (first, last, _) = letter_e_run(&d, o);
    assert!(last > first + 0.1 && last > 2.0 * first, "reward {first:.3} -> {last:.3}");
    let trained = nanbeige_engine::load(&out, &Default::default()).unwrap();
    assert!(trained.model.cfg.vocab_size > 0);
    std::fs::remove_dir_all(&d).unwrap();
}

/// All replies equally good: every group is filtered out and the weights do not move.
struct Constant;
impl GroupReward for Constant {
    fn score(&self, _item: &Item, replies: &[Reply]) -> anyhow::Result<Vec<Scored>> {
        Ok(replies.iter().map(|_| Scored { reward: 1.0, passed: true, extra: json!({}) }).collect())
    }
}

#[test]
fn groups_without_signal_are_dropped() {
    let d = std::env::temp_dir().join(format!("nanbeige-rl-flat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let model = tiny_chat_model(&d);
    let items = vec![items::item(&json!({"question": "cat", "answer": "1"}), Kind::Math).unwrap()];
    let mut lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let (text, _) = nanbeige_engine::load::load_text(&model).unwrap();
    let origin = Origin { path: model.clone(), text, eos_ids: lm.eos_ids.clone() };
    let out = d.join("out");
    grpo::train(&mut lm, None, &origin, &items, &Constant, Sampler::Local, &options(&out, 2)).unwrap();
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["groups_kept"], 0);
        assert_eq!(v["trained_tokens"], 0.0);
        assert_eq!(v["pass_rate"], 1.0);
    }
    let before = candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let after = candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let w = "model.layers.0.mlp.down_proj.weight";
    let diff = (&before[w] - &after[w]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0, "no update without signal");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A reward model learns a preference (replies naming the right animal sound over a wrong one),
/// saves, loads back, and its pair-wise win rates rank a group the same way.
#[test]
fn reward_model_learns_pairs_and_ranks_groups() {
    use nanbeige_train::rewards::Pairwise;
    use nanbeige_train::rm::{self, RewardModel, RmOptions};
    let d = std::env::temp_dir().join(format!("nanbeige-rm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let model = tiny_chat_model(&d);
    let sounds = [("cat", "meow", "moo"), ("dog", "woof", "meow"), ("cow", "moo", "woof")];
    let mut lines = String::new();
    for i in 0..24 {
        let (a, good, bad) = sounds[i % 3];
        lines += &format!("{}\n", json!({"prompt": format!("{a} says?"), "chosen": good, "rejected": bad}));
    }
    lines += "{not json\n";
    std::fs::write(d.join("pairs.jsonl"), lines).unwrap();
    let recs = rm::read_pairs(&d.join("pairs.jsonl")).unwrap();
    assert_eq!(recs.len(), 24, "the bad line is skipped");
    let lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let pairs = rm::tokenize_pairs(&lm, &recs);
    let (text, _) = nanbeige_engine::load::load_text(&model).unwrap();
    let origin = Origin { path: model.clone(), text, eos_ids: lm.eos_ids.clone() };
    let mut rmodel = RewardModel::new(lm).unwrap();
    assert_eq!(rm::accuracy(&rmodel, &pairs).unwrap(), 0.0, "a zero head ties every pair");
    let out = d.join("rm");
    let o = RmOptions { out: out.clone(), steps: 30, pairs_per_step: 4, lr: 1e-3, clip: 1.0, seed: 1, quiet: true };
    let s = rm::train_rm(&mut rmodel, &origin, &pairs, &o).unwrap();
    assert!(s.last_loss < 0.3 * s.first_loss, "{} -> {}", s.first_loss, s.last_loss);
    assert_eq!(s.train_accuracy, 1.0);
    let loaded = RewardModel::load(&out).unwrap();
    assert_eq!(rm::accuracy(&loaded, &pairs).unwrap(), 1.0);
    // Win rates inside a group follow the learned preference.
    let item = items::item(&json!({"question": "dog says?", "answer": "1"}), Kind::Math).unwrap();
    let replies: Vec<Reply> =
        ["meow", "woof", "moo"].iter().map(|t| Reply { text: t.to_string(), ..Default::default() }).collect();
    let w = Pairwise::new(loaded, None).score(&item, &replies).unwrap();
    assert!(w[1].reward > w[0].reward && w[1].reward > w[2].reward, "{:?}", w.iter().map(|s| s.reward).collect::<Vec<_>>());
    // Watching with the checker marks which replies pass (the answer is 1) and leaves the rewards alone.
    let loaded = RewardModel::load(&out).unwrap();
    let mut replies = replies;
    replies.push(Reply { text: "woof, so the answer is 1".into(), ..Default::default() });
    let plain = Pairwise::new(loaded, None).score(&item, &replies).unwrap();
    let checker = Verifiable { format_weight: 0.1, digit_weight: 0.0, code_timeout: std::time::Duration::from_secs(5) };
    let watched =
        Pairwise::new(RewardModel::load(&out).unwrap(), Some(checker.clone())).score(&item, &replies).unwrap();
    assert_eq!(watched.iter().map(|s| s.passed).collect::<Vec<_>>(), [false, false, false, true]);
    for (p, w) in plain.iter().zip(&watched) {
        assert_eq!(p.reward, w.reward);
    }
    // Refreshed online: the checker passes only "moo, ... 1", which the reward model ranks below
    // "woof" for a dog. Each group is scored first (the rewards match the frozen model's), then
    // its (right, wrong) pairs train the reward model, until the passing reply ranks first.
    replies[3].text = "moo, so the answer is 1".into();
    // A reply cut at the token limit gets no label: only (3, 1) and (3, 2) are pairs.
    replies[0].finish_reason = "length".into();
    let frozen = Pairwise::new(RewardModel::load(&out).unwrap(), None);
    let before = frozen.score(&item, &replies).unwrap();
    assert!(before[1].reward > before[3].reward, "the test needs the model to disagree with the checker first");
    let mut judge = RewardModel::load(&out).unwrap();
    judge.enable_refresh(1e-3, 4).unwrap();
    let mut online = Pairwise::new(judge, Some(checker));
    online.annotate = true;
    let first = online.score(&item, &replies).unwrap();
    for (a, b) in before.iter().zip(&first) {
        // (Trainable weights take candle's differentiable path: equal up to float rounding.)
        assert!((a.reward - b.reward).abs() < 1e-6, "a group's rewards come before learning from its labels");
    }
    let st = online.step_stats().unwrap();
    assert_eq!(st["rm_pairs"], 2);
    assert!(st["rm_accuracy"].as_f64().unwrap() <= 0.5, "woof over moo is ranked wrong: {st}");
    // The watched ranking counts the same two (right, wrong) pairs the refresh learnt from.
    assert_eq!(st["checked_pairs"], 2);
    assert_eq!(st["judge_ranked"], st["rm_accuracy"], "{st}");
    let mut last = first;
    for _ in 0..15 {
        last = online.score(&item, &replies).unwrap();
    }
    let r: Vec<f64> = last.iter().map(|s| s.reward).collect();
    assert!((0..3).all(|i| r[3] > r[i]), "{r:?}");
    assert_eq!(online.step_stats().unwrap()["rm_pairs"], 30);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Code RL stage two: among replies that pass every test the faster one earns more; a failing
/// reply earns no efficiency term however fast it is.
#[test]
fn efficiency_counts_only_for_passing_code() {
    use nanbeige_train::rewards::CodeEfficiency;
    let item = items::item(
        &json!({"question": "sum", "messages": [{"role": "user", "content": "Write f(xs) returning the sum."}],
            "tests": ["assert f([1, 2, 3]) == 6", "assert f([]) == 0"], "entry_point": "f",
            "answer": "def f(xs):\n    return sum(xs)", "bench": "args = (list(range(3000000)),)"}),
        Kind::Code,
    )
    .unwrap();
    let fast = "<think>\nsum\n</think>\n\n```python\ndef f(xs):\n    return sum(xs)\n```";
    // 3,000,000 values, so the reference runs ~8 ms: with 300,000 (under 1 ms) one scheduler
    // preemption while other tests trained in parallel made the reference's own code score 2.5x
    // slower than itself and failed this test. The gap between `sum` and a loop through strings
    // is ~50x.
    let slow = "<think>\nloop\n</think>\n\n```python\ndef f(xs):\n    t = 0\n    for x in xs:\n        t += int(str(x))\n    return t\n```";
    let wrong = "<think>\nzero\n</think>\n\n```python\ndef f(xs):\n    return 0\n```";
    let replies: Vec<Reply> = [fast, slow, wrong].iter().map(|t| Reply { text: t.to_string(), ..Default::default() }).collect();
    let base = Verifiable { format_weight: 0.1, digit_weight: 0.0, code_timeout: std::time::Duration::from_secs(20) };
    let plain = base.score(&item, &replies).unwrap();
    assert_eq!(plain.iter().map(|s| s.passed).collect::<Vec<_>>(), vec![true, true, false]);
    assert!((plain[0].reward - 1.1).abs() < 1e-9 && (plain[1].reward - 1.1).abs() < 1e-9);
    assert!((plain[2].reward - 0.6).abs() < 1e-9, "half the tests (the empty list) + format: {}", plain[2].reward);
    let eff = CodeEfficiency { base, weight: 0.5, repeats: 3 };
    let r = eff.score(&item, &replies).unwrap();
    assert!(r[0].reward > r[1].reward + 0.1, "fast {} vs slow {}: {:?}", r[0].reward, r[1].reward, r[1].extra);
    assert!(r[1].reward > 1.1 - 1e-9, "a passing reply never loses reward to the efficiency term");
    assert_eq!(r[2].reward, plain[2].reward, "no efficiency term without passing every test");
    // The reference's own code should score a speedup near 1, but its two timings are taken
    // seconds apart while other work holds both cores (a fresh-clone CI run saw 0.229, and the
    // eval crate's twin of this test 0.215), so only the ranking is asserted: the ~50x slower
    // loop's efficiency term stays far below it.
    let eff_of = |i: usize| r[i].extra["efficiency"].as_f64().unwrap();
    assert!(eff_of(0) > 5.0 * eff_of(1), "the reference's own code: {:?} vs {:?}", r[0].extra, r[1].extra);
}

/// Digit credit ranks wrong numeric answers by how many places they got right and leaves right
/// answers at the exact-match reward.
#[test]
fn digit_credit_ranks_wrong_answers() {
    let item = items::item(&json!({"question": "523 - 187", "answer": "336"}), Kind::Math).unwrap();
    let texts = ["<think>\nx\n</think>\n\nAnswer: 336", "<think>\nx\n</think>\n\nAnswer: 436", "<think>\nx\n</think>\n\nAnswer: 446"];
    let replies: Vec<Reply> = texts.iter().map(|t| Reply { text: t.to_string(), ..Default::default() }).collect();
    let r = Verifiable { format_weight: 0.1, digit_weight: 0.5, code_timeout: std::time::Duration::from_secs(5) }
        .score(&item, &replies)
        .unwrap();
    let got: Vec<f64> = r.iter().map(|s| s.reward).collect();
    let want = [1.1, 0.1 + 0.5 * 2.0 / 3.0, 0.1 + 0.5 / 3.0];
    assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-9), "{got:?} vs {want:?}");
    assert_eq!(r.iter().map(|s| s.passed).collect::<Vec<_>>(), vec![true, false, false], "partial credit is not a pass");
}

/// `"weight": 0` on an assistant turn makes it context only: trajectory histories train just the
/// turn itself.
#[test]
fn weight_zero_turns_are_context_only() {
    let d = std::env::temp_dir().join(format!("nanbeige-w0-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let model = tiny_chat_model(&d);
    // Plain ChatML renders every turn the same way (Nanbeige's template rewrites earlier turns, so
    // they are context only already).
    let chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let v = Vocab::new(384).unwrap();
    std::fs::write(model.join("tokenizer_config.json"), serde_json::to_string(&v.tokenizer_config_json(chatml, 4096)).unwrap())
        .unwrap();
    let lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let t = lm.template.as_ref().unwrap();
    let conv = |w: Option<i64>| {
        let mut first = json!({"role": "assistant", "content": "first reply here"});
        if let Some(w) = w {
            first["weight"] = json!(w);
        }
        json!([{"role": "user", "content": "a"}, first, {"role": "user", "content": "b"},
               {"role": "assistant", "content": "second"}])
    };
    // (Token ids may differ at span edges: spans are tokenized piecewise.)
    let (_, mask_all) = nanbeige_train::data::tokenize_chat(&lm.text, t, &conv(None), None).unwrap();
    let (_, mask_w0) = nanbeige_train::data::tokenize_chat(&lm.text, t, &conv(Some(0)), None).unwrap();
    let n = |m: &[bool]| m.iter().filter(|&&x| x).count();
    let only_second = json!([{"role": "user", "content": "b"}, {"role": "assistant", "content": "second"}]);
    let (_, mask_second) = nanbeige_train::data::tokenize_chat(&lm.text, t, &only_second, None).unwrap();
    assert_eq!(n(&mask_w0), n(&mask_second), "only the second reply is trained");
    assert!(n(&mask_all) > n(&mask_w0));
    // The trained tokens are the last ones of the conversation (the second reply and its end).
    let first_trained = mask_w0.iter().position(|&m| m).unwrap();
    assert!(mask_w0[first_trained..].iter().filter(|&&m| !m).count() <= 1);
    std::fs::remove_dir_all(&d).unwrap();
}

/// The update scores exactly what the sampler drew: the log-prob of every rollout token under the
/// training forward (packed rows, differentiable path) equals the sampler's at generation time
/// (fused inference path), end-of-turn token included. `NANBEIGE_LOGPROB_MODEL` checks a real
/// model directory instead of the tiny one.
#[test]
fn update_logprobs_are_the_samplers() {
    use nanbeige_engine::prompt::chat_prompt;
    use nanbeige_engine::{generate_batch, BatchRequest, GenParams, SamplingParams};
    use nanbeige_train::data::{Example, Packed};
    let d = common::tmp("logprobs");
    let model = std::env::var("NANBEIGE_LOGPROB_MODEL").map(std::path::PathBuf::from).unwrap_or_else(|_| tiny_chat_model(&d));
    let mut lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let msgs = json!([{"role": "user", "content": "What is 12 + 34?"}]);
    let p = chat_prompt(&lm.text, lm.template.as_ref(), &msgs, None, true).unwrap();
    let reqs: Vec<BatchRequest> = (0..4)
        .map(|s| BatchRequest {
            prompt: p.ids.clone(),
            opened_think: p.opened_think,
            params: GenParams {
                sampling: SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, seed: Some(s), ..Default::default() },
                max_tokens: Some(40),
                logprobs: Some(0),
                ..Default::default()
            },
        })
        .collect();
    let was = lm.model.differentiable;
    lm.model.differentiable = false;
    let gens: Vec<_> = generate_batch(&mut lm, &reqs, 4, &mut |_, _| {}).into_iter().map(|g| g.unwrap()).collect();
    lm.model.differentiable = was;
    let mut checked = 0;
    for g in &gens {
        let mut completion = g.tokens.clone();
        completion.extend(g.eos_token);
        let mut ids = p.ids.clone();
        ids.extend(&completion);
        let mask: Vec<bool> = (0..ids.len()).map(|i| i >= p.ids.len()).collect();
        let mut row = Packed::default();
        row.push(&Example { ids, mask, line: 0 });
        let logits = lm.model.forward_packed(&row.ids, &row.positions, &row.segments).unwrap();
        let lp = nanbeige_train::loss::token_logprobs(&logits, &row.targets).unwrap().to_vec1::<f32>().unwrap();
        let trained: Vec<f32> = lp.iter().zip(&row.weights).filter(|(_, &w)| w > 0.0).map(|(l, _)| *l).collect();
        assert_eq!(trained.len(), completion.len());
        assert_eq!(g.logprobs.len(), completion.len(), "one sampler log-prob per drawn token");
        for (i, (a, s)) in trained.iter().zip(&g.logprobs).enumerate() {
            assert_eq!(s.token, completion[i]);
            assert!((a - s.logprob).abs() < 2e-3, "token {i} ({}): update {a} vs sampler {}", s.token, s.logprob);
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} tokens checked");
}

/// `greedy_first`: the first reply of every group is the greedy one. With the policy held still
/// (lr 0) it is the same text each time its prompt comes back, where the sampled replies differ,
/// and each step logs the greedy replies' pass rate.
#[test]
fn greedy_first_puts_the_greedy_reply_in_each_group() {
    let d = common::tmp("rl-greedy");
    let out = d.join("out");
    let model = tiny_chat_model(&d);
    let items: Vec<Item> =
        ["cat", "dog"].iter().map(|w| items::item(&json!({"question": w, "answer": "1"}), Kind::Math).unwrap()).collect();
    let mut lm = nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let (text, _) = nanbeige_engine::load::load_text(&model).unwrap();
    let origin = Origin { path: model.clone(), text, eos_ids: lm.eos_ids.clone() };
    let o = GrpoOptions { greedy_first: true, lr: 0.0, ..options(&out, 4) };
    grpo::train(&mut lm, None, &origin, &items, &LetterE, Sampler::Local, &o).unwrap();
    let groups: Vec<serde_json::Value> = std::fs::read_to_string(out.join("rollouts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(groups.len(), 8);
    for it in &items {
        let reply = |j: usize| -> Vec<String> {
            groups.iter().filter(|g| g["id"] == it.id.as_str()).map(|g| g["replies"][j]["text"].to_string()).collect()
        };
        let (first, second) = (reply(0), reply(1));
        assert_eq!(first.len(), 4, "each prompt comes back every step");
        assert!(groups.iter().filter(|g| g["id"] == it.id.as_str()).all(|g| g["prompt"] == it.messages));
        assert!(first.iter().all(|t| *t == first[0]), "greedy replies differ: {first:?}");
        assert!(second.iter().any(|t| *t != second[0]), "sampled replies all alike: {second:?}");
    }
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for l in log.lines() {
        let rec: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(rec["greedy_pass_rate"].as_f64().is_some_and(|g| (0.0..=1.0).contains(&g)), "{rec}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// An endpoint that answers every prompt with the given texts in turn (one per reply of a group).
struct Scripted {
    replies: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
}
impl nanbeige_eval::backend::Backend for Scripted {
    fn chat(
        &self,
        _: &serde_json::Value,
        _: Option<&serde_json::Value>,
        _: &nanbeige_eval::backend::Sampling,
        _: u64,
    ) -> anyhow::Result<Reply> {
        let k = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let text = self.replies[k % self.replies.len()].clone();
        Ok(Reply { text, tool_calls: vec![], completion_tokens: 0, finish_reason: "stop".into() })
    }
    fn parallel_ok(&self) -> bool {
        true
    }
}

/// One GRPO step (`o`) on `items` of `model`, each group the scripted `replies` in turn, the answer
/// checker as reward: the step's metrics line.
fn scripted_step(
    model: &Path,
    lm: &mut nanbeige_engine::LoadedModel,
    items: &[Item],
    replies: &[String],
    o: &GrpoOptions,
) -> serde_json::Value {
    let (text, _) = nanbeige_engine::load::load_text(model).unwrap();
    let origin = Origin { path: model.to_path_buf(), text, eos_ids: lm.eos_ids.clone() };
    let backend = Scripted { replies: replies.to_vec(), next: Default::default() };
    let checker = Verifiable { format_weight: 0.0, digit_weight: 0.0, code_timeout: std::time::Duration::from_secs(5) };
    grpo::train(lm, None, &origin, items, &checker, Sampler::Remote { backend: &backend, parallel: 1 }, o).unwrap();
    serde_json::from_str(std::fs::read_to_string(o.out.join("metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap()
}

/// Process credit on an arithmetic prompt. A group of the worked solution (right) and a reply
/// that copies it up to the tens column and then skips the borrow (wrong): the tokens they share
/// are right, so the wrong reply's negative advantage must not reach them. With process credit one
/// step pushes the shared prefix up (only the right reply trains it); without, the two replies'
/// equal and opposite advantages cancel on it (Adam still moves it a little through the shared weights).
#[test]
fn process_credit_spares_the_right_steps_of_a_wrong_reply() {
    let d = common::tmp("rl-process");
    let model = tiny_chat_model(&d);
    let item = items::item(&json!({"question": "What is 352 - 127?", "answer": "225"}), Kind::Math).unwrap();
    let load = || nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let lm = load();
    let references = grpo::reference_completions(&lm, &item).unwrap();
    assert_eq!(references.len(), 2, "a subtraction has two written forms (add, add-compare)");
    let reference = references[0].clone();
    let compared = lm.text.tokenizer.decode(&references[1], true).unwrap();
    assert!(compared.contains("ones: 2, against 7: 2 is less than 7"), "{compared}");
    let right = lm.text.tokenizer.decode(&reference, true).unwrap().trim_end().to_string();
    assert!(right.contains("ones: 2 is less than 7, borrow 10: 12 - 7 = 5.") && right.ends_with("Answer: 225"), "{right}");
    let cut = right.find("tens:").unwrap();
    let wrong = format!("{}tens: 5 - 2 = 3.\nhundreds: 3 - 1 = 2.\nSo 352 - 127 = 235.\n</think>\n\nAnswer: 235", &right[..cut]);
    let items = vec![item];
    let run = |process_credit: bool| -> (f64, serde_json::Value) {
        let out = d.join(format!("out-{process_credit}"));
        let mut lm = load();
        let o = GrpoOptions { process_credit, group: 2, prompts_per_step: 1, lr: 1e-5, max_tokens: 400, ..options(&out, 1) };
        let prefix_logprob = |lm: &nanbeige_engine::LoadedModel| {
            let p = nanbeige_engine::prompt::chat_prompt(&lm.text, lm.template.as_ref(), &items[0].messages, None, true)
                .unwrap();
            let shared = lm.text.tokenizer.encode(&right[..cut], false).unwrap();
            let mut ids = p.ids.clone();
            ids.extend(&shared);
            let mask: Vec<bool> = (0..ids.len()).map(|i| i >= p.ids.len()).collect();
            let mut row = nanbeige_train::data::Packed::default();
            row.push(&nanbeige_train::data::Example { ids, mask, line: 0 });
            let logits = lm.model.forward_packed(&row.ids, &row.positions, &row.segments).unwrap();
            let lp = nanbeige_train::loss::token_logprobs(&logits, &row.targets).unwrap().to_vec1::<f32>().unwrap();
            lp.iter().zip(&row.weights).map(|(l, w)| (l * w) as f64).sum::<f64>()
        };
        let before = prefix_logprob(&lm);
        let rec = scripted_step(&model, &mut lm, &items, &[right.clone(), wrong.clone()], &o);
        assert_eq!(rec["pass_rate"], 0.5, "{rec}");
        (prefix_logprob(&lm) - before, rec)
    };
    let (with, rec) = run(true);
    let (without, plain) = run(false);
    // The wrong reply's tokens: the shared prefix is verified, the rest is blamed.
    let wrong_ids = lm.text.tokenizer.encode(&wrong, false).unwrap();
    let shared = wrong_ids.iter().zip(&reference).take_while(|(a, b)| a == b).count();
    assert!(shared >= 15, "{shared}");
    let want = shared as f64 / (wrong_ids.len() + 1) as f64; // + the end-of-turn token
    assert!((rec["process_cleared"].as_f64().unwrap() - want).abs() < 1e-9, "{rec} vs {want}");
    assert_eq!(rec["passed_exact"], 1.0, "the right reply is the worked solution token for token");
    assert!(plain.get("process_cleared").is_none());
    assert!(with > 1.0 && with > 3.0 * without.abs(), "prefix log-prob change: {with} with, {without} without");
    std::fs::remove_dir_all(&d).unwrap();
}

/// First-step credit on an arithmetic prompt. A group of the worked solution and a lucky reply
/// whose tens column is wrong but whose closing line states the right answer anyway: the checker
/// passes both, so the group has no signal and is dropped. With step credit the lucky reply fails
/// (its answer does not follow from its steps), the group trains, and of the lucky reply's tokens
/// only its wrong tens line is trained: not the verified ones column, not what follows.
#[test]
fn step_credit_fails_a_right_answer_reached_through_a_wrong_step_and_blames_only_that_step() {
    let d = common::tmp("rl-step");
    let model = tiny_chat_model(&d);
    let item = items::item(&json!({"question": "What is 352 - 127?", "answer": "225"}), Kind::Math).unwrap();
    let load = || nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let lm = load();
    let references = grpo::reference_completions(&lm, &item).unwrap();
    let right = lm.text.tokenizer.decode(&references[0], true).unwrap().trim_end().to_string();
    let cut = right.find("tens:").unwrap();
    let lucky = format!("{}tens: 5 - 2 = 3.\nhundreds: 3 - 1 = 2.\nSo 352 - 127 = 225.\n</think>\n\nAnswer: 225", &right[..cut]);
    let items = vec![item];
    let run = |step_credit: bool, greedy_negatives: bool| -> serde_json::Value {
        let out = d.join(format!("out-{step_credit}-{greedy_negatives}"));
        let mut lm = load();
        let o = GrpoOptions {
            step_credit,
            greedy_negatives,
            group: 2,
            prompts_per_step: 1,
            lr: 1e-5,
            max_tokens: 400,
            ..options(&out, 1)
        };
        let rec = scripted_step(&model, &mut lm, &items, &[right.clone(), lucky.clone()], &o);
        let rollouts = std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap();
        let group: serde_json::Value = serde_json::from_str(rollouts.lines().next().unwrap()).unwrap();
        assert_eq!(group["replies"][1]["passed"], !step_credit, "{group}");
        rec
    };
    let plain = run(false, false);
    assert_eq!((plain["pass_rate"].as_f64(), plain["groups_kept"].as_u64()), (Some(1.0), Some(0)), "{plain}");
    let rec = run(true, false);
    assert_eq!((rec["pass_rate"].as_f64(), rec["groups_kept"].as_u64()), (Some(0.5), Some(1)), "{rec}");
    assert_eq!(rec["off_method"], 1, "{rec}");
    // Trained: from the first token off the worked solution through the end of the tens line.
    let tok = |t: &str| lm.text.tokenizer.encode(t, false).unwrap();
    let lucky_ids = tok(&lucky);
    let shared = lucky_ids.iter().zip(&references[0]).take_while(|(a, b)| a == b).count();
    let tens_end = cut + lucky[cut..].find('\n').unwrap() + 1;
    let want = tok(&lucky[..tens_end]).len() - shared;
    assert!((2..=12).contains(&want), "{want}");
    let len = (lucky_ids.len() + 1) as f64; // + the end-of-turn token
    let trained = (1.0 - rec["process_cleared"].as_f64().unwrap()) * len;
    assert!((trained - want as f64).abs() < 1e-6, "{rec}: trained {trained}, want {want}");
    // With greedy negatives the blame is the first wrong token alone (before the argmax gate).
    let one = run(true, true);
    let trained = (1.0 - one["process_cleared"].as_f64().unwrap()) * len;
    assert!((trained - 1.0).abs() < 1e-6, "{one}: trained {trained}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--greedy-negatives`: a negative advantage trains only the tokens that were the policy's argmax
/// at their position. A reply whose every token is one off the argmax, with a negative advantage,
/// leaves the weights as they were (all its tokens gated); the greedy reply with the same advantage
/// moves them (none gated); without the gate both move them.
#[test]
fn greedy_negatives_train_only_the_argmax_tokens() {
    use nanbeige_train::data::{Example, Packed};
    let d = common::tmp("rl-greedy-neg");
    let model = tiny_chat_model(&d);
    let load = || nanbeige_train::sft::load_model(&model, candle_core::DType::F32, false).unwrap();
    let lm = load();
    let prompt = lm.text.tokenizer.encode("What is 12 + 34?", false).unwrap();
    let last_argmax = |ids: &[u32]| -> u32 {
        let mut row = Packed::default();
        row.push(&Example { ids: ids.to_vec(), mask: vec![true; ids.len()], line: 0 });
        let logits = lm.model.forward_packed(&row.ids, &row.positions, &row.segments).unwrap();
        let argmax = logits.argmax(candle_core::D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap();
        // Position len - 2 predicts the last token of `ids`; the next one is predicted at len - 1,
        // which a packed row does not score: append a dummy token to read it.
        argmax[ids.len() - 2]
    };
    let extend = |off_argmax: bool| {
        let mut ids = prompt.clone();
        for _ in 0..6 {
            ids.push(0);
            let a = last_argmax(&ids);
            *ids.last_mut().unwrap() = if off_argmax { (a + 1) % 300 } else { a };
        }
        ids
    };
    let (greedy, other) = (extend(false), extend(true));
    let step = |ids: &Vec<u32>, gate: bool| -> (f32, f64, f64) {
        let mut lm = load();
        let vars = lm.model.trainable_vars().unwrap();
        let before: Vec<Vec<f32>> = vars.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
        let mut opt = nanbeige_train::optim::AdamW::new(vars.clone(), 0.0).unwrap();
        let mask = (0..ids.len()).map(|i| i >= prompt.len()).collect();
        let seqs = vec![grpo::Seq { ids: ids.clone(), mask, adv: -1.0, weight: 1.0 }];
        let o = GrpoOptions { greedy_negatives: gate, ..options(&d, 1) };
        let st = grpo::policy_step(&lm.model, &mut opt, None, &seqs, &o, 1e-3).unwrap();
        let moved = vars
            .iter()
            .zip(&before)
            .map(|((_, v), b)| {
                let a: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
            })
            .fold(0.0f32, f32::max);
        (moved, st.negative_tokens, st.gated_tokens)
    };
    assert_eq!(step(&other, true), (0.0, 6.0, 6.0), "no argmax token: nothing trained");
    let (moved, negative, gated) = step(&greedy, true);
    assert!(moved > 1e-4 && negative == 6.0 && gated == 0.0, "{moved} {negative} {gated}");
    assert!(step(&other, false).0 > 1e-4, "without the gate the unlikely tokens are pushed down");
    std::fs::remove_dir_all(&d).unwrap();
}
