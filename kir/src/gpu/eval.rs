//! The GPU-semantics evaluator: the ground truth of GPU kernels, run on the
//! CPU. It runs every block of the grid and every thread of a block, with
//! CUDA's rules made checkable:
//!
//! - A block runs in *phases* separated by barriers. A statement without a
//!   barrier or warp operation runs in each thread in turn; a barrier ends the
//!   phase for all threads; a warp reduction or shuffle gathers the value of
//!   all 32 lanes first. The loops and conditionals around such convergent
//!   statements must agree in every thread of the block, or the run fails
//!   (divergent barrier).
//! - Within a phase, two threads touching one shared element where one of
//!   them writes is a race; so is a read of a shared element no thread has
//!   written. Across the whole grid (blocks do not synchronise), two threads
//!   writing one element of an output buffer, or one reading what another
//!   writes, is a race. Races are errors that name the array, the element and
//!   the threads, whatever order the evaluator happened to run them in.
//! - Arithmetic is [`crate::eval`]'s, bit for bit; warp reductions fold in
//!   butterfly order (lane distance 16, 8, 4, 2, 1), as the renderers emit.
//!
//! Buffers are `f64` slots that hold each element exactly: floats as their
//! value (rounded to the buffer's type when stored), integers as integers.

use crate::eval::{expr, fold, offset, Scope, V};
use crate::{ArrayRef, Elem, GpuExpr, GpuStmt, Index, IntOp, Kernel, LaunchIndex, Scalar, Shuffle, Stmt, Var, WARP};
use std::collections::HashMap;

/// Who touched an element within a phase (shared) or a launch (global).
#[derive(Clone, Copy, Default)]
struct Touch {
    writer: Option<u64>,
    reader: Option<u64>,
    /// Read by more than one thread.
    shared_read: bool,
}

impl Touch {
    fn read(&mut self, who: u64) -> Result<(), String> {
        if let Some(w) = self.writer.filter(|&w| w != who) {
            return Err(format!("read by thread {who} and written by thread {w}"));
        }
        match self.reader {
            Some(r) if r != who => self.shared_read = true,
            _ => self.reader = Some(who),
        }
        Ok(())
    }
    fn write(&mut self, who: u64) -> Result<(), String> {
        if let Some(w) = self.writer.filter(|&w| w != who) {
            return Err(format!("written by threads {w} and {who}"));
        }
        if let Some(r) = self.reader.filter(|&r| r != who || self.shared_read) {
            let r = if r == who { "others".to_string() } else { r.to_string() };
            return Err(format!("read by thread {r} and written by thread {who}"));
        }
        self.writer = Some(who);
        Ok(())
    }
}

/// Memory every thread of a block sees.
struct Memory<'a> {
    k: &'a Kernel,
    bufs: &'a mut [Vec<f64>],
    shared: Vec<Vec<Option<V>>>,
    /// Shared elements touched in this phase, by `(array, element)`, with thread indices.
    phase: HashMap<(usize, usize), Touch>,
    /// Output elements touched in this launch, by `(buffer, element)`, with grid-wide thread ids.
    global: HashMap<(usize, usize), Touch>,
    block: u32,
    /// The first error a thread met (loads cannot return one).
    error: Option<String>,
}

