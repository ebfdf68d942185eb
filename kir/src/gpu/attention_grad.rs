//! LS-attention backward as three GPU kernels, each one warp per row and
//! each recomputing the probabilities it needs (nothing of the forward is
//! kept but its output):
//!
//! 1. [`stats`]: per query row, the log-sum-exp of its logits and
//!    `δ = d_out · out`, written into the `d_q` buffer as scratch (it is
//!    rewritten by kernel 3);
//! 2. [`grad_kv`]: per key row `j`, over the queries that see it
//!    (`j ≤ i < j + w`, or all `i ≥ j` for a global head), `d_v = Σ P·d_out`
//!    and `d_k = Σ dS·q` with `dS = P ⊙ (d_out·vᵀ − δ) · scale`;
//! 3. [`grad_q`]: per query row, `d_q = Σ dS·k` over its keys.
//!
//! Run in this order, they compute the reference's `ls_attention_grad`.

use super::attention::{buffer, dot, each_slot, first_key, gather_rows, kernel, per_row, row, store_row, tiles, warp};
use super::attention::{Attention, Row, ACC, ACC2};
use super::build::{add, int, load, mul, mutable};
use crate::math::{exp, log};
use crate::{Binary, Body, Compare, Expr, GpuStmt, IntOp, Kernel, LaunchIndex, Stmt};

fn lane() -> Expr {
    super::build::index(LaunchIndex::Lane)
}

/// The log-sum-exp of query row `r`'s scaled logits (`q` buffer 0, `k` buffer 1), in every lane.
fn log_sum_exp(b: &mut Body, a: &Attention, r: &Row) -> Expr {
    let d = a.dim as i32;
    let first = first_key(b, r);
    let m = mutable(b, Expr::F32(f32::NEG_INFINITY));
    let l = mutable(b, Expr::F32(0.0));
    tiles(b, first, add(r.i.clone(), Expr::I32(1)), |b, tile| {
        let key = b.bind(add(tile, lane()));
        let valid = b.bind(key.clone().cmp(Compare::Le, r.i.clone()));
        let k_at = b.bind(add(r.base.clone(), mul(int(IntOp::Min, key, r.i.clone()), d)));
        let logit = dot(b, a.dim, (0, r.at.clone()), (1, k_at)).bin(Binary::Mul, Expr::F32(a.scale));
        let s = b.bind(Expr::select(valid.clone(), logit, Expr::F32(f32::NEG_INFINITY)));
        let tile_max = warp(b, Binary::Max, s.clone());
        let m_new = b.bind(Expr::Var(m).bin(Binary::Max, tile_max));
        let corr = exp(b, Expr::Var(m).bin(Binary::Sub, m_new.clone()));
        let e = exp(b, s.bin(Binary::Sub, m_new.clone()));
        let tile_sum = warp(b, Binary::Add, Expr::select(valid, e, Expr::F32(0.0)));
        let l_new = Expr::Var(l).bin(Binary::Mul, corr).bin(Binary::Add, tile_sum);
        b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: l, value: l_new }));
        b.stmts.push(Stmt::Gpu(GpuStmt::Set { var: m, value: m_new }));
    });
    let ln = log(b, Expr::Var(l));
    b.bind(Expr::Var(m).bin(Binary::Add, ln))
}

fn lane_zero(b: &mut Body, body: Vec<Stmt>) {
    b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: lane().cmp(Compare::Eq, Expr::I32(0)), body }));
}

/// Kernel 1: buffers `q, k, out, d_out` → `scratch` (the `d_q` buffer): `lse` at each
/// row's number, `δ` at `rows +` its number.
pub fn stats(name: &str, a: &Attention) -> Result<Kernel, String> {
    let rows = a.check()?;
    if a.dim < 2 {
        return Err(format!("ls_attention_grad: head size {} leaves no room for the row statistics", a.dim));
    }
    let b = per_row(rows, |b, row_var| {
        let r = row(b, a, row_var);
        let lse = log_sum_exp(b, a, &r);
        let delta = dot(b, a.dim, (3, r.at.clone()), (2, r.at.clone()));
        let at = Expr::Var(row_var);
        let stores = vec![
            Stmt::Gpu(GpuStmt::StoreAt { buf: 4, at: at.clone(), value: lse }),
            Stmt::Gpu(GpuStmt::StoreAt { buf: 4, at: add(at, Expr::I32(rows as i32)), value: delta }),
        ];
        lane_zero(b, stores);
    });
    let n = rows * a.dim;
    let buffers = vec![
        buffer("q", n, false),
        buffer("k", n, false),
        buffer("out", n, false),
        buffer("d_out", n, false),
        buffer("scratch", n, true),
    ];
    Ok(kernel(name, a.dim, rows, buffers, b, 0))
}

