//! The executor: binds shape symbols, walks each graph in topological order,
//! runs `Loop` and `Call` by recursion, and frees values after their last use.

use crate::kernels;
use crate::math::Real;
use crate::routing::ActiveRows;
use crate::value::{Buffer, Value};
use lsc_ir::{verify, Bindings, DType, DerivedSymbol, Graph, NodeId, Op, Program, TensorType, ValueRef, VerifyError};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A failure while executing, located at a graph and node (`%N` as printed).
#[derive(Clone, Debug, PartialEq)]
pub struct InterpError {
    /// Graph name.
    pub graph: String,
    /// Printed node number and op name, when the failure is at a node.
    pub node: Option<(usize, String)>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.graph)?;
        if let Some((n, op)) = &self.node {
            write!(f, " %{n} ({op})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for InterpError {}

/// Named tensors (inputs, parameters, outputs).
pub type Tensors<T> = BTreeMap<String, Value<T>>;

/// A verified program ready to run.
pub struct Interpreter<'p> {
    program: &'p Program,
    orders: HashMap<String, Vec<NodeId>>,
    profile: Option<std::cell::RefCell<BTreeMap<&'static str, (usize, f64)>>>,
    /// The most bytes one node's outputs may take (see [`Interpreter::with_memory_limit`]).
    memory_limit: Option<u64>,
}

impl<'p> Interpreter<'p> {
    /// Verifies `program` once; every later run trusts its types.
    pub fn new(program: &'p Program) -> Result<Interpreter<'p>, VerifyError> {
        verify(program)?;
        let orders = program.graphs().map(|g| (g.name.clone(), g.topo_order().unwrap_or_default())).collect();
        Ok(Interpreter { program, orders, profile: None, memory_limit: None })
    }

    /// Refuses, with an error naming the node, any node whose outputs would
    /// take more than `bytes`, before allocating them: an allocation that
    /// fails aborts the process, an error does not.
    pub fn with_memory_limit(mut self, bytes: u64) -> Interpreter<'p> {
        self.memory_limit = Some(bytes);
        self
    }

    /// Records the time spent in each op kind (see [`Interpreter::profile`]).
    pub fn with_profiling(mut self) -> Self {
        self.profile = Some(Default::default());
        self
    }

    /// `(op, calls, seconds)` of the runs so far, slowest first.
    pub fn profile(&self) -> Vec<(&'static str, usize, f64)> {
        let mut v: Vec<_> = self
            .profile
            .as_ref()
            .map(|p| p.borrow().iter().map(|(k, (n, t))| (*k, *n, *t)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// Runs `main` on named inputs and parameters; returns the named outputs in order.
    pub fn run<T: Real>(
        &self,
        inputs: &Tensors<T>,
        params: &Tensors<T>,
    ) -> Result<Vec<(String, Value<T>)>, InterpError> {
        self.run_main(|name| inputs.get(name).map(Cow::Borrowed), params)
    }

    /// Like [`Interpreter::run`], but takes the inputs by value, so that a
    /// cache the program only updates (`cache_update`, as in incremental
    /// decoding) is written in place instead of copied. The inputs are
    /// consumed even when the run fails.
    pub fn run_owned<T: Real>(
        &self,
        mut inputs: Tensors<T>,
        params: &Tensors<T>,
    ) -> Result<Vec<(String, Value<T>)>, InterpError> {
        self.run_main(|name| inputs.remove(name).map(Cow::Owned), params)
    }

    /// Runs `main` with each input taken from `input` by name.
    fn run_main<'v, T: Real>(
        &self,
        mut input: impl FnMut(&str) -> Option<Cow<'v, Value<T>>>,
        params: &'v Tensors<T>,
    ) -> Result<Vec<(String, Value<T>)>, InterpError> {
        let main = &self.program.main;
        let mut args = Vec::with_capacity(main.inputs.len());
        for (name, ty) in main.input_types() {
            let v = input(name).ok_or_else(|| InterpError {
                graph: "main".into(),
                node: None,
                message: format!("missing input `{name}` ({ty})"),
            })?;
            args.push(v);
        }
        let outs = self.run_graph(main, args, params, &self.program.symbols)?;
        Ok(main.outputs.iter().map(|(n, _)| n.clone()).zip(outs).collect())
    }

    /// Runs graph `g`. Arguments and parameters are borrowed, never copied: a
    /// value is only owned once an op computes it.
    fn run_graph<'v, T: Real>(
        &self,
        g: &Graph,
        args: Vec<Cow<'v, Value<T>>>,
        params: &'v Tensors<T>,
        derived: &[DerivedSymbol],
    ) -> Result<Vec<Value<T>>, InterpError> {
        let order = &self.orders[&g.name];
        let number: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let err_at = |n: NodeId, message: String| InterpError {
            graph: g.name.clone(),
            node: Some((number[&n], g.node(n).op.name().to_string())),
            message,
        };
        let top_err = |message: String| InterpError { graph: g.name.clone(), node: None, message };

        if args.len() != g.inputs.len() {
            return Err(top_err(format!("expects {} inputs, got {}", g.inputs.len(), args.len())));
        }
        let mut bindings = Bindings::new();
        let mut bound: Vec<(&str, &TensorType, &[usize], DType)> = Vec::new();
        for (&n, a) in g.inputs.iter().zip(&args) {
            let name = g.node(n).op.leaf_name().unwrap_or("");
            bound.push((name, &g.node(n).outputs[0], &a.shape, a.dtype));
        }
        for (n, name) in g.params() {
            let v = params.get(name).ok_or_else(|| err_at(n, format!("missing parameter `{name}`")))?;
            bound.push((name, &g.node(n).outputs[0], &v.shape, v.dtype));
        }
        bind_symbols(&bound, &mut bindings).map_err(top_err)?;
        DerivedSymbol::bind_all(derived, &mut bindings).map_err(top_err)?;

        let mut uses = vec![0usize; g.dag.node_count()];
        for &n in order {
            for v in g.operands(n) {
                uses[v.node.index()] += 1;
            }
        }
        for (_, v) in &g.outputs {
            uses[v.node.index()] += 1;
        }
        let mut values: Vec<Option<Vec<Cow<'_, Value<T>>>>> = vec![None; g.dag.node_count()];
        let mut args = args.into_iter().map(Some).collect::<Vec<_>>();
        let input_pos: HashMap<NodeId, usize> = g.inputs.iter().enumerate().map(|(i, &n)| (n, i)).collect();

        for &n in order {
            let node = g.node(n);
            let out_types: Vec<(DType, Vec<usize>)> = node
                .outputs
                .iter()
                .map(|t| t.concrete_shape(&bindings).map(|s| (t.dtype, s)))
                .collect::<Result<_, _>>()
                .map_err(|m| err_at(n, m))?;
            if let Some(limit) = self.memory_limit {
                let elements: u64 = out_types.iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
                let bytes = elements.saturating_mul(std::mem::size_of::<T>() as u64);
                if bytes > limit {
                    return Err(err_at(n, format!("its result needs {bytes} bytes but {limit} are available")));
                }
            }
            let operands = g.operands(n);
            if let Op::Param { name } = &node.op {
                values[n.index()] = Some(vec![Cow::Borrowed(&params[name])]);
                continue;
            }
            if let Op::Input { .. } = &node.op {
                let arg = args[input_pos[&n]].take().ok_or_else(|| err_at(n, "input consumed twice".into()))?;
                values[n.index()] = Some(vec![arg]);
                continue;
            }
            // A cache read by nothing else after this update, and owned by this
            // run (`run_owned`), is updated in place rather than copied.
            if let Op::CacheUpdate { axis } = &node.op {
                let at = operands[0].node.index();
                let last_owned_use = uses[at] == 1 && matches!(values[at].as_deref(), Some([Cow::Owned(_)]));
                let taken = if last_owned_use { values[at].take().and_then(|mut v| v.pop()) } else { None };
                if let Some(Cow::Owned(mut cache)) = taken {
                    let arg = |v: ValueRef| {
                        &values[v.node.index()].as_ref().expect("operands are computed first")[v.output as usize]
                    };
                    kernels::cache_update_in_place(
                        &mut cache.view_mut(),
                        &arg(operands[1]).view(),
                        &arg(operands[2]).view(),
                        *axis,
                    )
                    .map_err(|m| err_at(n, m))?;
                    values[n.index()] = Some(vec![Cow::Owned(cache)]);
                    release(&operands, &mut uses, &mut values);
                    continue;
                }
            }
            let result = {
                let arg_vals: Vec<&Value<T>> = operands
                    .iter()
                    .map(|v| &*values[v.node.index()].as_ref().expect("operands are computed first")[v.output as usize])
                    .collect();
                match &node.op {
                    Op::Call { callee } => {
                        let f = self
                            .program
                            .function(callee)
                            .ok_or_else(|| err_at(n, format!("unknown function @{callee}")))?;
                        let borrowed = arg_vals.iter().map(|&v| Cow::Borrowed(v)).collect();
                        self.run_graph(f, borrowed, params, &[])?
                    }
                    Op::RoutedCall { callee, routed } => {
                        let f = self
                            .program
                            .function(callee)
                            .ok_or_else(|| err_at(n, format!("unknown function @{callee}")))?;
                        let rows = ActiveRows::new(&arg_vals[0].view()).map_err(|m| err_at(n, m))?;
                        if rows.packed == 0 {
                            out_types.iter().map(|(dt, shape)| Value::zeros(*dt, shape.clone())).collect()
                        } else {
                            let mut packed = Vec::with_capacity(arg_vals.len() - 1);
                            for (i, &v) in arg_vals[1..].iter().enumerate() {
                                packed.push(if i < *routed {
                                    Cow::Owned(rows.pack(v).map_err(|m| err_at(n, m))?)
                                } else {
                                    Cow::Borrowed(v)
                                });
                            }
                            let outs = self.run_graph(f, packed, params, &[])?;
                            outs.iter().map(|o| rows.unpack(o)).collect::<Result<_, _>>().map_err(|m| err_at(n, m))?
                        }
                    }
                    Op::Loop { body, trips } => {
                        let f = self
                            .program
                            .function(body)
                            .ok_or_else(|| err_at(n, format!("unknown function @{body}")))?;
                        let n_carried = f.outputs.len();
                        let mut carried: Vec<Value<T>> = arg_vals[..n_carried].iter().map(|v| (*v).clone()).collect();
                        for it in 0..*trips {
                            let mut a = vec![Cow::Owned(Value::ints(vec![], vec![it as i64]))];
                            a.extend(carried.into_iter().map(Cow::Owned));
                            a.extend(arg_vals[n_carried..].iter().map(|&v| Cow::Borrowed(v)));
                            carried = self.run_graph(f, a, params, &[])?;
                        }
                        carried
                    }
                    op => {
                        let start = self.profile.as_ref().map(|_| std::time::Instant::now());
                        let r = run_kernel(op, &arg_vals, &out_types, &bindings).map_err(|m| err_at(n, m))?;
                        if let (Some(p), Some(t)) = (&self.profile, start) {
                            let e = p.borrow_mut().entry(op.name()).or_insert((0, 0.0)).to_owned();
                            p.borrow_mut().insert(op.name(), (e.0 + 1, e.1 + t.elapsed().as_secs_f64()));
                        }
                        r
                    }
                }
            };
            for (v, (dt, shape)) in result.iter().zip(&out_types) {
                if &v.shape != shape {
                    return Err(err_at(
                        n,
                        format!("produced shape {:?} but its type says {:?} ({dt})", v.shape, shape),
                    ));
                }
            }
            values[n.index()] = Some(result.into_iter().map(Cow::Owned).collect());
            release(&operands, &mut uses, &mut values);
        }
        // The last output reading a value takes it (no copy of an owned value);
        // a value returned under several names is copied for the others.
        let mut readers: HashMap<ValueRef, usize> = HashMap::new();
        for (_, v) in &g.outputs {
            *readers.entry(*v).or_insert(0) += 1;
        }
        Ok(g.outputs
            .iter()
            .map(|(_, v)| {
                let left = readers.get_mut(v).expect("counted above");
                *left -= 1;
                let slot = &mut values[v.node.index()].as_mut().expect("outputs are computed")[v.output as usize];
                if *left == 0 {
                    let empty = Value { dtype: slot.dtype, shape: Vec::new(), data: Buffer::Float(Vec::new()) };
                    std::mem::replace(slot, Cow::Owned(empty)).into_owned()
                } else {
                    slot.clone().into_owned()
                }
            })
            .collect())
    }
}

/// Counts one use of each operand, freeing a value after its last use.
fn release<V>(operands: &[ValueRef], uses: &mut [usize], values: &mut [Option<V>]) {
    for v in operands {
        let u = &mut uses[v.node.index()];
        *u -= 1;
        if *u == 0 {
            values[v.node.index()] = None;
        }
    }
}

/// Binds shape symbols from actual shapes, then checks every declared dim.
fn bind_symbols(bound: &[(&str, &TensorType, &[usize], DType)], bindings: &mut Bindings) -> Result<(), String> {
    for (name, ty, shape, dtype) in bound {
        let kinds_match =
            ty.dtype == *dtype || (ty.dtype.is_float() && dtype.is_float()) || (ty.dtype.is_int() && dtype.is_int());
        if !kinds_match {
            return Err(format!("`{name}` should be {ty} but has dtype {dtype}"));
        }
        if ty.rank() != shape.len() {
            return Err(format!("`{name}` should be {ty} but has shape {shape:?}"));
        }
        for (d, &s) in ty.shape.iter().zip(shape.iter()) {
            if let Some(sym) = d.as_symbol() {
                let prev = bindings.insert(sym.to_string(), s as i64);
                if prev.is_some_and(|p| p != s as i64) {
                    return Err(format!(
                        "`{name}` has {sym} = {s}, but {sym} = {} elsewhere",
                        prev.unwrap_or_default()
                    ));
                }
            }
        }
    }
    for (name, ty, shape, _) in bound {
        let want = ty.concrete_shape(bindings)?;
        if want != *shape {
            return Err(format!("`{name}` should be {ty} = {want:?} but has shape {shape:?}"));
        }
    }
    Ok(())
}

/// Allocates `op`'s outputs and computes them.
fn run_kernel<T: Real>(
    op: &Op,
    args: &[&Value<T>],
    out_types: &[(DType, Vec<usize>)],
    bindings: &Bindings,
) -> Result<Vec<Value<T>>, String> {
    let views: Vec<_> = args.iter().map(|a| a.view()).collect();
    let mut outs: Vec<Value<T>> = out_types.iter().map(|(dt, shape)| Value::zeros(*dt, shape.clone())).collect();
    let mut out_views: Vec<_> = outs.iter_mut().map(Value::view_mut).collect();
    kernels::eval_into(op, &views, &mut out_views, bindings)?;
    Ok(outs)
}
