//! The Cranelift backend against the kernel-IR evaluator (bit for bit) and
//! the transcendentals against f64 references over the whole f32 range.

use lsc_cranelift::Jit;
use lsc_ir::{BinaryOp, CmpOp, ReduceKind, UnaryOp};
use lsc_kir::lower::{lower_elementwise, Group, Node, Output};
use lsc_kir::{eval, math, Body, Buffer, Expr, Index, Kernel, Schedule, Stmt};
use proptest::prelude::*;

/// `out[i] = f(x[i])` over `n` elements.
fn unary_kernel(name: &str, n: u64, f: fn(&mut Body, Expr) -> Expr) -> Kernel {
    let mut b = Body::default();
    let i = b.fresh();
    let at = Index { terms: vec![(i, 1)], offset: 0 };
    let x = b.bind(Expr::Load { buf: 0, index: at.clone() });
    let y = f(&mut b, x);
    b.stmts.push(Stmt::Store { buf: 1, index: at, value: y });
    Kernel {
        name: name.into(),
        buffers: vec![
            Buffer { name: "x".into(), len: n, output: false },
            Buffer { name: "y".into(), len: n, output: true },
        ],
        body: vec![Stmt::Loop { var: i, extent: n, body: b.stmts }],
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: 4 },
    }
}

/// Ulps between two f32s on the ordered-integer line (0 for equal or both NaN).
fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() || a == b {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    key(a).abs_diff(key(b))
}

/// Max ulp error of `f` over every 4096th f32 bit pattern (both signs), and
/// whether the JIT agrees bit for bit with the evaluator on every 16th of those.
fn max_ulps(name: &str, f: fn(&mut Body, Expr) -> Expr, reference: fn(f64) -> f64) -> u64 {
    let xs: Vec<f32> = (0..1u64 << 20).map(|k| f32::from_bits((k << 12) as u32)).collect();
    let n = xs.len() as u64;
    let k = unary_kernel(name, n, f);
    let mut jit = Jit::new().unwrap();
    jit.compile(&k).unwrap();
    assert!(jit.clif(name).unwrap().contains("f32x4"), "{name} runs 4 lanes at a time");
    let mut y = vec![0.0f32; xs.len()];
    let mut x = xs.clone();
    jit.run(name, &mut [&mut x, &mut y]).unwrap();
    let sample: Vec<f32> = xs.iter().step_by(16).copied().collect();
    let ks = unary_kernel(name, sample.len() as u64, f);
    let mut bufs = vec![sample.clone(), vec![0.0; sample.len()]];
    eval::run(&ks, &mut bufs);
    for (j, (&e, &v)) in bufs[1].iter().zip(y.iter().step_by(16)).enumerate() {
        assert!(e.to_bits() == v.to_bits() || (e.is_nan() && v.is_nan()), "{name}({}): eval {e} vs jit {v}", sample[j]);
    }
    xs.iter().zip(&y).map(|(&x, &v)| ulps(v, reference(x as f64) as f32)).max().unwrap_or(0)
}

#[test]
fn transcendentals_are_accurate_over_the_whole_f32_range() {
    let exp = max_ulps("exp", math::exp, f64::exp);
    let log = max_ulps("log", math::log, f64::ln);
    let tanh = max_ulps("tanh", math::tanh, f64::tanh);
    let sigmoid = max_ulps("sigmoid", math::sigmoid, |x| 1.0 / (1.0 + (-x).exp()));
    println!("max ulp: exp {exp}, log {log}, tanh {tanh}, sigmoid {sigmoid}");
    assert!(exp <= 1 && log <= 2 && tanh <= 2 && sigmoid <= 2, "exp {exp}, log {log}, tanh {tanh}, sigmoid {sigmoid}");
}

