//! Grade-school word problems (GSM8K-like, two or three steps) built from templates with random
//! names, items and numbers; the worked solution states each step's arithmetic.

use super::Example;
use crate::rng::Rng;
use serde_json::json;

const NAMES: &[&str] = &[
    "Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena", "Mateo", "Nia", "Omar",
    "Priya",
];
const ITEMS: &[&str] = &["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards"];

pub fn draw(rng: &mut Rng) -> Example {
    let name = *rng.pick(NAMES);
    let item = *rng.pick(ITEMS);
    let (prompt, steps, answer): (String, Vec<String>, i64) = match rng.range(0, 6) {
        0 => {
            let (a, b, c) = (rng.range(5, 60), rng.range(2, 9), rng.range(3, 15));
            let d = rng.range(1, a + b * c - 1);
            (
                format!("{name} has {a} {item}. {name} buys {b} bags with {c} {item} in each bag, then gives away {d} {item}. How many {item} does {name} have now?"),
                vec![
                    format!("The bags hold {b} × {c} = {} {item}.", b * c),
                    format!("After buying, {name} has {a} + {} = {} {item}.", b * c, a + b * c),
                    format!("After giving away {d}: {} - {d} = {}.", a + b * c, a + b * c - d),
                ],
                a + b * c - d,
            )
        }
        1 => {
            let (p, q) = (rng.range(2, 19), rng.range(2, 9));
            let bill = *rng.pick(&[50, 100, 200]);
            let bill = if p * q >= bill { 200 } else { bill };
            let thing = *rng.pick(&["notebooks", "mugs", "tickets", "plants"]);
            (
                format!("A shop sells {thing} for ${p} each. {name} buys {q} {thing} and pays with a ${bill} bill. How much change does {name} get, in dollars?"),
                vec![format!("The {thing} cost {q} × {p} = {} dollars.", p * q), format!("The change is {bill} - {} = {} dollars.", p * q, bill - p * q)],
                bill - p * q,
            )
        }
        2 => {
            let (s1, h1, s2, h2) = (rng.range(30, 120), rng.range(2, 6), rng.range(20, 90), rng.range(1, 5));
            (
                format!("A train travels at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours. How many kilometres does it travel in total?"),
                vec![
                    format!("First part: {s1} × {h1} = {} km.", s1 * h1),
                    format!("Second part: {s2} × {h2} = {} km.", s2 * h2),
                    format!("Total: {} + {} = {} km.", s1 * h1, s2 * h2, s1 * h1 + s2 * h2),
                ],
                s1 * h1 + s2 * h2,
            )
        }
        3 => {
            let (p, d) = (rng.range(8, 40), rng.range(2, 9));
            let total = p * d + rng.range(10, 300);
            (
                format!("A book has {total} pages. {name} reads {p} pages every day. How many pages are left after {d} days?"),
                vec![format!("In {d} days {name} reads {p} × {d} = {} pages.", p * d), format!("Pages left: {total} - {} = {}.", p * d, total - p * d)],
                total - p * d,
            )
        }
        4 => {
            let (r, c) = (rng.range(4, 25), rng.range(5, 30));
            let t = rng.range(1, r * c - 1);
            (
                format!("A hall has {r} rows of chairs with {c} chairs in each row. {t} chairs are taken. How many chairs are free?"),
                vec![format!("There are {r} × {c} = {} chairs.", r * c), format!("Free chairs: {} - {t} = {}.", r * c, r * c - t)],
                r * c - t,
            )
        }
        5 => {
            let (k, q, rem) = (rng.range(2, 9), rng.range(3, 40), 0);
            let extra = rng.range(2, 30);
            let a = k * q + rem;
            (
                format!("{name} has {a} {item} and shares them equally among {k} friends. Then {name} finds {extra} more {item} and gives them all to the first friend. How many {item} does the first friend have?"),
                vec![
                    format!("Each friend first gets {a} ÷ {k} = {q} {item}."),
                    format!("The first friend then has {q} + {extra} = {} {item}.", q + extra),
                ],
                q + extra,
            )
        }
        _ => {
            let (w, n) = (rng.range(3, 45), rng.range(3, 30));
            let start = rng.range(0, 50);
            let goal = start + w * n;
            (
                format!("{name} has ${start} saved and saves ${w} more every week. How many weeks until {name} has exactly ${goal}?"),
                vec![
                    format!("{name} still needs {goal} - {start} = {} dollars.", goal - start),
                    format!("At {w} dollars a week that takes {} ÷ {w} = {n} weeks.", goal - start),
                ],
                n,
            )
        }
    };
    Example {
        task: "word",
        key: prompt.clone(),
        reasoning: steps.join("\n") + &format!("\nSo the answer is {answer}.\n"),
        prompt,
        content: format!("Answer: {answer}"),
        answer: json!(answer.to_string()),
        extra: json!({}),
    }
}
