//! Loads the program named on the command line: a built-in model or a `.lsir` file.

use crate::error::CliError;
use crate::ModelArgs;
use lsc_ir::Program;

/// Which graph of a built-in model to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelGraph {
    /// The training forward pass.
    Forward,
    /// The causal inference pass.
    Inference,
    /// One step of incremental decoding.
    Decode,
}

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

/// Reads a `.lsir` file as text; bytes that are not UTF-8 are an error with
/// their line and column.
pub fn read_lsir(path: &std::path::Path) -> Result<String, CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::with_fix(format!("{}: {e}", path.display()), "check the path"))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
        let col = 1 + good.iter().rev().take_while(|&&b| b != b'\n').count();
        CliError::with_fix(
            format!("{}:{line}:{col}: the file is not UTF-8 text (byte {})", path.display(), good.len()),
            "a .lsir file is UTF-8 text; regenerate it with `lsc compile --emit ir`",
        )
    })
}

/// Builds or parses the program selected by `args`. With `inference`, built-in
/// models use their causal inference graph (MoR's `σ(logit) ≥ 0.5` rule).
pub fn load(args: &ModelArgs, graph: ModelGraph) -> Result<Source, CliError> {
    if let Some(path) = &args.ir {
        let text = read_lsir(path)?;
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
    let build = match graph {
        ModelGraph::Forward => lsc_models::build,
        ModelGraph::Inference => lsc_models::build_inference,
        ModelGraph::Decode => lsc_models::build_decode,
    };
    let program = build(&model, &args.config).map_err(|e| CliError::new(e.to_string()))?;
    let max_len = lsc_models::max_seq_len(&model, &args.config).ok();
    Ok(Source { name: model, config: Some(args.config.clone()), program, max_len })
}

/// Where a trained model comes from: `--ckpt CKPT`, or a built-in `--model`
/// (with `--weights`, or randomly initialised).
#[derive(clap::Args, Debug, Clone)]
pub struct TrainedArgs {
    /// A training checkpoint (model, config, weights, tokenizer and training data).
    #[arg(long, required_unless_present = "model")]
    pub ckpt: Option<std::path::PathBuf>,
    /// A built-in model instead of a checkpoint.
    #[arg(long, conflicts_with = "ckpt")]
    pub model: Option<String>,
    /// Config of --model.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Weights for --model (safetensors by name, or a training checkpoint; random init from --seed if absent).
    #[arg(long, requires = "model")]
    pub weights: Option<std::path::PathBuf>,
    /// Accept --weights holding tensors the model does not use (each is named in a warning).
    #[arg(long, requires = "weights")]
    pub allow_unused: bool,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// `--backend`, the same on every command: one of the backends this build has.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct BackendArg {
    /// What runs the program (the default is the first one this build has; an unbuilt one names its cargo feature).
    #[arg(long = "backend", value_enum, default_value_t = lsc_runtime::backend::Backend::default())]
    pub backend: lsc_runtime::backend::Backend,
    /// Precision of matrix products: f32, or bf16 operands with f32 accumulation (GPU backends).
    #[arg(long = "precision", value_enum, default_value_t = lsc_runtime::target::gpu::Precision::F32)]
    pub precision: lsc_runtime::target::gpu::Precision,
}

impl BackendArg {
    /// Where the program runs.
    pub fn run_on(&self) -> lsc_runtime::backend::RunOn {
        lsc_runtime::backend::RunOn { backend: self.backend, precision: self.precision }
    }
}

/// A model with its parameters and tokenizer.
pub struct Trained {
    /// Built-in model name.
    pub model: String,
    /// Its config.
    pub config: String,
    /// Parameters.
    pub params: lsc_interp::Tensors<f32>,
    /// How text maps to ids.
    pub tokenizer: lsc_runtime::tokenizer::Tokenizer,
    /// The data it was trained on (checkpoints only).
    pub data: Option<String>,
}

/// Loads `--ckpt` or builds `--model` (initialised from `seed` without `--weights`).
pub fn load_trained(a: &TrainedArgs, seed: u64) -> Result<Trained, CliError> {
    use lsc_runtime::tokenizer::Tokenizer;
    if let Some(path) = &a.ckpt {
        let ckpt = lsc_runtime::checkpoint::Checkpoint::load(path)?;
        let field = |k: &str| ckpt.meta.train[k].as_str().unwrap_or_default().to_string();
        let tokenizer = match &ckpt.tokenizer {
            Some(json) => Tokenizer::from_json(json)?,
            None => Tokenizer::Bytes,
        };
        return Ok(Trained {
            model: field("model"),
            config: field("config"),
            data: Some(field("data")),
            params: ckpt.params,
            tokenizer,
        });
    }
    let model = a.model.clone().unwrap_or_default();
    let program = lsc_models::build(&model, &a.config).map_err(|e| CliError::new(e.to_string()))?;
    let params = match &a.weights {
        Some(w) => weights_for(w, &program, Some((&model, &a.config)), a.allow_unused)?,
        None => lsc_runtime::init::init_params(&program, seed).map_err(CliError::new)?,
    };
    Ok(Trained { model, config: a.config.clone(), params, tokenizer: Tokenizer::Bytes, data: None })
}

/// The parameters of `program` from `path`. A tensor the program does not use
/// means the weights were made for another model or config, so it is an error
/// naming it and the built-in models and configs that do use it, unless
/// `allow_unused` (then each is a warning). `model` names the program when it
/// is a built-in one.
pub fn weights_for(
    path: &std::path::Path,
    program: &Program,
    model: Option<(&str, &str)>,
    allow_unused: bool,
) -> Result<lsc_interp::Tensors<f32>, CliError> {
    let (params, unused) = lsc_runtime::checkpoint::load_params(path, program)?;
    let Some(first) = unused.first() else { return Ok(params) };
    if allow_unused {
        for name in &unused {
            eprintln!("warning: {}: ignoring tensor `{name}`, which the model does not use", path.display());
        }
        return Ok(params);
    }
    let this = model.map_or_else(|| "the program".to_string(), |(m, c)| format!("{m}/{c}"));
    let users: Vec<String> = lsc_models::MODELS
        .iter()
        .flat_map(|m| m.configs.iter().map(move |c| (m.name, *c)))
        .filter(|(m, c)| lsc_models::build(m, c).is_ok_and(|p| p.main.params().iter().any(|(_, n)| n == first)))
        .map(|(m, c)| format!("{m}/{c}"))
        .collect();
    let used_by =
        if users.is_empty() { String::new() } else { format!(" (it is a parameter of {})", users.join(", ")) };
    let more = if unused.len() > 1 { format!(" and {} more", unused.len() - 1) } else { String::new() };
    Err(CliError::with_fix(
        format!("{}: tensor `{first}`{more} is not used by {this}{used_by}: the weights were made for another model or config", path.display()),
        "pass the matching --model/--config, or --allow-unused to run without those tensors",
    ))
}
