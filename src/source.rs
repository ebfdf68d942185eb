//! Loads the program named on the command line: a built-in model or a `.lsir` file.

use crate::error::CliError;
use crate::ModelArgs;
use lsc_ir::Program;

/// A program with its display name and, for built-ins, the longest sequence it accepts.
pub struct Source {
    /// `transformer`, `ls-transformer`, or the `.lsir` file stem.
    pub name: String,
    /// Config name for built-ins.
    pub config: Option<String>,
    /// The verified program.
    pub program: Program,
    /// Longest sequence, if known.
    pub max_len: Option<usize>,
}

/// Builds or parses the program selected by `args`. With `inference`, built-in
/// models use their causal inference graph (MoR's `σ(logit) ≥ 0.5` rule).
pub fn load(args: &ModelArgs, inference: bool) -> Result<Source, CliError> {
    if let Some(path) = &args.ir {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::with_fix(format!("{}: {e}", path.display()), "check the path"))?;
        let program = lsc_ir::parse_and_verify(&text).map_err(|e| {
            CliError::with_fix(
                format!("{}:{e}", path.display()),
                "fix the .lsir file (`lsc check` reports the same error)",
            )
        })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "program".into());
        return Ok(Source { name, config: None, program, max_len: None });
    }
    let model = args.model.clone().unwrap_or_default();
    let build = if inference { lsc_models::build_inference } else { lsc_models::build };
    let program = build(&model, &args.config).map_err(|e| CliError::new(e.to_string()))?;
    let max_len = lsc_models::max_seq_len(&model, &args.config).ok();
    Ok(Source { name: model, config: Some(args.config.clone()), program, max_len })
}
