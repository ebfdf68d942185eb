//! Symbolic dimensions: constants, named symbols (`B`, `T`) and affine
//! expressions of them (`P+T` for a KV cache), plus the polynomial element
//! counts needed to check reshapes with symbolic shapes.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, Sub};

/// Values bound to shape symbols at run time (`T = 128`).
pub type Bindings = BTreeMap<String, i64>;

/// A dimension `c + Σ kᵢ·symᵢ`. Kept canonical (no zero coefficients, symbols
/// sorted) so that structural equality is symbolic equality.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Dim {
    constant: i64,
    terms: BTreeMap<String, i64>,
}

impl Dim {
    /// A constant dimension.
    pub fn new(value: i64) -> Dim {
        Dim { constant: value, terms: BTreeMap::new() }
    }

    /// A named symbol bound at run time.
    pub fn sym(name: &str) -> Dim {
        let mut terms = BTreeMap::new();
        terms.insert(name.to_string(), 1);
        Dim { constant: 0, terms }
    }

    /// `Some(c)` when the dimension does not depend on any symbol.
    pub fn as_const(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    /// `Some(name)` when the dimension is exactly one symbol.
    pub fn as_symbol(&self) -> Option<&str> {
        if self.constant != 0 || self.terms.len() != 1 {
            return None;
        }
        let (name, &k) = self.terms.iter().next()?;
        (k == 1).then_some(name.as_str())
    }

    /// The symbols this dimension mentions.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.terms.keys().map(String::as_str)
    }

    /// `k · self`.
    pub fn scale(&self, k: i64) -> Dim {
        // Wrapping: absurd sizes in a malformed file must not panic the parser.
        let mut out = Dim::new(self.constant.wrapping_mul(k));
        for (s, c) in &self.terms {
            out.add_term(s, c.wrapping_mul(k));
        }
        out
    }

    fn add_term(&mut self, sym: &str, k: i64) {
        let entry = self.terms.entry(sym.to_string()).or_insert(0);
        *entry = entry.wrapping_add(k);
        if *entry == 0 {
            self.terms.remove(sym);
        }
    }

    /// Evaluates the dimension under `bindings`; errors name the unbound symbol.
    pub fn eval(&self, bindings: &Bindings) -> Result<i64, String> {
        let mut v = self.constant;
        for (s, k) in &self.terms {
            let x = bindings.get(s).ok_or_else(|| format!("shape symbol `{s}` is not bound"))?;
            v = k
                .checked_mul(*x)
                .and_then(|t| v.checked_add(t))
                .ok_or_else(|| format!("dimension {self} overflows"))?;
        }
        Ok(v)
    }

    /// Replaces symbols by dimensions (used to instantiate a function signature
    /// at a call site); symbols absent from `subst` stay as they are.
    pub fn substitute(&self, subst: &BTreeMap<String, Dim>) -> Dim {
        let mut out = Dim::new(self.constant);
        for (s, k) in &self.terms {
            match subst.get(s) {
                Some(d) => out = out + d.scale(*k),
                None => out.add_term(s, *k),
            }
        }
        out
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::new(v)
    }
}

impl From<usize> for Dim {
    fn from(v: usize) -> Dim {
        Dim::new(v as i64)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::sym(s)
    }
}

impl Add for Dim {
    type Output = Dim;
    fn add(mut self, rhs: Dim) -> Dim {
        self.constant = self.constant.wrapping_add(rhs.constant);
        for (s, k) in &rhs.terms {
            self.add_term(s, *k);
        }
        self
    }
}

impl Sub for Dim {
    type Output = Dim;
    fn sub(self, rhs: Dim) -> Dim {
        self + rhs.scale(-1)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (s, &k) in &self.terms {
            let sign = if k < 0 {
                "-"
            } else if first {
                ""
            } else {
                "+"
            };
            let mag = k.unsigned_abs();
            if mag == 1 {
                write!(f, "{sign}{s}")?;
            } else {
                write!(f, "{sign}{mag}*{s}")?;
            }
            first = false;
        }
        if first {
            write!(f, "{}", self.constant)
        } else if self.constant > 0 {
            write!(f, "+{}", self.constant)
        } else if self.constant < 0 {
            write!(f, "-{}", self.constant.unsigned_abs())
        } else {
            Ok(())
        }
    }
}

/// A polynomial over shape symbols: the element count of a symbolic shape.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Poly(BTreeMap<Vec<String>, i64>);

impl Poly {
    /// The product of the dimensions of `shape`.
    pub fn numel(shape: &[Dim]) -> Poly {
        let mut acc = Poly(BTreeMap::from([(Vec::new(), 1)]));
        for d in shape {
            acc = acc.mul_dim(d);
        }
        acc
    }

    fn mul_dim(&self, d: &Dim) -> Poly {
        let mut out: BTreeMap<Vec<String>, i64> = BTreeMap::new();
        for (mono, c) in &self.0 {
            let mut add = |m: Vec<String>, v: i64| {
                let e = out.entry(m.clone()).or_insert(0);
                *e = e.wrapping_add(v);
                if *e == 0 {
                    out.remove(&m);
                }
            };
            if d.constant != 0 {
                add(mono.clone(), c.wrapping_mul(d.constant));
            }
            for (s, k) in &d.terms {
                let mut m = mono.clone();
                m.push(s.clone());
                m.sort();
                add(m, c.wrapping_mul(*k));
            }
        }
        Poly(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_arithmetic_is_canonical() {
        let p_t = Dim::sym("P") + Dim::sym("T");
        assert_eq!(p_t.to_string(), "P+T");
        assert_eq!((p_t.clone() - Dim::sym("P")), Dim::sym("T"));
        assert_eq!((Dim::sym("T") - Dim::new(1)).to_string(), "T-1");
        assert_eq!(Dim::sym("T").scale(-2).to_string(), "-2*T");
        assert_eq!((Dim::new(3) - Dim::new(3)).to_string(), "0");
        let b: Bindings = [("P".to_string(), 5), ("T".to_string(), 7)].into();
        assert_eq!(p_t.eval(&b), Ok(12));
        assert!(Dim::sym("Q").eval(&b).is_err());
    }

    #[test]
    fn numel_polynomials_compare_reshapes() {
        let a = [Dim::sym("B"), Dim::sym("T"), Dim::new(64)];
        let b = [Dim::sym("B"), Dim::sym("T"), Dim::new(8), Dim::new(8)];
        let c = [Dim::sym("B"), Dim::new(64), Dim::sym("T")];
        assert_eq!(Poly::numel(&a), Poly::numel(&b));
        assert_eq!(Poly::numel(&a), Poly::numel(&c));
        assert_ne!(Poly::numel(&a), Poly::numel(&[Dim::sym("B"), Dim::new(64)]));
    }
}
