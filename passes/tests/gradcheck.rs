//! Finite-difference checks (in f64) of every op's VJP rule.

use lsc_frontend::modules::{quant, WeightQuant};
use lsc_frontend::{ModelBuilder, Tensor};
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Program, TensorType};
use lsc_passes::autodiff::{add_parameter_gradients, VjpTable};

/// SplitMix64 → uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn dims(s: &[usize]) -> Vec<Dim> {
    s.iter().map(|&d| Dim::new(d as i64)).collect()
}

/// Builds `loss = Σ f(params)·probe` and checks d loss / d param against
/// central differences for every parameter element.
fn check(name: &str, params: &[(&str, &[usize])], f: impl Fn(&ModelBuilder, &[Tensor]) -> Tensor) {
    check_with(name, params, |_, _| {}, f)
}

fn check_with(
    name: &str,
    params: &[(&str, &[usize])],
    adjust: impl Fn(&str, &mut [f64]),
    f: impl Fn(&ModelBuilder, &[Tensor]) -> Tensor,
) {
    let b = ModelBuilder::new();
    let ps: Vec<Tensor> = params.iter().map(|(n, s)| b.param(n, DType::F32, &dims(s))).collect();
    let out = f(&b, &ps);
    let shape: Vec<usize> = out.shape().iter().map(|d| d.as_const().unwrap() as usize).collect();
    let probe = b.input("probe", DType::F32, &dims(&shape));
    let axes: Vec<isize> = (0..shape.len() as isize).collect();
    let loss = if shape.is_empty() { &out * &probe } else { (&out * &probe).sum(&axes, false) };
    b.output("loss", &loss);
    let mut program = b.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
    let grads =
        add_parameter_gradients(&mut program, "loss", &VjpTable::standard()).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (n, g) in &grads {
        program.main.outputs.push((format!("grad.{n}"), *g));
    }
    lsc_ir::verify(&program).unwrap_or_else(|e| panic!("{name}: gradient program invalid: {e}"));
    let mut rng = Rng(0x5eed ^ name.len() as u64);
    let mut values: Tensors<f64> = Tensors::new();
    for (n, s) in params {
        let mut v: Vec<f64> = (0..s.iter().product()).map(|_| rng.next()).collect();
        adjust(n, &mut v);
        values.insert(n.to_string(), Value::floats(s.to_vec(), v));
    }
    let mut inputs: Tensors<f64> = Tensors::new();
    inputs.insert(
        "probe".into(),
        Value::floats(shape.clone(), (0..shape.iter().product()).map(|_| rng.next()).collect()),
    );
    let interp = Interpreter::new(&program).unwrap();
    let run = |vals: &Tensors<f64>| interp.run(&inputs, vals).unwrap_or_else(|e| panic!("{name}: {e}"));
    let outs = run(&values);
    let loss_of = |vals: &Tensors<f64>| run(vals)[0].1.to_f64_vec()[0];
    for (pname, _) in params {
        let analytic = outs.iter().find(|(n, _)| *n == format!("grad.{pname}")).unwrap().1.to_f64_vec();
        let base = values[*pname].to_f64_vec();
        for i in 0..base.len() {
            let h = 1e-6;
            let mut plus = values.clone();
            let mut minus = values.clone();
            if let lsc_interp::Buffer::Float(v) = &mut plus.get_mut(*pname).unwrap().data {
                v[i] += h;
            }
            if let lsc_interp::Buffer::Float(v) = &mut minus.get_mut(*pname).unwrap().data {
                v[i] -= h;
            }
            let fd = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h);
            let tol = 1e-6 + 1e-5 * fd.abs().max(analytic[i].abs());
            assert!(
                (fd - analytic[i]).abs() <= tol,
                "{name}: d/d{pname}[{i}] analytic {} vs finite difference {fd}",
                analytic[i]
            );
        }
    }
}

const V: &[usize] = &[2, 3];

