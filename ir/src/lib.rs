//! The lsc graph IR: typed dataflow graphs over a primitive op set, with
//! symbolic shapes, structured control flow (`Loop`, `Call`), a verifier and
//! the `.lsir` text format.
//!
//! | module | contents |
//! |---|---|
//! | [`dtype`] | element types |
//! | [`dim`] | symbolic dimensions and element-count polynomials |
//! | [`types`] | tensor types |
//! | [`op`] | the op set and its attributes |
//! | [`infer`] | each op's typing rule |
//! | [`graph`] | graphs (petgraph) and programs |
//! | [`symbols`] | derived shape symbols (capacities) |
//! | [`verify`] | the verifier and its named rules |
//! | [`print`], [`parse`] | the `.lsir` text format |

#![warn(missing_docs)]

pub mod dim;
pub mod dtype;
pub mod graph;
pub mod infer;
pub mod op;
pub mod parse;
pub mod print;
pub mod symbols;
pub mod types;
pub mod verify;

pub use dim::{Bindings, Dim};
pub use dtype::DType;
pub use graph::{Graph, Node, NodeId, Program, ValueRef};
pub use infer::{Signature, Signatures};
pub use op::{BinaryOp, CmpOp, Op, ReduceKind, UnaryOp};
pub use parse::{parse_and_verify, parse_program, ParseError};
pub use print::print_program;
pub use symbols::DerivedSymbol;
pub use types::TensorType;
pub use verify::{verify, Rule, VerifyError};
