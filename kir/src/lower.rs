//! Lowering of a fused group to a kernel. Every value of the group lives at
//! the group's shape, or, after a reduction over its trailing axes, once per
//! *row* (an index of the other axes). Inputs are read through strides (0 on
//! the axes they are broadcast along). The kernel loops over rows; within a
//! row, each reduction is one inner loop (recomputing the element values it
//! needs from the inputs), and one last inner loop stores the element-wise
//! outputs, so a norm or a softmax and its consumer are one pass per phase
//! over one row instead of kernels that round-trip through memory. Adjacent
//! axes are merged wherever every access is contiguous across them.

use crate::{math, Binary, Body, Buffer, Elem, Expr, Index, Kernel, Schedule, Stmt, Unary, Var};
use lsc_ir::{BinaryOp, CmpOp, ReduceKind, UnaryOp};
use std::collections::HashMap;

/// A value of a group, defined from earlier ones (by position).
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// Input buffer `buf`, read with per-axis `strides` (0: broadcast).
    Input {
        /// Buffer number.
        buf: usize,
        /// Element stride per axis of the group's shape.
        strides: Vec<i64>,
    },
    /// A scalar constant.
    Const(f32),
    /// A unary op.
    Unary(UnaryOp, usize),
    /// A binary op.
    Binary(BinaryOp, usize, usize),
    /// A comparison (a boolean value).
    Compare(CmpOp, usize, usize),
    /// `c ? a : b`.
    Select(usize, usize, usize),
    /// `min(max(x, lo), hi)`.
    Clamp(usize, f32, f32),
    /// A reduction of a value over the group's reduced axes: one value per row.
    Reduce(ReduceKind, usize),
}

/// A fused group: elementwise ops at one shape, and reductions over its
/// trailing axes whose per-row results the other ops may use (norms,
/// softmax, losses).
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Kernel name.
    pub name: String,
    /// The shape every element value has.
    pub shape: Vec<usize>,
    /// How many trailing axes of `shape` the [`Node::Reduce`] nodes reduce (0 if none).
    pub reduced_axes: usize,
    /// Input buffers: `(name, elements)`.
    pub inputs: Vec<(String, u64)>,
    /// The values, in order.
    pub nodes: Vec<Node>,
    /// Outputs, each stored contiguously.
    pub outputs: Vec<Output>,
}

/// An output of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Buffer name.
    pub name: String,
    /// The value stored.
    pub value: usize,
    /// Stored once per row (the value must be per row), not once per element of the shape.
    pub per_row: bool,
}

impl Output {
    /// An output stored once per element.
    pub fn element(name: &str, value: usize) -> Output {
        Output { name: name.to_string(), value, per_row: false }
    }
    /// An output stored once per row.
    pub fn row(name: &str, value: usize) -> Output {
        Output { name: name.to_string(), value, per_row: true }
    }
}

impl Group {
    /// Whether each value is the same along the reduced axes (one value per row).
    pub fn per_row(&self) -> Vec<bool> {
        let split = self.shape.len() - self.reduced_axes;
        let mut row = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let r = match n {
                Node::Input { strides, .. } => strides[split..].iter().all(|&s| s == 0),
                Node::Const(_) | Node::Reduce(..) => true,
                Node::Unary(_, x) | Node::Clamp(x, ..) => row[*x],
                Node::Binary(_, x, y) | Node::Compare(_, x, y) => row[*x] && row[*y],
                Node::Select(c, x, y) => row[*c] && row[*x] && row[*y],
            };
            row.push(r);
        }
        row
    }
}

/// Whether [`lower_elementwise`] handles this unary op.
pub fn supports_unary(u: UnaryOp) -> bool {
    !matches!(u, UnaryOp::Gelu | UnaryOp::Erf | UnaryOp::Sin | UnaryOp::Cos | UnaryOp::Not)
}

/// Whether [`lower_elementwise`] handles this binary op.
pub fn supports_binary(b: BinaryOp) -> bool {
    matches!(b, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min)
}

