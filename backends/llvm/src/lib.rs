//! The LLVM backend (cargo feature `llvm`, LLVM 22 through inkwell): kernel
//! IR → LLVM IR → machine code for this CPU (`-mcpu=native`, the `default<O3>`
//! pipeline), kept in memory by MCJIT. Each kernel becomes one function
//! `void k(float **buffers, i64 begin, i64 end)`, the calling convention of
//! [`lsc_kir::native`], so the executor and its thread split are shared with
//! every native backend.
//!
//! The rendering is a direct walk of the kernel IR with the semantics of
//! `lsc_kir::eval`: no fast-math flags (so no reassociation or contraction),
//! `llvm.minimum`/`llvm.maximum` for NaN-propagating min/max, saturating
//! float → int, and the vector loops of `lsc_kir::vector` as explicit
//! `<W x float>` code (W = 16 on AVX-512: zmm registers) with the same
//! W-lane accumulation order as the evaluator. The
//! conformance suite checks the result bit for bit against the evaluator.
#![cfg(feature = "llvm")]
#![warn(missing_docs)]

mod codegen;
mod gpu;
pub mod ptx;
pub mod ptxas;

use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine};
use inkwell::OptimizationLevel;
use lsc_kir::native::{Compiled, KernelFn, NativeCompiler};
use lsc_kir::Kernel;
use std::collections::HashMap;

/// Compiled kernels and the LLVM state that owns their code.
pub struct Jit {
    context: &'static Context,
    machine: TargetMachine,
    /// One engine per kernel module; dropping one would free its code.
    engines: Vec<ExecutionEngine<'static>>,
    compiled: Compiled,
    /// Lanes of a vector register of this CPU (f32): 16 with AVX-512, 8 with AVX2, else 4.
    vector_width: u32,
    ir: HashMap<String, String>,
    asm: HashMap<String, String>,
}

// SAFETY: a `Jit` is used by one thread at a time (the executor keeps it
// behind a mutex); its LLVM context, modules and engines move together and
// are never shared. The compiled functions it hands out are immutable code.
unsafe impl Send for Jit {}

impl Jit {
    /// A JIT for the host CPU.
    pub fn new() -> Result<Jit, String> {
        Target::initialize_native(&InitializationConfig::default())?;
        let triple = TargetMachine::get_default_triple();
        let target = Target::from_triple(&triple).map_err(|e| e.to_string())?;
        let cpu = TargetMachine::get_host_cpu_name().to_string();
        let features = TargetMachine::get_host_cpu_features().to_string();
        let machine = target
            .create_target_machine(
                &triple,
                &cpu,
                &features,
                OptimizationLevel::Aggressive,
                RelocMode::Default,
                CodeModel::JITDefault,
            )
            .ok_or_else(|| format!("LLVM cannot generate code for {cpu} ({})", triple.as_str().to_string_lossy()))?;
        let vector_width = if features.contains("+avx512f") {
            16
        } else if features.contains("+avx2") {
            8
        } else {
            4
        };
        // The context lives as long as the code compiled in it: for the process.
        let context: &'static Context = Box::leak(Box::new(Context::create()));
        Ok(Jit {
            context,
            machine,
            engines: Vec::new(),
            compiled: Compiled::default(),
            vector_width,
            ir: HashMap::new(),
            asm: HashMap::new(),
        })
    }

    /// The optimised LLVM IR of a compiled kernel (`--emit ll`).
    pub fn ir(&self, name: &str) -> Option<&str> {
        self.ir.get(name).map(String::as_str)
    }

    /// The assembly of a compiled kernel for this CPU (`--emit asm`).
    pub fn asm(&self, name: &str) -> Option<&str> {
        self.asm.get(name).map(String::as_str)
    }

    /// The CPU the code is generated for.
    pub fn cpu(&self) -> String {
        self.machine.get_cpu().to_string()
    }
}

impl Jit {
    /// An optimised module named `name` holding `kernels` (each checked in bounds first).
    fn module(&self, name: &str, kernels: &[Kernel]) -> Result<Module<'static>, String> {
        let module = self.context.create_module(name);
        module.set_triple(&self.machine.get_triple());
        module.set_data_layout(&self.machine.get_target_data().get_data_layout());
        let cpu = self.machine.get_cpu().to_string();
        let features = self.machine.get_feature_string().to_string_lossy().into_owned();
        for k in kernels {
            lsc_kir::check::cpu_only(k)?;
            lsc_kir::check::in_bounds(k)?;
            codegen::kernel(self.context, &module, k, &cpu, &features)?;
        }
        module.verify().map_err(|e| format!("{name}: invalid LLVM IR: {}", e.to_string_lossy()))?;
        // The kernel IR's vector loops are already explicit vectors: LLVM's own loop and
        // SLP vectorisers add nothing but compile time (minutes on some large kernels).
        // Interleaving is off too: with it on, the loop vectoriser still builds its
        // plans, and on some deep expression DAGs LLVM 22's uniformity check in them
        // runs for tens of minutes.
        let options = PassBuilderOptions::create();
        options.set_loop_vectorization(false);
        options.set_loop_slp_vectorization(false);
        options.set_loop_interleaving(false);
        module
            .run_passes("default<O3>", &self.machine, options)
            .map_err(|e| format!("{name}: {}", e.to_string_lossy()))?;
        Ok(module)
    }
}

impl NativeCompiler for Jit {
    fn compile(&mut self, k: &Kernel) -> Result<(), String> {
        let module = self.module(&k.name, std::slice::from_ref(k))?;
        self.ir.insert(k.name.clone(), module.print_to_string().to_string());
        let asm = self
            .machine
            .write_to_memory_buffer(&module, FileType::Assembly)
            .map_err(|e| format!("kernel {}: {}", k.name, e.to_string_lossy()))?;
        self.asm.insert(k.name.clone(), String::from_utf8_lossy(asm.as_slice()).into_owned());
        let engine = module
            .create_jit_execution_engine(OptimizationLevel::Aggressive)
            .map_err(|e| format!("kernel {}: {}", k.name, e.to_string_lossy()))?;
        let address = engine.get_function_address(&k.name).map_err(|e| format!("kernel {}: {e:?}", k.name))?;
        // SAFETY: the function was built from `k` (which passed the bounds check) with the
        // `KernelFn` signature; its code lives in `engine`, kept as long as `self.compiled`.
        unsafe {
            let f: KernelFn = std::mem::transmute::<usize, KernelFn>(address);
            self.compiled.insert(k, f);
        }
        self.engines.push(engine);
        Ok(())
    }

    fn kernels(&self) -> &Compiled {
        &self.compiled
    }

    fn vector_width(&self) -> u32 {
        self.vector_width
    }

    fn listings(&self, name: &str) -> Vec<(&'static str, String)> {
        [("ll", self.ir(name)), ("asm", self.asm(name))]
            .into_iter()
            .filter_map(|(ext, text)| Some((ext, text?.to_string())))
            .collect()
    }

    fn object_file(&self, kernels: &[Kernel]) -> Option<Result<Vec<u8>, String>> {
        let object = self.module("kernels", kernels).and_then(|m| {
            self.machine
                .write_to_memory_buffer(&m, FileType::Object)
                .map(|b| b.as_slice().to_vec())
                .map_err(|e| e.to_string_lossy().into_owned())
        });
        Some(object)
    }
}
