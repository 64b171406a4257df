//! Rewards for RL, scored per group of replies to one prompt:
//! - verifiable: the task's own checker from nanbeige-eval (math answer, countdown expression,
//!   share of code tests passed) plus a small bonus for the `<think>…</think>` answer format;
//! - code stage two: the same, plus an efficiency term that counts only when every test passes
//!   (the candidate's measured run time against the reference solution's on large inputs);
//! - pair-wise: each reply's win rate against the others in its group under a preference function
//!   (a Bradley-Terry reward model from rm.rs, or an LLM judge behind an endpoint).
//!
//! Not here: advantages and losses (rl.rs), the loop (grpo.rs).

use crate::rl;
use anyhow::Result;
use nanbeige_eval::backend::Reply;
use nanbeige_eval::items::{Gold, Item};
use nanbeige_eval::{runner, score};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Duration;

/// One reply's reward and what went into it.
#[derive(Clone, Debug)]
pub struct Scored {
    pub reward: f64,
    /// Fully correct (every test, the exact answer); what the pass-rate filter and metrics count.
    pub passed: bool,
    pub extra: Value,
}

pub trait GroupReward: Sync {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>>;
    /// Whether the pass-rate filter applies (pair-wise rewards have no notion of passing).
    fn has_pass(&self) -> bool {
        true
    }
    /// Extra metrics gathered while scoring this step's groups, merged into its log line.
    fn step_stats(&self) -> Option<Value> {
        None
    }
}

/// The task's checker plus `format_weight` for the answer format; for numeric answers that are
/// wrong, optionally `digit_weight` × the share of digits right (`score::digit_credit`).
#[derive(Clone)]
pub struct Verifiable {
    pub format_weight: f64,
    pub digit_weight: f64,
    pub code_timeout: Duration,
}

impl Verifiable {
    fn one(&self, item: &Item, r: &Reply) -> Result<Scored> {
        let (s, mut extra) = runner::score_reply(item, r, self.code_timeout)?;
        let fmt = score::format_ok(&r.text);
        let mut reward = s + self.format_weight * f64::from(u8::from(fmt));
        if let (Gold::Number(g), true) = (&item.gold, s < 1.0 && self.digit_weight > 0.0) {
            let d = score::digit_credit(&r.text, g);
            reward += self.digit_weight * d;
            extra["digit_credit"] = json!(d);
        }
        Ok(Scored { reward, passed: s >= 1.0, extra })
    }
}

impl GroupReward for Verifiable {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>> {
        replies.iter().map(|r| self.one(item, r)).collect()
    }
}

/// Code RL stage two: verifiable reward + `weight` × efficiency for replies that pass every test.
/// Efficiency = clamp(t_reference / t_candidate, 0, 2) / 2, so matching the reference earns half
/// the bonus and twice as fast earns all of it; times are medians of `repeats` runs of the item's
/// large-input benchmark in the sandbox.
pub struct CodeEfficiency {
    pub base: Verifiable,
    pub weight: f64,
    pub repeats: usize,
}

impl GroupReward for CodeEfficiency {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>> {
        let mut out = self.base.score(item, replies)?;
        let Gold::Code(tests) = &item.gold else { return Ok(out) };
        let Some(mut timer) = score::SpeedTimer::new(tests, self.repeats, self.base.code_timeout) else { return Ok(out) };
        for (s, r) in out.iter_mut().zip(replies) {
            if !s.passed {
                continue;
            }
            let sp = timer.time(&r.text)?;
            let eff = sp.speedup.map_or(0.0, |x| x.clamp(0.0, 2.0) / 2.0);
            s.reward += self.weight * eff;
            if let Value::Object(m) = &mut s.extra {
                m.insert("efficiency".into(), json!(eff));
                m.insert("bench_s".into(), json!(sp.reply_s));
                m.insert("reference_bench_s".into(), json!(sp.reference_s));
            }
        }
        Ok(out)
    }
}

/// A preference between two replies to the same prompt: P(a beats b).
pub trait Preference: Sync {
    fn prefer(&self, item: &Item, a: &Reply, b: &Reply) -> Result<f64>;
    /// A Bradley-Terry scorer gives one scalar per reply, with P(i beats j) = σ(r_i - r_j);
    /// judges that only compare return None.
    fn rewards(&self, _item: &Item, _replies: &[Reply]) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
    /// Learn from an annotator's labels (right or not; None: no label) of replies it has just
    /// scored; a frozen preference ignores them.
    fn learn(&self, _item: &Item, _replies: &[Reply], _labels: &[Option<bool>]) -> Result<()> {
        Ok(())
    }
    /// What `learn` saw since the last call, for the step's log line.
    fn drain_stats(&self) -> Option<Value> {
        None
    }
}

