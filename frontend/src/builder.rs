//! The graph builder: owns the program under construction and records the
//! first error (with its call site) instead of panicking.

use crate::error::DslError;
use crate::tensor::Tensor;
use lsc_ir::{verify, DType, DerivedSymbol, Dim, Graph, Op, Program, TensorType, ValueRef};
use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::Location;
use std::rc::Rc;

pub(crate) struct Inner {
    /// Graph 0 is `main`; the others are functions.
    pub graphs: Vec<Graph>,
    pub error: Option<DslError>,
    pub symbols: Vec<DerivedSymbol>,
    /// Per function graph: the parameters it uses, lifted to trailing arguments.
    pub lifted: HashMap<usize, Vec<String>>,
}

impl Inner {
    pub fn fail(&mut self, location: &'static Location<'static>, message: String) {
        if self.error.is_none() {
            self.error = Some(DslError { location, message });
        }
    }
}

/// Builds one program. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct ModelBuilder {
    pub(crate) inner: Rc<RefCell<Inner>>,
    /// Which graph this handle adds leaves to.
    pub(crate) graph: usize,
}

impl Default for ModelBuilder {
    fn default() -> Self {
        ModelBuilder::new()
    }
}

impl ModelBuilder {
    /// A builder for a new program whose entry graph is `main`.
    pub fn new() -> ModelBuilder {
        let inner =
            Inner { graphs: vec![Graph::new("main")], error: None, symbols: Vec::new(), lifted: HashMap::new() };
        ModelBuilder { inner: Rc::new(RefCell::new(inner)), graph: 0 }
    }

    pub(crate) fn tensor(&self, graph: usize, v: Option<ValueRef>) -> Tensor {
        Tensor { b: self.inner.clone(), graph, v }
    }

    #[track_caller]
    fn leaf(&self, op: Op, ty: TensorType) -> Tensor {
        let mut inner = self.inner.borrow_mut();
        if inner.error.is_some() {
            return self.tensor(self.graph, None);
        }
        let name = op.leaf_name().map(str::to_string);
        let g = &mut inner.graphs[self.graph];
        let clash = name.as_ref().is_some_and(|n| {
            g.dag
                .node_weights()
                .any(|w| w.op.leaf_name() == Some(n) && std::mem::discriminant(&w.op) == std::mem::discriminant(&op))
        });
        if clash {
            let n = name.unwrap_or_default();
            inner
                .fail(Location::caller(), format!("`{n}` is declared twice; parameter and input names must be unique"));
            return self.tensor(self.graph, None);
        }
        let id = g.add_node(op, &[], vec![ty]);
        self.tensor(self.graph, Some(ValueRef::first(id)))
    }

    /// The value of parameter `name` in graph `graph`: in `main` the `param`
    /// node (declared on first use), in a function a trailing argument that
    /// every call site fills with the caller's value of the same parameter.
    fn param_in(&self, graph: usize, name: &str, ty: &TensorType) -> Result<ValueRef, String> {
        let mut inner = self.inner.borrow_mut();
        let g = &inner.graphs[graph];
        let existing = g.dag.node_indices().find(|&n| match &g.dag[n].op {
            Op::Param { name: p } => p == name,
            Op::Input { name: p } => graph != 0 && p == name,
            _ => false,
        });
        if let Some(n) = existing {
            let have = &g.dag[n].outputs[0];
            if have != ty {
                return Err(format!("parameter `{name}` is used as {ty} here but declared as {have}"));
            }
            return Ok(ValueRef::first(n));
        }
        let op = if graph == 0 { Op::Param { name: name.into() } } else { Op::Input { name: name.into() } };
        let id = inner.graphs[graph].add_node(op, &[], vec![ty.clone()]);
        if graph != 0 {
            inner.lifted.entry(graph).or_default().push(name.to_string());
        }
        Ok(ValueRef::first(id))
    }

    /// Declares a named input such as `input_ids: i64[B,T]`.
    #[track_caller]
    pub fn input(&self, name: &str, dtype: DType, shape: &[Dim]) -> Tensor {
        self.leaf(Op::Input { name: name.into() }, TensorType::new(dtype, shape.iter().cloned()))
    }

    /// Declares a named parameter (PyTorch-style dotted name). Inside a
    /// function body the parameter becomes a trailing argument of the function
    /// (parameters live in `main`); each call passes it, so a block written once
    /// and called R times shares its weights explicitly.
    #[track_caller]
    pub fn param(&self, name: &str, dtype: DType, shape: &[Dim]) -> Tensor {
        let ty = TensorType::new(dtype, shape.iter().cloned());
        if self.graph == 0 {
            return self.leaf(Op::Param { name: name.into() }, ty);
        }
        if self.inner.borrow().error.is_some() {
            return self.tensor(self.graph, None);
        }
        match self.param_in(self.graph, name, &ty) {
            Ok(v) => self.tensor(self.graph, Some(v)),
            Err(m) => {
                self.fail(m);
                self.tensor(self.graph, None)
            }
        }
    }

    /// Defines `name = max(min, round(fraction · of))`, a shape symbol computed
    /// when the program runs (expert-choice capacities), and returns it as a dim.
    #[track_caller]
    pub fn derived_symbol(&self, name: &str, of: Dim, fraction: f64, min: i64) -> Dim {
        let mut inner = self.inner.borrow_mut();
        if inner.symbols.iter().any(|s| s.name == name) {
            inner.fail(Location::caller(), format!("symbol `{name}` is defined twice"));
        } else {
            inner.symbols.push(DerivedSymbol { name: name.into(), of, fraction, min });
        }
        Dim::sym(name)
    }

