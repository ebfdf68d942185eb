//! Built-in models, written in the lsc DSL over primitive ops, with named
//! configs. `lsc models` lists this registry. Every model has a full-sequence
//! graph ([`build`]) and an incremental-decoding graph ([`build_decode`]).

#![warn(missing_docs)]

pub mod decode;
pub mod gam;
pub mod mor;
pub mod pawn;
pub mod transformer;

use lsc_ir::Program;
pub use transformer::TransformerConfig;

/// A built-in model.
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    /// Name used on the command line.
    pub name: &'static str,
    /// Configs it offers.
    pub configs: &'static [&'static str],
    /// One-line description.
    pub summary: &'static str,
}

/// Every built-in model.
pub const MODELS: [ModelInfo; 5] = [
    ModelInfo {
        name: "transformer",
        configs: &["tiny", "small", "long", "medium"],
        summary: "pre-norm decoder with causal multi-head self-attention (MHSA baseline)",
    },
    ModelInfo {
        name: "ls-transformer",
        configs: &["tiny", "small", "long", "medium"],
        summary: "the same decoder with LS-attention: half the heads local (causal window), half global",
    },
    ModelInfo {
        name: "gam",
        configs: &["tiny", "small", "long", "medium"],
        summary: "Gated Associative Memory: causal conv + memory retrieval + gate instead of attention",
    },
    ModelInfo {
        name: "trilm",
        configs: &["tiny", "small", "medium"],
        summary: "Spectra's TriLM: the transformer with ternary block weights (straight-through training)",
    },
    ModelInfo {
        name: "mor",
        configs: &["tiny", "small", "medium"],
        summary: "Mixture-of-Recursions: one shared block applied 4 times with expert-choice routing",
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
                let configs = info(m).map(|i| i.configs.join(", ")).unwrap_or_default();
                write!(f, "model `{m}` has no config `{c}`; choose one of {configs}")
            }
            ModelError::Build(e) => write!(f, "model definition failed: {e}"),
        }
    }
}

impl std::error::Error for ModelError {}

fn info(model: &str) -> Option<&'static ModelInfo> {
    MODELS.iter().find(|m| m.name == model)
}

/// The decoder config of a built-in model and config.
pub fn transformer_config(model: &str, config: &str) -> Result<TransformerConfig, ModelError> {
    let info = info(model).ok_or_else(|| ModelError::UnknownModel(model.to_string()))?;
    let unknown = || ModelError::UnknownConfig(model.into(), config.into());
    if !info.configs.contains(&config) {
        return Err(unknown());
    }
    let mut cfg = TransformerConfig::named(config, model == "ls-transformer").ok_or_else(unknown)?;
    if model == "trilm" {
        cfg.linear_quant = lsc_frontend::modules::WeightQuant::Ternary;
    }
    if model == "gam" || model == "mor" {
        // GAM has no attention; MoR's routed recursions attend over token
        // subsets whose positions the attention does not see.
        cfg.rope_base = None;
    }
    Ok(cfg)
}

fn built(r: Result<Program, lsc_frontend::DslError>) -> Result<Program, ModelError> {
    r.map_err(|e| ModelError::Build(e.to_string()))
}

fn mor_config(config: &str) -> Result<mor::MorConfig, ModelError> {
    transformer_config("mor", config)?;
    mor::MorConfig::named(config).ok_or_else(|| ModelError::UnknownConfig("mor".into(), config.into()))
}

/// Which graph of a model to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphKind {
    /// The training forward pass (for `mor`: expert-choice top-k with `aux_loss`).
    Forward,
    /// The causal inference pass (for `mor`: the `σ(logit) ≥ 0.5` rule).
    Inference,
    /// Incremental decoding with explicit state (see [`decode`]).
    Decode,
}

/// Builds one graph of a built-in model whose vocabulary has `vocab` tokens
/// (256 for bytes; a BPE tokenizer's size otherwise).
pub fn build_graph(model: &str, config: &str, vocab: usize, kind: GraphKind) -> Result<Program, ModelError> {
    if model == "mor" {
        let mut cfg = mor_config(config)?;
        cfg.base.vocab = vocab;
        return built(match kind {
            GraphKind::Forward => mor::build(&cfg, mor::Rule::TopK),
            GraphKind::Inference => mor::build(&cfg, mor::Rule::Threshold),
            GraphKind::Decode => mor::build_decode(&cfg),
        });
    }
    let mut cfg = transformer_config(model, config)?;
    cfg.vocab = vocab;
    built(match (model, kind) {
        ("gam", GraphKind::Decode) => gam::build_decode(&cfg),
        ("gam", _) => gam::build(&cfg),
        (_, GraphKind::Decode) => transformer::build_decode(&cfg),
        _ => transformer::build(&cfg),
    })
}

/// The byte vocabulary of every built-in config.
pub const BYTE_VOCAB: usize = 256;

/// Builds the forward graph of a built-in model (for `mor`: the expert-choice
/// training graph, with `aux_loss`).
pub fn build(model: &str, config: &str) -> Result<Program, ModelError> {
    build_graph(model, config, BYTE_VOCAB, GraphKind::Forward)
}

/// Builds the graph used for inference: causal for every model (for `mor`: the
/// `σ(logit) ≥ 0.5` rule); the same as [`build`] for the others.
pub fn build_inference(model: &str, config: &str) -> Result<Program, ModelError> {
    build_graph(model, config, BYTE_VOCAB, GraphKind::Inference)
}

/// Builds the incremental-decoding graph of a built-in model (see [`decode`]).
pub fn build_decode(model: &str, config: &str) -> Result<Program, ModelError> {
    build_graph(model, config, BYTE_VOCAB, GraphKind::Decode)
}

/// The weights a built-in model quantises in its forward pass, with their format.
pub fn quantized_weights(
    model: &str,
    config: &str,
) -> Result<Vec<(String, lsc_frontend::modules::WeightQuant)>, ModelError> {
    Ok(transformer_config(model, config)?.quantized_weights())
}

/// The longest sequence a built-in model accepts.
pub fn max_seq_len(model: &str, config: &str) -> Result<usize, ModelError> {
    Ok(transformer_config(model, config)?.max_pos)
}

/// `program` with one more output, `features`: the last hidden state, the
/// `[B, T, d]` value that `lm_head` reads (after the final norm), for linear
/// probes and detectors of frozen models.
pub fn with_features(program: &Program) -> Result<Program, ModelError> {
    let g = &program.main;
    let head = g.dag.node_indices().find_map(|n| {
        let lsc_ir::Op::MatMul { .. } = g.node(n).op else { return None };
        let [x, w] = g.operands(n)[..] else { return None };
        matches!(&g.node(w.node).op, lsc_ir::Op::Param { name } if name == "lm_head.weight").then_some(x)
    });
    let x = head
        .ok_or_else(|| ModelError::Build("the graph has no `lm_head.weight` product to read features from".into()))?;
    let mut out = program.clone();
    out.main.outputs.push(("features".into(), x));
    Ok(out)
}
