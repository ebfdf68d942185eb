//! `lsc check FILE.lsir`: parse and verify.

use crate::error::{CliError, CliResult};
use std::path::Path;

/// Parses and verifies a file; errors carry `FILE:line:col`.
pub fn run(path: &Path) -> CliResult {
    let text = crate::source::read_lsir(path)?;
    let program = lsc_ir::parse_and_verify(&text).map_err(|e| CliError::new(format!("{}:{e}", path.display())))?;
    let nodes: usize = program.graphs().map(|g| g.dag.node_count()).sum();
    let outputs: Vec<&str> = program.main.outputs.iter().map(|(n, _)| n.as_str()).collect();
    let shown = if outputs.len() > 6 {
        format!("{}, … ({} in all)", outputs[..6].join(", "), outputs.len())
    } else {
        outputs.join(", ")
    };
    println!(
        "{}: ok ({} graph(s), {nodes} nodes, {} parameters, outputs: {shown})",
        path.display(),
        1 + program.functions.len(),
        program.main.params().len(),
    );
    Ok(())
}
