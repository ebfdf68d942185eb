//! The fused ops of a training step as GPU kernels:
//!
//! - **softmax + cross-entropy** with its gradient: a block per row of
//!   logits; a block-wide maximum, then a block-wide sum of exponentials
//!   (warp butterflies and one shared slot per warp), then the loss (thread 0)
//!   and every logit's gradient in one more pass over the row;
//! - **AdamW**: one launch for every parameter, a grid-stride loop over each
//!   parameter's elements in turn, in the reference's order of f32 operations
//!   (so the update is the interpreter's bit for bit).

use super::build::{add, clamp, grid_stride, index, load, mul, mutable, nested, reduce};
use super::lower::{ELEMENT_BLOCK, MAX_GRID, ROW_BLOCK};
use crate::math::{exp, log};
use crate::{
    Array, Binary, Body, Buffer, Compare, Elem, Expr, GpuStmt, Kernel, Launch, LaunchIndex, Scalar, Schedule, Stmt,
    Unary, WARP,
};

fn i32_of(n: u64, what: &str, name: &str) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| format!("kernel {name}: {what} {n} exceeds the GPU lowering's 32-bit indices"))
}

fn buffer(name: &str, len: u64, output: bool, elem: Elem) -> Buffer {
    Buffer { name: name.into(), len, output, elem }
}

/// `(logits [rows, vocab], targets [rows] (i64), d_loss [rows]) → (loss [rows], d_logits [rows, vocab])`.
/// A target outside the vocabulary is clamped into it (the interpreter reports it).
pub fn softmax_cross_entropy(name: &str, rows: u64, vocab: u64) -> Result<Kernel, String> {
    let v = i32_of(vocab, "vocabulary", name)?;
    let rows_i = i32_of(rows, "row count", name)?;
    i32_of(rows * vocab, "logit count", name)?;
    if vocab == 0 {
        return Err(format!("kernel {name}: an empty vocabulary"));
    }
    let block = vocab.next_power_of_two().clamp(u64::from(WARP), u64::from(ROW_BLOCK)) as u32;
    let warps = block / WARP;
    let mut b = Body::default();
    let row = b.fresh();
    let body = nested(&mut b, |b| {
        let thread = index(LaunchIndex::Thread);
        let base = b.bind(mul(Expr::Var(row), v));
        let over_row = |b: &mut Body, each: &mut dyn FnMut(&mut Body, Expr, Expr)| {
            let c = b.fresh();
            let inner = nested(b, |b| {
                let x = b.bind(load(0, add(base.clone(), Expr::Var(c))));
                each(b, Expr::Var(c), x);
            });
            let (start, step) = (index(LaunchIndex::Thread), index(LaunchIndex::BlockDim));
            b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: c, start, end: Expr::I32(v), step, body: inner }));
        };
        let max = mutable(b, Expr::F32(f32::NEG_INFINITY));
        over_row(b, &mut |b, _, x| b.stmts.push(Stmt::Accumulate { var: max, op: Binary::Max, value: x }));
        reduce(b, max, Binary::Max, warps);
        let sum = mutable(b, Expr::F32(0.0));
        over_row(b, &mut |b, _, x| {
            let e = exp(b, x.bin(Binary::Sub, Expr::Var(max)));
            b.stmts.push(Stmt::Accumulate { var: sum, op: Binary::Add, value: e });
        });
        reduce(b, sum, Binary::Add, warps);
        let ln = log(b, Expr::Var(sum));
        let lse = b.bind(Expr::Var(max).bin(Binary::Add, ln));
        let target = b.bind(clamp(load(1, Expr::Var(row)), 0, v - 1));
        let loss = lse.clone().bin(Binary::Sub, load(0, add(base.clone(), target.clone())));
        let first = vec![Stmt::Gpu(GpuStmt::StoreAt { buf: 3, at: Expr::Var(row), value: loss })];
        b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: thread.cmp(Compare::Eq, Expr::I32(0)), body: first }));
        let d_loss = b.bind(load(2, Expr::Var(row)));
        over_row(b, &mut |b, c, x| {
            let p = exp(b, x.bin(Binary::Sub, lse.clone()));
            let onehot = Expr::select(c.clone().cmp(Compare::Eq, target.clone()), Expr::F32(1.0), Expr::F32(0.0));
            let value = d_loss.clone().bin(Binary::Mul, p.bin(Binary::Sub, onehot));
            b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 4, at: add(base.clone(), c), value }));
        });
    });
    let (start, step) = (index(LaunchIndex::Block), index(LaunchIndex::GridDim));
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: row, start, end: Expr::I32(rows_i), step, body }));
    let shared =
        if warps > 1 { vec![Array { name: "partials".into(), len: warps, scalar: Scalar::F32 }] } else { vec![] };
    Ok(Kernel {
        name: name.to_string(),
        buffers: vec![
            buffer("logits", rows * vocab, false, Elem::F32),
            buffer("targets", rows, false, Elem::I64),
            buffer("d_loss", rows, false, Elem::F32),
            buffer("loss", rows, true, Elem::F32),
            buffer("d_logits", rows * vocab, true, Elem::F32),
        ],
        body: b.stmts,
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch { grid: rows.clamp(1, MAX_GRID) as u32, block, shared, local: vec![] }),
    })
}

