//! Known answers for every primitive op, and control flow.

use lsc_frontend::{ModelBuilder, Tensor};
use lsc_interp::{Buffer, Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Op};
use proptest::prelude::*;

fn d(v: &[usize]) -> Vec<Dim> {
    v.iter().map(|&x| Dim::new(x as i64)).collect()
}

/// Builds a one-output program from `f` over float inputs `x0, x1, ...` and runs it.
fn run(inputs: &[(&[usize], Vec<f64>)], f: impl Fn(&ModelBuilder, &[Tensor]) -> Tensor) -> Result<Value<f64>, String> {
    let b = ModelBuilder::new();
    let xs: Vec<Tensor> =
        inputs.iter().enumerate().map(|(i, (s, _))| b.input(&format!("x{i}"), DType::F32, &d(s))).collect();
    let y = f(&b, &xs);
    b.output("y", &y);
    let p = b.finish().map_err(|e| e.to_string())?;
    let interp = Interpreter::new(&p).map_err(|e| e.to_string())?;
    let mut feed = Tensors::new();
    for (i, (s, v)) in inputs.iter().enumerate() {
        feed.insert(format!("x{i}"), Value::floats(s.to_vec(), v.clone()));
    }
    let out = interp.run(&feed, &Tensors::new()).map_err(|e| e.to_string())?;
    Ok(out.into_iter().next().expect("one output").1)
}

fn vals(v: &Value<f64>) -> Vec<f64> {
    v.to_f64_vec()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

/// Runs one kernel on new outputs of the given types.
fn kernel(op: &Op, args: &[&Value<f32>], outs: &[(DType, Vec<usize>)]) -> Vec<Value<f32>> {
    let views: Vec<_> = args.iter().map(|a| a.view()).collect();
    let mut values: Vec<Value<f32>> = outs.iter().map(|(t, s)| Value::zeros(*t, s.clone())).collect();
    let mut out_views: Vec<_> = values.iter_mut().map(Value::view_mut).collect();
    lsc_interp::kernels::eval_into(op, &views, &mut out_views, &Default::default()).unwrap();
    values
}

fn naive_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize, trans_b: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * if trans_b { b[j * k + p] } else { b[p * n + j] }).sum();
        }
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn matmul_matches_naive(m in 1usize..6, k in 1usize..6, n in 1usize..6, batch in 1usize..3, trans_b: bool, seed in 0u64..1000) {
        let a: Vec<f64> = (0..batch * m * k).map(|i| ((i as u64 * 31 + seed) % 17) as f64 - 8.0).collect();
        let bsz = if trans_b { [n, k] } else { [k, n] };
        let bm: Vec<f64> = (0..k * n).map(|i| ((i as u64 * 7 + seed) % 13) as f64 - 6.0).collect();
        let out = run(&[(&[batch, m, k], a.clone()), (&bsz, bm.clone())], |_, x| if trans_b { x[0].matmul_t(&x[1]) } else { x[0].matmul(&x[1]) }).unwrap();
        let want: Vec<f64> = (0..batch).flat_map(|i| naive_matmul(&a[i * m * k..(i + 1) * m * k], &bm, m, k, n, trans_b)).collect();
        prop_assert_eq!(out.shape.clone(), vec![batch, m, n]);
        close(&vals(&out), &want);
    }
}

#[test]
fn batched_matmul_uses_each_batchs_rhs() {
    let a = vec![1.0, 2.0, 3.0, 4.0];
    let b = vec![1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0];
    let out = run(&[(&[2, 1, 2], a), (&[2, 2, 2], b)], |_, x| x[0].matmul(&x[1])).unwrap();
    close(&vals(&out), &[1.0, 2.0, 6.0, 8.0]);
}

