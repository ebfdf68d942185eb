//! LS-attention forward as a GPU kernel: one warp per query row, keys
//! visited in tiles of 32 with an online softmax (FlashAttention's running
//! maximum and sum). Lane `l` scores key `tile + l` of the tile (a dot
//! product of the query and key rows), a warp butterfly gives the tile's
//! maximum and sum, and the tile's probabilities are broadcast lane to lane
//! (`shfl.idx`) into the output row, whose columns are split across lanes
//! (`lane, lane + 32, …`) in a per-thread array. A local head's row `i`
//! visits only its window `i − w < j ≤ i`, so the work is O(T·w); a global
//! head is causal. The row's largest scaled logit is the second output.
//! The backward's kernels ([`super::attention_grad`]) are built from the
//! same pieces.

use super::build::{add, counted, index, int, load, mul, mutable, nested};
use crate::math::exp;
use crate::{
    Array, ArrayRef, Binary, Body, Buffer, Compare, Elem, Expr, GpuExpr, GpuStmt, IntOp, Kernel, Launch, LaunchIndex,
    Scalar, Schedule, Shuffle, Stmt, Var, WARP,
};

/// The largest grid launched (rows beyond it are taken in a grid-stride loop).
const MAX_GRID: u64 = 65_535;

/// The shape of one `ls_attention`: `q, k, v, out: [batch, heads, seq, dim]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    /// Sequences.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Head size.
    pub dim: usize,
    /// Window per head (0: global, causal).
    pub windows: Vec<usize>,
    /// Logit scale.
    pub scale: f32,
}

impl Attention {
    /// Rows (`batch · heads · seq`), checked to fit the 32-bit indices of the kernels.
    pub(crate) fn check(&self) -> Result<usize, String> {
        let fits = |n: usize, what: &str| {
            i32::try_from(n).map(|_| ()).map_err(|_| format!("ls_attention: {what} {n} exceeds 32-bit indices"))
        };
        if self.windows.len() != self.heads || self.dim == 0 || self.seq == 0 {
            let (w, h, d) = (self.windows.len(), self.heads, self.dim);
            return Err(format!("ls_attention: {w} windows for {h} heads, head size {d}"));
        }
        fits(self.batch * self.heads * self.seq * self.dim, "tensor size")?;
        for &w in &self.windows {
            fits(w, "window")?;
        }
        Ok(self.batch * self.heads * self.seq)
    }
}

/// Columns of a row of `dim` each lane holds.
pub(crate) fn slots(dim: usize) -> u32 {
    dim.div_ceil(WARP as usize) as u32
}

/// Where a kernel's row `row` (a query or a key row of one head) sits.
pub(crate) struct Row {
    /// Position in the sequence.
    pub i: Expr,
    /// First element of the head (`bh · T · D`).
    pub base: Expr,
    /// First element of the row.
    pub at: Expr,
    /// The head's window (0: global).
    pub window: Expr,
}

/// Binds row `row`'s position, head and window.
pub(crate) fn row(b: &mut Body, a: &Attention, row: Var) -> Row {
    let (t, d) = (a.seq as i32, a.dim as i32);
    let bh = b.bind(int(IntOp::Div, Expr::Var(row), Expr::I32(t)));
    let i = b.bind(int(IntOp::Rem, Expr::Var(row), Expr::I32(t)));
    let head = b.bind(int(IntOp::Rem, bh.clone(), Expr::I32(a.heads as i32)));
    // The window of this row's head: a select over the (few) heads.
    let mut w = Expr::I32(a.windows[a.heads - 1] as i32);
    for (h, &win) in a.windows.iter().enumerate().rev().skip(1) {
        w = Expr::select(head.clone().cmp(Compare::Eq, Expr::I32(h as i32)), Expr::I32(win as i32), w);
    }
    let window = b.bind(w);
    let base = b.bind(mul(bh, t * d));
    let at = b.bind(add(base.clone(), mul(i.clone(), d)));
    Row { i, base, at, window }
}

/// The first key query `r` sees: `max(i + 1 − w, 0)`, or 0 for a global head.
pub(crate) fn first_key(b: &mut Body, r: &Row) -> Expr {
    let windowed = int(IntOp::Max, add(r.i.clone(), Expr::I32(1)).bin(Binary::ISub, r.window.clone()), Expr::I32(0));
    b.bind(Expr::select(r.window.clone().cmp(Compare::Eq, Expr::I32(0)), Expr::I32(0), windowed))
}