/// Pair-wise rewards: win rates inside the group. With `watch`, the task's checker also scores
/// every reply, for the logged pass rate: how a held-out judge sees the policy while it trains,
/// which is where reward hacking shows first. It never enters this group's reward; with `annotate`
/// its labels go to `judge.learn` after the group is scored (online reward-model refresh: the
/// checker as the annotator of the policy's own samples), and the step's log says how often the
/// judge ranked the checker's right replies above its wrong ones.
/// `pool` says how replies that give the same final answer (numeric tasks) share their win rates.
pub struct Pairwise<P: Preference> {
    pub judge: P,
    pub watch: Option<Verifiable>,
    pub annotate: bool,
    pub pool: Pool,
    /// With `Pool::Vote`: the share of the vote the leading answer needs for the group to speak at
    /// all (0: always). Below it every reply gets the same reward, so the group carries no signal
    /// and is dropped: where the replies scatter, the vote abstains instead of backing whichever
    /// wrong answer happens to lead.
    pub quorum: f64,
    /// This step's checker-labelled (right, wrong) pairs: ranked right by the judge, by the
    /// pooled reward, and how many.
    ranked: Mutex<(f64, f64, usize)>,
}

impl<P: Preference> Pairwise<P> {
    pub fn new(judge: P, watch: Option<Verifiable>) -> Self {
        Pairwise { judge, watch, annotate: false, pool: Pool::Off, quorum: 0.0, ranked: Mutex::new((0.0, 0.0, 0)) }
    }
}

/// How replies with the same final answer share the judge's win rates.
/// - `Mean`: each gets the mean over its answer: the judge's noise and its taste in wording average
///   out inside an answer, so the advantage tells answers apart, not styles of writing one.
/// - `Vote`: each gets its answer's share of the group's total win rate (the sum over its replies
///   divided by the sum over all): a vote where every reply backs its answer with the weight the
///   judge gives it, so an answer many replies reach independently beats one the judge likes once.
///   Agreement is evidence in arithmetic (wrong answers scatter, the right one repeats), but it
///   also rewards agreeing on a wrong answer where no reply is right: on `add` it lost accuracy
///   (docs/TRAINING.md, sixth pair-wise run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pool {
    #[default]
    Off,
    Mean,
    Vote,
}

impl std::str::FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Pool, String> {
        match s {
            "off" => Ok(Pool::Off),
            "mean" => Ok(Pool::Mean),
            "vote" => Ok(Pool::Vote),
            _ => Err(format!("'{s}' is not off, mean or vote")),
        }
    }
}

/// The final answer a reply gives, when the task has one to compare (numbers); None otherwise.
pub fn answer_key(item: &Item, r: &Reply) -> Option<String> {
    match item.gold {
        Gold::Number(_) => score::extract_number(&r.text),
        _ => None,
    }
}

/// Replies with the same `Some` key share their values (`Pool`); a reply without a key is an answer
/// of its own.
pub fn pool_by_key(values: &[f64], keys: &[Option<String>], pool: Pool) -> Vec<f64> {
    if pool == Pool::Off {
        return values.to_vec();
    }
    let total: f64 = values.iter().sum();
    values
        .iter()
        .zip(keys)
        .map(|(&v, k)| {
            let same: Vec<f64> = match k {
                None => vec![v],
                Some(k) => values.iter().zip(keys).filter(|(_, o)| o.as_ref() == Some(k)).map(|(v, _)| *v).collect(),
            };
            let sum: f64 = same.iter().sum();
            match pool {
                Pool::Vote if total > 0.0 => sum / total,
                Pool::Vote => 0.0,
                _ => sum / same.len() as f64,
            }
        })
        .collect()
}

/// A vote without a quorum abstains: when no answer's share of the vote (`shares`, from
/// `Pool::Vote`) reaches `quorum`, every reply gets the mean share, i.e. the group says nothing.
pub fn vote_quorum(shares: Vec<f64>, quorum: f64) -> Vec<f64> {
    let top = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if shares.is_empty() || top >= quorum {
        return shares;
    }
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    vec![mean; shares.len()]
}

