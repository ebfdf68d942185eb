//! Training checkpoints: one safetensors file holding the parameters
//! (`param.*`), the optimizer state, and in its metadata the step, RNG and data
//! position, the model and training config, and a CRC-32 of all tensor bytes
//! that is verified on load. Writes are atomic, so the last good checkpoint
//! survives a crash mid-write.

use crate::error::RuntimeError;
use crate::weights::{read_file, to_safetensors, write_atomic};
use lsc_interp::{Buffer, Tensors, Value};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything but the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps taken.
    pub step: u64,
    /// The step at which the current LR schedule began (re-warming moves it).
    pub schedule_start: u64,
    /// Batches drawn from the training data (its position).
    pub data_draws: u64,
    /// The training configuration (model, config, data, optimizer, schedule, ...).
    pub train: serde_json::Value,
    /// The lsc version that wrote it.
    pub lsc_version: String,
}

/// A checkpoint in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Parameters by name.
    pub params: Tensors<f32>,
    /// Optimizer state by name (`adam.m.*`, `adam.v.*`, `sgd.buf.*`).
    pub state: Tensors<f32>,
    /// Step, positions, configuration.
    pub meta: CheckpointMeta,
    /// The BPE tokenizer's `tokenizer.json` (`None`: byte tokens).
    pub tokenizer: Option<String>,
}

const PARAM_PREFIX: &str = "param.";
const STATE_PREFIX: &str = "state.";

/// CRC-32 of the tensors in name order (name, shape and bytes).
fn checksum(tensors: &Tensors<f32>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (name, v) in tensors {
        h.update(name.as_bytes());
        for d in &v.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        match &v.data {
            Buffer::Float(x) => x.iter().for_each(|f| h.update(&f.to_le_bytes())),
            Buffer::Int(x) => x.iter().for_each(|i| h.update(&i.to_le_bytes())),
            Buffer::Bool(x) => x.iter().for_each(|b| h.update(&[*b as u8])),
            Buffer::Ternary(p) => p.unpack::<f32>().iter().for_each(|f| h.update(&f.to_le_bytes())),
        }
    }
    h.finalize()
}

impl Checkpoint {
    fn all_tensors(&self) -> Tensors<f32> {
        let mut all = Tensors::new();
        for (k, v) in &self.params {
            all.insert(format!("{PARAM_PREFIX}{k}"), v.clone());
        }
        for (k, v) in &self.state {
            all.insert(format!("{STATE_PREFIX}{k}"), v.clone());
        }
        all
    }

    /// Writes atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), RuntimeError> {
        let all = self.all_tensors();
        let meta = serde_json::to_string(&self.meta).map_err(|e| RuntimeError::Input(e.to_string()))?;
        let mut metadata = BTreeMap::from([
            ("lsc.meta".to_string(), meta),
            ("lsc.crc32".to_string(), format!("{:08x}", checksum(&all))),
        ]);
        if let Some(t) = &self.tokenizer {
            metadata.insert("lsc.tokenizer".to_string(), t.clone());
        }
        let bytes = to_safetensors(&all, Some(metadata))
            .map_err(|reason| RuntimeError::Format { path: path.into(), reason })?;
        write_atomic(path, &bytes)
    }

    /// Reads and verifies a checkpoint.
    pub fn load(path: &Path) -> Result<Checkpoint, RuntimeError> {
        let bad = |reason: String| RuntimeError::Format { path: path.into(), reason };
        let bytes = read_file(path)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta_map = header.metadata().clone().unwrap_or_default();
        let meta_json =
            meta_map.get("lsc.meta").ok_or_else(|| bad("no lsc.meta entry: not an lsc checkpoint".into()))?;
        let meta: CheckpointMeta = serde_json::from_str(meta_json).map_err(|e| bad(format!("lsc.meta: {e}")))?;
        let want = meta_map.get("lsc.crc32").ok_or_else(|| bad("no lsc.crc32 entry".into()))?;
        let all = crate::weights::load_tensors(path)?;
        let got = format!("{:08x}", checksum(&all));
        if &got != want {
            return Err(bad(format!("checksum mismatch (stored {want}, computed {got}): the file is corrupt")));
        }
        let mut params = Tensors::new();
        let mut state = Tensors::new();
        for (k, v) in all {
            if let Some(n) = k.strip_prefix(PARAM_PREFIX) {
                params.insert(n.to_string(), v);
            } else if let Some(n) = k.strip_prefix(STATE_PREFIX) {
                state.insert(n.to_string(), v);
            }
        }
        Ok(Checkpoint { params, state, meta, tokenizer: meta_map.get("lsc.tokenizer").cloned() })
    }
}

/// The parameters of `program` from `path`: a training checkpoint (its
/// checksum verified, its optimizer state left out) or a plain safetensors
/// file of weights by name. The names of tensors the program does not use are returned too.
pub fn load_params(path: &Path, program: &lsc_ir::Program) -> Result<(Tensors<f32>, Vec<String>), RuntimeError> {
    let bytes = read_file(path)?;
    let is_checkpoint = SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, h)| h.metadata().as_ref().map(|m| m.contains_key("lsc.meta")))
        .unwrap_or(false);
    drop(bytes);
    if is_checkpoint {
        crate::weights::select_params(path, Checkpoint::load(path)?.params, program)
    } else {
        crate::weights::load_params(path, program)
    }
}

/// Zeros shaped like each parameter, under each state name.
pub fn zero_state(params: &Tensors<f32>, names: impl Fn(&str) -> Vec<String>) -> Tensors<f32> {
    let mut out = Tensors::new();
    for (k, v) in params {
        for s in names(k) {
            out.insert(s, Value::floats(v.shape.clone(), vec![0.0; v.numel()]));
        }
    }
    out
}
