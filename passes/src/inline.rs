//! Inlining `main`'s calls: each `call f(args)` becomes a copy of `f`'s body,
//! instantiated at the call's dimensions.
//!
//! The training step uses it so that reverse-mode autodiff keeps the forward
//! values of a called function (a shared block) instead of recomputing them in
//! `f__vjp`: the step then does a block's forward GEMMs once, not twice. The
//! weights stay shared, because a function's parameters are its arguments.
//! Calls inside loop bodies are left alone (a loop's backward records its own
//! history), and so are functions that declare parameters or inputs of their
//! own, which a copy would duplicate.

use lsc_ir::infer::bind_symbols;
use lsc_ir::{Dim, Graph, Op, Program, TensorType, ValueRef};
use std::collections::{BTreeMap, HashMap, HashSet};

/// `p` with every inlinable `call` of `main` replaced by its callee's body
/// (recursively), and the functions nothing calls any more dropped.
pub fn inline_calls(p: &Program) -> Result<Program, String> {
    let mut main = Graph::new(&p.main.name);
    let map = copy_graph(p, &p.main, &mut main, None, &BTreeMap::new())?;
    main.outputs = p.main.outputs.iter().map(|(n, v)| (n.clone(), map[v])).collect();
    let mut out = Program { main, functions: Vec::new(), symbols: p.symbols.clone() };
    let reachable = reachable_functions(p, &out.main);
    out.functions = p.functions.iter().filter(|f| reachable.contains(&f.name)).cloned().collect();
    Ok(out)
}

/// Whether `f`'s body can be copied into a caller: its only leaves with an
/// identity are its arguments.
fn inlinable(f: &Graph) -> bool {
    f.dag.node_weights().all(|n| !matches!(n.op, Op::Param { .. })) && f.topo_order().is_ok()
}

/// Copies `src` into `dst`. `args` binds `src`'s inputs (`None` copies them as
/// inputs of `dst`); `subst` instantiates its symbols. Returns where each of
/// `src`'s values went.
fn copy_graph(
    p: &Program,
    src: &Graph,
    dst: &mut Graph,
    args: Option<&[ValueRef]>,
    subst: &BTreeMap<String, Dim>,
) -> Result<HashMap<ValueRef, ValueRef>, String> {
    let instantiate = |t: &TensorType| TensorType::new(t.dtype, t.shape.iter().map(|d| d.substitute(subst)));
    let mut map: HashMap<ValueRef, ValueRef> = HashMap::new();
    for (i, &n) in src.inputs.iter().enumerate() {
        let to = match args {
            Some(a) => *a.get(i).ok_or_else(|| format!("@{} is called with too few arguments", src.name))?,
            None => {
                let node = src.node(n);
                ValueRef::first(dst.add_node(node.op.clone(), &[], node.outputs.iter().map(instantiate).collect()))
            }
        };
        map.insert(ValueRef::first(n), to);
    }
    let inputs: HashSet<_> = src.inputs.iter().copied().collect();
    let order = src.topo_order().map_err(|_| format!("@{} has a cycle", src.name))?;
    for n in order.into_iter().filter(|n| !inputs.contains(n)) {
        let node = src.node(n);
        let operands: Vec<ValueRef> = src.operands(n).iter().map(|v| map[v]).collect();
        let callee = match &node.op {
            Op::Call { callee } => p.function(callee).filter(|f| inlinable(f)),
            _ => None,
        };
        if let Some(f) = callee {
            let actual: Vec<&TensorType> = operands.iter().map(|&v| dst.value_type(v)).collect();
            let formal: Vec<TensorType> = f.input_types().into_iter().map(|(_, t)| t.clone()).collect();
            let inner = bind_symbols(&formal, &actual).map_err(|e| format!("inlining @{}: {e}", f.name))?;
            let body = copy_graph(p, f, dst, Some(&operands), &inner)?;
            for (o, (_, v)) in f.outputs.iter().enumerate() {
                map.insert(ValueRef { node: n, output: o as u32 }, body[v]);
            }
            continue;
        }
        let outputs = node.outputs.iter().map(instantiate).collect();
        let id = dst.add_node(node.op.substitute_dims(subst), &operands, outputs);
        for o in 0..node.outputs.len() as u32 {
            map.insert(ValueRef { node: n, output: o }, ValueRef { node: id, output: o });
        }
    }
    Ok(map)
}

/// The functions `main` runs, directly or through other functions.
fn reachable_functions(p: &Program, main: &Graph) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut stack: Vec<String> = main.callees().into_iter().collect();
    while let Some(name) = stack.pop() {
        if let Some(f) = p.function(&name) {
            if seen.insert(name) {
                stack.extend(f.callees());
            }
        }
    }
    seen
}
