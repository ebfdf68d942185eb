//! `lsc compile`: writes the requested artifacts and `manifest.json`.

use crate::error::{CliError, CliResult};
use crate::source;
use crate::ModelArgs;
use lsc_ir::{Program, TensorType};
use serde_json::{json, Value};
use std::path::Path;

/// Artifacts `--emit` accepts today.
const EMIT_KINDS: [&str; 11] =
    ["ir", "opt-ir", "egraph-stats", "plan", "kernels", "kir", "clif", "ll", "asm", "obj", "ptx"];
/// Artifacts made from the plan's kernels (they need the optimised program).
const KERNEL_KINDS: [&str; 8] = ["plan", "kernels", "kir", "clif", "ll", "asm", "obj", "ptx"];
/// Artifacts only the CPU target makes, and only the CUDA target.
const CPU_ONLY: [&str; 3] = ["clif", "asm", "obj"];
const CUDA_ONLY: [&str; 1] = ["ptx"];

fn describe(name: &str, t: &TensorType) -> Value {
    json!({ "name": name, "dtype": t.dtype.name(), "shape": t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>() })
}

/// The manifest: interface, parameters, statistics and the files written.
pub fn manifest(name: &str, config: Option<&str>, program: &Program, files: &[String]) -> Value {
    let main = &program.main;
    let inputs: Vec<Value> = main.input_types().into_iter().map(|(n, t)| describe(n, t)).collect();
    let outputs: Vec<Value> = main.outputs.iter().map(|(n, v)| describe(n, main.value_type(*v))).collect();
    let params: Vec<Value> = main.params().into_iter().map(|(id, n)| describe(n, &main.node(id).outputs[0])).collect();
    json!({
        "lsc_version": env!("CARGO_PKG_VERSION"),
        "name": name,
        "config": config,
        "files": files,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": params,
        "parameter_count": lsc_passes::parameter_count(program).ok(),
        "functions": program.functions.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "nodes": program.graphs().map(|g| g.dag.node_count()).sum::<usize>(),
        "op_histogram": lsc_passes::op_histogram(program),
    })
}

/// Storage of a built-in model whose weights are stored packed (TriLM).
fn bit_accounting(src: &source::Source) -> Option<lsc_runtime::quant::BitReport> {
    let quantized = lsc_models::quantized_weights(&src.name, src.config.as_deref()?).ok()?;
    if quantized.is_empty() {
        return None;
    }
    let sizes: Vec<(String, usize)> = src
        .program
        .main
        .params()
        .into_iter()
        .map(|(id, name)| {
            let n = src.program.main.node(id).outputs[0].concrete_shape(&Default::default()).unwrap_or_default();
            (name.to_string(), n.iter().product())
        })
        .collect();
    let packed = quantized
        .iter()
        .filter_map(|(name, q)| {
            let n = sizes.iter().find(|(s, _)| s == name)?.1;
            Some((name.clone(), lsc_runtime::quant::packed_bits(*q, n)))
        })
        .collect();
    Some(lsc_runtime::quant::bit_report(&sizes, &packed))
}

/// What kernels are generated for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// This machine's CPU (Cranelift, and LLVM with `--features llvm`).
    Cpu,
    /// An NVIDIA GPU of this architecture (`sm_80`, `sm_90`).
    Cuda(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cpu => write!(f, "cpu"),
            Target::Cuda(arch) => write!(f, "cuda:{arch}"),
        }
    }
}

/// Parses `--target`: `cpu`, `cuda` or `cuda:sm_XX`.
fn parse_target(s: &str) -> Result<Target, String> {
    const ARCHS: [&str; 2] = ["sm_80", "sm_90"];
    match s.split_once(':') {
        None if s == "cpu" => Ok(Target::Cpu),
        None if s == "cuda" => Ok(Target::Cuda(super::cuda::DEFAULT_ARCH.into())),
        Some(("cuda", arch)) if ARCHS.contains(&arch) => Ok(Target::Cuda(arch.into())),
        Some(("cuda", arch)) => Err(format!("unsupported GPU architecture `{arch}`: use one of {}", ARCHS.join(", "))),
        _ => Err("use cpu, cuda, cuda:sm_80 or cuda:sm_90".into()),
    }
}