#[test]
fn unary_ops() {
    check("neg", &[("x", V)], |_, p| -&p[0]);
    check("abs", &[("x", V)], |_, p| p[0].abs());
    check("exp", &[("x", V)], |_, p| p[0].exp());
    check("log", &[("x", V)], |_, p| (&p[0].abs() + 0.5).log());
    check("sqrt", &[("x", V)], |_, p| (&p[0].abs() + 0.5).sqrt());
    check("rsqrt", &[("x", V)], |_, p| (&p[0].abs() + 0.5).rsqrt());
    check("recip", &[("x", V)], |_, p| (&p[0].abs() + 0.5).recip());
    check("tanh", &[("x", V)], |_, p| p[0].tanh());
    check("sigmoid", &[("x", V)], |_, p| p[0].sigmoid());
    check("silu", &[("x", V)], |_, p| p[0].silu());
    check("gelu", &[("x", V)], |_, p| (&p[0] * 2.0).gelu());
    check("erf", &[("x", V)], |_, p| p[0].erf());
    check("sin", &[("x", V)], |_, p| (&p[0] * 3.0).sin());
    check("cos", &[("x", V)], |_, p| (&p[0] * 3.0).cos());
    check("clamp", &[("x", V)], |_, p| p[0].clamp(-0.3, 0.4));
    check("round has zero gradient", &[("x", V)], |_, p| (&p[0] * 3.3).round());
}

#[test]
fn rotary() {
    // x [B, T, D] with its own cos and sin tables [T, D/2] (free parameters here,
    // so their gradients are checked too).
    check("rotary", &[("x", &[2, 3, 4]), ("c", &[3, 2]), ("s", &[3, 2])], |_, p| p[0].rotary(&p[1], &p[2]));
}

#[test]
fn binary_ops() {
    let two = &[("a", V), ("b", V)];
    check("add", two, |_, p| &p[0] + &p[1]);
    check("sub", two, |_, p| &p[0] - &p[1]);
    check("mul", two, |_, p| &p[0] * &p[1]);
    check("div", two, |_, p| &p[0] / &(&p[1].abs() + 0.5));
    check("max", two, |_, p| p[0].maximum(&p[1]));
    check("min", two, |_, p| p[0].minimum(&p[1]));
    check("pow", two, |_, p| (&p[0].abs() + 0.5).pow(&p[1]));
    check("select", two, |_, p| p[0].gt(&p[1]).select(&(&p[0] * &p[0]), &p[1].exp()));
    check("broadcast in binary", &[("a", &[2, 3]), ("b", &[3])], |_, p| &p[0] * &p[1]);
}

#[test]
fn reductions_and_normalisations() {
    let x: &[(&str, &[usize])] = &[("x", &[2, 3, 4])];
    check("sum", x, |_, p| p[0].sum(&[0, 2], false));
    check("mean", x, |_, p| p[0].mean(&[1], true));
    check("max", x, |_, p| p[0].max(&[2], false));
    check("min", x, |_, p| p[0].min(&[0], false));
    check("softmax", x, |_, p| p[0].softmax(1));
    check("log_softmax", x, |_, p| p[0].log_softmax(-1));
}

#[test]
fn matmul_in_every_form() {
    check("matmul", &[("a", &[3, 4]), ("b", &[4, 2])], |_, p| p[0].matmul(&p[1]));
    check("matmul shared rhs", &[("a", &[2, 3, 4]), ("b", &[4, 5])], |_, p| p[0].matmul(&p[1]));
    check("matmul_t shared rhs", &[("a", &[2, 3, 4]), ("b", &[5, 4])], |_, p| p[0].matmul_t(&p[1]));
    check("batched matmul_t", &[("a", &[2, 2, 3, 4]), ("b", &[2, 2, 5, 4])], |_, p| p[0].matmul_t(&p[1]));
    check("batched matmul", &[("a", &[2, 3, 4]), ("b", &[2, 4, 2])], |_, p| p[0].matmul(&p[1]));
}

#[test]
fn layout_ops() {
    let x: &[(&str, &[usize])] = &[("x", &[2, 3, 4])];
    check("reshape", x, |_, p| p[0].reshape(&dims(&[6, 4])));
    check("transpose", x, |_, p| p[0].transpose(&[2, 0, 1]));
    check("slice", x, |_, p| p[0].slice(2, 1i64, 3i64));
    check("concat", &[("a", &[2, 3]), ("b", &[2, 2])], |_, p| p[0].concat(&[&p[1], &p[0]], 1));
    check("broadcast", &[("x", &[3, 1])], |_, p| p[0].broadcast_to(&dims(&[2, 3, 4])));
}

