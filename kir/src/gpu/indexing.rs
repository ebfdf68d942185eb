//! Ops that move elements through an index tensor, as GPU kernels that
//! compute each output element on its own (deterministic, race-free):
//!
//! - `gather`: the element the index names along the axis;
//! - `scatter` / `scatter_add`: each output element scans the index entries
//!   that could name it, in order, so the last write wins and sums add in
//!   the interpreter's order — O(m) per element for `m` index entries along
//!   the axis (MoR's routing: the selected tokens of a sequence);
//! - `topk`: each input element counts the elements that precede it in the
//!   descending order (ties to the lower index) and, if that rank is below
//!   `k`, writes itself and its index there — O(n) per element.
//!
//! Indices are clamped into range, where the interpreter reports an error.

use super::build::{clamp, counted, mutable, nested};
use super::movement::{buffers, elements, flat, i32_of, strides, Build, Operand};
use crate::{Binary, Body, Compare, Elem, Expr, GpuStmt, Kernel, Stmt};
use lsc_ir::Op;

/// The kernel of `op` if it is `gather`, `scatter`, `scatter_add` or `topk`.
pub(super) fn op_kernel(
    name: &str,
    op: &Op,
    inputs: &[Operand],
    outputs: &[Operand],
    in_place: bool,
) -> Option<Kernel> {
    let b = Build { buffers: buffers(inputs, outputs), body: Body::default() };
    match (op, inputs, outputs) {
        (Op::Gather { axis }, [x, idx], [out]) if !in_place && out.shape == idx.shape => gather(b, name, *axis, x, out),
        (Op::Scatter { axis } | Op::ScatterAdd { axis }, [x, idx, src], [out]) if !in_place && x.shape == out.shape => {
            scatter(b, name, *axis, (idx, src, out), matches!(op, Op::ScatterAdd { .. }), false)
        }
        (Op::Scatter { axis } | Op::ScatterAdd { axis }, [idx, src], [target]) if in_place => {
            scatter(b, name, *axis, (idx, src, target), matches!(op, Op::ScatterAdd { .. }), true)
        }
        (Op::TopK { axis, .. }, [x], [values, indices]) if !in_place => topk(b, name, *axis, x, values, indices),
        _ => None,
    }
}

/// `out[m] = x[m with m[axis] ← idx[m]]` (buffers `x, idx → out`).
fn gather(b: Build, name: &str, axis: usize, x: &Operand, out: &Operand) -> Option<Kernel> {
    let n = i32_of(*x.shape.get(axis)?)?;
    b.finish(name, elements(&out.shape), |b, e| {
        let at = b.unflatten(&e, &out.shape)?;
        // Off the axis, the index may not be larger than x: its coordinates are x's.
        if (0..x.shape.len()).any(|d| d != axis && out.shape[d] > x.shape[d]) {
            return None;
        }
        let mut src = at.clone();
        src[axis] = b.bind(clamp(super::build::load(1, e.clone()), 0, n - 1));
        let value = super::build::load(0, flat(&src, &strides(&x.shape))?);
        b.store(2, e, value);
        Some(())
    })
}

