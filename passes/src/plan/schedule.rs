//! From a graph to launches: each fused group of the partition that can be
//! generated becomes a kernel launch, every other node a library op (or a
//! view, or a region), in the partition's topological order.

use super::{memory, Launch, Origin, Place, Plan, RoutedRegion, Tensor, TensorId};
use crate::partition::{lowerable, partition, to_group};
use lsc_ir::{Bindings, Dim, Graph, NodeId, Op, Program, ValueRef};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The state of planning one graph.
struct Builder<'a> {
    p: &'a Program,
    g: &'a Graph,
    bindings: Bindings,
    /// The bindings as constant dimensions, to resolve op attributes.
    subst: BTreeMap<String, Dim>,
    number: HashMap<NodeId, usize>,
    tensors: Vec<Tensor>,
    of: HashMap<ValueRef, TensorId>,
    /// `view[t] = Some(u)`: tensor `t` is `u`'s storage seen with another shape (a reshape).
    view: Vec<Option<TensorId>>,
    /// Tensors that depend on constants only.
    fixed: HashSet<TensorId>,
    load: Vec<Launch>,
    launches: Vec<Launch>,
    kernels: usize,
}

/// Plans `p.main` at `bindings`; `top` says whether its inputs are buffers of
/// its own (they may then be updated in place), `layout` gives the places of
/// a plan of the same graph at larger shapes to reuse.
pub(super) fn build(p: &Program, bindings: Bindings, top: bool, layout: Option<&Plan>) -> Result<Plan, String> {
    let g = &p.main;
    let order = g.topo_order().map_err(|_| format!("@{} has a cycle", g.name))?;
    let number = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let subst = bindings.iter().map(|(k, &v)| (k.clone(), Dim::new(v))).collect();
    let mut b = Builder {
        p,
        g,
        bindings,
        subst,
        number,
        tensors: Vec::new(),
        of: HashMap::new(),
        view: Vec::new(),
        fixed: HashSet::new(),
        load: Vec::new(),
        launches: Vec::new(),
        kernels: 0,
    };
    let mut inputs = Vec::new();
    for (i, &n) in g.inputs.iter().enumerate() {
        let t = b.tensor_at(ValueRef::first(n), Place::Input(i))?;
        inputs.push((g.node(n).op.leaf_name().unwrap_or_default().to_string(), t));
    }
    let mut params = Vec::new();
    for (j, (n, name)) in g.params().into_iter().enumerate() {
        params.push((name.to_string(), b.tensor_at(ValueRef::first(n), Place::Param(j))?));
    }
    for part in partition(g)? {
        if part.elementwise && lowerable(g, &part).is_ok() {
            b.kernel(&part)?;
        } else {
            for &n in &part.nodes {
                b.node(n)?;
            }
        }
    }
    let mut outputs = Vec::new();
    for (name, v) in &g.outputs {
        outputs.push((name.clone(), b.tensor(*v)?));
    }
    let mut plan = Plan {
        graph: g.name.clone(),
        bindings: b.bindings,
        tensors: b.tensors,
        arena_bytes: 0,
        unshared_bytes: 0,
        load: b.load,
        launches: b.launches,
        inputs,
        params,
        outputs,
    };
    memory::assign(&mut plan, &b.view, top, layout)?;
    Ok(plan)
}

/// The symbols of `g`'s input types bound from concrete `shapes` (in input order).
pub fn bind_inputs(g: &Graph, shapes: &[Vec<usize>]) -> Result<Bindings, String> {
    if shapes.len() != g.inputs.len() {
        return Err(format!("@{} takes {} inputs, got {}", g.name, g.inputs.len(), shapes.len()));
    }
    let mut bindings = Bindings::new();
    for ((name, ty), shape) in g.input_types().into_iter().zip(shapes) {
        if ty.rank() != shape.len() {
            return Err(format!("@{}: input `{name}` should be {ty}, got shape {shape:?}", g.name));
        }
        for (d, &s) in ty.shape.iter().zip(shape) {
            if let Some(sym) = d.as_symbol() {
                if bindings.insert(sym.to_string(), s as i64).is_some_and(|prev| prev != s as i64) {
                    return Err(format!("@{}: input `{name}` binds {sym} = {s} against another input", g.name));
                }
            }
        }
    }
    for ((name, ty), shape) in g.input_types().into_iter().zip(shapes) {
        if ty.concrete_shape(&bindings)? != *shape {
            return Err(format!("@{}: input `{name}` should be {ty}, got shape {shape:?}", g.name));
        }
    }
    Ok(bindings)
}

