//! The lsc runtime: programs on a backend (the reference interpreter, or
//! compiled plans on a target), training, decoding, evaluation, checkpoints,
//! weights and data.
//!
//! | module | contents |
//! |---|---|
//! | [`allocator`] | heap settings for the process, and giving compile-time memory back |
//! | [`backend`] | the registry of backends, and programs loaded on one at fixed shapes |
//! | [`exec`] | the executor of compiled plans: memory once, launches in order |
//! | [`gpu`] | plans lowered for a GPU: generated kernels, library calls (cuBLAS), unsupported ops |
//! | [`target`] | where plans run: memory, kernels and library ops (the host CPU) |
//! | [`calibrate`] | FMA peak, bandwidth and op cost of this machine for the cost model |
//! | [`data`] | byte-token text splits |
//! | [`detect`] | AI-text detection: labelled texts, cached next-token features of a frozen LM, accuracy / macro-F1 / AUROC |
//! | [`eval`] | mean NLL over non-overlapping context windows |
//! | [`fit`] | fitting any program with a scalar `loss` (a detector head) with lsc's optimizers |
//! | [`flatness`] | the loss's Hessian trace (Hutchinson), top eigenvalue and Fisher trace |
//! | [`tokenizer`] | bytes or BPE (`bpe` feature) |
//! | [`init`] | seeded, per-name parameter initialisation |
//! | [`weights`] | safetensors load/save by name, atomic writes, stale temp files |
//! | [`keeper`] | which training checkpoints reach the disk: the loss watch and the held checkpoint |
//! | [`resources`] | available memory checked before work; file-size limits as errors |
//! | [`probe`] | linear probes of frozen features (logistic regression, held-out accuracy) |
//! | [`pawn`] | training and running PAWN's detector head on cached features |
//! | [`prepare`] | inference programs: saturated, parameter-only work done once |
//! | [`numerics`] | the project-wide `allclose` and its tolerances |
//! | [`quant`] | packed ternary and group-wise k-bit formats, bit accounting |
//! | [`hmm`] | a hidden-Markov-model language with its exact optimal loss and state posteriors |
//! | [`gptq`] | post-training quantisation of linear weights: round-to-nearest and GPTQ |
//! | [`generate`] | logits and next-token distributions |
//! | [`error`] | [`RuntimeError`] |

#![warn(missing_docs)]

pub mod allocator;
pub mod backend;
pub mod calibrate;
pub mod checkpoint;
pub mod data;
pub mod detect;
pub mod error;
pub mod eval;
pub mod exec;
pub mod fit;
pub mod flatness;
pub mod generate;
pub mod gptq;
pub mod gpu;
pub mod hmm;
pub mod init;
pub mod keeper;
pub mod ngram;
pub mod numerics;
pub mod pawn;
pub mod prepare;
pub mod probe;
pub mod quant;
pub mod resources;
pub mod schedule;
pub mod target;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use error::RuntimeError;
