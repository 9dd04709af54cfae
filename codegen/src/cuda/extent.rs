//! Dims as CUDA C expressions, and extents (grid sizes, buffer sizes) as products of dims.
//!
//! Kernels are compiled once per shape with symbols (`S` new tokens, `P` cached positions) left
//! free: a kernel reads their values from its first argument, `const long long* sym`, in the
//! program's symbol order. The host evaluates the same expressions to size grids and buffers.

use std::fmt;

use saturn_ir::Dim;
use serde::Serialize;

/// `dim` as a C expression of type `long long` over `sym[i]` (i = the symbol's index).
pub(crate) fn c_dim(dim: &Dim, symbols: &[String]) -> String {
    if let Some(c) = dim.as_const() {
        return format!("{c}LL");
    }
    let mut s = String::from("(");
    for (i, (name, coef)) in dim.terms().enumerate() {
        let index = symbols.iter().position(|x| x == name).expect("symbols come from the graph");
        let term = match coef {
            1 => format!("sym[{index}]"),
            -1 => format!("-sym[{index}]"),
            c => format!("{c}LL * sym[{index}]"),
        };
        if i > 0 && !term.starts_with('-') {
            s.push_str(" + ");
        } else if i > 0 {
            s.push(' ');
        }
        s.push_str(&term);
    }
    match dim.constant_part() {
        0 => {}
        c if c > 0 => s.push_str(&format!(" + {c}LL")),
        c => s.push_str(&format!(" - {}LL", -c)),
    }
    s.push(')');
    s
}

/// The product of `dims` as a C expression (`1LL` for none).
pub(crate) fn c_product(dims: &[Dim], symbols: &[String]) -> String {
    if dims.is_empty() {
        return "1LL".into();
    }
    let constant: u64 = dims.iter().filter_map(Dim::as_const).product();
    let mut parts: Vec<String> = dims.iter().filter(|d| !d.is_const()).map(|d| c_dim(d, symbols)).collect();
    if constant != 1 || parts.is_empty() {
        parts.insert(0, format!("{constant}LL"));
    }
    parts.join(" * ")
}

/// `ceil(product(factors) / div)`: a grid dimension or a byte size that depends on symbols.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Extent {
    #[serde(serialize_with = "serialize_dims")]
    pub factors: Vec<Dim>,
    pub div: u64,
}

fn serialize_dims<S: serde::Serializer>(dims: &[Dim], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(dims.iter().map(Dim::to_string))
}

impl Extent {
    pub fn one() -> Extent {
        Extent { factors: Vec::new(), div: 1 }
    }

    pub fn of(factors: impl IntoIterator<Item = Dim>) -> Extent {
        Extent { factors: factors.into_iter().collect(), div: 1 }
    }

    /// `self * k`.
    pub fn times(mut self, k: u64) -> Extent {
        if k != 1 {
            self.factors.push(Dim::constant(k));
        }
        self
    }

    /// `ceil(self / d)`.
    pub fn ceil_div(mut self, d: u64) -> Extent {
        self.div *= d.max(1);
        self
    }

    /// The value for the symbols' values (in the program's symbol order); `None` on a negative
    /// dim or overflow.
    pub fn eval(&self, symbols: &[String], values: &[u64]) -> Option<u64> {
        let mut p: u64 = 1;
        for d in &self.factors {
            let mut v = i128::from(d.constant_part());
            for (name, c) in d.terms() {
                let i = symbols.iter().position(|x| x == name)?;
                v += i128::from(c) * i128::from(*values.get(i)?);
            }
            p = p.checked_mul(u64::try_from(v).ok()?)?;
        }
        Some(p.div_ceil(self.div))
    }
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let product = if self.factors.is_empty() {
            "1".to_string()
        } else {
            let parts: Vec<String> = self
                .factors
                .iter()
                .map(
                    |d| if d.is_const() || d.terms().count() == 0 { d.to_string() } else { format!("({d})") },
                )
                .collect();
            parts.join("*")
        };
        match self.div {
            1 => f.write_str(&product),
            d => write!(f, "ceil({product}/{d})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms() -> Vec<String> {
        vec!["P".into(), "S".into()]
    }

    #[test]
    fn dims_become_c_expressions_over_the_symbol_array() {
        assert_eq!(c_dim(&Dim::constant(64), &syms()), "64LL");
        assert_eq!(c_dim(&Dim::sym("S"), &syms()), "(sym[1])");
        let d = Dim::sym("P").add(&Dim::sym("S")).sub(&Dim::constant(2));
        assert_eq!(c_dim(&d, &syms()), "(sym[0] + sym[1] - 2LL)");
        assert_eq!(
            c_product(&[Dim::sym("S"), Dim::constant(4), Dim::constant(8)], &syms()),
            "32LL * (sym[1])"
        );
    }

    #[test]
    fn extents_evaluate_and_print() {
        let e = Extent::of([Dim::sym("S"), Dim::constant(1000)]).ceil_div(256);
        assert_eq!(e.eval(&syms(), &[0, 3]), Some(12));
        assert_eq!(e.to_string(), "ceil((S)*1000/256)");
        assert_eq!(Extent::one().eval(&syms(), &[0, 0]), Some(1));
        let neg = Extent::of([Dim::sym("S").sub(&Dim::constant(5))]);
        assert_eq!(neg.eval(&syms(), &[0, 3]), None);
    }
}
