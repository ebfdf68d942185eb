//! Reverse-mode autodiff as a graph transformation: the gradient nodes are
//! added to the same graph as the forward pass, so later passes see (and can
//! fuse) the whole training step. Gradients come from an open table of VJP
//! rules keyed by op name ([`VjpTable`]); fused ops register their own.
//! `call` and `loop` are differentiated as structured ops: a `call` of `f`
//! becomes a `call` of a generated `f__vjp` (which recomputes `f` and runs its
//! backward), and a `loop` becomes a history-recording loop plus a reverse loop
//! that accumulates the gradients of its loop-invariant (shared) values.

mod emit;
mod fused;
mod rules;
mod structured;

pub(crate) use emit::R;
pub(crate) use fused::by_decomposition;
pub(crate) use rules::no_gradient;

pub use emit::Emit;

use lsc_ir::{Graph, NodeId, Op, Program, ValueRef};
use std::collections::HashMap;

/// What a VJP rule sees of one node.
pub struct NodeGrad {
    /// The node's op.
    pub op: Op,
    /// Its operands.
    pub operands: Vec<ValueRef>,
    /// Its outputs.
    pub outputs: Vec<ValueRef>,
    /// The gradient of each output, if any reaches it.
    pub grads: Vec<Option<ValueRef>>,
}

/// A VJP rule: gradients of the operands (`None` for none) from those of the outputs.
pub type VjpRule = fn(&mut Emit, &NodeGrad) -> Result<Vec<Option<ValueRef>>, String>;

/// The VJP rules, keyed by op name (`Op::name`).
pub struct VjpTable {
    rules: HashMap<&'static str, VjpRule>,
}

