//! The cost model and DAG-aware extraction back to a graph.
//!
//! Each op costs `max(flops / peak, bytes / bandwidth) + launch`, evaluated at
//! representative sizes (every symbol 64, `B` = 8). Extraction first picks,
//! per class, the node of least tree cost, then improves the choice by the
//! true DAG cost (a node shared by several users counts once).

use super::analysis::LscGraph;
use super::lang::{Key, LscNode};
use egg::Id;
use lsc_ir::{Bindings, Dim, Graph, Op, TensorType, ValueRef};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Machine limits of the cost model.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// Peak f32 FLOP/s.
    pub peak_flops: f64,
    /// Memory bandwidth in bytes/s.
    pub bandwidth: f64,
    /// Fixed cost of one kernel launch in seconds.
    pub launch: f64,
}

impl Default for Machine {
    /// Documented defaults for this 2-core machine (AVX-512, ~50 GFLOP/s, ~10 GB/s).
    fn default() -> Self {
        Machine { peak_flops: 50e9, bandwidth: 10e9, launch: 1e-6 }
    }
}

pub(crate) fn numel(t: &TensorType) -> f64 {
    let symbol_size = |d: &Dim| -> f64 {
        let b: Bindings = d.symbols().map(|s| (s.to_string(), if s == "B" { 8 } else { 64 })).collect();
        d.eval(&b).unwrap_or(64).max(0) as f64
    };
    t.shape.iter().map(symbol_size).product()
}

/// Estimated seconds of one node; a call costs one run of its callee
/// (`Types::call_costs`), a loop `trips` runs.
pub fn node_cost(g: &LscGraph, n: &LscNode, m: &Machine) -> f64 {
    let LscNode::Other(sym, ch) = n;
    let Key::Op(op, None) = g.analysis.interner.key(*sym) else { return 0.0 };
    let out_types: Vec<TensorType> = g.lookup(n.clone()).map(|id| g[id].data.clone()).unwrap_or_default();
    let in_types: Vec<&TensorType> = ch.iter().filter_map(|c| g[*c].data.first()).collect();
    let outs: f64 = out_types.iter().map(numel).sum();
    let ins: f64 = in_types.iter().map(|t| numel(t)).sum();
    let dim = |t: &TensorType, axis: usize| numel(&TensorType::new(t.dtype, [t.shape[axis].clone()]));
    let flops = match op {
        _ if crate::fused::flops(op, &in_types, &out_types).is_some() => {
            crate::fused::flops(op, &in_types, &out_types).unwrap_or(0.0)
        }
        Op::MatMul { trans_a, .. } => {
            let k = in_types.first().map(|t| dim(t, t.rank() - if *trans_a { 2 } else { 1 })).unwrap_or(1.0);
            2.0 * outs * k
        }
        Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::CrossEntropy => 5.0 * ins,
        Op::Reshape { .. } | Op::Call { .. } | Op::Loop { .. } | Op::RoutedCall { .. } => 0.0,
        _ => outs.max(ins),
    };
    let body = |f: &str| g.analysis.call_costs.get(f).copied().unwrap_or(0.0);
    let callee = match op {
        Op::Call { callee } => return body(callee),
        Op::Loop { body: f, trips } => return *trips as f64 * (body(f) + m.launch),
        Op::RoutedCall { callee, .. } => crate::fused::routed_call::ROUTED_SHARE * body(callee),
        _ => 0.0,
    };
    // A reshape is free; everything else reads its inputs and writes its outputs.
    let size = |t: &TensorType| numel(t) * t.dtype.bits() as f64 / 8.0;
    // A routed call reads its mask and per-row operands to pack them; the rest are passed as they are.
    let read = match op {
        Op::Reshape { .. } => 0,
        Op::RoutedCall { routed, .. } => (routed + 1).min(in_types.len()),
        _ => in_types.len(),
    };
    let bytes = in_types[..read].iter().map(|t| size(t)).sum::<f64>()
        + if read == 0 { 0.0 } else { out_types.iter().map(size).sum::<f64>() };
    callee + (flops / m.peak_flops).max(bytes / m.bandwidth) + m.launch
}

/// The chosen node of each class.
pub type Choice = HashMap<Id, LscNode>;

fn reachable(g: &LscGraph, roots: &[Id], choice: &Choice) -> Vec<Id> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Id> = roots.iter().map(|r| g.find(*r)).collect();
    let mut order = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        order.push(id);
        if let Some(LscNode::Other(_, ch)) = choice.get(&id) {
            stack.extend(ch.iter().map(|c| g.find(*c)));
        }
    }
    order
}

