//! Exact Hessian-vector products (reverse over reverse), checked in f64
//! against central finite differences of the gradient for every built-in
//! model's `tiny` config, and against the dense Hessian of a small model
//! computed from second differences of the loss alone; the curvature
//! estimators of `lsc flatness` against that dense Hessian and against exact
//! expectations, and their generated code against the interpreter.

use lsc_frontend::modules::{CausalSelfAttention, Embedding, Linear, RmsNorm, SwiGlu};
use lsc_frontend::ModelBuilder;
use lsc_interp::{Buffer, Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Program};
use lsc_passes::hessian::{direction_input, gradient_program, hessian_vector_program};
use lsc_runtime::backend::{Backend, Executable};
use lsc_runtime::flatness::{Batch, Curvature};
use lsc_runtime::init::{self, Rng};
use lsc_runtime::numerics::{compare, tolerance};

fn ids(b: usize, t: usize, vocab: u64, rng: &mut Rng) -> Value<f64> {
    Value::ints(vec![b, t], (0..b * t).map(|_| (rng.next_u64() % vocab) as i64).collect())
}

fn batch(b: usize, t: usize, vocab: u64, seed: u64) -> Tensors<f64> {
    let mut rng = Rng::new(seed);
    let mut x = Tensors::new();
    x.insert("input_ids".to_string(), ids(b, t, vocab, &mut rng));
    x.insert("targets".to_string(), ids(b, t, vocab, &mut rng));
    x
}

/// The initial parameters in f64, scaled ×4 so every path carries curvature.
fn params(p: &Program, seed: u64) -> Tensors<f64> {
    let mut out: Tensors<f64> =
        init::init_params(p, seed).unwrap().iter().map(|(k, v)| (k.clone(), v.convert())).collect();
    for v in out.values_mut() {
        if let Buffer::Float(x) = &mut v.data {
            x.iter_mut().for_each(|w| *w *= 4.0);
        }
    }
    out
}

fn output(outs: &[(String, Value<f64>)], name: &str) -> Vec<f64> {
    outs.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no output `{name}`")).1.to_f64_vec()
}

/// A random direction with a block per parameter (unit normal entries).
fn direction(params: &Tensors<f64>, seed: u64) -> Tensors<f64> {
    let mut rng = Rng::new(seed);
    params
        .iter()
        .map(|(k, v)| (k.clone(), Value::floats(v.shape.clone(), (0..v.numel()).map(|_| rng.normal()).collect())))
        .collect()
}

/// `θ + h·v`, blockwise.
fn step(params: &Tensors<f64>, v: &Tensors<f64>, h: f64) -> Tensors<f64> {
    params
        .iter()
        .map(|(k, p)| {
            let moved = p.to_f64_vec().iter().zip(v[k].to_f64_vec()).map(|(a, b)| a + h * b).collect();
            (k.clone(), Value::floats(p.shape.clone(), moved))
        })
        .collect()
}

fn with_direction(x: &Tensors<f64>, v: &Tensors<f64>) -> Tensors<f64> {
    let mut x = x.clone();
    for (k, d) in v {
        x.insert(direction_input(k), d.clone());
    }
    x
}