/// Over every (right, wrong) pair of labelled replies: the share `values` ranks right (a tie
/// counts half), and the number of pairs.
pub fn ranked_right(values: &[f64], labels: &[Option<bool>]) -> (f64, usize) {
    let (mut right, mut n) = (0.0, 0);
    for (i, li) in labels.iter().enumerate() {
        for (j, lj) in labels.iter().enumerate() {
            if *li == Some(true) && *lj == Some(false) {
                n += 1;
                right += match values[i].partial_cmp(&values[j]) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Equal) => 0.5,
                    _ => 0.0,
                };
            }
        }
    }
    (right, n)
}

impl<P: Preference> GroupReward for Pairwise<P> {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>> {
        let raw = match self.judge.rewards(item, replies)? {
            Some(r) => rl::win_rates(replies.len(), |i, j| Ok(1.0 / (1.0 + (r[j] - r[i]).exp())))?,
            None => rl::win_rates(replies.len(), |i, j| self.judge.prefer(item, &replies[i], &replies[j]))?,
        };
        let keys: Vec<Option<String>> = replies.iter().map(|r| answer_key(item, r)).collect();
        let mut w = pool_by_key(&raw, &keys, self.pool);
        if self.pool == Pool::Vote {
            w = vote_quorum(w, self.quorum);
        }
        let mut out: Vec<Scored> = w
            .iter()
            .zip(&raw)
            .zip(&keys)
            .map(|((&r, &wr), k)| Scored { reward: r, passed: false, extra: json!({"win_rate": wr, "answer": k}) })
            .collect();
        if let Some(checker) = &self.watch {
            for (s, r) in out.iter_mut().zip(replies) {
                let c = checker.one(item, r)?;
                s.passed = c.passed;
                s.extra["checker"] = c.extra;
            }
            // A reply cut at the token limit gets no label, as in pairs_from_eval.py.
            let labels: Vec<Option<bool>> =
                out.iter().zip(replies).map(|(s, r)| (r.finish_reason != "length").then_some(s.passed)).collect();
            let ((judge_right, n), (pooled_right, _)) = (ranked_right(&raw, &labels), ranked_right(&w, &labels));
            let mut st = self.ranked.lock().unwrap_or_else(|e| e.into_inner());
            *st = (st.0 + judge_right, st.1 + pooled_right, st.2 + n);
            drop(st);
            if self.annotate {
                self.judge.learn(item, replies, &labels)?;
            }
        }
        Ok(out)
    }

    fn has_pass(&self) -> bool {
        false
    }

    fn step_stats(&self) -> Option<Value> {
        let mut m = match self.judge.drain_stats() {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let (judge_right, pooled_right, n) = std::mem::take(&mut *self.ranked.lock().unwrap_or_else(|e| e.into_inner()));
        if self.watch.is_some() {
            let share = |r: f64| if n > 0 { json!(r / n as f64) } else { Value::Null };
            m.insert("checked_pairs".into(), json!(n));
            m.insert("judge_ranked".into(), share(judge_right));
            if self.pool != Pool::Off {
                m.insert("pooled_ranked".into(), share(pooled_right));
            }
        }
        (!m.is_empty()).then_some(Value::Object(m))
    }
}

/// An LLM judge behind any backend (usually an endpoint): shown the prompt and two replies, it
/// answers A or B. Each pair is judged in both orders and averaged, which cancels position bias;
/// an answer naming neither counts as a tie.
///
/// With `solves`, the judge first answers each question itself (greedy, once per question, cached):
/// reference-guided judging, as for math in MT-Bench. A small judge cannot compare two solutions in
/// one letter (Qwen2.5-Coder-0.5B answers "A" to every `add` pair in either order) but can solve the
/// problem; for numeric tasks a reply then beats another when its final number is the judge's and
/// the other's is not (a tie otherwise, and for every pair when the judge gives no number); for
/// other tasks the judge's own answer is shown beside the two replies as the reference.
pub struct Judge<'a> {
    pub backend: &'a dyn nanbeige_eval::backend::Backend,
    pub max_tokens: usize,
    pub solves: bool,
    solved: Mutex<std::collections::HashMap<String, String>>,
}

/// Tokens the judge may spend answering a question itself.
const SOLVE_TOKENS: usize = 512;

/// The judge's verdict: 1.0 for A, 0.0 for B, 0.5 when it names neither or both.
pub fn parse_verdict(text: &str) -> f64 {
    let t = score::answer_part(text);
    let words: Vec<&str> = t.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let a = words.contains(&"A");
    let b = words.contains(&"B");
    match (a, b) {
        (true, false) => 1.0,
        (false, true) => 0.0,
        _ => 0.5,
    }
}

