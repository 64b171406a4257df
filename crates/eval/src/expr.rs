//! A safe parser and exact evaluator for the arithmetic expressions of countdown/24-style answers:
//! integers, + - * / (also × ÷ x), parentheses. Values are exact fractions, so `8/(3-8/3)` is 24 and
//! not 23.999…; the numbers the expression uses are returned so a verifier can check them.
//!
//! Not here: unary minus, exponents, decimals, variables, function calls (none are allowed in the
//! puzzles). Nothing is ever evaluated by a language runtime.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frac {
    pub num: i128,
    pub den: i128,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Frac {
    pub fn int(n: i128) -> Self {
        Frac { num: n, den: 1 }
    }

    fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let g = gcd(num, den).max(1);
        let s = if den < 0 { -1 } else { 1 };
        Some(Frac { num: s * num / g, den: s * den / g })
    }

    fn add(self, o: Frac) -> Option<Frac> {
        Frac::new(self.num.checked_mul(o.den)?.checked_add(o.num.checked_mul(self.den)?)?, self.den.checked_mul(o.den)?)
    }
    fn sub(self, o: Frac) -> Option<Frac> {
        self.add(Frac { num: -o.num, den: o.den })
    }
    fn mul(self, o: Frac) -> Option<Frac> {
        Frac::new(self.num.checked_mul(o.num)?, self.den.checked_mul(o.den)?)
    }
    fn div(self, o: Frac) -> Option<Frac> {
        Frac::new(self.num.checked_mul(o.den)?, self.den.checked_mul(o.num)?)
    }
}

impl fmt::Display for Frac {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// The value of an expression and the integer literals it contains, in order.
#[derive(Debug, PartialEq)]
pub struct Evaluated {
    pub value: Frac,
    pub numbers: Vec<i64>,
}

const MAX_LEN: usize = 400;
const MAX_DEPTH: usize = 32;

pub fn eval(src: &str) -> Result<Evaluated, String> {
    if src.chars().count() > MAX_LEN {
        return Err("expression too long".into());
    }
    let toks = lex(src)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = Parser { toks, pos: 0, numbers: vec![], depth: 0 };
    let value = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.pos]));
    }
    Ok(Evaluated { value, numbers: p.numbers })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok {
    Num(i64),
    Op(char),
    Open,
    Close,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = vec![];
    let cs: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            _ if c.is_whitespace() => {}
            '0'..='9' => {
                let start = i;
                while i + 1 < cs.len() && cs[i + 1].is_ascii_digit() {
                    i += 1;
                }
                let s: String = cs[start..=i].iter().collect();
                out.push(Tok::Num(s.parse().map_err(|_| format!("number too large: {s}"))?));
            }
            '+' => out.push(Tok::Op('+')),
            '-' | '−' => out.push(Tok::Op('-')),
            '*' | '×' | 'x' | 'X' | '·' => out.push(Tok::Op('*')),
            '/' | '÷' => out.push(Tok::Op('/')),
            '(' | '[' => out.push(Tok::Open),
            ')' | ']' => out.push(Tok::Close),
            _ => return Err(format!("unexpected character {c:?}")),
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    numbers: Vec<i64>,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<Tok> {
        self.toks.get(self.pos).copied()
    }

    fn expr(&mut self) -> Result<Frac, String> {
        let mut v = self.term()?;
        while let Some(Tok::Op(op @ ('+' | '-'))) = self.peek() {
            self.pos += 1;
            let r = self.term()?;
            v = if op == '+' { v.add(r) } else { v.sub(r) }.ok_or("overflow")?;
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<Frac, String> {
        let mut v = self.factor()?;
        while let Some(Tok::Op(op @ ('*' | '/'))) = self.peek() {
            self.pos += 1;
            let r = self.factor()?;
            v = if op == '*' {
                v.mul(r).ok_or("overflow")?
            } else {
                if r.num == 0 {
                    return Err("division by zero".into());
                }
                v.div(r).ok_or("overflow")?
            };
        }
        Ok(v)
    }

    fn factor(&mut self) -> Result<Frac, String> {
        match self.peek() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                self.numbers.push(n);
                Ok(Frac::int(n as i128))
            }
            Some(Tok::Open) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("too deeply nested".into());
                }
                self.pos += 1;
                let v = self.expr()?;
                if self.peek() != Some(Tok::Close) {
                    return Err("missing )".into());
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(v)
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(s: &str) -> String {
        eval(s).map(|e| e.value.to_string()).unwrap_or_else(|e| format!("err: {e}"))
    }

    #[test]
    fn exact_values_precedence_and_numbers() {
        assert_eq!(val("8/(3-8/3)"), "24");
        assert_eq!(val("1 + 2 * 3"), "7");
        assert_eq!(val("(1 + 2) × 3"), "9");
        assert_eq!(val("10 - 4 - 3"), "3");
        assert_eq!(val("7 / 2"), "7/2");
        assert_eq!(val("12 ÷ 4 x 2"), "6");
        assert_eq!(eval("(6+4)*(3-1)").unwrap().numbers, vec![6, 4, 3, 1]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in ["", "1 +", "(1 + 2", "1 2", "5 / (3 - 3)", "2 ** 3", "-3 + 1", "abs(3)", "__import__('os')", "1)"] {
            assert!(eval(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(eval(&"(".repeat(100)).is_err());
        assert!(eval(&"1+".repeat(300)).is_err());
        assert!(eval("99999999999999999999999").is_err());
        assert!(eval("999999999*999999999*999999999*999999999*999999999").is_err());
    }
}
