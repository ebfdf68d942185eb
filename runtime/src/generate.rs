//! Inference helpers: byte prompts, logits, next-token distributions.

use crate::backend::Executable;
use crate::error::RuntimeError;
use lsc_interp::{Buffer, Interpreter, Tensors, Value};
use lsc_ir::{DType, Op, Program};

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

/// The learned position table, whose rows bound how far a sequence can go.
const POSITIONS: &str = "pos_embed.weight";

/// How many positions a sequence may reach: the rows of the learned position
/// table, and the length of every cache written at the token positions
/// (`cache_update`; ring buffers are scattered and never fill). `None` when
/// neither bounds it (rotary embeddings with only windowed heads).
fn position_capacity(program: &Program, params: &Tensors<f32>) -> Option<i64> {
    let g = &program.main;
    let table = params.get(POSITIONS).and_then(|p| p.shape.first()).map(|&n| n as i64);
    let caches = g.dag.node_indices().filter_map(|n| match g.node(n).op {
        Op::CacheUpdate { axis } => g.value_type(g.operands(n)[0]).shape.get(axis).and_then(|d| d.as_const()),
        _ => None,
    });
    table.into_iter().chain(caches).min()
}

/// Zero-filled caches (every input but `input_ids` and `pos`) for `batch` sequences.
fn zero_state(program: &Program, batch: usize) -> Result<Tensors<f32>, RuntimeError> {
    let bindings: lsc_ir::Bindings = [("B".to_string(), batch as i64)].into();
    let mut state = Tensors::new();
    for (name, ty) in program.main.input_types() {
        if name == "input_ids" || name == "pos" {
            continue;
        }
        let shape = ty.concrete_shape(&bindings).map_err(|e| RuntimeError::Input(format!("cache `{name}`: {e}")))?;
        let n = shape.iter().product();
        let data = match ty.dtype {
            DType::Bool => Buffer::Bool(vec![false; n]),
            d if d.is_int() => Buffer::Int(vec![0; n]),
            _ => Buffer::Float(vec![0.0; n]),
        };
        state.insert(name.to_string(), Value { dtype: ty.dtype, shape, data });
    }
    Ok(state)
}

/// Incremental decoding over a decode graph (see `lsc_models::decode`): holds
/// the caches between calls and the position of the next token.
pub struct Decoder<'p> {
    interp: Interpreter<'p>,
    program: &'p Program,
    params: &'p Tensors<f32>,
    batch: usize,
    state: Tensors<f32>,
    pos: i64,
    capacity: Option<i64>,
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
        let state = zero_state(program, batch)?;
        let capacity = position_capacity(program, params);
        Ok(Decoder { interp, program, params, batch, state, pos: 0, capacity })
    }

    /// Position of the next token.
    pub fn position(&self) -> i64 {
        self.pos
    }

    /// Feeds new tokens `[B, T]`; returns their logits `[B, T, V]` and advances.
    pub fn feed(&mut self, ids: &Value<f32>) -> Result<Value<f32>, RuntimeError> {
        let len = ids.shape.get(1).copied().unwrap_or(0) as i64;
        // Checked before running: the run updates the caches in place, so a
        // step that fails halfway cannot give them back.
        if let Some(capacity) = self.capacity {
            if self.pos + len > capacity {
                return Err(RuntimeError::Input(format!(
                    "decoding {len} more token(s) at position {} goes beyond the model's {capacity} positions; \
                     start a new sequence or use a config with a longer context",
                    self.pos
                )));
            }
        }
        let mut inputs = std::mem::take(&mut self.state);
        inputs.insert("input_ids".into(), ids.clone());
        inputs.insert("pos".into(), Value::ints(vec![], vec![self.pos]));
        let outs = match self.interp.run_owned(inputs, self.params) {
            Ok(o) => o,
            Err(e) => {
                // The caches went with the failed run: start again from empty ones.
                self.state = zero_state(self.program, self.batch)?;
                self.pos = 0;
                return Err(RuntimeError::Input(format!("{e} (the decoder was reset to an empty sequence)")));
            }
        };
        let mut logits = None;
        for (name, v) in outs {
            if name == "logits" {
                logits = Some(v);
            } else {
                self.state.insert(name, v);
            }
        }
        self.pos += len;
        logits.ok_or_else(|| RuntimeError::Input("the decode program has no `logits` output".into()))
    }
}
