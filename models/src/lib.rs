//! Built-in models, written in the lsc DSL over primitive ops, with named
//! configs. `lsc models` lists this registry.

pub mod decode;
pub mod transformer;

use lsc_ir::Program;
pub use transformer::TransformerConfig;

/// The configs every built-in model offers.
pub const CONFIGS: [&str; 3] = ["tiny", "small", "long"];

/// A built-in model.
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    /// Name used on the command line.
    pub name: &'static str,
    /// One-line description.
    pub summary: &'static str,
}

/// Every built-in model.
pub const MODELS: [ModelInfo; 2] = [
    ModelInfo {
        name: "transformer",
        summary: "pre-norm decoder with causal multi-head self-attention (MHSA baseline)",
    },
    ModelInfo {
        name: "ls-transformer",
        summary: "the same decoder with LS-attention: half the heads local (causal window), half global",
    },
];

/// Why a model could not be built.
#[derive(Debug, PartialEq)]
pub enum ModelError {
    /// No such model.
    UnknownModel(String),
    /// The model has no such config.
    UnknownConfig(String, String),
    /// The model's DSL code failed (a bug in the model definition).
    Build(String),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::UnknownModel(m) => {
                let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
                write!(f, "unknown model `{m}`; choose one of {} (see `lsc models`)", names.join(", "))
            }
            ModelError::UnknownConfig(m, c) => {
                write!(f, "model `{m}` has no config `{c}`; choose one of {}", CONFIGS.join(", "))
            }
            ModelError::Build(e) => write!(f, "model definition failed: {e}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// The transformer config of a built-in model, if it is one.
pub fn transformer_config(model: &str, config: &str) -> Result<TransformerConfig, ModelError> {
    let local = match model {
        "transformer" => false,
        "ls-transformer" => true,
        other => return Err(ModelError::UnknownModel(other.to_string())),
    };
    TransformerConfig::named(config, local).ok_or_else(|| ModelError::UnknownConfig(model.into(), config.into()))
}

/// Builds the forward graph of a built-in model.
pub fn build(model: &str, config: &str) -> Result<Program, ModelError> {
    let cfg = transformer_config(model, config)?;
    transformer::build(&cfg).map_err(|e| ModelError::Build(e.to_string()))
}

/// Builds the incremental-decoding graph of a built-in model (see [`decode`]).
pub fn build_decode(model: &str, config: &str) -> Result<Program, ModelError> {
    let cfg = transformer_config(model, config)?;
    transformer::build_decode(&cfg).map_err(|e| ModelError::Build(e.to_string()))
}

/// The longest sequence a built-in model accepts.
pub fn max_seq_len(model: &str, config: &str) -> Result<usize, ModelError> {
    Ok(transformer_config(model, config)?.max_pos)
}
