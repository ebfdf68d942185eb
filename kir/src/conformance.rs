//! The conformance suite every native backend runs in its tests: compiled
//! kernels must agree with [`crate::eval`] bit for bit (random elementwise,
//! reduction and row kernels, the outer loop split as the executor splits
//! it), the transcendentals must meet their ulp bounds over the whole f32
//! range, a norm must match f64, and out-of-bounds kernels must be refused.
//! Each check returns a message naming the kernel when it fails.

use crate::lower::{lower_elementwise, Group, Node, Output};
use crate::native::NativeCompiler;
use crate::{eval, math, print, Body, Buffer, Elem, Expr, Index, Kernel, Schedule, Stmt};
use lsc_ir::{BinaryOp, CmpOp, ReduceKind, UnaryOp};

/// `out[i] = f(x[i])` over `n` elements, `lanes` at a time.
pub fn unary_kernel(name: &str, n: u64, lanes: u32, f: fn(&mut Body, Expr) -> Expr) -> Kernel {
    let mut b = Body::default();
    let i = b.fresh();
    let at = Index { terms: vec![(i, 1)], offset: 0 };
    let x = b.bind(Expr::Load { buf: 0, index: at.clone() });
    let y = f(&mut b, x);
    b.stmts.push(Stmt::Store { buf: 1, index: at, value: y });
    Kernel {
        name: name.into(),
        buffers: vec![
            Buffer { name: "x".into(), len: n, output: false, elem: Elem::F32 },
            Buffer { name: "y".into(), len: n, output: true, elem: Elem::F32 },
        ],
        body: vec![Stmt::Loop { var: i, extent: n, body: b.stmts }],
        vars: b.next_var,
        schedule: Schedule { parallel: false, vector_width: lanes },
        launch: None,
    }
}

/// Ulps between two f32s on the ordered-integer line (0 for equal or both NaN).
pub fn ulps(a: f32, b: f32) -> u64 {
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

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Max ulp error of `f` over every 4096th f32 bit pattern (both signs), after
/// checking the compiled code agrees bit for bit with the evaluator on every 16th of those.
pub fn max_ulps(
    c: &mut dyn NativeCompiler,
    name: &str,
    f: fn(&mut Body, Expr) -> Expr,
    reference: fn(f64) -> f64,
) -> Result<u64, String> {
    let xs: Vec<f32> = (0..1u64 << 20).map(|k| f32::from_bits((k << 12) as u32)).collect();
    let w = c.vector_width();
    c.compile(&unary_kernel(name, xs.len() as u64, w, f))?;
    let mut y = vec![0.0f32; xs.len()];
    c.kernels().run(name, &mut [&mut xs.clone(), &mut y])?;
    let sample: Vec<f32> = xs.iter().step_by(16).copied().collect();
    let mut bufs = vec![sample.clone(), vec![0.0; sample.len()]];
    eval::run(&unary_kernel(name, sample.len() as u64, w, f), &mut bufs);
    for (j, (&e, &v)) in bufs[1].iter().zip(y.iter().step_by(16)).enumerate() {
        if !same_bits(e, v) {
            return Err(format!("{name}({}): eval {e} vs compiled {v}", sample[j]));
        }
    }
    Ok(xs.iter().zip(&y).map(|(&x, &v)| ulps(v, reference(x as f64) as f32)).max().unwrap_or(0))
}

/// The transcendentals' measured max ulp errors `[exp, log, tanh, sigmoid]`.
pub fn transcendentals(c: &mut dyn NativeCompiler) -> Result<[u64; 4], String> {
    Ok([
        max_ulps(c, "exp", math::exp, f64::exp)?,
        max_ulps(c, "log", math::log, f64::ln)?,
        max_ulps(c, "tanh", math::tanh, f64::tanh)?,
        max_ulps(c, "sigmoid", math::sigmoid, |x| 1.0 / (1.0 + (-x).exp()))?,
    ])
}

/// A random elementwise group over `shape` with two inputs (the second
/// broadcast along axis 0), ops picked by `ops`; outputs the last value and
/// the first computed float.
pub fn random_group(name: &str, shape: &[usize], ops: &[u8]) -> Group {
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
        name: name.into(),
        shape: shape.to_vec(),
        reduced_axes: 0,
        inputs: vec![("a".into(), numel as u64), ("b".into(), rest as u64)],
        outputs: vec![Output::element("y", nodes.len() - 1), Output::element("first", first_float)],
        nodes,
    }
}

