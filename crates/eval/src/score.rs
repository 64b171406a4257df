//! Scorers: turn a model's raw completion into a score against a reference. Public, because the
//! RL trainer uses the same functions as rewards.
//!
//! - math: strip `<think>…</think>`, extract the answer (`\boxed{}`, then "answer: N"/"answer is
//!   N", then the last number), compare exactly as numbers;
//! - countdown: extract an expression, check it with the safe parser in `expr.rs` (right value,
//!   each given number used exactly once);
//! - code: extract the function from the reply, run the hidden tests, score = share passed;
//! - multiple choice: extract the chosen letter;
//! - tool calls: right function name and arguments equal as JSON;
//! - format: a closed `<think>` block opens the reply and a non-empty answer follows it.

use crate::expr;
use crate::sandbox::{self, TestRun};
use anyhow::Result;
use serde_json::Value;
use std::time::Duration;

/// The answer part of a completion: what follows the last `</think>`; an unclosed `<think>`
/// leaves no answer at all (the model never finished thinking).
pub fn answer_part(text: &str) -> &str {
    if let Some(i) = text.rfind("</think>") {
        return text[i + "</think>".len()..].trim();
    }
    if text.trim_start().starts_with("<think>") {
        return "";
    }
    text.trim()
}

/// Nanbeige answer format: `<think>` reasoning `</think>` then a non-empty answer.
pub fn format_ok(text: &str) -> bool {
    let t = text.trim_start();
    let Some(rest) = t.strip_prefix("<think>") else { return false };
    match rest.find("</think>") {
        Some(i) => {
            !rest[..i].trim().is_empty() && !rest[i + 8..].trim().is_empty() && !rest[i + 8..].contains("<think>")
        }
        None => false,
    }
}

