//! Every kernel of the CPU library against the reference interpreter's, on
//! random operands and shapes: the GEMM on every layout and past every
//! blocking, attention forward and backward at the head sizes the
//! online-softmax kernels take and others, the packed-ternary product,
//! row-wise gather and scatter, the layout ops, reductions and the fused ops.

use lsc_interp::Value;
use lsc_ir::{DType, Dim, Op, ReduceKind};
use proptest::prelude::*;

/// Deterministic values in [-scale/2, scale/2).
fn random(shape: &[usize], seed: u64, scale: f64) -> Value<f32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((s >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * scale) as f32
        })
        .collect();
    Value::floats(shape.to_vec(), data)
}

/// The op's results from the library and from the reference, on new outputs of the given types.
fn both(op: &Op, args: &[&Value<f32>], outs: &[(DType, Vec<usize>)]) -> (Vec<Value<f32>>, Vec<Value<f32>>) {
    let run = |library: bool| {
        let views: Vec<_> = args.iter().map(|a| a.view()).collect();
        let mut values: Vec<Value<f32>> = outs.iter().map(|(t, s)| Value::zeros(*t, s.clone())).collect();
        // Outputs start as garbage, as arena memory would: kernels must write every element.
        for v in &mut values {
            if let lsc_interp::Buffer::Float(x) = &mut v.data {
                x.fill(f32::NAN);
            }
        }
        let mut out_views: Vec<_> = values.iter_mut().map(Value::view_mut).collect();
        if library {
            lsc_cpu::run_op(op, &views, &mut out_views).unwrap();
        } else {
            lsc_interp::kernels::eval_into(op, &views, &mut out_views, &Default::default()).unwrap();
        }
        values
    };
    (run(true), run(false))
}