/// Deterministic inputs in about [−2, 2] for every input buffer of `k`.
fn inputs(k: &Kernel, seed: u32) -> Vec<Vec<f32>> {
    let value = |i: usize| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 / 500.0 - 2.0;
    k.buffers
        .iter()
        .filter(|b| !b.output)
        .enumerate()
        .map(|(j, b)| (0..b.len as usize).map(|i| value(i + 7 * j)).collect())
        .collect()
}

/// Compiles `k`, runs it with its outer loop split in two ranges and on 2
/// threads, and compares both with the evaluator bit for bit.
pub fn agrees_with_eval(c: &mut dyn NativeCompiler, k: &Kernel, seed: u32) -> Result<(), String> {
    c.compile(k)?;
    let ins = inputs(k, seed);
    let outs: Vec<usize> = k.buffers.iter().filter(|b| b.output).map(|b| b.len as usize).collect();
    let mut want: Vec<Vec<f32>> = ins.clone();
    want.extend(outs.iter().map(|&n| vec![0.0; n]));
    eval::run(k, &mut want);
    let fail = |how: &str, w: f32, got: f32| format!("{how}: eval {w} vs compiled {got}\n{}", print::print(k));
    // Split the outer loop as the executor does.
    let mut split: Vec<Vec<f32>> = want.iter().map(|b| vec![0.0; b.len()]).collect();
    split[..ins.len()].clone_from_slice(&ins);
    let outer = k.outer_extent();
    for (lo, hi) in [(0, outer / 2), (outer / 2, outer)] {
        let mut views: Vec<&mut [f32]> = split.iter_mut().map(Vec::as_mut_slice).collect();
        c.kernels().run_range(&k.name, &mut views, lo, hi)?;
    }
    let mut threaded: Vec<Vec<f32>> = outs.iter().map(|&n| vec![0.0; n]).collect();
    let in_views: Vec<&[f32]> = ins.iter().map(Vec::as_slice).collect();
    let mut out_views: Vec<&mut [f32]> = threaded.iter_mut().map(Vec::as_mut_slice).collect();
    c.kernels().run_parallel(&k.name, &in_views, &mut out_views, 2)?;
    for (b, w) in want.iter().enumerate().skip(ins.len()) {
        for (i, &wv) in w.iter().enumerate() {
            if !same_bits(wv, split[b][i]) {
                return Err(fail("split outer loop", wv, split[b][i]));
            }
            if !same_bits(wv, threaded[b - ins.len()][i]) {
                return Err(fail("2 threads", wv, threaded[b - ins.len()][i]));
            }
        }
    }
    Ok(())
}

/// A random elementwise kernel ([`random_group`]) against the evaluator.
pub fn elementwise(
    c: &mut dyn NativeCompiler,
    name: &str,
    shape: &[usize],
    ops: &[u8],
    seed: u32,
) -> Result<(), String> {
    let w = c.vector_width();
    agrees_with_eval(c, &lower_elementwise(&random_group(name, shape, ops), w)?, seed)
}

/// [`random_group`] whose first output is reduced over the last `axes` axes
/// (`kind` picks sum, mean, max or min); returns the group and the reduction's node.
fn reduced_group(name: &str, shape: &[usize], ops: &[u8], kind: usize, axes: usize) -> (Group, usize) {
    let mut g = random_group(name, shape, ops);
    let kinds = [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min];
    g.reduced_axes = axes.clamp(1, shape.len());
    g.nodes.push(Node::Reduce(kinds[kind % 4], g.outputs[0].value));
    let r = g.nodes.len() - 1;
    (g, r)
}

/// A random reduction over the last `axes` axes of a random value, against the evaluator.
pub fn reduction(
    c: &mut dyn NativeCompiler,
    name: &str,
    shape: &[usize],
    ops: &[u8],
    kind: usize,
    axes: usize,
) -> Result<(), String> {
    let (mut g, r) = reduced_group(name, shape, ops, kind, axes);
    g.outputs = vec![Output::row("y", r)];
    let w = c.vector_width();
    agrees_with_eval(c, &lower_elementwise(&g, w)?, kind as u32)
}

/// A norm-like row kernel (a random value reduced over the row, then used
/// with the row's elements; both outputs) against the evaluator.
pub fn row(
    c: &mut dyn NativeCompiler,
    name: &str,
    shape: &[usize],
    ops: &[u8],
    kind: usize,
    axes: usize,
) -> Result<(), String> {
    let w = c.vector_width();
    agrees_with_eval(c, &lower_elementwise(&row_group(name, shape, ops, kind, axes), w)?, kind as u32 + 1)
}

