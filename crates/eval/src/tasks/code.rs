//! Small Python functions over integer lists, from a family of templates with random parameters
//! ("write f(xs) that returns the sum of the elements greater than 7"). Each problem carries a
//! reference solution, one visible example and hidden assert tests whose expected values are
//! computed here in Rust, independently of the Python reference (the tests check both agree).

use super::Example;
use crate::rng::Rng;
use serde_json::{json, Value};

type P = [i64; 2];

/// Hidden tests per problem (besides the example shown in the prompt).
pub const HIDDEN_TESTS: usize = 10;

struct Template {
    name: &'static str,
    params: fn(&mut Rng) -> P,
    desc: fn(&P) -> String,
    plan: fn(&P) -> String,
    code: fn(&P) -> String,
    run: fn(&[i64], &P) -> Value,
}

fn templates() -> Vec<Template> {
    vec![
        Template {
            name: "sum_greater_than",
            params: |r| [r.range(-10, 30), 0],
            desc: |p| format!("returns the sum of the elements of xs that are greater than {}", p[0]),
            plan: |p| {
                format!("Keep a running total starting at 0. For each x in xs, add it when x > {}. Return the total (0 for an empty list).", p[0])
            },
            code: |p| {
                format!("def sum_greater_than(xs):\n    total = 0\n    for x in xs:\n        if x > {}:\n            total += x\n    return total", p[0])
            },
            run: |xs, p| json!(xs.iter().filter(|&&x| x > p[0]).sum::<i64>()),
        },
        Template {
            name: "count_divisible",
            params: |r| [r.range(2, 12), 0],
            desc: |p| format!("returns how many elements of xs are divisible by {}", p[0]),
            plan: |p| {
                format!(
                    "Count the elements x with x % {} == 0 (Python's % also handles negative numbers correctly here).",
                    p[0]
                )
            },
            code: |p| format!("def count_divisible(xs):\n    return sum(1 for x in xs if x % {} == 0)", p[0]),
            run: |xs, p| json!(xs.iter().filter(|&&x| x.rem_euclid(p[0]) == 0).count()),
        },
        Template {
            name: "affine",
            params: |r| [r.range(2, 9), r.range(-20, 20)],
            desc: |p| {
                format!("returns a new list in which every element x of xs is replaced by x * {} + {}", p[0], p[1])
            },
            plan: |p| {
                format!(
                    "Build the result with one pass: for each x compute x * {} + {} and append it, keeping the order.",
                    p[0], p[1]
                )
            },
            code: |p| format!("def affine(xs):\n    return [x * {} + {} for x in xs]", p[0], p[1]),
            run: |xs, p| json!(xs.iter().map(|x| x * p[0] + p[1]).collect::<Vec<_>>()),
        },
        Template {
            name: "clamp_all",
            params: |r| {
                let lo = r.range(-10, 10);
                [lo, lo + r.range(5, 30)]
            },
            desc: |p| {
                format!("returns a new list where each element of xs is clamped to the range [{}, {}] (smaller values become {}, larger values become {})", p[0], p[1], p[0], p[1])
            },
            plan: |p| {
                format!(
                    "For each x take max({}, min({}, x)): min caps it from above, max raises it from below.",
                    p[0], p[1]
                )
            },
            code: |p| format!("def clamp_all(xs):\n    return [max({}, min({}, x)) for x in xs]", p[0], p[1]),
            run: |xs, p| json!(xs.iter().map(|&x| x.clamp(p[0], p[1])).collect::<Vec<_>>()),
        },
        Template {
            name: "drop_value",
            params: |r| [r.range(0, 20), 0],
            desc: |p| format!("returns xs without any element equal to {}, keeping the order of the rest", p[0]),
            plan: |p| format!("Filter: keep every x that is not equal to {}, in order.", p[0]),
            code: |p| format!("def drop_value(xs):\n    return [x for x in xs if x != {}]", p[0]),
            run: |xs, p| json!(xs.iter().filter(|&&x| x != p[0]).collect::<Vec<_>>()),
        },
        Template {
            name: "last_index_of",
            params: |r| [r.range(0, 20), 0],
            desc: |p| format!("returns the index of the last occurrence of {} in xs, or -1 if it does not occur", p[0]),
            plan: |p| {
                format!("Walk the indices from the end towards the start and return the first i with xs[i] == {}; if none matches return -1.", p[0])
            },
            code: |p| {
                format!("def last_index_of(xs):\n    for i in range(len(xs) - 1, -1, -1):\n        if xs[i] == {}:\n            return i\n    return -1", p[0])
            },
            run: |xs, p| json!(xs.iter().rposition(|&x| x == p[0]).map(|i| i as i64).unwrap_or(-1)),
        },
        Template {
            name: "running_totals",
            params: |r| [r.range(-20, 20), 0],
            desc: |p| {
                format!("returns the list of running totals of xs, where the total starts at {} before the first element (so the first output is {} + xs[0])", p[0], p[0])
            },
            plan: |p| format!("Keep total = {}; for each x add x to total and append the new total.", p[0]),
            code: |p| {
                format!("def running_totals(xs):\n    total = {}\n    out = []\n    for x in xs:\n        total += x\n        out.append(total)\n    return out", p[0])
            },
            run: |xs, p| {
                let mut t = p[0];
                json!(xs
                    .iter()
                    .map(|x| {
                        t += x;
                        t
                    })
                    .collect::<Vec<_>>())
            },
        },
        Template {
            name: "scale_evens",
            params: |r| [r.range(2, 20), 0],
            desc: |p| {
                format!("returns the even elements of xs, each multiplied by {}, in their original order (odd elements are left out)", p[0])
            },
            plan: |p| format!("Keep only x with x % 2 == 0 and multiply each kept x by {}.", p[0]),
            code: |p| format!("def scale_evens(xs):\n    return [x * {} for x in xs if x % 2 == 0]", p[0]),
            run: |xs, p| json!(xs.iter().filter(|&&x| x % 2 == 0).map(|x| x * p[0]).collect::<Vec<_>>()),
        },
        Template {
            name: "sum_every_kth",
            params: |r| [r.range(2, 6), 0],
            desc: |p| {
                format!("returns the sum of the elements at indices 0, {k}, {}, … (every {k}th element, starting with the first)", 2 * p[0], k = p[0])
            },
            plan: |p| format!("The slice xs[::{}] picks exactly those elements; sum it.", p[0]),
            code: |p| format!("def sum_every_kth(xs):\n    return sum(xs[::{}])", p[0]),
            run: |xs, p| json!(xs.iter().step_by(p[0] as usize).sum::<i64>()),
        },
        Template {
            name: "count_in_range",
            params: |r| {
                let lo = r.range(-10, 20);
                [lo, lo + r.range(3, 20)]
            },
            desc: |p| format!("returns how many elements x of xs satisfy {} <= x <= {}", p[0], p[1]),
            plan: |p| format!("Count the x with {} <= x <= {} (both ends included).", p[0], p[1]),
            code: |p| format!("def count_in_range(xs):\n    return sum(1 for x in xs if {} <= x <= {})", p[0], p[1]),
            run: |xs, p| json!(xs.iter().filter(|&&x| p[0] <= x && x <= p[1]).count()),
        },
        Template {
            name: "longest_run_above",
            params: |r| [r.range(0, 20), 0],
            desc: |p| {
                format!("returns the length of the longest run of consecutive elements of xs that are all greater than {} (0 if there is none)", p[0])
            },
            plan: |p| {
                format!("Scan once with a current run length: when x > {} increase it and update the best, otherwise reset it to 0.", p[0])
            },
            code: |p| {
                format!("def longest_run_above(xs):\n    best = cur = 0\n    for x in xs:\n        if x > {}:\n            cur += 1\n            best = max(best, cur)\n        else:\n            cur = 0\n    return best", p[0])
            },
            run: |xs, p| {
                let (mut best, mut cur) = (0, 0);
                for &x in xs {
                    if x > p[0] {
                        cur += 1;
                        best = best.max(cur);
                    } else {
                        cur = 0;
                    }
                }
                json!(best)
            },
        },
        Template {
            name: "pairs_summing_to",
            params: |r| [r.range(0, 30), 0],
            desc: |p| format!("returns the number of index pairs i < j with xs[i] + xs[j] == {}", p[0]),
            plan: |p| {
                format!(
                    "Check every pair with two loops, j starting after i, and count the pairs whose sum is {}.",
                    p[0]
                )
            },
            code: |p| {
                format!("def pairs_summing_to(xs):\n    count = 0\n    for i in range(len(xs)):\n        for j in range(i + 1, len(xs)):\n            if xs[i] + xs[j] == {}:\n                count += 1\n    return count", p[0])
            },
            run: |xs, p| {
                let mut c = 0;
                for i in 0..xs.len() {
                    for j in i + 1..xs.len() {
                        c += (xs[i] + xs[j] == p[0]) as i64;
                    }
                }
                json!(c)
            },
        },
        Template {
            name: "max_window_sum",
            params: |r| [r.range(2, 5), 0],
            desc: |p| {
                format!(
                    "returns the largest sum of {} consecutive elements of xs, or 0 if xs has fewer than {} elements",
                    p[0], p[0]
                )
            },
            plan: |p| {
                format!("If len(xs) < {k} return 0. Otherwise compute sum(xs[i:i + {k}]) for every start i from 0 to len(xs) - {k} and take the maximum.", k = p[0])
            },
            code: |p| {
                format!("def max_window_sum(xs):\n    if len(xs) < {k}:\n        return 0\n    return max(sum(xs[i:i + {k}]) for i in range(len(xs) - {k} + 1))", k = p[0])
            },
            run: |xs, p| {
                let k = p[0] as usize;
                json!(if xs.len() < k { 0 } else { xs.windows(k).map(|w| w.iter().sum::<i64>()).max().unwrap() })
            },
        },
        Template {
            name: "sum_mod",
            params: |r| [r.range(3, 50), 0],
            desc: |p| {
                format!("returns the sum of the elements of xs modulo {} (a number from 0 to {})", p[0], p[0] - 1)
            },
            plan: |p| {
                format!(
                    "Sum the list, then take the result % {} (Python's % is never negative for a positive modulus).",
                    p[0]
                )
            },
            code: |p| format!("def sum_mod(xs):\n    return sum(xs) % {}", p[0]),
            run: |xs, p| json!(xs.iter().sum::<i64>().rem_euclid(p[0])),
        },
        Template {
            name: "replace_below",
            params: |r| [r.range(-5, 10), r.range(-5, 5)],
            desc: |p| {
                format!("returns a new list where every element of xs that is smaller than {} is replaced by {} and the others are kept", p[0], p[1])
            },
            plan: |p| format!("For each x output {} if x < {}, else x itself.", p[1], p[0]),
            code: |p| format!("def replace_below(xs):\n    return [{} if x < {} else x for x in xs]", p[1], p[0]),
            run: |xs, p| json!(xs.iter().map(|&x| if x < p[0] { p[1] } else { x }).collect::<Vec<_>>()),
        },
    ]
}

