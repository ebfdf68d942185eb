//! `lsc`: compile, inspect and run the built-in models and your own `.lsir` graphs.

mod args;
mod commands;
mod error;
mod plot;
mod source;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lsc",
    version,
    about = "A compiler and runtime for LS-attention, MoR, GAM and ternary language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the program comes from: a built-in model or a `.lsir` file.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Built-in model name (see `lsc models`).
    #[arg(long, conflicts_with = "ir", required_unless_present = "ir")]
    pub model: Option<String>,
    /// Config of the built-in model.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// A `.lsir` file instead of a built-in model.
    #[arg(long)]
    pub ir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// List the built-in models and their configs.
    Models,
    /// Compile a model and write the requested artifacts and a manifest.json.
    Compile {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated artifacts to write: ir, opt-ir, egraph-stats, plan, kernels, kir, clif, ll, asm, obj (CPU), ptx (with `--target cuda`); ll, asm, obj and ptx need `--features llvm`.
        #[arg(long, default_value = "ir", value_delimiter = ',')]
        emit: Vec<String>,
        /// Output folder (created if missing).
        #[arg(short = 'o', long = "out-dir", default_value = "out")]
        out_dir: PathBuf,
        /// Compile the training step (forward, backward, AdamW update) instead of the forward pass.
        #[arg(long)]
        train: bool,
        /// With --train: differentiate calls as `call f__vjp`, which recomputes the callee,
        /// instead of inlining them so that the backward keeps the forward values.
        #[arg(long, requires = "train")]
        recompute_calls: bool,
        /// Compile the causal inference graph that `lsc run` executes (for `mor`: the
        /// σ(router) ≥ 0.5 rule, whose recursion steps the `routed` rules route).
        #[arg(long, conflicts_with = "train")]
        inference: bool,
        /// Compile one step of incremental decoding (new tokens against the KV or convolution caches).
        #[arg(long, conflicts_with_all = ["train", "inference"])]
        decode: bool,
        /// Only these rule groups in equality saturation (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        rules: Vec<String>,
        /// Skip these rule groups (ablations).
        #[arg(long, value_delimiter = ',')]
        no_rules: Vec<String>,
        /// Saturation bounds per graph: e-nodes, iterations per stage, milliseconds.
        #[command(flatten)]
        bounds: commands::compile::Bounds,
    },
    /// Benchmarks against a baseline timed in the same run; `--calibrate` measures the machine.
    Bench(commands::bench::BenchArgs),
    /// Parse and verify a `.lsir` file.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Train a built-in model on text (progress bar, metrics.jsonl, checkpoints, plots).
    Train(commands::train::TrainArgs),
    /// Mean loss per token over non-overlapping context windows (and n-gram baselines).
    Eval(commands::eval::EvalArgs),
    /// AI-generated text detection with PAWN over a frozen language model's cached features.
    Detect {
        #[command(subcommand)]
        command: commands::detect::DetectCommand,
    },
    /// Hessian trace (Hutchinson), top eigenvalue and Fisher trace of the loss at a model's weights.
    Flatness(commands::flatness::FlatnessArgs),
    /// Reproduce a seed paper's claim at small scale: report.md, plots and metrics.jsonl.
    Repro(commands::repro::ReproArgs),
    /// Quantise a checkpoint's linear weights (round-to-nearest or GPTQ) into a new checkpoint.
    Quantize(commands::quantize::QuantizeArgs),
    /// Sample text from a checkpoint with the incremental-decoding state.
    Generate(commands::generate::GenerateArgs),
    /// Run a model: top-5 next bytes for a prompt, or batch logits from a file.
    Run {
        #[command(flatten)]
        model: ModelArgs,
        /// Weights (safetensors by parameter name, or a training checkpoint); random init from --seed if absent.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Accept --weights holding tensors the model does not use (each is named in a warning).
        #[arg(long, requires = "weights")]
        allow_unused: bool,
        /// Seed of the random initialisation used without --weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Text whose next byte to predict.
        #[arg(long, conflicts_with = "inputs", required_unless_present = "inputs")]
        prompt: Option<String>,
        /// Safetensors file with `input_ids` (I64 [B, T]) for batch inference.
        #[arg(long, requires = "out")]
        inputs: Option<PathBuf>,
        /// Where batch inference writes `logits` (F32 [B, T, V]).
        #[arg(long, requires = "inputs")]
        out: Option<PathBuf>,
        #[command(flatten)]
        backend: source::BackendArg,
    },
}

/// The main thread's stack: compiler passes recurse over graphs, and a
/// hostile `.lsir` must get an error, not a stack overflow that aborts.
const STACK_BYTES: usize = 256 << 20;

fn main() -> ExitCode {
    match std::thread::Builder::new().stack_size(STACK_BYTES).spawn(lsc_main).map(|t| t.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => ExitCode::from(101),
        Err(e) => {
            eprintln!("error: cannot start the main thread: {e}");
            ExitCode::from(2)
        }
    }
}

fn lsc_main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned());
        eprintln!("internal error: {} (this is a bug in lsc; please report it)", msg.unwrap_or_else(|| "panic".into()));
    }));
    lsc_runtime::allocator::keep_freed_memory();
    lsc_runtime::resources::report_file_size_limit_as_error();
    lsc_runtime::resources::end_quietly_on_closed_pipe();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Train(args), Some(m)) = (&mut cli.command, matches.subcommand_matches("train")) {
        args.explicit = m
            .ids()
            .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
            .map(|id| id.to_string())
            .collect();
    }
    let result = match cli.command {
        Command::Models => commands::models::run(),
        Command::Compile {
            model,
            emit,
            out_dir,
            train,
            recompute_calls,
            inference,
            decode,
            rules,
            no_rules,
            bounds,
        } => {
            let graph = match (train, inference, decode) {
                (true, ..) => commands::compile::Graph::TrainingStep { recompute_calls },
                (_, true, _) => commands::compile::Graph::Inference,
                (.., true) => commands::compile::Graph::Decode,
                _ => commands::compile::Graph::Forward,
            };
            commands::compile::run(&model, &emit, &out_dir, graph, &rules, &no_rules, &bounds)
        }
        Command::Check { file } => commands::check::run(&file),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Train(args) => commands::train::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Quantize(args) => commands::quantize::run(&args),
        Command::Flatness(args) => commands::flatness::run(&args),
        Command::Detect { command } => commands::detect::run(&command),
        Command::Repro(args) => commands::repro::run(&args),
        Command::Generate(args) => commands::generate::run(&args),
        Command::Run { model, weights, allow_unused, seed, prompt, inputs, out, backend } => commands::run::run(
            &model,
            weights.as_deref().map(|path| commands::run::Weights { path, allow_unused }),
            seed,
            prompt.as_deref(),
            inputs.as_deref(),
            out.as_deref(),
            backend.run_on(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
