//! f32x4 code for the vector loops of [`lsc_kir::vector`]: the body runs
//! four lanes at a time, then the scalar loop finishes the remainder. Every
//! lane computes exactly what the scalar code computes, and accumulators
//! keep four partial results combined in the kernel IR's fixed order, so the
//! result is bit-identical to the evaluator's.

use super::Codegen;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;
use lsc_kir::vector::{accumulators, combine_lanes, identity};
use lsc_kir::{Binary, Compare, Expr, Stmt};

/// Lanes of Cranelift's vector loops (f32x4: 128-bit SIMD only on x86-64).
pub(super) const LANES: u32 = 4;

fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

fn vector_of(t: types::Type) -> types::Type {
    if t == types::F32 {
        types::F32X4
    } else {
        types::I32X4
    }
}

impl Codegen<'_> {
    /// The vector loop over `i` (already at the range's start) while four lanes fit below `hi`.
    pub(super) fn vector_loop(&mut self, var: usize, body: &[Stmt], hi: Value) -> Result<(), String> {
        let i = self.var(var, types::I64);
        // Four partial results per accumulator, each starting at its op's identity.
        let mut partials: Vec<(usize, Binary, Variable)> = Vec::new();
        for (acc, op) in accumulators(body) {
            let start = self.b.ins().f32const(identity(op));
            let lanes = self.b.ins().splat(types::F32X4, start);
            let x = self.b.declare_var(types::F32X4);
            self.b.def_var(x, lanes);
            partials.push((acc, op, x));
        }
        let (header, inner, exit) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let at = self.b.use_var(i);
        let end = self.b.ins().iadd_imm_s(at, LANES as i64);
        let fits = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, end, hi);
        self.b.ins().brif(fits, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        for s in body {
            match s {
                Stmt::Let { var, value } => {
                    let v = self.vexpr(value)?;
                    let ty = self.b.func.dfg.value_type(v);
                    let x = match self.vvars.get(var) {
                        Some(&x) => x,
                        None => {
                            let x = self.b.declare_var(ty);
                            self.vvars.insert(*var, x);
                            x
                        }
                    };
                    self.b.def_var(x, v);
                }
                Stmt::Store { buf, index, value } => {
                    let v = self.vexpr(value)?;
                    let addr = self.address(*buf, index);
                    self.b.ins().store(MemFlagsData::new().with_notrap(), v, addr, 0);
                }
                Stmt::Accumulate { var, value, .. } => {
                    let v = self.vexpr(value)?;
                    let &(_, op, x) = partials.iter().find(|(a, ..)| a == var).ok_or("an unknown accumulator")?;
                    let lanes = self.b.use_var(x);
                    let folded = self.fold(op, lanes, v);
                    self.b.def_var(x, folded);
                }
                Stmt::Loop { .. } | Stmt::Gpu(_) => return Err("not a vectorizable loop body".into()),
            }
        }
        let at = self.b.use_var(i);
        let next = self.b.ins().iadd_imm_s(at, LANES as i64);
        self.b.def_var(i, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        for (acc, op, x) in partials {
            let lanes = self.b.use_var(x);
            let each: Vec<Value> = (0..LANES as u8).map(|l| self.b.ins().extractlane(lanes, l)).collect();
            let combined = combine_lanes(&each, &mut |a, b| self.fold(op, a, b));
            let scalar = *self.vars.get(&acc).ok_or_else(|| format!("accumulator v{acc} is not declared"))?;
            let before = self.b.use_var(scalar);
            let after = self.fold(op, before, combined);
            self.b.def_var(scalar, after);
        }
        self.vvars.clear();
        Ok(())
    }

    fn vexpr(&mut self, e: &Expr) -> Result<Value, String> {
        Ok(match e {
            Expr::F32(x) => {
                let c = self.b.ins().f32const(*x);
                self.b.ins().splat(types::F32X4, c)
            }
            Expr::I32(x) => {
                let c = self.b.ins().iconst(types::I32, *x as i64);
                self.b.ins().splat(types::I32X4, c)
            }
            Expr::Var(v) => match self.vvars.get(v) {
                Some(&x) => self.b.use_var(x),
                None => {
                    // A scalar bound outside the loop, the same in every lane.
                    let s = self.expr(e)?;
                    let ty = vector_of(self.b.func.dfg.value_type(s));
                    self.b.ins().splat(ty, s)
                }
            },
            Expr::Load { buf, index } => {
                let addr = self.address(*buf, index);
                if index.terms.iter().any(|(v, _)| self.vector_var == Some(*v)) {
                    self.b.ins().load(types::F32X4, MemFlagsData::new().with_notrap(), addr, 0)
                } else {
                    let s = self.b.ins().load(types::F32, MemFlagsData::trusted(), addr, 0);
                    self.b.ins().splat(types::F32X4, s)
                }
            }
            Expr::Unary(op, x) => {
                let x = self.vexpr(x)?;
                self.unary(*op, x)
            }
            Expr::Binary(op @ (Binary::Shl | Binary::ShrU), a, b) => {
                let Expr::I32(amount) = **b else { return Err("vector shifts take constant amounts".into()) };
                let a = self.vexpr(a)?;
                match op {
                    Binary::Shl => self.b.ins().ishl_imm_u(a, amount as i64),
                    _ => self.b.ins().ushr_imm_u(a, amount as i64),
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.vexpr(a)?, self.vexpr(b)?);
                self.binary(*op, a, b)
            }
            Expr::Compare(op, a, b) => {
                let (a, b) = (self.vexpr(a)?, self.vexpr(b)?);
                self.compare(*op, a, b)
            }
            Expr::Select(c, a, b) => {
                let (c, a, b) = (self.vexpr(c)?, self.vexpr(a)?, self.vexpr(b)?);
                let ty = self.b.func.dfg.value_type(a);
                let mask =
                    if self.b.func.dfg.value_type(c) == ty { c } else { self.b.ins().bitcast(ty, lane_flags(), c) };
                self.b.ins().bitselect(mask, a, b)
            }
            Expr::FromBits(x) => {
                let x = self.vexpr(x)?;
                self.b.ins().bitcast(types::F32X4, lane_flags(), x)
            }
            Expr::ToBits(x) => {
                let x = self.vexpr(x)?;
                self.b.ins().bitcast(types::I32X4, lane_flags(), x)
            }
            Expr::ToInt(x) => {
                let x = self.vexpr(x)?;
                self.b.ins().fcvt_to_sint_sat(types::I32X4, x)
            }
            Expr::ToFloat(x) => {
                let x = self.vexpr(x)?;
                self.b.ins().fcvt_from_sint(types::F32X4, x)
            }
            Expr::Gpu(g) => return Err(format!("a {} is a GPU-only construct", lsc_kir::check::gpu_expr_name(g))),
        })
    }
}

/// The float condition of a comparison (ordered, except `Ne`).
pub(super) fn float_cc(op: Compare) -> FloatCC {
    match op {
        Compare::Eq => FloatCC::Equal,
        Compare::Ne => FloatCC::NotEqual,
        Compare::Lt => FloatCC::LessThan,
        Compare::Le => FloatCC::LessThanOrEqual,
        Compare::Gt => FloatCC::GreaterThan,
        Compare::Ge => FloatCC::GreaterThanOrEqual,
    }
}

/// The signed integer condition of a comparison.
pub(super) fn int_cc(op: Compare) -> IntCC {
    match op {
        Compare::Eq => IntCC::Equal,
        Compare::Ne => IntCC::NotEqual,
        Compare::Lt => IntCC::SignedLessThan,
        Compare::Le => IntCC::SignedLessThanOrEqual,
        Compare::Gt => IntCC::SignedGreaterThan,
        Compare::Ge => IntCC::SignedGreaterThanOrEqual,
    }
}