/// Python literal for the JSON values used here (ints and lists of ints).
pub fn py(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(py).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// A test input: half its values are the problem's boundary cases (the parameters, one either
/// side of them, their multiples, 0), so a solution with `>=` for `>`, a wrong bound or a
/// dropped duplicate fails; the rest are random near the parameters.
fn input(rng: &mut Rng, p: &P, max_len: i64) -> Vec<i64> {
    let (lo, hi) = (p[0].min(p[1]) - 12, p[0].max(p[1]) + 12);
    let special = [p[0] - 1, p[0], p[0] + 1, p[1] - 1, p[1], p[1] + 1, 2 * p[0], -p[0], 0];
    let len = rng.range(0, max_len) as usize;
    (0..len).map(|_| if rng.range(0, 1) == 0 { *rng.pick(&special) } else { rng.range(lo, hi) }).collect()
}

/// Python setting `args` to a large input (200,000 values around the parameters) for the
/// efficiency benchmark of code RL's second stage.
fn bench(p: &P) -> String {
    let (lo, hi) = (p[0].min(p[1]) - 12, p[0].max(p[1]) + 12);
    format!("import random\nrandom.seed(7)\nargs = ([random.randint({lo}, {hi}) for _ in range(200000)],)")
}

pub fn draw(rng: &mut Rng) -> Example {
    let ts = templates();
    let t = &ts[rng.range(0, ts.len() as i64 - 1) as usize];
    let p = (t.params)(rng);
    let mut ex_in = input(rng, &p, 6);
    while ex_in.len() < 3 {
        ex_in.push(rng.range(-5, 20));
    }
    let ex_out = (t.run)(&ex_in, &p);
    let call = |xs: &[i64]| format!("{}({})", t.name, py(&json!(xs)));
    let mut tests = vec![format!("assert {} == {}", call(&ex_in), py(&ex_out))];
    // The empty list, every boundary value at once (with a duplicate), then random inputs.
    let mut inputs = vec![vec![], vec![p[0] - 1, p[0], p[0], p[0] + 1, p[1] - 1, p[1], p[1] + 1, 0]];
    for _ in 0..HIDDEN_TESTS - 2 {
        inputs.push(input(rng, &p, 10));
    }
    for xs in &inputs {
        tests.push(format!("assert {} == {}", call(xs), py(&(t.run)(xs, &p))));
    }
    let desc = (t.desc)(&p);
    let code = (t.code)(&p);
    let prompt = format!(
        "Write a Python function `{}(xs)` that takes a list of integers xs and {desc}.\nFor example, {} should return {}.",
        t.name,
        call(&ex_in),
        py(&ex_out)
    );
    let reasoning = format!(
        "The function {desc}.\nPlan: {}\nCheck on the example: {} gives {}, as required.\nEdge case: an empty list gives {}.\n",
        (t.plan)(&p),
        call(&ex_in),
        py(&ex_out),
        py(&(t.run)(&[], &p))
    );
    Example {
        task: "code",
        key: format!("{}{:?}", t.name, p),
        prompt,
        reasoning,
        content: format!("```python\n{code}\n```"),
        answer: json!(code),
        extra: json!({"tests": tests, "entry_point": t.name, "bench": bench(&p)}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_literals() {
        assert_eq!(py(&json!([1, -2, [3]])), "[1, -2, [3]]");
        assert_eq!(py(&json!(-7)), "-7");
    }
}