/// Contents of the last `\boxed{…}` (braces balanced).
pub fn last_boxed(s: &str) -> Option<&str> {
    let start = s.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1;
    for (i, c) in s[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Numbers in text as written ("1,234.50", "-7"), in order.
fn numbers(s: &str) -> Vec<String> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < cs.len() {
        let neg = cs[i] == '-'
            && cs.get(i + 1).is_some_and(|c| c.is_ascii_digit())
            && (i == 0 || !cs[i - 1].is_alphanumeric());
        if cs[i].is_ascii_digit() || neg {
            let mut j = i + 1;
            let mut num: String = cs[i].to_string();
            while j < cs.len() {
                let c = cs[j];
                let next_digit = cs.get(j + 1).is_some_and(|c| c.is_ascii_digit());
                if c.is_ascii_digit() || ((c == ',' || c == '.') && next_digit) {
                    if c != ',' {
                        num.push(c);
                    }
                    j += 1;
                } else {
                    break;
                }
            }
            out.push(num);
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Canonical form of a number for exact comparison: no sign on zero, no trailing fractional zeros.
pub fn normalize_number(s: &str) -> Option<String> {
    let s = s.trim().trim_start_matches('+').replace([',', '$', ' '], "");
    let s = s.trim_end_matches('.');
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
    Some(if neg && body != "0" { format!("-{body}") } else { body })
}

/// The final numeric answer of a completion, normalized.
pub fn extract_number(text: &str) -> Option<String> {
    let ans = answer_part(text);
    if let Some(b) = last_boxed(ans) {
        if let Some(n) = numbers(b).last() {
            return normalize_number(n);
        }
    }
    let lower = ans.to_ascii_lowercase();
    for key in ["answer:", "answer is", "answer ="] {
        if let Some(i) = lower.rfind(key) {
            if let Some(n) = numbers(&ans[i + key.len()..]).first() {
                return normalize_number(n);
            }
        }
    }
    numbers(ans).last().and_then(|n| normalize_number(n))
}

/// GSM8K's reference answers end with "#### 42"; other sets give the bare number.
pub fn gold_number(answer: &Value) -> Option<String> {
    match answer {
        Value::Number(n) => normalize_number(&n.to_string()),
        Value::String(s) => match s.rfind("####") {
            Some(i) => normalize_number(s[i + 4..].trim()),
            None => normalize_number(s).or_else(|| numbers(s).last().and_then(|n| normalize_number(n))),
        },
        _ => None,
    }
}

/// 1.0 when the extracted answer equals the gold number exactly.
pub fn score_math(text: &str, gold: &str) -> f64 {
    match (extract_number(text), normalize_number(gold)) {
        (Some(a), Some(g)) if a == g => 1.0,
        _ => 0.0,
    }
}

/// Share of the gold integer's digits the extracted answer has right, place by place from the
/// ones column up (a wrong sign or a missing answer: 0). A dense reward for RL on column
/// arithmetic: a reply that carries or borrows right in the low columns and slips in a high one
/// scores above one that skips the borrow, where the exact-match score calls both wrong.
pub fn digit_credit(text: &str, gold: &str) -> f64 {
    let (Some(a), Some(g)) = (extract_number(text), normalize_number(gold)) else { return 0.0 };
    let neg = |s: &str| s.starts_with('-');
    if neg(&a) != neg(&g) || a.contains('.') || g.contains('.') {
        return f64::from(u8::from(a == g));
    }
    let (a, g) = (a.trim_start_matches('-').as_bytes(), g.trim_start_matches('-').as_bytes());
    let right = a.iter().rev().zip(g.iter().rev()).filter(|(x, y)| x == y).count();
    right as f64 / a.len().max(g.len()) as f64
}

/// The expression a countdown answer gives: `\boxed{}`, or the text after "answer:", or the last
/// line that looks like arithmetic; a trailing "= target" is dropped.
pub fn extract_expression(text: &str) -> Option<String> {
    let ans = answer_part(text);
    let raw = if let Some(b) = last_boxed(ans) {
        b.to_string()
    } else if let Some(i) = ans.to_ascii_lowercase().rfind("answer:") {
        ans.get(i + 7..)?.lines().next().unwrap_or("").to_string()
    } else {
        ans.lines()
            .rev()
            .find(|l| l.chars().any(|c| c.is_ascii_digit()) && l.chars().any(|c| "+-*/×÷".contains(c)))?
            .to_string()
    };
    let raw = raw.split('=').next().unwrap_or("");
    let cleaned: String = raw.chars().filter(|c| !"`$".contains(*c)).collect();
    // Markdown bold (**) goes; a single * stays as multiplication.
    let cleaned = cleaned.replace("**", "").replace("\\times", "*").replace("\\div", "/");
    let cleaned = cleaned.trim().trim_end_matches('.').trim().to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// 1.0 when the expression equals `target` and uses exactly the given numbers, each once.
pub fn score_countdown(text: &str, numbers: &[i64], target: i64) -> f64 {
    let Some(e) = extract_expression(text) else { return 0.0 };
    let Ok(ev) = expr::eval(&e) else { return 0.0 };
    let (mut used, mut given) = (ev.numbers.clone(), numbers.to_vec());
    used.sort();
    given.sort();
    if used == given && ev.value == expr::Frac::int(target as i128) {
        1.0
    } else {
        0.0
    }
}

/// The code of a reply: the fenced block that defines `entry_point` (else the last fenced block,
/// else the whole answer).
pub fn extract_code(text: &str, entry_point: &str) -> String {
    let ans = answer_part(text);
    let mut blocks = vec![];
    let mut rest = ans;
    while let Some(i) = rest.find("```") {
        let after = &rest[i + 3..];
        let body_start = after.find('\n').map(|n| n + 1).unwrap_or(after.len());
        let body = &after[body_start..];
        match body.find("```") {
            Some(j) => {
                blocks.push(&body[..j]);
                rest = &body[j + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    let def = format!("def {entry_point}");
    blocks.iter().rev().find(|b| b.contains(&def)).or(blocks.last()).map(|b| b.to_string()).unwrap_or_else(|| {
        // No fence: the answer as written, keeping the indentation of a bare function body.
        let raw = text.rfind("</think>").map(|i| &text[i + 8..]).unwrap_or(if ans.is_empty() { "" } else { text });
        raw.trim_start_matches(['\n', '\r']).trim_end().to_string() + "\n"
    })
}

/// A code problem's tests: assert statements (MBPP, ours) or a HumanEval `check` function.
#[derive(Clone, Debug)]
pub struct CodeTests {
    pub setup: Option<String>,
    pub tests: Vec<String>,
    pub entry_point: String,
    /// The problem's prompt; for HumanEval its imports and signature complete a bare body.
    pub prompt: Option<String>,
    /// A reference solution (`answer` / `canonical_solution` when it is code), for code RL's
    /// efficiency term.
    pub reference: Option<String>,
    /// Python that sets `args`, a large input tuple: the efficiency benchmark times
    /// `entry_point(*args)` on it.
    pub bench: Option<String>,
}

impl CodeTests {
    /// From a JSON item: `tests`/`test_list` (list of asserts) or `test` (code defining
    /// `check(candidate)`), plus `entry_point` (or the name of the first function in the tests).
    pub fn from_item(item: &Value) -> Option<CodeTests> {
        let list =
            |v: &Value| v.as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect::<Vec<_>>());
        let ep = item.get("entry_point").and_then(Value::as_str).map(String::from);
        let prompt = item.get("prompt").and_then(Value::as_str).map(String::from);
        let text = |k: &str| item.get(k).and_then(Value::as_str).map(String::from);
        let reference = text("canonical_solution").or_else(|| text("answer")).filter(|c| c.contains("def ") || c.contains("return"));
        let bench = text("bench");
        if let Some(tests) = item.get("tests").and_then(list).or_else(|| item.get("test_list").and_then(list)) {
            let ep = ep.or_else(|| tests.first().and_then(|t| called_name(t)))?;
            let setup =
                item.get("test_setup_code").and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(String::from);
            return (!tests.is_empty()).then_some(CodeTests { setup, tests, entry_point: ep, prompt, reference, bench });
        }
        let test = item.get("test").or_else(|| item.get("tests")).and_then(Value::as_str)?;
        let ep = ep?;
        Some(CodeTests {
            setup: Some(test.to_string()),
            tests: vec![format!("check({ep})")],
            entry_point: ep,
            prompt,
            reference,
            bench,
        })
    }
}

/// `assert foo(1) == 2` → "foo".
fn called_name(test: &str) -> Option<String> {
    let t = test.trim().strip_prefix("assert")?.trim_start();
    let t = t.strip_prefix("not ").unwrap_or(t).trim_start();
    let name: String = t.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty() && t[name.len()..].starts_with('(')).then_some(name)
}

/// Runs the reply's code against the tests; the score is the share of tests passed.
pub fn score_code(text: &str, tests: &CodeTests, timeout: Duration) -> Result<TestRun> {
    let code = complete_code(extract_code(text, &tests.entry_point), tests);
    sandbox::run_tests(&code, tests.setup.as_deref(), &tests.tests, timeout)
}

/// Code as it runs: a bare function body is completed with the prompt's signature, and a whole
/// function keeps the prompt's imports (HumanEval).
pub fn complete_code(mut code: String, tests: &CodeTests) -> String {
    if let Some(p) = &tests.prompt {
        if !code.contains(&format!("def {}", tests.entry_point)) {
            // A bare function body (completion-style reply): complete it with the prompt.
            code = format!("{p}{code}");
        } else {
            // Keep the prompt's imports (HumanEval signatures use typing names).
            let imports: Vec<&str> = p.lines().filter(|l| l.starts_with("import ") || l.starts_with("from ")).collect();
            if !imports.is_empty() {
                code = format!("{}\n{code}", imports.join("\n"));
            }
        }
    }
    code
}

/// Seconds one call `entry_point(*args)` takes on the benchmark input (`bench` sets `args`):
/// the median of `repeats` timed calls, in the sandbox, on the code the tests ran (sanitized: a
/// reply cut at the token limit loses its unfinished tail). None when the code fails to load or
/// run, or runs out of time.
pub fn time_code(code: &str, tests: &CodeTests, bench: &str, repeats: usize, timeout: Duration) -> Result<Option<f64>> {
    let marker = format!("@@bench{:x}", code.len() ^ bench.len());
    let code = complete_code(code.to_string(), tests);
    let script = format!(
        "{sanitize}import time as _t\n_src = {code:?}\n_bench = {bench:?}\ntry:\n    _g = {{}}\n    exec(_sanitize(_src), _g)\n    _b = {{}}\n    exec(_bench, _b)\n    _f = _g[{ep:?}]\n    _ts = []\n    for _ in range({repeats}):\n        _a = _t.perf_counter()\n        _f(*_b['args'])\n        _ts.append(_t.perf_counter() - _a)\n    _ts.sort()\n    print({marker:?}, _ts[len(_ts) // 2])\nexcept BaseException:\n    pass\n",
        sanitize = crate::sandbox::SANITIZE,
        ep = tests.entry_point,
        repeats = repeats.max(1),
    );
    let (out, timed_out) = crate::sandbox::run_python(&script, timeout)?;
    if timed_out {
        return Ok(None);
    }
    Ok(out.lines().find_map(|l| l.strip_prefix(&marker)).and_then(|v| v.trim().parse::<f64>().ok()))
}

/// Times replies to one code item against its reference solution on its benchmark input (eval's
/// `--efficiency` and code RL's efficiency reward). The reference is timed once, when first needed.
pub struct SpeedTimer<'a> {
    tests: &'a CodeTests,
    bench: &'a str,
    reference: &'a str,
    repeats: usize,
    timeout: Duration,
    reference_s: Option<Option<f64>>,
}

/// One reply's timing: seconds for the reply and the reference (None: failed to run or timed
/// out) and t_reference / t_reply when both ran.
pub struct Speed {
    pub reply_s: Option<f64>,
    pub reference_s: Option<f64>,
    pub speedup: Option<f64>,
}

impl<'a> SpeedTimer<'a> {
    /// None when the item has no benchmark input or no reference solution.
    pub fn new(tests: &'a CodeTests, repeats: usize, timeout: Duration) -> Option<Self> {
        let (bench, reference) = (tests.bench.as_deref()?, tests.reference.as_deref()?);
        Some(Self { tests, bench, reference, repeats, timeout, reference_s: None })
    }

    /// Time the code a reply contains (median of `repeats` calls), and the reference once.
    pub fn time(&mut self, reply: &str) -> Result<Speed> {
        let reference_s = match self.reference_s {
            Some(t) => t,
            None => *self.reference_s.insert(time_code(self.reference, self.tests, self.bench, self.repeats, self.timeout)?),
        };
        let code = extract_code(reply, &self.tests.entry_point);
        let reply_s = time_code(&code, self.tests, self.bench, self.repeats, self.timeout)?;
        let speedup = match (reference_s, reply_s) {
            (Some(tr), Some(tc)) if tc > 0.0 => Some(tr / tc),
            _ => None,
        };
        Ok(Speed { reply_s, reference_s, speedup })
    }
}

/// The chosen option letter (A, B, …; `n` options) of a multiple-choice reply.
pub fn extract_choice(text: &str, n: usize) -> Option<char> {
    let ans = answer_part(text);
    let valid = |c: char| c.is_ascii_uppercase() && ((c as u8 - b'A') as usize) < n;
    let first_letter = |s: &str| -> Option<char> {
        let s = s.trim_start().trim_start_matches(['(', '[', '*', ' ', ':']);
        let mut it = s.chars();
        let c = it.next()?.to_ascii_uppercase();
        let next = it.next();
        (valid(c) && next.is_none_or(|d| !d.is_alphanumeric())).then_some(c)
    };
    if let Some(b) = last_boxed(ans) {
        if let Some(c) = first_letter(b) {
            return Some(c);
        }
    }
    let lower = ans.to_ascii_lowercase();
    for key in ["answer is", "answer:", "option", "choice is"] {
        if let Some(i) = lower.rfind(key) {
            if let Some(c) = ans.get(i + key.len()..).and_then(first_letter) {
                return Some(c);
            }
        }
    }
    // A reply that is just the letter, or starts with "B)" / "B." / "(B)".
    if let Some(c) = first_letter(ans) {
        return Some(c);
    }
    // The last "(X)" in the text.
    let cs: Vec<char> = ans.chars().collect();
    (0..cs.len().saturating_sub(2))
        .rev()
        .find_map(|i| (cs[i] == '(' && cs[i + 2] == ')' && valid(cs[i + 1])).then_some(cs[i + 1]))
}

/// The gold letter of a multiple-choice item: a letter, or an index into the choices.
pub fn gold_choice(answer: &Value) -> Option<char> {
    match answer {
        Value::Number(n) => n.as_u64().filter(|&i| i < 26).map(|i| (b'A' + i as u8) as char),
        Value::String(s) => {
            let s = s.trim();
            (s.len() == 1 && s.as_bytes()[0].is_ascii_alphabetic())
                .then(|| s.as_bytes()[0].to_ascii_uppercase() as char)
        }
        _ => None,
    }
}

/// JSON equality where numbers compare by value (1 == 1.0) and object key order does not matter.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Tool-call accuracy: (right function name, right name and arguments) for the first call made,
/// against the expected `{"name": …, "arguments": {…}}`. `calls` are (name, arguments) pairs.
pub fn score_tool_call(calls: &[(String, Value)], expected: &Value) -> (bool, bool) {
    let want_name = expected.get("name").and_then(Value::as_str);
    let want_args = match expected.get("arguments") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Object(Default::default()),
    };
    let Some((name, args)) = calls.first() else { return (false, false) };
    let name_ok = want_name == Some(name.as_str());
    (name_ok, name_ok && json_equal(args, &want_args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn math_extraction_forms() {
        assert_eq!(extract_number("<think>3+4 is 7, or 8?</think>\nThe answer is \\boxed{7}."), Some("7".into()));
        assert_eq!(extract_number("Answer: 1,234"), Some("1234".into()));
        assert_eq!(extract_number("so 5 apples... The answer is 12 apples, since 3 * 4."), Some("12".into()));
        assert_eq!(extract_number("We get 10, then 20, finally 42."), Some("42".into()));
        assert_eq!(extract_number("It is -3.50 degrees"), Some("-3.5".into()));
        assert_eq!(extract_number("<think>the answer is 9"), None, "unclosed think: no answer");
        assert_eq!(extract_number("no digits here"), None);
        assert_eq!(extract_number("item-3"), Some("3".into()), "a hyphen inside a word is not a sign");
        assert_eq!(score_math("Answer: 111563", "111563"), 1.0);
        assert_eq!(score_math("Answer: 111,563.0", "111563"), 1.0);
        assert_eq!(score_math("Answer: 111564", "111563"), 0.0);
        assert_eq!(score_math("<think>Answer: 111563</think>Answer: 5", "111563"), 0.0, "the reasoning does not count");
        assert_eq!(digit_credit("Answer: 336", "336"), 1.0);
        assert_eq!(digit_credit("Answer: 346", "336"), 2.0 / 3.0, "tens wrong, ones and hundreds right");
        assert_eq!(digit_credit("Answer: 1336", "336"), 0.75, "an extra digit counts against");
        assert_eq!(digit_credit("Answer: 36", "336"), 2.0 / 3.0);
        assert_eq!(digit_credit("Answer: -336", "336"), 0.0, "wrong sign");
        assert_eq!(digit_credit("no answer", "336"), 0.0);
        assert_eq!(gold_number(&json!("Natalia sold 48/2 = 24 clips.\n#### 72")), Some("72".into()));
        assert_eq!(gold_number(&json!(72)), Some("72".into()));
        assert_eq!(normalize_number("-0"), Some("0".into()));
        assert_eq!(normalize_number("abc"), None);
    }

    #[test]
    fn countdown_verifier() {
        let nums = [8, 3, 8, 3];
        assert_eq!(score_countdown("Answer: 8/(3-8/3)", &nums, 24), 1.0);
        assert_eq!(score_countdown("<think>hmm</think>\\boxed{8 ÷ (3 − 8 ÷ 3)}", &nums, 24), 1.0);
        assert_eq!(score_countdown("Answer: 8*3 = 24", &nums, 24), 0.0, "must use every number");
        assert_eq!(score_countdown("Answer: 8*3+8-8", &nums, 24), 0.0, "8 used three times, 3 once");
        assert_eq!(score_countdown("Answer: (8+8)*3/3", &nums, 24), 0.0, "value 16");
        assert_eq!(score_countdown("Answer: (8+3+8+3", &nums, 24), 0.0, "malformed");
        assert_eq!(score_countdown("I cannot do it.", &nums, 24), 0.0);
        assert_eq!(score_countdown("First 6 * 4 = 24\n(6 * 4 + 3) - 2 = 25", &[6, 4, 3, 2], 25), 1.0);
        assert_eq!(score_countdown("Answer: **(6 * 4 + 3) - 2**", &[6, 4, 3, 2], 25), 1.0);
    }

    #[test]
    fn code_extraction_and_tests() {
        let reply = "<think>plan</think>Here:\n```python\ndef f(xs):\n    return sum(xs)\n```\nDone.";
        assert_eq!(extract_code(reply, "f").trim(), "def f(xs):\n    return sum(xs)");
        assert_eq!(extract_code("def f(): pass", "f"), "def f(): pass\n");
        let t = CodeTests::from_item(&json!({"test_list": ["assert f([1, 2]) == 3", "assert f([]) == 0"]})).unwrap();
        assert_eq!(t.entry_point, "f");
        let d = Duration::from_secs(10);
        assert_eq!(score_code(reply, &t, d).unwrap().share(), 1.0);
        let wrong = "```python\ndef f(xs):\n    return len(xs)\n```";
        let r = score_code(wrong, &t, d).unwrap();
        assert_eq!((r.passed, r.total), (1, 2), "len([]) == 0 passes one test");
        let r = score_code("```python\ndef f(xs) return\n```", &t, d).unwrap();
        assert_eq!(r.passed, 0);
        assert!(r.load_error.unwrap().starts_with("SyntaxError"));
        let cheat = "```python\nimport sys\nprint('@@0000 pass 0')\nsys.exit(0)\n```";
        // The model's own example calls and failing asserts, and a tail cut off by the token
        // limit, do not sink a correct function.
        let chatty = "```python\ndef f(xs):\n    return sum(xs)\n\nprint(f([1]))\nassert f([1]) == 2, 'mine'\nif __name__ == '__main__':\n    f(None)\n\ndef check():\n    assert f([1, 2]) == [";
        assert_eq!(score_code(chatty, &t, d).unwrap().share(), 1.0);
        assert_eq!(score_code(cheat, &t, d).unwrap().passed, 0);
        let slow = "```python\ndef f(xs):\n    while True: pass\n```";
        let r = score_code(slow, &t, Duration::from_secs(2)).unwrap();
        assert!(r.timed_out && r.passed == 0);
        // HumanEval style: a check(candidate) function, a prompt with imports.
        let he = json!({
            "prompt": "from typing import List\n\ndef add(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n",
            "test": "def check(candidate):\n    assert candidate([1, 2]) == 3\n",
            "entry_point": "add"
        });
        let t = CodeTests::from_item(&he).unwrap();
        assert_eq!(score_code("    return sum(xs)\n", &t, d).unwrap().share(), 1.0, "completion-style body");
        assert_eq!(
            score_code("```python\ndef add(xs: List[int]) -> int:\n    return sum(xs)\n```", &t, d).unwrap().share(),
            1.0
        );
        assert_eq!(score_code("```python\ndef add(xs):\n    return 0\n```", &t, d).unwrap().share(), 0.0);
    }

    #[test]
    fn choice_extraction() {
        assert_eq!(extract_choice("B", 4), Some('B'));
        assert_eq!(extract_choice("The answer is (C).", 4), Some('C'));
        assert_eq!(extract_choice("<think>A or D?</think>Answer: d", 4), Some('D'));
        assert_eq!(extract_choice("\\boxed{A}", 4), Some('A'));
        assert_eq!(extract_choice("A) because...", 4), Some('A'));
        assert_eq!(extract_choice("The answer is E", 4), None, "only 4 options");
        assert_eq!(extract_choice("I think it is a hard question", 4), None);
        assert_eq!(gold_choice(&json!(2)), Some('C'));
        assert_eq!(gold_choice(&json!("b")), Some('B'));
    }

    #[test]
    fn tool_calls_and_format() {
        let want = json!({"name": "get_weather", "arguments": {"city": "Paris", "days": 2}});
        let call = |n: &str, a: Value| vec![(n.to_string(), a)];
        assert_eq!(score_tool_call(&call("get_weather", json!({"days": 2.0, "city": "Paris"})), &want), (true, true));
        assert_eq!(score_tool_call(&call("get_weather", json!({"city": "Paris"})), &want), (true, false));
        assert_eq!(score_tool_call(&call("get_time", json!({"city": "Paris", "days": 2})), &want), (false, false));
        assert_eq!(score_tool_call(&[], &want), (false, false));
        let want_s = json!({"name": "f", "arguments": "{\"a\": [1, 2]}"});
        assert_eq!(score_tool_call(&call("f", json!({"a": [1, 2]})), &want_s), (true, true));

        assert!(format_ok("<think>\nsteps\n</think>\n\nAnswer: 5"));
        assert!(!format_ok("Answer: 5"));
        assert!(!format_ok("<think>steps, never closed"));
        assert!(!format_ok("<think>steps</think>   "));
        assert!(!format_ok("<think></think>Answer: 5"), "empty reasoning");
        assert!(!format_ok("<think>a</think>b<think>c"));
        assert_eq!(answer_part("<think>x</think>\n y "), "y");
    }
}