/// How the program is lowered: saturation bounds, the target, and the shapes kernels are lowered at.
#[derive(clap::Args, Debug)]
pub struct Bounds {
    /// Where the kernels run: `cpu`, or an NVIDIA GPU: `cuda` (sm_90), `cuda:sm_80`, `cuda:sm_90`.
    #[arg(long, value_parser = parse_target, default_value = "cpu")]
    pub target: Target,
    /// With `--target cuda`: write the kernels that lower even where some ops have no GPU kernel yet (listed in manifest.json).
    #[arg(long)]
    pub partial: bool,
    /// Shape symbols for `--emit plan,kir,clif`, e.g. `B=8,T=256` (default: B=1 and the model's context).
    #[arg(long, value_delimiter = ',')]
    pub bind: Vec<String>,
    /// Stop saturating a graph beyond this many e-nodes.
    #[arg(long, default_value_t = 100_000)]
    pub egg_node_limit: usize,
    /// Iterations per rule stage.
    #[arg(long, default_value_t = 8)]
    pub egg_iter_limit: usize,
    /// Time per graph, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub egg_time_limit_ms: u64,
}

/// Which graph of the model `compile` compiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graph {
    /// The training forward pass.
    Forward,
    /// The causal inference pass (`lsc run`).
    Inference,
    /// One step of incremental decoding (`lsc generate`): new tokens against the caches.
    Decode,
    /// Forward, backward and update in one graph.
    TrainingStep {
        /// Differentiate calls by recomputing their callees (`call f__vjp`).
        recompute_calls: bool,
    },
}