impl Memory<'_> {
    fn fail(&mut self, e: String) {
        self.error.get_or_insert(e);
    }
    fn global_id(&self, thread: u32) -> u64 {
        u64::from(self.block) * u64::from(self.k.launch.as_ref().map_or(1, |l| l.block)) + u64::from(thread)
    }
    fn read_buffer(&mut self, buf: usize, at: usize, thread: u32) -> V {
        let decl = &self.k.buffers[buf];
        if decl.output {
            let who = self.global_id(thread);
            if let Err(e) = self.global.entry((buf, at)).or_default().read(who) {
                self.fail(format!("kernel {}: race on {}[{at}]: {e}", self.k.name, decl.name));
            }
        }
        let x = self.bufs[buf][at];
        if decl.elem.is_float() {
            V::F(x as f32)
        } else {
            V::I(x as i64 as i32)
        }
    }
    fn write_buffer(&mut self, buf: usize, at: usize, thread: u32, v: V) {
        let who = self.global_id(thread);
        let decl = &self.k.buffers[buf];
        if let Err(e) = self.global.entry((buf, at)).or_default().write(who) {
            self.fail(format!("kernel {}: race on {}[{at}]: {e}", self.k.name, decl.name));
        }
        self.bufs[buf][at] = stored(decl.elem, v);
    }
    fn read_shared(&mut self, array: usize, at: usize, thread: u32) -> V {
        let name = &self.k.launch.as_ref().expect("a GPU kernel").shared[array].name;
        if let Err(e) = self.phase.entry((array, at)).or_default().read(u64::from(thread)) {
            self.fail(format!("kernel {}: race on shared {name}[{at}] between barriers: {e}", self.k.name));
        }
        match self.shared[array][at] {
            Some(v) => v,
            None => {
                let e = format!(
                    "kernel {}: thread {thread} reads shared {name}[{at}] before any thread writes it",
                    self.k.name
                );
                self.fail(e);
                V::F(f32::NAN)
            }
        }
    }
    fn write_shared(&mut self, array: usize, at: usize, thread: u32, v: V) {
        let name = &self.k.launch.as_ref().expect("a GPU kernel").shared[array].name;
        if let Err(e) = self.phase.entry((array, at)).or_default().write(u64::from(thread)) {
            self.fail(format!("kernel {}: race on shared {name}[{at}] between barriers: {e}", self.k.name));
        }
        self.shared[array][at] = Some(v);
    }
}

