//! Multi-digit arithmetic (addition, subtraction, long multiplication) with the schoolbook method
//! written out digit by digit: column sums with carries, borrows, one partial product per digit of
//! the multiplier, then the partial products added up.

use super::Example;
use crate::rng::Rng;
use serde_json::json;

pub fn draw(rng: &mut Rng) -> Example {
    match rng.range(0, 2) {
        0 => {
            let (a, b) = (num(rng, 3, 6), num(rng, 3, 6));
            make(a, '+', b, add_steps(a, b), a + b)
        }
        1 => {
            let (x, y) = (num(rng, 3, 6), num(rng, 2, 5));
            let (a, b) = (x.max(y), x.min(y));
            make(a, '-', b, sub_steps(a, b), a - b)
        }
        _ => {
            let a = num(rng, 2, 4);
            let b = num(rng, 1, 3);
            make(a, '×', b, mul_steps(a, b), a * b)
        }
    }
}

/// The easy level (`add`): addition and subtraction of 2–3 digit numbers, the same worked
/// method. A 135M model can learn it in minutes, so SFT and RL on this machine have signal.
pub fn draw_easy(rng: &mut Rng) -> Example {
    draw_easy_as(rng, false)
}

/// `add-compare`: the problems of `add` (same draws), with every subtraction column written as
/// `sub_steps_compared` does, both digits before the borrow decision.
pub fn draw_easy_compared(rng: &mut Rng) -> Example {
    draw_easy_as(rng, true)
}

fn draw_easy_as(rng: &mut Rng, compared: bool) -> Example {
    let (x, y) = (num(rng, 2, 3), num(rng, 2, 3));
    let mut ex = if rng.range(0, 1) == 0 {
        make(x, '+', y, add_steps(x, y), x + y)
    } else {
        let (a, b) = (x.max(y), x.min(y));
        let steps = if compared { sub_steps_compared(a, b) } else { sub_steps(a, b) };
        make(a, '-', b, steps, a - b)
    };
    ex.task = if compared { "add-compare" } else { "add" };
    ex
}

/// The worked example for an arithmetic prompt as `draw` and `draw_easy` write it ("What is A op
/// B?" with op `+`, `-` (A >= B) or `×`), or None for any other text; with `compared`, a
/// subtraction as `draw_easy_compared` writes it. RL uses it to find where a failing reply first
/// leaves the method (process credit in the train crate's grpo.rs).
pub fn solve(prompt: &str, compared: bool) -> Option<Example> {
    let body = prompt.trim().strip_prefix("What is ")?.strip_suffix('?')?;
    let [a, op, b] = body.split(' ').collect::<Vec<_>>()[..] else { return None };
    // At most 9 digits each: the product stays far inside i64.
    let num = |s: &str| (s.len() <= 9 && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse::<i64>().ok())?;
    let (a, b) = (num(a)?, num(b)?);
    match op {
        "+" => Some(make(a, '+', b, add_steps(a, b), a + b)),
        "-" if a >= b => Some(make(a, '-', b, sub_steps_as(a, b, compared), a - b)),
        "×" => Some(make(a, '×', b, mul_steps(a, b), a * b)),
        _ => None,
    }
}

/// A number with between `lo` and `hi` digits.
fn num(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    let d = rng.range(lo, hi) as u32;
    rng.digits(d)
}

fn make(a: i64, op: char, b: i64, steps: String, result: i64) -> Example {
    Example {
        task: "arith",
        key: format!("{a}{op}{b}"),
        prompt: format!("What is {a} {op} {b}?"),
        reasoning: steps,
        content: format!("Answer: {result}"),
        answer: json!(result.to_string()),
        extra: json!({}),
    }
}

fn digits_rev(n: i64) -> Vec<i64> {
    n.to_string().bytes().rev().map(|b| (b - b'0') as i64).collect()
}

