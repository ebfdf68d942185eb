//! GAM's depthwise causal convolution over time as GPU kernels:
//! `y[b, t, c] = Σ_j w[c, j] · x[b, t − (K − 1) + j, c]` (zero before the
//! sequence starts), one thread per output element; its gradient as two
//! kernels: `d_x` one thread per element (the taps read forward in time),
//! `d_w` a block per tap, folding the products over every position with a
//! block-wide reduction.

use super::build::{add, clamp, grid_stride, index, int, load, mul, mutable, nested, reduce};
use super::lower::{ELEMENT_BLOCK, MAX_GRID, ROW_BLOCK};
use crate::{
    Array, Binary, Body, Buffer, Compare, Elem, Expr, GpuStmt, IntOp, Kernel, Launch, LaunchIndex, Scalar, Schedule,
    Stmt, WARP,
};

/// A convolution's shape: `x [batch, seq, channels]`, `w [channels, 1, taps]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Channels.
    pub channels: usize,
    /// Taps.
    pub taps: usize,
}

impl Conv {
    fn dims(&self, name: &str) -> Result<(i32, i32, i32, i32), String> {
        let n = self.batch * self.seq * self.channels;
        let c = |x: usize| i32::try_from(x).map_err(|_| format!("kernel {name}: {x} exceeds 32-bit indices"));
        if self.taps == 0 || n == 0 {
            return Err(format!("kernel {name}: an empty convolution {self:?}"));
        }
        c(n)?;
        c(self.channels * self.taps)?;
        Ok((c(self.seq)?, c(self.channels)?, c(self.taps)?, c(n)?))
    }
    fn elements(&self) -> u64 {
        (self.batch * self.seq * self.channels) as u64
    }
}

fn buffer(name: &str, len: u64, output: bool) -> Buffer {
    Buffer { name: name.into(), len, output, elem: Elem::F32 }
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

fn element_launch(n: u64) -> Launch {
    Launch {
        grid: n.div_ceil(u64::from(ELEMENT_BLOCK)).clamp(1, MAX_GRID) as u32,
        block: ELEMENT_BLOCK,
        shared: vec![],
        local: vec![],
    }
}

/// A grid-stride loop over `n` elements; `each` builds one element's statements from
/// its index `(p, t, c)` (flat, position in the sequence, channel).
fn over_elements(b: &mut Body, n: i32, t: i32, c: i32, each: impl FnOnce(&mut Body, Expr, Expr, Expr)) {
    let p = b.fresh();
    let body = nested(b, |b| {
        let ti = b.bind(int(IntOp::Rem, int(IntOp::Div, Expr::Var(p), Expr::I32(c)), Expr::I32(t)));
        let ci = b.bind(int(IntOp::Rem, Expr::Var(p), Expr::I32(c)));
        each(b, Expr::Var(p), ti, ci);
    });
    let (start, step) = grid_stride();
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: p, start, end: Expr::I32(n), step, body }));
}

/// `(x, w) → y`.
pub fn forward(name: &str, s: &Conv) -> Result<Kernel, String> {
    let (t, c, k, n) = s.dims(name)?;
    let mut b = Body::default();
    over_elements(&mut b, n, t, c, |b, p, ti, ci| {
        let sum = mutable(b, Expr::F32(0.0));
        let j = b.fresh();
        let tap = nested(b, |b| {
            // x at (t − (K − 1) + j), that is p + (j − (K − 1))·C: before the start, nothing.
            let back = b.bind(Expr::Var(j).bin(Binary::ISub, Expr::I32(k - 1)));
            let valid = b.bind(add(ti, back.clone()).cmp(Compare::Ge, Expr::I32(0)));
            let x = load(0, clamp(add(p.clone(), mul(back, c)), 0, n - 1));
            let w = load(1, add(mul(ci, k), Expr::Var(j)));
            let value = Expr::select(valid, w.bin(Binary::Mul, x), Expr::F32(0.0));
            b.stmts.push(Stmt::Accumulate { var: sum, op: Binary::Add, value });
        });
        b.stmts.push(Stmt::Loop { var: j, extent: s.taps as u64, body: tap });
        b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: p, value: Expr::Var(sum) }));
    });
    let e = s.elements();
    let buffers = vec![buffer("x", e, false), buffer("w", (s.channels * s.taps) as u64, false), buffer("y", e, true)];
    Ok(kernel(name, buffers, b, element_launch(e)))
}