impl VjpTable {
    /// Rules for every primitive op and for `call`/`loop`.
    pub fn standard() -> VjpTable {
        use lsc_ir::{BinaryOp, CmpOp, UnaryOp};
        let mut t = VjpTable { rules: HashMap::new() };
        for u in UnaryOp::ALL {
            t.register(u.name(), rules::unary);
        }
        for b in BinaryOp::ALL {
            t.register(b.name(), rules::binary);
        }
        for c in CmpOp::ALL {
            t.register(c.name(), rules::no_gradient);
        }
        let table: [(&'static str, VjpRule); 24] = [
            ("clamp", rules::clamp),
            ("select", rules::select),
            ("stop_gradient", rules::no_gradient),
            ("cast", rules::cast),
            ("reduce", rules::reduce),
            ("argmax", rules::no_gradient),
            ("softmax", rules::softmax),
            ("log_softmax", rules::softmax),
            ("matmul", rules::matmul),
            ("gather", rules::gather),
            ("scatter", rules::scatter),
            ("scatter_add", rules::scatter),
            ("embedding", rules::embedding),
            ("reshape", rules::reshape),
            ("transpose", rules::transpose),
            ("slice", rules::slice),
            ("concat", rules::concat),
            ("broadcast", rules::broadcast),
            ("rotary", rules::rotary),
            ("topk", rules::topk),
            ("cross_entropy", rules::cross_entropy),
            ("cache_update", rules::cache_update),
            ("call", structured::call),
            ("loop", structured::lp),
        ];
        for (name, rule) in table {
            t.register(name, rule);
        }
        // The fused ops' rules live with the ops (`crate::fused`).
        for f in &crate::fused::ALL {
            for &(name, rule) in f.vjps {
                t.register(name, rule);
            }
        }
        t
    }

    /// Adds or replaces the rule of op `name` (fused ops plug in here).
    pub fn register(&mut self, name: &'static str, rule: VjpRule) {
        self.rules.insert(name, rule);
    }

    /// The rule of op `name`.
    pub fn get(&self, name: &str) -> Option<VjpRule> {
        self.rules.get(name).copied()
    }
}

/// Propagates `seeds` (value, its gradient) backwards through the nodes of
/// `e.g` that existed before; returns the gradient of every value reached.
pub fn backpropagate(e: &mut Emit, seeds: &[(ValueRef, ValueRef)]) -> Result<HashMap<ValueRef, ValueRef>, String> {
    let order: Vec<NodeId> = e.g.topo_order().map_err(|n| format!("graph has a cycle at node {}", n.index()))?;
    let mut adj: HashMap<ValueRef, ValueRef> = HashMap::new();
    for &(v, g) in seeds {
        accumulate(e, &mut adj, v, g)?;
    }
    for &n in order.iter().rev() {
        let node = e.g.node(n).clone();
        let outputs: Vec<ValueRef> =
            (0..node.outputs.len() as u32).map(|output| ValueRef { node: n, output }).collect();
        let grads: Vec<Option<ValueRef>> = outputs.iter().map(|o| adj.get(o).copied()).collect();
        if node.op.is_leaf() || grads.iter().all(Option::is_none) {
            continue;
        }
        let rule = e.table.get(node.op.name()).ok_or_else(|| format!("no VJP rule for `{}`", node.op.name()))?;
        let ng = NodeGrad { op: node.op.clone(), operands: e.g.operands(n), outputs, grads };
        let operand_grads = rule(e, &ng)?;
        for (x, g) in ng.operands.iter().zip(operand_grads) {
            if let Some(g) = g {
                accumulate(e, &mut adj, *x, g)?;
            }
        }
    }
    Ok(adj)
}

fn accumulate(e: &mut Emit, adj: &mut HashMap<ValueRef, ValueRef>, v: ValueRef, g: ValueRef) -> Result<(), String> {
    if !e.ty(v).dtype.is_float() {
        return Ok(());
    }
    let (want, have) = (e.ty(v), e.ty(g));
    if want != have {
        return Err(format!("gradient of type {have} for a value of type {want}"));
    }
    let sum = match adj.get(&v) {
        Some(&prev) => e.add(prev, g)?,
        None => g,
    };
    adj.insert(v, sum);
    Ok(())
}

/// Adds to `program`'s main graph the gradient of the scalar output `loss`
/// with respect to every parameter, as outputs `grad.{name}`.
pub fn add_parameter_gradients(
    program: &mut Program,
    loss: &str,
    table: &VjpTable,
) -> Result<Vec<(String, ValueRef)>, String> {
    let main = &mut program.main;
    let loss_v =
        main.outputs.iter().find(|(n, _)| n == loss).map(|(_, v)| *v).ok_or_else(|| format!("no output `{loss}`"))?;
    let lt = main.value_type(loss_v).clone();
    if !lt.shape.is_empty() || !lt.dtype.is_float() {
        return Err(format!("the loss must be a float scalar, got {lt}"));
    }
    let params: Vec<(String, NodeId)> = main.params().into_iter().map(|(n, name)| (name.to_string(), n)).collect();
    let mut e = Emit { g: main, functions: &mut program.functions, table };
    let one = e.full(1.0, &lt)?;
    let adj = backpropagate(&mut e, &[(loss_v, one)])?;
    let mut grads = Vec::new();
    for (name, n) in params {
        let v = ValueRef::first(n);
        let g = match adj.get(&v) {
            Some(&g) => g,
            None => e.zeros_like(v)?,
        };
        grads.push((name, g));
    }
    Ok(grads)
}

/// Copies `src`'s nodes into `dst` with `src`'s inputs bound to `args`;
/// returns where each of `src`'s values went (used to inline a function so
/// its backward can recompute it).
pub(crate) fn copy_into(
    src: &Graph,
    dst: &mut Graph,
    args: &[ValueRef],
) -> Result<HashMap<ValueRef, ValueRef>, String> {
    let order = src.topo_order().map_err(|_| format!("@{} has a cycle", src.name))?;
    let input_pos: HashMap<NodeId, usize> = src.inputs.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut map: HashMap<ValueRef, ValueRef> = HashMap::new();
    for n in order {
        if let Some(&i) = input_pos.get(&n) {
            map.insert(ValueRef::first(n), args[i]);
            continue;
        }
        let node = src.node(n).clone();
        let operands: Vec<ValueRef> = src.operands(n).iter().map(|v| map[v]).collect();
        let outputs = node.outputs.len();
        let id = dst.add_node(node.op, &operands, node.outputs);
        for o in 0..outputs as u32 {
            map.insert(ValueRef { node: n, output: o }, ValueRef { node: id, output: o });
        }
    }
    Ok(map)
}
