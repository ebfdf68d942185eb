//! The verifier: checks every structural and typing rule of a program and
//! names the graph, the node and the rule that broke.

use crate::dtype::DType;
use crate::graph::{Graph, NodeId, Program};
use crate::infer::{arity, infer};
use crate::op::Op;
use crate::types::TensorType;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The rules a well-formed program obeys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Graphs are acyclic.
    Acyclic,
    /// Operand slots are exactly `0..n`.
    OperandSlots,
    /// The op receives the number of operands it takes.
    Arity,
    /// Operand types satisfy the op's typing rule.
    Typing,
    /// Declared output types equal the inferred ones.
    DeclaredType,
    /// Leaf declarations are sensible (iota axis in range, numeric dtype, ...).
    Leaf,
    /// Parameters live only in `main`.
    ParamOutsideMain,
    /// Input, parameter, output and function names are non-empty and unique.
    UniqueNames,
    /// Graph outputs refer to existing values.
    OutputRef,
    /// Functions referenced by `loop`/`call` exist.
    UnknownFunction,
    /// Functions do not call themselves, directly or not.
    Recursion,
    /// A program has a `main` graph with at least one output.
    Entry,
    /// Derived symbols have unique names and finite, positive fractions.
    DerivedSymbol,
}

impl Rule {
    /// The rule's name as printed in errors.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Acyclic => "acyclic",
            Rule::OperandSlots => "operand-slots",
            Rule::Arity => "arity",
            Rule::Typing => "typing",
            Rule::DeclaredType => "declared-type",
            Rule::Leaf => "leaf",
            Rule::ParamOutsideMain => "param-outside-main",
            Rule::UniqueNames => "unique-names",
            Rule::OutputRef => "output-ref",
            Rule::UnknownFunction => "unknown-function",
            Rule::Recursion => "recursion",
            Rule::Entry => "entry",
            Rule::DerivedSymbol => "derived-symbol",
        }
    }
}

/// A broken rule, located at a graph and (usually) a node.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    /// Graph name (`main` or a function).
    pub graph: String,
    /// Node index (as printed, `%N`) and op name, when the error is at a node.
    pub node: Option<(usize, String)>,
    /// The broken rule.
    pub rule: Rule,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.graph)?;
        if let Some((id, op)) = &self.node {
            write!(f, " %{id} ({op})")?;
        }
        write!(f, ": [{}] {}", self.rule.name(), self.message)
    }
}

impl std::error::Error for VerifyError {}

/// Checks a whole program; returns the first broken rule.
pub fn verify(p: &Program) -> Result<(), VerifyError> {
    let entry = |m: &str| VerifyError { graph: "main".into(), node: None, rule: Rule::Entry, message: m.into() };
    if p.main.name != "main" {
        return Err(entry("the entry graph must be named main"));
    }
    if p.main.outputs.is_empty() {
        return Err(entry("main has no outputs"));
    }
    let mut names = BTreeSet::new();
    for f in &p.functions {
        if f.name.is_empty() || f.name == "main" || !names.insert(f.name.as_str()) {
            return Err(VerifyError {
                graph: f.name.clone(),
                node: None,
                rule: Rule::UniqueNames,
                message: format!("function name `{}` is empty, `main`, or defined twice", f.name),
            });
        }
    }
    let mut symbols = BTreeSet::new();
    for s in &p.symbols {
        if s.name.is_empty() || !symbols.insert(s.name.as_str()) || !s.fraction.is_finite() || s.fraction <= 0.0 {
            return Err(VerifyError {
                graph: "main".into(),
                node: None,
                rule: Rule::DerivedSymbol,
                message: format!("`{s}` needs a unique name and a finite fraction > 0"),
            });
        }
    }
    for g in p.graphs() {
        verify_graph(g, p, g.name == "main")?;
    }
    check_recursion(p)
}