#[test]
fn softmax_and_log_softmax() {
    let x = vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0];
    let s = run(&[(&[2, 3], x.clone())], |_, x| x[0].softmax(-1)).unwrap();
    let e: f64 = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
    close(&vals(&s), &[1f64.exp() / e, 2f64.exp() / e, 3f64.exp() / e, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
    let ls = run(&[(&[2, 3], x.clone())], |_, x| x[0].log_softmax(0)).unwrap();
    let col: Vec<f64> = (0..6)
        .map(|i| {
            let (a, b) = (x[i % 3], x[i % 3 + 3]);
            let v = x[i];
            v - (a.exp() + b.exp()).ln()
        })
        .collect();
    close(&vals(&ls), &col);
}

#[test]
fn reductions_over_several_axes() {
    let x: Vec<f64> = (0..24).map(|i| i as f64).collect();
    let s = run(&[(&[2, 3, 4], x.clone())], |_, x| x[0].sum(&[0, 2], false)).unwrap();
    assert_eq!(s.shape, vec![3]);
    let want: Vec<f64> =
        (0..3).map(|j| (0..2).flat_map(|i| (0..4).map(move |k| (i * 12 + j * 4 + k) as f64)).sum()).collect();
    close(&vals(&s), &want);
    let m = run(&[(&[2, 3, 4], x.clone())], |_, x| x[0].mean(&[-1], true)).unwrap();
    assert_eq!(m.shape, vec![2, 3, 1]);
    close(&vals(&m), &[1.5, 5.5, 9.5, 13.5, 17.5, 21.5]);
    let mx = run(&[(&[2, 3, 4], x.clone())], |_, x| x[0].max(&[1], false)).unwrap();
    close(&vals(&mx), &[8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]);
    let am = run(&[(&[2, 2], vec![1.0, 5.0, 5.0, 5.0])], |_, x| x[0].argmax(1, false)).unwrap();
    assert_eq!(am.data, Buffer::Int(vec![1, 0]), "first index wins ties");
}

#[test]
fn elementwise_unary_values() {
    let x = vec![-2.0, -0.5, 0.5, 2.5];
    let check = |f: fn(&Tensor) -> Tensor, g: fn(f64) -> f64| {
        let out = run(&[(&[4], x.clone())], |_, t| f(&t[0])).unwrap();
        close(&vals(&out), &x.iter().map(|&v| g(v)).collect::<Vec<_>>());
    };
    check(|t| t.exp(), f64::exp);
    check(|t| t.tanh(), f64::tanh);
    check(|t| t.sigmoid(), |v| 1.0 / (1.0 + (-v).exp()));
    check(|t| t.silu(), |v| v / (1.0 + (-v).exp()));
    check(|t| t.abs(), f64::abs);
    check(|t| -t, |v| -v);
    check(|t| t.round(), |v| [-2.0, -0.0, 0.0, 2.0][[-2.0, -0.5, 0.5, 2.5].iter().position(|&a| a == v).unwrap()]);
    check(|t| t.clamp(-1.0, 1.0), |v| v.clamp(-1.0, 1.0));
    check(|t| t.abs().sqrt(), |v| v.abs().sqrt());
    check(|t| t.abs().log(), |v| v.abs().ln());
    check(|t| t.recip(), |v| 1.0 / v);
    check(|t| t.sin(), f64::sin);
    check(|t| t.cos(), f64::cos);
    // GELU(x) = x·Φ(x); Φ(1) = 0.841344746068543.
    let g = run(&[(&[2], vec![1.0, -1.0])], |_, t| t[0].gelu()).unwrap();
    close(&vals(&g), &[0.841_344_746_068_543, -0.158_655_253_931_457_05]);
}

#[test]
fn rotary_turns_each_half_pair_by_its_positions_angle() {
    // Two positions of D = 4: pairs (0, 2) and (1, 3).
    let x = vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
    let (c, s) = (vec![1.0, 0.5, 0.0, -1.0], vec![0.0, 2.0, 1.0, 0.5]);
    let out = run(&[(&[2, 4], x), (&[2, 2], c), (&[2, 2], s)], |_, t| t[0].rotary(&t[1], &t[2])).unwrap();
    // Position 0: (1·1 − 3·0, 2·0.5 − 4·2, 3·1 + 1·0, 4·0.5 + 2·2).
    // Position 1: (1·0 − 3·1, 2·(−1) − 4·0.5, 3·0 + 1·1, 4·(−1) + 2·0.5).
    close(&vals(&out), &[1.0, -7.0, 3.0, 6.0, -3.0, -4.0, 1.0, -3.0]);
}

#[test]
fn binary_compare_select_and_iota() {
    let a = vec![1.0, 4.0, -2.0];
    let b = vec![3.0, 2.0, -2.0];
    let out = run(&[(&[3], a.clone()), (&[3], b.clone())], |_, x| &(&x[0] - &x[1]) / &x[1].maximum(&x[0])).unwrap();
    close(&vals(&out), &[-2.0 / 3.0, 0.5, -0.0]);
    let sel = run(&[(&[3], a.clone()), (&[3], b.clone())], |_, x| x[0].lt(&x[1]).select(&x[0], &x[1])).unwrap();
    close(&vals(&sel), &[1.0, 2.0, -2.0]);
    let io = run(&[(&[1], vec![0.0])], |b, _| {
        let i = b.iota(DType::I64, &d(&[2, 3]), 1);
        let j = b.iota(DType::I64, &d(&[2, 3]), 0);
        (&i + &j).cast(DType::F32)
    })
    .unwrap();
    close(&vals(&io), &[0.0, 1.0, 2.0, 1.0, 2.0, 3.0]);
}

#[test]
fn casts_follow_pytorch() {
    let x = vec![-1.7, 2.9, 0.0, 1.0 + 1.0 / 4096.0];
    let i = run(&[(&[4], x.clone())], |_, t| t[0].cast(DType::I64)).unwrap();
    assert_eq!(i.data, Buffer::Int(vec![-1, 2, 0, 1]), "truncation toward zero");
    let h = run(&[(&[4], x.clone())], |_, t| t[0].cast(DType::F16).cast(DType::F32)).unwrap();
    assert_eq!(vals(&h)[3], 1.0, "1 + 2^-12 rounds to 1 in f16");
    let bo = run(&[(&[4], x)], |_, t| t[0].cast(DType::Bool)).unwrap();
    assert_eq!(bo.data, Buffer::Bool(vec![true, true, false, true]));
}

#[test]
fn layout_ops() {
    let x: Vec<f64> = (0..6).map(|i| i as f64).collect();
    let t = run(&[(&[2, 3], x.clone())], |_, t| t[0].transpose(&[1, 0])).unwrap();
    close(&vals(&t), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let s = run(&[(&[2, 3], x.clone())], |_, t| t[0].slice(1, 1i64, 3i64)).unwrap();
    close(&vals(&s), &[1.0, 2.0, 4.0, 5.0]);
    let c = run(&[(&[2, 3], x.clone()), (&[2, 1], vec![9.0, 8.0])], |_, t| t[0].concat(&[&t[1]], 1)).unwrap();
    close(&vals(&c), &[0.0, 1.0, 2.0, 9.0, 3.0, 4.0, 5.0, 8.0]);
    let bc = run(&[(&[2, 1], vec![1.0, 2.0])], |_, t| t[0].broadcast_to(&d(&[2, 2, 3]))).unwrap();
    close(&vals(&bc), &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    let r = run(&[(&[2, 3], x)], |_, t| t[0].reshape(&d(&[3, 2]))).unwrap();
    assert_eq!(r.shape, vec![3, 2]);
}

#[test]
fn gather_scatter_embedding() {
    // torch.gather(x, 1, [[0,0],[1,0]]) on [[1,2],[3,4]] = [[1,1],[4,3]].
    let g = run(&[(&[2, 2], vec![1.0, 2.0, 3.0, 4.0])], |b, t| {
        let idx = b.input("idx", DType::I64, &d(&[2, 2]));
        t[0].gather(1, &idx)
    });
    // Inputs are fed by name; idx must be fed, so build the program by hand instead.
    assert!(g.is_err(), "missing input is an error, not a panic");

    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &d(&[2, 2]));
    let idx = b.input("idx", DType::I64, &d(&[2, 2]));
    let w = b.input("w", DType::F32, &d(&[3, 2]));
    b.output("gather", &x.gather(1, &idx));
    b.output("scatter", &x.scatter(1, &idx, &(&x * 10.0)));
    b.output("scatter_add", &x.scatter_add(0, &idx, &x));
    b.output("emb", &w.embedding(&idx));
    let p = b.finish().unwrap();
    let mut feed: Tensors<f64> = Tensors::new();
    feed.insert("x".into(), Value::floats(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    feed.insert("idx".into(), Value::ints(vec![2, 2], vec![0, 0, 1, 0]));
    feed.insert("w".into(), Value::floats(vec![3, 2], vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]));
    let out = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap();
    close(&vals(&out[0].1), &[1.0, 1.0, 4.0, 3.0]);
    // Row 0 writes 10 then 20 to column 0 (last write wins); row 1 writes 30 to column 1, 40 to column 0.
    close(&vals(&out[1].1), &[20.0, 2.0, 40.0, 30.0]);
    // scatter_add along 0: out[idx[i][j]][j] += x[i][j]; (0,0)→[0][0], (0,1)→[0][1], (1,0)→[1][0], (1,1)→[0][1].
    close(&vals(&out[2].1), &[1.0 + 1.0, 2.0 + 2.0 + 4.0, 3.0 + 3.0, 4.0]);
    close(&vals(&out[3].1), &[0.0, 0.5, 0.0, 0.5, 1.0, 1.5, 0.0, 0.5]);

    feed.insert("idx".into(), Value::ints(vec![2, 2], vec![0, 0, 7, 0]));
    let err = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap_err();
    assert!(err.to_string().contains("index 7 is out of range 0..2"), "{err}");
}

/// Reference gather/scatter/scatter_add over rank-3 tensors by explicit multi-indices.
fn naive_indexing(x: &[f64], xs: [usize; 3], idx: &[i64], is: [usize; 3], axis: usize) -> [Vec<f64>; 3] {
    let at = |s: [usize; 3], c: [usize; 3]| (c[0] * s[1] + c[1]) * s[2] + c[2];
    let (mut g, mut sc, mut sa) = (Vec::new(), x.to_vec(), x.to_vec());
    for (p, &k) in idx.iter().enumerate() {
        let c = [p / (is[1] * is[2]), (p / is[2]) % is[1], p % is[2]];
        let mut to = c;
        to[axis] = k as usize;
        g.push(x[at(xs, to)]);
        sc[at(xs, to)] = p as f64;
        sa[at(xs, to)] += p as f64;
    }
    [g, sc, sa]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The row-wise paths (index shaped like the tensor except along the axis,
    /// whole rows moving where a row's indices agree) against explicit indexing.
    #[test]
    fn gather_and_scatter_agree_with_explicit_indexing(
        xs in prop::array::uniform3(1usize..5), m in 1usize..5, axis in 0usize..3, seed in any::<u64>(), rowwise in any::<bool>(),
    ) {
        let mut is = xs;
        is[axis] = m;
        let mut rng = seed;
        let mut next = |n: usize| { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((rng >> 33) % n as u64) as i64 };
        let count = is[0] * is[1] * is[2];
        // Rows (the innermost axis) share one index when `rowwise`, so whole rows move.
        let row_index: Vec<i64> = (0..count / is[2]).map(|_| next(xs[axis])).collect();
        let idx: Vec<i64> = (0..count).map(|p| if rowwise { row_index[p / is[2]] } else { next(xs[axis]) }).collect();
        let x: Vec<f64> = (0..xs.iter().product::<usize>()).map(|i| i as f64 * 0.5 - 3.0).collect();
        let b = ModelBuilder::new();
        let xt = b.input("x", DType::F32, &d(&xs));
        let it = b.input("idx", DType::I64, &d(&is));
        let src = b.input("src", DType::F32, &d(&is));
        b.output("gather", &xt.gather(axis as isize, &it));
        b.output("scatter", &xt.scatter(axis as isize, &it, &src));
        b.output("scatter_add", &xt.scatter_add(axis as isize, &it, &src));
        let p = b.finish().unwrap();
        let mut feed: Tensors<f64> = Tensors::new();
        feed.insert("x".into(), Value::floats(xs.to_vec(), x.clone()));
        feed.insert("idx".into(), Value::ints(is.to_vec(), idx.clone()));
        feed.insert("src".into(), Value::floats(is.to_vec(), (0..count).map(|p| p as f64).collect()));
        let out = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap();
        let want = naive_indexing(&x, xs, &idx, is, axis);
        for (o, w) in out.iter().zip(&want) {
            prop_assert_eq!(&vals(&o.1), w, "{}", o.0);
        }
    }
}

#[test]
fn causal_conv1d_is_left_padded_cross_correlation() {
    // One channel: y_t = w0·x_{t-2} + w1·x_{t-1} + w2·x_t.
    let out = run(&[(&[1, 4, 1], vec![1.0, 2.0, 3.0, 4.0]), (&[1, 1, 3], vec![100.0, 10.0, 1.0])], |_, t| {
        t[0].causal_conv1d(&t[1])
    })
    .unwrap();
    close(&vals(&out), &[1.0, 12.0, 123.0, 234.0]);
}

#[test]
fn topk_orders_descending_with_ties_to_lower_index() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &d(&[5]));
    let (v, i) = x.topk(3i64, 0);
    b.output("v", &v);
    b.output("i", &i);
    let p = b.finish().unwrap();
    let mut feed: Tensors<f32> = Tensors::new();
    feed.insert("x".into(), Value::floats(vec![5], vec![1.0, 3.0, 2.0, 3.0, 0.0]));
    let out = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap();
    assert_eq!(out[0].1.as_floats().unwrap(), &[3.0, 3.0, 2.0]);
    assert_eq!(out[1].1.as_ints().unwrap(), &[1, 3, 2]);
}

#[test]
fn cross_entropy_is_negative_log_softmax_at_target() {
    let b = ModelBuilder::new();
    let logits = b.input("logits", DType::F32, &d(&[2, 3]));
    let tgt = b.input("tgt", DType::I64, &d(&[2]));
    b.output("ce", &logits.cross_entropy(&tgt));
    let p = b.finish().unwrap();
    let mut feed: Tensors<f64> = Tensors::new();
    feed.insert("logits".into(), Value::floats(vec![2, 3], vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0]));
    feed.insert("tgt".into(), Value::ints(vec![2], vec![2, 1]));
    let out = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap();
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    close(&vals(&out[0].1), &[lse - 3.0, 3f64.ln()]);
}

#[test]
fn cache_update_writes_at_the_offset() {
    let b = ModelBuilder::new();
    let cache = b.input("cache", DType::F32, &[Dim::new(1), Dim::sym("S"), Dim::new(2)]);
    let upd = b.input("upd", DType::F32, &[Dim::new(1), Dim::sym("T"), Dim::new(2)]);
    let off = b.input("off", DType::I64, &[]);
    b.output("cache", &cache.cache_update(1, &upd, &off));
    let p = b.finish().unwrap();
    let mut feed: Tensors<f64> = Tensors::new();
    feed.insert("cache".into(), Value::floats(vec![1, 4, 2], vec![0.0; 8]));
    feed.insert("upd".into(), Value::floats(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    feed.insert("off".into(), Value::ints(vec![], vec![1]));
    let out = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap();
    close(&vals(&out[0].1), &[0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0]);
    feed.insert("off".into(), Value::ints(vec![], vec![3]));
    let err = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap_err();
    assert!(err.to_string().contains("beyond the cache"), "{err}");
}

#[test]
fn loop_and_call_run_the_shared_body() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::sym("N")]);
    let s = b.input("s", DType::F32, &[]);
    let h_ty = lsc_ir::TensorType::new(DType::F32, [Dim::sym("M")]);
    let s_ty = lsc_ir::TensorType::scalar(DType::F32);
    b.function("scale", &[("h", h_ty.clone()), ("s", s_ty.clone())], |_, a| vec![("y".into(), &a[0] * &a[1])]);
    b.function("step", &[("i", lsc_ir::TensorType::scalar(DType::I64)), ("h", h_ty), ("s", s_ty)], |fb, a| {
        let y = fb.call("scale", &[&a[1], &a[2]]);
        // Adds the iteration index so the test sees it advance: h ← s·h + i.
        vec![("h".into(), &y[0] + &a[0].cast(DType::F32))]
    });
    let out = b.repeat("step", 3, &[&x], &[&s]);
    b.output("y", &out[0]);
    let p = b.finish().unwrap();
    let mut feed: Tensors<f64> = Tensors::new();
    feed.insert("x".into(), Value::floats(vec![2], vec![1.0, -1.0]));
    feed.insert("s".into(), Value::floats(vec![], vec![2.0]));
    let out = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap();
    // h0 = x; h1 = 2x + 0; h2 = 2h1 + 1; h3 = 2h2 + 2 = 8x + 4.
    close(&vals(&out[0].1), &[12.0, -4.0]);
}