const PLACES: &[&str] = &[
    "ones",
    "tens",
    "hundreds",
    "thousands",
    "ten-thousands",
    "hundred-thousands",
    "millions",
    "ten-millions",
    "hundred-millions",
];

fn place(i: usize) -> String {
    PLACES.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("10^{i}"))
}

/// Column addition, one line per column.
pub fn add_steps(a: i64, b: i64) -> String {
    let (da, db) = (digits_rev(a), digits_rev(b));
    let mut s = format!("Add {a} + {b} column by column, starting from the ones.\n");
    let mut carry = 0;
    for i in 0..da.len().max(db.len()) {
        let (x, y) = (*da.get(i).unwrap_or(&0), *db.get(i).unwrap_or(&0));
        let t = x + y + carry;
        let with_carry = if carry > 0 { format!(" + {carry} (carry)") } else { String::new() };
        s += &format!("{}: {x} + {y}{with_carry} = {t}, write {}", place(i), t % 10);
        carry = t / 10;
        s += if carry > 0 { ", carry 1.\n" } else { ".\n" };
    }
    if carry > 0 {
        s += &format!("The last carry {carry} becomes the leading digit.\n");
    }
    s + &format!("So {a} + {b} = {}.\n", a + b)
}

/// Column subtraction with borrows (a >= b). Each column states its top digit and then decides:
/// "ones: 3 is less than 6, borrow 10: 13 - 6 = 7." A model writing it must choose between "- 6"
/// and "is less than 6" right after the top digit, with the bottom digit only in the question.
pub fn sub_steps(a: i64, b: i64) -> String {
    sub_steps_as(a, b, false)
}

/// The same method with both digits of a column written before the decision: "ones: 3, against 6:
/// 3 is less than 6, borrow 10: 13 - 6 = 7." (after a borrow: "tens: 5 - 1 (borrowed) = 4, against
/// 2: 4 - 2 = 2."). RL on `add` taught the model to skip needed borrows (docs/TRAINING.md); this
/// format puts the digit the decision depends on next to it.
pub fn sub_steps_compared(a: i64, b: i64) -> String {
    sub_steps_as(a, b, true)
}

fn sub_steps_as(a: i64, b: i64, compared: bool) -> String {
    let (da, db) = (digits_rev(a), digits_rev(b));
    let mut s = format!("Subtract {a} - {b} column by column, starting from the ones.\n");
    let mut borrow = 0;
    for (i, &x0) in da.iter().enumerate() {
        let y = *db.get(i).unwrap_or(&0);
        let x = x0 - borrow;
        let mut shown = if borrow > 0 { format!("{x0} - 1 (borrowed) = {x}") } else { format!("{x0}") };
        if compared {
            shown = format!("{shown}, against {y}: {x}");
        }
        if x < y {
            s += &format!("{}: {shown} is less than {y}, borrow 10: {} - {y} = {}.\n", place(i), x + 10, x + 10 - y);
            borrow = 1;
        } else {
            s += &format!("{}: {shown} - {y} = {}.\n", place(i), x - y);
            borrow = 0;
        }
    }
    s + &format!("So {a} - {b} = {}.\n", a - b)
}

/// One digit times a number, with carries.
fn mul_digit_steps(a: i64, d: i64) -> String {
    let mut s = format!("{a} × {d}: ");
    let mut carry = 0;
    let da = digits_rev(a);
    let mut parts = vec![];
    for (i, &x) in da.iter().enumerate() {
        let t = x * d + carry;
        let with_carry = if carry > 0 { format!(" + {carry}") } else { String::new() };
        carry = t / 10;
        if i + 1 == da.len() {
            parts.push(format!("{x} × {d}{with_carry} = {t}, write {t}"));
        } else if carry > 0 {
            parts.push(format!("{x} × {d}{with_carry} = {t}, write {} carry {carry}", t % 10));
        } else {
            parts.push(format!("{x} × {d}{with_carry} = {t}, write {t}"));
        }
    }
    s += &parts.join("; ");
    s + &format!(". So {a} × {d} = {}.\n", a * d)
}

