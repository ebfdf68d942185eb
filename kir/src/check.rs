//! Static checks a backend runs before it emits code: every load and store
//! stays inside its buffer or array for every iteration and every thread,
//! only outputs are written, GPU loops step forward and divide by no zero,
//! and a CPU renderer meets no GPU-only construct ([`cpu_only`]).
//!
//! Indices are bounded by interval arithmetic: a loop variable spans its
//! trip count, a launch index its grid or block, a bound value the interval
//! of its expression. A value loaded from an index buffer is unbounded, so a
//! kernel that indexes through one must clamp it (`IntOp::Min`/`Max`) to pass.

use crate::{ArrayRef, Binary, Expr, GpuExpr, GpuStmt, Index, IntOp, Kernel, Launch, LaunchIndex, Stmt, Var, WARP};
use std::collections::{HashMap, HashSet};

/// An inclusive interval of integer values.
type Span = (i64, i64);

const ANY: Span = (i32::MIN as i64, i32::MAX as i64);

/// The most shared memory a block may declare statically.
const SHARED_LIMIT: u64 = 48 << 10;

struct Checker<'k> {
    k: &'k Kernel,
    spans: HashMap<Var, Span>,
    /// Variables a `Set` reassigns: their values are not bounded statically.
    reassigned: HashSet<Var>,
}

/// The name of a GPU-only expression, for errors.
pub fn gpu_expr_name(e: &GpuExpr) -> &'static str {
    match e {
        GpuExpr::Index(_) => "launch index",
        GpuExpr::LoadAt { .. } => "computed-index load",
        GpuExpr::ArrayLoad { array: ArrayRef::Shared(_), .. } => "shared-memory load",
        GpuExpr::ArrayLoad { array: ArrayRef::Local(_), .. } => "local-array load",
        GpuExpr::Int(..) => "integer multiply/divide/min/max",
    }
}

/// The name of a GPU-only statement, for errors.
pub fn gpu_stmt_name(s: &GpuStmt) -> &'static str {
    match s {
        GpuStmt::Range { .. } => "computed-bound loop",
        GpuStmt::If { .. } => "conditional",
        GpuStmt::Set { .. } => "reassignment",
        GpuStmt::StoreAt { .. } => "computed-index store",
        GpuStmt::ArrayStore { array: ArrayRef::Shared(_), .. } => "shared-memory store",
        GpuStmt::ArrayStore { array: ArrayRef::Local(_), .. } => "local-array store",
        GpuStmt::Barrier => "barrier",
        GpuStmt::WarpReduce { .. } => "warp reduction",
        GpuStmt::Shuffle { .. } => "warp shuffle",
    }
}

/// The first GPU-only construct of `body`, if any.
fn first_gpu(body: &[Stmt]) -> Option<&'static str> {
    fn in_expr(e: &Expr) -> Option<&'static str> {
        match e {
            Expr::Gpu(g) => Some(gpu_expr_name(g)),
            Expr::F32(_) | Expr::I32(_) | Expr::Var(_) | Expr::Load { .. } => None,
            Expr::Unary(_, x) | Expr::FromBits(x) | Expr::ToBits(x) | Expr::ToInt(x) | Expr::ToFloat(x) => in_expr(x),
            Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => in_expr(a).or_else(|| in_expr(b)),
            Expr::Select(c, a, b) => in_expr(c).or_else(|| in_expr(a)).or_else(|| in_expr(b)),
        }
    }
    body.iter().find_map(|s| match s {
        Stmt::Gpu(g) => Some(gpu_stmt_name(g)),
        Stmt::Loop { body, .. } => first_gpu(body),
        Stmt::Let { value, .. } | Stmt::Accumulate { value, .. } | Stmt::Store { value, .. } => in_expr(value),
    })
}