/// The slot value of `v` stored in a buffer of type `elem`.
fn stored(elem: Elem, v: V) -> f64 {
    match elem {
        Elem::F32 => f64::from(v.f()),
        Elem::BF16 => f64::from(round_bf16(v.f())),
        Elem::F16 => f64::from(round_f16(v.f())),
        Elem::I32 => f64::from(v.i()),
        Elem::I64 => f64::from(v.i()),
        Elem::U8 => f64::from(v.i() as u8),
        Elem::U32 => f64::from(v.i() as u32),
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even).
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// `x` rounded to the nearest IEEE half (ties to even; overflow to ±∞).
pub fn round_f16(x: f32) -> f32 {
    let a = x.abs();
    if !x.is_finite() || a == 0.0 {
        return x;
    }
    if a >= 65520.0 {
        return f32::INFINITY.copysign(x);
    }
    // The spacing of halves near `a`: 2^(e − 10) for normal ones, 2^−24 below 2^−14.
    let e = ((a.to_bits() >> 23) as i32 - 127).max(-14);
    let quantum = 2f32.powi(e - 10);
    ((a / quantum).round_ties_even() * quantum).copysign(x)
}

/// One thread's view: its variables and local arrays, and the block's memory.
struct Thread<'m, 'a> {
    vars: &'m mut Vec<V>,
    local: &'m mut Vec<Vec<V>>,
    mem: &'m mut Memory<'a>,
    thread: u32,
}

impl Scope for Thread<'_, '_> {
    fn var(&self, v: Var) -> V {
        self.vars[v]
    }
    fn load(&mut self, buf: usize, ix: &Index) -> V {
        let at = offset(self, ix) as usize;
        self.mem.read_buffer(buf, at, self.thread)
    }
    fn gpu(&mut self, e: &GpuExpr) -> V {
        let l = self.mem.k.launch.as_ref().expect("a GPU kernel");
        match e {
            GpuExpr::Index(i) => V::I(match i {
                LaunchIndex::Block => self.mem.block,
                LaunchIndex::Thread => self.thread,
                LaunchIndex::BlockDim => l.block,
                LaunchIndex::GridDim => l.grid,
                LaunchIndex::Lane => self.thread % WARP,
                LaunchIndex::Warp => self.thread / WARP,
            } as i32),
            GpuExpr::LoadAt { buf, at } => {
                let at = expr(self, at).i() as usize;
                self.mem.read_buffer(*buf, at, self.thread)
            }
            GpuExpr::ArrayLoad { array, at } => {
                let at = expr(self, at).i() as usize;
                match array {
                    ArrayRef::Shared(a) => self.mem.read_shared(*a, at, self.thread),
                    ArrayRef::Local(a) => self.local[*a][at],
                }
            }
            GpuExpr::Int(op, a, b) => {
                let (a, b) = (expr(self, a).i(), expr(self, b).i());
                V::I(match op {
                    IntOp::Mul => a.wrapping_mul(b),
                    IntOp::Div => a.wrapping_div(b),
                    IntOp::Rem => a.wrapping_rem(b),
                    IntOp::Min => a.min(b),
                    IntOp::Max => a.max(b),
                })
            }
        }
    }
}

/// Whether `s` holds a barrier or warp operation, which all threads run together.
fn convergent(s: &Stmt) -> bool {
    match s {
        Stmt::Gpu(GpuStmt::Barrier | GpuStmt::WarpReduce { .. } | GpuStmt::Shuffle { .. }) => true,
        Stmt::Loop { body, .. } | Stmt::Gpu(GpuStmt::Range { body, .. } | GpuStmt::If { body, .. }) => {
            body.iter().any(convergent)
        }
        _ => false,
    }
}

/// A block's threads.
struct Block<'m, 'a> {
    mem: &'m mut Memory<'a>,
    vars: Vec<Vec<V>>,
    local: Vec<Vec<Vec<V>>>,
}

impl<'a> Block<'_, 'a> {
    fn thread(&mut self, t: usize) -> Thread<'_, 'a> {
        Thread { vars: &mut self.vars[t], local: &mut self.local[t], mem: &mut *self.mem, thread: t as u32 }
    }

    /// The value of `e` in every thread.
    fn each(&mut self, e: &crate::Expr) -> Result<Vec<V>, String> {
        let values = (0..self.vars.len()).map(|t| expr(&mut self.thread(t), e)).collect();
        self.mem.error.take().map_or(Ok(values), Err)
    }

    /// The value of `e`, which every thread must agree on (the control flow around a barrier).
    fn uniform(&mut self, e: &crate::Expr, what: &str) -> Result<V, String> {
        let values = self.each(e)?;
        if values.iter().any(|v| *v != values[0]) {
            return Err(format!(
                "kernel {}: the {what} around a barrier or warp operation differs between threads of block {}",
                self.mem.k.name, self.mem.block
            ));
        }
        Ok(values[0])
    }

    fn run(&mut self, body: &[Stmt]) -> Result<(), String> {
        for s in body {
            if !convergent(s) {
                for t in 0..self.vars.len() {
                    stmts(&mut self.thread(t), std::slice::from_ref(s));
                }
                if let Some(e) = self.mem.error.take() {
                    return Err(e);
                }
                continue;
            }
            match s {
                Stmt::Gpu(GpuStmt::Barrier) => self.mem.phase.clear(),
                Stmt::Gpu(GpuStmt::WarpReduce { var, op, value }) => {
                    let mut lanes = self.each(value)?;
                    for warp in lanes.chunks_mut(WARP as usize) {
                        for d in [16, 8, 4, 2, 1] {
                            let before: Vec<V> = warp.to_vec();
                            for (l, v) in warp.iter_mut().enumerate() {
                                *v = V::F(fold(*op, before[l].f(), before[l ^ d].f()));
                            }
                        }
                    }
                    for (t, v) in lanes.into_iter().enumerate() {
                        self.vars[t][*var] = v;
                    }
                }
                Stmt::Gpu(GpuStmt::Shuffle { var, value, mode, lane }) => {
                    let values = self.each(value)?;
                    let lanes = self.each(lane)?;
                    for t in 0..values.len() {
                        let me = (t as u32 % WARP) as i64;
                        let n = i64::from(lanes[t].i());
                        let src = match mode {
                            Shuffle::Index => n & 31,
                            Shuffle::Down => me + n,
                            Shuffle::Up => me - n,
                            Shuffle::Xor => me ^ n,
                        };
                        let src = if (0..32).contains(&src) { src } else { me };
                        self.vars[t][*var] = values[t - me as usize + src as usize];
                    }
                }
                Stmt::Loop { var, extent, body } => {
                    for i in 0..*extent {
                        self.vars.iter_mut().for_each(|v| v[*var] = V::I(i as i32));
                        self.run(body)?;
                    }
                }
                Stmt::Gpu(GpuStmt::Range { var, start, end, step, body }) => {
                    let mut at = self.uniform(start, "loop start")?.i();
                    loop {
                        self.vars.iter_mut().for_each(|v| v[*var] = V::I(at));
                        if at >= self.uniform(end, "loop bound")?.i() {
                            break;
                        }
                        self.run(body)?;
                        at = at.saturating_add(self.uniform(step, "loop step")?.i());
                    }
                }
                Stmt::Gpu(GpuStmt::If { cond, body }) => {
                    if matches!(self.uniform(cond, "condition")?, V::B(true)) {
                        self.run(body)?;
                    }
                }
                _ => unreachable!("only barriers, warp operations and control flow are convergent"),
            }
        }
        Ok(())
    }
}

