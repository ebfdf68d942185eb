//! Data movement and integer/boolean elementwise ops as GPU kernels: each
//! thread takes output elements in a grid-stride loop, recovers the
//! element's index along every axis by division and remainder, and computes
//! it from operand elements at computed positions (`constant`, `iota`,
//! `cast`, `slice`, `concat`, `broadcast`, `transpose`, `embedding`, integer
//! and boolean ops, comparisons, `select`, `cache_update`). Floats of every
//! width are stored as f32, integers as i64 (computed in i32: positions,
//! token ids and indices), booleans as bytes (0 or 1), as plans store them.
//!
//! Indices read from memory (token ids, a cache offset) are clamped into
//! range, where the reference interpreter reports an error: a kernel cannot.

use super::build::{clamp, grid_stride, int, load};
use crate::{math, Binary, Body, Buffer, Compare, Elem, Expr, GpuStmt, IntOp, Kernel, Launch, Schedule, Stmt};
use lsc_ir::{BinaryOp, CmpOp, Op, UnaryOp};

/// Threads per block.
const BLOCK: u32 = 256;
/// The largest grid launched (the grid-stride loop takes the rest).
const MAX_GRID: u64 = 65_535;

/// One operand or result: concrete shape and storage element type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operand {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// How its elements are stored: `F32`, `I64` or `U8`.
    pub elem: Elem,
}

/// A boolean as the byte stored for it.
pub(super) fn byte(c: Expr) -> Expr {
    Expr::select(c, Expr::I32(1), Expr::I32(0))
}

fn truthy(x: Expr, elem: Elem) -> Expr {
    if elem.is_float() {
        x.cmp(Compare::Ne, Expr::F32(0.0))
    } else {
        x.cmp(Compare::Ne, Expr::I32(0))
    }
}

pub(super) fn strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