/// Axes merged where every input and the output stay contiguous: `(extents, per-input strides)`.
fn coalesce(shape: &[usize], inputs: &[Vec<i64>]) -> (Vec<usize>, Vec<Vec<i64>>) {
    let mut extents: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<i64>> = vec![Vec::new(); inputs.len()];
    for (axis, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue; // a unit axis moves no index
        }
        let mergeable = !extents.is_empty()
            && inputs.iter().zip(&strides).all(|(s, merged)| merged.last() == Some(&(s[axis] * n as i64)));
        if mergeable {
            let last = extents.len() - 1;
            extents[last] *= n;
            for (merged, s) in strides.iter_mut().zip(inputs) {
                *merged.last_mut().expect("merged axes have strides") = s[axis];
            }
        } else {
            extents.push(n);
            for (merged, s) in strides.iter_mut().zip(inputs) {
                merged.push(s[axis]);
            }
        }
    }
    if extents.is_empty() {
        extents.push(1);
        strides.iter_mut().for_each(|s| s.push(0));
    }
    (extents, strides)
}

/// Strides of one access after merging axes: `[outer..., inner...]` per loop.
struct Access {
    outer: Vec<i64>,
    inner: Vec<i64>,
}

/// The state of lowering one group.
struct Lowering<'g> {
    g: &'g Group,
    per_row: Vec<bool>,
    body: Body,
    outer_vars: Vec<Var>,
    inner_extents: Vec<usize>,
    /// Merged strides of each input node (by node number), and of the two output layouts.
    inputs: HashMap<usize, Access>,
    element_out: Access,
    row_out: Access,
    /// Per-row values computed so far (in the row's scope).
    row_values: HashMap<usize, Expr>,
}

/// The kernel computing `g`, with vector loops of `vector_width` lanes (1: none).
pub fn lower_elementwise(g: &Group, vector_width: u32) -> Result<Kernel, String> {
    lower_nest(g, vector_width).map(|(k, _)| k)
}