/// `Σ_c x[x_at + c] · y[y_at + c]` over a head row of `dim` elements, in one thread.
pub(crate) fn dot(b: &mut Body, dim: usize, x: (usize, Expr), y: (usize, Expr)) -> Expr {
    let sum = mutable(b, Expr::F32(0.0));
    counted(b, dim as u64, |b, c| {
        let value = load(x.0, add(x.1.clone(), c.clone())).bin(Binary::Mul, load(y.0, add(y.1.clone(), c)));
        b.stmts.push(Stmt::Accumulate { var: sum, op: Binary::Add, value });
    });
    Expr::Var(sum)
}

/// A warp-wide fold of each lane's `value`.
pub(crate) fn warp(b: &mut Body, op: Binary, value: Expr) -> Expr {
    let var = b.fresh();
    b.stmts.push(Stmt::Gpu(GpuStmt::WarpReduce { var, op, value }));
    Expr::Var(var)
}

/// Column `lane + 32·r` of a head row, and whether it is inside the row.
pub(crate) fn column(b: &mut Body, r: &Expr, dim: usize) -> (Expr, Expr) {
    let c = b.bind(add(index(LaunchIndex::Lane), mul(r.clone(), WARP as i32)));
    (c.clone(), c.cmp(Compare::Lt, Expr::I32(dim as i32)))
}

pub(crate) fn slot(array: ArrayRef, r: Expr) -> Expr {
    Expr::Gpu(GpuExpr::ArrayLoad { array, at: Box::new(r) })
}

/// `acc[r] = value(acc[r])` for every slot of the per-lane row array.
pub(crate) fn each_slot(b: &mut Body, dim: usize, acc: ArrayRef, value: impl Fn(Expr) -> Expr) {
    counted(b, u64::from(slots(dim)), |b, r| {
        let value = value(slot(acc, r.clone()));
        b.stmts.push(Stmt::Gpu(GpuStmt::ArrayStore { array: acc, at: r, value }));
    });
}

/// `acc[·] += Σ_jj weight(lane jj) · src[base + (tile + jj)·D + ·]` over the
/// tile's rows `tile + jj ≤ last`: each lane's weight is broadcast to the
/// warp, which adds its row of `src` into the columns the lanes hold.
pub(crate) fn gather_rows(
    b: &mut Body,
    dim: usize,
    acc: ArrayRef,
    weight: &Expr,
    rows: (&Expr, &Expr),
    src: (usize, &Expr),
) {
    let (tile, last) = rows;
    let d = dim as i32;
    counted(b, u64::from(WARP), |b, jj| {
        let w = b.fresh();
        let shuffle = GpuStmt::Shuffle { var: w, value: weight.clone(), mode: Shuffle::Index, lane: jj.clone() };
        b.stmts.push(Stmt::Gpu(shuffle));
        let other = b.bind(add(tile.clone(), jj));
        let other_at = b.bind(add(src.1.clone(), mul(int(IntOp::Min, other.clone(), last.clone()), d)));
        let body = nested(b, |b| {
            counted(b, u64::from(slots(dim)), |b, r| {
                let (c, inside) = column(b, &r, dim);
                let update = nested(b, |b| {
                    let x = load(src.0, add(other_at.clone(), int(IntOp::Min, c, Expr::I32(d - 1))));
                    let value = slot(acc, r.clone()).bin(Binary::Add, Expr::Var(w).bin(Binary::Mul, x));
                    b.stmts.push(Stmt::Gpu(GpuStmt::ArrayStore { array: acc, at: r, value }));
                });
                b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: inside, body: update }));
            });
        });
        b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: other.cmp(Compare::Le, last.clone()), body }));
    });
}

/// Stores the per-lane row array `acc · factor` into `buf` at row `at`.
pub(crate) fn store_row(b: &mut Body, dim: usize, acc: ArrayRef, factor: Option<Expr>, buf: usize, at: &Expr) {
    let d = dim as i32;
    counted(b, u64::from(slots(dim)), |b, r| {
        let (c, inside) = column(b, &r, dim);
        let store = nested(b, |b| {
            let mut value = slot(acc, r);
            if let Some(f) = &factor {
                value = value.bin(Binary::Mul, f.clone());
            }
            let at = add(at.clone(), int(IntOp::Min, c, Expr::I32(d - 1)));
            b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf, at, value }));
        });
        b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: inside, body: store }));
    });
}

/// `for tile = start; tile < end; tile += 32` over a body built in its own scope.
pub(crate) fn tiles(b: &mut Body, start: Expr, end: Expr, build: impl FnOnce(&mut Body, Expr)) {
    let tile = b.fresh();
    let body = nested(b, |b| build(b, Expr::Var(tile)));
    let step = Expr::I32(WARP as i32);
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: tile, start, end, step, body }));
}