/// A random elementwise group over `shape` with two inputs (the second broadcast along axis 0).
fn random_group(shape: &[usize], ops: &[u8]) -> Group {
    let numel: usize = shape.iter().product();
    let contiguous: Vec<i64> = (0..shape.len()).map(|a| shape[a + 1..].iter().product::<usize>() as i64).collect();
    let mut bcast = contiguous.clone();
    bcast[0] = 0;
    let mut nodes =
        vec![Node::Input { buf: 0, strides: contiguous }, Node::Input { buf: 1, strides: bcast }, Node::Const(0.5)];
    for (k, &o) in ops.iter().enumerate() {
        let a = nodes.len() - 1;
        // Any earlier float value (comparisons are booleans).
        let floats: Vec<usize> = (0..nodes.len()).filter(|&i| !matches!(nodes[i], Node::Compare(..))).collect();
        let b = floats[(k * 7 + o as usize) % floats.len()];
        let node = match o % 12 {
            0 => Node::Binary(BinaryOp::Add, a, b),
            1 => Node::Binary(BinaryOp::Mul, a, b),
            2 => Node::Binary(BinaryOp::Sub, a, b),
            3 => Node::Binary(BinaryOp::Max, a, b),
            4 => Node::Unary(UnaryOp::Exp, a),
            5 => Node::Unary(UnaryOp::Tanh, a),
            6 => Node::Unary(UnaryOp::Sigmoid, a),
            7 => Node::Unary(UnaryOp::Silu, a),
            8 => Node::Clamp(a, -1.0, 2.0),
            9 => {
                nodes.push(Node::Compare(CmpOp::Lt, a, b));
                Node::Select(nodes.len() - 1, a, b)
            }
            10 => Node::Unary(UnaryOp::Rsqrt, a),
            _ => Node::Binary(BinaryOp::Div, a, b),
        };
        nodes.push(node);
    }
    let rest: usize = shape[1..].iter().product();
    let first_float = (3..nodes.len()).find(|&i| !matches!(nodes[i], Node::Compare(..))).unwrap_or(0);
    Group {
        name: "g".into(),
        shape: shape.to_vec(),
        reduced_axes: 0,
        inputs: vec![("a".into(), numel as u64), ("b".into(), rest as u64)],
        outputs: vec![Output::element("y", nodes.len() - 1), Output::element("first", first_float)],
        nodes,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn reductions_match_the_evaluator_bit_for_bit(
        shape in proptest::collection::vec(1usize..6, 1..4),
        ops in proptest::collection::vec(any::<u8>(), 1..8),
        kind in 0usize..4,
        axes in 1usize..4,
    ) {
        let mut g = random_group(&shape, &ops);
        let kinds = [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min];
        g.reduced_axes = axes.min(shape.len());
        g.nodes.push(Node::Reduce(kinds[kind], g.outputs[0].value));
        g.outputs = vec![Output::row("y", g.nodes.len() - 1)];
        let k = lower_elementwise(&g).unwrap();
        let mut jit = Jit::new().unwrap();
        jit.compile(&k).unwrap();
        let a: Vec<f32> = (0..g.inputs[0].1 as usize).map(|i| (i % 13) as f32 / 4.0 - 1.5).collect();
        let b: Vec<f32> = (0..g.inputs[1].1 as usize).map(|i| (i % 7) as f32 / 3.0 - 1.0).collect();
        let n = k.buffers[2].len as usize;
        let mut want = vec![a.clone(), b.clone(), vec![0.0; n]];
        eval::run(&k, &mut want);
        let mut y = vec![0.0f32; n];
        jit.run_parallel("g", &[&a, &b], &mut [&mut y], 2).unwrap();
        for (w, got) in want[2].iter().zip(&y) {
            prop_assert!(w.to_bits() == got.to_bits() || (w.is_nan() && got.is_nan()), "{w} vs {got}\n{}", lsc_kir::print::print(&k));
        }
    }

    #[test]
    fn row_kernels_match_the_evaluator_bit_for_bit(
        shape in proptest::collection::vec(1usize..9, 1..4),
        ops in proptest::collection::vec(any::<u8>(), 1..8),
        kind in 0usize..4,
        axes in 1usize..3,
    ) {
        // A norm-like row kernel: reduce a random value over the row, then use
        // the per-row result with the row's elements (and output both).
        let mut g = random_group(&shape, &ops);
        let kinds = [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min];
        g.reduced_axes = axes.min(shape.len());
        let y = g.outputs[0].value;
        g.nodes.push(Node::Reduce(kinds[kind], y));
        let r = g.nodes.len() - 1;
        g.nodes.push(Node::Binary(BinaryOp::Sub, 0, r));
        g.nodes.push(Node::Unary(UnaryOp::Exp, g.nodes.len() - 1));
        g.outputs = vec![Output::element("normed", g.nodes.len() - 1), Output::row("row", r)];
        let k = lower_elementwise(&g).unwrap();
        let mut jit = Jit::new().unwrap();
        jit.compile(&k).unwrap();
        let a: Vec<f32> = (0..g.inputs[0].1 as usize).map(|i| (i % 13) as f32 / 4.0 - 1.5).collect();
        let b: Vec<f32> = (0..g.inputs[1].1 as usize).map(|i| (i % 7) as f32 / 3.0 - 1.0).collect();
        let (n, rows) = (k.buffers[2].len as usize, k.buffers[3].len as usize);
        let mut want = vec![a.clone(), b.clone(), vec![0.0; n], vec![0.0; rows]];
        eval::run(&k, &mut want);
        let (mut out, mut row) = (vec![0.0f32; n], vec![0.0f32; rows]);
        jit.run_parallel("g", &[&a, &b], &mut [&mut out, &mut row], 2).unwrap();
        for (w, got) in want[2].iter().chain(&want[3]).zip(out.iter().chain(&row)) {
            prop_assert!(w.to_bits() == got.to_bits() || (w.is_nan() && got.is_nan()), "{w} vs {got}\n{}", lsc_kir::print::print(&k));
        }
    }

    #[test]
    fn jit_matches_the_evaluator_bit_for_bit(
        shape in proptest::collection::vec(1usize..6, 1..4),
        ops in proptest::collection::vec(any::<u8>(), 1..12),
        seed in any::<u32>(),
    ) {
        let g = random_group(&shape, &ops);
        let k = lower_elementwise(&g).unwrap();
        let mut jit = Jit::new().unwrap();
        jit.compile(&k).unwrap();
        let value = |i: usize| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 / 500.0 - 2.0;
        let a: Vec<f32> = (0..g.inputs[0].1 as usize).map(value).collect();
        let b: Vec<f32> = (0..g.inputs[1].1 as usize).map(|i| value(i + 7)).collect();
        let n = g.inputs[0].1 as usize;
        let mut want = vec![a.clone(), b.clone(), vec![0.0; n], vec![0.0; n]];
        eval::run(&k, &mut want);
        let (mut a2, mut b2, mut y, mut first) = (a, b, vec![0.0f32; n], vec![0.0f32; n]);
        let outer = k.outer_extent();
        // Split the outer loop as the executor does.
        jit.run_range("g", &mut [&mut a2, &mut b2, &mut y, &mut first], 0, outer / 2).unwrap();
        jit.run_range("g", &mut [&mut a2, &mut b2, &mut y, &mut first], outer / 2, outer).unwrap();
        for (w, got) in want[2].iter().chain(&want[3]).zip(y.iter().chain(&first)) {
            prop_assert!(w.to_bits() == got.to_bits() || (w.is_nan() && got.is_nan()), "{w} vs {got}\n{}", lsc_kir::print::print(&k));
        }
    }
}

/// RMSNorm as one row kernel: `x · rsqrt(mean(x²) + ε) · w` over rows of `d`.
fn rms_norm(rows: usize, d: usize) -> Group {
    let contiguous = vec![d as i64, 1];
    Group {
        name: "rms".into(),
        shape: vec![rows, d],
        reduced_axes: 1,
        inputs: vec![("x".into(), (rows * d) as u64), ("w".into(), d as u64)],
        nodes: vec![
            Node::Input { buf: 0, strides: contiguous },
            Node::Binary(BinaryOp::Mul, 0, 0),
            Node::Reduce(ReduceKind::Mean, 1),
            Node::Const(1e-5),
            Node::Binary(BinaryOp::Add, 2, 3),
            Node::Unary(UnaryOp::Rsqrt, 4),
            Node::Binary(BinaryOp::Mul, 0, 5),
            Node::Input { buf: 1, strides: vec![0, 1] },
            Node::Binary(BinaryOp::Mul, 6, 7),
        ],
        outputs: vec![Output::element("y", 8)],
    }
}

#[test]
fn a_norm_is_one_kernel_with_vector_reductions_and_matches_f64() {
    let (rows, d) = (5, 37);
    let k = lower_elementwise(&rms_norm(rows, d)).unwrap();
    let mut jit = Jit::new().unwrap();
    jit.compile(&k).unwrap();
    let clif = jit.clif("rms").unwrap();
    // The mean of squares runs 4 lanes at a time (partial sums), and so does the scaling loop.
    assert!(clif.matches("f32x4").count() >= 2 && clif.contains("extractlane"), "{clif}");
    let x: Vec<f32> = (0..rows * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
    let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / d as f32).collect();
    let mut y = vec![0.0f32; rows * d];
    jit.run("rms", &mut [&mut x.clone(), &mut w.clone(), &mut y]).unwrap();
    let mut want = vec![x.clone(), w.clone(), vec![0.0; rows * d]];
    eval::run(&k, &mut want);
    assert!(want[2].iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            let exact = row[j] as f64 / (ms + 1e-5).sqrt() * w[j] as f64;
            assert!((y[r * d + j] as f64 - exact).abs() <= 1e-5 * exact.abs().max(1.0), "row {r} col {j}");
        }
    }
}

#[test]
fn out_of_bounds_kernels_are_refused() {
    let mut k = unary_kernel("bad", 8, |_, x| x);
    k.buffers[1].len = 4;
    let err = Jit::new().unwrap().compile(&k).unwrap_err();
    assert!(err.contains("outside 0..4"), "{err}");
}