/// `scatter` / `scatter_add` of `src` at `idx` (the index's shape) along `axis`,
/// as each element of `out` (`x`'s shape) sees it. Buffers `x, idx, src → out`,
/// or `idx, src → out` in place (`x` is `out`).
fn scatter(
    b: Build,
    name: &str,
    axis: usize,
    ops: (&Operand, &Operand, &Operand),
    add: bool,
    in_place: bool,
) -> Option<Kernel> {
    let (idx, src, out) = ops;
    if idx.shape != src.shape || idx.shape.len() != out.shape.len() {
        return None;
    }
    let (x_buf, idx_buf, src_buf, out_buf) = if in_place { (2, 0, 1, 2) } else { (0, 1, 2, 3) };
    let float = out.elem.is_float();
    let entries = *idx.shape.get(axis)? as u64;
    b.finish(name, elements(&out.shape), |b, e| {
        let at = b.unflatten(&e, &out.shape)?;
        let acc = mutable(&mut b.body, super::build::load(x_buf, e.clone()));
        // The index entries off the axis at this element's coordinates (if it has any).
        let mut inside: Option<Expr> = None;
        let mut from = at.clone();
        for d in (0..out.shape.len()).filter(|&d| d != axis) {
            let (n, m) = (i32_of(idx.shape[d])?, i32_of(out.shape[d])?);
            if n < m {
                let c = at[d].clone().cmp(Compare::Lt, Expr::I32(n));
                inside = Some(match inside {
                    None => c,
                    Some(prev) => Expr::select(prev.clone(), c, prev),
                });
                from[d] = super::build::int(crate::IntOp::Min, at[d].clone(), Expr::I32(n - 1));
            }
        }
        let idx_strides = strides(&idx.shape);
        let scan = nested(&mut b.body, |body| {
            counted(body, entries, |body, j| {
                let mut entry = from.clone();
                entry[axis] = j;
                let Some(entry_at) = flat(&entry, &idx_strides) else { return };
                let entry_at = body.bind(entry_at);
                let target = super::build::load(idx_buf, entry_at.clone());
                let hit = target.cmp(Compare::Eq, at[axis].clone());
                let v = super::build::load(src_buf, entry_at);
                let value = match (add, float) {
                    (false, _) => v,
                    (true, true) => Expr::Var(acc).bin(Binary::Add, v),
                    (true, false) => Expr::Var(acc).bin(Binary::IAdd, v),
                };
                let set = vec![Stmt::Gpu(GpuStmt::Set { var: acc, value })];
                body.stmts.push(Stmt::Gpu(GpuStmt::If { cond: hit, body: set }));
            });
        });
        match inside {
            None => b.body.stmts.extend(scan),
            Some(cond) => b.body.stmts.push(Stmt::Gpu(GpuStmt::If { cond, body: scan })),
        }
        b.store(out_buf, e, Expr::Var(acc));
        Some(())
    })
}

/// The `k` largest elements along `axis` in descending order (ties to the lower
/// index) and their indices. Buffers `x → values, indices`.
fn topk(b: Build, name: &str, axis: usize, x: &Operand, values: &Operand, indices: &Operand) -> Option<Kernel> {
    let (n, k) = (*x.shape.get(axis)?, *values.shape.get(axis)?);
    if k > n || k == 0 || indices.shape != values.shape || indices.elem != Elem::I64 {
        return None;
    }
    let (xs, out_strides) = (strides(&x.shape), strides(&values.shape));
    b.finish(name, elements(&x.shape), |b, e| {
        let at = b.unflatten(&e, &x.shape)?;
        let me = b.bind(super::build::load(0, e.clone()));
        let j = at[axis].clone();
        let rank = mutable(&mut b.body, Expr::I32(0));
        counted(&mut b.body, n as u64, |body, l| {
            let mut other = at.clone();
            other[axis] = l.clone();
            let Some(other_at) = flat(&other, &xs) else { return };
            let them = body.bind(super::build::load(0, other_at));
            let greater = body.bind(them.clone().cmp(Compare::Gt, me.clone()));
            let equal = body.bind(them.cmp(Compare::Eq, me.clone()));
            let before = Expr::select(equal.clone(), l.cmp(Compare::Lt, j.clone()), equal);
            let beats = Expr::select(greater.clone(), greater, before);
            let step = Expr::select(beats, Expr::I32(1), Expr::I32(0));
            body.stmts.push(Stmt::Gpu(GpuStmt::Set { var: rank, value: Expr::Var(rank).bin(Binary::IAdd, step) }));
        });
        let mut dst = at.clone();
        dst[axis] = b.bind(clamp(Expr::Var(rank), 0, i32_of(k)? - 1));
        let dst_at = b.bind(flat(&dst, &out_strides)?);
        let write = vec![
            Stmt::Gpu(GpuStmt::StoreAt { buf: 1, at: dst_at.clone(), value: me }),
            Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: dst_at, value: j }),
        ];
        let cond = Expr::Var(rank).cmp(Compare::Lt, Expr::I32(i32_of(k)?));
        b.body.stmts.push(Stmt::Gpu(GpuStmt::If { cond, body: write }));
        Some(())
    })
}
