//! Adding typed nodes to a graph under construction, with the helpers the
//! VJP rules share (constants, zeros, broadcasts, masks).

use lsc_ir::{BinaryOp, CmpOp, DType, Dim, Graph, Op, ReduceKind, TensorType, UnaryOp, ValueRef};

/// A graph being extended, plus the program's functions (VJP rules of `call`
/// and `loop` add backward functions to them) and the rule table.
pub struct Emit<'a> {
    /// The graph nodes are added to.
    pub g: &'a mut Graph,
    /// Every function of the program.
    pub functions: &'a mut Vec<Graph>,
    /// The VJP rules.
    pub table: &'a super::VjpTable,
}

/// Emission result; an `Err` means a VJP rule produced an ill-typed node (a bug).
pub type R<T> = Result<T, String>;

impl Emit<'_> {
    /// The type of `v`.
    pub fn ty(&self, v: ValueRef) -> TensorType {
        self.g.value_type(v).clone()
    }

    /// Adds `op(args)` and returns its first output.
    pub fn op(&mut self, op: Op, args: &[ValueRef]) -> R<ValueRef> {
        let name = op.name();
        let id = self
            .g
            .add_op(op, args, &*self.functions)
            .map_err(|e| format!("autodiff emitted an ill-typed `{name}`: {e}"))?;
        Ok(ValueRef::first(id))
    }

    /// Adds `op(args)` and returns all outputs.
    pub fn op_all(&mut self, op: Op, args: &[ValueRef]) -> R<Vec<ValueRef>> {
        let first = self.op(op, args)?;
        let n = self.g.node(first.node).outputs.len();
        Ok((0..n as u32).map(|output| ValueRef { node: first.node, output }).collect())
    }

    /// A constant of type `ty` filled with `value`.
    pub fn full(&mut self, value: f64, ty: &TensorType) -> R<ValueRef> {
        let c = ValueRef::first(self.g.add_node(Op::Constant { value }, &[], vec![TensorType::scalar(ty.dtype)]));
        self.broadcast(c, &ty.shape)
    }

    /// Zeros shaped like `v`.
    pub fn zeros_like(&mut self, v: ValueRef) -> R<ValueRef> {
        let ty = self.ty(v);
        self.full(0.0, &ty)
    }

    /// A scalar constant of `v`'s dtype broadcast to `v`'s shape.
    pub fn scalar_like(&mut self, value: f64, v: ValueRef) -> R<ValueRef> {
        let ty = self.ty(v);
        self.full(value, &ty)
    }

    /// NumPy broadcast of `v` to `shape` (no node if it already has it).
    pub fn broadcast(&mut self, v: ValueRef, shape: &[Dim]) -> R<ValueRef> {
        if self.ty(v).shape == shape {
            return Ok(v);
        }
        self.op(Op::Broadcast { shape: shape.to_vec() }, &[v])
    }

    /// `op(a, b)` elementwise; `b` is broadcast to `a`'s shape if needed.
    pub fn bin(&mut self, op: BinaryOp, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        let shape = self.ty(a).shape;
        let b = self.broadcast(b, &shape)?;
        self.op(Op::Binary(op), &[a, b])
    }

    /// `a + b`.
    pub fn add(&mut self, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        self.bin(BinaryOp::Add, a, b)
    }
    /// `a − b`.
    pub fn sub(&mut self, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        self.bin(BinaryOp::Sub, a, b)
    }
    /// `a · b`.
    pub fn mul(&mut self, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        self.bin(BinaryOp::Mul, a, b)
    }
    /// `a / b`.
    pub fn div(&mut self, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        self.bin(BinaryOp::Div, a, b)
    }
    /// `a · c` for a constant `c`.
    pub fn scale(&mut self, a: ValueRef, c: f64) -> R<ValueRef> {
        let k = self.scalar_like(c, a)?;
        self.mul(a, k)
    }
    /// `−a`.
    pub fn neg(&mut self, a: ValueRef) -> R<ValueRef> {
        self.op(Op::Unary(UnaryOp::Neg), &[a])
    }
    /// Elementwise unary op.
    pub fn unary(&mut self, u: UnaryOp, a: ValueRef) -> R<ValueRef> {
        self.op(Op::Unary(u), &[a])
    }
    /// `cond ? a : 0`.
    pub fn keep(&mut self, cond: ValueRef, a: ValueRef) -> R<ValueRef> {
        let z = self.zeros_like(a)?;
        self.op(Op::Select, &[cond, a, z])
    }
    /// Elementwise comparison, `b` broadcast to `a`.
    pub fn cmp(&mut self, c: CmpOp, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        let shape = self.ty(a).shape;
        let b = self.broadcast(b, &shape)?;
        self.op(Op::Compare(c), &[a, b])
    }
    /// Sum over `axes` keeping them as size 1.
    pub fn sum_keep(&mut self, v: ValueRef, axes: Vec<usize>) -> R<ValueRef> {
        if axes.is_empty() {
            return Ok(v);
        }
        self.op(Op::Reduce { kind: ReduceKind::Sum, axes, keep_dims: true }, &[v])
    }
    /// Sum over `axes`, dropping them.
    pub fn sum(&mut self, v: ValueRef, axes: Vec<usize>) -> R<ValueRef> {
        if axes.is_empty() {
            return Ok(v);
        }
        self.op(Op::Reduce { kind: ReduceKind::Sum, axes, keep_dims: false }, &[v])
    }
    /// Reshape.
    pub fn reshape(&mut self, v: ValueRef, shape: &[Dim]) -> R<ValueRef> {
        if self.ty(v).shape == shape {
            return Ok(v);
        }
        self.op(Op::Reshape { shape: shape.to_vec() }, &[v])
    }
    /// Swaps the last two axes.
    pub fn transpose_last(&mut self, v: ValueRef) -> R<ValueRef> {
        let r = self.ty(v).rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.op(Op::Transpose { perm }, &[v])
    }
    /// Casts to `dtype` (no node if it already is).
    pub fn cast(&mut self, v: ValueRef, dtype: DType) -> R<ValueRef> {
        if self.ty(v).dtype == dtype {
            return Ok(v);
        }
        self.op(Op::Cast { to: dtype }, &[v])
    }
    /// The one-hot encoding `[..., n]` (dtype of `like`) of integer `ids [...]`.
    pub fn one_hot(&mut self, ids: ValueRef, n: Dim, dtype: DType) -> R<ValueRef> {
        let mut shape = self.ty(ids).shape;
        let r = shape.len();
        shape.push(n);
        let iota = ValueRef::first(self.g.add_node(
            Op::Iota { axis: r },
            &[],
            vec![TensorType::new(DType::I64, shape.clone())],
        ));
        let mut with_one = self.ty(ids).shape;
        with_one.push(Dim::new(1));
        let ids = self.cast(ids, DType::I64)?;
        let ids = self.reshape(ids, &with_one)?;
        let hit = self.cmp(CmpOp::Eq, iota, ids)?;
        self.cast(hit, dtype)
    }
}
