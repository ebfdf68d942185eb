//! Packed ternary weights on the GPU, in the interpreter's layout (two bit
//! planes, `plus` then `minus`, rows padded to 64-bit words, read here as
//! pairs of 32-bit words, low half first):
//!
//! - `ternary_pack`: one thread per 32-bit word of a row, setting bit `b`
//!   of `plus` where `round(w / s) ≥ 1` and of `minus` where it is `≤ −1`;
//! - `ternary_matmul`: one thread per output element, adding `x` where the
//!   weight's `plus` bit is set and subtracting it where its `minus` bit is
//!   (multiplications by −1, 0 and 1 are exact), then one multiply by `s`.

use super::build::{add, grid_stride, int, load, mul, mutable, nested};
use super::lower::{ELEMENT_BLOCK, MAX_GRID};
use crate::{Binary, Body, Buffer, Compare, Elem, Expr, GpuStmt, IntOp, Kernel, Launch, Schedule, Stmt, Unary};

/// 32-bit words per row of a plane of `cols` columns (whole 64-bit words).
fn halves(cols: usize) -> usize {
    2 * cols.div_ceil(64)
}

fn i32_of(n: usize, name: &str) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| format!("kernel {name}: {n} exceeds the GPU lowering's 32-bit indices"))
}

fn kernel(name: &str, buffers: Vec<Buffer>, b: Body, count: usize) -> Kernel {
    Kernel {
        name: name.to_string(),
        buffers,
        body: b.stmts,
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch {
            grid: (count as u64).div_ceil(u64::from(ELEMENT_BLOCK)).clamp(1, MAX_GRID) as u32,
            block: ELEMENT_BLOCK,
            shared: vec![],
            local: vec![],
        }),
    }
}

/// A grid-stride loop over `count` items around the statements `each` builds for item `e`.
fn grid_loop(b: &mut Body, count: i32, each: impl FnOnce(&mut Body, Expr)) {
    let e = b.fresh();
    let body = nested(b, |b| each(b, Expr::Var(e)));
    let (start, step) = grid_stride();
    b.stmts.push(Stmt::Gpu(GpuStmt::Range { var: e, start, end: Expr::I32(count), step, body }));
}

fn buffer(name: &str, len: usize, output: bool, elem: Elem) -> Buffer {
    Buffer { name: name.into(), len: len as u64, output, elem }
}

/// `(w [rows, cols], s []) → planes`.
pub fn pack(name: &str, rows: usize, cols: usize) -> Result<Kernel, String> {
    let h = halves(cols);
    let words = rows * h;
    let (h_i, cols_i, words_i) = (i32_of(h, name)?, i32_of(cols, name)?, i32_of(words, name)?);
    i32_of(2 * words, name)?;
    i32_of(rows * cols, name)?;
    let mut b = Body::default();
    let s = b.bind(load(1, Expr::I32(0)));
    grid_loop(&mut b, words_i, |b, e| {
        let row = b.bind(int(IntOp::Div, e.clone(), Expr::I32(h_i)));
        let first = b.bind(mul(int(IntOp::Rem, e.clone(), Expr::I32(h_i)), 32));
        let plus = mutable(b, Expr::I32(0));
        let minus = mutable(b, Expr::I32(0));
        super::build::counted(b, 32, |b, bit| {
            let col = b.bind(add(first.clone(), bit.clone()));
            let inside = nested(b, |b| {
                // (Within the row under the condition; clamped so the static check sees it.)
                let at = add(mul(row.clone(), cols_i), int(IntOp::Min, col.clone(), Expr::I32(cols_i - 1)));
                let v = b.bind(load(0, at).bin(Binary::Div, s.clone()).un(Unary::Nearest));
                let mask = b.bind(Expr::I32(1).bin(Binary::Shl, bit));
                let set = |var, cond: Expr| {
                    let value = Expr::Var(var).bin(Binary::Or, mask.clone());
                    Stmt::Gpu(GpuStmt::If { cond, body: vec![Stmt::Gpu(GpuStmt::Set { var, value })] })
                };
                b.stmts.push(set(plus, v.clone().cmp(Compare::Ge, Expr::F32(1.0))));
                b.stmts.push(set(minus, v.cmp(Compare::Le, Expr::F32(-1.0))));
            });
            b.stmts.push(Stmt::Gpu(GpuStmt::If { cond: col.cmp(Compare::Lt, Expr::I32(cols_i)), body: inside }));
        });
        b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: e.clone(), value: Expr::Var(plus) }));
        let minus_at = add(e, Expr::I32(words_i));
        b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 2, at: minus_at, value: Expr::Var(minus) }));
    });
    let buffers = vec![
        buffer("w", rows * cols, false, Elem::F32),
        buffer("s", 1, false, Elem::F32),
        buffer("planes", 2 * words, true, Elem::U32),
    ];
    Ok(kernel(name, buffers, b, words))
}

