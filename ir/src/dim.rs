//! Dimensions and shapes.
//!
//! A [`Dim`] is a linear expression over named symbols with integer coefficients, e.g. `64`, `S`,
//! `P+S` or `2*S+1`. Linear is enough for the shapes the models need (a KV cache of `P` cached
//! plus `S` new positions) and keeps equality structural: two dims are equal exactly when their
//! normalised forms are. Element counts (products of dims) are compared as polynomials, see
//! [`numel`].

use std::collections::BTreeMap;
use std::fmt;

/// Values for the symbols of a graph (`S = 7`, `P = 0`, ...).
pub type SymBindings = BTreeMap<String, u64>;

/// A dimension: `constant + sum(coeff * symbol)`, kept normalised (no zero coefficients, symbols
/// sorted), so derived `Eq` is semantic equality.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    constant: i64,
    terms: BTreeMap<String, i64>,
}

impl Dim {
    pub fn constant(n: u64) -> Dim {
        Dim { constant: n as i64, terms: BTreeMap::new() }
    }

    pub fn sym(name: &str) -> Dim {
        Dim { constant: 0, terms: BTreeMap::from([(name.to_string(), 1)]) }
    }

    /// The value if this dim has no symbols.
    pub fn as_const(&self) -> Option<u64> {
        (self.terms.is_empty() && self.constant >= 0).then_some(self.constant as u64)
    }

    pub fn is_const(&self) -> bool {
        self.terms.is_empty()
    }

    /// Symbols this dim mentions, in sorted order.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.terms.keys().map(String::as_str)
    }

    pub fn terms(&self) -> impl Iterator<Item = (&str, i64)> {
        self.terms.iter().map(|(s, c)| (s.as_str(), *c))
    }

    pub fn constant_part(&self) -> i64 {
        self.constant
    }

    fn add_scaled(&self, other: &Dim, scale: i64) -> Dim {
        let mut out = self.clone();
        // Saturating: absurd dims must not panic; they fail later checks instead.
        out.constant = out.constant.saturating_add(scale.saturating_mul(other.constant));
        for (s, c) in &other.terms {
            let e = out.terms.entry(s.clone()).or_insert(0);
            *e = e.saturating_add(scale.saturating_mul(*c));
            if *e == 0 {
                out.terms.remove(s);
            }
        }
        out
    }

    pub fn add(&self, other: &Dim) -> Dim {
        self.add_scaled(other, 1)
    }

    pub fn sub(&self, other: &Dim) -> Dim {
        self.add_scaled(other, -1)
    }

    /// Builds a dim from a constant and `(symbol, coefficient)` terms, normalising.
    pub fn linear(constant: i64, terms: impl IntoIterator<Item = (String, i64)>) -> Dim {
        let mut d = Dim { constant, terms: BTreeMap::new() };
        for (s, c) in terms {
            d = d.add_scaled(&Dim { constant: 0, terms: BTreeMap::from([(s, 1)]) }, c);
        }
        d
    }

    /// Replaces the bound symbols by their values, keeping the others.
    pub fn substitute(&self, syms: &SymBindings) -> Dim {
        let mut out = Dim { constant: self.constant, terms: BTreeMap::new() };
        for (s, &c) in &self.terms {
            match syms.get(s) {
                Some(&v) => out.constant = out.constant.saturating_add(c.saturating_mul(v as i64)),
                None => {
                    out.terms.insert(s.clone(), c);
                }
            }
        }
        out
    }

    /// Evaluates the dim under symbol bindings.
    pub fn eval(&self, syms: &SymBindings) -> Result<u64, String> {
        let mut v = self.constant;
        for (s, c) in &self.terms {
            let x = syms.get(s).ok_or_else(|| format!("symbol `{s}` has no binding"))?;
            v = i64::try_from(*x)
                .ok()
                .and_then(|x| c.checked_mul(x))
                .and_then(|t| v.checked_add(t))
                .ok_or_else(|| format!("dim `{self}` overflows with {s} = {x}"))?;
        }
        u64::try_from(v).map_err(|_| format!("dim `{self}` evaluates to {v}, which is negative"))
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::constant(n)
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::constant(n as u64)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::sym(s)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "{}", self.constant);
        }
        let mut first = true;
        for (s, &c) in &self.terms {
            let (sign, mag) = if c < 0 { ("-", c.unsigned_abs()) } else { ("+", c.unsigned_abs()) };
            if first {
                if c < 0 {
                    f.write_str("-")?;
                }
            } else {
                f.write_str(sign)?;
            }
            if mag != 1 {
                write!(f, "{mag}*")?;
            }
            f.write_str(s)?;
            first = false;
        }
        match self.constant {
            0 => Ok(()),
            c if c > 0 => write!(f, "+{c}"),
            c => write!(f, "{c}"),
        }
    }
}

