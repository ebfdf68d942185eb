//! The lsc reference interpreter: executes any verified program (`Loop`,
//! `Call` and `routed_call` included) on the CPU in `f32`, or in `f64` for
//! gradient and numerics checks. Its kernels are plain loops, written to be
//! obviously right rather than fast: they are the ground truth every
//! generated kernel, library kernel and compiled program is tested against.
//!
//! | module | contents |
//! |---|---|
//! | [`exec`] | [`Interpreter`]: symbol binding, graph walk, control flow |
//! | [`kernels`] | one implementation per op, writing into outputs the caller allocated |
//! | [`value`] | owned tensors ([`Value`]) and the views kernels read and write |
//! | [`routing`] | packing and unpacking the active rows of a `routed_call` |
//! | [`ternary`] | packed ternary matrices (two bit planes) |
//! | [`math`] | the float trait, erf/GELU, sigmoid, round-half-even |

#![warn(missing_docs)]

pub mod exec;
pub mod kernels;
pub mod math;
pub mod routing;
pub mod ternary;
pub mod value;

pub use exec::{InterpError, Interpreter, Tensors};
pub use math::Real;
pub use value::{Buffer, Data, DataMut, Storage, Value, View, ViewMut};
