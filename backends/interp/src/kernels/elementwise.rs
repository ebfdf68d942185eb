//! Elementwise ops: unary and binary arithmetic, comparisons, select, clamp
//! and casts.

use super::{PACKED, R};
use crate::math::{erf, gelu, round_half_even, sigmoid, Real};
use crate::value::{Data, DataMut, View, ViewMut};
use lsc_ir::{BinaryOp, CmpOp, DType, UnaryOp};
use std::cmp::Ordering;

/// Rounds a value to the precision of a float dtype (f16 and bf16 values are held in `T`).
pub(crate) fn round_to<T: Real>(x: T, dtype: DType) -> T {
    match dtype {
        DType::F16 => T::from_f64(half::f16::from_f64(x.to_f64()).to_f64()),
        DType::BF16 => T::from_f64(half::bf16::from_f64(x.to_f64()).to_f64()),
        _ => x,
    }
}

/// `out[i] = f(x[i])`, rounded to the output's float dtype.
fn map_floats<T: Real>(x: &View<'_, T>, out: &mut ViewMut<'_, T>, f: impl Fn(T) -> T) -> R<()> {
    let dtype = out.dtype;
    for (o, &v) in out.floats()?.iter_mut().zip(x.floats()?) {
        *o = round_to(f(v), dtype);
    }
    Ok(())
}

/// A unary op (`not` of bools, `neg`/`abs` of integers, the rest of floats).
pub fn unary<T: Real>(u: UnaryOp, x: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    match (&x.data, &mut out.data, u) {
        (Data::Bool(v), DataMut::Bool(o), UnaryOp::Not) => {
            o.iter_mut().zip(*v).for_each(|(o, b)| *o = !b);
            return Ok(());
        }
        (Data::Int(v), DataMut::Int(o), UnaryOp::Neg | UnaryOp::Abs) => {
            let f = if u == UnaryOp::Neg { i64::wrapping_neg } else { i64::wrapping_abs };
            o.iter_mut().zip(*v).for_each(|(o, &a)| *o = f(a));
            return Ok(());
        }
        _ => {}
    }
    let one = T::from_f64(1.0);
    map_floats(x, out, |x| match u {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => T::from_f64(x.to_f64().abs()),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => one / x.sqrt(),
        UnaryOp::Recip => one / x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::Gelu => T::from_f64(gelu(x.to_f64())),
        UnaryOp::Erf => T::from_f64(erf(x.to_f64())),
        UnaryOp::Sin => T::from_f64(x.to_f64().sin()),
        UnaryOp::Cos => T::from_f64(x.to_f64().cos()),
        UnaryOp::Round => T::from_f64(round_half_even(x.to_f64())),
        UnaryOp::Not => x,
    })
}

/// `min(max(x, lo), hi)` (NaN stays NaN).
pub fn clamp<T: Real>(x: &View<'_, T>, lo: f64, hi: f64, out: &mut ViewMut<'_, T>) -> R<()> {
    if let (Data::Int(v), DataMut::Int(o)) = (&x.data, &mut out.data) {
        o.iter_mut().zip(*v).for_each(|(o, &a)| *o = (a as f64).clamp(lo, hi) as i64);
        return Ok(());
    }
    let (lo, hi) = (T::from_f64(lo), T::from_f64(hi));
    map_floats(x, out, |x| {
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    })
}

/// A binary op on two operands of one kind.
pub fn binary<T: Real>(b: BinaryOp, x: &View<'_, T>, y: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let dtype = out.dtype;
    match (&x.data, &y.data, &mut out.data) {
        (Data::Float(p), Data::Float(q), DataMut::Float(o)) => {
            let f = |a: T, c: T| -> T {
                match b {
                    BinaryOp::Add => a + c,
                    BinaryOp::Sub => a - c,
                    BinaryOp::Mul => a * c,
                    BinaryOp::Div => a / c,
                    BinaryOp::Max if a >= c || a.is_nan() => a,
                    BinaryOp::Min if a <= c || a.is_nan() => a,
                    BinaryOp::Max | BinaryOp::Min => c,
                    BinaryOp::Pow => a.powf(c),
                    BinaryOp::And | BinaryOp::Or => a,
                }
            };
            for ((o, &a), &c) in o.iter_mut().zip(*p).zip(*q) {
                *o = round_to(f(a, c), dtype);
            }
        }
        (Data::Int(p), Data::Int(q), DataMut::Int(o)) => {
            for ((o, &a), &c) in o.iter_mut().zip(*p).zip(*q) {
                *o = match b {
                    BinaryOp::Add => a.wrapping_add(c),
                    BinaryOp::Sub => a.wrapping_sub(c),
                    BinaryOp::Mul => a.wrapping_mul(c),
                    BinaryOp::Div => a.checked_div(c).ok_or("integer division by zero")?,
                    BinaryOp::Max => a.max(c),
                    BinaryOp::Min => a.min(c),
                    BinaryOp::Pow | BinaryOp::And | BinaryOp::Or => return Err(format!("`{}` of integers", b.name())),
                };
            }
        }
        (Data::Bool(p), Data::Bool(q), DataMut::Bool(o)) => {
            for ((o, &a), &c) in o.iter_mut().zip(*p).zip(*q) {
                *o = if b == BinaryOp::And { a && c } else { a || c };
            }
        }
        _ => return Err(format!("`{}` operands have different kinds", b.name())),
    }
    Ok(())
}

