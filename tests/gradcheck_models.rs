//! Finite-difference checks (f64) of the training loss's gradient for every
//! built-in model's `tiny` config. TriLM is checked against its surrogate (the
//! same network with the ternarised weights as plain weights); MoR with its
//! top-k selection frozen (asserted unchanged under each perturbation).

use lsc_interp::{Buffer, Interpreter, Tensors, Value};
use lsc_passes::autodiff::{add_parameter_gradients, VjpTable};
use lsc_passes::train::add_loss;
use lsc_runtime::init::{self, Rng};

/// The loss program of `model` with `grad.*` outputs, and its outputs' names.
fn loss_and_grads(model: &str, terms: &[(String, f64)]) -> lsc_ir::Program {
    let mut p = lsc_models::build(model, "tiny").unwrap();
    let table = VjpTable::standard();
    let monitors = add_loss(&mut p, terms, &table).unwrap();
    let grads = add_parameter_gradients(&mut p, "loss", &table).unwrap();
    for (n, g) in grads {
        p.main.outputs.push((format!("grad.{n}"), g));
    }
    p.main.outputs.extend(monitors.into_iter().filter(|(n, _)| n.starts_with("route.")));
    p
}

fn inputs(b: usize, t: usize, seed: u64) -> Tensors<f64> {
    let mut rng = Rng::new(seed);
    let mut ids = || (0..b * t).map(|_| (rng.next_u64() % 256) as i64).collect::<Vec<_>>();
    let mut x = Tensors::new();
    x.insert("input_ids".to_string(), Value::ints(vec![b, t], ids()));
    x.insert("targets".to_string(), Value::ints(vec![b, t], ids()));
    x
}

fn to64(p: &Tensors<f32>) -> Tensors<f64> {
    p.iter().map(|(k, v)| (k.clone(), v.convert())).collect()
}

fn bump(p: &mut Tensors<f64>, name: &str, i: usize, h: f64) {
    if let Buffer::Float(v) = &mut p.get_mut(name).unwrap().data {
        v[i] += h;
    }
}

/// Maps the parameters being checked to those the finite differences run on.
type ParamMap = dyn Fn(&Tensors<f64>) -> Tensors<f64>;

/// Checks a sample of elements of every parameter; `surrogate` (if any) is the
/// program and parameter map whose finite differences the gradients must match.
fn check(model: &str, terms: &[(String, f64)], surrogate: Option<(&lsc_ir::Program, &ParamMap)>) {
    let p = loss_and_grads(model, terms);
    let interp = Interpreter::new(&p).unwrap();
    let mut params = to64(&init::init_params(&p, 21).unwrap());
    // Larger weights than the 0.02 init, so every path carries a visible gradient.
    for v in params.values_mut() {
        if let Buffer::Float(x) = &mut v.data {
            x.iter_mut().for_each(|w| *w *= 4.0);
        }
    }
    let x = inputs(2, 8, 3);
    let outs = interp.run(&x, &params).unwrap();
    let get = |outs: &[(String, Value<f64>)], n: &str| outs.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_f64_vec());
    let routes = |outs: &[(String, Value<f64>)]| -> Vec<Vec<f64>> {
        outs.iter().filter(|(k, _)| k.starts_with("route.")).map(|(_, v)| v.to_f64_vec()).collect()
    };
    let base_routes = routes(&outs);
    // Finite differences perturb the surrogate's parameters (Ŵ for TriLM) by the same deltas.
    let base = params.clone();
    let (fd_prog, fd_map): (&lsc_ir::Program, Box<ParamMap>) = match surrogate {
        Some((sp, f)) => {
            let at = f(&base);
            let base = base.clone();
            (
                sp,
                Box::new(move |t: &Tensors<f64>| {
                    let mut out = at.clone();
                    for (k, v) in t {
                        let (d, b0) = (v.to_f64_vec(), base[k].to_f64_vec());
                        if let Buffer::Float(o) = &mut out.get_mut(k).unwrap().data {
                            o.iter_mut().zip(d.iter().zip(&b0)).for_each(|(o, (x, y))| *o += x - y);
                        }
                    }
                    out
                }),
            )
        }
        None => (&p, Box::new(|t: &Tensors<f64>| t.clone())),
    };
    let fd_interp = Interpreter::new(fd_prog).unwrap();
    let loss = |vals: &Tensors<f64>| {
        let o = fd_interp.run(&x, &fd_map(vals)).unwrap();
        if surrogate.is_none() {
            assert_eq!(routes(&o), base_routes, "{model}: the perturbation changed the top-k selection");
        }
        get(&o, "loss").unwrap()[0]
    };
    let mut rng = Rng::new(9);
    let mut checked = 0;
    for (name, v) in params.clone() {
        let analytic = get(&outs, &format!("grad.{name}")).unwrap();
        for _ in 0..3 {
            let i = (rng.next_u64() % v.numel() as u64) as usize;
            let h = 1e-6;
            let (mut plus, mut minus) = (params.clone(), params.clone());
            bump(&mut plus, &name, i, h);
            bump(&mut minus, &name, i, -h);
            let fd = (loss(&plus) - loss(&minus)) / (2.0 * h);
            let tol = 1e-6 + 1e-5 * fd.abs().max(analytic[i].abs());
            assert!(
                (fd - analytic[i]).abs() <= tol,
                "{model}: d loss/d {name}[{i}] analytic {} vs finite difference {fd}",
                analytic[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "{model}: {checked} elements checked");
}

#[test]
fn transformer_gradients() {
    check("transformer", &[], None);
}

#[test]
fn ls_transformer_gradients() {
    check("ls-transformer", &[], None);
}

#[test]
fn gam_gradients() {
    check("gam", &[], None);
}

#[test]
fn mor_gradients_with_frozen_selection_reach_the_routers() {
    check("mor", &[("aux_loss".to_string(), 0.001)], None);
    let p = loss_and_grads("mor", &[]);
    let params = to64(&init::init_params(&p, 2).unwrap());
    let outs = Interpreter::new(&p).unwrap().run(&inputs(2, 8, 1), &params).unwrap();
    let g = outs.iter().find(|(k, _)| k == "grad.routers.2.weight").unwrap().1.to_f64_vec();
    assert!(g.iter().any(|&x| x != 0.0), "the LM loss reaches the routers through the gate");
}

#[test]
fn trilm_gradients_match_the_straight_through_surrogate() {
    // The surrogate: the transformer evaluated at the ternarised weights Ŵ.
    let mut surrogate = lsc_models::build("transformer", "tiny").unwrap();
    let table = VjpTable::standard();
    add_loss(&mut surrogate, &[], &table).unwrap();
    let quantized: Vec<String> =
        lsc_models::quantized_weights("trilm", "tiny").unwrap().into_iter().map(|(n, _)| n).collect();
    let to_surrogate = move |latent: &Tensors<f64>| {
        let mut out = latent.clone();
        for name in &quantized {
            let w = latent[name].to_f64_vec();
            let s = (w.iter().map(|x| x.abs()).sum::<f64>() / w.len() as f64).max(1e-5);
            let q: Vec<f64> = w.iter().map(|x| (x / s).round_ties_even().clamp(-1.0, 1.0) * s).collect();
            out.insert(name.clone(), Value::floats(latent[name].shape.clone(), q));
        }
        out
    };
    check("trilm", &[], Some((&surrogate, &to_surrogate)));
}
