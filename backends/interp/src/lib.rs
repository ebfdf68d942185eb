//! The lsc reference interpreter: executes any verified program (`Loop` and
//! `Call` included) on the CPU in `f32`, or in `f64` for gradient and
//! numerics checks. Simple and obviously right; matmuls call a packed GEMM
//! (lsc's own AVX-512 kernels in f32 where the CPU has them, `matrixmultiply`
//! otherwise) so that small models train at a practical speed.
//!
//! | module | contents |
//! |---|---|
//! | [`exec`] | [`Interpreter`]: symbol binding, graph walk, control flow |
//! | [`kernels`] | one implementation per primitive op |
//! | [`attention`] | fused (LS-)attention forward and backward, blocked over query rows with GEMMs |
//! | [`fused`] | the fused ops of the rewrite passes (cross-entropy, AdamW, ternary, GAM) |
//! | [`value`] | runtime tensors |
//! | [`gemm`] | the f32 GEMM for AVX-512 CPUs: packed panels and a 14×32 micro-kernel |
//! | [`math`] | the float trait, erf/GELU, round-half-even |

#![warn(missing_docs)]

pub mod attention;
pub mod exec;
pub mod flash;
pub mod fused;
pub mod gemm;
pub mod kernels;
pub mod math;
pub mod routing;
pub mod rows;
pub mod ternary;
pub mod value;

pub use exec::{Accelerator, FusedGroup, InterpError, Interpreter, Tensors};
pub use math::Real;
pub use value::{Buffer, Value};
