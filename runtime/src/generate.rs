//! Inference helpers: byte prompts, logits, next-token distributions.

use crate::backend::{Executable, Loaded};
use crate::error::RuntimeError;
use lsc_interp::{Buffer, Tensors, Value};
use lsc_ir::{DType, Op, Program};
use std::collections::HashMap;

/// Runs a language-model program on a batch of token ids `[B][T]` and returns
/// the `logits` output `[B, T, V]`.
/// Non-finite logits are an error, never a result.
pub fn logits(exe: &Executable, params: &Tensors<f32>, ids: &Value<f32>) -> Result<Value<f32>, RuntimeError> {
    let inputs = Tensors::from([("input_ids".to_string(), ids.clone())]);
    let logits = exe
        .run(&inputs, params)?
        .into_iter()
        .find(|(n, _)| n == "logits")
        .map(|(_, v)| v)
        .ok_or_else(|| RuntimeError::Input("the program has no `logits` output".into()))?;
    check_finite(&logits)?;
    Ok(logits)
}

/// Refuses logits holding NaN or ±Inf, giving the first one's index.
pub fn check_finite(logits: &Value<f32>) -> Result<(), RuntimeError> {
    match crate::numerics::non_finite_at(logits) {
        Some(at) => Err(RuntimeError::Input(format!(
            "the logits are not finite (the first at {at:?} of {:?}): the weights or the program compute NaN or ±Inf",
            logits.shape
        ))),
        None => Ok(()),
    }
}

/// Checks that `program` can be run as a language model: an `input_ids`
/// input of integers `[B, T]` and a `logits` output of floats `[B, T, V]`
/// with the same `B` and `T` and a constant vocabulary `V ≥ 1`.
pub fn check_language_model(program: &Program) -> Result<(), RuntimeError> {
    let g = &program.main;
    let bad = |what: String| RuntimeError::Input(format!("the program cannot be run as a language model: {what}"));
    let ids = g.input_types().into_iter().find(|(n, _)| *n == "input_ids").map(|(_, t)| t.clone());
    let ids = ids.ok_or_else(|| bad("it has no `input_ids` input".into()))?;
    if ids.rank() != 2 || !ids.dtype.is_int() {
        return Err(bad(format!(
            "`input_ids` is {}, not integers [B, T]",
            lsc_ir::types::brief(&ids.to_string(), 200)
        )));
    }
    let logits = g.outputs.iter().find(|(n, _)| n == "logits").map(|(_, v)| g.value_type(*v).clone());
    let logits = logits.ok_or_else(|| bad("it has no `logits` output".into()))?;
    let vocab = logits.shape.last().and_then(|d| d.as_const());
    if logits.rank() != 3
        || !logits.dtype.is_float()
        || logits.shape[..2] != ids.shape[..]
        || vocab.is_none_or(|v| v < 1)
    {
        return Err(bad(format!(
            "`logits` is {}, not floats [B, T, V] over `input_ids` {} with a constant V ≥ 1",
            lsc_ir::types::brief(&logits.to_string(), 200),
            ids
        )));
    }
    Ok(())
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
    let out = logits(exe, params, &ids)?;
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

/// Incremental decoding over a decode graph (see `lsc_models::decode`): the
/// caches stay where the backend keeps them between calls, as the decode
/// program's inputs, each run's updated caches fed back into them.
pub struct Decoder<'p> {
    exe: &'p Executable,
    params: &'p Tensors<f32>,
    batch: usize,
    /// The program loaded per number of new tokens, and which of them holds the caches now.
    loaded: HashMap<usize, Box<dyn Loaded>>,
    current: Option<usize>,
    caches: Vec<String>,
    pos: i64,
    capacity: Option<i64>,
}

impl<'p> Decoder<'p> {
    /// A decoder of `batch` sequences on `exe`'s backend, with zero-filled caches.
    pub fn on(exe: &'p Executable, params: &'p Tensors<f32>, batch: usize) -> Result<Decoder<'p>, RuntimeError> {
        let program = exe.program();
        let caches = program
            .main
            .input_types()
            .into_iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| n != "input_ids" && n != "pos")
            .collect();
        let capacity = position_capacity(program, params);
        Ok(Decoder { exe, params, batch, loaded: HashMap::new(), current: None, caches, pos: 0, capacity })
    }

    /// Position of the next token.
    pub fn position(&self) -> i64 {
        self.pos
    }

    /// Starts a new sequence (zero caches at the next call); compiled programs are kept.
    pub fn reset(&mut self) {
        self.current = None;
        self.pos = 0;
    }

    /// The program loaded for `len` new tokens, holding the current caches.
    fn loaded_for(&mut self, len: usize) -> Result<&mut Box<dyn Loaded>, RuntimeError> {
        if !self.loaded.contains_key(&len) {
            self.loaded.insert(len, self.exe.load_with(self.batch, len, self.params)?);
        }
        let caches: Tensors<f32> = match self.current {
            Some(prev) if prev == len => Tensors::new(),
            Some(prev) => {
                let from = &self.loaded[&prev];
                self.caches.iter().map(|n| Ok((n.clone(), from.get(n)?))).collect::<Result<_, RuntimeError>>()?
            }
            None => zero_state(self.exe.program(), self.batch)?,
        };
        let l = self.loaded.get_mut(&len).expect("loaded above");
        for (n, v) in &caches {
            l.set(n, v)?;
        }
        self.current = Some(len);
        Ok(l)
    }

    /// Feeds new tokens `[B, T]`; returns their logits `[B, T, V]` and advances.
    pub fn feed(&mut self, ids: &Value<f32>) -> Result<Value<f32>, RuntimeError> {
        let len = ids.shape.get(1).copied().unwrap_or(0);
        // Checked before running: the run updates the caches in place, so a
        // step that fails halfway cannot give them back.
        if let Some(capacity) = self.capacity {
            if self.pos + len as i64 > capacity {
                return Err(RuntimeError::Input(format!(
                    "decoding {len} more token(s) at position {} goes beyond the model's {capacity} positions; \
                     start a new sequence or use a config with a longer context",
                    self.pos
                )));
            }
        }
        if ids.shape.first() != Some(&self.batch) {
            return Err(RuntimeError::Input(format!(
                "the decoder holds {} sequences; got tokens of shape {:?}",
                self.batch, ids.shape
            )));
        }
        let pos = self.pos;
        let caches = self.caches.clone();
        let step = |l: &mut Box<dyn Loaded>| -> Result<Value<f32>, RuntimeError> {
            l.set("input_ids", ids)?;
            l.set("pos", &Value::ints(vec![], vec![pos]))?;
            l.run()?;
            for c in &caches {
                l.feed_back(c, c)?;
            }
            l.output("logits")
        };
        let result = self.loaded_for(len).and_then(step);
        match result.and_then(|logits| check_finite(&logits).map(|()| logits)) {
            Ok(logits) => {
                self.pos += len as i64;
                Ok(logits)
            }
            Err(e) => {
                // The caches may be half updated: start again from empty ones.
                self.reset();
                Err(RuntimeError::Input(format!("{e} (the decoder was reset to an empty sequence)")))
            }
        }
    }
}
