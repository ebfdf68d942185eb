//! `lsc compile --target cuda[:sm_XX]`: the optimised program's plan lowered
//! for an NVIDIA GPU — every generated kernel in GPU kernel IR (`--emit kir`),
//! rendered by LLVM's NVPTX back end into one PTX module (`--emit ptx`, and
//! its NVVM IR with `--emit ll`) — and, in the manifest, each kernel's launch
//! shape, shared memory and buffers, the library calls and what did not lower.

use crate::error::{CliError, CliResult};
use lsc_ir::{Bindings, Program};
use lsc_runtime::gpu::GpuProgram;
use serde_json::{json, Value};

/// The GPU architecture PTX is generated for when `--target cuda` names none.
pub const DEFAULT_ARCH: &str = "sm_90";

/// What a CUDA compile writes.
pub struct CudaArtifacts {
    /// `kernels` section of the manifest.
    pub manifest: Value,
    /// The plan (`--emit plan`).
    pub plan: String,
    /// The launches, one per line (`--emit kernels`).
    pub kernels: String,
    /// GPU kernel IR (`--emit kir`).
    pub kir: String,
    /// The PTX module and its NVVM IR (`--emit ptx`, `--emit ll`), when rendered.
    pub ptx: Option<(String, String)>,
}

/// Plans `p` at `bindings`, lowers it for `arch` and renders PTX when `render`.
/// Ops without a GPU kernel are an error naming them and `model`, unless `partial`.
pub fn build(
    model: &str,
    p: &Program,
    bindings: &Bindings,
    arch: &str,
    render: bool,
    partial: bool,
) -> Result<CudaArtifacts, CliError> {
    let plan = lsc_passes::plan::build(p, bindings).map_err(CliError::new)?;
    let start = std::time::Instant::now();
    let gpu = GpuProgram::from_plan(&plan).map_err(|e| CliError::new(format!("model {model}: {e}")))?;
    if !partial {
        gpu.require_supported(model).map_err(|e| {
            CliError::with_fix(
                e,
                "pass --partial to write the kernels that do lower (the rest are listed in manifest.json)",
            )
        })?;
    }
    let ptx = if render { Some(render_ptx(model, &gpu, arch)?) } else { None };
    let seconds = start.elapsed().as_secs_f64();
    let mut kir = String::new();
    let mut kernels = String::new();
    let mut entries = Vec::new();
    for k in &gpu.kernels {
        let l = k.kernel.launch.as_ref().expect("GPU kernels have a launch");
        kir.push_str(&lsc_kir::print::print(&k.kernel));
        kir.push('\n');
        kernels.push_str(&format!(
            "@{}: generated ({}), grid {} × block {}, {} B shared\n",
            k.kernel.name,
            if k.fused { "fused group" } else { k.origin.op },
            l.grid,
            l.block,
            l.shared_bytes()
        ));
        let buffers: Vec<Value> = k
            .kernel
            .buffers
            .iter()
            .zip(&k.buffers)
            .map(|(b, at)| {
                json!({"name": b.name, "elem": b.elem.name(), "elements": b.len, "output": b.output,
                       "place": at.to_string()})
            })
            .collect();
        entries.push(json!({
            "name": k.kernel.name,
            "graph": k.origin.graph, "node": k.origin.node, "op": k.origin.op, "fused": k.fused,
            "grid": l.grid, "block": l.block, "shared_bytes": l.shared_bytes(),
            "buffers": buffers,
        }));
    }
    for (o, lib) in &gpu.library {
        kernels.push_str(&format!("@{} %{}: library ({lib}): {}\n", o.graph, o.node, o.op));
    }
    for o in &gpu.unsupported {
        kernels.push_str(&format!("@{} %{}: no GPU kernel yet: {}\n", o.graph, o.node, o.op));
    }
    let library: Vec<Value> = gpu
        .library
        .iter()
        .map(|(o, lib)| json!({"graph": o.graph, "node": o.node, "op": o.op, "library": lib}))
        .collect();
    let unsupported: Vec<Value> =
        gpu.unsupported_ops().iter().map(|(op, n)| json!({"op": op, "launches": n})).collect();
    Ok(CudaArtifacts {
        manifest: json!({
            "target": format!("cuda:{arch}"),
            "bindings": plan.bindings,
            "gpu_kernels": entries,
            "library_calls": library,
            "unsupported": unsupported,
            "workspace": gpu.workspace.iter().map(|(n, b)| json!({"name": n, "bytes": b})).collect::<Vec<_>>(),
            "memory": { "arena_bytes": plan.arena_bytes, "unshared_bytes": plan.unshared_bytes },
            "ptx_bytes": ptx.as_ref().map(|(p, _)| p.len()),
            "codegen_seconds": seconds,
        }),
        plan: plan.to_text(),
        kernels,
        kir,
        ptx,
    })
}

#[cfg(feature = "llvm")]
fn render_ptx(model: &str, gpu: &GpuProgram, arch: &str) -> Result<(String, String), CliError> {
    let generator = lsc_llvm::ptx::PtxGenerator::new(arch).map_err(CliError::new)?;
    let kernels: Vec<lsc_kir::Kernel> = gpu.kernels.iter().map(|k| k.kernel.clone()).collect();
    let m = generator.module(model, &kernels).map_err(|e| CliError::new(format!("model {model}: {e}")))?;
    Ok((m.ptx, m.ll))
}

#[cfg(not(feature = "llvm"))]
fn render_ptx(_: &str, _: &GpuProgram, _: &str) -> Result<(String, String), CliError> {
    Err(CliError::with_fix(
        "--emit ptx,ll needs LLVM's NVPTX back end, which this lsc was built without",
        "rebuild with `cargo build --release --features llvm` (LLVM 22: scripts/install-llvm.sh)",
    ))
}

/// Writes the requested artifacts of a CUDA compile; returns the file names.
pub fn write(
    name: &str,
    a: &CudaArtifacts,
    emit: &[String],
    write: &dyn Fn(&str, &[u8]) -> CliResult,
) -> Result<Vec<String>, CliError> {
    let mut files = Vec::new();
    let (ptx, ll) = match &a.ptx {
        Some((p, l)) => (Some(p), Some(l)),
        None => (None, None),
    };
    let texts = [
        ("plan", "plan.txt", Some(&a.plan)),
        ("kernels", "kernels.txt", Some(&a.kernels)),
        ("kir", "kir", Some(&a.kir)),
        ("ptx", "ptx", ptx),
        ("ll", "ll", ll),
    ];
    for (kind, ext, text) in texts {
        if let (true, Some(text)) = (emit.iter().any(|e| e == kind), text) {
            let file = format!("{name}.{ext}");
            write(&file, text.as_bytes())?;
            files.push(file);
        }
    }
    Ok(files)
}