impl<'a> Judge<'a> {
    pub fn new(backend: &'a dyn nanbeige_eval::backend::Backend, max_tokens: usize, solves: bool) -> Self {
        Judge { backend, max_tokens, solves, solved: Mutex::new(Default::default()) }
    }

    /// The judge's own answer to `question`, asked once.
    fn solve(&self, question: &str) -> Result<String> {
        if let Some(a) = self.solved.lock().unwrap_or_else(|e| e.into_inner()).get(question) {
            return Ok(a.clone());
        }
        let sampling = nanbeige_eval::backend::Sampling { max_tokens: SOLVE_TOKENS, temperature: 0.0, top_p: 1.0 };
        let text = self.backend.chat(&json!([{"role": "user", "content": question}]), None, &sampling, 0)?.text;
        self.solved.lock().unwrap_or_else(|e| e.into_inner()).insert(question.to_string(), text.clone());
        Ok(text)
    }

    fn ask(&self, question: &str, reference: Option<&str>, first: &str, second: &str, seed: u64) -> Result<f64> {
        let reference =
            reference.map(|r| format!("Reference answer:\n{}\n\n", score::answer_part(r))).unwrap_or_default();
        let prompt = format!(
            "You are judging two answers to the same question. Pick the better one: correct first, then clear and concise.\n\n\
             Question:\n{question}\n\n{reference}Answer A:\n{first}\n\nAnswer B:\n{second}\n\nReply with exactly one letter: A or B."
        );
        let sampling = nanbeige_eval::backend::Sampling { max_tokens: self.max_tokens, temperature: 0.0, top_p: 1.0 };
        let r = self.backend.chat(&json!([{"role": "user", "content": prompt}]), None, &sampling, seed)?;
        Ok(parse_verdict(&r.text))
    }
}

