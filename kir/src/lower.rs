//! Lowering of a fused elementwise group to a kernel: every value of the
//! group has the group's shape; inputs are read through strides (0 on the axes
//! they are broadcast along); the loop nest runs over the shape with adjacent
//! axes merged wherever every access is contiguous across them.

use crate::{math, Binary, Body, Buffer, Expr, Index, Kernel, Schedule, Stmt, Unary};
use lsc_ir::{BinaryOp, CmpOp, ReduceKind, UnaryOp};

/// A value of an elementwise group, defined from earlier ones (by position).
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
}

/// A fused elementwise group, optionally ending in a reduction over its
/// trailing axes (norms, softmax denominators, losses).
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Kernel name.
    pub name: String,
    /// The shape every value has.
    pub shape: Vec<usize>,
    /// Reduce the (single) output over the last `n` axes of `shape`.
    pub reduce: Option<(ReduceKind, usize)>,
    /// Input buffers: `(name, elements)`.
    pub inputs: Vec<(String, u64)>,
    /// The values, in order.
    pub nodes: Vec<Node>,
    /// Outputs: `(name, value)`; each is stored contiguously.
    pub outputs: Vec<(String, usize)>,
}

/// Whether [`lower_elementwise`] handles this unary op.
pub fn supports_unary(u: UnaryOp) -> bool {
    !matches!(u, UnaryOp::Gelu | UnaryOp::Erf | UnaryOp::Not)
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

/// The kernel computing `g`.
pub fn lower_elementwise(g: &Group) -> Result<Kernel, String> {
    if let Some((name, _)) = g.outputs.iter().find(|(_, v)| matches!(g.nodes[*v], Node::Compare(..))) {
        return Err(format!("kernel {}: output {name} is a comparison (kernels store f32)", g.name));
    }
    let reduced = match g.reduce {
        Some((_, n)) if g.outputs.len() != 1 || n == 0 || n > g.shape.len() => {
            return Err(format!(
                "kernel {}: a reduction kernel has one output and reduces 1..={} axes",
                g.name,
                g.shape.len()
            ))
        }
        Some((_, n)) => n,
        None => 0,
    };
    let split = g.shape.len() - reduced;
    let input_strides: Vec<Vec<i64>> = g
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::Input { strides, .. } => Some(strides.clone()),
            _ => None,
        })
        .collect();
    // Outputs are contiguous over the kept axes (and do not move along reduced ones).
    let kept = &g.shape[..split];
    let mut out_strides: Vec<i64> = (0..split).map(|a| kept[a + 1..].iter().product::<usize>() as i64).collect();
    out_strides.extend(std::iter::repeat_n(0, reduced));
    let mut all = input_strides;
    all.push(out_strides);
    let outer_strides: Vec<Vec<i64>> = all.iter().map(|s| s[..split].to_vec()).collect();
    let inner_strides: Vec<Vec<i64>> = all.iter().map(|s| s[split..].to_vec()).collect();
    let (outer_ext, outer) = coalesce(&g.shape[..split], &outer_strides);
    let (inner_ext, inner) =
        if reduced > 0 { coalesce(&g.shape[split..], &inner_strides) } else { (vec![], vec![vec![]; all.len()]) };
    let mut b = Body::default();
    let outer_vars: Vec<usize> = outer_ext.iter().map(|_| b.fresh()).collect();
    let inner_vars: Vec<usize> = inner_ext.iter().map(|_| b.fresh()).collect();
    let index = |k: usize| Index {
        terms: outer_vars
            .iter()
            .zip(&outer[k])
            .chain(inner_vars.iter().zip(&inner[k]))
            .filter(|(_, &st)| st != 0)
            .map(|(&v, &st)| (v, st))
            .collect(),
        offset: 0,
    };
    // The accumulator is declared before the reduction loop (its body goes in `inner_body`).
    let acc = g.reduce.map(|(kind, _)| {
        let var = b.fresh();
        let init = match kind {
            ReduceKind::Max => f32::NEG_INFINITY,
            ReduceKind::Min => f32::INFINITY,
            ReduceKind::Sum | ReduceKind::Mean => 0.0,
        };
        (var, kind, init)
    });
    let mut vals: Vec<Expr> = Vec::new();
    let mut next_input = 0;
    for n in &g.nodes {
        let v = match n {
            Node::Input { buf, .. } => {
                let e = Expr::Load { buf: *buf, index: index(next_input) };
                next_input += 1;
                b.bind(e)
            }
            Node::Const(c) => Expr::F32(*c),
            Node::Unary(u, x) => unary(&mut b, *u, vals[*x].clone())?,
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
                b.bind(vals[*x].clone().bin(op, vals[*y].clone()))
            }
            Node::Compare(c, x, y) => b.bind(vals[*x].clone().cmp(*c, vals[*y].clone())),
            Node::Select(c, x, y) => b.bind(Expr::select(vals[*c].clone(), vals[*x].clone(), vals[*y].clone())),
            Node::Clamp(x, lo, hi) => {
                // The interpreter's clamp keeps NaN; so do min/max here.
                let x = vals[*x].clone();
                b.bind(x.bin(Binary::Max, Expr::F32(*lo)).bin(Binary::Min, Expr::F32(*hi)))
            }
        };
        vals.push(v);
    }
    let n_in = g.inputs.len();
    let out_index = index(next_input);
    let body = match acc {
        None => {
            for (k, (_, v)) in g.outputs.iter().enumerate() {
                b.stmts.push(Stmt::Store { buf: n_in + k, index: out_index.clone(), value: vals[*v].clone() });
            }
            std::mem::take(&mut b.stmts)
        }
        Some((var, kind, init)) => {
            let op = match kind {
                ReduceKind::Max => Binary::Max,
                ReduceKind::Min => Binary::Min,
                ReduceKind::Sum | ReduceKind::Mean => Binary::Add,
            };
            let mut inner_body = std::mem::take(&mut b.stmts);
            inner_body.push(Stmt::Accumulate { var, op, value: vals[g.outputs[0].1].clone() });
            for (&v, &e) in inner_vars.iter().zip(&inner_ext).rev() {
                inner_body = vec![Stmt::Loop { var: v, extent: e as u64, body: inner_body }];
            }
            let count: usize = g.shape[split..].iter().product();
            let result = match kind {
                ReduceKind::Mean => Expr::Var(var).bin(Binary::Div, Expr::F32(count as f32)),
                _ => Expr::Var(var),
            };
            let mut body = vec![Stmt::Let { var, value: Expr::F32(init) }];
            body.extend(inner_body);
            body.push(Stmt::Store { buf: n_in, index: out_index.clone(), value: result });
            body
        }
    };
    let mut body = body;
    for (&var, &extent) in outer_vars.iter().zip(&outer_ext).rev() {
        body = vec![Stmt::Loop { var, extent: extent as u64, body }];
    }
    let out_len: u64 = g.shape[..split].iter().product::<usize>() as u64;
    let mut buffers: Vec<Buffer> =
        g.inputs.iter().map(|(name, len)| Buffer { name: name.clone(), len: *len, output: false }).collect();
    buffers.extend(g.outputs.iter().map(|(name, _)| Buffer { name: name.clone(), len: out_len, output: true }));
    let work: u64 = g.shape.iter().product::<usize>() as u64;
    Ok(Kernel {
        name: g.name.clone(),
        buffers,
        body,
        vars: b.next_var,
        schedule: Schedule {
            parallel: work >= 1 << 14 && outer_ext.first().is_some_and(|&e| e > 1),
            // Elementwise kernels run 4 lanes at a time; a reduction keeps its sequential order.
            vector_width: if g.reduce.is_some() { 1 } else { 4 },
        },
    })
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
        UnaryOp::Gelu | UnaryOp::Erf | UnaryOp::Not => {
            return Err(format!("`{}` is not an elementwise kernel op yet", u.name()))
        }
    })
}