#[test]
fn indexing_ops() {
    check("gather", &[("x", &[3, 4])], |b, p| {
        let idx = b.iota(DType::I64, &dims(&[3, 2]), 1);
        p[0].gather(1, &(&idx * 2.0))
    });
    check("scatter", &[("x", &[3, 4]), ("s", &[3, 2])], |b, p| {
        let idx = b.iota(DType::I64, &dims(&[3, 2]), 1);
        p[0].scatter(1, &(&idx + 1.0), &p[1])
    });
    check("scatter_add", &[("x", &[3, 4]), ("s", &[3, 2])], |b, p| {
        let idx = b.iota(DType::I64, &dims(&[3, 2]), 0);
        p[0].scatter_add(1, &idx, &p[1])
    });
    check("embedding", &[("w", &[5, 3])], |b, p| {
        let ids = b.iota(DType::I64, &dims(&[2, 4]), 1);
        p[0].embedding(&ids)
    });
    check("embedding rank 1", &[("w", &[5, 3])], |b, p| p[0].embedding(&b.iota(DType::I64, &dims(&[4]), 0)));
    check("topk values", &[("x", &[2, 5])], |_, p| p[0].topk(2i64, 1).0);
    check("cross_entropy", &[("logits", &[2, 3, 5])], |b, p| {
        let t = b.iota(DType::I64, &dims(&[2, 3]), 1);
        p[0].cross_entropy(&t)
    });
    check("cache_update", &[("cache", &[1, 5, 2]), ("u", &[1, 2, 2])], |b, p| {
        let off = b.constant(2.0, DType::I64, &[]);
        p[0].cache_update(1, &p[1], &off)
    });
    check("causal_conv1d", &[("x", &[2, 5, 3]), ("w", &[3, 1, 3])], |_, p| p[0].causal_conv1d(&p[1]));
}

#[test]
fn stop_gradient_and_straight_through() {
    // stop_gradient blocks: the only gradient is through the second term.
    check("stop_gradient", &[("x", V)], |_, p| &p[0].stop_gradient().exp() * 0.0 + &p[0] * 2.0);
    // STE ops are checked against their surrogate (the identity): d Ŵ / d W = 1.
    let b = ModelBuilder::new();
    let w = b.param("w", DType::F32, &dims(&[4, 8]));
    let probe = b.input("probe", DType::F32, &dims(&[4, 8]));
    for q in [WeightQuant::Ternary, WeightQuant::Groupwise { bits: 4, group: 4 }] {
        b.output(&format!("{q:?}"), &(&quant::quantized_weight(&w, q) * &probe).sum(&[0, 1], false));
    }
    let mut p: Program = b.finish().unwrap();
    for k in 0..2 {
        p.main.outputs.swap(0, k);
        let name = p.main.outputs[0].0.clone();
        let grads = add_parameter_gradients(&mut p, &name, &VjpTable::standard()).unwrap();
        let mut q = p.clone();
        q.main.outputs = vec![("g".into(), grads[0].1)];
        let mut inputs: Tensors<f64> = Tensors::new();
        let probe_v: Vec<f64> = (0..32).map(|i| i as f64 * 0.1 - 1.0).collect();
        inputs.insert("probe".into(), Value::floats(vec![4, 8], probe_v.clone()));
        let mut params: Tensors<f64> = Tensors::new();
        params.insert("w".into(), Value::floats(vec![4, 8], (0..32).map(|i| (i as f64).sin()).collect()));
        let g = Interpreter::new(&q).unwrap().run(&inputs, &params).unwrap()[0].1.to_f64_vec();
        assert_eq!(g, probe_v, "{name}: the straight-through gradient is the identity");
    }
}