/// The statements `each_row` builds for every row, one warp (block) per row, grid-stride.
pub(crate) fn per_row(rows: usize, each_row: impl FnOnce(&mut Body, Var)) -> Body {
    let mut b = Body::default();
    let row = b.fresh();
    let body = nested(&mut b, |b| each_row(b, row));
    let (start, step) = (index(LaunchIndex::Block), index(LaunchIndex::GridDim));
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: row, start, end: Expr::I32(rows as i32), step, body }));
    b
}

/// A kernel of one warp per block over `rows` rows, with `arrays` per-lane row arrays ([`ACC`], [`ACC2`]).
pub(crate) fn kernel(name: &str, dim: usize, rows: usize, buffers: Vec<Buffer>, b: Body, arrays: usize) -> Kernel {
    Kernel {
        name: name.to_string(),
        buffers,
        body: b.stmts,
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch {
            grid: (rows as u64).clamp(1, MAX_GRID) as u32,
            block: WARP,
            shared: vec![],
            local: (0..arrays)
                .map(|i| Array { name: format!("acc{i}"), len: slots(dim), scalar: Scalar::F32 })
                .collect(),
        }),
    }
}

/// A float buffer.
pub(crate) fn buffer(name: &str, len: usize, output: bool) -> Buffer {
    Buffer { name: name.into(), len: len as u64, output, elem: Elem::F32 }
}

/// The per-lane row arrays of a kernel built by [`kernel`].
pub(crate) const ACC: ArrayRef = ArrayRef::Local(0);
pub(crate) const ACC2: ArrayRef = ArrayRef::Local(1);

/// The forward kernel: buffers `q, k, v` (inputs), `out`, `row_max` (outputs).
pub fn forward(name: &str, a: &Attention) -> Result<Kernel, String> {
    let rows = a.check()?;
    let d = a.dim as i32;
    let b = per_row(rows, |b, row_var| {
        let lane = index(LaunchIndex::Lane);
        let r = row(b, a, row_var);
        let first = first_key(b, &r);
        let m = mutable(b, Expr::F32(f32::NEG_INFINITY));
        let l = mutable(b, Expr::F32(0.0));
        each_slot(b, a.dim, ACC, |_| Expr::F32(0.0));
        tiles(b, first, add(r.i.clone(), Expr::I32(1)), |b, tile| {
            let key = b.bind(add(tile.clone(), lane.clone()));
            let valid = b.bind(key.clone().cmp(Compare::Le, r.i.clone()));
            let k_at = b.bind(add(r.base.clone(), mul(int(IntOp::Min, key, r.i.clone()), d)));
            let logit = dot(b, a.dim, (0, r.at.clone()), (1, k_at)).bin(Binary::Mul, Expr::F32(a.scale));
            let s = b.bind(Expr::select(valid.clone(), logit, Expr::F32(f32::NEG_INFINITY)));
            let tile_max = warp(b, Binary::Max, s.clone());
            let m_new = b.bind(Expr::Var(m).bin(Binary::Max, tile_max));
            let corr = exp(b, Expr::Var(m).bin(Binary::Sub, m_new.clone()));
            let e = exp(b, s.bin(Binary::Sub, m_new.clone()));
            let p = b.bind(Expr::select(valid, e, Expr::F32(0.0)));
            let tile_sum = warp(b, Binary::Add, p.clone());
            let l_new = Expr::Var(l).bin(Binary::Mul, corr.clone()).bin(Binary::Add, tile_sum);
            b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: l, value: l_new }));
            each_slot(b, a.dim, ACC, |x| x.bin(Binary::Mul, corr.clone()));
            // Each key of the tile in turn: its probability from its lane, times its value row.
            gather_rows(b, a.dim, ACC, &p, (&tile, &r.i), (2, &r.base));
            b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: m, value: m_new }));
        });
        let inv = b.bind(Expr::F32(1.0).bin(Binary::Div, Expr::Var(l)));
        store_row(b, a.dim, ACC, Some(inv), 3, &r.at);
        let lead = vec![Stmt::Gpu(GpuStmt::StoreAt { buf: 4, at: Expr::Var(row_var), value: Expr::Var(m) })];
        b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: lane.cmp(Compare::Eq, Expr::I32(0)), body: lead }));
    });
    let n = rows * a.dim;
    let buffers = vec![
        buffer("q", n, false),
        buffer("k", n, false),
        buffer("v", n, false),
        buffer("out", n, true),
        buffer("row_max", rows, true),
    ];
    Ok(kernel(name, a.dim, rows, buffers, b, 1))
}