/// Whether a CPU renderer can compile `k`: no launch, no GPU-only construct, f32 buffers only.
pub fn cpu_only(k: &Kernel) -> Result<(), String> {
    if let Some(l) = &k.launch {
        return Err(format!(
            "kernel {} is a GPU kernel (a launch of {}×{} threads); CPU backends cannot compile it",
            k.name, l.grid, l.block
        ));
    }
    if let Some(what) = first_gpu(&k.body) {
        return Err(format!("kernel {}: a {what} is a GPU-only construct; CPU backends cannot compile it", k.name));
    }
    if let Some(b) = k.buffers.iter().find(|b| b.elem != crate::Elem::F32) {
        return Err(format!(
            "kernel {}: buffer {} holds {}; CPU backends take f32 buffers only",
            k.name,
            b.name,
            b.elem.name()
        ));
    }
    Ok(())
}

fn add(a: Span, b: Span) -> Span {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

/// Whether `e` is `x == 0 ? k : x` with a non-zero constant `k`: a divisor that is never zero.
fn guarded(e: &Expr) -> bool {
    match e {
        Expr::Select(c, k, x) => match (c.as_ref(), k.as_ref()) {
            (Expr::Compare(crate::Compare::Eq, y, zero), Expr::I32(k)) => *k != 0 && **zero == Expr::I32(0) && y == x,
            _ => false,
        },
        _ => false,
    }
}

fn launch_span(l: &Launch, i: LaunchIndex) -> Span {
    let (grid, block) = (i64::from(l.grid), i64::from(l.block));
    match i {
        LaunchIndex::Block => (0, grid - 1),
        LaunchIndex::Thread => (0, block - 1),
        LaunchIndex::BlockDim => (block, block),
        LaunchIndex::GridDim => (grid, grid),
        LaunchIndex::Lane => (0, i64::from(WARP) - 1),
        LaunchIndex::Warp => (0, block / i64::from(WARP) - 1),
    }
}

impl Checker<'_> {
    fn err(&self, what: impl std::fmt::Display) -> String {
        format!("kernel {}: {what}", self.k.name)
    }

    fn launch(&self, what: &str) -> Result<&Launch, String> {
        self.k.launch.as_ref().ok_or_else(|| self.err(format!("a {what} outside a GPU kernel (no launch)")))
    }

    /// The values integer expression `e` may take.
    fn span(&self, e: &Expr) -> Result<Span, String> {
        Ok(match e {
            Expr::I32(x) => (i64::from(*x), i64::from(*x)),
            Expr::Var(v) if self.reassigned.contains(v) => ANY,
            Expr::Var(v) => self.spans.get(v).copied().unwrap_or(ANY),
            Expr::Binary(Binary::IAdd, a, b) => add(self.span(a)?, self.span(b)?),
            Expr::Binary(Binary::ISub, a, b) => {
                let (a, b) = (self.span(a)?, self.span(b)?);
                add(a, (b.1.saturating_neg(), b.0.saturating_neg()))
            }
            Expr::Binary(Binary::And, a, b) => match (self.span(a)?, self.span(b)?) {
                (_, (0, m)) | ((0, m), _) if m >= 0 => (0, m),
                (x, y) if x.0 >= 0 && y.0 >= 0 => (0, x.1.min(y.1)),
                _ => ANY,
            },
            Expr::Select(_, a, b) => {
                let (a, b) = (self.span(a)?, self.span(b)?);
                (a.0.min(b.0), a.1.max(b.1))
            }
            Expr::Gpu(GpuExpr::Index(i)) => launch_span(self.launch("launch index")?, *i),
            Expr::Gpu(GpuExpr::Int(IntOp::Div | IntOp::Rem, a, b)) if guarded(b) => {
                // A divisor that is never zero but may take either sign: |a / b| ≤ |a|, |a % b| ≤ |a|.
                let a = self.span(a)?;
                let m = a.0.saturating_abs().max(a.1.saturating_abs());
                (-m, m)
            }
            Expr::Gpu(GpuExpr::Int(op, a, b)) => {
                let (a, b) = (self.span(a)?, self.span(b)?);
                match op {
                    IntOp::Mul => {
                        let c = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
                        (*c.iter().min().expect("4"), *c.iter().max().expect("4"))
                    }
                    IntOp::Div | IntOp::Rem if b.0 <= 0 && b.1 >= 0 => {
                        return Err(self.err("an integer division whose divisor may be zero"))
                    }
                    IntOp::Div => {
                        let c = [a.0 / b.0, a.0 / b.1, a.1 / b.0, a.1 / b.1];
                        (*c.iter().min().expect("4"), *c.iter().max().expect("4"))
                    }
                    IntOp::Rem => {
                        let m = b.0.abs().max(b.1.abs()) - 1;
                        if a.0 >= 0 {
                            (0, m.min(a.1))
                        } else {
                            (-m, m)
                        }
                    }
                    IntOp::Min => (a.0.min(b.0), a.1.min(b.1)),
                    IntOp::Max => (a.0.max(b.0), a.1.max(b.1)),
                }
            }
            _ => ANY,
        })
    }

    fn access(&self, buf: usize, at: Span, store: bool) -> Result<(), String> {
        let decl = self.k.buffers.get(buf).ok_or_else(|| self.err(format!("no buffer b{buf}")))?;
        if store && !decl.output {
            return Err(self.err(format!("stores to input buffer {}", decl.name)));
        }
        if at.0 < 0 || at.1 >= decl.len as i64 {
            return Err(
                self.err(format!("buffer {} accessed at {}..={}, outside 0..{}", decl.name, at.0, at.1, decl.len))
            );
        }
        Ok(())
    }

    fn array(&self, array: ArrayRef, at: Span) -> Result<(), String> {
        let l = self.launch("shared or local array")?;
        let decl = match array {
            ArrayRef::Shared(i) => l.shared.get(i),
            ArrayRef::Local(i) => l.local.get(i),
        }
        .ok_or_else(|| self.err(format!("no array {array:?}")))?;
        if at.0 < 0 || at.1 >= i64::from(decl.len) {
            return Err(
                self.err(format!("array {} accessed at {}..={}, outside 0..{}", decl.name, at.0, at.1, decl.len))
            );
        }
        Ok(())
    }

    fn affine(&self, ix: &Index) -> Result<Span, String> {
        let mut at = (ix.offset, ix.offset);
        for &(v, stride) in &ix.terms {
            if !self.spans.contains_key(&v) {
                return Err(self.err(format!("index variable i{v} is not an enclosing loop or bound index")));
            }
            let s = self.span(&Expr::Var(v))?;
            let (x, y) = (s.0.saturating_mul(stride), s.1.saturating_mul(stride));
            at = add(at, (x.min(y), x.max(y)));
        }
        Ok(at)
    }

    fn expr(&self, e: &Expr) -> Result<(), String> {
        match e {
            Expr::Load { buf, index } => self.access(*buf, self.affine(index)?, false),
            Expr::F32(_) | Expr::I32(_) | Expr::Var(_) => Ok(()),
            Expr::Unary(_, x) | Expr::FromBits(x) | Expr::ToBits(x) | Expr::ToInt(x) | Expr::ToFloat(x) => self.expr(x),
            Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => self.expr(a).and_then(|_| self.expr(b)),
            Expr::Select(c, a, b) => [c, a, b].iter().try_for_each(|x| self.expr(x)),
            Expr::Gpu(g) => match g {
                GpuExpr::Index(_) => self.span(e).map(|_| ()),
                GpuExpr::LoadAt { buf, at } => {
                    self.expr(at)?;
                    self.access(*buf, self.span(at)?, false)
                }
                GpuExpr::ArrayLoad { array, at } => {
                    self.expr(at)?;
                    self.array(*array, self.span(at)?)
                }
                GpuExpr::Int(_, a, b) => {
                    self.expr(a)?;
                    self.expr(b)?;
                    self.span(e).map(|_| ())
                }
            },
        }
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), String> {
        for s in body {
            match s {
                Stmt::Loop { var, extent, body } => {
                    self.spans.insert(*var, (0, (*extent as i64 - 1).max(0)));
                    self.stmts(body)?;
                }
                Stmt::Let { var, value } => {
                    self.expr(value)?;
                    let span = self.span(value)?;
                    self.spans.insert(*var, span);
                }
                Stmt::Accumulate { value, .. } => self.expr(value)?,
                Stmt::Store { buf, index, value } => {
                    self.expr(value)?;
                    self.access(*buf, self.affine(index)?, true)?;
                }
                Stmt::Gpu(g) => self.gpu(g)?,
            }
        }
        Ok(())
    }

    fn gpu(&mut self, g: &GpuStmt) -> Result<(), String> {
        self.launch(gpu_stmt_name(g))?;
        match g {
            GpuStmt::Range { var, start, end, step, body } => {
                for e in [start, end, step] {
                    self.expr(e)?;
                }
                if self.span(step)?.0 < 1 {
                    return Err(self.err(format!("loop i{var} may not step forward (its step may be below 1)")));
                }
                let (lo, hi) = (self.span(start)?.0, self.span(end)?.1 - 1);
                self.spans.insert(*var, (lo, hi.max(lo)));
                self.stmts(body)?;
            }
            GpuStmt::If { cond, body } => {
                self.expr(cond)?;
                self.stmts(body)?;
            }
            GpuStmt::Set { value, .. } => self.expr(value)?,
            GpuStmt::StoreAt { buf, at, value } => {
                self.expr(at)?;
                self.expr(value)?;
                self.access(*buf, self.span(at)?, true)?;
            }
            GpuStmt::ArrayStore { array, at, value } => {
                self.expr(at)?;
                self.expr(value)?;
                self.array(*array, self.span(at)?)?;
            }
            GpuStmt::Barrier => {}
            GpuStmt::WarpReduce { var, value, .. } => {
                self.expr(value)?;
                let span = self.span(value)?;
                self.spans.insert(*var, span);
            }
            GpuStmt::Shuffle { var, value, lane, .. } => {
                self.expr(value)?;
                self.expr(lane)?;
                let span = self.span(value)?;
                self.spans.insert(*var, span);
            }
        }
        Ok(())
    }
}

