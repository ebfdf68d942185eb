//! Kernel IR → LLVM IR. Variables live in stack slots (the O3 pipeline turns
//! them into registers); a vector loop renders the same statements on
//! `<W x float>` values, `W` the schedule's vector width.

use inkwell::attributes::AttributeLoc;
use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::BasicTypeEnum;
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatMathValue, FunctionValue, IntValue, PointerValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};
use lsc_kir::vector::{accumulators, combine_lanes, identity, lanes, vectorizable};
use lsc_kir::{Binary, Compare, Elem, Expr, Index, Kernel, Stmt, Unary, Var};
use std::collections::HashMap;

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn err(e: impl std::fmt::Display) -> String {
    format!("LLVM builder: {e}")
}

/// Adds kernel `k` to `module` as `void k(ptr buffers, i64 begin, i64 end)` for `cpu`.
pub(crate) fn kernel(cx: &'static Context, module: &Module<'static>, k: &Kernel, cpu: &str, features: &str) -> R<()> {
    let ptr = cx.ptr_type(AddressSpace::default());
    let i64t = cx.i64_type();
    let fn_type = cx.void_type().fn_type(&[ptr.into(), i64t.into(), i64t.into()], false);
    let f = module.add_function(&k.name, fn_type, None);
    f.add_attribute(AttributeLoc::Function, cx.create_string_attribute("target-cpu", cpu));
    f.add_attribute(AttributeLoc::Function, cx.create_string_attribute("target-features", features));
    let entry = cx.append_basic_block(f, "entry");
    let start = cx.append_basic_block(f, "start");
    let b = cx.create_builder();
    let slots = cx.create_builder();
    slots.position_at_end(entry);
    b.position_at_end(start);
    let params = f.get_params();
    let table = params[0].into_pointer_value();
    let mut bufs = Vec::with_capacity(k.buffers.len());
    for i in 0..k.buffers.len() {
        // SAFETY: the table holds one pointer per buffer (the calling convention).
        let at =
            unsafe { b.build_in_bounds_gep(ptr, table, &[i64t.const_int(i as u64, false)], "buf") }.map_err(err)?;
        bufs.push(b.build_load(ptr, at, "base").map_err(err)?.into_pointer_value());
    }
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
        lanes: lanes(&k.schedule).unwrap_or(1) as u32,
        range: Some((params[1].into_int_value(), params[2].into_int_value())),
        elems: k.buffers.iter().map(|b| b.elem).collect(),
        shared: Vec::new(),
        local: Vec::new(),
        gpu: false,
    };
    cg.stmts(&k.body)?;
    cg.b.build_return(None).map_err(err)?;
    cg.slots.build_unconditional_branch(start).map_err(err)?;
    Ok(())
}

pub(crate) struct Codegen<'m> {
    pub(crate) cx: &'static Context,
    pub(crate) module: &'m Module<'static>,
    pub(crate) f: FunctionValue<'static>,
    pub(crate) b: Builder<'static>,
    /// Positioned in the entry block, where every stack slot is allocated.
    pub(crate) slots: Builder<'static>,
    pub(crate) bufs: Vec<PointerValue<'static>>,
    pub(crate) vars: HashMap<Var, (PointerValue<'static>, BasicTypeEnum<'static>)>,
    /// Variables of the vector loop being emitted, and its loop variable.
    pub(crate) vvars: HashMap<Var, (PointerValue<'static>, BasicTypeEnum<'static>)>,
    pub(crate) vector_var: Option<Var>,
    /// Lanes of the schedule's vector loops (1: none).
    pub(crate) lanes: u32,
    /// The `(begin, end)` of the outermost loop, until it is emitted.
    pub(crate) range: Option<(IntValue<'static>, IntValue<'static>)>,
    /// Element types of the buffers.
    pub(crate) elems: Vec<Elem>,
    /// A GPU kernel's shared arrays (addrspace 3 globals) and local arrays (stack), with their array types.
    pub(crate) shared: Vec<(PointerValue<'static>, BasicTypeEnum<'static>)>,
    pub(crate) local: Vec<(PointerValue<'static>, BasicTypeEnum<'static>)>,
    /// Rendering a GPU kernel: loop indices are i32, as the launch indices are.
    pub(crate) gpu: bool,
}

