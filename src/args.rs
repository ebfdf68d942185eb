//! Value parsers for numeric flags: every number from the user is checked
//! (NaN, ±Inf, out of range) before any work, and clap's error names the flag.

fn float(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// A finite number > 0.
pub fn positive(s: &str) -> Result<f64, String> {
    float(s).and_then(|x| if x > 0.0 { Ok(x) } else { Err(format!("{x} is not > 0")) })
}

/// A finite number ≥ 0.
pub fn non_negative(s: &str) -> Result<f64, String> {
    float(s).and_then(|x| if x >= 0.0 { Ok(x) } else { Err(format!("{x} is not ≥ 0")) })
}

/// A number in [0, 1).
pub fn fraction(s: &str) -> Result<f64, String> {
    float(s).and_then(|x| if (0.0..1.0).contains(&x) { Ok(x) } else { Err(format!("{x} is outside [0, 1)")) })
}

/// A finite number > 1 (a factor over a running mean).
pub fn above_one(s: &str) -> Result<f64, String> {
    float(s).and_then(|x| if x > 1.0 { Ok(x) } else { Err(format!("{x} is not > 1")) })
}

/// A count ≥ 1, where 0 would mean nothing to do.
pub fn count(s: &str) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number"))?;
    if n >= 1 {
        Ok(n)
    } else {
        Err("0 leaves nothing to do; pass at least 1".into())
    }
}

/// A step count ≥ 1.
pub fn steps(s: &str) -> Result<u64, String> {
    count(s).map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_numbers_are_refused() {
        for bad in ["NaN", "nan", "inf", "-inf", "1e999", "x", ""] {
            assert!(non_negative(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("3e-3"), Ok(3e-3));
        assert!(positive("0").is_err() && non_negative("-1").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(fraction("1").is_err() && fraction("-0.1").is_err());
        assert_eq!(fraction("0.95"), Ok(0.95));
        assert!(above_one("1").is_err());
        assert!(count("0").is_err() && count("-3").is_err());
        assert_eq!(steps("12"), Ok(12));
    }
}
