//! Tensor handles and the primitive ops, with operator overloading. Every
//! method is `#[track_caller]`: a shape error is recorded at the user's line
//! and later ops on the failed value do nothing, so the first error is the one
//! reported by [`ModelBuilder::finish`].

use crate::builder::{Inner, ModelBuilder};
use lsc_ir::infer::infer;
use lsc_ir::{BinaryOp, CmpOp, DType, Dim, NodeId, Op, ReduceKind, TensorType, UnaryOp, ValueRef};
use std::cell::RefCell;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::panic::Location;
use std::rc::Rc;

/// A value in a graph under construction. `v` is `None` after an error.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) b: Rc<RefCell<Inner>>,
    pub(crate) graph: usize,
    pub(crate) v: Option<ValueRef>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ty() {
            Some(t) => write!(f, "Tensor({t})"),
            None => write!(f, "Tensor(<error>)"),
        }
    }
}

/// Adds `op` on `args` to graph `graph`; on any failure records the error at
/// the caller and returns `None`.
#[track_caller]
pub(crate) fn apply(b: &ModelBuilder, graph: usize, op: Op, args: &[&Tensor]) -> Option<NodeId> {
    let mut inner = b.inner.borrow_mut();
    if inner.error.is_some() {
        return None;
    }
    let mut operands = Vec::with_capacity(args.len());
    for a in args {
        if a.graph != graph || !Rc::ptr_eq(&a.b, &b.inner) {
            inner.fail(Location::caller(), format!("`{}` mixes values of different graphs", op.name()));
            return None;
        }
        operands.push(a.v?);
    }
    let g = &inner.graphs[graph];
    let types: Vec<&TensorType> = operands.iter().map(|v| g.value_type(*v)).collect();
    match infer(&op, &types, &inner.graphs) {
        Ok(outputs) => Some(inner.graphs[graph].add_node(op, &operands, outputs)),
        Err(message) => {
            inner.fail(Location::caller(), format!("shape error: {message}"));
            None
        }
    }
}

/// NumPy broadcasting of two symbolic shapes.
fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let one = Dim::new(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { &a[i + a.len() - n] } else { &one };
        let db = if i + b.len() >= n { &b[i + b.len() - n] } else { &one };
        out.push(if da == db || *db == one {
            da.clone()
        } else if *da == one {
            db.clone()
        } else {
            return None;
        });
    }
    Some(out)
}

impl Tensor {
    fn builder(&self) -> ModelBuilder {
        ModelBuilder { inner: self.b.clone(), graph: self.graph }
    }

    /// The value's type, or `None` if it failed to build.
    pub fn ty(&self) -> Option<TensorType> {
        let v = self.v?;
        Some(self.b.borrow().graphs[self.graph].value_type(v).clone())
    }

    /// The shape (empty after an error).
    pub fn shape(&self) -> Vec<Dim> {
        self.ty().map(|t| t.shape).unwrap_or_default()
    }

    /// The dtype (`f32` after an error).
    pub fn dtype(&self) -> DType {
        self.ty().map(|t| t.dtype).unwrap_or(DType::F32)
    }

    /// The rank (0 after an error).
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Dimension `axis` (negative counts from the end).
    #[track_caller]
    pub fn dim(&self, axis: isize) -> Dim {
        match self.axis(axis) {
            Some(a) => self.shape()[a].clone(),
            None => Dim::new(0),
        }
    }

    /// The graph value this tensor stands for (`None` after an error).
    pub fn value(&self) -> Option<ValueRef> {
        self.v
    }

    #[track_caller]
    fn fail(&self, message: String) {
        self.b.borrow_mut().fail(Location::caller(), message);
    }

    /// Normalises a possibly negative axis, recording an error if out of range.
    #[track_caller]
    fn axis(&self, axis: isize) -> Option<usize> {
        self.v?;
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        if (0..rank).contains(&a) {
            Some(a as usize)
        } else {
            let ty = self.ty().map(|t| t.to_string()).unwrap_or_default();
            self.fail(format!("shape error: axis {axis} is out of range for {ty}"));
            None
        }
    }

    #[track_caller]
    fn op(&self, op: Op, others: &[&Tensor]) -> Tensor {
        let mut args = vec![self];
        args.extend_from_slice(others);
        let b = self.builder();
        let id = apply(&b, self.graph, op, &args);
        b.tensor(self.graph, id.map(ValueRef::first))
    }

    #[track_caller]
    fn unary(&self, u: UnaryOp) -> Tensor {
        self.op(Op::Unary(u), &[])
    }

    /// A rank-0 constant of this tensor's dtype (broadcasts in binary ops).
    #[track_caller]
    pub fn full_like_scalar(&self, value: f64) -> Tensor {
        self.builder().constant(value, self.dtype(), &[])
    }