/// Compiles the selected program into `out_dir`.
pub fn run(
    args: &ModelArgs,
    emit: &[String],
    out_dir: &Path,
    graph: Graph,
    rules: &[String],
    no_rules: &[String],
    bounds: &Bounds,
) -> CliResult {
    for e in emit {
        if !EMIT_KINDS.contains(&e.as_str()) {
            return Err(CliError::with_fix(
                format!("unknown --emit kind `{e}`"),
                format!("use one of: {}", EMIT_KINDS.join(", ")),
            ));
        }
    }
    let (wrong, target_fix) = match bounds.target {
        Target::Cpu => (&CUDA_ONLY[..], "pass --target cuda (or cuda:sm_80)"),
        Target::Cuda(_) => (&CPU_ONLY[..], "drop --target cuda, or emit ptx,ll,kir"),
    };
    if let Some(e) = emit.iter().find(|e| wrong.contains(&e.as_str())) {
        return Err(CliError::with_fix(format!("--emit {e} is not made for --target {}", bounds.target), target_fix));
    }
    if bounds.partial && bounds.target == Target::Cpu {
        return Err(CliError::with_fix("--partial is for --target cuda", "drop --partial"));
    }
    let known = lsc_passes::saturate::groups();
    if let Some(bad) = rules.iter().chain(no_rules).find(|g| !known.contains(&g.as_str())) {
        return Err(CliError::with_fix(
            format!("unknown rule group `{bad}`"),
            format!("use one of: {}", known.join(", ")),
        ));
    }
    let train = matches!(graph, Graph::TrainingStep { .. });
    let which = match graph {
        Graph::Inference => source::ModelGraph::Inference,
        Graph::Decode => source::ModelGraph::Decode,
        Graph::Forward | Graph::TrainingStep { .. } => source::ModelGraph::Forward,
    };
    let mut src = source::load(args, which)?;
    let forward = src.program.clone();
    let mut opts = lsc_passes::train::StepOptions {
        recompute_calls: matches!(graph, Graph::TrainingStep { recompute_calls: true }),
        ..Default::default()
    };
    if src.name == "mor" {
        opts.loss_terms = vec![("aux_loss".into(), lsc_models::mor::AUX_LOSS_COEF)];
    }
    if train {
        src.program = lsc_passes::train::training_step(&src.program, &opts).map_err(|e| {
            CliError::with_fix(
                format!("cannot build the training step: {e}"),
                "the forward graph needs `input_ids` and `logits`",
            )
        })?;
        src.name = format!("{}.train", src.name);
    }
    match graph {
        Graph::Inference => src.name = format!("{}.inference", src.name),
        Graph::Decode => src.name = format!("{}.decode", src.name),
        _ => {}
    }
    lsc_passes::eliminate_dead_code(&mut src.program);
    std::fs::create_dir_all(out_dir).map_err(|e| {
        CliError::with_fix(format!("cannot create {}: {e}", out_dir.display()), "choose a writable -o folder")
    })?;
    let write = |file: &str, bytes: &[u8]| -> CliResult {
        lsc_runtime::weights::write_atomic(&out_dir.join(file), bytes)
            .map_err(|e| CliError::with_fix(e.to_string(), "choose a writable -o folder"))
    };
    let mut files = Vec::new();
    if emit.iter().any(|e| e == "ir") {
        let text = lsc_ir::print_program(&src.program).map_err(CliError::new)?;
        let file = format!("{}.lsir", src.name);
        write(&file, text.as_bytes())?;
        files.push(file);
    }
    let mut kernel_manifest = None;
    if emit.iter().any(|e| e == "opt-ir" || e == "egraph-stats" || KERNEL_KINDS.contains(&e.as_str())) {
        // What `compile` emits runs as is (it is never differentiated again).
        let (machine, machine_source) = lsc_runtime::calibrate::machine()?;
        let cfg = lsc_passes::saturate::Config {
            groups: rules.to_vec(),
            without: no_rules.to_vec(),
            keep_gradients: false,
            machine,
            node_limit: bounds.egg_node_limit,
            iter_limit: bounds.egg_iter_limit,
            time_limit: std::time::Duration::from_millis(bounds.egg_time_limit_ms),
        };
        // The training step goes through the trainer's pipeline: egg(forward) → autodiff → egg(step).
        let (opt, mut stats) = if train {
            lsc_passes::saturate::optimize_training_step(&forward, &opts, &cfg)
        } else {
            lsc_passes::saturate::optimize(&src.program, &cfg)
        }
        .map_err(CliError::new)?;
        if train {
            // "Before" is the step built from the primitive forward, which `src.program` holds.
            stats.cost_before =
                lsc_passes::saturate::estimated_cost(&src.program, &cfg.machine).map_err(CliError::new)?;
        }
        if emit.iter().any(|e| e == "opt-ir") {
            let file = format!("{}.opt.lsir", src.name);
            write(&file, lsc_ir::print_program(&opt).map_err(CliError::new)?.as_bytes())?;
            files.push(file);
        }
        if emit.iter().any(|e| KERNEL_KINDS.contains(&e.as_str())) {
            let mut bindings = super::kernels::parse_bindings(&bounds.bind)?;
            let t = if graph == Graph::Decode { Some(1) } else { src.max_len };
            if let Some(t) = t {
                bindings.entry("T".into()).or_insert(t as i64);
            }
            bindings.entry("B".into()).or_insert(1);
            let manifest = match &bounds.target {
                Target::Cpu => {
                    let artifacts = super::kernels::build(&opt, &bindings, super::kernels::backends(emit)?)?;
                    files.extend(super::kernels::write(&src.name, &artifacts, emit, &write)?);
                    let n = artifacts.manifest["fused_kernels"].as_u64().unwrap_or(0);
                    for (backend, t) in artifacts.manifest["codegen_seconds"].as_object().into_iter().flatten() {
                        println!("{backend}: {n} kernels compiled in {:.3}s", t.as_f64().unwrap_or(0.0));
                    }
                    artifacts.manifest
                }
                Target::Cuda(arch) => {
                    let render = emit.iter().any(|e| e == "ptx" || e == "ll");
                    let model = src.name.clone();
                    let a = super::cuda::build(&model, &opt, &bindings, arch, render, bounds.partial)?;
                    files.extend(super::cuda::write(&src.name, &a, emit, &write)?);
                    let m = &a.manifest;
                    println!(
                        "cuda:{arch}: {} GPU kernels generated in {:.3}s ({} PTX bytes), {} library calls, {} ops without a GPU kernel",
                        m["gpu_kernels"].as_array().map_or(0, Vec::len),
                        m["codegen_seconds"].as_f64().unwrap_or(0.0),
                        m["ptx_bytes"].as_u64().unwrap_or(0),
                        m["library_calls"].as_array().map_or(0, Vec::len),
                        m["unsupported"].as_array().map_or(0, |u| u.iter().filter_map(|x| x["launches"].as_u64()).sum()),
                    );
                    a.manifest
                }
            };
            let memory = &manifest["memory"];
            if let (Some(arena), Some(unshared)) = (memory["arena_bytes"].as_u64(), memory["unshared_bytes"].as_u64()) {
                println!(
                    "plan at {}: an arena of {:.2} MiB ({:.2} MiB without reuse)",
                    manifest["bindings"],
                    arena as f64 / (1 << 20) as f64,
                    unshared as f64 / (1 << 20) as f64
                );
            }
            kernel_manifest = Some(manifest);
        }
        if emit.iter().any(|e| e == "egraph-stats") {
            let report = json!({
                "rules_fired": stats.fired,
                "enodes": stats.enodes,
                "eclasses": stats.eclasses,
                "iterations": stats.iterations,
                "stop_reason": stats.stop,
                "op_histogram_before": lsc_passes::op_histogram(&src.program),
                "op_histogram_after": lsc_passes::op_histogram(&opt),
                "estimated_seconds_before": stats.cost_before,
                "estimated_seconds_after": stats.cost_after,
                "saturation_seconds": stats.seconds,
                "machine": { "figures": cfg.machine, "source": machine_source },
            });
            let file = format!("{}.egraph-stats.json", src.name);
            write(&file, serde_json::to_string_pretty(&report).map_err(|e| CliError::new(e.to_string()))?.as_bytes())?;
            files.push(file);
        }
        println!(
            "saturation: {} e-nodes, {} e-classes, {} iteration(s) in {:.3}s; estimated cost {:.3e}s -> {:.3e}s; rules fired: {:?}",
            stats.enodes, stats.eclasses, stats.iterations, stats.seconds, stats.cost_before, stats.cost_after, stats.fired
        );
    }
    let mut m = manifest(&src.name, src.config.as_deref(), &src.program, &files);
    if let Some(k) = kernel_manifest {
        m["kernels"] = k;
        m["kernels"]["target"] = json!(bounds.target.to_string());
    }
    if let Some(report) = bit_accounting(&src) {
        println!(
            "packed storage: {:.3} bits/parameter ({} of {} parameters packed)",
            report.bits_per_parameter(),
            report.packed_parameters,
            report.parameters
        );
        m["storage"] = json!({
            "bits_per_parameter": report.bits_per_parameter(),
            "total_bits": report.total_bits,
            "packed_parameters": report.packed_parameters,
        });
    }
    let text = serde_json::to_string_pretty(&m).map_err(|e| CliError::new(e.to_string()))?;
    write("manifest.json", text.as_bytes())?;
    let nodes = m["nodes"].as_u64().unwrap_or(0);
    let params = m["parameter_count"].as_u64().unwrap_or(0);
    println!("compiled {} ({nodes} nodes, {params} parameters) -> {}", src.name, out_dir.display());
    for f in files.iter().chain(std::iter::once(&"manifest.json".to_string())) {
        println!("  {}", out_dir.join(f).display());
    }
    Ok(())
}
