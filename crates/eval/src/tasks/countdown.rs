//! Countdown/24-style puzzles: reach a target from given numbers, each used exactly once, with
//! `+ - * /` and parentheses. Generated from a random sequence of exact, positive steps, so every
//! puzzle is solvable; the verifier (score.rs) accepts any valid expression, not only ours.

use super::Example;
use crate::rng::Rng;
use serde_json::json;

pub fn draw(rng: &mut Rng) -> Example {
    loop {
        let count = rng.range(3, 4) as usize;
        let numbers: Vec<i64> = (0..count)
            .map(|_| if rng.range(0, 5) == 0 { *rng.pick(&[15, 20, 25, 50]) } else { rng.range(1, 13) })
            .collect();
        if let Some(ex) = solve_forward(rng, &numbers) {
            return ex;
        }
    }
}

/// Combine the numbers two at a time at random into one value; None when that value is a poor
/// target (too small, too large, or one of the inputs).
fn solve_forward(rng: &mut Rng, numbers: &[i64]) -> Option<Example> {
    // (value, expression, is a bare number)
    let mut pool: Vec<(i64, String, bool)> = numbers.iter().map(|&n| (n, n.to_string(), true)).collect();
    let mut steps = vec![];
    while pool.len() > 1 {
        let i = rng.range(0, pool.len() as i64 - 1) as usize;
        let a = pool.swap_remove(i);
        let j = rng.range(0, pool.len() as i64 - 1) as usize;
        let b = pool.swap_remove(j);
        let (x, y) = if a.0 >= b.0 { (a, b) } else { (b, a) };
        let mut ops = vec!['+'];
        if x.0 > y.0 {
            ops.push('-');
        }
        if x.0 * y.0 <= 1000 && y.0 > 1 {
            ops.push('*');
        }
        if y.0 > 1 && x.0 % y.0 == 0 {
            ops.push('/');
        }
        let op = *rng.pick(&ops);
        let v = match op {
            '+' => x.0 + y.0,
            '-' => x.0 - y.0,
            '*' => x.0 * y.0,
            _ => x.0 / y.0,
        };
        let wrap = |e: &(i64, String, bool)| if e.2 { e.1.clone() } else { format!("({})", e.1) };
        let expr = format!("{} {op} {}", wrap(&x), wrap(&y));
        let rest: Vec<String> = pool.iter().map(|p| p.0.to_string()).collect();
        let left = if rest.is_empty() { String::new() } else { format!(" (still to use: {})", rest.join(", ")) };
        steps.push(format!("Step {}: {} {op} {} = {v}{left}.", steps.len() + 1, x.0, y.0));
        pool.push((v, expr, false));
    }
    let (target, expr, _) = pool.pop()?;
    if !(10..=999).contains(&target) || numbers.contains(&target) {
        return None;
    }
    let list = numbers.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    let mut sorted = numbers.to_vec();
    sorted.sort();
    let reasoning = format!(
        "We need {target} from {list}, using each number exactly once.\n{}\nThat reaches {target}. As one expression: {expr}.\nCheck: it uses {list} once each and equals {target}.\n",
        steps.join("\n")
    );
    Some(Example {
        task: "countdown",
        key: format!("{sorted:?}->{target}"),
        prompt: format!(
            "Using the numbers {list}, each exactly once, and the operations +, -, *, / with parentheses, write an expression that equals {target}."
        ),
        reasoning,
        content: format!("Answer: {expr}"),
        answer: json!(expr),
        extra: json!({"numbers": numbers, "target": target}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr;

    #[test]
    fn every_reference_solution_is_valid() {
        let mut rng = Rng::new(11);
        for _ in 0..500 {
            let e = draw(&mut rng);
            let got = expr::eval(e.answer.as_str().unwrap()).unwrap();
            assert_eq!(got.value, expr::Frac::int(e.extra["target"].as_i64().unwrap() as i128), "{}", e.reasoning);
            let mut used = got.numbers.clone();
            let mut given: Vec<i64> = serde_json::from_value(e.extra["numbers"].clone()).unwrap();
            used.sort();
            given.sort();
            assert_eq!(used, given);
        }
    }
}
