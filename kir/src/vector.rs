//! Which loops run `W` iterations at a time, and what that means.
//!
//! Under a schedule with `vector_width == W` ([`lanes`]: a power of two,
//! at least 2), an innermost loop whose accesses are contiguous (stride 1)
//! or invariant (stride 0) in its index is a *vector loop*: iterations run in
//! groups of `W`, then the rest one by one. Lanes are independent, so loads,
//! lets and stores give exactly the sequential results. Accumulations are the
//! one place the order shows, so it is part of the semantics, and every
//! backend and the evaluator follow it:
//!
//! 1. each accumulator gets `W` partial results, each starting at the
//!    [`identity`] of its op;
//! 2. lane `j` folds in the iterations of the vector part whose offset from
//!    the loop's start is `≡ j (mod W)`, in order;
//! 3. the partials are combined pairwise by halves ([`combine_lanes`]; for
//!    `W = 4`: `(p0 ∘ p1) ∘ (p2 ∘ p3)`), and that is folded into the
//!    accumulator: `acc = acc ∘ combined`;
//! 4. the remaining iterations fold in one by one, in order.
//!
//! Independent partial results are what make a reduction run at vector
//! speed; folding in a fixed tree keeps every backend bit-identical to the
//! evaluator for a given schedule. Backends choose the width when kernels are
//! lowered for them (Cranelift: 4; LLVM: the CPU's vector registers).

use crate::{Binary, Expr, Index, Schedule, Stmt, Var};

/// The lanes of the vector loops of `schedule`, if it has any.
pub fn lanes(schedule: &Schedule) -> Option<u64> {
    let w = u64::from(schedule.vector_width);
    (w >= 2 && w.is_power_of_two()).then_some(w)
}

/// The value `x ∘ identity = x` for every `x` (including −0 for addition).
pub fn identity(op: Binary) -> f32 {
    match op {
        Binary::Max => f32::NEG_INFINITY,
        Binary::Min => f32::INFINITY,
        Binary::Mul => 1.0,
        _ => -0.0,
    }
}

/// The accumulators a loop body folds into, with their ops.
pub fn accumulators(body: &[Stmt]) -> Vec<(Var, Binary)> {
    body.iter()
        .filter_map(|s| match s {
            Stmt::Accumulate { var, op, .. } => Some((*var, *op)),
            _ => None,
        })
        .collect()
}

/// Whether the innermost loop over `var` with `body` is a vector loop.
pub fn vectorizable(var: Var, body: &[Stmt]) -> bool {
    let accs: Vec<Var> = accumulators(body).into_iter().map(|(v, _)| v).collect();
    let index_ok = |ix: &Index, must_move: bool| match ix.terms.iter().find(|(v, _)| *v == var) {
        Some(&(_, stride)) => stride == 1,
        None => !must_move,
    };
    fn expr_ok(e: &Expr, var: Var, accs: &[Var], index_ok: &dyn Fn(&Index, bool) -> bool) -> bool {
        let ok = |x: &Expr| expr_ok(x, var, accs, index_ok);
        match e {
            // An accumulator's running value differs between lanes and the sequential order.
            Expr::Var(v) => *v != var && !accs.contains(v),
            Expr::F32(_) | Expr::I32(_) => true,
            Expr::Load { index, .. } => index_ok(index, false),
            Expr::Binary(Binary::Shl | Binary::ShrU, a, b) => ok(a) && matches!(**b, Expr::I32(_)),
            Expr::Unary(_, x) | Expr::FromBits(x) | Expr::ToBits(x) | Expr::ToInt(x) | Expr::ToFloat(x) => ok(x),
            Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => ok(a) && ok(b),
            Expr::Select(c, a, b) => ok(c) && ok(a) && ok(b),
            Expr::Gpu(_) => false,
        }
    }
    body.iter().all(|s| match s {
        Stmt::Let { value, .. } => expr_ok(value, var, &accs, &index_ok),
        Stmt::Accumulate { op, value, .. } => {
            matches!(op, Binary::Add | Binary::Mul | Binary::Max | Binary::Min) && expr_ok(value, var, &accs, &index_ok)
        }
        Stmt::Store { index, value, .. } => index_ok(index, true) && expr_ok(value, var, &accs, &index_ok),
        Stmt::Loop { .. } | Stmt::Gpu(_) => false,
    })
}

/// Step 3 of the module's rule: the first half's combination `∘` the second
/// half's, recursively, with `combine` as `∘` (`partials` is not empty).
pub fn combine_lanes<T: Copy>(partials: &[T], combine: &mut impl FnMut(T, T) -> T) -> T {
    match partials {
        [one] => *one,
        _ => {
            let (low, high) = partials.split_at(partials.len() / 2);
            let low = combine_lanes(low, combine);
            let high = combine_lanes(high, combine);
            combine(low, high)
        }
    }
}
