//! Library ops that are one group: a data movement (`transpose`,
//! `broadcast`), an elementwise op, a reduction or a softmax along the last axis, computed by a generated
//! kernel rather than a library routine. A target that has no library of its
//! own for them (a GPU) lowers the group like any fused one.

use crate::lower::{supports_binary, supports_unary, Group, Node, Output};
use lsc_ir::{BinaryOp, Op, ReduceKind, UnaryOp};

/// Row-major element strides of `shape`.
fn contiguous(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

fn elements(shape: &[usize]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

/// The group computing f32 op `op` from operands of shapes `inputs` into one
/// result of shape `out`, or `None` if the op is not a single group.
pub fn op_group(name: &str, op: &Op, inputs: &[Vec<usize>], out: &[usize]) -> Option<Group> {
    let operand = |i: usize| (format!("x{i}"), elements(&inputs[i]));
    let one = |shape: Vec<usize>, strides: Vec<i64>, reduced_axes: usize, per_row: bool, node: Option<Node>| {
        let mut nodes = vec![Node::Input { buf: 0, strides }];
        nodes.extend(node);
        let value = nodes.len() - 1;
        Some(Group {
            name: name.to_string(),
            shape,
            reduced_axes,
            inputs: vec![operand(0)],
            nodes,
            outputs: vec![Output { name: "y".into(), value, per_row }],
        })
    };
    match op {
        Op::Transpose { perm } => {
            let s = contiguous(&inputs[0]);
            one(out.to_vec(), perm.iter().map(|&p| s[p]).collect(), 0, false, None)
        }
        Op::Broadcast { .. } => {
            let (x, s) = (&inputs[0], contiguous(&inputs[0]));
            let lead = out.len().checked_sub(x.len())?;
            let strides = (0..out.len())
                .map(|i| match i.checked_sub(lead) {
                    Some(j) if x[j] == out[i] => s[j],
                    Some(j) if x[j] == 1 => 0,
                    Some(_) => i64::MIN,
                    None => 0,
                })
                .collect::<Vec<_>>();
            strides.iter().all(|&s| s != i64::MIN).then_some(())?;
            one(out.to_vec(), strides, 0, false, None)
        }
        Op::Reduce { kind, axes, .. } => {
            // The kept axes lead and the reduced ones trail: one row per kept index.
            let (x, s) = (&inputs[0], contiguous(&inputs[0]));
            let order: Vec<usize> = (0..x.len()).filter(|a| !axes.contains(a)).chain(axes.iter().copied()).collect();
            let shape = order.iter().map(|&a| x[a]).collect();
            let strides = order.iter().map(|&a| s[a]).collect();
            one(shape, strides, axes.len(), true, Some(Node::Reduce(*kind, 0)))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } if *axis + 1 == out.len() => {
            // Along the last axis: one row per index of the others.
            let (x, m, shifted) = (0, 1, 2);
            let mut nodes = vec![
                Node::Input { buf: 0, strides: contiguous(out) },
                Node::Reduce(ReduceKind::Max, x),
                Node::Binary(BinaryOp::Sub, x, m),
                Node::Unary(UnaryOp::Exp, shifted),
                Node::Reduce(ReduceKind::Sum, 3),
            ];
            if matches!(op, Op::Softmax { .. }) {
                nodes.push(Node::Binary(BinaryOp::Div, 3, 4));
            } else {
                nodes.extend([Node::Unary(UnaryOp::Log, 4), Node::Binary(BinaryOp::Sub, shifted, 5)]);
            }
            let value = nodes.len() - 1;
            Some(Group {
                name: name.to_string(),
                shape: out.to_vec(),
                reduced_axes: 1,
                inputs: vec![operand(0)],
                nodes,
                outputs: vec![Output::element("y", value)],
            })
        }
        Op::Unary(u) if supports_unary(*u) => one(out.to_vec(), contiguous(out), 0, false, Some(Node::Unary(*u, 0))),
        Op::Clamp { min, max } => {
            one(out.to_vec(), contiguous(out), 0, false, Some(Node::Clamp(0, *min as f32, *max as f32)))
        }
        Op::Binary(b) if supports_binary(*b) && inputs.len() == 2 => Some(Group {
            name: name.to_string(),
            shape: out.to_vec(),
            reduced_axes: 0,
            inputs: vec![operand(0), operand(1)],
            nodes: vec![
                Node::Input { buf: 0, strides: contiguous(out) },
                Node::Input { buf: 1, strides: contiguous(out) },
                Node::Binary(*b, 0, 1),
            ],
            outputs: vec![Output::element("y", 2)],
        }),
        _ => None,
    }
}