pub(super) fn elements(shape: &[usize]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

pub(super) fn i32_of(n: impl TryInto<i32>) -> Option<i32> {
    n.try_into().ok()
}

/// `Σ at[i] · strides[i]` (terms with a zero stride left out).
pub(super) fn flat(at: &[Expr], strides: &[i64]) -> Option<Expr> {
    let mut sum = Expr::I32(0);
    for (a, &s) in at.iter().zip(strides) {
        let term = match s {
            0 => continue,
            1 => a.clone(),
            s => int(IntOp::Mul, a.clone(), Expr::I32(i32_of(s)?)),
        };
        sum = if sum == Expr::I32(0) { term } else { sum.bin(Binary::IAdd, term) };
    }
    Some(sum)
}

/// The kernel under construction: its buffers and fresh variables.
pub(super) struct Build {
    pub(super) buffers: Vec<Buffer>,
    pub(super) body: Body,
}

impl Build {
    pub(super) fn bind(&mut self, value: Expr) -> Expr {
        let var = self.body.fresh();
        self.body.stmts.push(Stmt::Let { var, value });
        Expr::Var(var)
    }

    pub(super) fn store(&mut self, buf: usize, at: Expr, value: Expr) {
        self.body.stmts.push(Stmt::Gpu(GpuStmt::StoreAt { buf, at, value }));
    }

    /// The index along each axis of `shape` of flat element `e`.
    pub(super) fn unflatten(&mut self, e: &Expr, shape: &[usize]) -> Option<Vec<Expr>> {
        let s = strides(shape);
        let mut at = Vec::with_capacity(shape.len());
        for (i, &n) in shape.iter().enumerate() {
            let mut v = e.clone();
            if s[i] > 1 {
                v = int(IntOp::Div, v, Expr::I32(i32_of(s[i])?));
            }
            if i > 0 {
                v = int(IntOp::Rem, v, Expr::I32(i32_of(n)?));
            }
            at.push(self.bind(v));
        }
        Some(at)
    }

    /// A grid-stride loop over `count` elements around the statements `body` adds for element `e`.
    pub(super) fn finish(
        mut self,
        name: &str,
        count: u64,
        body: impl FnOnce(&mut Build, Expr) -> Option<()>,
    ) -> Option<Kernel> {
        for b in &self.buffers {
            i32_of(b.len)?;
        }
        let var = self.body.fresh();
        let outer = std::mem::take(&mut self.body.stmts);
        body(&mut self, Expr::Var(var))?;
        let inner = std::mem::replace(&mut self.body.stmts, outer);
        let (start, step) = grid_stride();
        let end = Expr::I32(i32_of(count)?);
        self.body.stmts.push(Stmt::Gpu(GpuStmt::Range { var, start, end, step, body: inner }));
        let grid = count.div_ceil(u64::from(BLOCK)).clamp(1, MAX_GRID) as u32;
        Some(Kernel {
            name: name.to_string(),
            buffers: self.buffers,
            body: self.body.stmts,
            vars: self.body.next_var,
            schedule: Schedule { parallel: false, vector_width: 1 },
            launch: Some(Launch { grid, block: BLOCK, shared: vec![], local: vec![] }),
        })
    }
}

pub(super) fn buffers(inputs: &[Operand], outputs: &[Operand]) -> Vec<Buffer> {
    let ins = inputs.iter().enumerate().map(|(i, o)| (format!("x{i}"), o, false));
    let outs = outputs.iter().enumerate().map(|(i, o)| (format!("y{i}"), o, true));
    ins.chain(outs).map(|(name, o, output)| Buffer { name, len: elements(&o.shape), output, elem: o.elem }).collect()
}

/// The kernel computing `op` from `inputs` into `outputs`, or `None` when
/// `op` is not a data movement, integer/boolean elementwise or indexing op
/// (`gather`, `scatter`, `scatter_add`, `topk`: see the `indexing` module).
/// `in_place`: a `cache_update` or scatter whose updated operand is its
/// output, written only where the update goes (it is not an input then).
pub fn op_kernel(name: &str, op: &Op, inputs: &[Operand], outputs: &[Operand], in_place: bool) -> Option<Kernel> {
    if let Some(k) = super::indexing::op_kernel(name, op, inputs, outputs, in_place) {
        return Some(k);
    }
    let [out] = outputs else { return None };
    let b = Build { buffers: buffers(inputs, outputs), body: Body::default() };
    let y = inputs.len();
    if in_place {
        return match (op, inputs) {
            (Op::CacheUpdate { axis }, [update, offset]) => cache_write(b, name, *axis, update, offset, out),
            _ => None,
        };
    }
    let elem = |i: usize| inputs[i].elem;
    let numeric =
        |x: Expr, from: Elem| if out.elem.is_float() && !from.is_float() { Expr::ToFloat(Box::new(x)) } else { x };
    b.finish(name, elements(&out.shape), |b, e| {
        let at = b.unflatten(&e, &out.shape)?;
        // Operand `i` at the output's element (same shape, contiguous).
        let same = |i: usize| load(i, e.clone());
        let value = match op {
            Op::Constant { value } => match out.elem {
                Elem::F32 => Expr::F32(*value as f32),
                Elem::U8 => Expr::I32(i32::from(*value != 0.0)),
                _ => Expr::I32(*value as i32),
            },
            Op::Iota { axis } => numeric(at.get(*axis)?.clone(), Elem::I32),
            Op::Cast { .. } => cast(same(0), elem(0), out.elem)?,
            Op::Slice { axis, start, .. } => {
                let mut src = at.clone();
                let s = i32_of(start.as_const()?)?;
                src[*axis] = src[*axis].clone().bin(Binary::IAdd, Expr::I32(s));
                load(0, flat(&src, &strides(&inputs[0].shape))?)
            }
            Op::Concat { axis } => concat(&at, *axis, inputs)?,
            Op::Broadcast { .. } => {
                let x = &inputs[0].shape;
                let lead = out.shape.len().checked_sub(x.len())?;
                let s = strides(x);
                let src: Vec<Expr> = at[lead..].to_vec();
                let st: Vec<i64> = (0..x.len()).map(|j| if x[j] == 1 { 0 } else { s[j] }).collect();
                load(0, flat(&src, &st)?)
            }
            Op::Transpose { perm } => {
                let s = strides(&inputs[0].shape);
                load(0, flat(&at, &perm.iter().map(|&p| s[p]).collect::<Vec<_>>())?)
            }
            Op::Embedding => {
                // (weight [V, D], ids [...]): the id of this element's row, then its column.
                let (v, d) = match inputs[0].shape.as_slice() {
                    [v, d] => (*v, *d),
                    _ => return None,
                };
                let id = b.bind(clamp(load(1, int(IntOp::Div, e.clone(), Expr::I32(i32_of(d)?))), 0, i32_of(v)? - 1));
                let col = at.last()?.clone();
                load(0, int(IntOp::Mul, id, Expr::I32(i32_of(d)?)).bin(Binary::IAdd, col))
            }
            Op::CacheUpdate { axis } => cache_read(b, &at, *axis, inputs)?,
            Op::Binary(op) if !elem(0).is_float() => {
                let (x, z) = (same(0), same(1));
                match op {
                    BinaryOp::Add => x.bin(Binary::IAdd, z),
                    BinaryOp::Sub => x.bin(Binary::ISub, z),
                    BinaryOp::Mul => int(IntOp::Mul, x, z),
                    BinaryOp::Max => int(IntOp::Max, x, z),
                    BinaryOp::Min => int(IntOp::Min, x, z),
                    BinaryOp::And => x.bin(Binary::And, z),
                    BinaryOp::Or => x.bin(Binary::Or, z),
                    BinaryOp::Div => {
                        // A zero divisor divides by one (the interpreter reports it).
                        let z = b.bind(same(1));
                        let divisor = Expr::select(z.clone().cmp(Compare::Eq, Expr::I32(0)), Expr::I32(1), z);
                        int(IntOp::Div, x, divisor)
                    }
                    BinaryOp::Pow => return None,
                }
            }
            Op::Unary(UnaryOp::Sin) if out.elem.is_float() => math::sin(&mut b.body, same(0)),
            Op::Unary(UnaryOp::Cos) if out.elem.is_float() => math::cos(&mut b.body, same(0)),
            Op::Rotary => rotary(b, &e, &at, inputs)?,
            Op::Unary(UnaryOp::Not) => byte(same(0).cmp(Compare::Eq, Expr::I32(0))),
            Op::Unary(UnaryOp::Neg) if !elem(0).is_float() => Expr::I32(0).bin(Binary::ISub, same(0)),
            Op::Compare(c) => byte(same(0).cmp(compare(*c), same(1))),
            Op::Select => Expr::select(truthy(same(0), elem(0)), same(1), same(2)),
            _ => return None,
        };
        b.store(y, e, value);
        Some(())
    })
}

fn compare(c: CmpOp) -> Compare {
    match c {
        CmpOp::Eq => Compare::Eq,
        CmpOp::Ne => Compare::Ne,
        CmpOp::Lt => Compare::Lt,
        CmpOp::Le => Compare::Le,
        CmpOp::Gt => Compare::Gt,
        CmpOp::Ge => Compare::Ge,
    }
}

/// `x` (stored as `from`) converted to `to`: floats to integers truncate, anything to bool is `≠ 0`.
fn cast(x: Expr, from: Elem, to: Elem) -> Option<Expr> {
    Some(match (from.is_float(), to) {
        (_, Elem::U8) => byte(truthy(x, from)),
        (true, Elem::F32 | Elem::BF16 | Elem::F16) | (false, Elem::I64) => x,
        (true, Elem::I64) => Expr::ToInt(Box::new(x)),
        (false, Elem::F32) => Expr::ToFloat(Box::new(x)),
        _ => return None,
    })
}

/// The element at `at` of the operands joined along `axis`: each operand is
/// read at a clamped position and the one that holds the element is selected.
fn concat(at: &[Expr], axis: usize, inputs: &[Operand]) -> Option<Expr> {
    let mut value: Option<Expr> = None;
    let mut end = 0i32;
    let mut parts = Vec::new();
    for (i, x) in inputs.iter().enumerate() {
        let (start, n) = (end, i32_of(x.shape[axis])?);
        if n == 0 {
            continue; // an empty part holds no element
        }
        end = start.checked_add(n)?;
        let mut src = at.to_vec();
        src[axis] = clamp(at[axis].clone().bin(Binary::ISub, Expr::I32(start)), 0, n - 1);
        parts.push((end, load(i, flat(&src, &strides(&x.shape))?)));
    }
    for (end, part) in parts.into_iter().rev() {
        value = Some(match value {
            None => part,
            Some(later) => Expr::select(at[axis].clone().cmp(Compare::Lt, Expr::I32(end)), part, later),
        });
    }
    value
}

/// The cache offset (operand `buf`, an i64 scalar) clamped so an update of `len` fits in `n`.
fn offset(b: &mut Build, buf: usize, n: usize, len: usize) -> Option<Expr> {
    let hi = i32_of(n.checked_sub(len)?)?;
    Some(b.bind(clamp(load(buf, Expr::I32(0)), 0, hi)))
}

/// `cache_update(cache, update, offset)` at `at`: the update inside its window, else the cache.
fn cache_read(b: &mut Build, at: &[Expr], axis: usize, inputs: &[Operand]) -> Option<Expr> {
    let [cache, update, _] = inputs else { return None };
    let (n, len) = (cache.shape[axis], update.shape[axis]);
    let off = offset(b, 2, n, len)?;
    let rel = b.bind(at[axis].clone().bin(Binary::ISub, off));
    // `0 ≤ rel < len` (a false first comparison selects itself).
    let after_start = b.bind(rel.clone().cmp(Compare::Ge, Expr::I32(0)));
    let inside =
        b.bind(Expr::select(after_start.clone(), rel.clone().cmp(Compare::Lt, Expr::I32(i32_of(len)?)), after_start));
    let mut src = at.to_vec();
    src[axis] = clamp(rel, 0, i32_of(len)? - 1);
    let from_update = load(1, flat(&src, &strides(&update.shape))?);
    let from_cache = load(0, flat(at, &strides(&cache.shape))?);
    Some(Expr::select(inside, from_update, from_cache))
}

/// `cache_update` written into the cache itself: one thread per update element.
fn cache_write(
    b: Build,
    name: &str,
    axis: usize,
    update: &Operand,
    _offset: &Operand,
    cache: &Operand,
) -> Option<Kernel> {
    let (n, len) = (*cache.shape.get(axis)?, *update.shape.get(axis)?);
    b.finish(name, elements(&update.shape), |b, e| {
        let at = b.unflatten(&e, &update.shape)?;
        let off = offset(b, 1, n, len)?;
        let mut dst = at.clone();
        dst[axis] = at[axis].clone().bin(Binary::IAdd, off);
        let to = flat(&dst, &strides(&cache.shape))?;
        b.store(2, to, load(0, e));
        Some(())
    })
}

/// Rotary embedding at element `e` (index `at`) of `x [..., T, D]` with
/// `cos, sin: [T, D/2]`: the first half of the last axis becomes
/// `x₁·cos − x₂·sin`, the second `x₂·cos + x₁·sin`.
fn rotary(b: &mut Build, e: &Expr, at: &[Expr], inputs: &[Operand]) -> Option<Expr> {
    let [x, cos, _] = inputs else { return None };
    let (&d, rank) = (x.shape.last()?, x.shape.len());
    let half = i32_of(d / 2)?;
    if d % 2 != 0 || rank < 2 || cos.shape != [x.shape[rank - 2], d / 2] {
        return None;
    }
    let c = at[rank - 1].clone();
    let first = b.bind(c.clone().cmp(Compare::Lt, Expr::I32(half)));
    let h = b.bind(int(IntOp::Rem, c, Expr::I32(half)));
    let width = Expr::I32(i32_of(d)?);
    let row = b.bind(int(IntOp::Mul, int(IntOp::Div, e.clone(), width.clone()), width));
    let x1 = b.bind(load(0, row.clone().bin(Binary::IAdd, h.clone())));
    let x2 = b.bind(load(0, row.bin(Binary::IAdd, h.clone()).bin(Binary::IAdd, Expr::I32(half))));
    let angle = b.bind(int(IntOp::Mul, at[rank - 2].clone(), Expr::I32(half)).bin(Binary::IAdd, h));
    let (cs, sn) = (b.bind(load(1, angle.clone())), b.bind(load(2, angle)));
    let lo = x1.clone().bin(Binary::Mul, cs.clone()).bin(Binary::Sub, x2.clone().bin(Binary::Mul, sn.clone()));
    let hi = x2.bin(Binary::Mul, cs).bin(Binary::Add, x1.bin(Binary::Mul, sn));
    Some(Expr::select(first, lo, hi))
}
