//! The routed packing of a `routed_call` (MoR's recursion steps on the
//! active tokens only) as GPU kernels:
//!
//! - [`active_rows`]: one warp per sequence scans its `bool[T]` mask in tiles
//!   of 32 (an inclusive prefix sum by `shfl.up`), giving each active row its
//!   packed slot, the packed rows' positions in order, and the count;
//! - [`pack`]: `[B, T, ..] → [B, N, ..]`, packed row `k` of a sequence being
//!   its `k`-th active row (rows past the count zero);
//! - [`unpack`]: `[B, N, ..] → [B, T, ..]`, each active row from its slot,
//!   inactive rows zero.
//!
//! `N` is the packed row count the region was planned at (the interpreter's
//! `ActiveRows::packed`: the largest count, rounded up to 16).

use super::build::{add, clamp, grid_stride, index, int, load, mul, mutable, nested};
use super::lower::{ELEMENT_BLOCK, MAX_GRID};
use crate::{
    Binary, Body, Buffer, Compare, Elem, Expr, GpuStmt, IntOp, Kernel, Launch, LaunchIndex, Schedule, Shuffle, Stmt,
    WARP,
};

fn fits(n: usize, name: &str) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| format!("kernel {name}: {n} exceeds the GPU lowering's 32-bit indices"))
}

fn buffer(name: &str, len: usize, output: bool, elem: Elem) -> Buffer {
    Buffer { name: name.into(), len: len as u64, output, elem }
}

fn kernel(name: &str, buffers: Vec<Buffer>, b: Body, launch: Launch) -> Kernel {
    Kernel {
        name: name.to_string(),
        buffers,
        body: b.stmts,
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(launch),
    }
}

/// Buffers `mask [B·T] (u8) → slots [B·T], positions [B·T], counts [B]` (i32):
/// `slots` holds each active row's packed slot (−1 if inactive), `positions`
/// each sequence's active positions in order.
pub fn active_rows(name: &str, batch: usize, seq: usize) -> Result<Kernel, String> {
    let (t, n) = (fits(seq, name)?, fits(batch * seq, name)?);
    let mut b = Body::default();
    let s = b.fresh();
    let body = nested(&mut b, |b| {
        let lane = index(LaunchIndex::Lane);
        let row0 = b.bind(mul(Expr::Var(s), t));
        let base = mutable(b, Expr::I32(0));
        let tile = b.fresh();
        let each = nested(b, |b| {
            let pos = b.bind(add(Expr::Var(tile), lane.clone()));
            let inside = b.bind(pos.clone().cmp(Compare::Lt, Expr::I32(t)));
            let at = b.bind(add(row0.clone(), int(IntOp::Min, pos.clone(), Expr::I32(t - 1))));
            let on = load(0, at.clone()).cmp(Compare::Ne, Expr::I32(0));
            let active = b.bind(Expr::select(inside.clone(), on, inside.clone()));
            // Inclusive prefix sum of the tile's active flags across the warp.
            let sum = mutable(b, Expr::select(active.clone(), Expr::I32(1), Expr::I32(0)));
            for d in [1, 2, 4, 8, 16] {
                let up = b.fresh();
                b.stmts.push(Stmt::Gpu(GpuStmt::Shuffle {
                    var: up,
                    value: Expr::Var(sum),
                    mode: Shuffle::Up,
                    lane: Expr::I32(d),
                }));
                let add_up = Expr::select(lane.clone().cmp(Compare::Ge, Expr::I32(d)), Expr::Var(up), Expr::I32(0));
                b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: sum, value: Expr::Var(sum).bin(Binary::IAdd, add_up) }));
            }
            let slot = b.bind(Expr::Var(base).bin(Binary::IAdd, Expr::Var(sum)).bin(Binary::ISub, Expr::I32(1)));
            let stores = vec![Stmt::Gpu(GpuStmt::StoreAt {
                buf: 1,
                at: at.clone(),
                value: Expr::select(active.clone(), slot.clone(), Expr::I32(-1)),
            })];
            b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: inside, body: stores }));
            let place =
                vec![Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: add(row0.clone(), clamp(slot, 0, t - 1)), value: pos })];
            b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: active, body: place }));
            let total = b.fresh();
            let last = Expr::I32(WARP as i32 - 1);
            b.stmts.push(Stmt::Gpu(GpuStmt::Shuffle {
                var: total,
                value: Expr::Var(sum),
                mode: Shuffle::Index,
                lane: last,
            }));
            b.stmts.push(Stmt::Gpu(GpuStmt::Set {
                var: base,
                value: Expr::Var(base).bin(Binary::IAdd, Expr::Var(total)),
            }));
        });
        let step = Expr::I32(WARP as i32);
        b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: tile, start: Expr::I32(0), end: Expr::I32(t), step, body: each }));
        let count = vec![Stmt::Gpu(GpuStmt::StoreAt { buf: 3, at: Expr::Var(s), value: Expr::Var(base) })];
        b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: lane.cmp(Compare::Eq, Expr::I32(0)), body: count }));
    });
    let (start, step) = (index(LaunchIndex::Block), index(LaunchIndex::GridDim));
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: s, start, end: Expr::I32(fits(batch, name)?), step, body }));
    let buffers = vec![
        buffer("mask", n as usize, false, Elem::U8),
        buffer("slots", n as usize, true, Elem::I32),
        buffer("positions", n as usize, true, Elem::I32),
        buffer("counts", batch, true, Elem::I32),
    ];
    let launch = Launch { grid: (batch as u64).clamp(1, MAX_GRID) as u32, block: WARP, shared: vec![], local: vec![] };
    Ok(kernel(name, buffers, b, launch))
}

