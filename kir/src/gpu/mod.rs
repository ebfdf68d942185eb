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
//! | `indexing` | gather, scatter, scatter_add (each output element scanning the index entries that could name it) and topk (by rank), behind [`movement::op_kernel`] |
//! | [`movement`] | data movement and integer/boolean elementwise ops (constant, iota, cast, slice, concat, broadcast, transpose, embedding, comparisons, select, cache updates) as grid-stride kernels |
//! | [`attention`] | LS-attention forward: a warp per query row, key tiles of 32 with an online softmax, a local head visiting only its window |
//! | [`routing`] | a routed call's packing: active rows by a warp prefix sum per sequence, pack and unpack |
//! | [`ternary`] | packing ternary weights into bit planes, and the packed product (adds and subtracts of x by plane bits) |
//! | [`training`] | softmax + cross-entropy with its gradient (a block per row), AdamW over every parameter in one launch |
//! | [`conv`] | GAM's causal depthwise convolution and its gradient (`d_x` per element, `d_w` a block per tap) |
//! | [`attention_grad`] | LS-attention backward: row statistics, `d_k`/`d_v` a warp per key row over the queries that see it, `d_q` a warp per query row |
//! | [`gam`] | GAM's fused mixer: a warp per position, an online softmax over memory-slot tiles, the convolution and gates per column |
//! | [`eval`] | the GPU-semantics evaluator: every block and thread, barrier phases, shared memory, warp lanes; it reports races and divergent barriers |

pub mod attention;
pub mod attention_grad;
mod build;
pub mod conv;
pub mod eval;
pub mod gam;
mod indexing;
pub mod lower;
pub mod movement;
pub mod routing;
pub mod ternary;
pub mod training;
