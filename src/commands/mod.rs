//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod compile;
pub mod cuda;
pub mod detect;
pub mod eval;
pub mod flatness;
pub mod generate;
pub mod gpubench;
pub mod kernels;
pub mod microbench;
pub mod models;
pub mod quantize;
pub mod repro;
pub mod resume;
pub mod run;
pub mod train;
