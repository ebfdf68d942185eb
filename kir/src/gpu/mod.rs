//! GPU kernels in kernel IR. A GPU kernel is a [`Kernel`](crate::Kernel)
//! with a [`Launch`](crate::Launch): its body runs once per thread of a
//! one-dimensional grid of blocks, reads its position through
//! [`LaunchIndex`](crate::LaunchIndex) expressions, and may use per-block
//! shared arrays, per-thread local arrays, barriers and warp operations
//! ([`GpuStmt`](crate::GpuStmt)).
//!
//! | module | contents |
//! |---|---|
//! | [`lower`] | a fused elementwise/row group → a GPU kernel: a grid-stride loop over elements, or one block per row with a block-wide reduction (warp butterflies, then one shared slot per warp) |
//! | [`eval`] | the GPU-semantics evaluator: every block and thread, barrier phases, shared memory, warp lanes; it reports races and divergent barriers |

pub mod eval;
pub mod lower;
