//! The Cranelift backend: kernel IR → native code in memory (JIT), with no
//! system dependency. Each kernel becomes one function
//! `fn(buffers: *const *mut f32, begin: i64, end: i64)` that runs iterations
//! `begin..end` of the kernel's outermost loop, so the executor can split a
//! parallel loop between threads.
//!
//! The rendering is a direct walk of the kernel IR: every construct maps to
//! one or a few Cranelift instructions with the semantics of `lsc_kir::eval`
//! (the tests compare the two bit for bit).

#![warn(missing_docs)]

mod simd;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, UserFuncName, Value};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use lsc_kir::native::{Compiled, KernelFn, NativeCompiler};
use lsc_kir::{Binary, Expr, Index, Kernel, Stmt, Unary};
use std::collections::HashMap;

/// Compiled kernels, alive as long as the module that owns their code.
pub struct Jit {
    module: JITModule,
    compiled: Compiled,
    clif: HashMap<String, String>,
}

impl Jit {
    /// A JIT for the host CPU.
    pub fn new() -> Result<Jit, String> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
        flags.set("is_pic", "false").map_err(|e| e.to_string())?;
        flags.set("use_colocated_libcalls", "false").map_err(|e| e.to_string())?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("this CPU is not supported by Cranelift: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        Ok(Jit { module, compiled: Compiled::default(), clif: HashMap::new() })
    }

    /// The Cranelift IR of a compiled kernel (`--emit clif`).
    pub fn clif(&self, name: &str) -> Option<&str> {
        self.clif.get(name).map(String::as_str)
    }
}

impl NativeCompiler for Jit {
    /// Compiles `k` (its buffer accesses are checked in bounds first).
    fn compile(&mut self, k: &Kernel) -> Result<(), String> {
        lsc_kir::check::cpu_only(k)?;
        lsc_kir::check::in_bounds(k)?;
        if k.schedule.vector_width > 1 && k.schedule.vector_width != simd::LANES {
            return Err(format!(
                "kernel {}: Cranelift renders vector loops of {} lanes, not {}",
                k.name,
                simd::LANES,
                k.schedule.vector_width
            ));
        }
        let mut ctx = self.module.make_context();
        let ptr = self.module.target_config().pointer_type();
        ctx.func.signature.params.extend([AbiParam::new(ptr), AbiParam::new(types::I64), AbiParam::new(types::I64)]);
        let id = self
            .module
            .declare_function(&k.name, Linkage::Local, &ctx.func.signature)
            .map_err(|e| format!("kernel {}: {e}", k.name))?;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let params = b.block_params(entry).to_vec();
            let flags = MemFlagsData::trusted();
            let target = self.module.target_config();
            let bufs: Vec<Value> =
                (0..k.buffers.len()).map(|i| b.ins().load(ptr, flags, params[0], (i * 8) as i32)).collect();
            let mut cg = Codegen {
                b,
                bufs,
                vars: HashMap::new(),
                vvars: HashMap::new(),
                vector_var: None,
                simd: k.schedule.vector_width == simd::LANES,
                range: Some((params[1], params[2])),
            };
            cg.stmts(&k.body)?;
            cg.b.ins().return_(&[]);
            cg.b.seal_all_blocks();
            cg.b.finalize(target);
        }
        self.clif.insert(k.name.clone(), ctx.func.display().to_string());
        self.module.define_function(id, &mut ctx).map_err(|e| format!("kernel {}: {e:?}", k.name))?;
        self.module.clear_context(&mut ctx);
        self.module.finalize_definitions().map_err(|e| e.to_string())?;
        let code = self.module.get_finalized_function(id);
        // SAFETY: the function was built with exactly this signature from `k`, which passed the
        // bounds check, and its code lives as long as `self.module`, which outlives `compiled`.
        unsafe {
            let f: KernelFn = std::mem::transmute::<*const u8, KernelFn>(code);
            self.compiled.insert(k, f);
        }
        Ok(())
    }

    fn kernels(&self) -> &Compiled {
        &self.compiled
    }

    fn vector_width(&self) -> u32 {
        simd::LANES
    }

    fn listings(&self, name: &str) -> Vec<(&'static str, String)> {
        self.clif(name).map(|t| vec![("clif", t.to_string())]).unwrap_or_default()
    }
}

struct Codegen<'a> {
    b: FunctionBuilder<'a>,
    bufs: Vec<Value>,
    vars: HashMap<usize, Variable>,
    /// Variables of the f32x4 loop being emitted, and its loop variable.
    vvars: HashMap<usize, Variable>,
    vector_var: Option<usize>,
    /// The kernel's schedule asks for 4 lanes.
    simd: bool,
    /// The `(begin, end)` of the outermost loop, until it is emitted.
    range: Option<(Value, Value)>,
}

