//! Partitioning of an optimised graph into kernels: chains of elementwise ops
//! of one shape fuse into one kernel (a producer joins its consumer's kernel
//! when every use of it is inside that kernel, and broadcasts of external
//! values become strided reads). Reductions over trailing axes join too, with
//! their producers, and with their consumers when the result is broadcast
//! back over the reduced axes: a norm or a softmax and what uses it become one
//! row kernel. Every other op is a library kernel of its own (GEMM, fused
//! attention, gathers, …).

use lsc_ir::{Bindings, DType, Graph, NodeId, Op, Program, TensorType, ValueRef};
use lsc_kir::lower::{Group, Node, Output};
use petgraph::Direction;
use std::collections::{HashMap, HashSet};

/// One kernel of a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// The nodes it computes, in topological order.
    pub nodes: Vec<NodeId>,
    /// Its values read by other kernels or returned.
    pub outputs: Vec<ValueRef>,
    /// Fused elementwise code (`true`) or a library op.
    pub elementwise: bool,
}

/// Whether `op` can be part of an elementwise kernel (what the kernel IR's lowering covers).
pub fn is_elementwise(op: &Op) -> bool {
    match op {
        Op::Unary(u) => lsc_kir::lower::supports_unary(*u),
        Op::Binary(b) => lsc_kir::lower::supports_binary(*b),
        Op::Compare(_) | Op::Select | Op::Clamp { .. } => true,
        _ => false,
    }
}

/// The most nodes one generated kernel computes. Real models fuse a few dozen;
/// the cap keeps a pathological chain (the gradient of a 20,000-way concat is
/// a chain of 20,000 adds) from becoming one kernel that takes minutes to lower.
pub const MAX_KERNEL_NODES: usize = 512;

/// Partitions `g` (leaves belong to no kernel).
pub fn partition(g: &Graph) -> Result<Vec<Part>, String> {
    let order = g.topo_order().map_err(|_| format!("@{} has a cycle", g.name))?;
    let mut users: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &n in &order {
        for v in g.operands(n) {
            users.entry(v.node).or_default().push(n);
        }
    }
    // A node reading one value many times (a concat of 20,000 copies) is one user
    // of it: duplicates would make the growth below quadratic.
    for list in users.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
    let returned: HashSet<NodeId> = g.outputs.iter().map(|(_, v)| v.node).collect();
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let float_elementwise = |n: NodeId| {
        let node = g.node(n);
        is_elementwise(&node.op) && node.outputs.len() == 1
    };
    let mut owner: HashMap<NodeId, usize> = HashMap::new();
    let mut parts: Vec<Part> = Vec::new();
    for &n in order.iter().rev() {
        if owner.contains_key(&n) || g.node(n).op.is_leaf() {
            continue;
        }
        let id = parts.len();
        owner.insert(n, id);
        let mut members = vec![n];
        let root_reduction = trailing_reduction(g, n);
        let reduction = root_reduction.is_some();
        if float_elementwise(n) || reduction {
            // Every element value of the kernel has this type; reductions run over its trailing axes.
            let full = root_element_type(g, n);
            let mut reduced_axes = root_reduction.map(|(_, axes)| axes);
            // Grow towards producers whose every use is already inside. A producer under a
            // broadcast joins too: elementwise ops commute with broadcasting, so it is
            // evaluated at the kernel's shape, reading its own inputs broadcast. So does a
            // reduction of a value of the kernel's type over the kernel's reduced axes.
            // A producer also used by later kernels joins as an extra output when it can
            // be stored (per element or per row) and every such use comes after this kernel.
            let mut frontier = vec![n];
            while let Some(m) = frontier.pop() {
                let mut producers: Vec<NodeId> = g.operands(m).into_iter().map(|v| v.node).collect();
                producers.dedup();
                for p in producers {
                    let row_reduction = row_reduction(g, p).filter(|&axes| {
                        *g.value_type(g.operands(p)[0]) == full && reduced_axes.is_none_or(|r| r == axes)
                    });
                    let outside: Vec<NodeId> =
                        users[&p].iter().copied().filter(|u| owner.get(u) != Some(&id)).collect();
                    // The reduced axes if `p` is stored per row.
                    let axes = row_reduction.or(reduced_axes).or_else(|| row_axes(&g.node(p).outputs[0], &full));
                    let stored = stored_as(&g.node(p).outputs[0], &full, axes.unwrap_or(0));
                    let escapes = outside.iter().all(|u| position[u] > position[&n])
                        && !matches!(g.node(p).op, Op::Broadcast { .. })
                        && (row_reduction.is_some() || stored.is_some());
                    let joins = !owner.contains_key(&p)
                        && !returned.contains(&p)
                        && (float_elementwise(p)
                            || matches!(g.node(p).op, Op::Broadcast { .. })
                            || row_reduction.is_some())
                        && (outside.is_empty() || escapes);
                    let joins = joins && members.len() < MAX_KERNEL_NODES;
                    if joins && (row_reduction.is_some() || (!outside.is_empty() && stored == Some(true))) {
                        reduced_axes = axes;
                    }
                    if joins {
                        owner.insert(p, id);
                        members.push(p);
                        frontier.push(p);
                    }
                }
            }
        }
        let member_set: HashSet<NodeId> = members.iter().copied().collect();
        let mut nodes = members;
        nodes.sort_unstable_by_key(|m| position[m]);
        let mut outputs: Vec<ValueRef> = Vec::new();
        for &m in &nodes {
            for o in 0..g.node(m).outputs.len() as u32 {
                let v = ValueRef { node: m, output: o };
                let outside = users.get(&m).is_some_and(|us| us.iter().any(|u| !member_set.contains(u)));
                if outside || g.outputs.iter().any(|(_, r)| *r == v) {
                    outputs.push(v);
                }
            }
        }
        // A lone elementwise op is generated code too: a vectorised, threaded
        // pass costs no more to launch than a library call.
        let elementwise = float_elementwise(n) || reduction;
        parts.push(Part { nodes, outputs, elementwise });
    }
    parts.reverse();
    Ok(parts)
}