/// A norm-like row group: a random value reduced over the last `axes` axes
/// (`kind` picks sum, mean, max or min), then `exp(x − reduced)` per element;
/// both are outputs.
pub fn row_group(name: &str, shape: &[usize], ops: &[u8], kind: usize, axes: usize) -> Group {
    let (mut g, r) = reduced_group(name, shape, ops, kind, axes);
    g.nodes.push(Node::Binary(BinaryOp::Sub, 0, r));
    g.nodes.push(Node::Unary(UnaryOp::Exp, g.nodes.len() - 1));
    g.outputs = vec![Output::element("normed", g.nodes.len() - 1), Output::row("row", r)];
    g
}

/// RMSNorm as one row kernel: `x · rsqrt(mean(x²) + ε) · w` over rows of `d`.
pub fn rms_norm(rows: usize, d: usize) -> Group {
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

/// [`rms_norm`] (5 rows of 37) compiled, against the evaluator bit for bit and f64 to 1e-5.
pub fn rms_norm_matches_f64(c: &mut dyn NativeCompiler) -> Result<(), String> {
    let (rows, d) = (5, 37);
    let k = lower_elementwise(&rms_norm(rows, d), c.vector_width())?;
    agrees_with_eval(c, &k, 0)?;
    let x: Vec<f32> = (0..rows * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
    let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / d as f32).collect();
    let mut y = vec![0.0f32; rows * d];
    c.kernels().run("rms", &mut [&mut x.clone(), &mut w.clone(), &mut y])?;
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            let exact = row[j] as f64 / (ms + 1e-5).sqrt() * w[j] as f64;
            if (y[r * d + j] as f64 - exact).abs() > 1e-5 * exact.abs().max(1.0) {
                return Err(format!("rms norm row {r} col {j}: {} vs {exact}", y[r * d + j]));
            }
        }
    }
    Ok(())
}

/// A kernel whose store overruns its output must be refused at compile time.
pub fn refuses_out_of_bounds(c: &mut dyn NativeCompiler) -> Result<(), String> {
    let mut k = unary_kernel("bad", 8, c.vector_width(), |_, x| x);
    k.buffers[1].len = 4;
    match c.compile(&k) {
        Err(e) if e.contains("outside 0..4") => Ok(()),
        Err(e) => Err(format!("refused for the wrong reason: {e}")),
        Ok(()) => Err("an out-of-bounds kernel was compiled".into()),
    }
}

/// Defines the conformance tests for the backend made by `$new` (an
/// expression giving a `Result<impl NativeCompiler, String>`), in a test
/// crate that has `proptest` as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($new:expr) => {
        #[test]
        fn transcendentals_are_accurate_over_the_whole_f32_range() {
            let mut c = $new.unwrap();
            let [exp, log, tanh, sigmoid] = $crate::conformance::transcendentals(&mut c).unwrap();
            println!("max ulp: exp {exp}, log {log}, tanh {tanh}, sigmoid {sigmoid}");
            assert!(
                exp <= 1 && log <= 2 && tanh <= 2 && sigmoid <= 2,
                "exp {exp}, log {log}, tanh {tanh}, sigmoid {sigmoid}"
            );
        }

        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

            #[test]
            fn elementwise_kernels_match_the_evaluator_bit_for_bit(
                shape in proptest::collection::vec(1usize..6, 1..4),
                ops in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..12),
                seed in proptest::prelude::any::<u32>(),
            ) {
                let r = $crate::conformance::elementwise(&mut $new.unwrap(), "g", &shape, &ops, seed);
                proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
            }

            #[test]
            fn reductions_match_the_evaluator_bit_for_bit(
                shape in proptest::collection::vec(1usize..6, 1..4),
                ops in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..8),
                kind in 0usize..4,
                axes in 1usize..4,
            ) {
                let r = $crate::conformance::reduction(&mut $new.unwrap(), "g", &shape, &ops, kind, axes);
                proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
            }

            #[test]
            fn row_kernels_match_the_evaluator_bit_for_bit(
                shape in proptest::collection::vec(1usize..9, 1..4),
                ops in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..8),
                kind in 0usize..4,
                axes in 1usize..3,
            ) {
                let r = $crate::conformance::row(&mut $new.unwrap(), "g", &shape, &ops, kind, axes);
                proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
            }
        }

        #[test]
        fn a_norm_is_one_kernel_and_matches_f64() {
            $crate::conformance::rms_norm_matches_f64(&mut $new.unwrap()).unwrap();
        }

        #[test]
        fn out_of_bounds_kernels_are_refused() {
            $crate::conformance::refuses_out_of_bounds(&mut $new.unwrap()).unwrap();
        }
    };
}