/// Asserts `|got − want| ≤ tol · (1 + |want|)` everywhere.
fn close(got: &[Value<f32>], want: &[Value<f32>], tol: f64, what: &str) -> Result<(), TestCaseError> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert_eq!(&g.shape, &w.shape);
        for (j, (a, b)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            prop_assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: output {i}[{j}]: {a} vs {b}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The GEMM on every operand layout: partial tiles in both directions,
    /// several blocks of depth, a batch against a shared or a batched right side.
    #[test]
    fn matmul_matches_the_reference_on_every_layout(
        m in 1usize..150, k in 1usize..1100, n in 1usize..90, batch in 1usize..3,
        trans_a: bool, trans_b: bool, b_batched: bool, seed in 0u64..1000,
    ) {
        let a_shape = if trans_a { vec![batch, k, m] } else { vec![batch, m, k] };
        let mut b_shape = if trans_b { vec![n, k] } else { vec![k, n] };
        if b_batched {
            b_shape.insert(0, batch);
        }
        let (a, b) = (random(&a_shape, seed, 1.0), random(&b_shape, seed + 1, 1.0));
        let (got, want) = both(&Op::MatMul { trans_a, trans_b }, &[&a, &b], &[(DType::F32, vec![batch, m, n])]);
        close(&got, &want, 2e-5 * (k as f64).sqrt(), "matmul")?;
    }

    #[test]
    fn matmul_sum_matches_the_reference(
        m in 1usize..40, k in 1usize..70, n in 1usize..40, batch in 1usize..4, trans_a: bool, trans_b: bool, seed: u64,
    ) {
        let a = random(&if trans_a { [batch, k, m] } else { [batch, m, k] }, seed, 1.0);
        let b = random(&if trans_b { [batch, n, k] } else { [batch, k, n] }, seed ^ 7, 1.0);
        let (got, want) = both(&Op::MatMulSum { trans_a, trans_b }, &[&a, &b], &[(DType::F32, vec![m, n])]);
        close(&got, &want, 2e-5 * ((batch * k) as f64).sqrt(), "matmul_sum")?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Attention forward, outputs and row maxima, for causal and windowed
    /// heads at awkward lengths, at the head sizes of the online-softmax
    /// kernels (16, 32, 64) and one the blocked kernel takes (8).
    #[test]
    fn attention_forward_matches_the_reference(
        t in 1usize..150,
        d in prop_oneof![Just(16usize), Just(32), Just(64), Just(8)],
        windows in proptest::collection::vec(prop_oneof![Just(0usize), 1usize..5, 15usize..70], 2),
        seed: u64,
    ) {
        let shape = [2, 2, t, d];
        let (q, k, v) = (random(&shape, seed, 4.0), random(&shape, seed + 1, 4.0), random(&shape, seed + 2, 4.0));
        let op = Op::LsAttention { windows, scale: (d as f64).powf(-0.5) };
        let outs = [(DType::F32, shape.to_vec()), (DType::F32, vec![2, 2, t])];
        let (got, want) = both(&op, &[&q, &k, &v], &outs);
        close(&got, &want, 2e-5, "ls_attention")?;
    }

    #[test]
    fn attention_backward_matches_the_reference(
        t in 1usize..150,
        d in prop_oneof![Just(16usize), Just(32), Just(64), Just(8)],
        windows in proptest::collection::vec(prop_oneof![Just(0usize), 1usize..5, 15usize..70], 2),
        seed: u64,
    ) {
        let shape = [2, 2, t, d];
        let ops: Vec<Value<f32>> = (0..5).map(|i| random(&shape, seed + i, 4.0)).collect();
        let args: Vec<&Value<f32>> = ops.iter().collect();
        let op = Op::LsAttentionGrad { windows, scale: (d as f64).powf(-0.5) };
        let (got, want) = both(&op, &args, &vec![(DType::F32, shape.to_vec()); 3]);
        close(&got, &want, 1e-4, "ls_attention_grad")?;
    }

    /// The packed product, add/subtract kernel for few rows and unpacked
    /// blocks through the GEMM for many, against the reference's exact sums.
    #[test]
    fn packed_ternary_matmul_matches_the_reference(
        m in prop_oneof![1usize..6, 60usize..80], n in 1usize..70, k in 1usize..150, seed: u64,
    ) {
        let (w, s) = (random(&[n, k], seed, 0.3), Value::floats(vec![], vec![0.1]));
        let (packed, _) = both(&Op::TernaryPack, &[&w, &s], &[(DType::Ternary, vec![n, k])]);
        let x = random(&[m, k], seed + 1, 1.0);
        let (got, want) = both(&Op::TernaryMatmul { trans_b: true }, &[&x, &packed[0], &s], &[(DType::F32, vec![m, n])]);
        close(&got, &want, 1e-5 * (k as f64).sqrt(), "ternary_matmul")?;
        // The same planes as `[K', N'] = [n, k]` read untransposed (a gradient's product).
        let dy = random(&[m, n], seed + 2, 1.0);
        let (got, want) = both(&Op::TernaryMatmul { trans_b: false }, &[&dy, &packed[0], &s], &[(DType::F32, vec![m, k])]);
        close(&got, &want, 1e-5 * (n as f64).sqrt(), "ternary_matmul (untransposed)")?;
    }

    /// Row-wise gather and scatter (rows whose indices agree, and rows
    /// whose do not), against explicit indexing.
    #[test]
    fn gather_and_scatter_match_the_reference(
        outer in 1usize..4, n in 1usize..7, m in 1usize..7, inner in 1usize..9, whole_rows: bool, seed: u64,
    ) {
        let x = random(&[outer, n, inner], seed, 1.0);
        let mut s = seed | 1;
        let ids: Vec<i64> = (0..outer * m)
            .flat_map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                let k = ((s >> 33) % n as u64) as i64;
                (0..inner).map(move |i| if whole_rows { k } else { (k + i as i64) % n as i64 })
            })
            .collect();
        let idx = Value::ints(vec![outer, m, inner], ids);
        let (got, want) = both(&Op::Gather { axis: 1 }, &[&x, &idx], &[(DType::F32, vec![outer, m, inner])]);
        close(&got, &want, 0.0, "gather")?;
        let src = random(&[outer, m, inner], seed + 3, 1.0);
        for op in [Op::Scatter { axis: 1 }, Op::ScatterAdd { axis: 1 }] {
            let (got, want) = both(&op, &[&x, &idx, &src], &[(DType::F32, vec![outer, n, inner])]);
            close(&got, &want, 1e-6, op.name())?;
        }
    }

    /// Transposes (the last two axes, and any permutation), broadcasts,
    /// slices and reductions over any axes.
    #[test]
    fn layout_and_reductions_match_the_reference(
        shape in proptest::collection::vec(1usize..6, 1..5), seed: u64, pick: usize,
    ) {
        let r = shape.len();
        let x = random(&shape, seed, 2.0);
        let mut perm: Vec<usize> = (0..r).collect();
        perm.rotate_left(pick % r);
        let mut swapped: Vec<usize> = (0..r).collect();
        if r >= 2 {
            swapped.swap(r - 2, r - 1);
        }
        for p in [perm, swapped] {
            let out: Vec<usize> = p.iter().map(|&a| shape[a]).collect();
            let (got, want) = both(&Op::Transpose { perm: p.clone() }, &[&x], &[(DType::F32, out)]);
            close(&got, &want, 0.0, "transpose")?;
        }
        let mut big = vec![3];
        big.extend(shape.iter().map(|&d| if d == 1 { 4 } else { d }));
        let b = random(&shape.iter().map(|&d| if d % 2 == 0 { 1 } else { d }).collect::<Vec<_>>(), seed, 1.0);
        let target: Vec<usize> = std::iter::once(3).chain(b.shape.iter().zip(&big[1..]).map(|(&s, &t)| if s == 1 { t } else { s })).collect();
        let bop = Op::Broadcast { shape: target.iter().map(|&d| Dim::new(d as i64)).collect() };
        let (got, want) = both(&bop, &[&b], &[(DType::F32, target)]);
        close(&got, &want, 0.0, "broadcast")?;
        let axis = pick % r;
        let (start, len) = (pick % shape[axis], 1 + (pick / 7) % (shape[axis] - pick % shape[axis]));
        let mut out = shape.clone();
        out[axis] = len;
        let sop = Op::Slice { axis, start: Dim::new(start as i64), end: Dim::new((start + len) as i64) };
        let (got, want) = both(&sop, &[&x], &[(DType::F32, out)]);
        close(&got, &want, 0.0, "slice")?;
        let axes: Vec<usize> = (0..r).filter(|a| (pick >> a) & 1 == 1).collect();
        if !axes.is_empty() {
            let kept: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).map(|a| shape[a]).collect();
            for kind in [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min] {
                let op = Op::Reduce { kind, axes: axes.clone(), keep_dims: false };
                let (got, want) = both(&op, &[&x], &[(DType::F32, kept.clone())]);
                close(&got, &want, 1e-5, "reduce")?;
            }
        }
    }

    /// The fused ops: softmax + cross-entropy, AdamW, GAM, the causal
    /// convolution and its backward, the rotary embedding, and row softmax.
    #[test]
    fn fused_ops_match_the_reference(b in 1usize..3, t in 1usize..20, c in 1usize..12, seed: u64) {
        let logits = random(&[b, t, 16], seed, 6.0);
        let targets = Value::ints(vec![b, t], (0..b * t).map(|i| (i * 7 % 16) as i64).collect());
        let d_loss = random(&[b, t], seed + 1, 1.0);
        let (got, want) = both(&Op::SoftmaxCrossEntropy, &[&logits, &targets, &d_loss], &[(DType::F32, vec![b, t]), (DType::F32, vec![b, t, 16])]);
        close(&got, &want, 1e-5, "softmax_cross_entropy")?;
        for op in [Op::Softmax { axis: 2 }, Op::LogSoftmax { axis: 2 }] {
            let (got, want) = both(&op, &[&logits], &[(DType::F32, vec![b, t, 16])]);
            close(&got, &want, 1e-5, op.name())?;
        }
        let x = random(&[b, t, c], seed + 2, 2.0);
        let w = random(&[c, 1, 3], seed + 3, 1.0);
        let (got, want) = both(&Op::CausalConv1d, &[&x, &w], &[(DType::F32, vec![b, t, c])]);
        close(&got, &want, 1e-5, "causal_conv1d")?;
        let dy = random(&[b, t, c], seed + 4, 1.0);
        let (got, want) = both(&Op::CausalConv1dGrad, &[&x, &w, &dy], &[(DType::F32, vec![b, t, c]), (DType::F32, vec![c, 1, 3])]);
        close(&got, &want, 1e-5, "causal_conv1d_grad")?;
        let d = 2 * c;
        let xr = random(&[b, 2, t, d], seed + 5, 2.0);
        let (cos, sin) = (random(&[t, c], seed + 6, 2.0), random(&[t, c], seed + 7, 2.0));
        let (got, want) = both(&Op::Rotary, &[&xr, &cos, &sin], &[(DType::F32, vec![b, 2, t, d])]);
        close(&got, &want, 1e-5, "rotary")?;
        let gam_args = [random(&[b, t, c], seed, 2.0), random(&[c, 1, 3], seed + 1, 1.0), random(&[c], seed + 2, 1.0), random(&[8, c], seed + 3, 2.0), random(&[b, t, 2 * c], seed + 4, 4.0)];
        let refs: Vec<&Value<f32>> = gam_args.iter().collect();
        let (got, want) = both(&Op::Gam, &refs, &[(DType::F32, vec![b, t, c])]);
        close(&got, &want, 1e-5, "gam")?;
        let scalars: Vec<Value<f32>> = [1e-2f32, 0.1, 0.05, 0.9].iter().map(|&v| Value::floats(vec![], vec![v])).collect();
        // (w, g, m, v) per parameter; the second moment is non-negative.
        let params: Vec<Value<f32>> = (0..8)
            .map(|i| {
                let p = random(&[c, 3], seed + 10 + i, 1.0);
                if i % 4 == 3 { Value::floats(p.shape.clone(), p.as_floats().unwrap().iter().map(|x| x.abs()).collect()) } else { p }
            })
            .collect();
        let mut adam: Vec<&Value<f32>> = scalars.iter().collect();
        adam.extend(params.iter());
        let op = Op::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decay: vec![true, false] };
        let (got, want) = both(&op, &adam, &vec![(DType::F32, vec![c, 3]); 6]);
        close(&got, &want, 0.0, "adamw")?;
    }
}

/// Past the GEMM's blocking in every direction at once: more rows than one
/// packed block of `A` holds, more depth than one block, a partial strip.
#[test]
fn a_large_matmul_matches_the_reference() {
    let (a, b) = (random(&[2100, 1100], 1, 1.0), random(&[40, 1100], 2, 1.0));
    let (got, want) = both(&Op::MatMul { trans_a: false, trans_b: true }, &[&a, &b], &[(DType::F32, vec![2100, 40])]);
    for (g, w) in got[0].to_f64_vec().iter().zip(want[0].to_f64_vec()) {
        assert!((g - w).abs() < 1e-3, "{g} vs {w}");
    }
}
