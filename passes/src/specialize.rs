//! Interprocedural constant propagation: when every call of a function passes
//! the same broadcast scalar constant for an argument (MoR's training graph
//! calls its shared block with an all-true `active` mask), the function body
//! reads that constant instead, so the rewrite rules can simplify what depends
//! on it (the mask becomes plain causal, and the attention inside fuses).

use lsc_ir::{Graph, NodeId, Op, Program, TensorType, ValueRef};
use std::collections::HashMap;

/// The scalar constant `v` is (directly or broadcast), with its scalar type.
fn constant_of(g: &Graph, v: ValueRef) -> Option<(u64, TensorType)> {
    let node = g.node(v.node);
    match &node.op {
        Op::Constant { value } if node.outputs[0].rank() == 0 => Some((value.to_bits(), node.outputs[0].clone())),
        Op::Broadcast { .. } => constant_of(g, g.operands(v.node)[0]),
        _ => None,
    }
}

/// Specialises functions on constant arguments; returns how many arguments.
pub fn specialize_constant_arguments(p: &mut Program) -> usize {
    // Per function, per argument: the constant every call passes (None once two calls differ).
    let mut seen: HashMap<String, Vec<Option<(u64, TensorType)>>> = HashMap::new();
    let mut loop_bodies = Vec::new();
    for g in p.graphs() {
        for n in g.dag.node_indices() {
            match &g.node(n).op {
                Op::Call { callee } => {
                    let args: Vec<_> = g.operands(n).iter().map(|v| constant_of(g, *v)).collect();
                    match seen.get_mut(callee) {
                        Some(prev) => {
                            for (p, a) in prev.iter_mut().zip(args) {
                                if *p != a {
                                    *p = None;
                                }
                            }
                        }
                        None => {
                            seen.insert(callee.clone(), args);
                        }
                    }
                }
                // Loop bodies and routed callees see other values than their operands.
                Op::Loop { body: f, .. } | Op::RoutedCall { callee: f, .. } => loop_bodies.push(f.clone()),
                _ => {}
            }
        }
    }
    let mut count = 0;
    for f in &mut p.functions {
        let Some(args) = seen.get(&f.name).filter(|_| !loop_bodies.contains(&f.name)) else { continue };
        let constants: Vec<(usize, f64, TensorType)> = args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|(bits, ty)| (i, f64::from_bits(*bits), ty.clone())))
            .filter(|(i, _, _)| symbols_bound_elsewhere(f, *i))
            .filter(|(i, _, _)| !is_unused(f, f.inputs[*i]))
            .collect();
        if constants.is_empty() {
            continue;
        }
        count += constants.len();
        *f = rebuild_with_constants(f, &constants);
    }
    count
}

/// Whether every symbol of input `i`'s type is bound by another input.
fn symbols_bound_elsewhere(f: &Graph, i: usize) -> bool {
    let ty = |k: usize| &f.node(f.inputs[k]).outputs[0];
    ty(i)
        .shape
        .iter()
        .flat_map(|d| d.symbols())
        .all(|s| (0..f.inputs.len()).any(|k| k != i && ty(k).shape.iter().any(|d| d.as_symbol() == Some(s))))
}

fn is_unused(f: &Graph, n: NodeId) -> bool {
    f.dag.neighbors_directed(n, petgraph::Direction::Outgoing).next().is_none()
}

/// `f` with each listed input's uses reading `broadcast(constant)` of its type.
fn rebuild_with_constants(f: &Graph, constants: &[(usize, f64, TensorType)]) -> Graph {
    let mut out = Graph::new(&f.name);
    // Inputs first, in order (the signature stays); the constants stand in for their uses.
    let mut replaced: HashMap<ValueRef, ValueRef> = HashMap::new();
    for (i, &n) in f.inputs.iter().enumerate() {
        let node = f.node(n);
        let id = ValueRef::first(out.add_node(node.op.clone(), &[], node.outputs.clone()));
        let stand_in = match constants.iter().find(|(k, _, _)| *k == i) {
            Some((_, value, scalar)) => {
                let c = out.add_node(Op::Constant { value: *value }, &[], vec![scalar.clone()]);
                let ty = node.outputs[0].clone();
                ValueRef::first(out.add_node(
                    Op::Broadcast { shape: ty.shape.clone() },
                    &[ValueRef::first(c)],
                    vec![ty],
                ))
            }
            None => id,
        };
        replaced.insert(ValueRef::first(n), stand_in);
    }
    let order = f.topo_order().unwrap_or_else(|_| f.dag.node_indices().collect());
    let map = crate::hoist::copy_nodes(f, &order, &mut out, |n| !f.inputs.contains(&n), &replaced);
    out.outputs = f.outputs.iter().map(|(name, v)| (name.clone(), map[v])).collect();
    out
}
