//! Helpers shared by the integration tests.

use lsc_frontend::{ModelBuilder, Tensor};
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Program};
use lsc_passes::saturate::{optimize, Config, Stats};
use lsc_runtime::numerics::{compare, tolerance};

/// Saturates `p` under `cfg`, runs both programs on the interpreter and
/// checks every output agrees (allclose in f32): proof by execution.
#[allow(dead_code)]
pub fn optimised_agrees(p: &Program, inputs: &Tensors<f32>, params: &Tensors<f32>, cfg: &Config) -> (Program, Stats) {
    let (q, stats) = optimize(p, cfg).unwrap();
    let a = Interpreter::new(p).unwrap().run(inputs, params).unwrap();
    let b = Interpreter::new(&q).unwrap().run(inputs, params).unwrap();
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        let c = compare(&y.to_f64_vec(), &x.to_f64_vec(), tolerance(DType::F32));
        assert!(c.ok(), "output {n} changed: max |Δ| {}", c.max_abs_diff);
    }
    (q, stats)
}

/// Builds softmax-attention over `q, k, v: [1, H, T, 8]` spelled by `scores`
/// with causal (`0`) or banded (`w`) masks per head; `q, k, v` are inputs, or
/// parameters with `as_params` (for gradients).
#[allow(dead_code)]
pub fn attention_program(heads: usize, windows: &[usize], spelling: usize, as_params: bool) -> Program {
    let b = ModelBuilder::new();
    let shape = [Dim::new(1), Dim::new(heads as i64), Dim::sym("T"), Dim::new(8)];
    let leaf =
        |name: &str| if as_params { b.param(name, DType::F32, &shape) } else { b.input(name, DType::F32, &shape) };
    let (q, k, v) = (leaf("q"), leaf("k"), leaf("v"));
    let t = Dim::sym("T");
    let sq = [t.clone(), t.clone()];
    let (i, j) = (b.iota(DType::I64, &sq, 0), b.iota(DType::I64, &sq, 1));
    let mask_of = |w: usize| {
        let causal = j.le(&i);
        if w == 0 {
            causal
        } else {
            causal.and(&(&i - &j).lt(&b.constant(w as f64, DType::I64, &[])))
        }
    };
    let mask = if windows.iter().all(|&w| w == windows[0]) {
        mask_of(windows[0])
    } else {
        let parts: Vec<Tensor> =
            windows.iter().map(|&w| mask_of(w).broadcast_to(&[Dim::new(1), t.clone(), t.clone()])).collect();
        let rest: Vec<&Tensor> = parts[1..].iter().collect();
        parts[0].concat(&rest, 0)
    };
    let scale = 1.0 / 8f64.sqrt();
    let scores = match spelling {
        0 => &q.matmul_t(&k) * scale,                        // scale on the logits
        1 => (&q * scale).matmul_t(&k),                      // scale on q
        2 => &q.matmul(&k.transpose(&[0, 1, 3, 2])) * scale, // Kᵀ by transpose
        3 => &q.matmul_t(&k) * scale,                        // (masked by an additive bias below)
        _ => unreachable!(),
    };
    let neg_inf = b.constant(f64::NEG_INFINITY, DType::F32, &[]);
    let masked = if spelling == 3 {
        // The mask added as a bias of 0 / −∞.
        let bias = mask.select(&b.constant(0.0, DType::F32, &[]), &neg_inf);
        &scores + &bias.broadcast_to(&scores.shape())
    } else {
        mask.select(&scores, &neg_inf)
    };
    b.output("out", &masked.softmax(-1).matmul(&v));
    b.finish().unwrap()
}

/// Inputs of a training-step program at B = 2, T = 12: token ids, the learning
/// rate, and `fill` for every float state (moments must stay non-negative).
#[allow(dead_code)]
pub fn step_feed(step: &Program, fill: f32) -> Tensors<f32> {
    let b: lsc_ir::Bindings = [("B".to_string(), 2), ("T".to_string(), 12)].into();
    let mut feed = Tensors::new();
    for (name, t) in step.main.input_types() {
        let shape = t.concrete_shape(&b).unwrap();
        let n: usize = shape.iter().product();
        let v = match (name, t.dtype) {
            ("lr", _) => Value::floats(shape, vec![1e-3]),
            ("adam.bc1", _) | ("adam.bc2", _) => Value::floats(shape, vec![0.1]),
            (_, DType::I64) => Value::ints(shape, (0..n).map(|i| (i * 37 % 256) as i64).collect()),
            _ => Value::floats(shape, vec![fill; n]),
        };
        feed.insert(name.to_string(), v);
    }
    feed
}

/// The `tiny` training run the tests use: batch 2 × 16, cosine schedule, AdamW, seed 5.
#[allow(dead_code)]
pub fn train_config(model: &str, steps: u64) -> lsc_runtime::train::TrainConfig {
    lsc_runtime::train::TrainConfig {
        model: model.into(),
        config: "tiny".into(),
        data: "synthetic".into(),
        batch: 2,
        seq: 16,
        steps,
        schedule: lsc_runtime::schedule::Schedule::Cosine { max_lr: 3e-3, min_lr: 3e-4, warmup: 2, decay_end: steps },
        optimizer: lsc_passes::train::Optimizer::adamw(),
        clip_norm: Some(1.0),
        decay_all: false,
        seed: 5,
        loss_terms: if model == "mor" { vec![("aux_loss".into(), 0.001)] } else { vec![] },
        tokenizer: "bytes".into(),
        vocab: 256,
        fuse: true,
        backend: lsc_runtime::backend::Backend::default(),
        precision: Default::default(),
        recompute_calls: false,
    }
}
