//! Safetensors load and save, by parameter name. Writes are atomic: a temp
//! file in the same folder, fsync, then rename, so a crash never leaves a
//! half-written file in place of a good one.

use crate::error::RuntimeError;
use lsc_interp::{Buffer, Tensors, Value};
use lsc_ir::{Bindings, DType, Program, TensorType};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Reads a whole file with an error that names it.
pub fn read_file(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|source| RuntimeError::Io { path: path.into(), source })
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let io = |source| RuntimeError::Io { path: path.into(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Removes the temp files that killed writes left in `dir`: `.NAME.PID.tmp`
/// of [`write_atomic`] whose process is no longer running. Returns each with its size.
pub fn remove_stale_temps(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let running = |pid: u32| pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else { continue };
        let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if Path::new("/proc/self").exists() && running(pid) {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(entry.path()).is_ok() {
            removed.push((entry.path(), size));
        }
    }
    removed
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Decodes one tensor view into an interpreter value (floats widened to the
/// interpreter's f32, integers to i64).
fn decode(view: &TensorView<'_>) -> Option<Value<f32>> {
    let bytes = view.data();
    let shape = view.shape().to_vec();
    let chunks = |n: usize| bytes.chunks_exact(n);
    let (dtype, data) = match view.dtype() {
        Dtype::F32 => {
            (DType::F32, Buffer::Float(chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
        }
        Dtype::F64 => (
            DType::F32,
            Buffer::Float(chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()) as f32).collect()),
        ),
        Dtype::F16 => {
            (DType::F32, Buffer::Float(chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()))
        }
        Dtype::BF16 => {
            (DType::F32, Buffer::Float(chunks(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()))
        }
        Dtype::I64 => {
            (DType::I64, Buffer::Int(chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect()))
        }
        Dtype::I32 => {
            (DType::I64, Buffer::Int(chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()))
        }
        Dtype::I8 => (DType::I64, Buffer::Int(bytes.iter().map(|&b| b as i8 as i64).collect())),
        Dtype::U8 => (DType::I64, Buffer::Int(bytes.iter().map(|&b| b as i64).collect())),
        Dtype::BOOL => (DType::Bool, Buffer::Bool(bytes.iter().map(|&b| b != 0).collect())),
        _ => return None,
    };
    Some(Value { dtype, shape, data })
}

/// Every tensor of a safetensors file, decoded.
pub fn load_tensors(path: &Path) -> Result<Tensors<f32>, RuntimeError> {
    decode_file(path, &read_file(path)?)
}

fn decode_file(path: &Path, bytes: &[u8]) -> Result<Tensors<f32>, RuntimeError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| RuntimeError::Format { path: path.into(), reason: e.to_string() })?;
    let mut out = Tensors::new();
    for (name, view) in st.tensors() {
        let v = decode(&view).ok_or_else(|| RuntimeError::Mismatch {
            path: path.into(),
            name: name.clone(),
            found: dtype_name(view.dtype()),
            expected: "one of F32, F64, F16, BF16, I64, I32, I8, U8, BOOL".into(),
        })?;
        out.insert(name, v);
    }
    Ok(out)
}

/// Loads the parameters of `program` from a safetensors file, with the names
/// of the tensors it holds that the program does not use; a missing or
/// mis-shaped tensor is an error naming it.
pub fn load_params(path: &Path, program: &Program) -> Result<(Tensors<f32>, Vec<String>), RuntimeError> {
    let bytes = read_file(path)?;
    select_params(path, decode_file(path, &bytes)?, program).map_err(|e| match e {
        // Name the dtype the file holds, not the one it was widened to (I32 read as i64).
        RuntimeError::Mismatch { path, name, found, expected } => {
            let st = SafeTensors::deserialize(&bytes).ok();
            let view = st.as_ref().and_then(|st| st.tensor(&name).ok());
            let found = view.map_or(found, |v| format!("{}{:?}", dtype_name(v.dtype()).to_lowercase(), v.shape()));
            RuntimeError::Mismatch { path, name, found, expected }
        }
        e => e,
    })
}

/// The parameters of `program` out of the tensors read from `path`, checked
/// like [`load_params`].
pub fn select_params(
    path: &Path,
    mut all: Tensors<f32>,
    program: &Program,
) -> Result<(Tensors<f32>, Vec<String>), RuntimeError> {
    let mut params = Tensors::new();
    for (n, name) in program.main.params() {
        let ty = &program.main.node(n).outputs[0];
        let v = all.remove(name).ok_or_else(|| RuntimeError::Missing {
            path: path.into(),
            name: name.into(),
            expected: ty.to_string(),
        })?;
        check_type(path, name, ty, &v)?;
        params.insert(name.to_string(), v);
    }
    Ok((params, all.into_keys().collect()))
}

/// Checks a loaded value against a (constant-shaped) declared type.
pub fn check_type(path: &Path, name: &str, ty: &TensorType, v: &Value<f32>) -> Result<(), RuntimeError> {
    let want = ty.concrete_shape(&Bindings::new()).ok();
    let kind_ok = (ty.dtype.is_float() && v.dtype.is_float()) || (ty.dtype.is_int() && v.dtype.is_int());
    if want.as_deref() != Some(&v.shape[..]) || !kind_ok {
        return Err(RuntimeError::Mismatch {
            path: path.into(),
            name: name.into(),
            found: format!("{}{:?}", v.dtype, v.shape),
            expected: ty.to_string(),
        });
    }
    Ok(())
}

fn encode(v: &Value<f32>) -> (Dtype, Vec<u8>) {
    match &v.data {
        // Values tagged f16 (cached features, say) are stored in half the space.
        Buffer::Float(x) if v.dtype == DType::F16 => {
            (Dtype::F16, x.iter().flat_map(|f| half::f16::from_f32(*f).to_le_bytes()).collect())
        }
        Buffer::Float(x) => (Dtype::F32, x.iter().flat_map(|f| f.to_le_bytes()).collect()),
        Buffer::Int(x) => (Dtype::I64, x.iter().flat_map(|i| i.to_le_bytes()).collect()),
        Buffer::Bool(x) => (Dtype::BOOL, x.iter().map(|&b| b as u8).collect()),
        // Written unpacked, as the floats {−1, 0, 1}.
        Buffer::Ternary(p) => (Dtype::F32, p.unpack::<f32>().iter().flat_map(|f| f.to_le_bytes()).collect()),
    }
}

/// Serialises named tensors to safetensors bytes (floats as F32, ints as I64).
pub fn to_safetensors(tensors: &Tensors<f32>, metadata: Option<BTreeMap<String, String>>) -> Result<Vec<u8>, String> {
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, v)| {
            let (d, b) = encode(v);
            (k.clone(), d, v.shape.clone(), b)
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(k, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (k.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    safetensors::serialize(views, metadata.map(|m| m.into_iter().collect())).map_err(|e| e.to_string())
}

/// Saves named tensors to `path` atomically.
pub fn save_tensors(path: &Path, tensors: &Tensors<f32>) -> Result<(), RuntimeError> {
    let bytes = to_safetensors(tensors, None).map_err(|reason| RuntimeError::Format { path: path.into(), reason })?;
    write_atomic(path, &bytes)
}
