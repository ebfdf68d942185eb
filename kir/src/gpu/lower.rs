//! Lowering a fused group to a GPU kernel. The group is first lowered as for
//! the CPU ([`crate::lower`]): a nest of loops over rows whose body computes
//! one row. That nest is then mapped onto threads:
//!
//! - **Elementwise groups** (no reduced axes): each thread takes rows
//!   `block · block_dim + thread`, then every `grid_dim · block_dim`th (a
//!   grid-stride loop, so any size runs on any grid); the row's loop indices
//!   are recovered from the flat index by division and remainder.
//! - **Row groups** (norms, softmax, losses): one block per row (grid-stride
//!   over rows). Each inner loop over the row's elements is split across the
//!   block's threads (thread `t` takes elements `t, t + block_dim, …`); after
//!   a loop that accumulates, each thread's partial result is combined by a
//!   warp butterfly, one slot per warp in shared memory, a barrier, and a
//!   fold of the slots that every thread does in the same order. A per-row
//!   store is done by thread 0 alone.
//!
//! GEMMs are not lowered here: the plan calls a library for them.

use crate::lower::{lower_nest, Group};
use crate::vector::identity;
use crate::{
    Array, ArrayRef, Binary, Compare, Expr, GpuExpr, GpuStmt, IntOp, Kernel, Launch, LaunchIndex, Scalar, Schedule,
    Stmt, Var, WARP,
};

/// Threads per block of an elementwise kernel.
pub(crate) const ELEMENT_BLOCK: u32 = 256;
/// The most threads a row kernel gives one row.
pub(crate) const ROW_BLOCK: u32 = 256;
/// The largest grid a kernel is launched on (grid-stride loops take the rest).
pub(crate) const MAX_GRID: u64 = 65_535;

fn index(i: LaunchIndex) -> Expr {
    Expr::Gpu(GpuExpr::Index(i))
}

fn int(op: IntOp, a: Expr, b: Expr) -> Expr {
    Expr::Gpu(GpuExpr::Int(op, Box::new(a), Box::new(b)))
}

fn i32_of(n: u64, what: &str, k: &str) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| format!("kernel {k}: {what} {n} exceeds the GPU lowering's 32-bit indices"))
}

/// The GPU kernel computing `g`.
pub fn lower_group(g: &Group) -> Result<Kernel, String> {
    let (cpu, depth) = lower_nest(g, 1)?;
    for b in &cpu.buffers {
        i32_of(b.len, "buffer length", &g.name)?;
    }
    let mut next_var = cpu.vars;
    let mut fresh = || {
        next_var += 1;
        next_var - 1
    };
    // Peel the loops over rows.
    let mut outer: Vec<(Var, u64)> = Vec::new();
    let mut body = cpu.body;
    for _ in 0..depth {
        match <[Stmt; 1]>::try_from(body) {
            Ok([Stmt::Loop { var, extent, body: inner }]) => {
                outer.push((var, extent));
                body = inner;
            }
            _ => return Err(format!("kernel {}: the row loops are not a nest", g.name)),
        }
    }
    let rows: u64 = outer.iter().map(|&(_, e)| e).product();
    let rows_i = i32_of(rows, "row count", &g.name)?;
    // Each row loop's index from the flat row index.
    let flat = fresh();
    let mut row_body = Vec::new();
    let mut inner_rows = 1u64;
    for (k, &(var, extent)) in outer.iter().enumerate().rev() {
        let mut v = Expr::Var(flat);
        if inner_rows > 1 {
            v = int(IntOp::Div, v, Expr::I32(i32_of(inner_rows, "row count", &g.name)?));
        }
        if k > 0 {
            v = int(IntOp::Rem, v, Expr::I32(i32_of(extent, "row count", &g.name)?));
        }
        row_body.push(Stmt::Let { var, value: v });
        inner_rows *= extent;
    }
    row_body.reverse();
    let (launch, start, step, rest) = if g.reduced_axes == 0 {
        let grid = rows.div_ceil(u64::from(ELEMENT_BLOCK)).clamp(1, MAX_GRID) as u32;
        let start = int(IntOp::Mul, index(LaunchIndex::Block), index(LaunchIndex::BlockDim))
            .bin(Binary::IAdd, index(LaunchIndex::Thread));
        let step = int(IntOp::Mul, index(LaunchIndex::GridDim), index(LaunchIndex::BlockDim));
        let launch = Launch { grid, block: ELEMENT_BLOCK, shared: vec![], local: vec![] };
        (launch, start, step, body)
    } else {
        let split = g.shape.len() - g.reduced_axes;
        let row_len: u64 = g.shape[split..].iter().map(|&n| n as u64).product();
        let block = (row_len.next_power_of_two().clamp(u64::from(WARP), u64::from(ROW_BLOCK))) as u32;
        let grid = rows.clamp(1, MAX_GRID) as u32;
        let warps = block / WARP;
        let shared =
            if warps > 1 { vec![Array { name: "partials".into(), len: warps, scalar: Scalar::F32 }] } else { vec![] };
        let launch = Launch { grid, block, shared, local: vec![] };
        let rest = split_row(body, warps, &mut fresh);
        (launch, index(LaunchIndex::Block), index(LaunchIndex::GridDim), rest)
    };
    row_body.extend(rest);
    let body = vec![Stmt::Gpu(GpuStmt::Range { var: flat, start, end: Expr::I32(rows_i), step, body: row_body })];
    Ok(Kernel {
        name: cpu.name,
        buffers: cpu.buffers,
        body,
        vars: next_var,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(launch),
    })
}