    /// Records an error at the caller (for modules that validate their arguments).
    #[track_caller]
    pub(crate) fn fail_here(&self, message: String) {
        if self.v.is_some() {
            self.fail(message);
        }
    }

    /// A scalar constant of this tensor's dtype, broadcast to its shape.
    #[track_caller]
    pub fn full_like(&self, value: f64) -> Tensor {
        let c = self.builder().constant(value, self.dtype(), &[]);
        c.broadcast_to(&self.shape())
    }

    /// Broadcasts both operands to their common NumPy shape.
    #[track_caller]
    fn broadcast_with(&self, other: &Tensor) -> (Tensor, Tensor) {
        let (sa, sb) = (self.shape(), other.shape());
        if self.v.is_none() || other.v.is_none() || sa == sb {
            return (self.clone(), other.clone());
        }
        match broadcast_shapes(&sa, &sb) {
            Some(s) => (self.broadcast_to(&s), other.broadcast_to(&s)),
            None => {
                let (ta, tb) = (
                    self.ty().unwrap_or(TensorType::scalar(DType::F32)),
                    other.ty().unwrap_or(TensorType::scalar(DType::F32)),
                );
                self.fail(format!("shape error: cannot broadcast {ta} with {tb}"));
                (self.builder().tensor(self.graph, None), other.clone())
            }
        }
    }

    #[track_caller]
    fn binary(&self, other: &Tensor, op: Op) -> Tensor {
        let (a, b) = self.broadcast_with(other);
        a.op(op, &[&b])
    }

    /// Elementwise maximum (with broadcasting).
    #[track_caller]
    pub fn maximum(&self, other: &Tensor) -> Tensor {
        self.binary(other, Op::Binary(BinaryOp::Max))
    }
    /// Elementwise minimum (with broadcasting).
    #[track_caller]
    pub fn minimum(&self, other: &Tensor) -> Tensor {
        self.binary(other, Op::Binary(BinaryOp::Min))
    }
    /// `self ^ exponent` elementwise.
    #[track_caller]
    pub fn pow(&self, exponent: &Tensor) -> Tensor {
        self.binary(exponent, Op::Binary(BinaryOp::Pow))
    }
    /// Logical and of bool tensors.
    #[track_caller]
    pub fn and(&self, other: &Tensor) -> Tensor {
        self.binary(other, Op::Binary(BinaryOp::And))
    }
    /// Logical or of bool tensors.
    #[track_caller]
    pub fn or(&self, other: &Tensor) -> Tensor {
        self.binary(other, Op::Binary(BinaryOp::Or))
    }
    /// Logical not of a bool tensor.
    #[track_caller]
    pub fn not(&self) -> Tensor {
        self.unary(UnaryOp::Not)
    }
    /// Elementwise comparison (with broadcasting), giving bool.
    #[track_caller]
    pub fn cmp(&self, op: CmpOp, other: &Tensor) -> Tensor {
        self.binary(other, Op::Compare(op))
    }
    /// `self < other`
    #[track_caller]
    pub fn lt(&self, other: &Tensor) -> Tensor {
        self.cmp(CmpOp::Lt, other)
    }
    /// `self <= other`
    #[track_caller]
    pub fn le(&self, other: &Tensor) -> Tensor {
        self.cmp(CmpOp::Le, other)
    }
    /// `self > other`
    #[track_caller]
    pub fn gt(&self, other: &Tensor) -> Tensor {
        self.cmp(CmpOp::Gt, other)
    }
    /// `self >= other`
    #[track_caller]
    pub fn ge(&self, other: &Tensor) -> Tensor {
        self.cmp(CmpOp::Ge, other)
    }
    /// `self == other`
    #[track_caller]
    pub fn eq(&self, other: &Tensor) -> Tensor {
        self.cmp(CmpOp::Eq, other)
    }

    /// `self ? a : b` elementwise, broadcasting all three to one shape.
    #[track_caller]
    pub fn select(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let (a, b) = a.broadcast_with(b);
        let (c, a) = self.broadcast_with(&a);
        let (a, b) = a.broadcast_with(&b);
        c.op(Op::Select, &[&a, &b])
    }