/// The shape of a `ternary_matmul`: `x [m, k]` (leading axes flattened) times
/// a packed `[n, k]` (`trans_b`) or `[k, n]` matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TernaryProduct {
    /// Rows of `x` (every leading axis).
    pub m: usize,
    /// The reduced size.
    pub k: usize,
    /// Output columns.
    pub n: usize,
    /// The weight is stored `[n, k]`.
    pub trans_b: bool,
}

/// `(x, planes, s) → y [m, n]`.
pub fn matmul(name: &str, p: &TernaryProduct) -> Result<Kernel, String> {
    let (rows, cols) = if p.trans_b { (p.n, p.k) } else { (p.k, p.n) };
    let h = halves(cols);
    let words = rows * h;
    let (k, n, h_i, words_i) = (i32_of(p.k, name)?, i32_of(p.n, name)?, i32_of(h, name)?, i32_of(words, name)?);
    i32_of(p.m * p.k, name)?;
    i32_of(2 * words, name)?;
    let outputs = p.m * p.n;
    let mut b = Body::default();
    let s = b.bind(load(2, Expr::I32(0)));
    grid_loop(&mut b, i32_of(outputs, name)?, |b, e| {
        let i = b.bind(int(IntOp::Div, e.clone(), Expr::I32(n)));
        let j = b.bind(int(IntOp::Rem, e.clone(), Expr::I32(n)));
        let acc = mutable(b, Expr::F32(0.0));
        super::build::counted(b, p.k as u64, |b, kk| {
            // The weight (row, col) as stored, its 32-bit word and bit.
            let (row, col) = if p.trans_b { (j.clone(), kk.clone()) } else { (kk.clone(), j.clone()) };
            let word = b.bind(add(mul(row, h_i), int(IntOp::Div, col.clone(), Expr::I32(32))));
            let bit = b.bind(int(IntOp::Rem, col, Expr::I32(32)));
            let bit_of = |plane: Expr| plane.bin(Binary::ShrU, bit.clone()).bin(Binary::And, Expr::I32(1));
            let plus = bit_of(load(1, word.clone())).cmp(Compare::Eq, Expr::I32(1));
            let minus = bit_of(load(1, add(word, Expr::I32(words_i)))).cmp(Compare::Eq, Expr::I32(1));
            let x = b.bind(load(0, add(mul(i.clone(), k), kk)));
            // +x where the plus bit is set, −x where the minus bit is, nothing else.
            let term = Expr::select(plus, x.clone(), Expr::select(minus, x.un(Unary::Neg), Expr::F32(0.0)));
            b.stmts.push(Stmt::Accumulate { var: acc, op: Binary::Add, value: term });
        });
        b.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 3, at: e, value: Expr::Var(acc).bin(Binary::Mul, s.clone()) }));
    });
    let buffers = vec![
        buffer("x", p.m * p.k, false, Elem::F32),
        buffer("planes", 2 * words, false, Elem::U32),
        buffer("s", 1, false, Elem::F32),
        buffer("y", outputs, true, Elem::F32),
    ];
    Ok(kernel(name, buffers, b, outputs))
}
