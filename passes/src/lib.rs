//! Graph-to-graph passes: autodiff, the training-step construction,
//! equality saturation, partitioning, memory planning, dead-code elimination
//! and program statistics.
//!
//! | module | contents |
//! |---|---|
//! | [`autodiff`] | reverse-mode autodiff as a graph transformation, the open VJP table |
//! | [`hessian`] | the loss's gradient and exact Hessian-vector products (reverse over reverse) |
//! | [`train`] | one training-step graph: loss, gradients, clipping, AdamW/SGD; `objective_step` for any scalar `loss` |
//! | [`saturate`] | equality saturation with egg: rule groups, cost model, DAG-aware extraction |
//! | [`routing`] | whether a function may run on the active rows only (`routed_call`) |
//! | [`inline`] | `main`'s calls replaced by their callees' bodies (the training step keeps forward values) |
//! | [`specialize`] | functions specialised on the constant arguments all their calls pass |
//! | [`fused`] | the fused ops, one module each: the rules that make them, their VJPs and costs |
//! | [`dce`] | dead-code elimination |
//! | [`plan`] | compiled programs: launches over a planned arena, at bound shapes |
//! | [`partition`] | the optimised graph grouped into kernels (fused elementwise chains, library ops) |
//! | [`hoist`] | parameter-only work split out, computed once per set of weights |
//! | [`stats`] | op histograms, primitive checks, parameter counts |

#![warn(missing_docs)]

pub mod autodiff;
pub mod dce;
pub mod fused;
pub mod hessian;
pub mod hoist;
pub mod inline;
pub mod partition;
pub mod plan;
pub mod routing;
pub mod saturate;
pub mod specialize;
pub mod stats;
pub mod train;

pub use dce::eliminate_dead_code;
pub use stats::{non_primitive_ops, op_histogram, parameter_count};