/// Kernel 2: buffers `q, k, v, d_out, scratch` → `d_k, d_v`, one warp per key row.
pub fn grad_kv(name: &str, a: &Attention) -> Result<Kernel, String> {
    let rows = a.check()?;
    let (t, d) = (a.seq as i32, a.dim as i32);
    let b = per_row(rows, |b, row_var| {
        let r = row(b, a, row_var);
        // The last query that sees key j: j + w − 1 (within the sequence), or T − 1.
        let windowed =
            int(IntOp::Min, add(r.i.clone(), r.window.clone()).bin(Binary::ISub, Expr::I32(1)), Expr::I32(t - 1));
        // Never before j itself (w ≥ 1 here): a bound the static check can see.
        let windowed = int(IntOp::Max, windowed, r.i.clone());
        let last = b.bind(Expr::select(r.window.clone().cmp(Compare::Eq, Expr::I32(0)), Expr::I32(t - 1), windowed));
        each_slot(b, a.dim, ACC, |_| Expr::F32(0.0));
        each_slot(b, a.dim, ACC2, |_| Expr::F32(0.0));
        tiles(b, r.i.clone(), add(last.clone(), Expr::I32(1)), |b, tile| {
            let query = b.bind(add(tile.clone(), lane()));
            let valid = b.bind(query.clone().cmp(Compare::Le, last.clone()));
            let clamped = b.bind(int(IntOp::Min, query, last.clone()));
            let q_at = b.bind(add(r.base.clone(), mul(clamped.clone(), d)));
            let head_start = mul(int(IntOp::Div, Expr::Var(row_var), Expr::I32(t)), t);
            let q_row = b.bind(add(head_start, clamped));
            let logit = dot(b, a.dim, (0, q_at.clone()), (1, r.at.clone())).bin(Binary::Mul, Expr::F32(a.scale));
            let lse = load(4, q_row.clone());
            let delta = load(4, add(q_row, Expr::I32(rows as i32)));
            let e = exp(b, logit.bin(Binary::Sub, lse));
            let p = b.bind(Expr::select(valid, e, Expr::F32(0.0)));
            let dp = dot(b, a.dim, (3, q_at), (2, r.at.clone()));
            let ds =
                b.bind(p.clone().bin(Binary::Mul, dp.bin(Binary::Sub, delta)).bin(Binary::Mul, Expr::F32(a.scale)));
            gather_rows(b, a.dim, ACC2, &p, (&tile, &last), (3, &r.base));
            gather_rows(b, a.dim, ACC, &ds, (&tile, &last), (0, &r.base));
        });
        store_row(b, a.dim, ACC, None, 5, &r.at);
        store_row(b, a.dim, ACC2, None, 6, &r.at);
    });
    let n = rows * a.dim;
    let buffers = vec![
        buffer("q", n, false),
        buffer("k", n, false),
        buffer("v", n, false),
        buffer("d_out", n, false),
        buffer("scratch", n, false),
        buffer("d_k", n, true),
        buffer("d_v", n, true),
    ];
    Ok(kernel(name, a.dim, rows, buffers, b, 2))
}

/// Kernel 3: buffers `q, k, v, out, d_out` → `d_q`, one warp per query row.
pub fn grad_q(name: &str, a: &Attention) -> Result<Kernel, String> {
    let rows = a.check()?;
    let d = a.dim as i32;
    let b = per_row(rows, |b, row_var| {
        let r = row(b, a, row_var);
        let lse = log_sum_exp(b, a, &r);
        let delta = dot(b, a.dim, (4, r.at.clone()), (3, r.at.clone()));
        let first = first_key(b, &r);
        each_slot(b, a.dim, ACC, |_| Expr::F32(0.0));
        tiles(b, first, add(r.i.clone(), Expr::I32(1)), |b, tile| {
            let key = b.bind(add(tile.clone(), lane()));
            let valid = b.bind(key.clone().cmp(Compare::Le, r.i.clone()));
            let k_at = b.bind(add(r.base.clone(), mul(int(IntOp::Min, key, r.i.clone()), d)));
            let logit = dot(b, a.dim, (0, r.at.clone()), (1, k_at.clone())).bin(Binary::Mul, Expr::F32(a.scale));
            let e = exp(b, logit.bin(Binary::Sub, lse.clone()));
            let p = b.bind(Expr::select(valid, e, Expr::F32(0.0)));
            let dp = dot(b, a.dim, (4, r.at.clone()), (2, k_at));
            let ds =
                b.bind(p.bin(Binary::Mul, dp.bin(Binary::Sub, delta.clone())).bin(Binary::Mul, Expr::F32(a.scale)));
            gather_rows(b, a.dim, ACC, &ds, (&tile, &r.i), (1, &r.base));
        });
        store_row(b, a.dim, ACC, None, 5, &r.at);
    });
    let n = rows * a.dim;
    let buffers = vec![
        buffer("q", n, false),
        buffer("k", n, false),
        buffer("v", n, false),
        buffer("out", n, false),
        buffer("d_out", n, false),
        buffer("d_q", n, true),
    ];
    Ok(kernel(name, a.dim, rows, buffers, b, 1))
}
