//! The expression language of [`Op::FusedElementwise`](crate::Op::FusedElementwise).

use std::fmt;
use std::str::FromStr;

use crate::op::{BinaryOp, UnaryOp};

/// The body of a fused elementwise op: an expression tree over the operands.
///
/// Text form: `$0`, `$1`, ... for operands, numbers (`0.5`, `1e-6`, `-inf`) for f32 constants,
/// and the unary and binary op names applied with parentheses: `mul(silu($0), $1)`.
#[derive(Clone, Debug, PartialEq)]
pub enum ElementwiseExpr {
    Input(usize),
    Const(f64),
    Unary(UnaryOp, Box<ElementwiseExpr>),
    Binary(BinaryOp, Box<ElementwiseExpr>, Box<ElementwiseExpr>),
}

impl ElementwiseExpr {
    /// The largest operand index used, if any.
    pub fn max_input(&self) -> Option<usize> {
        match self {
            ElementwiseExpr::Input(i) => Some(*i),
            ElementwiseExpr::Const(_) => None,
            ElementwiseExpr::Unary(_, a) => a.max_input(),
            ElementwiseExpr::Binary(_, a, b) => a.max_input().max(b.max_input()),
        }
    }

    /// The number of unary and binary operations: how many ops the fusion replaced.
    pub fn op_count(&self) -> usize {
        match self {
            ElementwiseExpr::Input(_) | ElementwiseExpr::Const(_) => 0,
            ElementwiseExpr::Unary(_, a) => 1 + a.op_count(),
            ElementwiseExpr::Binary(_, a, b) => 1 + a.op_count() + b.op_count(),
        }
    }

    /// The expression with every operand index `i` replaced by `f(i)`.
    pub fn map_inputs(&self, f: &impl Fn(usize) -> ElementwiseExpr) -> ElementwiseExpr {
        match self {
            ElementwiseExpr::Input(i) => f(*i),
            ElementwiseExpr::Const(c) => ElementwiseExpr::Const(*c),
            ElementwiseExpr::Unary(u, a) => ElementwiseExpr::Unary(*u, Box::new(a.map_inputs(f))),
            ElementwiseExpr::Binary(b, x, y) => {
                ElementwiseExpr::Binary(*b, Box::new(x.map_inputs(f)), Box::new(y.map_inputs(f)))
            }
        }
    }

    /// Evaluates the expression on one element of each operand (f32, as the interpreter does).
    pub fn eval(&self, inputs: &[f32]) -> f32 {
        match self {
            ElementwiseExpr::Input(i) => inputs[*i],
            ElementwiseExpr::Const(c) => *c as f32,
            ElementwiseExpr::Unary(u, a) => u.apply(a.eval(inputs)),
            ElementwiseExpr::Binary(b, x, y) => b.apply(x.eval(inputs), y.eval(inputs)),
        }
    }
}

impl fmt::Display for ElementwiseExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElementwiseExpr::Input(i) => write!(f, "${i}"),
            ElementwiseExpr::Const(c) => write!(f, "{c:?}"),
            ElementwiseExpr::Unary(u, a) => write!(f, "{}({a})", u.name()),
            ElementwiseExpr::Binary(b, x, y) => write!(f, "{}({x}, {y})", b.name()),
        }
    }
}

impl FromStr for ElementwiseExpr {
    type Err = String;

    fn from_str(s: &str) -> Result<ElementwiseExpr, String> {
        let mut p = ExprParser { s: s.as_bytes(), pos: 0 };
        let e = p.expr(0)?;
        p.skip_spaces();
        if p.pos != p.s.len() {
            return Err(format!("unexpected `{}` at offset {} of `{s}`", &s[p.pos..], p.pos));
        }
        Ok(e)
    }
}

/// A recursive-descent parser over the expression text.
struct ExprParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl ExprParser<'_> {
    fn skip_spaces(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.skip_spaces();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at offset {}", c as char, self.pos))
        }
    }

    fn word(&mut self) -> &str {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|c| c.is_ascii_alphanumeric() || b"_.+-".contains(c)) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("")
    }

    fn expr(&mut self, depth: usize) -> Result<ElementwiseExpr, String> {
        if depth > 256 {
            return Err("expression nested too deeply".into());
        }
        self.skip_spaces();
        if self.s.get(self.pos) == Some(&b'$') {
            self.pos += 1;
            let w = self.word().to_string();
            return w.parse().map(ElementwiseExpr::Input).map_err(|_| format!("bad operand `${w}`"));
        }
        let start = self.pos;
        let w = self.word().to_string();
        if w.is_empty() {
            return Err(format!("expected an operand, a number or an op at offset {start}"));
        }
        if let Some(u) = UnaryOp::ALL.into_iter().find(|u| u.name() == w) {
            self.eat(b'(')?;
            let a = self.expr(depth + 1)?;
            self.eat(b')')?;
            return Ok(ElementwiseExpr::Unary(u, Box::new(a)));
        }
        if let Some(b) = BinaryOp::ALL.into_iter().find(|b| b.name() == w) {
            self.eat(b'(')?;
            let x = self.expr(depth + 1)?;
            self.eat(b',')?;
            let y = self.expr(depth + 1)?;
            self.eat(b')')?;
            return Ok(ElementwiseExpr::Binary(b, Box::new(x), Box::new(y)));
        }
        w.parse::<f64>().map(ElementwiseExpr::Const).map_err(|_| format!("unknown op or number `{w}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in ["mul(silu($0), $1)", "add($0, 1e-6)", "max(neg($2), -inf)", "div(exp($0), 0.5)"] {
            let e: ElementwiseExpr = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn evaluates() {
        let e: ElementwiseExpr = "add(mul($0, $1), 2.0)".parse().unwrap();
        assert_eq!(e.eval(&[3.0, 4.0]), 14.0);
        assert_eq!(e.max_input(), Some(1));
        assert_eq!(e.op_count(), 2);
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "$", "mul($0)", "foo($0)", "add($0, $1) x", "sqrt(", "$-1"] {
            assert!(text.parse::<ElementwiseExpr>().is_err(), "{text}");
        }
    }
}
