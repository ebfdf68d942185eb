//! GAM's fused mixer as a GPU kernel, one warp per position: the softmax
//! of the position's scores against the memory slots runs over tiles of 32
//! slots with an online maximum and sum (as LS-attention's keys do), its
//! weighted sum of memory rows is gathered into the columns the lanes hold,
//! and each column then adds the causal convolution and the two gates:
//! `y = σ(g_local)·(conv(x) + conv_b) + σ(g_global)·softmax(x·memoryᵀ)·memory`.

use super::attention::{buffer, column, dot, each_slot, gather_rows, kernel, per_row, slot, tiles, warp, ACC};
use super::build::{add, clamp, counted, index, int, load, mul, mutable, nested};
use crate::math::{exp, sigmoid};
use crate::{Binary, Compare, Expr, GpuStmt, IntOp, Kernel, LaunchIndex, Stmt};

/// The mixer's shape: `x [batch, seq, dim]`, `conv_w [dim, 1, taps]`, `memory [slots, dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gam {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Model width.
    pub dim: usize,
    /// Convolution taps.
    pub taps: usize,
    /// Memory slots.
    pub slots: usize,
}

/// Buffers `x, conv_w, conv_b, memory, gate_logits → y`.
pub fn mixer(name: &str, g: &Gam) -> Result<Kernel, String> {
    let rows = g.batch * g.seq;
    let n = rows * g.dim;
    if g.dim == 0 || g.taps == 0 || g.slots == 0 || g.seq == 0 {
        return Err(format!("kernel {name}: an empty mixer {g:?}"));
    }
    let fits = |x: usize| i32::try_from(x).map_err(|_| format!("kernel {name}: {x} exceeds 32-bit indices"));
    let (t, d, k, s) = (fits(g.seq)?, fits(g.dim)?, fits(g.taps)?, fits(g.slots)?);
    let last_x = fits(n)? - 1;
    fits(2 * n)?;
    fits(g.slots * g.dim)?;
    let b = per_row(rows, |b, row| {
        let lane = index(LaunchIndex::Lane);
        let ti = b.bind(int(IntOp::Rem, Expr::Var(row), Expr::I32(t)));
        let x_at = b.bind(mul(Expr::Var(row), d));
        let m = mutable(b, Expr::F32(f32::NEG_INFINITY));
        let l = mutable(b, Expr::F32(0.0));
        each_slot(b, g.dim, ACC, |_| Expr::F32(0.0));
        let last = Expr::I32(s - 1);
        tiles(b, Expr::I32(0), Expr::I32(s), |b, tile| {
            let slot_i = b.bind(add(tile.clone(), lane.clone()));
            let valid = b.bind(slot_i.clone().cmp(Compare::Lt, Expr::I32(s)));
            let mem_at = b.bind(mul(int(IntOp::Min, slot_i, last.clone()), d));
            let score = dot(b, g.dim, (0, x_at.clone()), (3, mem_at));
            let score = b.bind(Expr::select(valid.clone(), score, Expr::F32(f32::NEG_INFINITY)));
            let tile_max = warp(b, Binary::Max, score.clone());
            let m_new = b.bind(Expr::Var(m).bin(Binary::Max, tile_max));
            let corr = exp(b, Expr::Var(m).bin(Binary::Sub, m_new.clone()));
            let e = exp(b, score.bin(Binary::Sub, m_new.clone()));
            let p = b.bind(Expr::select(valid, e, Expr::F32(0.0)));
            let tile_sum = warp(b, Binary::Add, p.clone());
            let l_new = Expr::Var(l).bin(Binary::Mul, corr.clone()).bin(Binary::Add, tile_sum);
            b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: l, value: l_new }));
            each_slot(b, g.dim, ACC, |x| x.bin(Binary::Mul, corr.clone()));
            gather_rows(b, g.dim, ACC, &p, (&tile, &last), (3, &Expr::I32(0)));
            b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: m, value: m_new }));
        });
        let inv = b.bind(Expr::F32(1.0).bin(Binary::Div, Expr::Var(l)));
        counted(b, u64::from(super::attention::slots(g.dim)), |b, r| {
            let (c, inside) = column(b, &r, g.dim);
            // (Inside the row under the condition; clamped so the static check sees it.)
            let c = b.bind(int(IntOp::Min, c, Expr::I32(d - 1)));
            let body = nested(b, |b| {
                let local = mutable(b, load(2, c.clone()));
                counted(b, g.taps as u64, |b, j| {
                    // Input position t − (k − 1) + j of this sequence, if it has started.
                    let back = b.bind(j.clone().bin(Binary::ISub, Expr::I32(k - 1)));
                    let valid = add(ti.clone(), back.clone()).cmp(Compare::Ge, Expr::I32(0));
                    let x = load(0, clamp(add(add(x_at.clone(), mul(back, d)), c.clone()), 0, last_x));
                    let w = load(1, add(mul(c.clone(), k), j));
                    let value = Expr::select(valid, w.bin(Binary::Mul, x), Expr::F32(0.0));
                    b.stmts.push(Stmt::Accumulate { var: local, op: Binary::Add, value });
                });
                let gates = b.bind(mul(Expr::Var(row), 2 * d));
                let g_local = sigmoid(b, load(4, add(gates.clone(), c.clone())));
                let g_global = sigmoid(b, load(4, add(add(gates, Expr::I32(d)), c.clone())));
                let global = slot(ACC, r.clone()).bin(Binary::Mul, inv.clone());
                let value =
                    g_local.bin(Binary::Mul, Expr::Var(local)).bin(Binary::Add, g_global.bin(Binary::Mul, global));
                b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 5, at: add(x_at.clone(), c), value }));
            });
            b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: inside, body }));
        });
    });
    let buffers = vec![
        buffer("x", n, false),
        buffer("conv_w", g.dim * g.taps, false),
        buffer("conv_b", g.dim, false),
        buffer("memory", g.slots * g.dim, false),
        buffer("gate_logits", 2 * n, false),
        buffer("y", n, true),
    ];
    Ok(kernel(name, g.dim, rows, buffers, b, 1))
}
