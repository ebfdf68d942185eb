//! PTX for NVIDIA GPUs: GPU kernels ([`lsc_kir::Kernel`]s with a launch) →
//! LLVM IR through [`crate::gpu`] → LLVM's NVPTX back end (`nvptx64-nvidia-cuda`,
//! the `default<O3>` pipeline, no fast-math: no contraction, IEEE division and
//! square root, denormals kept) → PTX text, one module per program.

use inkwell::context::Context;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::OptimizationLevel;
use lsc_kir::Kernel;

/// The GPU architectures PTX is generated for.
pub const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// A module of GPU kernels rendered for one architecture.
#[derive(Clone, Debug)]
pub struct PtxModule {
    /// The PTX text (`.ptx`), for the driver's JIT or `ptxas`.
    pub ptx: String,
    /// The optimised NVVM IR it came from (`.ll`).
    pub ll: String,
}

/// A PTX generator for one GPU architecture.
pub struct PtxGenerator {
    context: &'static Context,
    machine: TargetMachine,
}

impl PtxGenerator {
    /// A generator for `arch` (one of [`ARCHS`]).
    pub fn new(arch: &str) -> Result<PtxGenerator, String> {
        if !ARCHS.contains(&arch) {
            return Err(format!("unsupported GPU architecture {arch:?}: lsc generates PTX for {}", ARCHS.join(", ")));
        }
        Target::initialize_nvptx(&InitializationConfig::default());
        let triple = TargetTriple::create("nvptx64-nvidia-cuda");
        let target = Target::from_triple(&triple).map_err(|e| format!("LLVM has no NVPTX back end: {e}"))?;
        let machine = target
            .create_target_machine(
                &triple,
                arch,
                "",
                OptimizationLevel::Aggressive,
                RelocMode::Default,
                CodeModel::Default,
            )
            .ok_or_else(|| format!("LLVM cannot generate code for {arch}"))?;
        // The context lives as long as the modules made in it (a compile's lifetime).
        let context: &'static Context = Box::leak(Box::new(Context::create()));
        Ok(PtxGenerator { context, machine })
    }

    /// The architecture the PTX is for.
    pub fn arch(&self) -> String {
        self.machine.get_cpu().to_string()
    }

    /// One PTX module named `name` holding `kernels` (each checked in bounds first).
    pub fn module(&self, name: &str, kernels: &[Kernel]) -> Result<PtxModule, String> {
        let module = self.context.create_module(name);
        module.set_triple(&self.machine.get_triple());
        module.set_data_layout(&self.machine.get_target_data().get_data_layout());
        for k in kernels {
            lsc_kir::check::in_bounds(k)?;
            crate::gpu::kernel(self.context, &module, k).map_err(|e| format!("kernel {}: {e}", k.name))?;
        }
        module.verify().map_err(|e| format!("{name}: invalid NVVM IR: {}", e.to_string_lossy()))?;
        module
            .run_passes("default<O3>", &self.machine, PassBuilderOptions::create())
            .map_err(|e| format!("{name}: {}", e.to_string_lossy()))?;
        let ptx = self
            .machine
            .write_to_memory_buffer(&module, FileType::Assembly)
            .map_err(|e| format!("{name}: NVPTX: {}", e.to_string_lossy()))?;
        Ok(PtxModule {
            ptx: String::from_utf8_lossy(ptx.as_slice()).into_owned(),
            ll: module.print_to_string().to_string(),
        })
    }
}