/// Long multiplication: a partial product per digit of b, shifted, then summed.
pub fn mul_steps(a: i64, b: i64) -> String {
    let db = digits_rev(b);
    if db.len() == 1 {
        return format!("Multiply {a} by {b} digit by digit, starting from the ones.\n") + &mul_digit_steps(a, b);
    }
    let mut s =
        format!("Multiply {a} by each digit of {b}, starting from the ones digit, then add the partial products.\n");
    let mut partials = vec![];
    for (i, &d) in db.iter().enumerate() {
        let shift = 10i64.pow(i as u32);
        s += &format!("{} digit {d}: ", place(i));
        if d == 0 {
            s += "the partial product is 0.\n";
            partials.push(0);
            continue;
        }
        s += &mul_digit_steps(a, d);
        if i > 0 {
            s += &format!(
                "Shift by {} place{}: {} × {shift} = {}.\n",
                i,
                if i > 1 { "s" } else { "" },
                a * d,
                a * d * shift
            );
        }
        partials.push(a * d * shift);
    }
    let nonzero: Vec<i64> = partials.into_iter().filter(|&p| p != 0).collect();
    let mut total = nonzero[0];
    for &p in &nonzero[1..] {
        s += &format!("Add the partial products: {total} + {p}.\n");
        s += &add_steps(total, p);
        total += p;
    }
    s + &format!("So {a} × {b} = {total}.\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_steps_reach_the_right_result() {
        let s = mul_steps(3847, 29);
        assert!(s.contains("3847 × 9 = 34623"), "{s}");
        assert!(s.contains("So 3847 × 29 = 111563."), "{s}");
        assert!(add_steps(958, 67).contains("ones: 8 + 7 = 15, write 5, carry 1."));
        assert!(add_steps(958, 67).ends_with("So 958 + 67 = 1025.\n"));
        assert_eq!(
            sub_steps_compared(352, 127),
            "Subtract 352 - 127 column by column, starting from the ones.\n\
             ones: 2, against 7: 2 is less than 7, borrow 10: 12 - 7 = 5.\n\
             tens: 5 - 1 (borrowed) = 4, against 2: 4 - 2 = 2.\n\
             hundreds: 3, against 1: 3 - 1 = 2.\nSo 352 - 127 = 225.\n"
        );
        let s = sub_steps(1003, 7);
        assert!(s.contains("ones: 3 is less than 7, borrow 10: 13 - 7 = 6."), "{s}");
        assert!(s.ends_with("So 1003 - 7 = 996.\n"), "{s}");
        assert!(mul_steps(405, 203).ends_with("So 405 × 203 = 82215.\n"));
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let e = draw(&mut rng);
            let want = e.answer.as_str().unwrap();
            assert!(e.reasoning.trim_end().ends_with(&format!("= {want}.")), "{}", e.reasoning);
        }
    }

    #[test]
    fn solve_rebuilds_the_generated_example_from_its_prompt() {
        let mut rng = Rng::new(5);
        for i in 0..400 {
            let e = if i % 2 == 0 { draw(&mut rng) } else { draw_easy(&mut rng) };
            let s = solve(&e.prompt, false).unwrap_or_else(|| panic!("{}", e.prompt));
            assert_eq!((s.reasoning, s.content, s.answer), (e.reasoning, e.content, e.answer));
        }
        let mut rng = Rng::new(9);
        for _ in 0..200 {
            let e = draw_easy_compared(&mut rng);
            assert_eq!(solve(&e.prompt, true).unwrap().reasoning, e.reasoning);
        }
        for bad in ["What is 3 - 5?", "What is 12 / 4?", "What is 1 + 2", "What is -1 + 2?", "What is 1 +  2?", "hi"] {
            assert!(solve(bad, false).is_none(), "{bad}");
        }
        assert!(solve("What is 1234567890 × 2?", false).is_none(), "ten digits could overflow a product");
    }
}