/// `p` with every broadcast used by several ops copied once per user, so each
/// kernel can read the broadcast's source through strides instead of a
/// materialised tensor, and a norm's per-row scale can join every kernel
/// that uses it. Values are unchanged; the copies cost nothing in a kernel.
pub fn unshare_broadcasts(p: &Program) -> Program {
    let mut q = p.clone();
    for g in std::iter::once(&mut q.main).chain(q.functions.iter_mut()) {
        let shared: Vec<NodeId> = g
            .dag
            .node_indices()
            .filter(|&n| matches!(g.node(n).op, Op::Broadcast { .. }))
            .filter(|&n| g.dag.neighbors_directed(n, Direction::Outgoing).collect::<HashSet<_>>().len() > 1)
            .collect();
        for b in shared {
            let mut users: Vec<NodeId> = g.dag.neighbors_directed(b, Direction::Outgoing).collect();
            users.sort();
            users.dedup();
            let node = g.node(b).clone();
            let source = g.operands(b);
            // The first user keeps the original (as do the graph's outputs).
            for &u in &users[1..] {
                let copy = g.add_node(node.op.clone(), &source, node.outputs.clone());
                while let Some(e) = g.dag.find_edge(b, u) {
                    let w = *g.dag.edge_weight(e).expect("found edge");
                    g.dag.remove_edge(e);
                    g.dag.add_edge(copy, u, w);
                }
            }
        }
    }
    q
}

/// `(kind, reduced axes)` if `n` is a sum/mean/max/min over a trailing run of axes.
fn trailing_reduction(g: &Graph, n: NodeId) -> Option<(lsc_ir::ReduceKind, usize)> {
    let Op::Reduce { kind, axes, .. } = &g.node(n).op else { return None };
    let rank = g.value_type(g.operands(n)[0]).rank();
    let trailing = !axes.is_empty() && axes.iter().enumerate().all(|(i, &a)| a == rank - axes.len() + i);
    trailing.then_some((*kind, axes.len()))
}

/// The reduced axes of a trailing reduction that keeps them (as size 1): its
/// result can be broadcast back over the row it reduced.
fn row_reduction(g: &Graph, n: NodeId) -> Option<usize> {
    let keeps = matches!(g.node(n).op, Op::Reduce { keep_dims: true, .. });
    trailing_reduction(g, n).filter(|_| keeps).map(|(_, axes)| axes)
}

/// How a value of type `t` is stored by a kernel whose element values have
/// type `full`: per element (`false`) or, with `reduced_axes` trailing axes
/// of size 1, per row (`true`).
fn stored_as(t: &TensorType, full: &TensorType, reduced_axes: usize) -> Option<bool> {
    if t == full {
        return Some(false);
    }
    let split = full.rank().checked_sub(reduced_axes)?;
    let row = reduced_axes > 0
        && t.dtype == full.dtype
        && t.rank() == full.rank()
        && t.shape[..split] == full.shape[..split]
        && t.shape[split..].iter().all(|d| *d == lsc_ir::Dim::new(1));
    row.then_some(true)
}

/// The trailing axes a value of type `t` has reduced to size 1 relative to
/// `full` (`t` is one value per row of `full` over those axes).
fn row_axes(t: &TensorType, full: &TensorType) -> Option<usize> {
    if t.rank() != full.rank() || t == full {
        return None;
    }
    let ones = t.shape.iter().rev().take_while(|d| **d == lsc_ir::Dim::new(1)).count();
    stored_as(t, full, ones).filter(|&per_row| per_row).map(|_| ones)
}

