//! Where compiled programs run. A [`Target`] owns memory (allocation and the
//! copies in and out), turns fused groups into kernels it can launch, and runs
//! library ops through its own op library; the executor ([`crate::exec`])
//! only walks launches. The host CPU is one implementation ([`host`]); a GPU
//! is another implementation of the same trait; [`emulated`] is one that runs
//! the GPU's kernels in the GPU-semantics evaluator.

pub mod gpu;
pub mod host;

use lsc_interp::routing::ActiveRows;
use lsc_interp::Value;
use lsc_ir::{DType, Op};
use lsc_kir::lower::Group;

/// A tensor in a target's memory: which memory, where in it, and its type.
#[derive(Debug)]
pub struct At<'a, M> {
    /// The memory (an arena, or an input or parameter buffer).
    pub memory: &'a M,
    /// Byte offset of the first element.
    pub offset: u64,
    /// Element type (its storage follows `lsc_passes::plan::storage_bytes`).
    pub dtype: DType,
    /// Concrete dimensions.
    pub shape: &'a [usize],
}

impl<M> Clone for At<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for At<'_, M> {}

/// The interface a compiled program runs on.
///
/// The executor guarantees that within one call, the tensors written do not
/// overlap each other or the tensors read, except the target of
/// [`Target::run_in_place`].
pub trait Target {
    /// One allocation (an arena, or an input or parameter buffer).
    type Memory;
    /// A compiled kernel.
    type Kernel;

    /// A short name (`cpu`).
    fn name(&self) -> String;
    /// Bytes this target can allocate now, where known: a plan that needs more
    /// is refused before any of it is allocated.
    fn available_memory(&self) -> Option<u64> {
        None
    }
    /// `bytes` of memory (contents unspecified).
    fn allocate(&self, bytes: u64) -> Result<Self::Memory, String>;
    /// Writes `value` (of the tensor's dtype kind and shape) into `to`.
    fn upload(&self, to: At<'_, Self::Memory>, value: &Value<f32>) -> Result<(), String>;
    /// Reads `from` back.
    fn download(&self, from: At<'_, Self::Memory>) -> Result<Value<f32>, String>;
    /// Copies one tensor to another of the same type.
    fn copy(&self, from: At<'_, Self::Memory>, to: At<'_, Self::Memory>) -> Result<(), String>;
    /// Generates the kernel of a fused group.
    fn compile(&self, group: &Group) -> Result<Self::Kernel, String>;
    /// Runs a kernel on its input and output tensors.
    fn launch(
        &self,
        kernel: &Self::Kernel,
        inputs: &[At<'_, Self::Memory>],
        outputs: &[At<'_, Self::Memory>],
    ) -> Result<(), String>;
    /// Runs a library op (every op but leaves with an identity and control flow).
    fn run_op(&self, op: &Op, inputs: &[At<'_, Self::Memory>], outputs: &[At<'_, Self::Memory>]) -> Result<(), String>;
    /// Runs an op that writes its result over `target` (`cache_update`, `scatter`, `scatter_add`).
    fn run_in_place(
        &self,
        op: &Op,
        target: At<'_, Self::Memory>,
        inputs: &[At<'_, Self::Memory>],
    ) -> Result<(), String>;
    /// The active rows of a `bool[B, T]` mask (a routed call's).
    fn active_rows(&self, mask: At<'_, Self::Memory>) -> Result<ActiveRows, String>;
    /// Waits for all work queued so far (a no-op where launches are synchronous).
    fn synchronize(&self) -> Result<(), String> {
        Ok(())
    }
    /// Packs (`pack`) or unpacks the active rows of `from` into `to`.
    fn move_rows(
        &self,
        rows: &ActiveRows,
        pack: bool,
        from: At<'_, Self::Memory>,
        to: At<'_, Self::Memory>,
    ) -> Result<(), String>;
}