#[test]
fn wrong_input_shapes_are_errors() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::new(4)]);
    let y = b.input("y", DType::F32, &[Dim::sym("B"), Dim::new(4)]);
    b.output("z", &(&x + &y));
    let p = b.finish().unwrap();
    let mut feed: Tensors<f32> = Tensors::new();
    feed.insert("x".into(), Value::floats(vec![2, 4], vec![0.0; 8]));
    feed.insert("y".into(), Value::floats(vec![3, 4], vec![0.0; 12]));
    let err = Interpreter::new(&p).unwrap().run(&feed, &Tensors::new()).unwrap_err();
    assert!(err.to_string().contains("B = 3, but B = 2 elsewhere"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// `ternary_pack` then `ternary_matmul` on the packed planes agrees with
    /// the f64 product of the same ternary weights, at random shapes.
    #[test]
    fn packed_ternary_matmul_matches_the_dense_product(
        m in prop_oneof![1usize..6, 60usize..80],
        n in 1usize..70,
        k in 1usize..150,
        seed in any::<u64>(),
    ) {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f64 / (1u64 << 24) as f64 - 0.5
        };
        let scale = 0.1;
        let w: Vec<f32> = (0..n * k).map(|_| (next() * 0.6) as f32).collect();
        let x: Vec<f32> = (0..m * k).map(|_| next() as f32).collect();
        let (wv, sv) = (Value::floats(vec![n, k], w.clone()), Value::floats(vec![], vec![scale as f32]));
        let packed = kernel(&Op::TernaryPack, &[&wv, &sv], &[(DType::Ternary, vec![n, k])]);
        prop_assert!(matches!(packed[0].data, Buffer::Ternary(_)));
        let xv = Value::floats(vec![m, k], x.clone());
        let y = kernel(&Op::TernaryMatmul { trans_b: true }, &[&xv, &packed[0], &sv], &[(DType::F32, vec![m, n])]);
        let q: Vec<f64> = w.iter().map(|&v| (v as f64 / scale).round().clamp(-1.0, 1.0)).collect();
        let want: Vec<f64> = naive_matmul(&x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &q, m, k, n, true)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        let got = y[0].to_f64_vec();
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }
}

