//! Derived shape symbols: dimensions computed from bound symbols before a
//! program runs, for sizes that are not affine, such as Mixture-of-Recursions'
//! expert-choice capacity `k = max(1, round(0.75·T))`.

use crate::dim::{Bindings, Dim};
use std::fmt;

/// `name = max(min, round_half_even(fraction · of))`.
#[derive(Clone, Debug, PartialEq)]
pub struct DerivedSymbol {
    /// The symbol defined.
    pub name: String,
    /// The dimension it is a fraction of.
    pub of: Dim,
    /// The fraction (capacity).
    pub fraction: f64,
    /// Lower bound.
    pub min: i64,
}

impl DerivedSymbol {
    /// Evaluates under `bindings` (which must bind the symbols of `of`).
    pub fn eval(&self, bindings: &Bindings) -> Result<i64, String> {
        let of = self.of.eval(bindings)?;
        let scaled = self.fraction * of as f64;
        let rounded =
            if (scaled - scaled.trunc()).abs() == 0.5 { 2.0 * (scaled / 2.0).round() } else { scaled.round() };
        Ok((rounded as i64).max(self.min))
    }

    /// Evaluates every derived symbol in order, adding them to `bindings`.
    pub fn bind_all(symbols: &[DerivedSymbol], bindings: &mut Bindings) -> Result<(), String> {
        for s in symbols {
            let v = s.eval(bindings).map_err(|e| format!("symbol {}: {e}", s.name))?;
            bindings.insert(s.name.clone(), v);
        }
        Ok(())
    }
}

impl fmt::Display for DerivedSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "symbol {} = max({}, round({:?}*{}))", self.name, self.min, self.fraction, self.of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_rounds_half_to_even_with_a_floor() {
        let s = |fraction| DerivedSymbol { name: "K".into(), of: Dim::sym("T"), fraction, min: 1 };
        let b = |t| Bindings::from([("T".to_string(), t)]);
        assert_eq!(s(0.75).eval(&b(10)), Ok(8)); // 7.5 → 8
        assert_eq!(s(0.25).eval(&b(10)), Ok(2)); // 2.5 → 2
        assert_eq!(s(0.25).eval(&b(2)), Ok(1)); // 0.5 → 0 → floor 1
        assert_eq!(s(1.0).eval(&b(7)), Ok(7));
    }
}
