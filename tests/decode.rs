//! Incremental decoding equals the full forward pass at every position.

use lsc_interp::Value;
use lsc_ir::DType;
use lsc_runtime::backend::{Backend, Executable};
use lsc_runtime::generate::{logits, Decoder};
use lsc_runtime::init;
use lsc_runtime::numerics::{compare, tolerance};

fn ids(b: usize, t: usize, seed: u64) -> Vec<i64> {
    let mut rng = init::Rng::new(seed);
    (0..b * t).map(|_| (rng.next_u64() % 256) as i64).collect()
}

/// Decodes `seq` (`[B, T]`) in chunks of the given sizes on the interpreter
/// and compares every position's logits with the full forward pass; returns the max |Δ|.
fn decode_matches_full(model: &str, b: usize, t: usize, chunks: &[usize]) -> f64 {
    decode_on(Backend::Interp, model, b, t, chunks)
}

/// [`decode_matches_full`] with the decoding step run by `backend`.
fn decode_on(backend: Backend, model: &str, b: usize, t: usize, chunks: &[usize]) -> f64 {
    let full = lsc_models::build_inference(model, "tiny").unwrap();
    let step = lsc_models::build_decode(model, "tiny").unwrap();
    let mut params = init::init_params(&full, 11).unwrap();
    // MoR: strong routers, so that σ(score) ≥ 0.5 drops some tokens and keeps others.
    for (name, v) in params.iter_mut() {
        if let (true, lsc_interp::Buffer::Float(x)) = (name.starts_with("routers."), &mut v.data) {
            x.iter_mut().for_each(|w| *w *= 100.0);
        }
    }
    let seq = ids(b, t, 3);
    let reference = Executable::new(full, Backend::Interp).unwrap();
    let want = logits(&reference, &params, &Value::ints(vec![b, t], seq.clone())).unwrap();
    let v = *want.shape.last().unwrap();
    let want = want.to_f64_vec();
    let exe = Executable::new(step, backend).unwrap();
    let one_token = [("B".to_string(), b as i64), ("T".to_string(), 1)].into();
    assert!(
        backend == Backend::Interp || exe.generated_kernels(&one_token).unwrap() > 0,
        "{model}: no generated kernels"
    );
    let mut dec = Decoder::on(&exe, &params, b).unwrap();
    let mut start = 0;
    let mut worst = 0.0f64;
    for &len in chunks.iter().cycle() {
        if start >= t {
            break;
        }
        let len = len.min(t - start);
        let chunk: Vec<i64> = (0..b).flat_map(|bi| seq[bi * t + start..bi * t + start + len].to_vec()).collect();
        let got = dec.feed(&Value::ints(vec![b, len], chunk)).unwrap().to_f64_vec();
        for bi in 0..b {
            let g = &got[bi * len * v..(bi + 1) * len * v];
            let w = &want[(bi * t + start) * v..(bi * t + start + len) * v];
            let c = compare(g, w, tolerance(DType::F32));
            assert!(c.ok(), "{model}: batch {bi}, positions {start}..{}: max |Δ| {}", start + len, c.max_abs_diff);
            worst = worst.max(c.max_abs_diff);
        }
        start += len;
    }
    assert_eq!(dec.position(), t as i64);
    worst
}

#[test]
fn token_by_token_decoding_matches_the_full_pass() {
    for model in lsc_models::MODELS.iter().map(|m| m.name) {
        let d = decode_matches_full(model, 2, 20, &[1]);
        println!("{model}: decode vs full max |Δ| = {d:.3e}");
    }
}

#[test]
fn decoding_on_generated_code_matches_the_full_pass() {
    for backend in Backend::native() {
        for model in lsc_models::MODELS.iter().map(|m| m.name) {
            let d = decode_on(backend, model, 2, 12, &[5, 1]);
            println!("{model}: {backend} decode vs full max |Δ| = {d:.3e}");
        }
    }
}

#[test]
fn chunked_prefill_then_decoding_matches_the_full_pass() {
    // Chunks longer than the local window (w = 4) wrap the ring buffer within one call.
    for model in lsc_models::MODELS.iter().map(|m| m.name) {
        decode_matches_full(model, 1, 23, &[7, 1, 1, 6, 2]);
    }
}

#[test]
fn decoding_past_the_cache_capacity_is_an_error() {
    let full = lsc_models::build("transformer", "tiny").unwrap();
    let step = lsc_models::build_decode("transformer", "tiny").unwrap();
    let params = init::init_params(&full, 1).unwrap();
    let exe = Executable::new(step, Backend::Interp).unwrap();
    let mut dec = Decoder::on(&exe, &params, 1).unwrap();
    dec.feed(&Value::ints(vec![1, 60], vec![1; 60])).unwrap();
    let err = dec.feed(&Value::ints(vec![1, 8], vec![1; 8])).unwrap_err().to_string();
    assert!(err.contains("beyond the model's 64 positions"), "{err}");
    // Refused before running: the caches (updated in place by a run) are intact.
    assert_eq!(dec.position(), 60);
    let again = dec.feed(&Value::ints(vec![1, 4], vec![1; 4])).unwrap();
    assert_eq!(again.shape, vec![1, 4, 256]);
    assert_eq!(dec.position(), 64);
}

#[test]
fn decoding_on_the_emulated_gpu_matches_the_full_pass() {
    // The CUDA target's kernels (caches updated in place, ring buffers, routed recursion)
    // run by the GPU-semantics evaluator.
    for model in lsc_models::MODELS.iter().map(|m| m.name) {
        let d = decode_on(Backend::CudaEmu, model, 2, 6, &[3, 1]);
        println!("{model}: emulated GPU decode vs full max |Δ| = {d:.3e}");
    }
}
