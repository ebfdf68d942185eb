//! The reference evaluator of kernel IR: the semantics every backend must
//! reproduce bit for bit (min/max propagate NaN and order −0 < +0, `ToInt`
//! truncates and saturates with NaN → 0, integer arithmetic wraps), including
//! the order in which vector loops accumulate ([`crate::vector`]).

use crate::vector::{accumulators, combine_lanes, identity, lanes, vectorizable};
use crate::{Binary, Compare, Expr, GpuExpr, Index, Kernel, Stmt, Unary, Var};

/// A scalar value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum V {
    F(f32),
    I(i32),
    B(bool),
}

impl V {
    pub(crate) fn f(self) -> f32 {
        match self {
            V::F(x) => x,
            V::I(x) => x as f32,
            V::B(x) => x as u8 as f32,
        }
    }
    pub(crate) fn i(self) -> i32 {
        match self {
            V::I(x) => x,
            V::F(x) => x as i32,
            V::B(x) => x as i32,
        }
    }
}

/// IEEE `minimum`: NaN if either is NaN, and −0 < +0.
pub fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// IEEE `maximum`: NaN if either is NaN, and +0 > −0.
pub fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b || (a == b && a.is_sign_positive()) {
        a
    } else {
        b
    }
}

struct State<'a> {
    vars: Vec<V>,
    bufs: &'a mut [Vec<f32>],
    /// The lanes of the schedule's vector loops, if any.
    lanes: Option<u64>,
}

/// `a ∘ b` for an accumulation op.
pub(crate) fn fold(op: Binary, a: f32, b: f32) -> f32 {
    match op {
        Binary::Max => fmax(a, b),
        Binary::Min => fmin(a, b),
        Binary::Mul => a * b,
        _ => a + b,
    }
}

/// Where an expression's variables and loads come from: one CPU kernel's
/// state, or one GPU thread's.
pub(crate) trait Scope {
    /// The value of variable `v`.
    fn var(&self, v: Var) -> V;
    /// Element `index` of buffer `buf`.
    fn load(&mut self, buf: usize, index: &Index) -> V;
    /// A GPU-only expression.
    fn gpu(&mut self, e: &GpuExpr) -> V;
}

/// The element offset of an affine index at the scope's variables.
pub(crate) fn offset(s: &impl Scope, ix: &Index) -> i64 {
    ix.terms.iter().fold(ix.offset, |acc, &(v, stride)| acc + s.var(v).i() as i64 * stride)
}

impl Scope for State<'_> {
    fn var(&self, v: Var) -> V {
        self.vars[v]
    }
    fn load(&mut self, buf: usize, ix: &Index) -> V {
        V::F(self.bufs[buf][offset(self, ix) as usize])
    }
    fn gpu(&mut self, e: &GpuExpr) -> V {
        // `check::cpu_only` refuses these before any CPU kernel runs.
        panic!("a CPU kernel holds the GPU-only {}", crate::check::gpu_expr_name(e))
    }
}

/// The value of `e` in scope `s`.
pub(crate) fn expr(s: &mut impl Scope, e: &Expr) -> V {
    match e {
        Expr::F32(x) => V::F(*x),
        Expr::I32(x) => V::I(*x),
        Expr::Var(v) => s.var(*v),
        Expr::Load { buf, index: ix } => s.load(*buf, ix),
        Expr::Gpu(g) => s.gpu(g),
        Expr::Unary(op, x) => {
            let x = expr(s, x).f();
            V::F(match op {
                Unary::Neg => -x,
                Unary::Abs => x.abs(),
                Unary::Sqrt => x.sqrt(),
                Unary::Floor => x.floor(),
                Unary::Nearest => x.round_ties_even(),
            })
        }
        Expr::Binary(op, a, b) => {
            let (a, b) = (expr(s, a), expr(s, b));
            match op {
                Binary::Add => V::F(a.f() + b.f()),
                Binary::Sub => V::F(a.f() - b.f()),
                Binary::Mul => V::F(a.f() * b.f()),
                Binary::Div => V::F(a.f() / b.f()),
                Binary::Min => V::F(fmin(a.f(), b.f())),
                Binary::Max => V::F(fmax(a.f(), b.f())),
                Binary::IAdd => V::I(a.i().wrapping_add(b.i())),
                Binary::ISub => V::I(a.i().wrapping_sub(b.i())),
                Binary::Shl => V::I(a.i().wrapping_shl(b.i() as u32)),
                Binary::ShrU => V::I(((a.i() as u32).wrapping_shr(b.i() as u32)) as i32),
                Binary::And => V::I(a.i() & b.i()),
                Binary::Or => V::I(a.i() | b.i()),
            }
        }
        Expr::Compare(op, a, b) => {
            let (a, b) = (expr(s, a), expr(s, b));
            V::B(match (a, b) {
                (V::I(x), V::I(y)) => cmp(*op, x, y),
                _ => cmp(*op, a.f(), b.f()),
            })
        }
        Expr::Select(c, a, b) => {
            let c = matches!(expr(s, c), V::B(true));
            if c {
                expr(s, a)
            } else {
                expr(s, b)
            }
        }
        Expr::FromBits(x) => V::F(f32::from_bits(expr(s, x).i() as u32)),
        Expr::ToBits(x) => V::I(expr(s, x).f().to_bits() as i32),
        Expr::ToInt(x) => V::I(expr(s, x).f() as i32),
        Expr::ToFloat(x) => V::F(expr(s, x).i() as f32),
    }
}

