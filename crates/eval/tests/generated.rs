//! The built-in data is right: every generated example's own final answer gets full marks from the
//! scorer that evaluation and RL use (code: the reference solution passes its hidden tests when run
//! by Python), and a wrong answer does not.

use nanbeige_eval::items::{self, Gold};
use nanbeige_eval::score;
use nanbeige_eval::tasks::{generate, Split};
use std::time::Duration;

#[test]
fn reference_answers_score_full_marks_and_wrong_ones_do_not() {
    // Near-miss code (some mutants are equivalent, e.g. `x > 0` vs `x >= 0` in a sum) must
    // nearly always fail a hidden test.
    let (mut mutants, mut killed) = (0usize, 0usize);
    for task in ["arith", "add", "word", "countdown", "code"] {
        let n = if task == "code" { 20 } else { 300 };
        for split in [Split::Train, Split::Test] {
            for ex in generate(task, split, n, 5).unwrap() {
                let rec = ex.to_json(true);
                let it = items::item(&rec, items::kind_of_generator(task).unwrap()).unwrap();
                let reply = format!("<think>\n{}</think>\n\n{}", ex.reasoning, ex.content);
                assert!(score::format_ok(&reply));
                match &it.gold {
                    Gold::Number(g) => {
                        assert_eq!(score::score_math(&reply, g), 1.0, "{}: {reply}", ex.prompt);
                        let wrong = format!("Answer: {}", g.parse::<i64>().unwrap() + 1);
                        assert_eq!(score::score_math(&wrong, g), 0.0);
                    }
                    Gold::Countdown { numbers, target } => {
                        assert_eq!(score::score_countdown(&reply, numbers, *target), 1.0, "{reply}");
                        assert_eq!(score::score_countdown(&format!("Answer: {target}"), numbers, *target), 0.0);
                    }
                    Gold::Code(tests) => {
                        let r = score::score_code(&reply, tests, Duration::from_secs(10)).unwrap();
                        assert_eq!((r.passed, r.total), (11, 11), "{}\n{reply}\n{r:?}", ex.prompt);
                        // An off-by-one version of the reference fails at least one hidden test.
                        let broken = ex.content.replace("return ", "return 1 + ");
                        let r = score::score_code(&broken, tests, Duration::from_secs(10)).unwrap();
                        assert!(r.passed < r.total, "{broken}");
                        // So does a near miss: a comparison flipped at the boundary, or
                        // duplicates dropped (what a small model writes).
                        for (from, to) in [(" > ", " >= "), (" < ", " <= "), (" <= ", " < "), (" == ", " != ")] {
                            if ex.content.contains(from) {
                                let mutant = ex.content.replacen(from, to, 1);
                                let r = score::score_code(&mutant, tests, Duration::from_secs(10)).unwrap();
                                mutants += 1;
                                killed += (r.passed < r.total) as usize;
                            }
                        }
                        if ex.content.contains("sum(1 for x in xs if") {
                            let mutant = ex
                                .content
                                .replace("sum(1 for x in xs if", "len(set(x for x in xs if")
                                .replace(")\n```", "))\n```");
                            let r = score::score_code(&mutant, tests, Duration::from_secs(10)).unwrap();
                            mutants += 1;
                            killed += (r.passed < r.total) as usize;
                        }
                    }
                    _ => unreachable!(),
                }
            }
        }
    }
    assert!(mutants >= 20 && killed as f64 >= 0.9 * mutants as f64, "{killed} of {mutants} near misses caught");
}