/// The type of the element values of a kernel rooted at `root`: what a
/// trailing reduction reduces, else the root's own type.
fn root_element_type(g: &Graph, root: NodeId) -> TensorType {
    match trailing_reduction(g, root) {
        Some(_) => g.value_type(g.operands(root)[0]).clone(),
        None => g.node(root).outputs[0].clone(),
    }
}

/// `(kernel element type, reduced axes)` of a part: the type its element
/// values have, and the trailing axes its reductions and per-row outputs span.
fn element_type(g: &Graph, part: &Part) -> Result<(TensorType, usize), String> {
    let root = *part.nodes.last().ok_or("an empty kernel")?;
    let reductions: Vec<NodeId> =
        part.nodes.iter().copied().filter(|&n| matches!(g.node(n).op, Op::Reduce { .. })).collect();
    let full = root_element_type(g, root);
    let mut axes = None;
    for &r in &reductions {
        let here = if r == root { trailing_reduction(g, r).map(|(_, a)| a) } else { row_reduction(g, r) };
        let Some(here) = here else { return Err("a reduction that is not over the row's trailing axes".into()) };
        if *g.value_type(g.operands(r)[0]) != full || axes.is_some_and(|a| a != here) {
            return Err("reductions of different rows".into());
        }
        axes = Some(here);
    }
    for v in &part.outputs {
        let t = g.value_type(*v);
        if matches!(g.node(v.node).op, Op::Reduce { .. }) || *t == full {
            continue;
        }
        let here = row_axes(t, &full).ok_or_else(|| format!("output {t} is neither {full} nor a row of it"))?;
        if axes.is_some_and(|a| a != here) {
            return Err("outputs of different rows".into());
        }
        axes = Some(here);
    }
    Ok((full, axes.unwrap_or(0)))
}

/// The value of `v` if it is a scalar constant, directly or broadcast.
fn scalar_constant(g: &Graph, v: ValueRef) -> Option<f64> {
    let node = g.node(v.node);
    match &node.op {
        Op::Constant { value } if node.outputs[0].rank() == 0 => Some(*value),
        Op::Broadcast { .. } => scalar_constant(g, g.operands(v.node)[0]),
        _ => None,
    }
}

/// Whether each output of `part` is stored per row (`true`) or per element.
fn output_layouts(g: &Graph, part: &Part) -> Result<Vec<bool>, String> {
    let (full, reduced_axes) = element_type(g, part)?;
    part.outputs
        .iter()
        .map(|v| {
            if matches!(g.node(v.node).op, Op::Reduce { .. }) {
                return Ok(true);
            }
            let t = g.value_type(*v);
            if t.dtype != DType::F32 {
                return Err(format!("output %{} is {t} (kernels store f32)", v.node.index()));
            }
            stored_as(t, &full, reduced_axes)
                .ok_or_else(|| format!("output %{} is {t}, neither {full} nor a row of it", v.node.index()))
        })
        .collect()
}

/// Whether `part` can become a generated kernel, at any shapes: it reads
/// float tensors from outside, broadcasts only outside values, and stores f32
/// values per element or per row.
pub fn lowerable(g: &Graph, part: &Part) -> Result<(), String> {
    let members: HashSet<NodeId> = part.nodes.iter().copied().collect();
    let root = *part.nodes.last().ok_or("an empty kernel")?;
    if !part.elementwise || !part.outputs.contains(&ValueRef::first(root)) {
        return Err("not a fused kernel".into());
    }
    if part.outputs.iter().any(|v| v.output != 0 || g.node(v.node).outputs.len() != 1) {
        return Err("a multi-output op in a fused kernel".into());
    }
    output_layouts(g, part)?;
    for &n in &part.nodes {
        let node = g.node(n);
        let reduction = matches!(node.op, Op::Reduce { .. });
        if !is_elementwise(&node.op) && !matches!(node.op, Op::Broadcast { .. }) && !reduction {
            return Err(format!("`{}` is not elementwise", node.op.name()));
        }
        for v in g.operands(n) {
            let inside = members.contains(&v.node);
            if !inside && scalar_constant(g, v).is_none() && g.value_type(v).dtype != DType::F32 {
                return Err(format!("reads {} `%{}` (kernels read f32 buffers)", g.value_type(v), v.node.index()));
            }
        }
    }
    Ok(())
}