/// Checks `H·v` against `(∇L(θ + h·v) − ∇L(θ − h·v)) / 2h` for every
/// parameter block, and that the HVP program's loss and gradient are the
/// gradient program's. `map` takes the parameters to those the finite
/// differences run on (identity but for TriLM).
fn check_model(model: &str, fd_program: Option<&Program>) {
    let forward = lsc_models::build(model, "tiny").unwrap();
    let hvp = hessian_vector_program(&forward).unwrap();
    let grad = match fd_program {
        Some(p) => gradient_program(p).unwrap(),
        None => gradient_program(&forward).unwrap(),
    };
    let theta = params(&hvp, 21);
    let x = batch(2, 8, 256, 3);
    let v = direction(&theta, 5);
    let outs = Interpreter::new(&hvp).unwrap().run(&with_direction(&x, &v), &theta).unwrap();
    let g_interp = Interpreter::new(&grad).unwrap();
    let at = |t: &Tensors<f64>| match fd_program {
        // TriLM: the straight-through estimator's curvature is the surrogate's at Ŵ.
        Some(_) => ternarized(model, t),
        None => t.clone(),
    };
    let base = g_interp.run(&x, &at(&theta)).unwrap();
    if fd_program.is_none() {
        assert_eq!(output(&outs, "loss"), output(&base, "loss"), "{model}: the HVP program's loss");
    }
    // Central differences at h and h/2, combined by Richardson extrapolation:
    // the weights ×4 make the O(h²) error of one difference visible.
    let central = |h: f64| {
        let plus = g_interp.run(&x, &step(&at(&theta), &v, h)).unwrap();
        let minus = g_interp.run(&x, &step(&at(&theta), &v, -h)).unwrap();
        move |name: &str| -> Vec<f64> {
            let (gp, gm) = (output(&plus, &format!("grad.{name}")), output(&minus, &format!("grad.{name}")));
            gp.iter().zip(&gm).map(|(a, b)| (a - b) / (2.0 * h)).collect()
        }
    };
    let (coarse, fine) = (central(1e-5), central(5e-6));
    let mut nonzero = 0;
    for name in theta.keys() {
        let hv = output(&outs, &format!("hvp.{name}"));
        let fd: Vec<f64> = coarse(name).iter().zip(fine(name)).map(|(c, f)| (4.0 * f - c) / 3.0).collect();
        let scale = fd.iter().chain(&hv).fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, (a, b)) in hv.iter().zip(&fd).enumerate() {
            assert!(
                (a - b).abs() <= 1e-7 + 1e-5 * scale,
                "{model}: (H·v)[{name}][{i}] exact {a} vs finite difference {b}"
            );
        }
        nonzero += usize::from(scale > 1e-6);
    }
    assert!(nonzero * 2 > theta.len(), "{model}: only {nonzero} of {} blocks have curvature", theta.len());
}

/// TriLM's latent weights mapped to the surrogate transformer's `Ŵ = q·s`.
fn ternarized(model: &str, latent: &Tensors<f64>) -> Tensors<f64> {
    let mut out = latent.clone();
    for (name, _) in lsc_models::quantized_weights(model, "tiny").unwrap() {
        let w = latent[&name].to_f64_vec();
        let s = (w.iter().map(|x| x.abs()).sum::<f64>() / w.len() as f64).max(1e-5);
        let q: Vec<f64> = w.iter().map(|x| (x / s).round_ties_even().clamp(-1.0, 1.0) * s).collect();
        out.insert(name.clone(), Value::floats(latent[&name].shape.clone(), q));
    }
    out
}

#[test]
fn transformer_hessian_vector_products() {
    check_model("transformer", None);
}

#[test]
fn ls_transformer_hessian_vector_products() {
    check_model("ls-transformer", None);
}

#[test]
fn gam_hessian_vector_products() {
    check_model("gam", None);
}

#[test]
fn mor_hessian_vector_products() {
    // Small steps keep the top-k selection where it is (the routed loss is smooth there).
    check_model("mor", None);
}

#[test]
fn trilm_hessian_vector_products_are_the_surrogates_at_the_ternary_weights() {
    let surrogate = lsc_models::build("transformer", "tiny").unwrap();
    check_model("trilm", Some(&surrogate));
}

/// Embedding, one attention block with a SwiGLU MLP, and a head: every kind
/// of op the models' Hessians pass through, at 63 parameters.
fn small_model() -> Program {
    let (vocab, d) = (5, 2);
    let b = ModelBuilder::new();
    let ids = b.input("input_ids", DType::I64, &[Dim::sym("B"), Dim::sym("T")]);
    let x = Embedding::new(&b, "embed", vocab, d).forward(&ids);
    let attn = CausalSelfAttention::mhsa(&b, "attn", d, 1, false);
    let x = &x + &attn.forward(&RmsNorm::new(&b, "attn_norm", d, 1e-5).forward(&x));
    let x = &x + &SwiGlu::new(&b, "mlp", d, 3).forward(&x);
    let logits = Linear::new(&b, "head", d, vocab, false).forward(&x);
    b.output("logits", &logits);
    b.finish().unwrap()
}

/// Every parameter's elements in one flat order.
fn flatten(t: &Tensors<f64>) -> Vec<(String, usize)> {
    t.iter().flat_map(|(k, v)| (0..v.numel()).map(move |i| (k.clone(), i))).collect()
}

fn bumped(t: &Tensors<f64>, moves: &[(&(String, usize), f64)]) -> Tensors<f64> {
    let mut t = t.clone();
    for ((name, i), h) in moves {
        if let Buffer::Float(v) = &mut t.get_mut(name).unwrap().data {
            v[*i] += h;
        }
    }
    t
}

