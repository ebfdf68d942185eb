//! Inference helpers: byte prompts, logits, next-token distributions.

use crate::backend::Executable;
use crate::error::RuntimeError;
use lsc_interp::{Buffer, Interpreter, Tensors, Value};
use lsc_ir::{DType, Program};

/// Runs a language-model program on a batch of token ids `[B][T]` and returns
/// the `logits` output `[B, T, V]`.
pub fn logits(program: &Program, params: &Tensors<f32>, ids: &Value<f32>) -> Result<Value<f32>, RuntimeError> {
    let interp = Interpreter::new(program).map_err(|e| RuntimeError::Input(format!("invalid program: {e}")))?;
    logits_on(&interp, params, ids)
}

/// [`logits`] on an interpreter already set up (e.g. with generated kernels).
pub fn logits_on(interp: &Interpreter, params: &Tensors<f32>, ids: &Value<f32>) -> Result<Value<f32>, RuntimeError> {
    let mut inputs = Tensors::new();
    inputs.insert("input_ids".to_string(), ids.clone());
    let outs = interp.run(&inputs, params)?;
    outs.into_iter()
        .find(|(n, _)| n == "logits")
        .map(|(_, v)| v)
        .ok_or_else(|| RuntimeError::Input("the program has no `logits` output".into()))
}

/// Softmax of one row.
pub fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let e: Vec<f64> = row.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The `k` most likely next tokens after `prompt` (byte tokens), with probabilities.
pub fn top_next(
    exe: &Executable,
    params: &Tensors<f32>,
    prompt: &[u8],
    k: usize,
    max_len: usize,
) -> Result<Vec<(usize, f64)>, RuntimeError> {
    if prompt.is_empty() {
        return Err(RuntimeError::Input("the prompt is empty; pass at least one byte with --prompt".into()));
    }
    if prompt.len() > max_len {
        return Err(RuntimeError::Input(format!(
            "the prompt has {} bytes but the model accepts at most {max_len}",
            prompt.len()
        )));
    }
    let ids = Value::ints(vec![1, prompt.len()], prompt.iter().map(|&b| b as i64).collect());
    let out = logits_on(&exe.interpreter()?, params, &ids)?;
    let v = *out.shape.last().unwrap_or(&0);
    let data = out.as_floats().ok_or_else(|| RuntimeError::Input("logits are not floats".into()))?;
    let last = &data[data.len() - v..];
    let mut probs: Vec<(usize, f64)> = softmax(last).into_iter().enumerate().collect();
    probs.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0)));
    probs.truncate(k);
    Ok(probs)
}

/// Incremental decoding over a decode graph (see `lsc_models::decode`): holds
/// the caches between calls and the position of the next token.
pub struct Decoder<'p> {
    interp: Interpreter<'p>,
    params: &'p Tensors<f32>,
    state: Tensors<f32>,
    pos: i64,
}

impl<'p> Decoder<'p> {
    /// Zero-filled caches for a batch of `batch` sequences.
    pub fn new(program: &'p Program, params: &'p Tensors<f32>, batch: usize) -> Result<Decoder<'p>, RuntimeError> {
        let interp = Interpreter::new(program).map_err(|e| RuntimeError::Input(format!("invalid program: {e}")))?;
        Decoder::with_interpreter(interp, program, params, batch)
    }

    /// A decoder whose program runs on `exe`'s backend.
    pub fn on(exe: &'p Executable, params: &'p Tensors<f32>, batch: usize) -> Result<Decoder<'p>, RuntimeError> {
        Decoder::with_interpreter(exe.interpreter()?, exe.program(), params, batch)
    }

    fn with_interpreter(
        interp: Interpreter<'p>,
        program: &'p Program,
        params: &'p Tensors<f32>,
        batch: usize,
    ) -> Result<Decoder<'p>, RuntimeError> {
        let bindings: lsc_ir::Bindings = [("B".to_string(), batch as i64)].into();
        let mut state = Tensors::new();
        for (name, ty) in program.main.input_types() {
            if name == "input_ids" || name == "pos" {
                continue;
            }
            let shape =
                ty.concrete_shape(&bindings).map_err(|e| RuntimeError::Input(format!("cache `{name}`: {e}")))?;
            let n = shape.iter().product();
            let data = match ty.dtype {
                DType::Bool => Buffer::Bool(vec![false; n]),
                d if d.is_int() => Buffer::Int(vec![0; n]),
                _ => Buffer::Float(vec![0.0; n]),
            };
            state.insert(name.to_string(), Value { dtype: ty.dtype, shape, data });
        }
        Ok(Decoder { interp, params, state, pos: 0 })
    }

    /// Position of the next token.
    pub fn position(&self) -> i64 {
        self.pos
    }

    /// Feeds new tokens `[B, T]`; returns their logits `[B, T, V]` and advances.
    pub fn feed(&mut self, ids: &Value<f32>) -> Result<Value<f32>, RuntimeError> {
        let mut inputs = std::mem::take(&mut self.state);
        inputs.insert("input_ids".into(), ids.clone());
        inputs.insert("pos".into(), Value::ints(vec![], vec![self.pos]));
        let outs = self.interp.run(&inputs, self.params);
        inputs.remove("input_ids");
        inputs.remove("pos");
        let outs = match outs {
            Ok(o) => o,
            Err(e) => {
                self.state = inputs;
                return Err(e.into());
            }
        };
        let mut logits = None;
        for (name, v) in outs {
            if name == "logits" {
                logits = Some(v);
            } else {
                inputs.insert(name, v);
            }
        }
        self.state = inputs;
        self.pos += ids.shape.get(1).copied().unwrap_or(0) as i64;
        logits.ok_or_else(|| RuntimeError::Input("the decode program has no `logits` output".into()))
    }
}