impl Builder<'_> {
    fn origin(&self, n: NodeId) -> Origin {
        Origin { graph: self.g.name.clone(), node: self.number[&n], op: self.g.node(n).op.name() }
    }

    /// A new tensor for value `v` at `place`.
    fn tensor_at(&mut self, v: ValueRef, place: Place) -> Result<TensorId, String> {
        let ty = self.g.value_type(v);
        let shape = ty
            .concrete_shape(&self.bindings)
            .map_err(|e| format!("@{} %{}: {e}", self.g.name, self.number[&v.node]))?;
        let num = self.number[&v.node];
        let name =
            if self.g.node(v.node).outputs.len() == 1 { format!("%{num}") } else { format!("%{num}.{}", v.output) };
        let storage = self.tensors.len();
        self.tensors.push(Tensor { name, dtype: ty.dtype, shape, place, storage });
        self.view.push(None);
        self.of.insert(v, self.tensors.len() - 1);
        Ok(self.tensors.len() - 1)
    }

    /// The tensor of `v` (an arena tensor until memory is assigned). A
    /// constant or iota leaf is filled at load when a launch first reads it.
    fn tensor(&mut self, v: ValueRef) -> Result<TensorId, String> {
        if let Some(&t) = self.of.get(&v) {
            return Ok(t);
        }
        let t = self.tensor_at(v, Place::Arena(0))?;
        let op = &self.g.node(v.node).op;
        if matches!(op, Op::Constant { .. } | Op::Iota { .. }) {
            let (op, origin) = (op.clone(), self.origin(v.node));
            self.push(Launch::Op { op, inputs: Vec::new(), outputs: vec![t], origin });
        }
        Ok(t)
    }

    fn tensors_of(&mut self, vs: &[ValueRef]) -> Result<Vec<TensorId>, String> {
        vs.iter().map(|&v| self.tensor(v)).collect()
    }

    /// Adds `launch`, to the load-time list when everything it reads depends on constants only.
    fn push(&mut self, launch: Launch) {
        let fixed = launch.reads().iter().all(|t| self.fixed.contains(t))
            && matches!(launch, Launch::Kernel { .. } | Launch::Op { .. });
        if fixed {
            self.fixed.extend(launch.writes());
            self.load.push(launch);
        } else {
            self.launches.push(launch);
        }
    }

    /// A fused group as one generated kernel.
    fn kernel(&mut self, part: &crate::partition::Part) -> Result<(), String> {
        let name = format!("{}_k{}", self.g.name, self.kernels);
        self.kernels += 1;
        let (group, sources) = to_group(self.g, part, &self.bindings, &name)?;
        let inputs = self.tensors_of(&sources)?;
        let outputs = self.tensors_of(&part.outputs)?;
        let last = *part.nodes.last().ok_or("an empty kernel")?;
        let origin = self.origin(last);
        self.push(Launch::Kernel { group, inputs, outputs, origin });
        Ok(())
    }

    /// One node as a library op, a view or a region.
    fn node(&mut self, n: NodeId) -> Result<(), String> {
        let node = self.g.node(n);
        let operands = self.g.operands(n);
        let results: Vec<ValueRef> =
            (0..node.outputs.len() as u32).map(|output| ValueRef { node: n, output }).collect();
        match &node.op {
            Op::Input { .. } | Op::Param { .. } => Ok(()),
            Op::Reshape { .. } | Op::StopGradient => {
                let source = self.tensor(operands[0])?;
                let t = self.tensor(results[0])?;
                self.view[t] = Some(source);
                if self.fixed.contains(&source) {
                    self.fixed.insert(t);
                }
                Ok(())
            }
            Op::Call { callee } => Err(format!("@{}: the call of @{callee} should have been inlined", self.g.name)),
            Op::Loop { body, trips } => self.loop_region(n, body, *trips),
            Op::RoutedCall { callee, routed } => self.routed_region(n, callee, *routed),
            op => {
                let op = op.substitute_dims(&self.subst);
                let inputs = self.tensors_of(&operands)?;
                let outputs = self.tensors_of(&results)?;
                let origin = self.origin(n);
                self.push(Launch::Op { op, inputs, outputs, origin });
                Ok(())
            }
        }
    }

    /// A function of the program as the main graph of a program of its own, ready to plan.
    fn function(&self, name: &str) -> Result<Program, String> {
        let f = self.p.function(name).ok_or_else(|| format!("@{} calls unknown @{name}", self.g.name))?;
        let sub = Program { main: f.clone(), functions: self.p.functions.clone(), symbols: Vec::new() };
        super::prepared(&sub)
    }

    fn shapes(&self, ts: &[TensorId]) -> Vec<Vec<usize>> {
        ts.iter().map(|&t| self.tensors[t].shape.clone()).collect()
    }

    fn loop_region(&mut self, n: NodeId, body: &str, trips: u64) -> Result<(), String> {
        let program = self.function(body)?;
        let operands = self.tensors_of(&self.g.operands(n))?;
        let carried_count = program.main.outputs.len();
        let mut shapes = vec![Vec::new()];
        shapes.extend(self.shapes(&operands));
        let body_plan = build(&program, bind_inputs(&program.main, &shapes)?, false, None)?;
        let results: Vec<ValueRef> = (0..carried_count as u32).map(|output| ValueRef { node: n, output }).collect();
        let outputs = self.tensors_of(&results)?;
        let (carried, invariant) = operands.split_at(carried_count.min(operands.len()));
        let origin = self.origin(n);
        self.push(Launch::Loop {
            body: Box::new(body_plan),
            trips,
            carried: carried.to_vec(),
            invariant: invariant.to_vec(),
            outputs,
            origin,
        });
        Ok(())
    }

    fn routed_region(&mut self, n: NodeId, callee: &str, routed: usize) -> Result<(), String> {
        let program = self.function(callee)?;
        let operands = self.tensors_of(&self.g.operands(n))?;
        let (mask, args) = operands.split_first().ok_or("routed_call needs a mask")?;
        let shapes = self.shapes(args);
        let bound = build(&program, bind_inputs(&program.main, &shapes)?, false, None)?;
        let results: Vec<ValueRef> =
            (0..self.g.node(n).outputs.len() as u32).map(|output| ValueRef { node: n, output }).collect();
        let outputs = self.tensors_of(&results)?;
        let origin = self.origin(n);
        let region = Box::new(RoutedRegion { program, routed, bound });
        self.push(Launch::Routed { region, mask: *mask, args: args.to_vec(), outputs, origin });
        Ok(())
    }
}