#[test]
fn hessian_vector_products_are_columns_of_the_dense_hessian() {
    let forward = small_model();
    let hvp = hessian_vector_program(&forward).unwrap();
    let theta = params(&hvp, 7);
    let x = batch(2, 4, 5, 11);
    let elems = flatten(&theta);
    let n = elems.len();
    assert!(n > 40, "{n} parameters");
    let interp = Interpreter::new(&hvp).unwrap();
    let zero: Tensors<f64> =
        theta.iter().map(|(k, v)| (k.clone(), Value::floats(v.shape.clone(), vec![0.0; v.numel()]))).collect();
    // Column j of H is H·e_j.
    let column = |j: usize| {
        let e = bumped(&zero, &[(&elems[j], 1.0)]);
        let outs = interp.run(&with_direction(&x, &e), &theta).unwrap();
        elems.iter().map(|(name, i)| output(&outs, &format!("hvp.{name}"))[*i]).collect::<Vec<f64>>()
    };
    let exact: Vec<Vec<f64>> = (0..n).map(column).collect();
    // The dense Hessian from second differences of the loss (no autodiff at all).
    let loss_program = gradient_program(&forward).unwrap();
    let loss_interp = Interpreter::new(&loss_program).unwrap();
    let loss = |t: &Tensors<f64>| output(&loss_interp.run(&x, t).unwrap(), "loss")[0];
    let second = |ea: &(String, usize), eb: &(String, usize), h: f64| {
        (loss(&bumped(&theta, &[(ea, h), (eb, h)]))
            - loss(&bumped(&theta, &[(ea, h), (eb, -h)]))
            - loss(&bumped(&theta, &[(ea, -h), (eb, h)]))
            + loss(&bumped(&theta, &[(ea, -h), (eb, -h)])))
            / (4.0 * h * h)
    };
    let mut worst = 0.0f64;
    let scale = exact.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
    for a in 0..n {
        for b in a..n {
            let (ea, eb) = (&elems[a], &elems[b]);
            // Richardson extrapolation again removes the O(h²) error.
            let fd = (4.0 * second(ea, eb, 5e-4) - second(ea, eb, 1e-3)) / 3.0;
            worst = worst.max((exact[a][b] - fd).abs()).max((exact[b][a] - fd).abs());
        }
    }
    assert!(scale > 0.1, "the Hessian is all but zero (max |H_ij| = {scale})");
    assert!(worst <= 1e-5 * scale.max(1.0), "max |H_exact − H_fd| = {worst} (max |H_ij| = {scale})");
    // Exactly symmetric up to rounding: both triangles come from one program.
    for (a, row) in exact.iter().enumerate() {
        for (b, h) in row.iter().enumerate().take(a) {
            assert!((h - exact[b][a]).abs() <= 1e-10 * scale, "H[{a}][{b}] ≠ H[{b}][{a}]");
        }
    }
}

fn to32(t: &Tensors<f64>) -> Tensors<f32> {
    t.iter().map(|(k, v)| (k.clone(), v.convert())).collect()
}

fn batch_of(x: &Tensors<f64>) -> Batch {
    let ints = |n: &str| x[n].to_f64_vec().iter().map(|&v| v as i64).collect();
    Batch { ids: ints("input_ids"), targets: ints("targets") }
}

#[test]
fn curvature_on_generated_code_matches_the_interpreter() {
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let forward = lsc_models::build(m, "tiny").unwrap();
        let theta = to32(&params(&forward, 4));
        let b = batch_of(&batch(2, 8, 256, 6));
        let mut reference = Curvature::new(&forward, &theta, Backend::Interp, 2, 8).unwrap();
        let v: Vec<f32> = {
            let mut rng = Rng::new(1);
            (0..reference.dimension()).map(|_| rng.normal() as f32).collect()
        };
        let (want_loss, want) = reference.hessian_vector(&b, &v).unwrap();
        for backend in Backend::native() {
            let mut c = Curvature::new(&forward, &theta, backend, 2, 8).unwrap();
            let (loss, got) = c.hessian_vector(&b, &v).unwrap();
            assert!((loss - want_loss).abs() <= 1e-4 * want_loss.abs(), "{m} on {backend}: loss {loss} vs {want_loss}");
            let (got, want): (Vec<f64>, Vec<f64>) = got.iter().zip(&want).map(|(&a, &b)| (a as f64, b as f64)).unzip();
            let cmp = compare(&got, &want, tolerance(DType::F32));
            assert!(cmp.ok(), "{m} on {backend}: H·v differs by {} (bound {})", cmp.max_abs_diff, cmp.bound);
        }
    }
}