/// The kernel computing `g`, and how many of its outermost nested loops run
/// over rows (the rest of each row's statements run inside them).
pub(crate) fn lower_nest(g: &Group, vector_width: u32) -> Result<(Kernel, usize), String> {
    let rank = g.shape.len();
    let reduces = g.nodes.iter().any(|n| matches!(n, Node::Reduce(..)));
    if g.reduced_axes > rank || (reduces && g.reduced_axes == 0) {
        return Err(format!("kernel {}: reductions over {} of {rank} axes", g.name, g.reduced_axes));
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let operands: &[usize] = match n {
            Node::Input { strides, .. } if strides.len() != rank => {
                return Err(format!("kernel {}: input strides {strides:?} for a rank-{rank} shape", g.name))
            }
            Node::Unary(_, x) | Node::Clamp(x, ..) | Node::Reduce(_, x) => &[*x],
            Node::Binary(_, x, y) | Node::Compare(_, x, y) => &[*x, *y],
            Node::Select(c, x, y) => &[*c, *x, *y],
            _ => &[],
        };
        if operands.iter().any(|&o| o >= i) {
            return Err(format!("kernel {}: node {i} uses a later value", g.name));
        }
    }
    let per_row = g.per_row();
    for o in &g.outputs {
        if matches!(g.nodes.get(o.value), Some(Node::Compare(..)) | None) {
            return Err(format!("kernel {}: output {} is not an f32 value of the group", g.name, o.name));
        }
        if o.per_row && !per_row[o.value] {
            return Err(format!("kernel {}: output {} varies along the reduced axes", g.name, o.name));
        }
    }
    let split = rank - g.reduced_axes;
    // Accesses: every input node, then element outputs (contiguous), then row outputs.
    let input_nodes: Vec<usize> = (0..g.nodes.len()).filter(|&i| matches!(g.nodes[i], Node::Input { .. })).collect();
    let mut all: Vec<Vec<i64>> = input_nodes
        .iter()
        .map(|&i| match &g.nodes[i] {
            Node::Input { strides, .. } => strides.clone(),
            _ => unreachable!("filtered to inputs"),
        })
        .collect();
    let contiguous = |dims: &[usize]| -> Vec<i64> {
        (0..dims.len()).map(|a| dims[a + 1..].iter().product::<usize>() as i64).collect()
    };
    all.push(contiguous(&g.shape));
    let mut row_strides = contiguous(&g.shape[..split]);
    row_strides.extend(std::iter::repeat_n(0, g.reduced_axes));
    all.push(row_strides);
    let outer_strides: Vec<Vec<i64>> = all.iter().map(|s| s[..split].to_vec()).collect();
    let inner_strides: Vec<Vec<i64>> = all.iter().map(|s| s[split..].to_vec()).collect();
    let (outer_ext, outer) = coalesce(&g.shape[..split], &outer_strides);
    let (inner_ext, inner) = if g.reduced_axes > 0 {
        coalesce(&g.shape[split..], &inner_strides)
    } else {
        (vec![], vec![vec![]; all.len()])
    };
    let mut accesses = outer.into_iter().zip(inner).map(|(outer, inner)| Access { outer, inner });
    let inputs: HashMap<usize, Access> =
        input_nodes.iter().map(|&i| (i, accesses.next().expect("one per input"))).collect();
    let element_out = accesses.next().expect("element layout");
    let row_out = accesses.next().expect("row layout");
    let mut body = Body::default();
    let outer_vars: Vec<Var> = outer_ext.iter().map(|_| body.fresh()).collect();
    let mut l = Lowering {
        g,
        per_row,
        body,
        outer_vars,
        inner_extents: inner_ext,
        inputs,
        element_out,
        row_out,
        row_values: HashMap::new(),
    };
    let n_in = g.inputs.len();
    let element_outputs: Vec<(usize, usize)> =
        g.outputs.iter().enumerate().filter(|(_, o)| !o.per_row).map(|(k, o)| (n_in + k, o.value)).collect();
    for (k, o) in g.outputs.iter().enumerate() {
        if o.per_row {
            let value = l.row_value(o.value)?;
            let index = index(&l.outer_vars, &l.row_out, &[]);
            l.body.stmts.push(Stmt::Store { buf: n_in + k, index, value });
        }
    }
    if !element_outputs.is_empty() {
        let roots: Vec<usize> = element_outputs.iter().map(|&(_, v)| v).collect();
        let stmts = l.inner_loop(&roots, |l, vars, values| {
            let index = index(&l.outer_vars, &l.element_out, vars);
            for &(buf, v) in &element_outputs {
                l.body.stmts.push(Stmt::Store { buf, index: index.clone(), value: values[&v].clone() });
            }
            Ok(())
        })?;
        l.body.stmts.extend(stmts);
    }
    let mut body = std::mem::take(&mut l.body.stmts);
    for (&var, &extent) in l.outer_vars.iter().zip(&outer_ext).rev() {
        body = vec![Stmt::Loop { var, extent: extent as u64, body }];
    }
    let row_len: u64 = g.shape[..split].iter().product::<usize>() as u64;
    let numel: u64 = g.shape.iter().product::<usize>() as u64;
    let mut buffers: Vec<Buffer> = g
        .inputs
        .iter()
        .map(|(name, len)| Buffer { name: name.clone(), len: *len, output: false, elem: Elem::F32 })
        .collect();
    buffers.extend(g.outputs.iter().map(|o| Buffer {
        name: o.name.clone(),
        len: if o.per_row { row_len } else { numel },
        output: true,
        elem: Elem::F32,
    }));
    let kernel = Kernel {
        name: g.name.clone(),
        buffers,
        body,
        vars: l.body.next_var,
        schedule: Schedule { parallel: numel >= 1 << 14 && outer_ext.first().is_some_and(|&e| e > 1), vector_width },
        launch: None,
    };
    Ok((kernel, outer_ext.len()))
}

