//! LS-attention forward as a GPU kernel: one warp per query row, keys
//! visited in tiles of 32 with an online softmax (FlashAttention's running
//! maximum and sum). Lane `l` scores key `tile + l` of the tile (a dot
//! product of the query and key rows), a warp butterfly gives the tile's
//! maximum and sum, and the tile's probabilities are broadcast lane to lane
//! (`shfl.idx`) into the output row, whose columns are split across lanes
//! (`lane, lane + 32, …`) in a per-thread array. A local head's row `i`
//! visits only its window `i − w < j ≤ i`, so the work is O(T·w); a global
//! head is causal. The row's largest scaled logit is the second output.

use super::build::{add, counted, index, int, load, mul, mutable, nested};
use crate::math::exp;
use crate::{
    Array, ArrayRef, Binary, Body, Buffer, Compare, Elem, Expr, GpuExpr, GpuStmt, IntOp, Kernel, Launch, LaunchIndex,
    Scalar, Schedule, Shuffle, Stmt, WARP,
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
    fn i32(&self, n: usize, what: &str) -> Result<i32, String> {
        i32::try_from(n).map_err(|_| format!("ls_attention: {what} {n} exceeds the GPU lowering's 32-bit indices"))
    }
}

/// The forward kernel: buffers `q, k, v` (inputs), `out`, `row_max` (outputs).
pub fn forward(name: &str, a: &Attention) -> Result<Kernel, String> {
    if a.windows.len() != a.heads || a.dim == 0 || a.seq == 0 {
        return Err(format!("ls_attention: {} windows for {} heads, head size {}", a.windows.len(), a.heads, a.dim));
    }
    let rows = a.batch * a.heads * a.seq;
    let elements = rows * a.dim;
    let (t, d) = (a.i32(a.seq, "sequence length")?, a.i32(a.dim, "head size")?);
    let rows_i = a.i32(rows, "row count")?;
    a.i32(elements, "tensor size")?;
    for &w in &a.windows {
        a.i32(w, "window")?;
    }
    // Output columns per lane.
    let slots = a.dim.div_ceil(WARP as usize) as u32;
    let acc = ArrayRef::Local(0);
    let mut b = Body::default();
    let row = b.fresh();
    let body = nested(&mut b, |b| {
        let lane = index(LaunchIndex::Lane);
        let bh = b.bind(int(IntOp::Div, Expr::Var(row), Expr::I32(t)));
        let i = b.bind(int(IntOp::Rem, Expr::Var(row), Expr::I32(t)));
        let head = b.bind(int(IntOp::Rem, bh.clone(), Expr::I32(a.heads as i32)));
        // The window of this row's head: a select over the (few) heads.
        let mut w = Expr::I32(a.windows[a.heads - 1] as i32);
        for (h, &win) in a.windows.iter().enumerate().rev().skip(1) {
            w = Expr::select(head.clone().cmp(Compare::Eq, Expr::I32(h as i32)), Expr::I32(win as i32), w);
        }
        let w = b.bind(w);
        let windowed = int(IntOp::Max, add(i.clone(), Expr::I32(1)).bin(Binary::ISub, w.clone()), Expr::I32(0));
        let first = b.bind(Expr::select(w.cmp(Compare::Eq, Expr::I32(0)), Expr::I32(0), windowed));
        let base = b.bind(mul(bh, t * d));
        let q_row = b.bind(add(base.clone(), mul(i.clone(), d)));
        let m = mutable(b, Expr::F32(f32::NEG_INFINITY));
        let l = mutable(b, Expr::F32(0.0));
        counted(b, u64::from(slots), |b, r| {
            b.stmts.push(Stmt::Gpu(GpuStmt::ArrayStore { array: acc, at: r, value: Expr::F32(0.0) }));
        });
        let tile = b.fresh();
        let tile_body = nested(b, |b| {
            let key = b.bind(add(Expr::Var(tile), lane.clone()));
            let valid = b.bind(key.clone().cmp(Compare::Le, i.clone()));
            let k_row = b.bind(add(base.clone(), mul(int(IntOp::Min, key.clone(), i.clone()), d)));
            let dot = mutable(b, Expr::F32(0.0));
            counted(b, a.dim as u64, |b, c| {
                let x = load(0, add(q_row.clone(), c.clone())).bin(Binary::Mul, load(1, add(k_row.clone(), c)));
                b.stmts.push(Stmt::Accumulate { var: dot, op: Binary::Add, value: x });
            });
            let logit = Expr::Var(dot).bin(Binary::Mul, Expr::F32(a.scale));
            let s = b.bind(Expr::select(valid.clone(), logit, Expr::F32(f32::NEG_INFINITY)));
            let tile_max = b.fresh();
            b.stmts.push(Stmt::Gpu(GpuStmt::WarpReduce { var: tile_max, op: Binary::Max, value: s.clone() }));
            let m_new = b.bind(Expr::Var(m).bin(Binary::Max, Expr::Var(tile_max)));
            let corr = exp(b, Expr::Var(m).bin(Binary::Sub, m_new.clone()));
            let e = exp(b, s.bin(Binary::Sub, m_new.clone()));
            let p = b.bind(Expr::select(valid, e, Expr::F32(0.0)));
            let tile_sum = b.fresh();
            b.stmts.push(Stmt::Gpu(GpuStmt::WarpReduce { var: tile_sum, op: Binary::Add, value: p.clone() }));
            let l_new = Expr::Var(l).bin(Binary::Mul, corr.clone()).bin(Binary::Add, Expr::Var(tile_sum));
            b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: l, value: l_new }));
            counted(b, u64::from(slots), |b, r| {
                let scaled =
                    Expr::Gpu(GpuExpr::ArrayLoad { array: acc, at: Box::new(r.clone()) }).bin(Binary::Mul, corr);
                b.stmts.push(Stmt::Gpu(GpuStmt::ArrayStore { array: acc, at: r, value: scaled }));
            });
            // Each key of the tile in turn: its probability from its lane, times its value row.
            counted(b, u64::from(WARP), |b, jj| {
                let pj = b.fresh();
                let shuffle = GpuStmt::Shuffle { var: pj, value: p.clone(), mode: Shuffle::Index, lane: jj.clone() };
                b.stmts.push(Stmt::Gpu(shuffle));
                let key = b.bind(add(Expr::Var(tile), jj));
                let v_row = b.bind(add(base.clone(), mul(int(IntOp::Min, key.clone(), i.clone()), d)));
                let body = nested(b, |b| {
                    counted(b, u64::from(slots), |b, r| {
                        let c = b.bind(add(lane.clone(), mul(r.clone(), WARP as i32)));
                        let update = nested(b, |b| {
                            let v = load(2, add(v_row.clone(), int(IntOp::Min, c.clone(), Expr::I32(d - 1))));
                            let old = Expr::Gpu(GpuExpr::ArrayLoad { array: acc, at: Box::new(r.clone()) });
                            let value = old.bin(Binary::Add, Expr::Var(pj).bin(Binary::Mul, v));
                            b.stmts.push(Stmt::Gpu(GpuStmt::ArrayStore { array: acc, at: r, value }));
                        });
                        let cond = c.cmp(Compare::Lt, Expr::I32(d));
                        b.stmts.push(Stmt::Gpu(GpuStmt::If { cond, body: update }));
                    });
                });
                b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: key.cmp(Compare::Le, i.clone()), body }));
            });
            b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: m, value: m_new }));
        });
        let end = add(i.clone(), Expr::I32(1));
        let step = Expr::I32(WARP as i32);
        b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: tile, start: first, end, step, body: tile_body }));
        let inv = b.bind(Expr::F32(1.0).bin(Binary::Div, Expr::Var(l)));
        counted(b, u64::from(slots), |b, r| {
            let c = b.bind(add(lane.clone(), mul(r.clone(), WARP as i32)));
            let store = nested(b, |b| {
                let value = Expr::Gpu(GpuExpr::ArrayLoad { array: acc, at: Box::new(r) }).bin(Binary::Mul, inv.clone());
                let at = add(q_row.clone(), int(IntOp::Min, c.clone(), Expr::I32(d - 1)));
                b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 3, at, value }));
            });
            b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: c.cmp(Compare::Lt, Expr::I32(d)), body: store }));
        });
        let lead = vec![Stmt::Gpu(GpuStmt::StoreAt { buf: 4, at: Expr::Var(row), value: Expr::Var(m) })];
        b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: lane.cmp(Compare::Eq, Expr::I32(0)), body: lead }));
    });
    let start = index(LaunchIndex::Block);
    let step = index(LaunchIndex::GridDim);
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: row, start, end: Expr::I32(rows_i), step, body }));
    let buffer =
        |name: &str, len: usize, output: bool| Buffer { name: name.into(), len: len as u64, output, elem: Elem::F32 };
    Ok(Kernel {
        name: name.to_string(),
        buffers: vec![
            buffer("q", elements, false),
            buffer("k", elements, false),
            buffer("v", elements, false),
            buffer("out", elements, true),
            buffer("row_max", rows, true),
        ],
        body: b.stmts,
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch {
            grid: (rows as u64).clamp(1, MAX_GRID) as u32,
            block: WARP,
            shared: vec![],
            local: vec![Array { name: "acc".into(), len: slots, scalar: Scalar::F32 }],
        }),
    })
}