/// Every accumulator folded into anywhere in `body`, with its op.
fn accumulators(body: &[Stmt], out: &mut Vec<(Var, Binary)>) {
    for s in body {
        match s {
            Stmt::Accumulate { var, op, .. } if !out.iter().any(|(v, _)| v == var) => out.push((*var, *op)),
            Stmt::Loop { body, .. } => accumulators(body, out),
            _ => {}
        }
    }
}

/// One row's statements with its element loops split across the block's threads.
fn split_row(body: Vec<Stmt>, warps: u32, fresh: &mut impl FnMut() -> Var) -> Vec<Stmt> {
    let mut out = Vec::new();
    for s in body {
        match s {
            Stmt::Loop { var, extent, body } => {
                let mut accs = Vec::new();
                accumulators(&body, &mut accs);
                out.push(Stmt::Gpu(GpuStmt::Range {
                    var,
                    start: index(LaunchIndex::Thread),
                    end: Expr::I32(extent as i32),
                    step: index(LaunchIndex::BlockDim),
                    body,
                }));
                for (acc, op) in accs {
                    block_reduce(&mut out, acc, op, warps, fresh);
                }
            }
            Stmt::Store { .. } => out.push(Stmt::Gpu(GpuStmt::If {
                cond: index(LaunchIndex::Thread).cmp(Compare::Eq, Expr::I32(0)),
                body: vec![s],
            })),
            other => out.push(other),
        }
    }
    out
}

/// Replaces each thread's partial `acc` by the block's fold of all of them.
pub(crate) fn block_reduce(out: &mut Vec<Stmt>, acc: Var, op: Binary, warps: u32, fresh: &mut impl FnMut() -> Var) {
    let in_warp = fresh();
    out.push(Stmt::Gpu(GpuStmt::WarpReduce { var: in_warp, op, value: Expr::Var(acc) }));
    if warps == 1 {
        out.push(Stmt::Gpu(GpuStmt::Set { var: acc, value: Expr::Var(in_warp) }));
        return;
    }
    let slots = ArrayRef::Shared(0);
    out.push(Stmt::Gpu(GpuStmt::If {
        cond: index(LaunchIndex::Lane).cmp(Compare::Eq, Expr::I32(0)),
        body: vec![Stmt::Gpu(GpuStmt::ArrayStore {
            array: slots,
            at: index(LaunchIndex::Warp),
            value: Expr::Var(in_warp),
        })],
    }));
    out.push(Stmt::Gpu(GpuStmt::Barrier));
    out.push(Stmt::Gpu(GpuStmt::Set { var: acc, value: Expr::F32(identity(op)) }));
    let w = fresh();
    out.push(Stmt::Loop {
        var: w,
        extent: u64::from(warps),
        body: vec![Stmt::Accumulate {
            var: acc,
            op,
            value: Expr::Gpu(GpuExpr::ArrayLoad { array: slots, at: Box::new(Expr::Var(w)) }),
        }],
    });
    // The slots are written again by the next reduction: every thread must have read them first.
    out.push(Stmt::Gpu(GpuStmt::Barrier));
}
