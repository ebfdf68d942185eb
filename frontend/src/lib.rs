//! The lsc DSL: build graph IR from Rust.
//!
//! ```
//! use lsc_frontend::{ModelBuilder, modules::Linear};
//! use lsc_ir::{DType, Dim};
//!
//! let b = ModelBuilder::new();
//! let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::new(16)]);
//! let y = Linear::new(&b, "proj", 16, 4, true).forward(&x).silu();
//! b.output("y", &y);
//! let program = b.finish().expect("well-typed");
//! assert_eq!(program.main.params().len(), 2);
//! ```
//!
//! Shape errors never panic: the first one is recorded with the caller's
//! `file:line:col` and returned by [`ModelBuilder::finish`].
//!
//! | module | contents |
//! |---|---|
//! | [`builder`] | [`ModelBuilder`]: inputs, parameters, constants, outputs, functions, loops |
//! | [`tensor`] | [`Tensor`] and the primitive ops, with operator overloading |
//! | [`modules`] | Linear, Embedding, RMSNorm, LayerNorm, attention (MHSA, LS), SwiGLU, GELU MLP |

#![warn(missing_docs)]

pub mod builder;
pub mod error;
pub mod modules;
pub mod tensor;

pub use builder::ModelBuilder;
pub use error::DslError;
pub use tensor::Tensor;
