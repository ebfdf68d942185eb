//! `lsc quantize`: post-training quantisation of a checkpoint's linear
//! weights by round-to-nearest or GPTQ, into a checkpoint that `eval`,
//! `generate` and `run --weights` read like any other.

use crate::error::{CliError, CliResult};
use lsc_interp::{Tensors, Value};
use lsc_ir::{Op, Program, ValueRef};
use lsc_runtime::checkpoint::Checkpoint;
use lsc_runtime::data::{self, Split};
use lsc_runtime::gptq::{self, Hessian};
use lsc_runtime::quant::dequantize_groupwise;
use lsc_runtime::tokenizer::Tokenizer;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The methods of `--method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Round-to-nearest, each group's scale from its largest magnitude.
    Rtn,
    /// GPTQ: column by column, each column's error compensated through the inverse Hessian.
    Gptq,
}

impl Method {
    /// The name `--method` takes.
    fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
        }
    }
}

/// Arguments of `lsc quantize`.
#[derive(clap::Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// The training checkpoint whose weights to quantise.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// rtn or gptq.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Bits per weight.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=8))]
    pub bits: u32,
    /// Input features per scale (a layer with fewer uses one scale per row).
    #[arg(long, default_value_t = 128, value_parser = crate::args::count)]
    pub group: usize,
    /// Calibration text for GPTQ's Hessians (default: the checkpoint's training data; its train split is used).
    #[arg(long)]
    pub calib: Option<String>,
    /// Calibration windows (of the model's context, at most 256 tokens).
    #[arg(long, default_value_t = 32, value_parser = crate::args::count)]
    pub calib_windows: usize,
    /// GPTQ's damping: this fraction of the Hessian's mean diagonal is added to it.
    #[arg(long, default_value_t = 0.01, value_parser = crate::args::positive)]
    pub damp: f64,
    /// Validation windows for the loss before and after (0: skip).
    #[arg(long, default_value_t = 16)]
    pub eval_windows: usize,
    /// Where to write the quantised checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub backend: crate::source::BackendArg,
}

/// Each float linear weight of `program` (a parameter `[out, in]` multiplied as
/// `x · Wᵀ` in `@main`) with the values that multiply it. The output head
/// stays in f32, as in the GPTQ paper.
fn linear_weights(program: &Program) -> BTreeMap<String, Vec<ValueRef>> {
    let g = &program.main;
    let mut found: BTreeMap<String, Vec<ValueRef>> = BTreeMap::new();
    for n in g.dag.node_indices() {
        let Op::MatMul { trans_a: false, trans_b: true } = g.node(n).op else { continue };
        let [x, w] = g.operands(n)[..] else { continue };
        if let Op::Param { name } = &g.node(w.node).op {
            if g.value_type(w).rank() == 2 && name != "lm_head.weight" {
                found.entry(name.clone()).or_default().push(x);
            }
        }
    }
    found
}

/// Runs `lsc quantize`.
pub fn run(a: &QuantizeArgs) -> CliResult {
    let ckpt = Checkpoint::load(&a.ckpt)?;
    let field = |k: &str| ckpt.meta.train[k].as_str().unwrap_or_default().to_string();
    let (model, config) = (field("model"), field("config"));
    let tokenizer = match &ckpt.tokenizer {
        Some(json) => Tokenizer::from_json(json)?,
        None => Tokenizer::Bytes,
    };
    let vocab = tokenizer.vocab_size();
    let forward = lsc_models::build_graph(&model, &config, vocab, lsc_models::GraphKind::Forward)
        .map_err(|e| CliError::new(e.to_string()))?;
    if !forward.functions.is_empty() {
        return Err(CliError::with_fix(
            format!(
                "{model}/{config} runs weights inside called functions (@{}), which quantisation does not reach",
                forward.functions[0].name
            ),
            "quantise a transformer, ls-transformer or gam checkpoint",
        ));
    }
    let weights = linear_weights(&forward);
    if weights.is_empty() {
        return Err(CliError::with_fix(
            format!("{model}/{config} has no float linear weights in its main graph to quantise"),
            "quantise a transformer, ls-transformer or gam checkpoint (trilm is already ternary; mor's shared block is a called function)",
        ));
    }
    let seq = lsc_models::max_seq_len(&model, &config).map_err(|e| CliError::new(e.to_string()))?.min(256);
    let run_on = a.backend.run_on();

    let seed = ckpt.meta.train["seed"].as_u64().unwrap_or(0);
    let data_spec = field("data");
    // The checkpoint's data, read once, for the evaluation and the default calibration.
    let needs_data = a.eval_windows > 0 || (a.method == Method::Gptq && a.calib.is_none());
    let data_text = needs_data.then(|| data::load_text(&data_spec, seed)).transpose()?;
    let mut hessians: BTreeMap<String, Hessian> = BTreeMap::new();
    if a.method == Method::Gptq {
        let calib = a.calib.clone().unwrap_or_else(|| data_spec.clone());
        let own;
        let text: &[u8] = match &a.calib {
            Some(c) => {
                own = data::load_text(c, seed)?;
                &own
            }
            None => data_text.as_deref().unwrap_or_default(),
        };
        let tokens = tokenizer.encode(data::split(text, Split::Train))?;
        let windows = (tokens.len().saturating_sub(1) / seq).min(a.calib_windows);
        if windows == 0 {
            return Err(CliError::with_fix(
                format!("`{calib}` has {} training tokens; calibration needs a window of {}", tokens.len(), seq + 1),
                "pass a larger text as --calib",
            ));
        }
        // The forward graph, also returning the input of every linear weight: one
        // Hessian per input value, shared by the weights that read it (q, k and v).
        let mut inputs: Vec<ValueRef> = weights.values().flatten().copied().collect();
        inputs.sort_unstable();
        inputs.dedup();
        let mut probe = forward.clone();
        let mut by_input: Vec<Hessian> = Vec::with_capacity(inputs.len());
        for (i, x) in inputs.iter().enumerate() {
            probe.main.outputs.push((format!("gptq.{i}"), *x));
            let n = forward.main.value_type(*x).shape.last().and_then(|d| d.as_const()).unwrap_or(0) as usize;
            by_input.push(Hessian::new(n));
        }
        let exe = lsc_runtime::backend::Executable::new(probe, run_on)?;
        let bar = indicatif::ProgressBar::new(windows as u64);
        for w in 0..windows {
            let ids: Vec<i64> = tokens[w * seq..(w + 1) * seq].iter().map(|&t| t as i64).collect();
            let inputs = Tensors::from([("input_ids".to_string(), Value::ints(vec![1, seq], ids))]);
            for (out, v) in exe.run(&inputs, &ckpt.params)? {
                let i = out.strip_prefix("gptq.").and_then(|i| i.parse::<usize>().ok());
                if let (Some(h), Some(x)) = (i.and_then(|i| by_input.get_mut(i)), v.as_floats()) {
                    h.add(x);
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        for (name, uses) in &weights {
            let mut found = uses.iter().filter_map(|x| inputs.binary_search(x).ok()).map(|k| &by_input[k]);
            if let Some(first) = found.next() {
                let mut h = first.clone();
                found.for_each(|other| h.merge(other));
                hessians.insert(name.clone(), h);
            }
        }
        println!("calibration: {windows} windows of {seq} tokens of `{calib}`");
    }

    let mut params = ckpt.params.clone();
    let (mut quantised, mut packed_bits) = (0usize, 0usize);
    for name in weights.keys() {
        let w = &ckpt.params[name];
        let shape = w.shape.clone();
        let data = w.as_floats().ok_or_else(|| CliError::new(format!("`{name}` is not a float tensor")))?;
        let group = a.group.min(shape[1]);
        let bad = |e: String| {
            CliError::with_fix(format!("`{name}` {shape:?}: {e}"), "pass a --group that divides its input features")
        };
        let packed = match a.method {
            Method::Rtn => gptq::rtn(data, &shape, a.bits, group).map_err(bad)?,
            Method::Gptq => gptq::gptq(data, &shape, &hessians[name], a.bits, group, a.damp).map_err(bad)?,
        };
        packed_bits += packed.storage_bits();
        quantised += data.len();
        let values = dequantize_groupwise(&packed).map_err(CliError::new)?;
        params.insert(name.clone(), Value::floats(shape, values));
    }

    if a.eval_windows > 0 {
        let valid = tokenizer.encode(data::split(data_text.as_deref().unwrap_or_default(), Split::Validation))?;
        let inference = lsc_models::build_graph(&model, &config, vocab, lsc_models::GraphKind::Inference)
            .map_err(|e| CliError::new(e.to_string()))?;
        let loss = |p: &Tensors<f32>| -> Result<f64, CliError> {
            let prepared = lsc_runtime::prepare::prepare(&inference, p, run_on)?;
            Ok(lsc_runtime::eval::mean_nll(&prepared.exe, &prepared.params, &valid, seq, Some(a.eval_windows), 8)?.nll)
        };
        println!(
            "validation loss ({} windows): {:.4} in f32, {:.4} after {} at {} bits",
            a.eval_windows,
            loss(&ckpt.params)?,
            loss(&params)?,
            a.method.name(),
            a.bits
        );
    }
    let out = Checkpoint { params, state: Tensors::new(), meta: ckpt.meta.clone(), tokenizer: ckpt.tokenizer.clone() };
    out.save(&a.out)?;
    println!(
        "{model}/{config}: {} linear weights ({quantised} parameters) quantised by {} to {} bits in groups of up to {} input features: {:.2} bits per weight with scales; wrote {}",
        weights.len(),
        a.method.name(),
        a.bits,
        a.group,
        packed_bits as f64 / quantised.max(1) as f64,
        a.out.display()
    );
    Ok(())
}