fn verify_graph(g: &Graph, p: &Program, is_main: bool) -> Result<(), VerifyError> {
    let at = |n: NodeId, rule: Rule, message: String| VerifyError {
        graph: g.name.clone(),
        node: Some((n.index(), g.node(n).op.name().to_string())),
        rule,
        message,
    };
    let order = g.topo_order().map_err(|n| at(n, Rule::Acyclic, "node is on a cycle".into()))?;
    let mut input_names = BTreeSet::new();
    let mut param_names = BTreeSet::new();
    for &n in &order {
        let node = g.node(n);
        let slots = g.operand_slots(n);
        if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
            return Err(at(n, Rule::OperandSlots, format!("operand slots {slots:?} are not 0..{}", slots.len())));
        }
        let operands = g.operands(n);
        for v in &operands {
            if v.output as usize >= g.node(v.node).outputs.len() {
                return Err(at(
                    n,
                    Rule::OperandSlots,
                    format!("operand %{}.{} does not exist", v.node.index(), v.output),
                ));
            }
        }
        if node.op.is_leaf() {
            if !operands.is_empty() {
                return Err(at(n, Rule::Arity, "a leaf takes no operands".into()));
            }
            check_leaf(g, n, is_main, &mut input_names, &mut param_names).map_err(|(rule, m)| at(n, rule, m))?;
            continue;
        }
        if let Some(k) = arity(&node.op) {
            if operands.len() != k {
                return Err(at(n, Rule::Arity, format!("takes {k} operand(s), got {}", operands.len())));
            }
        }
        let types: Vec<&TensorType> = operands.iter().map(|v| g.value_type(*v)).collect();
        let inferred = infer(&node.op, &types, p).map_err(|m| {
            let rule = if m.contains("unknown function") { Rule::UnknownFunction } else { Rule::Typing };
            at(n, rule, m)
        })?;
        if inferred != node.outputs {
            let show = |ts: &[TensorType]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
            return Err(at(
                n,
                Rule::DeclaredType,
                format!("declared ({}) but the operands give ({})", show(&node.outputs), show(&inferred)),
            ));
        }
    }
    let mut out_names = BTreeSet::new();
    for (name, v) in &g.outputs {
        let err = |rule, message| VerifyError { graph: g.name.clone(), node: None, rule, message };
        if name.is_empty() || !out_names.insert(name.as_str()) {
            return Err(err(Rule::UniqueNames, format!("output name `{name}` is empty or used twice")));
        }
        let exists = v.node.index() < g.dag.node_count() && (v.output as usize) < g.node(v.node).outputs.len();
        if !exists {
            return Err(err(
                Rule::OutputRef,
                format!("output `{name}` refers to %{}.{}, which does not exist", v.node.index(), v.output),
            ));
        }
    }
    Ok(())
}

fn check_leaf(
    g: &Graph,
    n: NodeId,
    is_main: bool,
    input_names: &mut BTreeSet<String>,
    param_names: &mut BTreeSet<String>,
) -> Result<(), (Rule, String)> {
    let node = g.node(n);
    if node.outputs.len() != 1 {
        return Err((Rule::Leaf, format!("a leaf has one output, got {}", node.outputs.len())));
    }
    let t = &node.outputs[0];
    match &node.op {
        Op::Input { name } if name.is_empty() || !input_names.insert(name.clone()) => {
            Err((Rule::UniqueNames, format!("input name `{name}` is empty or used twice")))
        }
        Op::Param { name } if !is_main => Err((
            Rule::ParamOutsideMain,
            format!("parameter `{name}` must live in main and be passed to functions as an argument"),
        )),
        Op::Param { name } if name.is_empty() || !param_names.insert(name.clone()) => {
            Err((Rule::UniqueNames, format!("parameter name `{name}` is empty or used twice")))
        }
        Op::Constant { .. } if t.dtype == DType::Ternary => {
            Err((Rule::Leaf, "a constant cannot be packed ternary".into()))
        }
        Op::Iota { axis } if *axis >= t.rank() || !t.dtype.is_numeric() => {
            Err((Rule::Leaf, format!("iota axis {axis} needs a numeric type of rank > {axis}, got {t}")))
        }
        _ => Ok(()),
    }
}

fn check_recursion(p: &Program) -> Result<(), VerifyError> {
    let calls: BTreeMap<&str, BTreeSet<String>> = p.functions.iter().map(|f| (f.name.as_str(), f.callees())).collect();
    for f in &p.functions {
        let mut stack: Vec<String> = calls[f.name.as_str()].iter().cloned().collect();
        let mut seen = BTreeSet::new();
        while let Some(c) = stack.pop() {
            if c == f.name {
                return Err(VerifyError {
                    graph: f.name.clone(),
                    node: None,
                    rule: Rule::Recursion,
                    message: format!("@{} calls itself (directly or through other functions)", f.name),
                });
            }
            if seen.insert(c.clone()) {
                if let Some(next) = calls.get(c.as_str()) {
                    stack.extend(next.iter().cloned());
                }
            }
        }
    }
    Ok(())
}