/// A tensor shape: one [`Dim`] per axis, outermost first.
pub type Shape = Vec<Dim>;

/// Writes a shape as `[S, 64]`.
pub fn fmt_shape(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// A polynomial in the symbols: monomial (sorted symbol multiset) -> coefficient.
pub type Poly = BTreeMap<Vec<String>, i64>;

/// The number of elements of a shape, as a polynomial, so that reshapes of symbolic shapes can
/// be checked (`[S, 4, 8]` and `[S, 32]` have equal element counts). `None` if a coefficient
/// overflows i64.
pub fn numel(shape: &[Dim]) -> Option<Poly> {
    let mut acc: Poly = BTreeMap::from([(Vec::new(), 1)]);
    for d in shape {
        let mut next: Poly = BTreeMap::new();
        for (mono, coeff) in &acc {
            let mut add = |m: Vec<String>, c: Option<i64>| -> Option<()> {
                let e = next.entry(m.clone()).or_insert(0);
                *e = e.checked_add(c?)?;
                if *e == 0 {
                    next.remove(&m);
                }
                Some(())
            };
            if d.constant != 0 {
                add(mono.clone(), coeff.checked_mul(d.constant))?;
            }
            for (s, c) in &d.terms {
                let mut m = mono.clone();
                m.push(s.clone());
                m.sort();
                add(m, coeff.checked_mul(*c))?;
            }
        }
        acc = next;
    }
    Some(acc)
}

/// Evaluates a shape under symbol bindings.
pub fn eval_shape(shape: &[Dim], syms: &SymBindings) -> Result<Vec<usize>, String> {
    shape.iter().map(|d| d.eval(syms).map(|v| v as usize)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_algebra() {
        let s = Dim::sym("S");
        let p = Dim::sym("P");
        assert_eq!(p.add(&s).to_string(), "P+S");
        assert_eq!(s.add(&s).add(&Dim::constant(1)).to_string(), "2*S+1");
        assert_eq!(s.sub(&p).to_string(), "-P+S");
        assert_eq!(s.sub(&s).to_string(), "0");
        assert_eq!(s.sub(&Dim::constant(3)).to_string(), "S-3");
    }

    #[test]
    fn numel_compares_symbolic_reshapes() {
        let a = vec![Dim::sym("S"), Dim::constant(4), Dim::constant(8)];
        let b = vec![Dim::sym("S"), Dim::constant(32)];
        assert_eq!(numel(&a), numel(&b));
        assert!(numel(&a).is_some());
        let c = vec![Dim::sym("S"), Dim::constant(31)];
        assert_ne!(numel(&a), numel(&c));
    }

    #[test]
    fn substitute_binds_some_symbols() {
        let d = Dim::sym("P").add(&Dim::sym("S"));
        let syms = SymBindings::from([("S".to_string(), 1)]);
        assert_eq!(d.substitute(&syms).to_string(), "P+1");
        let syms = SymBindings::from([("S".to_string(), 1), ("P".to_string(), 4)]);
        assert_eq!(d.substitute(&syms), Dim::constant(5));
    }

    #[test]
    fn eval_reports_missing_and_negative() {
        let d = Dim::sym("S").sub(&Dim::constant(2));
        assert!(d.eval(&SymBindings::new()).unwrap_err().contains("`S`"));
        let syms = SymBindings::from([("S".to_string(), 1)]);
        assert!(d.eval(&syms).unwrap_err().contains("negative"));
    }
}