/// The DAG cost of a choice: every reachable class's chosen node counted once.
pub fn dag_cost(g: &LscGraph, roots: &[Id], choice: &Choice, m: &Machine) -> f64 {
    dag_sum(g, roots, choice, |n| node_cost(g, n, m))
}

/// The sum of `price` over the chosen node of every class reachable from `roots`.
fn dag_sum(g: &LscGraph, roots: &[Id], choice: &Choice, price: impl Fn(&LscNode) -> f64) -> f64 {
    reachable(g, roots, choice).iter().map(|id| choice.get(id).map(&price).unwrap_or(0.0)).sum()
}

/// Every node's cost, computed once: the cost model is the slow part of
/// extraction, and the DAG refinement prices each node many times.
struct Costs<'g>(HashMap<&'g LscNode, f64>);

impl<'g> Costs<'g> {
    fn new(g: &'g LscGraph, m: &Machine) -> Costs<'g> {
        Costs(g.classes().flat_map(|c| c.nodes.iter()).map(|n| (n, node_cost(g, n, m))).collect())
    }

    fn of(&self, n: &LscNode) -> f64 {
        self.0.get(n).copied().unwrap_or(0.0)
    }

    fn dag(&self, g: &LscGraph, roots: &[Id], choice: &Choice) -> f64 {
        dag_sum(g, roots, choice, |n| self.of(n))
    }
}

/// Per class, the node of least tree cost. A worklist relaxation: a class is
/// priced again only when one of its children got cheaper, so a chain of
/// 20,000 nodes costs 20,000 steps (sweeping all classes until nothing changes
/// would cost the chain's depth times the graph).
fn tree_choice(g: &LscGraph, costs: &Costs) -> Choice {
    let mut parents: HashMap<Id, Vec<Id>> = HashMap::new();
    for class in g.classes() {
        for n in &class.nodes {
            let LscNode::Other(_, ch) = n;
            for c in ch {
                parents.entry(g.find(*c)).or_default().push(class.id);
            }
        }
    }
    for list in parents.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
    let mut best: HashMap<Id, (f64, &LscNode)> = HashMap::new();
    let mut queue: std::collections::VecDeque<Id> = g.classes().map(|c| c.id).collect();
    let mut queued: HashSet<Id> = queue.iter().copied().collect();
    while let Some(id) = queue.pop_front() {
        queued.remove(&id);
        let mut improved = false;
        for n in &g[id].nodes {
            let LscNode::Other(_, ch) = n;
            let Some(sub) = ch.iter().map(|c| best.get(&g.find(*c)).map(|b| b.0)).sum::<Option<f64>>() else {
                continue;
            };
            let cost = costs.of(n) + sub;
            if best.get(&id).is_none_or(|b| cost < b.0 - 1e-15) {
                best.insert(id, (cost, n));
                improved = true;
            }
        }
        if improved {
            for &p in parents.get(&id).map(Vec::as_slice).unwrap_or_default() {
                if queued.insert(p) {
                    queue.push_back(p);
                }
            }
        }
    }
    best.into_iter().map(|(k, (_, n))| (k, n.clone())).collect()
}

/// Tree-cost greedy choice, then single-class swaps that lower the DAG cost,
/// tried until `deadline`. The flag says whether the deadline cut the swaps short.
pub fn extract(g: &LscGraph, roots: &[Id], m: &Machine, deadline: Instant) -> (Choice, bool) {
    let costs = Costs::new(g, m);
    let mut choice = tree_choice(g, &costs);
    // DAG-aware refinement, bounded: try each alternative of each shared-choice class once.
    let mut current = costs.dag(g, roots, &choice);
    for id in reachable(g, roots, &choice) {
        let class = &g[id];
        if class.nodes.len() < 2 {
            continue;
        }
        if Instant::now() > deadline {
            return (choice, true);
        }
        for n in &class.nodes {
            let LscNode::Other(_, ch) = n;
            if ch.iter().any(|c| !choice.contains_key(&g.find(*c))) {
                continue;
            }
            let old = choice.insert(id, n.clone());
            // A choice must stay acyclic.
            let cyclic = reachable(g, &ch.iter().map(|c| g.find(*c)).collect::<Vec<_>>(), &choice).contains(&id);
            let cost = if cyclic { f64::INFINITY } else { costs.dag(g, roots, &choice) };
            if cost < current - 1e-15 {
                current = cost;
            } else if let Some(o) = old {
                choice.insert(id, o);
            }
        }
    }
    let cut = swap_multi_output_groups(g, roots, &mut choice, current, &costs, deadline);
    (choice, cut)
}

/// A multi-output fusion (one AdamW for every parameter) pays only when all
/// the classes reading its outputs switch to it at once: try each such group.
/// Returns whether `deadline` cut the tries short.
fn swap_multi_output_groups(
    g: &LscGraph,
    roots: &[Id],
    choice: &mut Choice,
    mut current: f64,
    costs: &Costs,
    deadline: Instant,
) -> bool {
    let mut groups: HashMap<Id, Vec<(Id, LscNode)>> = HashMap::new();
    for class in g.classes() {
        for n in &class.nodes {
            let LscNode::Other(sym, ch) = n;
            if matches!(g.analysis.interner.key(*sym), Key::Proj(_)) {
                groups.entry(g.find(ch[0])).or_default().push((class.id, n.clone()));
            }
        }
    }
    let mut sources: Vec<Id> = groups.keys().copied().collect();
    sources.sort();
    for source in sources {
        let members = &groups[&source];
        if members.len() < 2 || !choice.contains_key(&source) {
            continue;
        }
        if Instant::now() > deadline {
            return true;
        }
        let old: Vec<(Id, Option<LscNode>)> =
            members.iter().map(|(id, n)| (*id, choice.insert(*id, n.clone()))).collect();
        let below = reachable(g, &[source], choice);
        let cyclic = members.iter().any(|(id, _)| below.contains(id));
        let cost = if cyclic { f64::INFINITY } else { costs.dag(g, roots, choice) };
        if cost < current - 1e-15 {
            current = cost;
        } else {
            for (id, o) in old {
                match o {
                    Some(o) => choice.insert(id, o),
                    None => choice.remove(&id),
                };
            }
        }
    }
    false
}

/// Builds a graph named `name` from the choice; `inputs` are the input classes
/// in argument order (kept even if unused), `keep` further leaves to keep
/// (parameters), `outputs` the named roots.
pub fn to_graph(
    g: &LscGraph,
    choice: &Choice,
    name: &str,
    inputs: &[Id],
    keep: &[Id],
    outputs: &[(String, Id)],
) -> Result<Graph, String> {
    let mut out = Graph::new(name);
    let mut built: HashMap<Id, ValueRef> = HashMap::new();
    let mut roots: Vec<Id> = inputs.to_vec();
    roots.extend(keep);
    roots.extend(outputs.iter().map(|(_, id)| *id));
    for root in roots {
        build(g, choice, g.find(root), &mut out, &mut built)?;
    }
    out.outputs = outputs.iter().map(|(n, id)| (n.clone(), built[&g.find(*id)])).collect();
    Ok(out)
}

/// Adds the chosen node of `id` and everything below it to `out`, children
/// first. Iterative, with an explicit stack: a chain of 20,000 nodes (the
/// gradient of a 20,000-way concat) must not overflow the thread's stack.
fn build(
    g: &LscGraph,
    choice: &Choice,
    id: Id,
    out: &mut Graph,
    built: &mut HashMap<Id, ValueRef>,
) -> Result<ValueRef, String> {
    let chosen = |id: Id| choice.get(&id).ok_or_else(|| "a class has no chosen node".to_string());
    // (class, whether its children have been pushed)
    let mut stack = vec![(id, false)];
    while let Some((id, expanded)) = stack.pop() {
        if built.contains_key(&id) {
            continue;
        }
        let LscNode::Other(sym, ch) = chosen(id)?;
        if !expanded {
            stack.push((id, true));
            // Reversed, so that the first child is built first, as a recursion would.
            stack.extend(ch.iter().rev().map(|c| g.find(*c)).filter(|c| !built.contains_key(c)).map(|c| (c, false)));
            continue;
        }
        let args: Vec<ValueRef> = ch
            .iter()
            .map(|c| built.get(&g.find(*c)).copied().ok_or("the chosen nodes form a cycle"))
            .collect::<Result<_, _>>()?;
        let v = match g.analysis.interner.key(*sym).clone() {
            Key::Proj(i) => ValueRef { node: args[0].node, output: i },
            Key::Op(op, declared) => {
                let outputs = match declared {
                    Some(t) => vec![t],
                    None => g[id].data.clone(),
                };
                if outputs.is_empty() {
                    return Err(format!("`{}` has no known type", op.name()));
                }
                ValueRef::first(out.add_node(op, &args, outputs))
            }
        };
        built.insert(id, v);
    }
    built.get(&id).copied().ok_or_else(|| "a class has no chosen node".to_string())
}