/// How routed rows are moved: `[batch, seq, width]` and `[batch, packed, width]` of `elem`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    /// Sequences.
    pub batch: usize,
    /// Rows per sequence before packing.
    pub seq: usize,
    /// Rows per sequence after packing.
    pub packed: usize,
    /// Elements per row.
    pub width: usize,
    /// Their storage type.
    pub elem: Elem,
}

fn zero(elem: Elem) -> Expr {
    if elem.is_float() {
        Expr::F32(0.0)
    } else {
        Expr::I32(0)
    }
}

/// A grid-stride loop over `count` elements of `[batch, rows, width]`; `each` gets
/// the element, its sequence and its row.
fn over(b: &mut Body, count: i32, rows: i32, width: i32, each: impl FnOnce(&mut Body, Expr, Expr, Expr)) {
    let e = b.fresh();
    let body = nested(b, |b| {
        let row = b.bind(int(IntOp::Div, Expr::Var(e), Expr::I32(width)));
        let s = b.bind(int(IntOp::Div, row.clone(), Expr::I32(rows)));
        let r = b.bind(int(IntOp::Rem, row, Expr::I32(rows)));
        each(b, Expr::Var(e), s, r);
    });
    let (start, step) = grid_stride();
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: e, start, end: Expr::I32(count), step, body }));
}

fn launch(count: usize) -> Launch {
    let grid = (count as u64).div_ceil(u64::from(ELEMENT_BLOCK)).clamp(1, MAX_GRID) as u32;
    Launch { grid, block: ELEMENT_BLOCK, shared: vec![], local: vec![] }
}

/// Buffers `x [B·T·W], positions, counts → out [B·N·W]`.
pub fn pack(name: &str, r: &Rows) -> Result<Kernel, String> {
    let (t, n, w) = (fits(r.seq, name)?, fits(r.packed, name)?, fits(r.width, name)?);
    let count = r.batch * r.packed * r.width;
    fits(r.batch * r.seq * r.width, name)?;
    if r.packed > r.seq || r.width == 0 {
        return Err(format!("kernel {name}: {} packed rows of {} ({} wide)", r.packed, r.seq, r.width));
    }
    let mut b = Body::default();
    over(&mut b, fits(count, name)?, n, w, |b, e, s, k| {
        let c = b.bind(int(IntOp::Rem, e.clone(), Expr::I32(w)));
        let row0 = b.bind(mul(s.clone(), t));
        let live = b.bind(k.clone().cmp(Compare::Lt, load(2, s)));
        let from = clamp(load(1, add(row0.clone(), k)), 0, t - 1);
        let x = load(0, add(mul(add(row0, from), w), c));
        b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 3, at: e, value: Expr::select(live, x, zero(r.elem)) }));
    });
    let buffers = vec![
        buffer("x", r.batch * r.seq * r.width, false, r.elem),
        buffer("positions", r.batch * r.seq, false, Elem::I32),
        buffer("counts", r.batch, false, Elem::I32),
        buffer("packed", count, true, r.elem),
    ];
    Ok(kernel(name, buffers, b, launch(count)))
}

/// Buffers `y [B·N·W], slots → out [B·T·W]`.
pub fn unpack(name: &str, r: &Rows) -> Result<Kernel, String> {
    let (t, n, w) = (fits(r.seq, name)?, fits(r.packed, name)?, fits(r.width, name)?);
    let count = r.batch * r.seq * r.width;
    fits(count, name)?;
    if r.packed == 0 || r.packed > r.seq || r.width == 0 {
        return Err(format!("kernel {name}: {} packed rows of {} ({} wide)", r.packed, r.seq, r.width));
    }
    let mut b = Body::default();
    over(&mut b, fits(count, name)?, t, w, |b, e, s, row| {
        let c = b.bind(int(IntOp::Rem, e.clone(), Expr::I32(w)));
        let slot = b.bind(load(1, add(mul(s.clone(), t), row)));
        let ge = b.bind(slot.clone().cmp(Compare::Ge, Expr::I32(0)));
        let live = Expr::select(ge.clone(), slot.clone().cmp(Compare::Lt, Expr::I32(n)), ge);
        let y = load(0, add(mul(add(mul(s, n), clamp(slot, 0, n - 1)), w), c));
        b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: e, value: Expr::select(live, y, zero(r.elem)) }));
    });
    let buffers = vec![
        buffer("y", r.batch * r.packed * r.width, false, r.elem),
        buffer("slots", r.batch * r.seq, false, Elem::I32),
        buffer("out", count, true, r.elem),
    ];
    Ok(kernel(name, buffers, b, launch(count)))
}