/// AdamW's hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Whether each parameter is decayed.
    pub decay: Vec<bool>,
}

/// One AdamW step of parameters of `sizes` elements: buffers `lr, bc1, bc2,
/// grad_scale` (scalars), `(w, g, m, v)` per parameter, then `(w', m', v')` per parameter.
pub fn adamw(name: &str, sizes: &[u64], h: &AdamW) -> Result<Kernel, String> {
    let c = |x: f64| Expr::F32(x as f32);
    let (b1, b2, one_b1, one_b2, eps, wd) =
        (c(h.beta1), c(h.beta2), c(1.0 - h.beta1), c(1.0 - h.beta2), c(h.eps), c(h.weight_decay));
    let mut buffers: Vec<Buffer> =
        ["lr", "bc1", "bc2", "grad_scale"].iter().map(|n| buffer(n, 1, false, Elem::F32)).collect();
    for (p, &n) in sizes.iter().enumerate() {
        i32_of(n, "parameter size", name)?;
        buffers.extend(["w", "g", "m", "v"].iter().map(|x| buffer(&format!("{x}{p}"), n, false, Elem::F32)));
    }
    for (p, &n) in sizes.iter().enumerate() {
        buffers.extend(["w_new", "m_new", "v_new"].iter().map(|x| buffer(&format!("{x}{p}"), n, true, Elem::F32)));
    }
    let mut b = Body::default();
    let lr = b.bind(load(0, Expr::I32(0)));
    let bc1 = b.bind(load(1, Expr::I32(0)));
    let bc2 = b.bind(load(2, Expr::I32(0)));
    let gs = b.bind(load(3, Expr::I32(0)));
    let outputs = 4 + 4 * sizes.len();
    for (p, &n) in sizes.iter().enumerate() {
        let (w, g, m, v) = (4 + 4 * p, 5 + 4 * p, 6 + 4 * p, 7 + 4 * p);
        let (wo, mo, vo) = (outputs + 3 * p, outputs + 3 * p + 1, outputs + 3 * p + 2);
        let decay = h.decay.get(p).copied().unwrap_or(false) && h.weight_decay != 0.0;
        let e = b.fresh();
        let body = nested(&mut b, |b| {
            let at = Expr::Var(e);
            let gj = b.bind(load(g, at.clone()).bin(Binary::Mul, gs.clone()));
            let m_new = b.bind(
                load(m, at.clone())
                    .bin(Binary::Mul, b1.clone())
                    .bin(Binary::Add, gj.clone().bin(Binary::Mul, one_b1.clone())),
            );
            let g2 = gj.clone().bin(Binary::Mul, gj).bin(Binary::Mul, one_b2.clone());
            let v_new = b.bind(load(v, at.clone()).bin(Binary::Mul, b2.clone()).bin(Binary::Add, g2));
            let denom = v_new.clone().bin(Binary::Div, bc2.clone()).un(Unary::Sqrt).bin(Binary::Add, eps.clone());
            let mut step = m_new.clone().bin(Binary::Div, bc1.clone()).bin(Binary::Div, denom);
            let w_old = b.bind(load(w, at.clone()));
            if decay {
                step = step.bin(Binary::Add, w_old.clone().bin(Binary::Mul, wd.clone()));
            }
            let w_new = w_old.bin(Binary::Sub, step.bin(Binary::Mul, lr.clone()));
            for (buf, value) in [(wo, w_new), (mo, m_new), (vo, v_new)] {
                b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf, at: at.clone(), value }));
            }
        });
        let (start, step) = grid_stride();
        let end = Expr::I32(i32_of(n, "parameter size", name)?);
        b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: e, start, end, step, body }));
    }
    let largest = sizes.iter().copied().max().unwrap_or(1);
    Ok(Kernel {
        name: name.to_string(),
        buffers,
        body: b.stmts,
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch {
            grid: largest.div_ceil(u64::from(ELEMENT_BLOCK)).clamp(1, MAX_GRID) as u32,
            block: ELEMENT_BLOCK,
            shared: vec![],
            local: vec![],
        }),
    })
}
