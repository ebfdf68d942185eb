//! `lsc compile --emit kernels,kir,clif,ll,asm`: the optimised program
//! partitioned into kernels (launch order), the kernel IR of its fused
//! kernels at the bound shapes, and their Cranelift IR, LLVM IR and assembly.

use crate::error::{CliError, CliResult};
use lsc_kir::lower::lower_elementwise;
use lsc_kir::native::NativeCompiler;
use std::collections::BTreeMap;

/// The vector width of the kernel IR listing (Cranelift's, the default backend's).
const DEFAULT_VECTOR_WIDTH: u32 = 4;
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
    /// The backends' listings of the fused kernels, by extension (`clif`, `ll`, `asm`).
    pub code: BTreeMap<&'static str, String>,
    /// An object file defining every fused kernel (`--emit obj`, LLVM).
    pub object: Option<Vec<u8>>,
}

/// A native backend by name.
pub type NamedBackend = (&'static str, Box<dyn NativeCompiler>);

/// The native backends whose listings `emit` asks for: Cranelift for `clif`, LLVM for `ll`/`asm`.
pub fn backends(emit: &[String]) -> Result<Vec<NamedBackend>, CliError> {
    let mut out: Vec<NamedBackend> = Vec::new();
    if emit.iter().any(|e| e == "clif") {
        out.push(("cranelift", Box::new(lsc_cranelift::Jit::new().map_err(CliError::new)?)));
    }
    if emit.iter().any(|e| e == "ll" || e == "asm" || e == "obj") {
        #[cfg(feature = "llvm")]
        out.push(("llvm", Box::new(lsc_llvm::Jit::new().map_err(CliError::new)?)));
        #[cfg(not(feature = "llvm"))]
        return Err(CliError::with_fix(
            "--emit ll,asm,obj needs the LLVM backend, which this lsc was built without",
            "rebuild with `cargo build --release --features llvm` (LLVM 22: scripts/install-llvm.sh)",
        ));
    }
    Ok(out)
}

/// Partitions every graph of `p`, lowers its fused kernels at `bindings` and
/// compiles them with each of `backends`.
pub fn build(p: &Program, bindings: &Bindings, mut backends: Vec<NamedBackend>) -> Result<Artifacts, CliError> {
    let (mut list, mut kernels, mut kir) = (Vec::new(), String::new(), String::new());
    let mut code: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut memory = serde_json::Map::new();
    let mut seconds = vec![0.0; backends.len()];
    // Each backend's kernels, as it compiled them (for object files).
    let mut compiled: Vec<Vec<lsc_kir::Kernel>> = vec![Vec::new(); backends.len()];
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
            // The kernel IR listing has the default backend's schedule; each backend compiles
            // the kernel lowered with its own vector width.
            let group = part.elementwise.then(|| lsc_passes::partition::to_group(g, part, bindings, &name));
            let lowered = group.as_ref().map(|r| {
                r.as_ref().map_err(Clone::clone).and_then(|(group, _)| lower_elementwise(group, DEFAULT_VECTOR_WIDTH))
            });
            let kind = match lowered {
                None => "library".to_string(),
                Some(Err(why)) => format!("library (not lowered: {why})"),
                Some(Ok(k)) => {
                    kir.push_str(&lsc_kir::print::print(&k));
                    kir.push('\n');
                    let group = &group.as_ref().and_then(|r| r.as_ref().ok()).expect("lowered from a group").0;
                    for (((_, backend), secs), done) in
                        backends.iter_mut().zip(seconds.iter_mut()).zip(compiled.iter_mut())
                    {
                        let start = std::time::Instant::now();
                        let own = match backend.vector_width() {
                            w if w == k.schedule.vector_width => k.clone(),
                            w => lower_elementwise(group, w).map_err(CliError::new)?,
                        };
                        backend.compile(&own).map_err(CliError::new)?;
                        *secs += start.elapsed().as_secs_f64();
                        done.push(own);
                        for (ext, text) in backend.listings(&name) {
                            code.entry(ext).or_default().push_str(&format!("; kernel @{name}\n{text}\n"));
                        }
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
    let object = backends
        .iter()
        .zip(&compiled)
        .find_map(|((_, b), kernels)| b.object_file(kernels))
        .transpose()
        .map_err(CliError::new)?;
    Ok(Artifacts {
        manifest: json!({
            "bindings": bindings,
            "launch_order": list,
            "fused_kernels": fused,
            "memory": memory,
            "codegen_seconds": backends.iter().map(|(n, _)| *n).zip(seconds).collect::<BTreeMap<_, _>>(),
        }),
        kernels,
        kir,
        code,
        object,
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
    let listings = a.code.iter().map(|(ext, text)| (*ext, *ext, text));
    for (kind, ext, text) in
        [("kernels", "kernels.txt", &a.kernels), ("kir", "kir", &a.kir)].into_iter().chain(listings)
    {
        if emit.iter().any(|e| e == kind) {
            let file = format!("{name}.{ext}");
            write(&file, text.as_bytes())?;
            files.push(file);
        }
    }
    if let (true, Some(object)) = (emit.iter().any(|e| e == "obj"), &a.object) {
        let file = format!("{name}.o");
        write(&file, object)?;
        files.push(file);
    }
    Ok(files)
}
