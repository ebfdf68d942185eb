//! `lsc compile --emit plan,kernels,kir,clif,ll,asm,obj`: the optimised
//! program compiled into a plan at the bound shapes (its launches over a
//! planned arena), the kernel IR of its generated kernels, and their
//! Cranelift IR, LLVM IR, assembly and object file.

use crate::error::{CliError, CliResult};
use lsc_kir::lower::lower_elementwise;
use lsc_kir::native::NativeCompiler;
use std::collections::BTreeMap;

use lsc_ir::{Bindings, Program};
use lsc_passes::plan::{Launch, Plan};
use serde_json::{json, Value};

/// The vector width of the kernel IR listing (Cranelift's).
const DEFAULT_VECTOR_WIDTH: u32 = 4;

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
    /// The compiled plan (`--emit plan`).
    pub plan: String,
    /// The launches, one per line.
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

/// The listings being collected while walking a plan.
struct Listing<'b> {
    backends: &'b mut [NamedBackend],
    seconds: Vec<f64>,
    compiled: Vec<Vec<lsc_kir::Kernel>>,
    launches: Vec<Value>,
    kernels: String,
    kir: String,
    code: BTreeMap<&'static str, String>,
}

impl Listing<'_> {
    /// Lists (and compiles) every launch of `plan`, regions' plans after their launch.
    fn walk(&mut self, plan: &Plan) -> CliResult {
        for l in plan.load.iter().chain(&plan.launches) {
            let o = l.origin();
            let mut entry = json!({ "graph": o.graph, "node": o.node, "op": o.op });
            match l {
                Launch::Kernel { group, .. } => {
                    let k = lower_elementwise(group, DEFAULT_VECTOR_WIDTH).map_err(CliError::new)?;
                    self.kir.push_str(&lsc_kir::print::print(&k));
                    self.kir.push('\n');
                    for (((_, backend), secs), done) in
                        self.backends.iter_mut().zip(self.seconds.iter_mut()).zip(self.compiled.iter_mut())
                    {
                        let start = std::time::Instant::now();
                        let own = match backend.vector_width() {
                            w if w == k.schedule.vector_width => k.clone(),
                            w => lower_elementwise(group, w).map_err(CliError::new)?,
                        };
                        backend.compile(&own).map_err(CliError::new)?;
                        *secs += start.elapsed().as_secs_f64();
                        done.push(own);
                        for (ext, text) in backend.listings(&group.name) {
                            self.code.entry(ext).or_default().push_str(&format!("; kernel @{}\n{text}\n", group.name));
                        }
                    }
                    self.kernels.push_str(&format!(
                        "@{}: generated, {} values ({} outputs)\n",
                        group.name,
                        group.nodes.len(),
                        group.outputs.len()
                    ));
                    entry["kind"] = json!("generated");
                    entry["name"] = json!(group.name);
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
                }
                Launch::Op { .. } | Launch::InPlace { .. } => {
                    self.kernels.push_str(&format!("@{} %{}: library: {}\n", o.graph, o.node, o.op));
                    entry["kind"] = json!("library");
                }
                Launch::Loop { body, .. } => {
                    self.kernels.push_str(&format!("@{} %{}: region: loop\n", o.graph, o.node));
                    entry["kind"] = json!("region");
                    self.launches.push(entry);
                    self.walk(body)?;
                    continue;
                }
                Launch::Routed { region, .. } => {
                    self.kernels.push_str(&format!("@{} %{}: region: routed_call\n", o.graph, o.node));
                    entry["kind"] = json!("region");
                    self.launches.push(entry);
                    self.walk(&region.bound)?;
                    continue;
                }
            }
            self.launches.push(entry);
        }
        Ok(())
    }
}

/// Compiles `p` into a plan at `bindings`, lists its launches and the
/// kernel IR of its generated kernels, and compiles them with each of `backends`.
pub fn build(p: &Program, bindings: &Bindings, mut backends: Vec<NamedBackend>) -> Result<Artifacts, CliError> {
    let plan = lsc_passes::plan::build(p, bindings).map_err(CliError::new)?;
    let n = backends.len();
    let mut listing = Listing {
        backends: &mut backends,
        seconds: vec![0.0; n],
        compiled: vec![Vec::new(); n],
        launches: Vec::new(),
        kernels: String::new(),
        kir: String::new(),
        code: BTreeMap::new(),
    };
    listing.walk(&plan)?;
    let Listing { seconds, compiled, launches, kernels, kir, code, .. } = listing;
    let fused = plan.kernel_count();
    let object = backends
        .iter()
        .zip(&compiled)
        .find_map(|((_, b), kernels)| b.object_file(kernels))
        .transpose()
        .map_err(CliError::new)?;
    Ok(Artifacts {
        manifest: json!({
            "bindings": plan.bindings,
            "launch_order": launches,
            "fused_kernels": fused,
            "memory": { "arena_bytes": plan.arena_bytes, "unshared_bytes": plan.unshared_bytes },
            "codegen_seconds": backends.iter().map(|(n, _)| *n).zip(seconds).collect::<BTreeMap<_, _>>(),
        }),
        plan: plan.to_text(),
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
        [("plan", "plan.txt", &a.plan), ("kernels", "kernels.txt", &a.kernels), ("kir", "kir", &a.kir)]
            .into_iter()
            .chain(listings)
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
