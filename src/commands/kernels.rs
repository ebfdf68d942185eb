//! `lsc compile --emit kernels,kir,clif`: the optimised program partitioned
//! into kernels (launch order), the kernel IR of its fused elementwise
//! kernels at the bound shapes, and their Cranelift IR.

use crate::error::{CliError, CliResult};
use lsc_ir::{Bindings, Program};
use serde_json::{json, Value};

/// Parses `B=8,T=256`.
pub fn parse_bindings(specs: &[String]) -> Result<Bindings, CliError> {
    let mut b = Bindings::new();
    for s in specs {
        let parsed = s.split_once('=').and_then(|(k, v)| Some((k.trim().to_string(), v.trim().parse::<i64>().ok()?)));
        match parsed {
            Some((k, v)) if v > 0 => {
                b.insert(k, v);
            }
            _ => {
                return Err(CliError::with_fix(format!("bad --bind `{s}`"), "write SYMBOL=SIZE, e.g. --bind B=8,T=256"))
            }
        }
    }
    Ok(b)
}

/// What the kernel artifacts hold: the manifest section and the text files.
pub struct Artifacts {
    /// `kernels` section of the manifest.
    pub manifest: Value,
    /// The partition, one kernel per line.
    pub kernels: String,
    /// Kernel IR of the fused kernels.
    pub kir: String,
    /// Cranelift IR of the fused kernels.
    pub clif: String,
}

/// Partitions every graph of `p`, lowers its fused kernels at `bindings` and
/// compiles them with Cranelift (`with_clif`).
pub fn build(p: &Program, bindings: &Bindings, with_clif: bool) -> Result<Artifacts, CliError> {
    let mut jit = if with_clif { Some(lsc_cranelift::Jit::new().map_err(CliError::new)?) } else { None };
    let (mut list, mut kernels, mut kir, mut clif) = (Vec::new(), String::new(), String::new(), String::new());
    let mut memory = serde_json::Map::new();
    let mut codegen_seconds = 0.0;
    let mut bindings = bindings.clone();
    // MoR's capacities and the like follow from the bound symbols.
    let _ = lsc_ir::DerivedSymbol::bind_all(&p.symbols, &mut bindings);
    let bindings = &bindings;
    // As `Executable` runs it: each kernel reads broadcasts from their source.
    let p = &lsc_passes::partition::unshare_broadcasts(p);
    // Functions are planned (and their kernels shown) at the largest shapes any call passes.
    let bounds = lsc_passes::memory::upper_bounds(p, bindings).map_err(CliError::new)?;
    for g in p.graphs() {
        let bindings = bounds.get(&g.name).unwrap_or(bindings);
        let parts = lsc_passes::partition::partition(g).map_err(CliError::new)?;
        memory.insert(
            g.name.clone(),
            match lsc_passes::memory::plan(g, &parts, bindings) {
                Ok(plan) => json!({
                    "bindings": bindings,
                    "peak_bytes": plan.peak_bytes,
                    "unshared_bytes": plan.unshared_bytes,
                    "slots": plan.slots.len(),
                    "values": plan.assignment.len(),
                }),
                Err(why) => json!({ "unplanned": why }),
            },
        );
        for (i, part) in parts.iter().enumerate() {
            let name = format!("{}_k{i}", g.name);
            let ops: Vec<&str> = part.nodes.iter().map(|&n| g.node(n).op.name()).collect();
            let mut entry = json!({ "graph": g.name, "name": name, "ops": ops });
            let lowered = part.elementwise.then(|| {
                lsc_passes::partition::to_group(g, part, bindings, &name)
                    .and_then(|(group, _)| lsc_kir::lower::lower_elementwise(&group))
            });
            let kind = match lowered {
                None => "library".to_string(),
                Some(Err(why)) => format!("library (not lowered: {why})"),
                Some(Ok(k)) => {
                    kir.push_str(&lsc_kir::print::print(&k));
                    kir.push('\n');
                    if let Some(jit) = jit.as_mut() {
                        let start = std::time::Instant::now();
                        jit.compile(&k).map_err(CliError::new)?;
                        codegen_seconds += start.elapsed().as_secs_f64();
                        clif.push_str(&format!("; kernel @{name}\n{}\n", jit.clif(&name).unwrap_or_default()));
                    }
                    entry["schedule"] = json!({
                        "parallel_outer_loop": k.schedule.parallel,
                        "vector_width": k.schedule.vector_width,
                        "outer_extent": k.outer_extent(),
                    });
                    entry["buffers"] = json!(k
                        .buffers
                        .iter()
                        .map(|b| json!({"name": b.name, "elements": b.len, "output": b.output}))
                        .collect::<Vec<_>>());
                    "elementwise".to_string()
                }
            };
            kernels.push_str(&format!("@{name}: {kind}: {}\n", ops.join(" → ")));
            entry["kind"] = json!(kind);
            list.push(entry);
        }
    }
    let fused = list.iter().filter(|e| e["kind"] == "elementwise").count();
    Ok(Artifacts {
        manifest: json!({
            "bindings": bindings,
            "launch_order": list,
            "fused_kernels": fused,
            "memory": memory,
            "cranelift_seconds": with_clif.then_some(codegen_seconds),
        }),
        kernels,
        kir,
        clif,
    })
}

/// Writes the requested kernel artifacts; returns the file names.
pub fn write(
    name: &str,
    a: &Artifacts,
    emit: &[String],
    write: &dyn Fn(&str, &[u8]) -> CliResult,
) -> Result<Vec<String>, CliError> {
    let mut files = Vec::new();
    for (kind, ext, text) in [("kernels", "kernels.txt", &a.kernels), ("kir", "kir", &a.kir), ("clif", "clif", &a.clif)]
    {
        if emit.iter().any(|e| e == kind) {
            let file = format!("{name}.{ext}");
            write(&file, text.as_bytes())?;
            files.push(file);
        }
    }
    Ok(files)
}
