//! Graph-to-graph passes. Today: dead-code elimination and program
//! statistics; autodiff, equality saturation, partitioning, memory planning
//! and kernel IR lowering live here as they are built.
//!
//! | module | contents |
//! |---|---|
//! | [`dce`] | dead-code elimination |
//! | [`stats`] | op histograms, primitive checks, parameter counts |

pub mod autodiff;
pub mod dce;
pub mod stats;
pub mod train;

pub use dce::eliminate_dead_code;
pub use stats::{non_primitive_ops, op_histogram, parameter_count};