fn reassigned(body: &[Stmt], out: &mut HashSet<Var>) {
    for s in body {
        match s {
            Stmt::Loop { body, .. } | Stmt::Gpu(GpuStmt::Range { body, .. }) | Stmt::Gpu(GpuStmt::If { body, .. }) => {
                reassigned(body, out)
            }
            Stmt::Gpu(GpuStmt::Set { var, .. }) => {
                out.insert(*var);
            }
            _ => {}
        }
    }
}

fn launch_shape(k: &Kernel, l: &Launch) -> Result<(), String> {
    if l.grid == 0 || l.block == 0 || !l.block.is_multiple_of(WARP) || l.block > 1024 {
        return Err(format!(
            "kernel {}: a launch of {}×{} threads (blocks need 32..=1024 threads, a multiple of 32)",
            k.name, l.grid, l.block
        ));
    }
    if l.shared_bytes() > SHARED_LIMIT {
        return Err(format!(
            "kernel {}: {} bytes of shared memory, over the {SHARED_LIMIT} a block may declare",
            k.name,
            l.shared_bytes()
        ));
    }
    Ok(())
}

/// Whether every access of `k` is within its buffer's or array's declared
/// length, and (for a GPU kernel) its launch shape is one a GPU runs.
pub fn in_bounds(k: &Kernel) -> Result<(), String> {
    if let Some(l) = &k.launch {
        launch_shape(k, l)?;
    }
    let mut set = HashSet::new();
    reassigned(&k.body, &mut set);
    Checker { k, spans: HashMap::new(), reassigned: set }.stmts(&k.body)
}
