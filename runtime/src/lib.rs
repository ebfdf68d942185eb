//! The lsc runtime: parameter initialisation, safetensors weights with atomic
//! writes, the numerics contract, and inference helpers over the interpreter.
//!
//! | module | contents |
//! |---|---|
//! | [`allocator`] | keeps freed tensor memory in the process (no page faults per step) |
//! | [`backend`] | the registry of backends, and programs loaded on one at fixed shapes |
//! | [`exec`] | the executor of compiled plans: memory once, launches in order |
//! | [`target`] | where plans run: memory, kernels and library ops (the host CPU) |
//! | [`calibrate`] | FMA peak, bandwidth and op cost of this machine for the cost model |
//! | [`data`] | byte-token text splits |
//! | [`eval`] | mean NLL over non-overlapping context windows |
//! | [`tokenizer`] | bytes or BPE (`bpe` feature) |
//! | [`init`] | seeded, per-name parameter initialisation |
//! | [`weights`] | safetensors load/save by name, atomic writes |
//! | [`prepare`] | inference programs: saturated, parameter-only work done once |
//! | [`numerics`] | the project-wide `allclose` and its tolerances |
//! | [`quant`] | packed ternary and group-wise k-bit formats, bit accounting |
//! | [`generate`] | logits and next-token distributions |
//! | [`error`] | [`RuntimeError`] |

#![warn(missing_docs)]

pub mod allocator;
pub mod backend;
pub mod calibrate;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod exec;
pub mod generate;
pub mod init;
pub mod ngram;
pub mod numerics;
pub mod prepare;
pub mod quant;
pub mod schedule;
pub mod target;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use error::RuntimeError;