impl Codegen<'_> {
    fn var(&mut self, v: usize, ty: types::Type) -> Variable {
        if let Some(&x) = self.vars.get(&v) {
            return x;
        }
        let x = self.b.declare_var(ty);
        self.vars.insert(v, x);
        x
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), String> {
        for s in body {
            match s {
                Stmt::Loop { var, extent, body } => {
                    let (lo, hi) = match self.range.take() {
                        Some(r) => r,
                        None => (self.b.ins().iconst(types::I64, 0), self.b.ins().iconst(types::I64, *extent as i64)),
                    };
                    let i = self.var(*var, types::I64);
                    self.b.def_var(i, lo);
                    if self.simd && lsc_kir::vector::vectorizable(*var, body) {
                        self.vector_var = Some(*var);
                        self.vector_loop(*var, body, hi)?;
                        self.vector_var = None;
                    }
                    // The scalar loop (the remainder, after a vector loop).
                    let (header, inner, exit) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
                    self.b.ins().jump(header, &[]);
                    self.b.switch_to_block(header);
                    let at = self.b.use_var(i);
                    let more = self.b.ins().icmp(IntCC::SignedLessThan, at, hi);
                    self.b.ins().brif(more, inner, &[], exit, &[]);
                    self.b.switch_to_block(inner);
                    self.stmts(body)?;
                    let at = self.b.use_var(i);
                    let next = self.b.ins().iadd_imm_s(at, 1);
                    self.b.def_var(i, next);
                    self.b.ins().jump(header, &[]);
                    self.b.switch_to_block(exit);
                }
                Stmt::Let { var, value } => {
                    let v = self.expr(value)?;
                    let ty = self.b.func.dfg.value_type(v);
                    let x = self.var(*var, ty);
                    self.b.def_var(x, v);
                }
                Stmt::Accumulate { var, op, value } => {
                    let v = self.expr(value)?;
                    let x = self.var(*var, types::F32);
                    let acc = self.b.use_var(x);
                    let r = self.fold(*op, acc, v);
                    self.b.def_var(x, r);
                }
                Stmt::Store { buf, index, value } => {
                    let v = self.expr(value)?;
                    let addr = self.address(*buf, index);
                    self.b.ins().store(MemFlagsData::trusted(), v, addr, 0);
                }
                Stmt::Gpu(g) => return Err(format!("a {} is a GPU-only construct", lsc_kir::check::gpu_stmt_name(g))),
            }
        }
        Ok(())
    }

    /// `a ∘ b` for an accumulation op (scalars or vectors alike).
    fn fold(&mut self, op: Binary, a: Value, b: Value) -> Value {
        self.binary(if matches!(op, Binary::Max | Binary::Min | Binary::Mul) { op } else { Binary::Add }, a, b)
    }

    /// A unary float op (Cranelift's instructions take scalars and vectors alike).
    fn unary(&mut self, op: Unary, x: Value) -> Value {
        let ins = self.b.ins();
        match op {
            Unary::Neg => ins.fneg(x),
            Unary::Abs => ins.fabs(x),
            Unary::Sqrt => ins.sqrt(x),
            Unary::Floor => ins.floor(x),
            Unary::Nearest => ins.nearest(x),
        }
    }

    /// A comparison of floats or integers, scalars or vectors alike.
    fn compare(&mut self, op: lsc_kir::Compare, a: Value, b: Value) -> Value {
        if self.b.func.dfg.value_type(a).lane_type() == types::F32 {
            self.b.ins().fcmp(simd::float_cc(op), a, b)
        } else {
            self.b.ins().icmp(simd::int_cc(op), a, b)
        }
    }

    /// A binary op on scalars or vectors alike (vector shifts take immediates: see `simd`).
    fn binary(&mut self, op: Binary, a: Value, b: Value) -> Value {
        let ins = self.b.ins();
        match op {
            Binary::Add => ins.fadd(a, b),
            Binary::Sub => ins.fsub(a, b),
            Binary::Mul => ins.fmul(a, b),
            Binary::Div => ins.fdiv(a, b),
            Binary::Min => ins.fmin(a, b),
            Binary::Max => ins.fmax(a, b),
            Binary::IAdd => ins.iadd(a, b),
            Binary::ISub => ins.isub(a, b),
            Binary::Shl => ins.ishl(a, b),
            Binary::ShrU => ins.ushr(a, b),
            Binary::And => ins.band(a, b),
            Binary::Or => ins.bor(a, b),
        }
    }

    fn address(&mut self, buf: usize, ix: &Index) -> Value {
        let mut at = self.b.ins().iconst(types::I64, ix.offset * 4);
        for &(v, stride) in &ix.terms {
            let x = self.var(v, types::I64);
            let i = self.b.use_var(x);
            let scaled = self.b.ins().imul_imm_s(i, stride * 4);
            at = self.b.ins().iadd(at, scaled);
        }
        self.b.ins().iadd(self.bufs[buf], at)
    }

    fn expr(&mut self, e: &Expr) -> Result<Value, String> {
        Ok(match e {
            Expr::F32(x) => self.b.ins().f32const(*x),
            Expr::I32(x) => self.b.ins().iconst(types::I32, *x as i64),
            Expr::Var(v) => {
                let x = *self.vars.get(v).ok_or_else(|| format!("variable v{v} used before it is bound"))?;
                self.b.use_var(x)
            }
            Expr::Load { buf, index } => {
                let addr = self.address(*buf, index);
                self.b.ins().load(types::F32, MemFlagsData::trusted(), addr, 0)
            }
            Expr::Unary(op, x) => {
                let x = self.expr(x)?;
                self.unary(*op, x)
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, a, b)
            }
            Expr::Compare(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.compare(*op, a, b)
            }
            Expr::Select(c, a, b) => {
                let (c, a, b) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                self.b.ins().select(c, a, b)
            }
            Expr::FromBits(x) => {
                let x = self.expr(x)?;
                self.b.ins().bitcast(types::F32, MemFlagsData::new(), x)
            }
            Expr::ToBits(x) => {
                let x = self.expr(x)?;
                self.b.ins().bitcast(types::I32, MemFlagsData::new(), x)
            }
            Expr::ToInt(x) => {
                let x = self.expr(x)?;
                self.b.ins().fcvt_to_sint_sat(types::I32, x)
            }
            Expr::ToFloat(x) => {
                let x = self.expr(x)?;
                self.b.ins().fcvt_from_sint(types::F32, x)
            }
            Expr::Gpu(g) => return Err(format!("a {} is a GPU-only construct", lsc_kir::check::gpu_expr_name(g))),
        })
    }
}
