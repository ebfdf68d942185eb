//! Which code runs a program: the reference interpreter, or generated code
//! (Cranelift) for the fused elementwise kernels with the interpreter's
//! library kernels for the rest.

use crate::RuntimeError;
use lsc_interp::Interpreter;
use lsc_ir::Program;

/// The execution backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The reference interpreter only.
    Interp,
    /// Fused elementwise kernels as Cranelift machine code (the default: the fastest here).
    #[default]
    Cranelift,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "interp" => Ok(Backend::Interp),
            "cranelift" => Ok(Backend::Cranelift),
            other => Err(format!("unknown backend `{other}` (expected interp or cranelift)")),
        }
    }
}

/// A program prepared for a backend: its generated kernels, if any.
pub struct Executable {
    program: Program,
    kernels: Option<lsc_cranelift::Accelerated>,
}

impl Executable {
    /// Compiles `program` for `backend` (kernels are generated at first use, per shape).
    pub fn new(program: Program, backend: Backend) -> Result<Executable, RuntimeError> {
        let (program, kernels) = match backend {
            Backend::Interp => (program, None),
            Backend::Cranelift => {
                let program = lsc_passes::partition::unshare_broadcasts(&program);
                let kernels = lsc_cranelift::Accelerated::new(&program).map_err(RuntimeError::Input)?;
                (program, Some(kernels))
            }
        };
        Ok(Executable { program, kernels })
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// How many fused kernels run as generated code.
    pub fn generated_kernels(&self) -> usize {
        self.kernels.as_ref().map(|k| k.kernel_count()).unwrap_or(0)
    }

    /// An interpreter over the program, handing the fused kernels to the backend.
    pub fn interpreter(&self) -> Result<Interpreter<'_>, RuntimeError> {
        let i = Interpreter::new(&self.program).map_err(|e| RuntimeError::Input(format!("invalid program: {e}")))?;
        Ok(match &self.kernels {
            Some(k) => i.with_accelerator(k),
            None => i,
        })
    }
}