impl Lowering<'_> {
    /// The per-row value of node `n`, computed once in the row's scope.
    fn row_value(&mut self, n: usize) -> Result<Expr, String> {
        if let Some(v) = self.row_values.get(&n) {
            return Ok(v.clone());
        }
        let value = match self.g.nodes[n] {
            Node::Reduce(kind, x) => self.reduction(kind, x)?,
            _ => {
                let mut operands = HashMap::new();
                for o in operands_of(&self.g.nodes[n]) {
                    operands.insert(o, self.row_value(o)?);
                }
                let vars = vec![];
                self.op(n, &vars, &operands)?
            }
        };
        self.row_values.insert(n, value.clone());
        Ok(value)
    }

    /// One reduction of element value `x` over the row.
    fn reduction(&mut self, kind: ReduceKind, x: usize) -> Result<Expr, String> {
        let (op, init) = match kind {
            ReduceKind::Max => (Binary::Max, f32::NEG_INFINITY),
            ReduceKind::Min => (Binary::Min, f32::INFINITY),
            ReduceKind::Sum | ReduceKind::Mean => (Binary::Add, 0.0),
        };
        let acc = self.body.fresh();
        self.body.stmts.push(Stmt::Let { var: acc, value: Expr::F32(init) });
        let stmts = self.inner_loop(&[x], |l, _, values| {
            l.body.stmts.push(Stmt::Accumulate { var: acc, op, value: values[&x].clone() });
            Ok(())
        })?;
        self.body.stmts.extend(stmts);
        let count: usize = self.g.shape[self.g.shape.len() - self.g.reduced_axes..].iter().product();
        Ok(match kind {
            ReduceKind::Mean => self.body.bind(Expr::Var(acc).bin(Binary::Div, Expr::F32(count as f32))),
            _ => Expr::Var(acc),
        })
    }

    /// A loop nest over the row's elements computing `roots`, then running
    /// `finish` (which appends the statements that use them). Per-row values
    /// the loop needs are computed before it, in the row's scope.
    fn inner_loop(
        &mut self,
        roots: &[usize],
        finish: impl FnOnce(&mut Self, &[Var], &HashMap<usize, Expr>) -> Result<(), String>,
    ) -> Result<Vec<Stmt>, String> {
        let needed = self.element_closure(roots)?;
        let outside = std::mem::take(&mut self.body.stmts);
        let vars: Vec<Var> = self.inner_extents.iter().map(|_| self.body.fresh()).collect();
        let mut values: HashMap<usize, Expr> = HashMap::new();
        for n in needed {
            let v = if self.per_row[n] { self.row_values[&n].clone() } else { self.op(n, &vars, &values)? };
            values.insert(n, v);
        }
        finish(self, &vars, &values)?;
        let mut stmts = std::mem::replace(&mut self.body.stmts, outside);
        for (&v, &e) in vars.iter().zip(&self.inner_extents).rev() {
            stmts = vec![Stmt::Loop { var: v, extent: e as u64, body: stmts }];
        }
        Ok(stmts)
    }

    /// The nodes `roots` depend on, in order, stopping at per-row values
    /// (which are computed here, in the row's scope).
    fn element_closure(&mut self, roots: &[usize]) -> Result<Vec<usize>, String> {
        let mut needed = vec![false; self.g.nodes.len()];
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut needed[n], true) || self.per_row[n] {
                continue;
            }
            stack.extend(operands_of(&self.g.nodes[n]));
        }
        let needed: Vec<usize> = (0..needed.len()).filter(|&n| needed[n]).collect();
        for &n in &needed {
            if self.per_row[n] {
                self.row_value(n)?;
            }
        }
        Ok(needed)
    }

    /// Node `n` (not a reduction) from its operands' `values`, at inner loop variables `vars`.
    fn op(&mut self, n: usize, vars: &[Var], values: &HashMap<usize, Expr>) -> Result<Expr, String> {
        let v = |i: &usize| values[i].clone();
        let b = &mut self.body;
        Ok(match &self.g.nodes[n] {
            Node::Input { buf, .. } => {
                b.bind(Expr::Load { buf: *buf, index: index(&self.outer_vars, &self.inputs[&n], vars) })
            }
            Node::Const(c) => Expr::F32(*c),
            Node::Unary(u, x) => unary(b, *u, v(x))?,
            Node::Binary(op, x, y) => {
                let op = match op {
                    BinaryOp::Add => Binary::Add,
                    BinaryOp::Sub => Binary::Sub,
                    BinaryOp::Mul => Binary::Mul,
                    BinaryOp::Div => Binary::Div,
                    BinaryOp::Max => Binary::Max,
                    BinaryOp::Min => Binary::Min,
                    other => return Err(format!("`{}` is not an elementwise kernel op", other.name())),
                };
                b.bind(v(x).bin(op, v(y)))
            }
            Node::Compare(c, x, y) => b.bind(v(x).cmp(*c, v(y))),
            // A constant condition (a broadcast `true`/`false`) picks its branch here.
            Node::Select(c, x, y) => match self.g.nodes[*c] {
                Node::Const(k) => v(if k != 0.0 { x } else { y }),
                _ => b.bind(Expr::select(v(c), v(x), v(y))),
            },
            // The interpreter's clamp keeps NaN; so do min/max here.
            Node::Clamp(x, lo, hi) => b.bind(v(x).bin(Binary::Max, Expr::F32(*lo)).bin(Binary::Min, Expr::F32(*hi))),
            Node::Reduce(..) => return Err("a reduction is computed per row".into()),
        })
    }
}