/// `run_owned` updates a cache in place only where nothing else reads the old
/// cache; either way every output equals `run`'s.
#[test]
fn owned_runs_update_caches_in_place_without_changing_results() {
    for other_reader in [false, true] {
        let b = ModelBuilder::new();
        let cache = b.input("cache", DType::F32, &d(&[2, 5, 3]));
        let update = b.input("update", DType::F32, &d(&[2, 2, 3]));
        let pos = b.input("pos", DType::I64, &[]);
        let updated = cache.cache_update(1, &update, &pos);
        b.output("cache", &updated);
        b.output("same", &updated);
        if other_reader {
            b.output("old_sum", &cache.sum(&[0, 1, 2], false));
        }
        let p = b.finish().unwrap();
        let interp = Interpreter::new(&p).unwrap();
        let feed = Tensors::from([
            ("cache".to_string(), Value::<f32>::floats(vec![2, 5, 3], (0..30).map(|i| i as f32).collect())),
            ("update".to_string(), Value::floats(vec![2, 2, 3], vec![-1.0; 12])),
            ("pos".to_string(), Value::ints(vec![], vec![3])),
        ]);
        let want = interp.run(&feed, &Tensors::new()).unwrap();
        let got = interp.run_owned(feed, &Tensors::new()).unwrap();
        assert_eq!(got, want, "other reader: {other_reader}");
        let cache = got[0].1.as_floats().unwrap();
        assert_eq!(&cache[9..15], &[-1.0; 6]);
        assert_eq!(cache[8], 8.0);
        if other_reader {
            assert_eq!(got[2].1.as_floats().unwrap(), &[435.0]);
        }
    }
}