/// Runs `body` in one thread (no barrier or warp operation inside).
fn stmts(s: &mut Thread, body: &[Stmt]) {
    for st in body {
        if s.mem.error.is_some() {
            return;
        }
        match st {
            Stmt::Loop { var, extent, body } => {
                for i in 0..*extent {
                    s.vars[*var] = V::I(i as i32);
                    stmts(s, body);
                }
            }
            Stmt::Let { var, value } | Stmt::Gpu(GpuStmt::Set { var, value }) => {
                let v = expr(s, value);
                s.vars[*var] = v;
            }
            Stmt::Accumulate { var, op, value } => {
                let v = expr(s, value).f();
                s.vars[*var] = V::F(fold(*op, s.vars[*var].f(), v));
            }
            Stmt::Store { buf, index, value } => {
                let v = expr(s, value);
                let at = offset(s, index) as usize;
                s.mem.write_buffer(*buf, at, s.thread, v);
            }
            Stmt::Gpu(g) => match g {
                GpuStmt::Range { var, start, end, step, body } => {
                    let mut at = expr(s, start).i();
                    loop {
                        s.vars[*var] = V::I(at);
                        if at >= expr(s, end).i() {
                            break;
                        }
                        stmts(s, body);
                        at = at.saturating_add(expr(s, step).i());
                    }
                }
                GpuStmt::If { cond, body } => {
                    if matches!(expr(s, cond), V::B(true)) {
                        stmts(s, body);
                    }
                }
                GpuStmt::StoreAt { buf, at, value } => {
                    let v = expr(s, value);
                    let at = expr(s, at).i() as usize;
                    s.mem.write_buffer(*buf, at, s.thread, v);
                }
                GpuStmt::ArrayStore { array, at, value } => {
                    let v = expr(s, value);
                    let at = expr(s, at).i() as usize;
                    match array {
                        ArrayRef::Shared(a) => s.mem.write_shared(*a, at, s.thread, v),
                        ArrayRef::Local(a) => s.local[*a][at] = v,
                    }
                }
                GpuStmt::Set { .. } => unreachable!("handled with Let"),
                GpuStmt::Barrier | GpuStmt::WarpReduce { .. } | GpuStmt::Shuffle { .. } => {
                    unreachable!("convergent statements run on the whole block")
                }
            },
        }
    }
}

/// Runs GPU kernel `k` on `bufs` (one per buffer, element values in `f64`
/// slots; outputs updated in place). Fails on a kernel that does not pass the
/// bounds check, a race, or a barrier or warp operation under divergent control flow.
pub fn run(k: &Kernel, bufs: &mut [Vec<f64>]) -> Result<(), String> {
    let l = k.launch.as_ref().ok_or_else(|| format!("kernel {} is not a GPU kernel (no launch)", k.name))?;
    crate::check::in_bounds(k)?;
    if bufs.len() != k.buffers.len() {
        return Err(format!("kernel {} takes {} buffers, got {}", k.name, k.buffers.len(), bufs.len()));
    }
    for (b, decl) in bufs.iter().zip(&k.buffers) {
        if b.len() as u64 != decl.len {
            return Err(format!("kernel {}: buffer {} has {} elements, not {}", k.name, decl.name, b.len(), decl.len));
        }
    }
    let zero = |a: &crate::Array| if a.scalar == Scalar::I32 { V::I(0) } else { V::F(0.0) };
    let mut mem =
        Memory { k, bufs, shared: Vec::new(), phase: HashMap::new(), global: HashMap::new(), block: 0, error: None };
    for block in 0..l.grid {
        mem.block = block;
        mem.shared = l.shared.iter().map(|a| vec![None; a.len as usize]).collect();
        mem.phase.clear();
        let threads = l.block as usize;
        let local: Vec<Vec<V>> = l.local.iter().map(|a| vec![zero(a); a.len as usize]).collect();
        let mut b = Block { mem: &mut mem, vars: vec![vec![V::I(0); k.vars]; threads], local: vec![local; threads] };
        b.run(&k.body)?;
    }
    Ok(())
}