    /// `e^x`
    #[track_caller]
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    #[track_caller]
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    #[track_caller]
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1/sqrt(x)`
    #[track_caller]
    pub fn rsqrt(&self) -> Tensor {
        self.unary(UnaryOp::Rsqrt)
    }
    /// `1/x`
    #[track_caller]
    pub fn recip(&self) -> Tensor {
        self.unary(UnaryOp::Recip)
    }
    /// Hyperbolic tangent.
    #[track_caller]
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    /// Logistic sigmoid.
    #[track_caller]
    pub fn sigmoid(&self) -> Tensor {
        self.unary(UnaryOp::Sigmoid)
    }
    /// `x·sigmoid(x)`
    #[track_caller]
    pub fn silu(&self) -> Tensor {
        self.unary(UnaryOp::Silu)
    }
    /// Exact (erf) GELU.
    #[track_caller]
    pub fn gelu(&self) -> Tensor {
        self.unary(UnaryOp::Gelu)
    }
    /// The error function.
    #[track_caller]
    pub fn erf(&self) -> Tensor {
        self.unary(UnaryOp::Erf)
    }
    /// Sine (radians).
    #[track_caller]
    pub fn sin(&self) -> Tensor {
        self.unary(UnaryOp::Sin)
    }
    /// Cosine (radians).
    #[track_caller]
    pub fn cos(&self) -> Tensor {
        self.unary(UnaryOp::Cos)
    }
    /// `|x|`
    #[track_caller]
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    /// Round half to even.
    #[track_caller]
    pub fn round(&self) -> Tensor {
        self.unary(UnaryOp::Round)
    }
    /// `min(max(x, min), max)`.
    #[track_caller]
    pub fn clamp(&self, min: f64, max: f64) -> Tensor {
        self.op(Op::Clamp { min, max }, &[])
    }
    /// Identity forward, no gradient (for straight-through estimators).
    #[track_caller]
    pub fn stop_gradient(&self) -> Tensor {
        self.op(Op::StopGradient, &[])
    }
    /// Conversion to `dtype`.
    #[track_caller]
    pub fn cast(&self, dtype: DType) -> Tensor {
        self.op(Op::Cast { to: dtype }, &[])
    }

    #[track_caller]
    fn reduce(&self, kind: ReduceKind, axes: &[isize], keep_dims: bool) -> Tensor {
        let mut norm = Vec::new();
        for &a in axes {
            match self.axis(a) {
                Some(a) => norm.push(a),
                None => return self.builder().tensor(self.graph, None),
            }
        }
        norm.sort();
        norm.dedup();
        self.op(Op::Reduce { kind, axes: norm, keep_dims }, &[])
    }
    /// Sum over `axes`.
    #[track_caller]
    pub fn sum(&self, axes: &[isize], keep_dims: bool) -> Tensor {
        self.reduce(ReduceKind::Sum, axes, keep_dims)
    }
    /// Mean over `axes`.
    #[track_caller]
    pub fn mean(&self, axes: &[isize], keep_dims: bool) -> Tensor {
        self.reduce(ReduceKind::Mean, axes, keep_dims)
    }
    /// Maximum over `axes`.
    #[track_caller]
    pub fn max(&self, axes: &[isize], keep_dims: bool) -> Tensor {
        self.reduce(ReduceKind::Max, axes, keep_dims)
    }
    /// Minimum over `axes`.
    #[track_caller]
    pub fn min(&self, axes: &[isize], keep_dims: bool) -> Tensor {
        self.reduce(ReduceKind::Min, axes, keep_dims)
    }
    /// Index of the maximum along `axis`, as i64.
    #[track_caller]
    pub fn argmax(&self, axis: isize, keep_dims: bool) -> Tensor {
        match self.axis(axis) {
            Some(axis) => self.op(Op::ArgMax { axis, keep_dims }, &[]),
            None => self.builder().tensor(self.graph, None),
        }
    }

    #[track_caller]
    fn with_axis(&self, axis: isize, make: fn(usize) -> Op, others: &[&Tensor]) -> Tensor {
        match self.axis(axis) {
            Some(a) => self.op(make(a), others),
            None => self.builder().tensor(self.graph, None),
        }
    }
    /// Softmax along `axis`.
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Tensor {
        self.with_axis(axis, |axis| Op::Softmax { axis }, &[])
    }
    /// Log-softmax along `axis`.
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Tensor {
        self.with_axis(axis, |axis| Op::LogSoftmax { axis }, &[])
    }
    /// PyTorch `gather` along `axis`.
    #[track_caller]
    pub fn gather(&self, axis: isize, index: &Tensor) -> Tensor {
        self.with_axis(axis, |axis| Op::Gather { axis }, &[index])
    }
    /// PyTorch `scatter` along `axis`.
    #[track_caller]
    pub fn scatter(&self, axis: isize, index: &Tensor, src: &Tensor) -> Tensor {
        self.with_axis(axis, |axis| Op::Scatter { axis }, &[index, src])
    }
    /// PyTorch `scatter_add` along `axis`.
    #[track_caller]
    pub fn scatter_add(&self, axis: isize, index: &Tensor, src: &Tensor) -> Tensor {
        self.with_axis(axis, |axis| Op::ScatterAdd { axis }, &[index, src])
    }
    /// Writes `update` into this cache at `offset` (an i64 scalar) along `axis`.
    #[track_caller]
    pub fn cache_update(&self, axis: isize, update: &Tensor, offset: &Tensor) -> Tensor {
        self.with_axis(axis, |axis| Op::CacheUpdate { axis }, &[update, offset])
    }

    /// `self · other` (batched; `other` is rank 2 or shares the batch dims).
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        self.op(Op::MatMul { trans_a: false, trans_b: false }, &[other])
    }
    /// `self · otherᵀ` (the Linear layer's `x·Wᵀ`, attention's `Q·Kᵀ`).
    #[track_caller]
    pub fn matmul_t(&self, other: &Tensor) -> Tensor {
        self.op(Op::MatMul { trans_a: false, trans_b: true }, &[other])
    }
    /// Rows of this `[V, D]` table selected by integer `ids`.
    #[track_caller]
    pub fn embedding(&self, ids: &Tensor) -> Tensor {
        self.op(Op::Embedding, &[ids])
    }
    /// Same elements, new shape.
    #[track_caller]
    pub fn reshape(&self, shape: &[Dim]) -> Tensor {
        self.op(Op::Reshape { shape: shape.to_vec() }, &[])
    }
    /// Permutes axes.
    #[track_caller]
    pub fn transpose(&self, perm: &[usize]) -> Tensor {
        self.op(Op::Transpose { perm: perm.to_vec() }, &[])
    }
    /// Swaps two axes.
    #[track_caller]
    pub fn swap_axes(&self, a: isize, b: isize) -> Tensor {
        let (Some(a), Some(b)) = (self.axis(a), self.axis(b)) else {
            return self.builder().tensor(self.graph, None);
        };
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.transpose(&perm)
    }
    /// Elements `start..end` along `axis`.
    #[track_caller]
    pub fn slice(&self, axis: isize, start: impl Into<Dim>, end: impl Into<Dim>) -> Tensor {
        let (start, end) = (start.into(), end.into());
        match self.axis(axis) {
            Some(axis) => self.op(Op::Slice { axis, start, end }, &[]),
            None => self.builder().tensor(self.graph, None),
        }
    }
    /// NumPy-style broadcast to `shape`.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[Dim]) -> Tensor {
        if self.v.is_some() && self.shape() == shape {
            return self.clone();
        }
        self.op(Op::Broadcast { shape: shape.to_vec() }, &[])
    }
    /// Joins `self` and `others` along `axis`.
    #[track_caller]
    pub fn concat(&self, others: &[&Tensor], axis: isize) -> Tensor {
        match self.axis(axis) {
            Some(axis) => self.op(Op::Concat { axis }, others),
            None => self.builder().tensor(self.graph, None),
        }
    }
    /// Rotates the halves of the last axis of `[..., T, D]` by the angles whose
    /// `cos` and `sin` are given as `[T, D/2]` (rotary position embeddings).
    #[track_caller]
    pub fn rotary(&self, cos: &Tensor, sin: &Tensor) -> Tensor {
        self.op(Op::Rotary, &[cos, sin])
    }
    /// Depthwise causal conv over time with `weight [C, 1, K]`.
    #[track_caller]
    pub fn causal_conv1d(&self, weight: &Tensor) -> Tensor {
        self.op(Op::CausalConv1d, &[weight])
    }
    /// The `k` largest along `axis`: `(values, indices)`.
    #[track_caller]
    pub fn topk(&self, k: impl Into<Dim>, axis: isize) -> (Tensor, Tensor) {
        let k = k.into();
        let b = self.builder();
        let Some(axis) = self.axis(axis) else {
            return (b.tensor(self.graph, None), b.tensor(self.graph, None));
        };
        let id = apply(&b, self.graph, Op::TopK { k, axis }, &[self]);
        let out = |o| b.tensor(self.graph, id.map(|node| ValueRef { node, output: o }));
        (out(0), out(1))
    }
    /// Per-position cross-entropy of these logits `[..., V]` against `targets [...]`.
    #[track_caller]
    pub fn cross_entropy(&self, targets: &Tensor) -> Tensor {
        self.op(Op::CrossEntropy, &[targets])
    }
}

macro_rules! binary_ops {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary(rhs, Op::Binary(BinaryOp::$op))
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                (&self).binary(&rhs, Op::Binary(BinaryOp::$op))
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                (&self).binary(rhs, Op::Binary(BinaryOp::$op))
            }
        }
        impl $trait<f64> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: f64) -> Tensor {
                let c = self.builder().constant(rhs, self.dtype(), &[]);
                self.binary(&c, Op::Binary(BinaryOp::$op))
            }
        }
        impl $trait<f64> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: f64) -> Tensor {
                (&self).$method(rhs)
            }
        }
    )*};
}

binary_ops!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

impl Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
}