pub(crate) type V = BasicValueEnum<'static>;

impl Codegen<'_> {
    pub(crate) fn slot(&self, ty: BasicTypeEnum<'static>) -> R<PointerValue<'static>> {
        self.slots.build_alloca(ty, "v").map_err(err)
    }

    /// Stores `v` in variable `var`'s stack slot (of the vector loop's variables when `vector`).
    pub(crate) fn bind(&mut self, var: Var, v: V, vector: bool) -> R<()> {
        let ty = v.get_type();
        let known = if vector { self.vvars.get(&var) } else { self.vars.get(&var) }.map(|&(p, _)| p);
        let slot = match known {
            Some(p) => p,
            None => {
                let p = self.slot(ty)?;
                if vector { &mut self.vvars } else { &mut self.vars }.insert(var, (p, ty));
                p
            }
        };
        self.b.build_store(slot, v).map_err(err)?;
        Ok(())
    }

    pub(crate) fn block(&self, name: &str) -> BasicBlock<'static> {
        self.cx.append_basic_block(self.f, name)
    }

    fn in_vector_loop(&self) -> bool {
        self.vector_var.is_some()
    }

    pub(crate) fn stmts(&mut self, body: &[Stmt]) -> R<()> {
        for s in body {
            match s {
                Stmt::Loop { var, extent, body } => self.for_loop(*var, *extent, body)?,
                Stmt::Let { var, value } => {
                    let v = self.expr(value)?;
                    self.bind(*var, v, false)?;
                }
                Stmt::Accumulate { var, op, value } => {
                    let v = self.expr(value)?;
                    let &(slot, ty) =
                        self.vars.get(var).ok_or_else(|| format!("accumulator v{var} is not declared"))?;
                    let acc = self.b.build_load(ty, slot, "acc").map_err(err)?;
                    let r = self.fold(*op, acc, v)?;
                    self.b.build_store(slot, r).map_err(err)?;
                }
                Stmt::Store { buf, index, value } => {
                    let v = self.expr(value)?;
                    let at = self.address(*buf, index)?;
                    self.store(*buf, at, v)?;
                }
                Stmt::Gpu(g) => self.gpu_stmt(g)?,
            }
        }
        Ok(())
    }

    /// `for var in lo..hi`: the vector loop first where [`vectorizable`], then the scalar loop.
    fn for_loop(&mut self, var: Var, extent: u64, body: &[Stmt]) -> R<()> {
        let i64t = self.index_type();
        let (lo, hi) = match self.range.take() {
            Some(r) => r,
            None => (i64t.const_zero(), i64t.const_int(extent, false)),
        };
        let slot = match self.vars.get(&var) {
            Some(&(p, _)) => p,
            None => {
                let p = self.slot(i64t.into())?;
                self.vars.insert(var, (p, i64t.into()));
                p
            }
        };
        self.b.build_store(slot, lo).map_err(err)?;
        if self.lanes > 1 && vectorizable(var, body) {
            self.vector_var = Some(var);
            self.vector_loop(slot, body, hi)?;
            self.vector_var = None;
        }
        // The scalar loop (the remainder, after a vector loop).
        let (header, inner, exit) = (self.block("loop"), self.block("body"), self.block("done"));
        self.b.build_unconditional_branch(header).map_err(err)?;
        self.b.position_at_end(header);
        let at = self.b.build_load(i64t, slot, "i").map_err(err)?.into_int_value();
        let more = self.b.build_int_compare(IntPredicate::SLT, at, hi, "more").map_err(err)?;
        self.b.build_conditional_branch(more, inner, exit).map_err(err)?;
        self.b.position_at_end(inner);
        self.stmts(body)?;
        let at = self.b.build_load(i64t, slot, "i").map_err(err)?.into_int_value();
        let next = self.b.build_int_add(at, i64t.const_int(1, false), "next").map_err(err)?;
        self.b.build_store(slot, next).map_err(err)?;
        self.b.build_unconditional_branch(header).map_err(err)?;
        self.b.position_at_end(exit);
        Ok(())
    }

    /// The vector loop whose index lives in `slot` (at the range's start), while `lanes` fit below `hi`.
    fn vector_loop(&mut self, slot: PointerValue<'static>, body: &[Stmt], hi: IntValue<'static>) -> R<()> {
        let i64t = self.cx.i64_type();
        let w = self.lanes;
        let vt = self.cx.f32_type().vec_type(w);
        // `w` partial results per accumulator, each starting at its op's identity.
        let mut partials = Vec::new();
        for (acc, op) in accumulators(body) {
            let p = self.slot(vt.into())?;
            let start = self.splat(self.cx.f32_type().const_float(f64::from(identity(op))).into())?;
            self.b.build_store(p, start).map_err(err)?;
            partials.push((acc, op, p));
        }
        let (header, inner, exit) = (self.block("vloop"), self.block("vbody"), self.block("vdone"));
        self.b.build_unconditional_branch(header).map_err(err)?;
        self.b.position_at_end(header);
        let at = self.b.build_load(i64t, slot, "i").map_err(err)?.into_int_value();
        let end = self.b.build_int_add(at, i64t.const_int(u64::from(w), false), "end").map_err(err)?;
        let fits = self.b.build_int_compare(IntPredicate::SLE, end, hi, "fits").map_err(err)?;
        self.b.build_conditional_branch(fits, inner, exit).map_err(err)?;
        self.b.position_at_end(inner);
        for s in body {
            match s {
                Stmt::Let { var, value } => {
                    let v = self.expr(value)?;
                    self.bind(*var, v, true)?;
                }
                Stmt::Store { buf, index, value } => {
                    let v = self.expr(value)?;
                    let at = self.address(*buf, index)?;
                    self.b.build_store(at, v).map_err(err)?.set_alignment(4).map_err(err)?;
                }
                Stmt::Accumulate { var, value, .. } => {
                    let v = self.expr(value)?;
                    let &(_, op, p) = partials.iter().find(|(a, ..)| a == var).ok_or("an unknown accumulator")?;
                    let lanes = self.b.build_load(vt, p, "lanes").map_err(err)?;
                    let folded = self.fold(op, lanes, v)?;
                    self.b.build_store(p, folded).map_err(err)?;
                }
                Stmt::Loop { .. } | Stmt::Gpu(_) => return Err("not a vectorizable loop body".into()),
            }
        }
        let at = self.b.build_load(i64t, slot, "i").map_err(err)?.into_int_value();
        let next = self.b.build_int_add(at, i64t.const_int(u64::from(w), false), "next").map_err(err)?;
        self.b.build_store(slot, next).map_err(err)?;
        self.b.build_unconditional_branch(header).map_err(err)?;
        self.b.position_at_end(exit);
        self.vvars.clear();
        for (acc, op, p) in partials {
            let lanes = self.b.build_load(vt, p, "lanes").map_err(err)?.into_vector_value();
            let mut each = Vec::with_capacity(w as usize);
            for l in 0..w {
                let ix = self.cx.i32_type().const_int(u64::from(l), false);
                each.push(self.b.build_extract_element(lanes, ix, "lane").map_err(err)?);
            }
            let mut failure = None;
            let combined = combine_lanes(&each, &mut |a, b| match self.fold(op, a, b) {
                Ok(v) => v,
                Err(e) => {
                    failure = Some(e);
                    a
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            let &(slot, ty) = self.vars.get(&acc).ok_or_else(|| format!("accumulator v{acc} is not declared"))?;
            let before = self.b.build_load(ty, slot, "acc").map_err(err)?;
            let after = self.fold(op, before, combined)?;
            self.b.build_store(slot, after).map_err(err)?;
        }
        Ok(())
    }

    /// `x` in every lane.
    fn splat(&self, x: V) -> R<V> {
        let ty = x.get_type();
        let vt = match ty {
            BasicTypeEnum::FloatType(t) => t.vec_type(self.lanes),
            BasicTypeEnum::IntType(t) => t.vec_type(self.lanes),
            other => return Err(format!("cannot splat a {other}")),
        };
        let zero = self.cx.i32_type().const_zero();
        let one = self.b.build_insert_element(vt.get_poison(), x, zero, "one").map_err(err)?;
        let mask = self.cx.i32_type().vec_type(self.lanes).const_zero();
        Ok(self.b.build_shuffle_vector(one, vt.get_poison(), mask, "splat").map_err(err)?.into())
    }

    /// The integer type of loop indices: i64 on the CPU, i32 on the GPU.
    pub(crate) fn index_type(&self) -> inkwell::types::IntType<'static> {
        if self.gpu {
            self.cx.i32_type()
        } else {
            self.cx.i64_type()
        }
    }

    fn address(&mut self, buf: usize, ix: &Index) -> R<PointerValue<'static>> {
        let i64t = self.cx.i64_type();
        let mut at = i64t.const_int(ix.offset as u64, true);
        for &(v, stride) in &ix.terms {
            let &(slot, ty) = self.vars.get(&v).ok_or_else(|| format!("index variable i{v} is not a loop"))?;
            let i = self.b.build_load(ty, slot, "i").map_err(err)?.into_int_value();
            let i = self.b.build_int_s_extend_or_bit_cast(i, i64t, "i64").map_err(err)?;
            let scaled = self.b.build_int_mul(i, i64t.const_int(stride as u64, true), "s").map_err(err)?;
            at = self.b.build_int_add(at, scaled, "at").map_err(err)?;
        }
        self.element(buf, at)
    }

    /// The LLVM type of a buffer element.
    pub(crate) fn elem_type(&self, e: Elem) -> BasicTypeEnum<'static> {
        match e {
            Elem::F32 => self.cx.f32_type().into(),
            Elem::BF16 => self.cx.bf16_type().into(),
            Elem::F16 => self.cx.f16_type().into(),
            Elem::I32 | Elem::U32 => self.cx.i32_type().into(),
            Elem::I64 => self.cx.i64_type().into(),
            Elem::U8 => self.cx.i8_type().into(),
        }
    }

    /// The address of element `at` (an i64) of buffer `buf`.
    pub(crate) fn element(&self, buf: usize, at: IntValue<'static>) -> R<PointerValue<'static>> {
        let ty = self.elem_type(self.elems[buf]);
        // SAFETY: the kernel passed the static bounds check for these buffers.
        unsafe { self.b.build_in_bounds_gep(ty, self.bufs[buf], &[at], "p") }.map_err(err)
    }

    /// A scalar element of buffer `buf` at `at`, as an f32 or an i32.
    pub(crate) fn load(&self, buf: usize, at: PointerValue<'static>) -> R<V> {
        let e = self.elems[buf];
        let x = self.b.build_load(self.elem_type(e), at, "x").map_err(err)?;
        x.as_instruction_value().ok_or("a load")?.set_alignment(e.bytes() as u32).map_err(err)?;
        let (f32t, i32t) = (self.cx.f32_type(), self.cx.i32_type());
        Ok(match e {
            Elem::F32 | Elem::I32 | Elem::U32 => x,
            Elem::BF16 | Elem::F16 => self.b.build_float_ext(x.into_float_value(), f32t, "ext").map_err(err)?.into(),
            Elem::U8 => self.b.build_int_z_extend(x.into_int_value(), i32t, "zext").map_err(err)?.into(),
            Elem::I64 => self.b.build_int_truncate(x.into_int_value(), i32t, "trunc").map_err(err)?.into(),
        })
    }

    /// Stores f32 or i32 `v` to element `at` of buffer `buf`, converted to its element type.
    pub(crate) fn store(&self, buf: usize, at: PointerValue<'static>, v: V) -> R<()> {
        let e = self.elems[buf];
        let ty = self.elem_type(e);
        let v: V = match (e, v) {
            (Elem::BF16 | Elem::F16, V::FloatValue(x)) => {
                self.b.build_float_trunc(x, ty.into_float_type(), "round").map_err(err)?.into()
            }
            (Elem::U8, V::IntValue(x)) => self.b.build_int_truncate(x, ty.into_int_type(), "byte").map_err(err)?.into(),
            (Elem::I64, V::IntValue(x)) => {
                self.b.build_int_s_extend(x, ty.into_int_type(), "wide").map_err(err)?.into()
            }
            _ => v,
        };
        self.b.build_store(at, v).map_err(err)?.set_alignment(e.bytes() as u32).map_err(err)?;
        Ok(())
    }

    /// A call of intrinsic `name` overloaded on `types`.
    pub(crate) fn intrinsic(&self, name: &str, types: &[BasicTypeEnum<'static>], args: &[V]) -> R<V> {
        self.call_intrinsic(name, types, args)?.ok_or_else(|| format!("{name} returned nothing"))
    }

    /// A call of intrinsic `name`, and its result unless it returns `void`.
    pub(crate) fn call_intrinsic(&self, name: &str, types: &[BasicTypeEnum<'static>], args: &[V]) -> R<Option<V>> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, types))
            .ok_or_else(|| format!("LLVM has no intrinsic {name}"))?;
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        let call = self.b.build_call(f, &args, "").map_err(err)?;
        Ok(call.try_as_basic_value().basic())
    }

    /// `a ∘ b` for an accumulation op (scalars or vectors alike).
    pub(crate) fn fold(&self, op: Binary, a: V, b: V) -> R<V> {
        self.binary(
            match op {
                Binary::Max | Binary::Min | Binary::Mul => op,
                _ => Binary::Add,
            },
            a,
            b,
        )
    }

    fn binary(&self, op: Binary, a: V, b: V) -> R<V> {
        let ty = a.get_type();
        let b_ = &self.b;
        Ok(match (op, a, b) {
            (Binary::Min, ..) => self.intrinsic("llvm.minimum", &[ty], &[a, b])?,
            (Binary::Max, ..) => self.intrinsic("llvm.maximum", &[ty], &[a, b])?,
            (Binary::Shl | Binary::ShrU, ..) => {
                // Shift amounts wrap at 32, as in the evaluator.
                let mask = match ty {
                    BasicTypeEnum::VectorType(_) => self.splat(self.cx.i32_type().const_int(31, false).into())?,
                    _ => self.cx.i32_type().const_int(31, false).into(),
                };
                let amount =
                    self.int_op(|x, y| b_.build_and(x, y, "amt"), |x, y| b_.build_and(x, y, "amt"), b, mask)?;
                if op == Binary::Shl {
                    self.int_op(
                        |x, y| b_.build_left_shift(x, y, "shl"),
                        |x, y| b_.build_left_shift(x, y, "shl"),
                        a,
                        amount,
                    )?
                } else {
                    self.int_op(
                        |x, y| b_.build_right_shift(x, y, false, "shr"),
                        |x, y| b_.build_right_shift(x, y, false, "shr"),
                        a,
                        amount,
                    )?
                }
            }
            (Binary::IAdd, ..) => {
                self.int_op(|x, y| b_.build_int_add(x, y, "iadd"), |x, y| b_.build_int_add(x, y, "iadd"), a, b)?
            }
            (Binary::ISub, ..) => {
                self.int_op(|x, y| b_.build_int_sub(x, y, "isub"), |x, y| b_.build_int_sub(x, y, "isub"), a, b)?
            }
            (Binary::And, ..) => {
                self.int_op(|x, y| b_.build_and(x, y, "and"), |x, y| b_.build_and(x, y, "and"), a, b)?
            }
            (Binary::Or, ..) => self.int_op(|x, y| b_.build_or(x, y, "or"), |x, y| b_.build_or(x, y, "or"), a, b)?,
            (op, V::FloatValue(x), V::FloatValue(y)) => float_op(b_, op, x, y)?.into(),
            (op, V::VectorValue(x), V::VectorValue(y)) => float_op(b_, op, x, y)?.into(),
            (op, a, b) => return Err(format!("{op:?} of {} and {}", a.get_type(), b.get_type())),
        })
    }

    /// An integer op on two scalars or two vectors.
    fn int_op(
        &self,
        scalar: impl Fn(IntValue<'static>, IntValue<'static>) -> Result<IntValue<'static>, inkwell::builder::BuilderError>,
        vector: impl Fn(
            inkwell::values::VectorValue<'static>,
            inkwell::values::VectorValue<'static>,
        ) -> Result<inkwell::values::VectorValue<'static>, inkwell::builder::BuilderError>,
        a: V,
        b: V,
    ) -> R<V> {
        Ok(match (a, b) {
            (V::IntValue(x), V::IntValue(y)) => scalar(x, y).map_err(err)?.into(),
            (V::VectorValue(x), V::VectorValue(y)) => vector(x, y).map_err(err)?.into(),
            (a, b) => return Err(format!("integer op of {} and {}", a.get_type(), b.get_type())),
        })
    }

    pub(crate) fn expr(&mut self, e: &Expr) -> R<V> {
        let vector = self.in_vector_loop();
        let w = self.lanes;
        let f32t = self.cx.f32_type();
        let i32t = self.cx.i32_type();
        let broadcast = |cg: &Self, x: V| if vector { cg.splat(x) } else { Ok(x) };
        Ok(match e {
            Expr::F32(x) => broadcast(self, f32t.const_float(f64::from(*x)).into())?,
            Expr::I32(x) => broadcast(self, i32t.const_int(*x as i64 as u64, true).into())?,
            Expr::Var(v) => match (vector, self.vvars.get(v)) {
                (true, Some(&(p, ty))) => self.b.build_load(ty, p, "v").map_err(err)?,
                _ => {
                    // A scalar (bound outside a vector loop: the same in every lane).
                    let &(p, ty) = self.vars.get(v).ok_or_else(|| format!("variable v{v} used before it is bound"))?;
                    let x = self.b.build_load(ty, p, "v").map_err(err)?;
                    broadcast(self, x)?
                }
            },
            Expr::Load { buf, index } => {
                let at = self.address(*buf, index)?;
                let moves = index.terms.iter().any(|(v, _)| self.vector_var == Some(*v));
                if vector && moves {
                    let vt = f32t.vec_type(w);
                    let load = self.b.build_load(vt, at, "x").map_err(err)?;
                    load.as_instruction_value().ok_or("a load")?.set_alignment(4).map_err(err)?;
                    load
                } else {
                    let x = self.load(*buf, at)?;
                    broadcast(self, x)?
                }
            }
            Expr::Unary(op, x) => {
                let x = self.expr(x)?;
                let ty = x.get_type();
                match op {
                    Unary::Neg => match x {
                        V::FloatValue(v) => self.b.build_float_neg(v, "neg").map_err(err)?.into(),
                        V::VectorValue(v) => self.b.build_float_neg(v, "neg").map_err(err)?.into(),
                        other => return Err(format!("neg of {}", other.get_type())),
                    },
                    Unary::Abs => self.intrinsic("llvm.fabs", &[ty], &[x])?,
                    Unary::Sqrt => self.intrinsic("llvm.sqrt", &[ty], &[x])?,
                    Unary::Floor => self.intrinsic("llvm.floor", &[ty], &[x])?,
                    Unary::Nearest => self.intrinsic("llvm.roundeven", &[ty], &[x])?,
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, a, b)?
            }
            Expr::Compare(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let (fp, ip) = predicates(*op);
                match (a, b) {
                    (V::FloatValue(x), V::FloatValue(y)) => {
                        self.b.build_float_compare(fp, x, y, "cmp").map_err(err)?.into()
                    }
                    (V::IntValue(x), V::IntValue(y)) => self.b.build_int_compare(ip, x, y, "cmp").map_err(err)?.into(),
                    (V::VectorValue(x), V::VectorValue(y)) if x.get_type().get_element_type().is_float_type() => {
                        self.b.build_float_compare(fp, x, y, "cmp").map_err(err)?.into()
                    }
                    (V::VectorValue(x), V::VectorValue(y)) => {
                        self.b.build_int_compare(ip, x, y, "cmp").map_err(err)?.into()
                    }
                    (a, b) => return Err(format!("comparison of {} and {}", a.get_type(), b.get_type())),
                }
            }
            Expr::Select(c, a, b) => {
                let (c, a, b) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                match c {
                    V::IntValue(c) => self.b.build_select(c, a, b, "sel").map_err(err)?,
                    V::VectorValue(c) => self.b.build_select(c, a, b, "sel").map_err(err)?,
                    other => return Err(format!("select on {}", other.get_type())),
                }
            }
            Expr::FromBits(x) => {
                let x = self.expr(x)?;
                let ty: BasicTypeEnum = if vector { f32t.vec_type(w).into() } else { f32t.into() };
                self.b.build_bit_cast(x, ty, "f").map_err(err)?
            }
            Expr::ToBits(x) => {
                let x = self.expr(x)?;
                let ty: BasicTypeEnum = if vector { i32t.vec_type(w).into() } else { i32t.into() };
                self.b.build_bit_cast(x, ty, "bits").map_err(err)?
            }
            Expr::ToInt(x) => {
                let x = self.expr(x)?;
                let ty: BasicTypeEnum = if vector { i32t.vec_type(w).into() } else { i32t.into() };
                self.intrinsic("llvm.fptosi.sat", &[ty, x.get_type()], &[x])?
            }
            Expr::ToFloat(x) => match self.expr(x)? {
                V::IntValue(v) => self.b.build_signed_int_to_float(v, f32t, "fl").map_err(err)?.into(),
                V::VectorValue(v) => self.b.build_signed_int_to_float(v, f32t.vec_type(w), "fl").map_err(err)?.into(),
                other => return Err(format!("int → float of {}", other.get_type())),
            },
            Expr::Gpu(g) => self.gpu_expr(g)?,
        })
    }
}

/// `x ∘ y` for float arithmetic, on scalars or vectors.
fn float_op<T: FloatMathValue<'static>>(b: &Builder<'static>, op: Binary, x: T, y: T) -> R<T> {
    match op {
        Binary::Add => b.build_float_add(x, y, "add"),
        Binary::Sub => b.build_float_sub(x, y, "sub"),
        Binary::Mul => b.build_float_mul(x, y, "mul"),
        _ => b.build_float_div(x, y, "div"),
    }
    .map_err(err)
}

/// The LLVM predicates of a comparison: ordered on floats except `Ne`, signed on integers.
pub(crate) fn predicates(op: Compare) -> (FloatPredicate, IntPredicate) {
    match op {
        Compare::Eq => (FloatPredicate::OEQ, IntPredicate::EQ),
        Compare::Ne => (FloatPredicate::UNE, IntPredicate::NE),
        Compare::Lt => (FloatPredicate::OLT, IntPredicate::SLT),
        Compare::Le => (FloatPredicate::OLE, IntPredicate::SLE),
        Compare::Gt => (FloatPredicate::OGT, IntPredicate::SGT),
        Compare::Ge => (FloatPredicate::OGE, IntPredicate::SGE),
    }
}
