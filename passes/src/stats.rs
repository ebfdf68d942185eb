//! Program statistics for manifests and reports.

use lsc_ir::{Bindings, Program};
use std::collections::BTreeMap;

/// How many nodes of each op the program holds (all graphs).
pub fn op_histogram(program: &Program) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for g in program.graphs() {
        for n in g.dag.node_weights() {
            *h.entry(n.op.name().to_string()).or_insert(0) += 1;
        }
    }
    h
}

/// The names of ops that are not primitive (none may come from the DSL).
pub fn non_primitive_ops(program: &Program) -> Vec<String> {
    program
        .graphs()
        .flat_map(|g| g.dag.node_weights())
        .filter(|n| !n.op.is_primitive())
        .map(|n| n.op.name().to_string())
        .collect()
}

/// Total number of parameter elements (parameters must have constant shapes).
pub fn parameter_count(program: &Program) -> Result<usize, String> {
    let mut total = 0;
    for (n, name) in program.main.params() {
        let shape = program.main.node(n).outputs[0]
            .concrete_shape(&Bindings::new())
            .map_err(|e| format!("parameter `{name}`: {e}"))?;
        total += shape.iter().product::<usize>();
    }
    Ok(total)
}
