//! Shorthands for building GPU kernels in kernel IR, shared by the lowerings.

use super::lower::block_reduce;
use crate::{Binary, Body, Expr, GpuExpr, IntOp, LaunchIndex, Stmt, Var};

/// A launch index.
pub(crate) fn index(i: LaunchIndex) -> Expr {
    Expr::Gpu(GpuExpr::Index(i))
}

/// Integer arithmetic beyond `+` and `−`.
pub(crate) fn int(op: IntOp, a: Expr, b: Expr) -> Expr {
    Expr::Gpu(GpuExpr::Int(op, Box::new(a), Box::new(b)))
}

/// Element `at` of buffer `buf`.
pub(crate) fn load(buf: usize, at: Expr) -> Expr {
    Expr::Gpu(GpuExpr::LoadAt { buf, at: Box::new(at) })
}

/// `a + b` on i32s.
pub(crate) fn add(a: Expr, b: Expr) -> Expr {
    a.bin(Binary::IAdd, b)
}

/// `a · n` on i32s.
pub(crate) fn mul(a: Expr, n: i32) -> Expr {
    int(IntOp::Mul, a, Expr::I32(n))
}

/// `min(max(x, lo), hi)` on i32s.
pub(crate) fn clamp(x: Expr, lo: i32, hi: i32) -> Expr {
    int(IntOp::Min, int(IntOp::Max, x, Expr::I32(lo)), Expr::I32(hi))
}

/// The first element a thread takes in a grid-stride loop, and the loop's step.
pub(crate) fn grid_stride() -> (Expr, Expr) {
    let start =
        add(int(IntOp::Mul, index(LaunchIndex::Block), index(LaunchIndex::BlockDim)), index(LaunchIndex::Thread));
    let step = int(IntOp::Mul, index(LaunchIndex::GridDim), index(LaunchIndex::BlockDim));
    (start, step)
}

/// Statements built in a nested scope that shares `b`'s variable numbering.
pub(crate) fn nested(b: &mut Body, build: impl FnOnce(&mut Body)) -> Vec<Stmt> {
    let mut inner = Body { stmts: Vec::new(), next_var: b.next_var };
    build(&mut inner);
    b.next_var = inner.next_var;
    inner.stmts
}

/// `for var in 0..extent` over a body built in its own scope.
pub(crate) fn counted(b: &mut Body, extent: u64, build: impl FnOnce(&mut Body, Expr)) {
    let var = b.fresh();
    let body = nested(b, |inner| build(inner, Expr::Var(var)));
    b.stmts.push(Stmt::Loop { var, extent, body });
}

/// A variable bound to `value` that `Set` or `Accumulate` may change later.
pub(crate) fn mutable(b: &mut Body, value: Expr) -> Var {
    let var = b.fresh();
    b.stmts.push(Stmt::Let { var, value });
    var
}

/// Replaces every thread's `acc` by the block's fold of all of them (`warps` warps;
/// more than one needs the kernel's first shared array to hold one slot per warp).
pub(crate) fn reduce(b: &mut Body, acc: Var, op: Binary, warps: u32) {
    let mut next = b.next_var;
    let mut fresh = || {
        next += 1;
        next - 1
    };
    block_reduce(&mut b.stmts, acc, op, warps, &mut fresh);
    b.next_var = next;
}
