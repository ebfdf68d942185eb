//! `lsc run`: next-byte prediction for a prompt, or batch logits to a file.

use crate::error::{CliError, CliResult};
use crate::source::{self, Source};
use crate::ModelArgs;
use lsc_interp::{Tensors, Value};
use lsc_runtime::backend::RunOn;
use lsc_runtime::{generate, init, weights};
use std::path::Path;

/// `--weights` and whether it may hold tensors the model does not use.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// The file.
    pub path: &'a Path,
    /// `--allow-unused`.
    pub allow_unused: bool,
}

/// The parameters to run with: loaded from `--weights`, else initialised from `--seed`.
pub fn params(src: &Source, weights: Option<Weights>, seed: u64) -> Result<(Tensors<f32>, String), CliError> {
    match weights {
        Some(w) => {
            let model = src.config.as_deref().map(|c| (src.name.as_str(), c));
            let params = source::weights_for(w.path, &src.program, model, w.allow_unused)?;
            Ok((params, format!("weights {}", w.path.display())))
        }
        None => {
            let params = init::init_params(&src.program, seed).map_err(CliError::new)?;
            Ok((params, format!("random init, seed {seed}")))
        }
    }
}

fn show_byte(b: usize) -> String {
    match u8::try_from(b) {
        Ok(c) if c.is_ascii_graphic() || c == b' ' => format!("{:?}", c as char),
        Ok(c) => format!("'\\x{c:02x}'"),
        Err(_) => format!("token {b}"),
    }
}

/// Runs the selected model.
pub fn run(
    args: &ModelArgs,
    weights: Option<Weights>,
    seed: u64,
    prompt: Option<&str>,
    inputs: Option<&Path>,
    out: Option<&Path>,
    backend: RunOn,
) -> CliResult {
    let src = source::load(args, source::ModelGraph::Inference)?;
    generate::check_language_model(&src.program).map_err(|e| {
        CliError::with_fix(e.to_string(), "`lsc run` needs a model's graph; `lsc check` verifies any other")
    })?;
    let (params, origin) = params(&src, weights, seed)?;
    let label = match &src.config {
        Some(c) => format!("{}/{c}", src.name),
        None => src.name.clone(),
    };
    if let (Some(inputs), Some(out)) = (inputs, out) {
        return batch(&src, &params, inputs, out, backend);
    }
    let prompt = prompt.unwrap_or_default();
    let max_len = src.max_len.unwrap_or(usize::MAX);
    let prepared = lsc_runtime::prepare::prepare(&src.program, &params, backend)?;
    let top = generate::top_next(&prepared.exe, &prepared.params, prompt.as_bytes(), 5, max_len)?;
    let nodes: usize = src.program.graphs().map(|g| g.dag.node_count()).sum();
    let n_params = lsc_passes::parameter_count(&src.program).unwrap_or(0);
    let on = match backend.backend {
        lsc_runtime::backend::Backend::Interp => "interpreter on the CPU".to_string(),
        b if b.is_gpu() => format!("a compiled plan ({backend}) on the GPU"),
        _ => format!("a compiled plan ({backend}) on the CPU"),
    };
    println!("{label}: {nodes} IR nodes, {n_params} parameters ({origin}), {on}");
    println!("top-5 next bytes after {prompt:?}:");
    for (i, (b, p)) in top.iter().enumerate() {
        println!("  {}. {:<8} (0x{b:02x})  p = {p:.4}", i + 1, show_byte(*b));
    }
    Ok(())
}

fn batch(src: &Source, params: &Tensors<f32>, inputs: &Path, out: &Path, backend: RunOn) -> CliResult {
    let tensors = weights::load_tensors(inputs)?;
    let ids = tensors.get("input_ids").ok_or_else(|| {
        CliError::with_fix(
            format!("{}: no tensor `input_ids`", inputs.display()),
            "save the token ids as `input_ids` (I64 [B, T])",
        )
    })?;
    if ids.as_ints().is_none() || ids.shape.len() != 2 {
        return Err(CliError::with_fix(
            format!("{}: `input_ids` is {}{:?}", inputs.display(), ids.dtype, ids.shape),
            "it must be I64 [B, T]",
        ));
    }
    if ids.shape.contains(&0) {
        return Err(CliError::with_fix(
            format!("{}: `input_ids` is empty ({:?})", inputs.display(), ids.shape),
            "give at least one sequence of at least one token",
        ));
    }
    if let Some(max) = src.max_len.filter(|&m| ids.shape[1] > m) {
        return Err(CliError::with_fix(
            format!("`input_ids` has T = {} but the model accepts at most {max}", ids.shape[1]),
            "use a shorter sequence or the `long` config",
        ));
    }
    let prepared = lsc_runtime::prepare::prepare(&src.program, params, backend)?;
    let logits = generate::logits(&prepared.exe, &prepared.params, ids)?;
    let mut result = Tensors::new();
    result.insert(
        "logits".to_string(),
        Value::floats(logits.shape.clone(), logits.as_floats().unwrap_or_default().to_vec()),
    );
    weights::save_tensors(out, &result)?;
    println!("wrote logits {:?} to {}", logits.shape, out.display());
    Ok(())
}