/// The small model's dense Hessian (f64, from HVPs) on one batch.
fn dense_hessian(forward: &Program, theta: &Tensors<f64>, x: &Tensors<f64>) -> Vec<Vec<f64>> {
    let hvp = hessian_vector_program(forward).unwrap();
    let interp = Interpreter::new(&hvp).unwrap();
    let elems = flatten(theta);
    let zero: Tensors<f64> =
        theta.iter().map(|(k, v)| (k.clone(), Value::floats(v.shape.clone(), vec![0.0; v.numel()]))).collect();
    (0..elems.len())
        .map(|j| {
            let outs = interp.run(&with_direction(x, &bumped(&zero, &[(&elems[j], 1.0)])), theta).unwrap();
            elems.iter().map(|(name, i)| output(&outs, &format!("hvp.{name}"))[*i]).collect()
        })
        .collect()
}

#[test]
fn hutchinson_and_power_iteration_agree_with_the_dense_hessian() {
    let forward = small_model();
    let theta = params(&forward, 7);
    let x = batch(2, 4, 5, 11);
    let h = dense_hessian(&forward, &theta, &x);
    let trace: f64 = (0..h.len()).map(|i| h[i][i]).sum();
    let b = batch_of(&x);
    let mut c = Curvature::new(&forward, &to32(&theta), Backend::default(), 2, 4).unwrap();
    let mut rng = Rng::new(3);
    let est = c.hutchinson(&mut || Ok(b.clone()), 400, &mut rng, &mut || ()).unwrap();
    assert!(
        (est.mean - trace).abs() <= 2.0 * est.half_width,
        "Hutchinson {} ± {} vs the exact trace {trace}",
        est.mean,
        est.half_width
    );
    let top = c.top_eigenvalue(&b, 200, &mut rng, &mut || ()).unwrap();
    // The largest eigenvalue is at least every Rayleigh quotient e_iᵀHe_i.
    let max_diag = (0..h.len()).map(|i| h[i][i]).fold(f64::NEG_INFINITY, f64::max);
    assert!(top.value >= max_diag - 1e-4, "λ = {} below max H_ii = {max_diag}", top.value);
    assert!(top.relative_change() < 1e-3, "power iteration did not settle: {:?}", &top.history[190..]);
    // Gershgorin: |λ| ≤ max_i Σ_j |H_ij|.
    let bound = h.iter().map(|r| r.iter().map(|x| x.abs()).sum::<f64>()).fold(0.0, f64::max);
    assert!(top.value <= bound, "λ = {} beyond the Gershgorin bound {bound}", top.value);
}

#[test]
fn the_fisher_estimator_is_unbiased_with_labels_from_the_model() {
    // Two tokens (B = 1, T = 2), so its expectation is a sum over 5² label pairs.
    let forward = small_model();
    let theta = to32(&params(&forward, 7));
    let ids = vec![3i64, 1];
    let exe = Executable::new(forward.clone(), Backend::Interp).unwrap();
    let logits = lsc_runtime::generate::logits(&exe, &theta, &Value::ints(vec![1, 2], ids.clone())).unwrap();
    let rows: Vec<Vec<f64>> = logits.as_floats().unwrap().chunks(5).map(lsc_runtime::generate::softmax).collect();
    let mut c = Curvature::new(&forward, &theta, Backend::Interp, 1, 2).unwrap();
    let (mut expected, mut mean_score) = (0.0, vec![0.0; c.dimension()]);
    for y1 in 0..5 {
        for y2 in 0..5 {
            let p = rows[0][y1] * rows[1][y2];
            let (_, g) = c.gradient(&ids, &[y1 as i64, y2 as i64]).unwrap();
            expected += p * 2.0 * g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
            mean_score.iter_mut().zip(&g).for_each(|(m, g)| *m += p * *g as f64);
        }
    }
    // The premise: the gradient at labels drawn from the model has mean zero,
    // which is what removes the cross terms between tokens.
    let largest = mean_score.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(largest < 1e-5, "E[∇L] = {largest}, not zero");
    let b = Batch { ids: ids.clone(), targets: vec![0, 0] };
    let est = c.fisher_trace(&mut || Ok(b.clone()), 3000, &mut Rng::new(5), &mut || ()).unwrap();
    assert!(
        (est.mean - expected).abs() <= 2.0 * est.half_width,
        "the Fisher estimator {} ± {} vs its exact expectation {expected}",
        est.mean,
        est.half_width
    );
}