/// The element index of `access` at the row's loop variables `outer` and the inner ones.
fn index(outer: &[Var], access: &Access, inner: &[Var]) -> Index {
    let terms = outer
        .iter()
        .zip(&access.outer)
        .chain(inner.iter().zip(&access.inner))
        .filter(|(_, &st)| st != 0)
        .map(|(&v, &st)| (v, st))
        .collect();
    Index { terms, offset: 0 }
}

/// The values node `n` reads.
fn operands_of(n: &Node) -> Vec<usize> {
    match n {
        Node::Input { .. } | Node::Const(_) => vec![],
        Node::Unary(_, x) | Node::Clamp(x, ..) | Node::Reduce(_, x) => vec![*x],
        Node::Binary(_, x, y) | Node::Compare(_, x, y) => vec![*x, *y],
        Node::Select(c, x, y) => vec![*c, *x, *y],
    }
}

fn unary(b: &mut Body, u: UnaryOp, x: Expr) -> Result<Expr, String> {
    let one = Expr::F32(1.0);
    Ok(match u {
        UnaryOp::Neg => b.bind(x.un(Unary::Neg)),
        UnaryOp::Abs => b.bind(x.un(Unary::Abs)),
        UnaryOp::Sqrt => b.bind(x.un(Unary::Sqrt)),
        UnaryOp::Rsqrt => b.bind(one.bin(Binary::Div, x.un(Unary::Sqrt))),
        UnaryOp::Recip => b.bind(one.bin(Binary::Div, x)),
        UnaryOp::Round => b.bind(x.un(Unary::Nearest)),
        UnaryOp::Exp => math::exp(b, x),
        UnaryOp::Log => math::log(b, x),
        UnaryOp::Tanh => math::tanh(b, x),
        UnaryOp::Sigmoid => math::sigmoid(b, x),
        UnaryOp::Silu => {
            let x = b.bind(x);
            let s = math::sigmoid(b, x.clone());
            b.bind(x.bin(Binary::Mul, s))
        }
        UnaryOp::Gelu | UnaryOp::Erf | UnaryOp::Sin | UnaryOp::Cos | UnaryOp::Not => {
            return Err(format!("`{}` is not an elementwise kernel op yet", u.name()))
        }
    })
}
