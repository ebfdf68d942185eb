//! One module per subcommand.

pub mod check;
pub mod compile;
pub mod models;
pub mod run;