/// The question of an item as plain text (its last user message).
pub fn question_text(item: &Item) -> String {
    item.messages
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

impl Preference for Judge<'_> {
    fn prefer(&self, item: &Item, a: &Reply, b: &Reply) -> Result<f64> {
        let q = question_text(item);
        let reference = if self.solves { Some(self.solve(&q)?) } else { None };
        if let (Some(r), Gold::Number(_)) = (&reference, &item.gold) {
            let own = score::extract_number(r);
            let agrees = |x: &Reply| own.is_some() && score::extract_number(&x.text) == own;
            return Ok(match (agrees(a), agrees(b)) {
                (true, false) => 1.0,
                (false, true) => 0.0,
                _ => 0.5,
            });
        }
        let (ta, tb) = (score::answer_part(&a.text), score::answer_part(&b.text));
        let ab = self.ask(&q, reference.as_deref(), ta, tb, 0)?;
        let ba = self.ask(&q, reference.as_deref(), tb, ta, 1)?;
        Ok((ab + (1.0 - ba)) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(parse_verdict("A"), 1.0);
        assert_eq!(parse_verdict("<think>A looks wrong, B</think>\n\nB"), 0.0);
        assert_eq!(parse_verdict("Answer B is better."), 0.0);
        assert_eq!(parse_verdict("Both A and B"), 0.5);
        assert_eq!(parse_verdict("neither"), 0.5);
    }

    /// Prefers the longer reply: a judge with a taste in wording and no idea of the answer.
    struct Longer;
    impl Preference for Longer {
        fn prefer(&self, _: &Item, a: &Reply, b: &Reply) -> Result<f64> {
            Ok(match a.text.len().cmp(&b.text.len()) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Less => 0.0,
                std::cmp::Ordering::Equal => 0.5,
            })
        }
    }

    #[test]
    fn pooling_and_ranking_by_hand() {
        let k = |s: &str| Some(s.to_string());
        let keys = [k("7"), None, k("7"), k("9")];
        let v = [0.2, 0.9, 0.6, 0.3];
        assert_eq!(pool_by_key(&v, &keys, Pool::Off), v.to_vec());
        assert_eq!(pool_by_key(&v, &keys, Pool::Mean), vec![0.4, 0.9, 0.4, 0.3]);
        // Shares of the total 2.0: answer 7 holds 0.8, the unkeyed reply 0.9, answer 9 0.3.
        let vote = pool_by_key(&v, &keys, Pool::Vote);
        for (got, want) in vote.iter().zip([0.4, 0.45, 0.4, 0.15]) {
            assert!((got - want).abs() < 1e-12, "{vote:?}");
        }
        // Right replies 0 and 2 against wrong 3 (1 has no label): 0.2 < 0.3, 0.6 > 0.3.
        let labels = [Some(true), None, Some(true), Some(false)];
        assert_eq!(ranked_right(&[0.2, 0.9, 0.6, 0.3], &labels), (1.0, 2));
        assert_eq!(ranked_right(&[0.3, 0.0, 0.3, 0.3], &labels), (1.0, 2), "ties count half");
    }

    #[test]
    fn pooled_win_rates_tell_answers_apart_not_wordings() {
        let item = nanbeige_eval::items::item(&json!({"question": "3 + 4?", "answer": "7"}), nanbeige_eval::items::Kind::Math)
            .unwrap();
        let texts = ["The answer is 7", "so it is 7", "It is 8", "After a long wait, the answer is 8"];
        let replies: Vec<Reply> = texts.iter().map(|t| Reply { text: t.to_string(), ..Default::default() }).collect();
        let checker = Verifiable { format_weight: 0.0, digit_weight: 0.0, code_timeout: Duration::from_secs(5) };
        let plain = Pairwise::new(Longer, Some(checker.clone()));
        let r: Vec<f64> = plain.score(&item, &replies).unwrap().iter().map(|s| s.reward).collect();
        // Lengths 15, 10, 8, 34: win rates by length alone; the long wrong reply wins.
        assert_eq!(r, vec![2.0 / 3.0, 1.0 / 3.0, 0.0, 1.0]);
        let st = plain.step_stats().unwrap();
        assert_eq!((st["checked_pairs"].as_u64(), st["judge_ranked"].as_f64()), (Some(4), Some(0.5)));
        assert!(st.get("pooled_ranked").is_none());
        let mut pooled = Pairwise::new(Longer, Some(checker));
        pooled.pool = Pool::Mean;
        let s = pooled.score(&item, &replies).unwrap();
        let p: Vec<f64> = s.iter().map(|s| s.reward).collect();
        assert_eq!(p, vec![0.5, 0.5, 0.5, 0.5], "each answer's mean win rate is 1/2 here");
        assert_eq!(s[3].extra["answer"], "8");
        assert_eq!(s[3].extra["win_rate"], 1.0, "the judge's own win rate stays in the log");
        let st = pooled.step_stats().unwrap();
        assert_eq!(st["pooled_ranked"].as_f64(), Some(0.5));
        assert!((p.iter().sum::<f64>() - r.iter().sum::<f64>()).abs() < 1e-12, "pooling keeps the group's total");
    }

    #[test]
    fn a_vote_backs_the_answer_many_replies_reach() {
        let item = nanbeige_eval::items::item(&json!({"question": "3 + 4?", "answer": "7"}), nanbeige_eval::items::Kind::Math)
            .unwrap();
        let texts = ["It is 7", "so 7", "7", "it's 7", "After a long wait, the answer is 8"];
        let replies: Vec<Reply> = texts.iter().map(|t| Reply { text: t.to_string(), ..Default::default() }).collect();
        let checker = Verifiable { format_weight: 0.0, digit_weight: 0.0, code_timeout: Duration::from_secs(5) };
        let mut pw = Pairwise::new(Longer, Some(checker));
        // Win rates by length: 0.75, 0.25, 0, 0.5 for the four 7s, 1 for the long 8 (total 2.5).
        pw.pool = Pool::Mean;
        let mean: Vec<f64> = pw.score(&item, &replies).unwrap().iter().map(|s| s.reward).collect();
        assert!(mean[4] > mean[0], "the mean of each answer still follows the judge: {mean:?}");
        assert_eq!(pw.step_stats().unwrap()["pooled_ranked"].as_f64(), Some(0.0));
        pw.pool = Pool::Vote;
        let vote: Vec<f64> = pw.score(&item, &replies).unwrap().iter().map(|s| s.reward).collect();
        for (got, want) in vote.iter().zip([0.6, 0.6, 0.6, 0.6, 0.4]) {
            assert!((got - want).abs() < 1e-12, "{vote:?}");
        }
        let st = pw.step_stats().unwrap();
        assert_eq!((st["judge_ranked"].as_f64(), st["pooled_ranked"].as_f64()), (Some(0.0), Some(1.0)));
        // 0.6 of the vote meets a quorum of 0.6; a quorum of 0.7 makes the group abstain: one
        // reward for all, so the trainer drops it, and the checker's pairs count as ties.
        pw.quorum = 0.6;
        let met: Vec<f64> = pw.score(&item, &replies).unwrap().iter().map(|s| s.reward).collect();
        assert_eq!(met, vote);
        pw.step_stats();
        pw.quorum = 0.7;
        let abstained: Vec<f64> = pw.score(&item, &replies).unwrap().iter().map(|s| s.reward).collect();
        assert!(abstained.iter().all(|r| (r - 0.56).abs() < 1e-12), "{abstained:?}");
        assert_eq!(pw.step_stats().unwrap()["pooled_ranked"].as_f64(), Some(0.5));
    }

    #[test]
    fn a_vote_without_quorum_abstains() {
        assert_eq!(vote_quorum(vec![0.5, 0.3, 0.5, 0.2], 0.5), vec![0.5, 0.3, 0.5, 0.2]);
        assert_eq!(vote_quorum(vec![0.4, 0.2, 0.4, 0.2], 0.5), vec![0.3; 4]);
        assert_eq!(vote_quorum(vec![0.4, 0.2], 0.0), vec![0.4, 0.2]);
        assert!(vote_quorum(vec![], 0.5).is_empty());
    }

    /// A judge backend that answers every question with "3 + 4 equals 7." ("3 + 4 = 8" when
    /// `wrong`) and every A/B prompt with "A", keeping the prompts and counting its calls.
    struct Scripted {
        wrong: bool,
        calls: std::sync::atomic::AtomicUsize,
        prompts: Mutex<Vec<String>>,
    }

    impl nanbeige_eval::backend::Backend for Scripted {
        fn chat(
            &self,
            messages: &Value,
            _tools: Option<&Value>,
            _s: &nanbeige_eval::backend::Sampling,
            _seed: u64,
        ) -> Result<Reply> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p = messages[0]["content"].as_str().unwrap_or("").to_string();
            let text = if p.contains("Answer A") {
                "A"
            } else if self.wrong {
                "3 + 4 = 8"
            } else {
                "3 + 4 equals 7."
            };
            self.prompts.lock().unwrap().push(p);
            Ok(Reply { text: text.into(), ..Default::default() })
        }
        fn parallel_ok(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_judge_that_solves_prefers_its_own_answer() {
        let math =
            nanbeige_eval::items::item(&json!({"question": "3 + 4?", "answer": "7"}), nanbeige_eval::items::Kind::Math)
                .unwrap();
        let reply = |t: &str| Reply { text: t.to_string(), ..Default::default() };
        let (seven, eight, nine) = (reply("<think>3 + 4</think>\n\nAnswer: 7"), reply("Answer: 8"), reply("Answer: 9"));
        let right = Scripted { wrong: false, calls: Default::default(), prompts: Default::default() };
        // Without solving, a judge that always says "A" ties every pair: position bias cancels.
        let plain = Judge::new(&right, 16, false);
        assert_eq!(plain.prefer(&math, &seven, &eight).unwrap(), 0.5);
        assert_eq!(right.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        let solving = Judge::new(&right, 16, true);
        assert_eq!(solving.prefer(&math, &seven, &eight).unwrap(), 1.0);
        assert_eq!(solving.prefer(&math, &eight, &seven).unwrap(), 0.0);
        assert_eq!(solving.prefer(&math, &eight, &nine).unwrap(), 0.5, "two answers not the judge's tie");
        assert_eq!(
            right.calls.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "one solve for the question, no call per pair"
        );
        // A judge that solves wrongly backs the wrong answer: it is only as good as its own answer.
        let wrong = Scripted { wrong: true, calls: Default::default(), prompts: Default::default() };
        assert_eq!(Judge::new(&wrong, 16, true).prefer(&math, &seven, &eight).unwrap(), 0.0);
        // Without a number to compare, the judge's answer is shown as the reference in the A/B prompt.
        let choice = Item {
            id: "c".into(),
            kind: nanbeige_eval::items::Kind::Choice,
            messages: json!([{"role": "user", "content": "3 + 4?"}]),
            tools: None,
            gold: Gold::Choice { letter: 'A', n: 2 },
        };
        assert_eq!(solving.prefer(&choice, &seven, &eight).unwrap(), 0.5, "this judge says A in both orders");
        assert!(right.prompts.lock().unwrap().last().unwrap().contains("Reference answer:\n3 + 4 equals 7."));
    }
}