    /// A tensor of `shape` filled with `value`.
    #[track_caller]
    pub fn constant(&self, value: f64, dtype: DType, shape: &[Dim]) -> Tensor {
        self.leaf(Op::Constant { value }, TensorType::new(dtype, shape.iter().cloned()))
    }

    /// The index along `axis` at every position of `shape`.
    #[track_caller]
    pub fn iota(&self, dtype: DType, shape: &[Dim], axis: usize) -> Tensor {
        self.leaf(Op::Iota { axis }, TensorType::new(dtype, shape.iter().cloned()))
    }

    /// Marks `t` as a named output of the graph this handle builds.
    #[track_caller]
    pub fn output(&self, name: &str, t: &Tensor) {
        let mut inner = self.inner.borrow_mut();
        if inner.error.is_some() {
            return;
        }
        match t.v {
            Some(v) if t.graph == self.graph => inner.graphs[self.graph].outputs.push((name.to_string(), v)),
            Some(_) => inner.fail(Location::caller(), format!("output `{name}` is a value of another graph")),
            None => {}
        }
    }

    /// Defines function `name` with the given argument names and types; `body`
    /// receives the arguments and returns the named results. Used with
    /// [`Tensor::call`] and [`ModelBuilder::repeat`] for explicit weight sharing.
    #[track_caller]
    pub fn function(
        &self,
        name: &str,
        args: &[(&str, TensorType)],
        body: impl FnOnce(&ModelBuilder, &[Tensor]) -> Vec<(String, Tensor)>,
    ) {
        let index = {
            let mut inner = self.inner.borrow_mut();
            if inner.graphs.iter().any(|g| g.name == name) || name == "main" {
                inner.fail(Location::caller(), format!("function @{name} is defined twice"));
                return;
            }
            inner.graphs.push(Graph::new(name));
            inner.graphs.len() - 1
        };
        let fb = ModelBuilder { inner: self.inner.clone(), graph: index };
        let formals: Vec<Tensor> =
            args.iter().map(|(n, t)| fb.leaf(Op::Input { name: n.to_string() }, t.clone())).collect();
        for (n, t) in body(&fb, &formals) {
            fb.output(&n, &t);
        }
    }

    /// Calls function `name` on `args` and returns its results.
    #[track_caller]
    pub fn call(&self, name: &str, args: &[&Tensor]) -> Vec<Tensor> {
        self.structured(Op::Call { callee: name.into() }, args)
    }

    /// Applies loop body `name` `trips` times: `carried` values flow from one
    /// iteration to the next, `invariant` ones (shared weights) are the same
    /// each time. Returns the final carried values.
    #[track_caller]
    pub fn repeat(&self, name: &str, trips: u64, carried: &[&Tensor], invariant: &[&Tensor]) -> Vec<Tensor> {
        let args: Vec<&Tensor> = carried.iter().chain(invariant).copied().collect();
        self.structured(Op::Loop { body: name.into(), trips }, &args)
    }

    #[track_caller]
    fn structured(&self, op: Op, args: &[&Tensor]) -> Vec<Tensor> {
        let callee = match &op {
            Op::Call { callee } => callee.clone(),
            Op::Loop { body, .. } => body.clone(),
            _ => String::new(),
        };
        let (n_out, lifted) = {
            let inner = self.inner.borrow();
            let index = inner.graphs.iter().position(|g| g.name == callee);
            let n_out = index.map(|i| inner.graphs[i].outputs.len());
            let lifted: Vec<(String, TensorType)> = index
                .and_then(|i| {
                    let g = &inner.graphs[i];
                    let names = inner.lifted.get(&i)?;
                    Some(
                        names
                            .iter()
                            .filter_map(|n| {
                                g.input_types()
                                    .into_iter()
                                    .find(|(m, _)| m == n)
                                    .map(|(m, t)| (m.to_string(), t.clone()))
                            })
                            .collect(),
                    )
                })
                .unwrap_or_default();
            (n_out, lifted)
        };
        let mut params = Vec::new();
        for (name, ty) in &lifted {
            match self.param_in(self.graph, name, ty) {
                Ok(v) => params.push(self.tensor(self.graph, Some(v))),
                Err(m) => {
                    self.fail(m);
                    return vec![self.tensor(self.graph, None); n_out.unwrap_or(1)];
                }
            }
        }
        let mut all: Vec<&Tensor> = args.to_vec();
        all.extend(params.iter());
        let out = crate::tensor::apply(self, self.graph, op, &all);
        match out {
            Some(id) => (0..n_out.unwrap_or(0))
                .map(|o| self.tensor(self.graph, Some(ValueRef { node: id, output: o as u32 })))
                .collect(),
            None => (0..n_out.unwrap_or(1)).map(|_| self.tensor(self.graph, None)).collect(),
        }
    }

    /// Records an error at the caller (used by modules for invalid configurations).
    #[track_caller]
    pub fn fail(&self, message: String) {
        self.inner.borrow_mut().fail(Location::caller(), message);
    }

    /// The first error recorded so far, if any.
    pub fn error(&self) -> Option<DslError> {
        self.inner.borrow().error.clone()
    }

    /// Finishes the program: returns the first recorded error, or the verified program.
    #[track_caller]
    pub fn finish(self) -> Result<Program, DslError> {
        let mut inner = self.inner.borrow_mut();
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        let mut graphs = std::mem::take(&mut inner.graphs);
        let main = graphs.remove(0);
        let program = Program { main, functions: graphs, symbols: std::mem::take(&mut inner.symbols) };
        verify(&program).map_err(|e| DslError { location: Location::caller(), message: e.to_string() })?;
        Ok(program)
    }
}