#[test]
fn call_and_loop_are_differentiated_structurally() {
    let tt = |s: &[usize]| TensorType::new(DType::F32, dims(s));
    check("call", &[("x", &[2, 3]), ("w", &[3, 3])], |b, p| {
        b.function("f", &[("h", tt(&[2, 3])), ("w", tt(&[3, 3]))], |_, a| {
            vec![("y".into(), a[0].matmul(&a[1]).tanh())]
        });
        let y = b.call("f", &[&p[0], &p[1]]);
        b.call("f", &[&y[0], &p[1]]).remove(0)
    });
    check("loop", &[("x", &[2, 3]), ("w", &[3, 3]), ("c", &[3])], |b, p| {
        let args = [("i", TensorType::scalar(DType::I64)), ("h", tt(&[2, 3])), ("w", tt(&[3, 3])), ("c", tt(&[3]))];
        b.function("step", &args, |_, a| {
            let scale = &a[0].cast(DType::F32) * 0.1 + 1.0;
            vec![("h".into(), &(&a[1].matmul(&a[2]) + &a[3]).tanh() * &scale)]
        });
        b.repeat("step", 3, &[&p[0]], &[&p[1], &p[2]]).remove(0)
    });
}

#[test]
fn fused_ls_attention_gradient() {
    use lsc_ir::infer::NoFunctions;
    use lsc_ir::{Op, ValueRef};
    // q, k, v as parameters of one graph; loss = Σ out·probe over a local head (w = 2) and a global one.
    let mut p = Program::new();
    let ty = TensorType::new(DType::F32, dims(&[1, 2, 5, 3]));
    let g = &mut p.main;
    let qkv: Vec<ValueRef> = ["q", "k", "v"]
        .iter()
        .map(|n| ValueRef::first(g.add_node(Op::Param { name: n.to_string() }, &[], vec![ty.clone()])))
        .collect();
    let probe = ValueRef::first(g.add_node(Op::Input { name: "probe".into() }, &[], vec![ty.clone()]));
    let att = g.add_op(Op::LsAttention { windows: vec![2, 0], scale: 0.7 }, &qkv, &NoFunctions).unwrap();
    let prod = g.add_op(Op::Binary(lsc_ir::BinaryOp::Mul), &[ValueRef::first(att), probe], &NoFunctions).unwrap();
    let loss = g
        .add_op(
            Op::Reduce { kind: lsc_ir::ReduceKind::Sum, axes: vec![0, 1, 2, 3], keep_dims: false },
            &[ValueRef::first(prod)],
            &NoFunctions,
        )
        .unwrap();
    g.outputs.push(("loss".into(), ValueRef::first(loss)));
    let grads = add_parameter_gradients(&mut p, "loss", &VjpTable::standard()).unwrap();
    for (n, gv) in &grads {
        p.main.outputs.push((format!("grad.{n}"), *gv));
    }
    let mut rng = Rng(77);
    let mut values: Tensors<f64> = Tensors::new();
    for n in ["q", "k", "v"] {
        values.insert(n.into(), Value::floats(vec![1, 2, 5, 3], (0..30).map(|_| rng.next()).collect()));
    }
    let inputs: Tensors<f64> =
        [("probe".to_string(), Value::floats(vec![1, 2, 5, 3], (0..30).map(|_| rng.next()).collect()))].into();
    let interp = Interpreter::new(&p).unwrap();
    let outs = interp.run(&inputs, &values).unwrap();
    let loss_of = |v: &Tensors<f64>| interp.run(&inputs, v).unwrap()[0].1.to_f64_vec()[0];
    for n in ["q", "k", "v"] {
        let analytic = outs.iter().find(|(k, _)| *k == format!("grad.{n}")).unwrap().1.to_f64_vec();
        for i in 0..30 {
            let (mut plus, mut minus) = (values.clone(), values.clone());
            if let lsc_interp::Buffer::Float(x) = &mut plus.get_mut(n).unwrap().data {
                x[i] += 1e-6;
            }
            if let lsc_interp::Buffer::Float(x) = &mut minus.get_mut(n).unwrap().data {
                x[i] -= 1e-6;
            }
            let fd = (loss_of(&plus) - loss_of(&minus)) / 2e-6;
            assert!((fd - analytic[i]).abs() <= 1e-6 + 1e-5 * fd.abs(), "d/d{n}[{i}]: {} vs {fd}", analytic[i]);
        }
    }
}
