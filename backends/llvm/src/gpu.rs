//! The GPU constructs of kernel IR → NVVM: launch indices as
//! `llvm.nvvm.read.ptx.sreg.*`, shared arrays as `addrspace(3)` globals,
//! local arrays as stack slots, the CTA barrier and `shfl.sync`. Everything
//! else (expressions, loads and stores, loops) is the CPU renderer's code in
//! [`crate::codegen`], with i32 loop indices.

use crate::codegen::{err, Codegen, R, V};
use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicType, BasicTypeEnum};
use inkwell::values::{BasicValue, IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use lsc_kir::{ArrayRef, Expr, GpuExpr, GpuStmt, IntOp, Kernel, LaunchIndex, Scalar, Shuffle, Stmt, Var};
use std::collections::HashMap;

/// LLVM's `ptx_kernel` calling convention: the function is a kernel entry (`.entry`).
const PTX_KERNEL: u32 = 71;
/// NVPTX's shared-memory address space.
const SHARED: u16 = 3;

/// Adds GPU kernel `k` to `module` as a `ptx_kernel` taking one pointer per buffer.
pub(crate) fn kernel(cx: &'static Context, module: &Module<'static>, k: &Kernel) -> R<()> {
    let launch = k.launch.as_ref().ok_or_else(|| format!("kernel {} has no launch shape", k.name))?;
    let ptr = cx.ptr_type(AddressSpace::default());
    let params: Vec<_> = k.buffers.iter().map(|_| ptr.into()).collect();
    let f = module.add_function(&k.name, cx.void_type().fn_type(&params, false), None);
    f.set_call_conventions(PTX_KERNEL);
    // The block size is fixed at compile time: ptxas may use every register a thread of it can have.
    f.add_attribute(AttributeLoc::Function, cx.create_string_attribute("nvvm.maxntid", &launch.block.to_string()));
    let entry = cx.append_basic_block(f, "entry");
    let start = cx.append_basic_block(f, "start");
    let b = cx.create_builder();
    let slots = cx.create_builder();
    slots.position_at_end(entry);
    b.position_at_end(start);
    let bufs = f.get_params().iter().map(|p| p.into_pointer_value()).collect();
    let mut cg = Codegen {
        cx,
        module,
        f,
        b,
        slots,
        bufs,
        vars: HashMap::new(),
        vvars: HashMap::new(),
        vector_var: None,
        lanes: 1,
        range: None,
        elems: k.buffers.iter().map(|b| b.elem).collect(),
        shared: Vec::new(),
        local: Vec::new(),
        gpu: true,
    };
    for a in &launch.shared {
        let ty = cg.scalar_type(a.scalar).array_type(a.len);
        let g = module.add_global(ty, Some(AddressSpace::from(SHARED)), &format!("{}_{}", k.name, a.name));
        g.set_linkage(Linkage::Internal);
        g.set_initializer(&ty.get_undef());
        g.set_alignment(16);
        cg.shared.push((g.as_pointer_value(), ty.into()));
    }
    for a in &launch.local {
        let ty = cg.scalar_type(a.scalar).array_type(a.len);
        let slot = cg.slot(ty.into())?;
        cg.local.push((slot, ty.into()));
    }
    cg.stmts(&k.body)?;
    cg.b.build_return(None).map_err(err)?;
    cg.slots.build_unconditional_branch(start).map_err(err)?;
    Ok(())
}

impl Codegen<'_> {
    fn scalar_type(&self, s: Scalar) -> BasicTypeEnum<'static> {
        match s {
            Scalar::F32 => self.cx.f32_type().into(),
            Scalar::I32 => self.cx.i32_type().into(),
            Scalar::Bool => self.cx.bool_type().into(),
        }
    }

    fn int_expr(&mut self, e: &Expr) -> R<IntValue<'static>> {
        match self.expr(e)? {
            V::IntValue(v) => Ok(v),
            other => Err(format!("an integer was expected, not a {}", other.get_type())),
        }
    }

    fn sreg(&self, name: &str) -> R<IntValue<'static>> {
        Ok(self.intrinsic(&format!("llvm.nvvm.read.ptx.sreg.{name}"), &[], &[])?.into_int_value())
    }

    /// The address of element `at` of a shared or local array, and its element type.
    fn array_element(&mut self, array: ArrayRef, at: &Expr) -> R<(PointerValue<'static>, BasicTypeEnum<'static>)> {
        let at = self.int_expr(at)?;
        let (base, ty) = match array {
            ArrayRef::Shared(i) => self.shared.get(i),
            ArrayRef::Local(i) => self.local.get(i),
        }
        .copied()
        .ok_or_else(|| format!("no array {array:?}"))?;
        let zero = self.cx.i32_type().const_zero();
        // SAFETY: the kernel passed the static bounds check for its arrays.
        let p = unsafe { self.b.build_in_bounds_gep(ty, base, &[zero, at], "a") }.map_err(err)?;
        Ok((p, ty.into_array_type().get_element_type()))
    }

    /// The element at `at` (an i32) of buffer `buf`.
    fn buffer_element(&mut self, buf: usize, at: &Expr) -> R<PointerValue<'static>> {
        let at = self.int_expr(at)?;
        let wide = self.b.build_int_s_extend(at, self.cx.i64_type(), "at").map_err(err)?;
        self.element(buf, wide)
    }

    /// `value` in lane `lane` of the warp, per `mode` (`shfl.sync`, all lanes taking part).
    fn shuffle(&self, mode: Shuffle, value: V, lane: IntValue<'static>) -> R<V> {
        let i32t = self.cx.i32_type();
        let (name, clamp) = match mode {
            Shuffle::Index => ("idx", 31),
            Shuffle::Down => ("down", 31),
            Shuffle::Up => ("up", 0),
            Shuffle::Xor => ("bfly", 31),
        };
        let kind = match value {
            V::FloatValue(_) => "f32",
            V::IntValue(_) => "i32",
            other => return Err(format!("a shuffle of a {}", other.get_type())),
        };
        let all = i32t.const_all_ones().into();
        let args = [all, value, lane.into(), i32t.const_int(clamp, false).into()];
        self.intrinsic(&format!("llvm.nvvm.shfl.sync.{name}.{kind}"), &[], &args)
    }

    pub(crate) fn gpu_expr(&mut self, e: &GpuExpr) -> R<V> {
        Ok(match e {
            GpuExpr::Index(i) => match i {
                LaunchIndex::Block => self.sreg("ctaid.x")?.into(),
                LaunchIndex::Thread => self.sreg("tid.x")?.into(),
                LaunchIndex::BlockDim => self.sreg("ntid.x")?.into(),
                LaunchIndex::GridDim => self.sreg("nctaid.x")?.into(),
                LaunchIndex::Lane => self.sreg("laneid")?.into(),
                LaunchIndex::Warp => {
                    let t = self.sreg("tid.x")?;
                    let five = self.cx.i32_type().const_int(5, false);
                    self.b.build_right_shift(t, five, false, "warp").map_err(err)?.into()
                }
            },
            GpuExpr::LoadAt { buf, at } => {
                let p = self.buffer_element(*buf, at)?;
                self.load(*buf, p)?
            }
            GpuExpr::ArrayLoad { array, at } => {
                let (p, ty) = self.array_element(*array, at)?;
                let x = self.b.build_load(ty, p, "s").map_err(err)?;
                x.as_instruction_value().ok_or("a load")?.set_alignment(4).map_err(err)?;
                x
            }
            GpuExpr::Int(op, a, b) => {
                let (a, b) = (self.int_expr(a)?, self.int_expr(b)?);
                match op {
                    IntOp::Mul => self.b.build_int_mul(a, b, "mul").map_err(err)?.into(),
                    IntOp::Div => self.b.build_int_signed_div(a, b, "div").map_err(err)?.into(),
                    IntOp::Rem => self.b.build_int_signed_rem(a, b, "rem").map_err(err)?.into(),
                    IntOp::Min => self.intrinsic("llvm.smin", &[a.get_type().into()], &[a.into(), b.into()])?,
                    IntOp::Max => self.intrinsic("llvm.smax", &[a.get_type().into()], &[a.into(), b.into()])?,
                }
            }
        })
    }

    pub(crate) fn gpu_stmt(&mut self, s: &GpuStmt) -> R<()> {
        match s {
            GpuStmt::Range { var, start, end, step, body } => self.range_loop(*var, start, end, step, body)?,
            GpuStmt::If { cond, body } => {
                let c = match self.expr(cond)? {
                    V::IntValue(c) => c,
                    other => return Err(format!("a condition of type {}", other.get_type())),
                };
                let (then, done) = (self.block("then"), self.block("endif"));
                self.b.build_conditional_branch(c, then, done).map_err(err)?;
                self.b.position_at_end(then);
                self.stmts(body)?;
                self.b.build_unconditional_branch(done).map_err(err)?;
                self.b.position_at_end(done);
            }
            GpuStmt::Set { var, value } => {
                let v = self.expr(value)?;
                let &(slot, _) = self.vars.get(var).ok_or_else(|| format!("v{var} is set before it is bound"))?;
                self.b.build_store(slot, v).map_err(err)?;
            }
            GpuStmt::StoreAt { buf, at, value } => {
                let v = self.expr(value)?;
                let p = self.buffer_element(*buf, at)?;
                self.store(*buf, p, v)?;
            }
            GpuStmt::ArrayStore { array, at, value } => {
                let v = self.expr(value)?;
                let (p, _) = self.array_element(*array, at)?;
                self.b.build_store(p, v).map_err(err)?.set_alignment(4).map_err(err)?;
            }
            GpuStmt::Barrier => {
                let zero = self.cx.i32_type().const_zero().into();
                self.call_intrinsic("llvm.nvvm.barrier.cta.sync.aligned.all", &[], &[zero])?;
            }
            GpuStmt::WarpReduce { var, op, value } => {
                let mut acc = self.expr(value)?;
                for d in [16, 8, 4, 2, 1] {
                    let other = self.shuffle(Shuffle::Xor, acc, self.cx.i32_type().const_int(d, false))?;
                    acc = self.fold(*op, acc, other)?;
                }
                self.bind(*var, acc, false)?;
            }
            GpuStmt::Shuffle { var, value, mode, lane } => {
                let v = self.expr(value)?;
                let lane = self.int_expr(lane)?;
                let r = self.shuffle(*mode, v, lane)?;
                self.bind(*var, r, false)?;
            }
        }
        Ok(())
    }

    /// `for var = start; var < end; var += step` (bound and step re-evaluated each trip, the step saturating).
    fn range_loop(&mut self, var: Var, start: &Expr, end: &Expr, step: &Expr, body: &[Stmt]) -> R<()> {
        let i32t = self.cx.i32_type();
        let first = self.int_expr(start)?;
        self.bind(var, first.into(), false)?;
        let &(slot, _) = self.vars.get(&var).ok_or("a loop variable")?;
        let (header, inner, exit) = (self.block("range"), self.block("rbody"), self.block("rdone"));
        self.b.build_unconditional_branch(header).map_err(err)?;
        self.b.position_at_end(header);
        let at = self.b.build_load(i32t, slot, "i").map_err(err)?.into_int_value();
        let bound = self.int_expr(end)?;
        let more = self.b.build_int_compare(IntPredicate::SLT, at, bound, "more").map_err(err)?;
        self.b.build_conditional_branch(more, inner, exit).map_err(err)?;
        self.b.position_at_end(inner);
        self.stmts(body)?;
        let at = self.b.build_load(i32t, slot, "i").map_err(err)?;
        let step = self.int_expr(step)?;
        let next = self.intrinsic("llvm.sadd.sat", &[i32t.into()], &[at, step.into()])?;
        self.b.build_store(slot, next).map_err(err)?;
        self.b.build_unconditional_branch(header).map_err(err)?;
        self.b.position_at_end(exit);
        Ok(())
    }
}
