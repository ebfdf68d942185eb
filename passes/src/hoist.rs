//! Splits the work that depends only on parameters — ternary packing, weight
//! scales, any weight transform of fixed shape — out of a program's main
//! graph, so inference on fixed weights computes it once, when the weights
//! are loaded, instead of on every call.

use lsc_ir::{Graph, NodeId, Op, Program, ValueRef};
use std::collections::{HashMap, HashSet};

/// The name prefix of the parameters that stand for hoisted values.
pub const HOISTED_PREFIX: &str = "hoisted.";

/// A program split into the part computed once per set of weights and the rest.
pub struct Hoisted {
    /// Parameters → the hoisted values (outputs `hoisted.{i}`); no inputs.
    pub prologue: Program,
    /// The original program with each hoisted value read from parameter `hoisted.{i}`.
    pub main: Program,
}

/// Splits `p`; `None` when its main graph has no parameter-only work.
/// A value is hoisted when it is computed (not a leaf) from parameters and
/// constants alone, has a shape free of symbols, and feeds the rest of the graph.
pub fn hoist_parameter_work(p: &Program) -> Result<Option<Hoisted>, String> {
    let g = &p.main;
    let order = g.topo_order().map_err(|_| "@main has a cycle".to_string())?;
    // Nodes computable from the weights alone, and whether a parameter is among their sources.
    let mut fixed: HashMap<NodeId, bool> = HashMap::new();
    for &n in &order {
        let node = g.node(n);
        let symbol_free = node.outputs.iter().all(|t| t.shape.iter().all(|d| d.as_const().is_some()));
        let entry = match &node.op {
            Op::Param { .. } => Some(true),
            Op::Constant { .. } | Op::Iota { .. } if symbol_free => Some(false),
            Op::Input { .. }
            | Op::Constant { .. }
            | Op::Iota { .. }
            | Op::Call { .. }
            | Op::RoutedCall { .. }
            | Op::Loop { .. } => None,
            _ if !symbol_free => None,
            _ => {
                let sources: Option<Vec<bool>> = g.operands(n).iter().map(|v| fixed.get(&v.node).copied()).collect();
                sources.map(|s| s.into_iter().any(|x| x))
            }
        };
        if let Some(has_param) = entry {
            fixed.insert(n, has_param);
        }
    }
    let hoistable = |n: NodeId| fixed.get(&n) == Some(&true) && !g.node(n).op.is_leaf();
    // The frontier: hoistable values read by the rest of the graph or returned.
    let mut frontier: Vec<ValueRef> = Vec::new();
    let mut seen = HashSet::new();
    let mut mark = |v: ValueRef, frontier: &mut Vec<ValueRef>| {
        if hoistable(v.node) && seen.insert(v) {
            frontier.push(v);
        }
    };
    for &n in &order {
        if !fixed.contains_key(&n) {
            for v in g.operands(n) {
                mark(v, &mut frontier);
            }
        }
    }
    for (_, v) in &g.outputs {
        mark(*v, &mut frontier);
    }
    if frontier.is_empty() {
        return Ok(None);
    }
    let names: HashMap<ValueRef, String> =
        frontier.iter().enumerate().map(|(i, v)| (*v, format!("{HOISTED_PREFIX}{i}"))).collect();

    let mut prologue = Graph::new("main");
    let map = copy_nodes(g, &order, &mut prologue, |n| fixed.contains_key(&n), &HashMap::new());
    prologue.outputs = frontier.iter().map(|v| (names[v].clone(), map[v])).collect();

    let mut main = Graph::new(&g.name);
    let mut replaced: HashMap<ValueRef, ValueRef> = HashMap::new();
    for v in &frontier {
        let ty = g.value_type(*v).clone();
        let id = main.add_node(Op::Param { name: names[v].clone() }, &[], vec![ty]);
        replaced.insert(*v, ValueRef::first(id));
    }
    let map = copy_nodes(g, &order, &mut main, |n| !hoistable(n), &replaced);
    main.outputs = g.outputs.iter().map(|(name, v)| (name.clone(), map[v])).collect();
    // Inputs keep their order: copy_nodes adds them in topological order, so reorder.
    let input_names: Vec<&str> = g.inputs.iter().filter_map(|&n| g.node(n).op.leaf_name()).collect();
    let rank: HashMap<NodeId, usize> = main
        .inputs
        .iter()
        .map(|&n| {
            let name = main.node(n).op.leaf_name().unwrap_or("");
            (n, input_names.iter().position(|x| *x == name).unwrap_or(usize::MAX))
        })
        .collect();
    main.inputs.sort_by_key(|n| rank[n]);

    let mut prologue = Program { main: prologue, functions: Vec::new(), symbols: Vec::new() };
    let mut main = Program { main, functions: p.functions.clone(), symbols: p.symbols.clone() };
    crate::dce::eliminate_dead_code(&mut prologue);
    crate::dce::eliminate_dead_code(&mut main);
    lsc_ir::verify(&prologue).map_err(|e| format!("hoisting made an invalid prologue: {e}"))?;
    lsc_ir::verify(&main).map_err(|e| format!("hoisting made an invalid program: {e}"))?;
    Ok(Some(Hoisted { prologue, main }))
}

/// Copies the nodes of `src` that `keep` selects into `dst` (operands mapped;
/// values in `replaced` read their replacement); returns where every value went.
pub(crate) fn copy_nodes(
    src: &Graph,
    order: &[NodeId],
    dst: &mut Graph,
    keep: impl Fn(NodeId) -> bool,
    replaced: &HashMap<ValueRef, ValueRef>,
) -> HashMap<ValueRef, ValueRef> {
    let mut map: HashMap<ValueRef, ValueRef> = replaced.clone();
    for &n in order {
        if !keep(n) {
            continue;
        }
        let node = src.node(n);
        let operands: Vec<ValueRef> = src.operands(n).iter().map(|v| map[v]).collect();
        let id = dst.add_node(node.op.clone(), &operands, node.outputs.clone());
        for output in 0..node.outputs.len() as u32 {
            map.entry(ValueRef { node: n, output }).or_insert(ValueRef { node: id, output });
        }
    }
    map
}