/// An elementwise comparison (floats are ordered: NaN compares false but for `ne`).
pub fn compare<T: Real>(c: CmpOp, x: &View<'_, T>, y: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let test = |o: Option<Ordering>| match c {
        CmpOp::Eq => o == Some(Ordering::Equal),
        CmpOp::Ne => o != Some(Ordering::Equal),
        CmpOp::Lt => o == Some(Ordering::Less),
        CmpOp::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => o == Some(Ordering::Greater),
        CmpOp::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
    };
    let out = out.bools()?;
    match (&x.data, &y.data) {
        (Data::Float(p), Data::Float(q)) => out.iter_mut().zip(p.iter().zip(*q)).for_each(|(o, (a, b))| {
            *o = test(a.partial_cmp(b));
        }),
        (Data::Int(p), Data::Int(q)) => {
            out.iter_mut().zip(p.iter().zip(*q)).for_each(|(o, (a, b))| *o = test(Some(a.cmp(b))))
        }
        (Data::Bool(p), Data::Bool(q)) => {
            out.iter_mut().zip(p.iter().zip(*q)).for_each(|(o, (a, b))| *o = test(Some(a.cmp(b))))
        }
        _ => return Err("comparison operands have different kinds".into()),
    }
    Ok(())
}

/// `cond ? a : b`.
pub fn select<T: Real>(cond: &View<'_, T>, a: &View<'_, T>, b: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let Data::Bool(c) = cond.data else { return Err("select condition is not bool".into()) };
    fn pick<E: Copy>(c: &[bool], a: &[E], b: &[E], out: &mut [E]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = if c[i] { a[i] } else { b[i] };
        }
    }
    match (&a.data, &b.data, &mut out.data) {
        (Data::Float(p), Data::Float(q), DataMut::Float(o)) => pick(c, p, q, o),
        (Data::Int(p), Data::Int(q), DataMut::Int(o)) => pick(c, p, q, o),
        (Data::Bool(p), Data::Bool(q), DataMut::Bool(o)) => pick(c, p, q, o),
        _ => return Err("select branches have different kinds".into()),
    }
    Ok(())
}

/// Conversion with PyTorch's rules: float→int truncates toward zero, anything→bool is `!= 0`.
pub fn cast<T: Real>(x: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let to = out.dtype;
    if let Data::Ternary(_) = x.data {
        return Err(PACKED.into());
    }
    let wrap = |a: i64| match to {
        DType::I32 => a as i32 as i64,
        DType::I8 => a as i8 as i64,
        _ => a,
    };
    match (&x.data, &mut out.data) {
        (Data::Int(v), DataMut::Int(o)) => o.iter_mut().zip(*v).for_each(|(o, &a)| *o = wrap(a)),
        (_, DataMut::Int(o)) => {
            o.iter_mut().zip(x.to_f64_vec()).for_each(|(o, a)| *o = wrap(a.trunc() as i64));
        }
        (_, DataMut::Float(o)) => {
            o.iter_mut().zip(x.to_f64_vec()).for_each(|(o, a)| *o = round_to(T::from_f64(a), to));
        }
        (_, DataMut::Bool(o)) => o.iter_mut().zip(x.to_f64_vec()).for_each(|(o, a)| *o = a != 0.0),
        (_, DataMut::Ternary(_)) => return Err("a cast cannot pack ternary weights (ternary_pack does)".into()),
    }
    Ok(())
}
