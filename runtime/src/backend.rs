//! Which code runs a program: the reference interpreter, or generated code
//! (Cranelift, or LLVM when built with the `llvm` feature) for the fused
//! kernels with the interpreter's library kernels for the rest.

use crate::accelerate::Accelerated;
use crate::RuntimeError;
use lsc_interp::{Accelerator, Interpreter};
use lsc_ir::Program;

/// The execution backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The reference interpreter only.
    Interp,
    /// Fused kernels as Cranelift machine code (no system dependency).
    Cranelift,
    /// Fused kernels as LLVM machine code for this CPU (the `llvm` feature).
    Llvm,
}

impl Default for Backend {
    /// The fastest backend built: LLVM with the `llvm` feature, else Cranelift.
    fn default() -> Backend {
        if cfg!(feature = "llvm") {
            Backend::Llvm
        } else {
            Backend::Cranelift
        }
    }
}

impl Backend {
    /// The code-generating backends this build has.
    pub fn native() -> Vec<Backend> {
        let mut v = vec![Backend::Cranelift];
        if cfg!(feature = "llvm") {
            v.push(Backend::Llvm);
        }
        v
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Interp => "interp",
            Backend::Cranelift => "cranelift",
            Backend::Llvm => "llvm",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "interp" => Ok(Backend::Interp),
            "cranelift" => Ok(Backend::Cranelift),
            "llvm" if cfg!(feature = "llvm") => Ok(Backend::Llvm),
            "llvm" => Err("this lsc was built without LLVM: rebuild with `--features llvm` (needs LLVM 22; \
                 see scripts/install-llvm.sh)"
                .into()),
            other => Err(format!("unknown backend `{other}` (expected interp, cranelift or llvm)")),
        }
    }
}

/// A program prepared for a backend: its generated kernels, if any.
pub struct Executable {
    program: Program,
    kernels: Option<Generated>,
}

/// A program's generated kernels (as the interpreter's hook) and how many there are.
type Generated = (Box<dyn Accelerator + Send>, usize);

/// `program` as generated code runs it (each kernel reads broadcasts from
/// their source), and its generated kernels on a native backend.
fn generated<C: lsc_kir::native::NativeCompiler + 'static>(
    program: Program,
    backend: C,
) -> Result<(Program, Option<Generated>), RuntimeError> {
    let program = lsc_passes::partition::unshare_broadcasts(&program);
    let a = Accelerated::new(&program, backend).map_err(RuntimeError::Input)?;
    let count = a.kernel_count();
    Ok((program, Some((Box::new(a), count))))
}

impl Executable {
    /// Compiles `program` for `backend` (kernels are generated at first use, per shape).
    pub fn new(program: Program, backend: Backend) -> Result<Executable, RuntimeError> {
        let (program, kernels) = match backend {
            Backend::Interp => (program, None),
            Backend::Cranelift => generated(program, lsc_cranelift::Jit::new().map_err(RuntimeError::Input)?)?,
            #[cfg(feature = "llvm")]
            Backend::Llvm => generated(program, lsc_llvm::Jit::new().map_err(RuntimeError::Input)?)?,
            #[cfg(not(feature = "llvm"))]
            Backend::Llvm => return Err(RuntimeError::Input("this lsc was built without the `llvm` feature".into())),
        };
        Ok(Executable { program, kernels })
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// How many fused kernels run as generated code.
    pub fn generated_kernels(&self) -> usize {
        self.kernels.as_ref().map(|k| k.1).unwrap_or(0)
    }

    /// An interpreter over the program, handing the fused kernels to the backend.
    pub fn interpreter(&self) -> Result<Interpreter<'_>, RuntimeError> {
        let i = Interpreter::new(&self.program).map_err(|e| RuntimeError::Input(format!("invalid program: {e}")))?;
        Ok(match &self.kernels {
            Some((k, _)) => i.with_accelerator(k.as_ref()),
            None => i,
        })
    }
}