/// `(w, d_y) → d_x`: `d_x[t] = Σ_j w[j] · d_y[t + (K − 1) − j]` within the sequence.
pub fn grad_x(name: &str, s: &Conv) -> Result<Kernel, String> {
    let (t, c, k, n) = s.dims(name)?;
    let mut b = Body::default();
    over_elements(&mut b, n, t, c, |b, p, ti, ci| {
        let sum = mutable(b, Expr::F32(0.0));
        let j = b.fresh();
        let tap = nested(b, |b| {
            let ahead = b.bind(Expr::I32(k - 1).bin(Binary::ISub, Expr::Var(j)));
            let valid = b.bind(add(ti, ahead.clone()).cmp(Compare::Lt, Expr::I32(t)));
            let g = load(1, clamp(add(p.clone(), mul(ahead, c)), 0, n - 1));
            let w = load(0, add(mul(ci, k), Expr::Var(j)));
            let value = Expr::select(valid, w.bin(Binary::Mul, g), Expr::F32(0.0));
            b.stmts.push(Stmt::Accumulate { var: sum, op: Binary::Add, value });
        });
        b.stmts.push(Stmt::Loop { var: j, extent: s.taps as u64, body: tap });
        b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: p, value: Expr::Var(sum) }));
    });
    let e = s.elements();
    let buffers =
        vec![buffer("w", (s.channels * s.taps) as u64, false), buffer("d_y", e, false), buffer("d_x", e, true)];
    Ok(kernel(name, buffers, b, element_launch(e)))
}

/// `(x, d_y) → d_w`: tap `(c, j)` is `Σ over positions of x[t − (K − 1) + j, c] · d_y[t, c]`.
pub fn grad_w(name: &str, s: &Conv) -> Result<Kernel, String> {
    let (t, c, k, n) = s.dims(name)?;
    let positions = i32::try_from(s.batch * s.seq).map_err(|e| e.to_string())?;
    let block = (s.batch * s.seq).next_power_of_two().clamp(WARP as usize, ROW_BLOCK as usize) as u32;
    let warps = block / WARP;
    let mut b = Body::default();
    let tap = b.fresh();
    let body = nested(&mut b, |b| {
        let ci = b.bind(int(IntOp::Div, Expr::Var(tap), Expr::I32(k)));
        let j = b.bind(int(IntOp::Rem, Expr::Var(tap), Expr::I32(k)));
        let back = b.bind(j.bin(Binary::ISub, Expr::I32(k - 1)));
        let sum = mutable(b, Expr::F32(0.0));
        let q = b.fresh();
        let each = nested(b, |b| {
            let ti = b.bind(int(IntOp::Rem, Expr::Var(q), Expr::I32(t)));
            let at = b.bind(add(mul(Expr::Var(q), c), ci.clone()));
            let valid = b.bind(add(ti, back.clone()).cmp(Compare::Ge, Expr::I32(0)));
            let x = load(0, clamp(add(at.clone(), mul(back.clone(), c)), 0, n - 1));
            let value = Expr::select(valid, x.bin(Binary::Mul, load(1, at)), Expr::F32(0.0));
            b.stmts.push(Stmt::Accumulate { var: sum, op: Binary::Add, value });
        });
        let (start, step) = (index(LaunchIndex::Thread), index(LaunchIndex::BlockDim));
        b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: q, start, end: Expr::I32(positions), step, body: each }));
        reduce(b, sum, Binary::Add, warps);
        let first = vec![Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: Expr::Var(tap), value: Expr::Var(sum) })];
        b.stmts.push(Stmt::Gpu(GpuStmt::If {
            cond: index(LaunchIndex::Thread).cmp(Compare::Eq, Expr::I32(0)),
            body: first,
        }));
    });
    let taps = (s.channels * s.taps) as u64;
    let (start, step) = (index(LaunchIndex::Block), index(LaunchIndex::GridDim));
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: tap, start, end: Expr::I32(c * k), step, body }));
    let e = s.elements();
    let buffers = vec![buffer("x", e, false), buffer("d_y", e, false), buffer("d_w", taps, true)];
    let shared =
        if warps > 1 { vec![Array { name: "partials".into(), len: warps, scalar: Scalar::F32 }] } else { vec![] };
    Ok(kernel(name, buffers, b, Launch { grid: taps.clamp(1, MAX_GRID) as u32, block, shared, local: vec![] }))
}