/// The elementwise kernel description of `part` at concrete `bindings`, and
/// the outside value each of its input buffers reads.
/// External operands become input buffers (read through broadcast strides);
/// scalar constants are inlined.
pub fn to_group(g: &Graph, part: &Part, bindings: &Bindings, name: &str) -> Result<(Group, Vec<ValueRef>), String> {
    lowerable(g, part)?;
    let (full, reduced_axes) = element_type(g, part)?;
    let shape = full.concrete_shape(bindings)?;
    let mut nodes: Vec<Node> = Vec::new();
    let mut inputs: Vec<(String, u64)> = Vec::new();
    let mut at: HashMap<ValueRef, usize> = HashMap::new();
    let mut external: HashMap<(ValueRef, Vec<i64>), usize> = HashMap::new();
    let mut sources: Vec<ValueRef> = Vec::new();
    // A value from outside the kernel, read with `strides`.
    let mut read = |v: ValueRef, nodes: &mut Vec<Node>, inputs: &mut Vec<(String, u64)>| -> Result<usize, String> {
        if let Some(value) = scalar_constant(g, v) {
            nodes.push(Node::Const(value as f32));
            return Ok(nodes.len() - 1);
        }
        let src = g.value_type(v).concrete_shape(bindings)?;
        let strides = broadcast_strides(&src, &shape)?;
        if let Some(&k) = external.get(&(v, strides.clone())) {
            return Ok(k);
        }
        let buf = inputs.len();
        inputs.push((format!("%{}", v.node.index()), src.iter().product::<usize>() as u64));
        sources.push(v);
        nodes.push(Node::Input { buf, strides: strides.clone() });
        external.insert((v, strides), nodes.len() - 1);
        Ok(nodes.len() - 1)
    };
    for &n in &part.nodes {
        let node = g.node(n);
        let ops = g.operands(n);
        let mut arg = |i: usize, nodes: &mut Vec<Node>, inputs: &mut Vec<(String, u64)>| -> Result<usize, String> {
            match at.get(&ops[i]) {
                Some(&k) => Ok(k),
                None => read(ops[i], nodes, inputs),
            }
        };
        let made = match &node.op {
            Op::Broadcast { .. } => {
                // A broadcast member reads its operand through strides of the kernel's shape.
                let src = ops[0];
                match at.get(&src) {
                    // Computed in this kernel at the kernel's shape already.
                    Some(&k) => k,
                    None => read(src, &mut nodes, &mut inputs)?,
                }
            }
            Op::Unary(u) => {
                let x = arg(0, &mut nodes, &mut inputs)?;
                nodes.push(Node::Unary(*u, x));
                nodes.len() - 1
            }
            Op::Binary(b) => {
                let (x, y) = (arg(0, &mut nodes, &mut inputs)?, arg(1, &mut nodes, &mut inputs)?);
                nodes.push(Node::Binary(*b, x, y));
                nodes.len() - 1
            }
            Op::Compare(c) => {
                let (x, y) = (arg(0, &mut nodes, &mut inputs)?, arg(1, &mut nodes, &mut inputs)?);
                nodes.push(Node::Compare(*c, x, y));
                nodes.len() - 1
            }
            Op::Select => {
                let c = arg(0, &mut nodes, &mut inputs)?;
                let (x, y) = (arg(1, &mut nodes, &mut inputs)?, arg(2, &mut nodes, &mut inputs)?);
                nodes.push(Node::Select(c, x, y));
                nodes.len() - 1
            }
            Op::Clamp { min, max } => {
                let x = arg(0, &mut nodes, &mut inputs)?;
                nodes.push(Node::Clamp(x, *min as f32, *max as f32));
                nodes.len() - 1
            }
            Op::Reduce { kind, .. } => {
                let x = arg(0, &mut nodes, &mut inputs)?;
                nodes.push(Node::Reduce(*kind, x));
                nodes.len() - 1
            }
            other => return Err(format!("`{}` is not elementwise", other.name())),
        };
        at.insert(ValueRef::first(n), made);
    }
    let layouts = output_layouts(g, part)?;
    let outputs = part
        .outputs
        .iter()
        .zip(layouts)
        .map(|(v, per_row)| Output { name: format!("%{}", v.node.index()), value: at[v], per_row })
        .collect();
    Ok((Group { name: name.to_string(), shape, reduced_axes, inputs, nodes, outputs }, sources))
}

/// Per-axis element strides reading `src` broadcast (NumPy, right-aligned) to `out`.
fn broadcast_strides(src: &[usize], out: &[usize]) -> Result<Vec<i64>, String> {
    if src.len() > out.len() {
        return Err(format!("cannot broadcast {src:?} to {out:?}"));
    }
    let lead = out.len() - src.len();
    let mut strides = vec![0i64; out.len()];
    let mut step = 1i64;
    for a in (0..src.len()).rev() {
        if src[a] != 1 {
            if src[a] != out[lead + a] {
                return Err(format!("cannot broadcast {src:?} to {out:?}"));
            }
            strides[lead + a] = step;
        }
        step *= src[a] as i64;
    }
    Ok(strides)
}