pub(crate) fn cmp<T: PartialOrd>(op: Compare, a: T, b: T) -> bool {
    match op {
        Compare::Eq => a == b,
        Compare::Ne => a != b,
        Compare::Lt => a < b,
        Compare::Le => a <= b,
        Compare::Gt => a > b,
        Compare::Ge => a >= b,
    }
}

fn stmts(s: &mut State, body: &[Stmt], outer: Option<(u64, u64)>) {
    for st in body {
        match st {
            Stmt::Loop { var, extent, body } => {
                let (lo, hi) = outer.unwrap_or((0, *extent));
                let hi = hi.min(*extent).max(lo);
                let accs = accumulators(body);
                let mut start = lo;
                if let Some(w) = s.lanes.filter(|_| !accs.is_empty() && vectorizable(*var, body)) {
                    start = lo + (hi - lo) / w * w;
                    vector_accumulate(s, *var, body, &accs, lo, start, w);
                }
                for it in start..hi {
                    s.vars[*var] = V::I(it as i32);
                    stmts(s, body, None);
                }
            }
            Stmt::Let { var, value } => {
                let v = expr(s, value);
                s.vars[*var] = v;
            }
            Stmt::Accumulate { var, op, value } => {
                let b = expr(s, value).f();
                let a = s.vars[*var].f();
                s.vars[*var] = V::F(fold(*op, a, b));
            }
            Stmt::Store { buf, index: ix, value } => {
                let v = expr(s, value).f();
                let at = offset(s, ix) as usize;
                s.bufs[*buf][at] = v;
            }
            Stmt::Gpu(g) => panic!("a CPU kernel holds the GPU-only {}", crate::check::gpu_stmt_name(g)),
        }
    }
}

/// The vector part `lo..end` of a loop that accumulates: one partial result
/// per lane, combined and folded in as [`crate::vector`] specifies.
fn vector_accumulate(s: &mut State, var: usize, body: &[Stmt], accs: &[(usize, Binary)], lo: u64, end: u64, w: u64) {
    let before: Vec<f32> = accs.iter().map(|&(a, _)| s.vars[a].f()).collect();
    let mut partials = vec![vec![0.0f32; w as usize]; accs.len()];
    for lane in 0..w {
        for &(a, op) in accs {
            s.vars[a] = V::F(identity(op));
        }
        for it in (lo + lane..end).step_by(w as usize) {
            s.vars[var] = V::I(it as i32);
            stmts(s, body, None);
        }
        for (k, &(a, _)) in accs.iter().enumerate() {
            partials[k][lane as usize] = s.vars[a].f();
        }
    }
    for (k, &(a, op)) in accs.iter().enumerate() {
        let combined = combine_lanes(&partials[k], &mut |x, y| fold(op, x, y));
        s.vars[a] = V::F(fold(op, before[k], combined));
    }
}

/// Runs `k` over iterations `begin..end` of its outermost loop.
pub fn run_range(k: &Kernel, bufs: &mut [Vec<f32>], begin: u64, end: u64) {
    let mut s = State { vars: vec![V::I(0); k.vars], bufs, lanes: lanes(&k.schedule) };
    stmts(&mut s, &k.body, Some((begin, end)));
}

/// Runs `k` on `bufs` (one per buffer, outputs overwritten).
pub fn run(k: &Kernel, bufs: &mut [Vec<f32>]) {
    run_range(k, bufs, 0, k.outer_extent());
}
