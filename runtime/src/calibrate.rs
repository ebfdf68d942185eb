//! Machine calibration for the rewrite passes' cost model (`lsc bench
//! --calibrate`): the f32 FMA peak (an AVX-512 loop where the CPU has it,
//! else AVX2+FMA, else scalar), the memory bandwidth (a STREAM-style triad
//! over buffers far larger than the caches) and the fixed cost of one
//! interpreted op. Saved as JSON where `lsc compile` and `lsc train` find it.

use crate::RuntimeError;
use lsc_passes::saturate::Machine;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A measured machine.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// The cost model's figures.
    pub machine: Machine,
    /// The instruction set the FMA loop used (`avx512f`, `avx2+fma`, `scalar`).
    pub isa: String,
    /// Threads used for the peak and bandwidth loops.
    pub threads: usize,
}

/// Where the calibration lives: `$LSC_MACHINE`, else
/// `$XDG_CACHE_HOME/lsc/machine.json`, else `~/.cache/lsc/machine.json`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LSC_MACHINE") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("lsc").join("machine.json"))
}

/// The machine the cost model should use, and where it came from: the saved
/// calibration if there is one, else the documented defaults.
pub fn machine() -> Result<(Machine, String), RuntimeError> {
    match default_path().filter(|p| p.exists()) {
        Some(p) => Ok((load(&p)?.machine, p.display().to_string())),
        None => Ok((Machine::default(), "defaults (run `lsc bench --calibrate` to measure)".into())),
    }
}

/// Reads a saved calibration.
pub fn load(path: &Path) -> Result<Calibration, RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io { path: path.into(), source })?;
    let c: Calibration = serde_json::from_str(&text).map_err(|e| {
        RuntimeError::Input(format!(
            "{}: not a machine calibration ({e}); rerun `lsc bench --calibrate` or delete the file",
            path.display()
        ))
    })?;
    let m = &c.machine;
    if !(m.peak_flops > 0.0 && m.bandwidth > 0.0 && m.launch >= 0.0) {
        return Err(RuntimeError::Input(format!(
            "{}: machine figures must be positive; rerun `lsc bench --calibrate`",
            path.display()
        )));
    }
    Ok(c)
}

/// Writes a calibration atomically.
pub fn save(path: &Path, c: &Calibration) -> Result<(), RuntimeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io { path: dir.into(), source })?;
    }
    let json = serde_json::to_string_pretty(c).map_err(|e| RuntimeError::Input(e.to_string()))?;
    crate::weights::write_atomic(path, json.as_bytes())
}

/// Measures this machine (about a second).
pub fn calibrate() -> Calibration {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (isa, peak_flops) = fma_peak(threads);
    Calibration { machine: Machine { peak_flops, bandwidth: bandwidth(threads), launch: launch() }, isa, threads }
}

/// Independent FMA chains per thread: enough to cover the FMA latency on two ports.
const CHAINS: usize = 12;
/// Iterations of the FMA loop per timed run.
const FMA_ITERS: u64 = 2_000_000;

/// Best of seven runs of the FMA loop on every thread: `(isa, FLOP/s)`. (This
/// machine's clock moves by 10–15% between runs; a peak measured low would
/// flatter every ratio against it.)
fn fma_peak(threads: usize) -> (String, f64) {
    let (isa, lanes) = fma_isa();
    let mut best = 0.0f64;
    for _ in 0..7 {
        let start = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| fma_loop(FMA_ITERS))).collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        let flops = (threads as u64 * FMA_ITERS * CHAINS as u64 * lanes * 2) as f64;
        best = best.max(flops / secs);
    }
    (isa.to_string(), best)
}

fn fma_isa() -> (&'static str, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return ("avx512f", 16);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return ("avx2+fma", 8);
        }
    }
    ("scalar", 1)
}

fn fma_loop(iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { fma_avx512(iters) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { fma_avx2(iters) };
        }
    }
    let mut acc = [0.0f32; CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    let mut total = 0.0;
    for x in acc {
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x) };
        total += lanes.iter().sum::<f32>();
    }
    total
}

/// Elements per triad array (64 MiB each: far beyond any cache here).
const STREAM_LEN: usize = 16 << 20;

/// STREAM triad `a = b + s·c` on every thread: best of five, in bytes/s.
fn bandwidth(threads: usize) -> f64 {
    let mut a = vec![0.0f32; STREAM_LEN];
    let b = vec![1.0f32; STREAM_LEN];
    let c = vec![2.0f32; STREAM_LEN];
    let chunk = STREAM_LEN.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for ((a, b), c) in a.chunks_mut(chunk).zip(b.chunks(chunk)).zip(c.chunks(chunk)) {
                s.spawn(move || {
                    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
                        *x = y + 3.0 * z;
                    }
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        best = best.max((3 * 4 * STREAM_LEN) as f64 / secs);
    }
    std::hint::black_box(&a);
    best
}

/// The executor's fixed cost per launch: a one-op program on the default
/// backend, median of many runs.
fn launch() -> f64 {
    use lsc_interp::Value;
    use lsc_ir::{DType, Graph, Op, Program, TensorType, ValueRef};
    let mut g = Graph::new("main");
    let t = TensorType::new(DType::F32, [lsc_ir::Dim::new(1)]);
    let x = ValueRef::first(g.add_node(Op::Input { name: "x".into() }, &[], vec![t.clone()]));
    let y = ValueRef::first(g.add_node(Op::Unary(lsc_ir::UnaryOp::Neg), &[x], vec![t]));
    g.outputs = vec![("y".into(), y)];
    let p = Program { main: g, ..Program::new() };
    let loaded = crate::backend::Executable::new(p, crate::backend::Backend::default())
        .and_then(|exe| exe.load(&Default::default()));
    let Ok(mut loaded) = loaded else { return Machine::default().launch };
    if loaded.set("x", &Value::floats(vec![1], vec![1.0])).is_err() {
        return Machine::default().launch;
    }
    let mut times: Vec<f64> = (0..2001)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(loaded.run().ok());
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
