//! Every GPU kernel of every built-in model: each model's inference,
//! decoding and training-step plans lowered for the GPU, every generated
//! kernel run through the GPU-semantics evaluator against the CPU
//! evaluator of the same group (elementwise kernels bit for bit), the
//! library ops that are one group against the reference interpreter, and
//! (with `--features llvm`) every kernel rendered to PTX and, where ptxas
//! is installed, assembled for sm_80 and sm_90 with no spills.

use lsc_interp::Value;
use lsc_ir::{Bindings, Program};
use lsc_kir::Kernel;
use lsc_runtime::gpu::{GpuKernel, GpuProgram};

fn bind(b: i64, t: i64) -> Bindings {
    [("B".to_string(), b), ("T".to_string(), t)].into()
}

/// Each model's three programs: `(model, program name, program, bindings)`.
fn programs() -> Vec<(&'static str, &'static str, Program, Bindings)> {
    let mut out = Vec::new();
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let inference =
            lsc_runtime::prepare::optimize_for_inference(&lsc_models::build_inference(m, "tiny").unwrap()).unwrap();
        let decode = lsc_models::build_decode(m, "tiny").unwrap();
        let forward = lsc_models::build(m, "tiny").unwrap();
        let (step, _) =
            lsc_passes::saturate::optimize_training_step(&forward, &Default::default(), &Default::default()).unwrap();
        out.push((m, "inference", inference, bind(2, 13)));
        out.push((m, "decode", decode, bind(2, 1)));
        out.push((m, "step", step, bind(2, 16)));
    }
    out
}

fn lowered(p: &Program, b: &Bindings) -> GpuProgram {
    GpuProgram::from_plan(&lsc_passes::plan::build(p, b).unwrap()).unwrap()
}

/// Deterministic inputs in [-2, 2) for the kernel's input buffers.
fn inputs(k: &Kernel, seed: u32) -> Vec<Vec<f32>> {
    let value = |i: usize| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 / 500.0 - 2.0;
    k.buffers.iter().filter(|b| !b.output).map(|b| (0..b.len as usize).map(value).collect()).collect()
}

/// The GPU evaluator's outputs of `g` against the CPU evaluator's, for a
/// kernel lowered from a group; a data movement kernel (checked against the
/// reference interpreter op by op below) must run without a race or an
/// out-of-bounds access on any input.
fn agrees(g: &GpuKernel) -> Result<(), String> {
    let Some(group) = &g.group else {
        let mut bufs: Vec<Vec<f64>> = g.kernel.buffers.iter().map(|b| vec![1.0; b.len as usize]).collect();
        return lsc_kir::gpu::eval::run(&g.kernel, &mut bufs);
    };
    let cpu = lsc_kir::lower::lower_elementwise(group, 1)?;
    let ins = inputs(&cpu, 11);
    let mut want = ins.clone();
    want.extend(cpu.buffers.iter().filter(|b| b.output).map(|b| vec![0.0; b.len as usize]));
    lsc_kir::eval::run(&cpu, &mut want);
    let mut got: Vec<Vec<f64>> = want.iter().map(|w| w.iter().map(|&x| f64::from(x)).collect()).collect();
    for o in got.iter_mut().skip(ins.len()) {
        o.iter_mut().for_each(|x| *x = f64::NAN);
    }
    lsc_kir::gpu::eval::run(&g.kernel, &mut got)?;
    let exact = group.reduced_axes == 0;
    for (b, w) in want.iter().enumerate().skip(ins.len()) {
        for (i, (&w, &v)) in w.iter().zip(&got[b]).enumerate() {
            let v = v as f32;
            let close = (w - v).abs() <= 1e-5 * (1.0 + w.abs().max(v.abs()));
            let ok = (w.is_nan() && v.is_nan()) || w.to_bits() == v.to_bits() || (!exact && close);
            if !ok {
                return Err(format!("{}[{i}]: CPU {w} vs GPU {v}", g.kernel.buffers[b].name));
            }
        }
    }
    Ok(())
}

#[test]
fn every_generated_gpu_kernel_of_every_model_agrees_with_the_cpu_evaluator() {
    for (m, what, p, b) in programs() {
        let gpu = lowered(&p, &b);
        assert!(gpu.kernels.iter().any(|k| k.fused), "{m} {what}: no fused kernel");
        assert!(!gpu.library.is_empty(), "{m} {what}: GEMMs are library calls");
        for k in &gpu.kernels {
            agrees(k).unwrap_or_else(|e| panic!("{m} {what} {} ({}): {e}", k.kernel.name, k.origin.op));
        }
        eprintln!(
            "{m} {what}: {} GPU kernels ({} fused), {} library calls; not yet lowered: {:?}",
            gpu.kernels.len(),
            gpu.kernels.iter().filter(|k| k.fused).count(),
            gpu.library.len(),
            gpu.unsupported_ops()
        );
    }
}

#[test]
fn library_ops_that_are_one_group_match_the_reference_interpreter() {
    use lsc_ir::{BinaryOp, Op, ReduceKind, UnaryOp};
    let x = |shape: &[usize], seed: u32| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        Value::<f32>::floats(shape.to_vec(), v)
    };
    let dims = |s: &[usize]| s.iter().map(|&d| lsc_ir::Dim::new(d as i64)).collect::<Vec<_>>();
    let cases: Vec<(Op, Vec<Value<f32>>, Vec<usize>)> = vec![
        (Op::Transpose { perm: vec![2, 0, 1] }, vec![x(&[3, 5, 7], 1)], vec![7, 3, 5]),
        (Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![x(&[2, 3, 4, 5], 2)], vec![2, 4, 3, 5]),
        (Op::Broadcast { shape: dims(&[4, 3, 5]) }, vec![x(&[3, 1], 3)], vec![4, 3, 5]),
        (Op::Broadcast { shape: dims(&[2, 6]) }, vec![x(&[6], 4)], vec![2, 6]),
        (Op::Reduce { kind: ReduceKind::Sum, axes: vec![0, 1], keep_dims: false }, vec![x(&[9, 33, 5], 5)], vec![5]),
        (Op::Reduce { kind: ReduceKind::Max, axes: vec![1], keep_dims: true }, vec![x(&[4, 300, 3], 6)], vec![4, 1, 3]),
        (Op::Reduce { kind: ReduceKind::Mean, axes: vec![0, 1, 2], keep_dims: false }, vec![x(&[3, 4, 5], 7)], vec![]),
        (Op::Unary(UnaryOp::Neg), vec![x(&[17], 8)], vec![17]),
        (Op::Unary(UnaryOp::Rsqrt), vec![x(&[4, 4], 9)], vec![4, 4]),
        (Op::Binary(BinaryOp::Mul), vec![x(&[5, 7], 10), x(&[5, 7], 11)], vec![5, 7]),
        (Op::Clamp { min: -0.5, max: 1.0 }, vec![x(&[40], 12)], vec![40]),
        (Op::Softmax { axis: 2 }, vec![x(&[2, 3, 45], 13)], vec![2, 3, 45]),
        (Op::LogSoftmax { axis: 1 }, vec![x(&[5, 300], 14)], vec![5, 300]),
    ];
    for (op, operands, out) in cases {
        let mut want = Value::<f32>::zeros(lsc_ir::DType::F32, out.clone());
        let views: Vec<_> = operands.iter().map(|v| v.view()).collect();
        lsc_interp::kernels::eval_into(&op, &views, &mut [want.view_mut()], &Bindings::new())
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        let want = want.as_floats().unwrap().to_vec();
        let shapes: Vec<Vec<usize>> = operands.iter().map(|v| v.shape.clone()).collect();
        let g = lsc_kir::op_group::op_group("op", &op, &shapes, &out).unwrap();
        let k = lsc_kir::gpu::lower::lower_group(&g).unwrap();
        let mut bufs: Vec<Vec<f64>> =
            operands.iter().map(|v| v.as_floats().unwrap().iter().map(|&x| f64::from(x)).collect()).collect();
        bufs.push(vec![f64::NAN; want.len()]);
        lsc_kir::gpu::eval::run(&k, &mut bufs).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        for (i, (&w, &v)) in want.iter().zip(&bufs[operands.len()]).enumerate() {
            let v = v as f32;
            assert!((w - v).abs() <= 1e-5 * (1.0 + w.abs()) || (w.is_nan() && v.is_nan()), "{op:?}[{i}]: {w} vs {v}");
        }
    }
}

/// A program with an op no GPU kernel computes yet (`gelu`), next to ones that lower.
fn program_with_gelu() -> Program {
    let b = lsc_frontend::ModelBuilder::new();
    let x = b.input("x", lsc_ir::DType::F32, &[lsc_ir::Dim::new(4), lsc_ir::Dim::new(8)]);
    b.output("y", &x.gelu().sum(&[1], false));
    b.finish().unwrap()
}

#[test]
fn unsupported_ops_are_named_with_the_model() {
    let gpu = lowered(&program_with_gelu(), &Bindings::new());
    let e = gpu.require_supported("mine").unwrap_err();
    assert!(e.starts_with("model mine: the GPU lowering has no kernel for gelu (1×)"), "{e}");
    assert!(!gpu.kernels.is_empty(), "the sum still lowers");
}

#[cfg(feature = "llvm")]
#[test]
fn every_generated_gpu_kernel_assembles_for_sm_80_and_sm_90() {
    use lsc_llvm::{ptx::PtxGenerator, ptxas};
    let ptxas = ptxas::find();
    if ptxas.is_none() {
        eprintln!("skipped assembling: ptxas is not installed (pip install nvidia-cuda-nvcc, or set LSC_PTXAS)");
    }
    for arch in lsc_llvm::ptx::ARCHS {
        let generator = PtxGenerator::new(arch).unwrap();
        for (m, what, p, b) in programs() {
            let gpu = lowered(&p, &b);
            let kernels: Vec<Kernel> = gpu.kernels.iter().map(|k| k.kernel.clone()).collect();
            let module = generator.module(&format!("{m}.{what}"), &kernels).unwrap();
            for k in &kernels {
                assert!(module.ptx.contains(&format!(".entry {}(", k.name)), "{m} {what}: no entry {}", k.name);
            }
            if let Some(ptxas) = &ptxas {
                let report = ptxas::assemble(ptxas, &module.ptx, arch).unwrap_or_else(|e| panic!("{m} {what}: {e}"));
                assert_eq!(report.len(), kernels.len(), "{m} {what}");
                for r in report {
                    assert_eq!((r.spill_stores, r.spill_loads), (0, 0), "{m} {what} {arch}: {r:?}");
                }
            }
        }
    }
}

/// A tensor's elements as the GPU evaluator holds them, and its storage type.
fn device(v: &Value<f32>) -> (Vec<f64>, lsc_kir::Elem) {
    use lsc_interp::Buffer;
    match &v.data {
        Buffer::Float(x) => (x.iter().map(|&a| f64::from(a)).collect(), lsc_kir::Elem::F32),
        Buffer::Int(x) => (x.iter().map(|&a| a as f64).collect(), lsc_kir::Elem::I64),
        Buffer::Bool(x) => (x.iter().map(|&a| f64::from(u8::from(a))).collect(), lsc_kir::Elem::U8),
        Buffer::Ternary(_) => panic!("no packed operands here"),
    }
}

/// An op, its operands, and its result's dtype and shape.
type Case = (lsc_ir::Op, Vec<Value<f32>>, lsc_ir::DType, Vec<usize>);

#[test]
fn data_movement_and_integer_kernels_match_the_reference_interpreter() {
    use lsc_interp::Buffer;
    use lsc_ir::{BinaryOp, CmpOp, DType, Dim, Op, UnaryOp};
    use lsc_kir::gpu::movement::{op_kernel, Operand};
    let f = |shape: &[usize], seed: u32| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        Value::<f32>::floats(shape.to_vec(), v)
    };
    let ints = |shape: &[usize], hi: i64, seed: i64| {
        let n: usize = shape.iter().product();
        Value::<f32>::ints(shape.to_vec(), (0..n as i64).map(|i| (i * 7919 + seed) % hi).collect())
    };
    let bools = |shape: &[usize], seed: usize| {
        let n: usize = shape.iter().product();
        Value::<f32> {
            dtype: DType::Bool,
            shape: shape.to_vec(),
            data: Buffer::Bool((0..n).map(|i| (i * 5 + seed).is_multiple_of(3)).collect()),
        }
    };
    let scalar = |x: i64| Value::<f32>::ints(vec![], vec![x]);
    let d = |x: i64| Dim::new(x);
    // (op, operands, result dtype and shape)
    let cases: Vec<Case> = vec![
        (Op::Constant { value: 2.5 }, vec![], DType::F32, vec![3, 5]),
        (Op::Constant { value: 7.0 }, vec![], DType::I64, vec![4]),
        (Op::Iota { axis: 1 }, vec![], DType::I64, vec![3, 6]),
        (Op::Iota { axis: 0 }, vec![], DType::F32, vec![5, 2]),
        (Op::Cast { to: DType::F32 }, vec![ints(&[4, 5], 50, 3)], DType::F32, vec![4, 5]),
        (Op::Cast { to: DType::I64 }, vec![f(&[33], 1)], DType::I64, vec![33]),
        (Op::Cast { to: DType::F32 }, vec![bools(&[9], 1)], DType::F32, vec![9]),
        (Op::Cast { to: DType::Bool }, vec![ints(&[9], 3, 0)], DType::Bool, vec![9]),
        (Op::Slice { axis: 1, start: d(2), end: d(5) }, vec![f(&[3, 7, 2], 2)], DType::F32, vec![3, 3, 2]),
        (Op::Slice { axis: 0, start: d(1), end: d(2) }, vec![ints(&[3, 4], 99, 1)], DType::I64, vec![1, 4]),
        (Op::Concat { axis: 1 }, vec![f(&[2, 3, 4], 3), f(&[2, 1, 4], 4), f(&[2, 5, 4], 5)], DType::F32, vec![2, 9, 4]),
        (Op::Concat { axis: 0 }, vec![ints(&[2, 3], 9, 1), ints(&[4, 3], 9, 2)], DType::I64, vec![6, 3]),
        (Op::Concat { axis: 1 }, vec![f(&[2, 0, 4], 3), f(&[2, 3, 4], 4)], DType::F32, vec![2, 3, 4]),
        (Op::Broadcast { shape: vec![d(4), d(3), d(5)] }, vec![bools(&[3, 1], 2)], DType::Bool, vec![4, 3, 5]),
        (Op::Transpose { perm: vec![1, 0] }, vec![ints(&[3, 5], 100, 4)], DType::I64, vec![5, 3]),
        (Op::Embedding, vec![f(&[11, 6], 6), ints(&[2, 5], 11, 5)], DType::F32, vec![2, 5, 6]),
        (Op::Binary(BinaryOp::Add), vec![ints(&[7], 20, 1), ints(&[7], 20, 2)], DType::I64, vec![7]),
        (Op::Binary(BinaryOp::And), vec![bools(&[8], 0), bools(&[8], 1)], DType::Bool, vec![8]),
        // Truncating division, negative operands included.
        (
            Op::Binary(BinaryOp::Div),
            vec![Value::ints(vec![6], vec![7, -7, 9, -9, 0, 100]), Value::ints(vec![6], vec![2, 2, -4, -4, 3, 7])],
            DType::I64,
            vec![6],
        ),
        (Op::Binary(BinaryOp::Or), vec![bools(&[8], 0), bools(&[8], 1)], DType::Bool, vec![8]),
        (Op::Unary(UnaryOp::Not), vec![bools(&[8], 2)], DType::Bool, vec![8]),
        (Op::Compare(CmpOp::Le), vec![ints(&[3, 4], 5, 1), ints(&[3, 4], 5, 3)], DType::Bool, vec![3, 4]),
        (Op::Compare(CmpOp::Gt), vec![f(&[10], 1), f(&[10], 2)], DType::Bool, vec![10]),
        (Op::Select, vec![bools(&[2, 6], 1), f(&[2, 6], 3), f(&[2, 6], 4)], DType::F32, vec![2, 6]),
        (Op::CacheUpdate { axis: 1 }, vec![f(&[2, 8, 3], 1), f(&[2, 2, 3], 2), scalar(5)], DType::F32, vec![2, 8, 3]),
        (Op::Gather { axis: 1 }, vec![f(&[2, 9, 3], 1), ints(&[2, 4, 3], 9, 2)], DType::F32, vec![2, 4, 3]),
        (Op::Gather { axis: 0 }, vec![f(&[5, 4], 2), ints(&[3, 2], 5, 1)], DType::F32, vec![3, 2]),
        // Repeated indices: the last write wins, sums add in order.
        (
            Op::Scatter { axis: 1 },
            vec![f(&[2, 9, 3], 3), ints(&[2, 5, 3], 4, 1), f(&[2, 5, 3], 4)],
            DType::F32,
            vec![2, 9, 3],
        ),
        (
            Op::ScatterAdd { axis: 1 },
            vec![f(&[2, 9, 3], 5), ints(&[2, 7, 3], 3, 2), f(&[2, 7, 3], 6)],
            DType::F32,
            vec![2, 9, 3],
        ),
        (
            Op::ScatterAdd { axis: 0 },
            vec![ints(&[6, 2], 50, 1), ints(&[4, 2], 6, 3), ints(&[4, 2], 9, 2)],
            DType::I64,
            vec![6, 2],
        ),
    ];
    for (op, operands, dtype, shape) in cases {
        let mut want = Value::<f32>::zeros(dtype, shape.clone());
        let views: Vec<_> = operands.iter().map(|v| v.view()).collect();
        lsc_interp::kernels::eval_into(&op, &views, &mut [want.view_mut()], &Bindings::new())
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        let (want, out_elem) = device(&want);
        let mut bufs: Vec<Vec<f64>> = Vec::new();
        let mut ins = Vec::new();
        for v in &operands {
            let (data, elem) = device(v);
            bufs.push(data);
            ins.push(Operand { shape: v.shape.clone(), elem });
        }
        let out = Operand { shape: shape.clone(), elem: out_elem };
        let k = op_kernel("op", &op, &ins, std::slice::from_ref(&out), false).unwrap_or_else(|| panic!("{op:?}"));
        lsc_kir::check::in_bounds(&k).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        bufs.push(vec![f64::NAN; want.len()]);
        lsc_kir::gpu::eval::run(&k, &mut bufs).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        assert_eq!(bufs.last().unwrap(), &want, "{op:?}");
        // A cache updated, or a scatter written, in place: the first operand is the output.
        if let Op::CacheUpdate { .. } | Op::Scatter { .. } | Op::ScatterAdd { .. } = op {
            let k = op_kernel("op", &op, &ins[1..], std::slice::from_ref(&ins[0]), true).unwrap();
            let mut bufs = vec![bufs[1].clone(), bufs[2].clone(), bufs[0].clone()];
            lsc_kir::gpu::eval::run(&k, &mut bufs).unwrap_or_else(|e| panic!("{op:?} in place: {e}"));
            assert_eq!(bufs[2], want, "{op:?} in place");
        }
    }
}

#[test]
fn ls_attention_forward_matches_the_reference_interpreter() {
    use lsc_ir::Op;
    use lsc_kir::gpu::attention::{forward, Attention};
    // Sequences shorter and longer than a key tile, head sizes below and above a warp,
    // windows shorter than, equal to and longer than the sequence, and global heads.
    let cases = [
        (1, 2, 1, 8, vec![0, 3]),
        (2, 3, 37, 8, vec![0, 4, 100]),
        (1, 4, 70, 40, vec![5, 0, 32, 70]),
        (1, 1, 33, 64, vec![1]),
    ];
    for (batch, heads, seq, dim, windows) in cases {
        let n = batch * heads * seq * dim;
        let x = |seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let shape = vec![batch, heads, seq, dim];
        let (q, k, v) = (x(1), x(2), x(3));
        let scale = 1.0 / (dim as f32).sqrt();
        let operands: Vec<Value<f32>> = [&q, &k, &v].iter().map(|d| Value::floats(shape.clone(), d.to_vec())).collect();
        let mut out = Value::<f32>::zeros(lsc_ir::DType::F32, shape.clone());
        let mut row_max = Value::<f32>::zeros(lsc_ir::DType::F32, vec![batch, heads, seq]);
        let op = Op::LsAttention { windows: windows.clone(), scale: f64::from(scale) };
        let views: Vec<_> = operands.iter().map(|v| v.view()).collect();
        lsc_interp::kernels::eval_into(&op, &views, &mut [out.view_mut(), row_max.view_mut()], &Bindings::new())
            .unwrap();
        let k_ = forward("attn", &Attention { batch, heads, seq, dim, windows: windows.clone(), scale }).unwrap();
        lsc_kir::check::in_bounds(&k_).unwrap();
        let f64s = |d: &[f32]| d.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        let mut bufs = vec![f64s(&q), f64s(&k), f64s(&v), vec![f64::NAN; n], vec![f64::NAN; batch * heads * seq]];
        lsc_kir::gpu::eval::run(&k_, &mut bufs).unwrap_or_else(|e| panic!("{windows:?}: {e}"));
        for (what, want, got) in [("out", &out, &bufs[3]), ("row_max", &row_max, &bufs[4])] {
            for (i, (&w, &g)) in want.as_floats().unwrap().iter().zip(got).enumerate() {
                let g = g as f32;
                assert!((w - g).abs() <= 2e-5 * (1.0 + w.abs()), "{seq}×{dim} {windows:?} {what}[{i}]: {w} vs {g}");
            }
        }
    }
}

#[test]
fn sin_cos_and_rotary_kernels_match_the_reference_interpreter() {
    use lsc_ir::{DType, Op, UnaryOp};
    use lsc_kir::gpu::movement::{op_kernel, Operand};
    let ramp = |shape: &[usize], lo: f32, hi: f32| {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|i| lo + (hi - lo) * ((i * 7919) % n) as f32 / n as f32).collect();
        Value::<f32>::floats(shape.to_vec(), v)
    };
    // Angles as rotary tables hold them (positions × frequencies), and beyond.
    let cases: Vec<(Op, Vec<Value<f32>>, Vec<usize>)> = vec![
        (Op::Unary(UnaryOp::Sin), vec![ramp(&[5000], -4096.0, 4096.0)], vec![5000]),
        (Op::Unary(UnaryOp::Cos), vec![ramp(&[5000], -4096.0, 4096.0)], vec![5000]),
        (Op::Unary(UnaryOp::Sin), vec![ramp(&[999], -1.0, 1.0)], vec![999]),
        (
            Op::Rotary,
            vec![ramp(&[2, 3, 7, 8], -2.0, 2.0), ramp(&[7, 4], -1.0, 1.0), ramp(&[7, 4], -1.0, 1.0)],
            vec![2, 3, 7, 8],
        ),
    ];
    for (op, operands, shape) in cases {
        let mut want = Value::<f32>::zeros(DType::F32, shape.clone());
        let views: Vec<_> = operands.iter().map(|v| v.view()).collect();
        lsc_interp::kernels::eval_into(&op, &views, &mut [want.view_mut()], &Bindings::new()).unwrap();
        let ins: Vec<Operand> =
            operands.iter().map(|v| Operand { shape: v.shape.clone(), elem: lsc_kir::Elem::F32 }).collect();
        let out = Operand { shape, elem: lsc_kir::Elem::F32 };
        let k = op_kernel("op", &op, &ins, &[out], false).unwrap_or_else(|| panic!("{op:?}"));
        let mut bufs: Vec<Vec<f64>> = operands.iter().map(|v| device(v).0).collect();
        bufs.push(vec![f64::NAN; want.numel()]);
        lsc_kir::gpu::eval::run(&k, &mut bufs).unwrap();
        let mut worst = 0f32;
        for (&w, &g) in want.as_floats().unwrap().iter().zip(bufs.last().unwrap()) {
            worst = worst.max((w - g as f32).abs());
        }
        eprintln!("{op:?}: largest error {worst:e}");
        assert!(worst <= 1e-6, "{op:?}: largest error {worst:e}");
    }
}

#[test]
fn softmax_cross_entropy_and_adamw_match_the_reference_interpreter() {
    use lsc_ir::{DType, Op};
    use lsc_kir::gpu::training::{adamw, softmax_cross_entropy, AdamW};
    let f = |n: usize, seed: u32| -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 125.0 - 4.0).collect()
    };
    let f64s = |d: &[f32]| d.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
    // Vocabularies below a warp, between warps, and longer than a block.
    for (rows, vocab) in [(3usize, 5usize), (7, 100), (2, 700)] {
        let logits = Value::<f32>::floats(vec![rows, vocab], f(rows * vocab, 1));
        let targets = Value::<f32>::ints(vec![rows], (0..rows as i64).map(|r| (r * 37) % vocab as i64).collect());
        let d_loss = Value::<f32>::floats(vec![rows], f(rows, 2));
        let mut loss = Value::<f32>::zeros(DType::F32, vec![rows]);
        let mut grad = Value::<f32>::zeros(DType::F32, vec![rows, vocab]);
        let views = [logits.view(), targets.view(), d_loss.view()];
        lsc_interp::kernels::eval_into(
            &Op::SoftmaxCrossEntropy,
            &views,
            &mut [loss.view_mut(), grad.view_mut()],
            &Bindings::new(),
        )
        .unwrap();
        let k = softmax_cross_entropy("sce", rows as u64, vocab as u64).unwrap();
        let mut bufs = vec![
            device(&logits).0,
            device(&targets).0,
            device(&d_loss).0,
            vec![f64::NAN; rows],
            vec![f64::NAN; rows * vocab],
        ];
        lsc_kir::gpu::eval::run(&k, &mut bufs).unwrap();
        for (what, want, got) in [("loss", &loss, &bufs[3]), ("d_logits", &grad, &bufs[4])] {
            for (i, (&w, &g)) in want.as_floats().unwrap().iter().zip(got).enumerate() {
                assert!((w - g as f32).abs() <= 2e-6 * (1.0 + w.abs()), "{rows}×{vocab} {what}[{i}]: {w} vs {g}");
            }
        }
    }
    // Three parameters, one not decayed, sizes around the block.
    let sizes = [7usize, 256, 1000];
    let h = AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decay: vec![true, false, true] };
    let op =
        Op::AdamW { beta1: h.beta1, beta2: h.beta2, eps: h.eps, weight_decay: h.weight_decay, decay: h.decay.clone() };
    let mut operands: Vec<Value<f32>> =
        [1e-3f32, 0.1, 0.05, 0.7].iter().map(|&x| Value::floats(vec![], vec![x])).collect();
    for (p, &n) in sizes.iter().enumerate() {
        let seed = 10 * p as u32;
        let v: Vec<f32> = f(n, seed + 3).iter().map(|x| x.abs()).collect();
        operands.extend(
            [f(n, seed), f(n, seed + 1), f(n, seed + 2), v].into_iter().map(|d| Value::floats(vec![d.len()], d)),
        );
    }
    let mut outs: Vec<Value<f32>> =
        sizes.iter().flat_map(|&n| (0..3).map(move |_| Value::zeros(DType::F32, vec![n]))).collect();
    let views: Vec<_> = operands.iter().map(|v| v.view()).collect();
    let mut out_views: Vec<_> = outs.iter_mut().map(|v| v.view_mut()).collect();
    lsc_interp::kernels::eval_into(&op, &views, &mut out_views, &Bindings::new()).unwrap();
    let k = adamw("adamw", &sizes.map(|n| n as u64), &h).unwrap();
    let mut bufs: Vec<Vec<f64>> = operands.iter().map(|v| f64s(v.as_floats().unwrap())).collect();
    bufs.extend(outs.iter().map(|v| vec![f64::NAN; v.numel()]));
    lsc_kir::gpu::eval::run(&k, &mut bufs).unwrap();
    for (o, want) in outs.iter().enumerate() {
        let got: Vec<f32> = bufs[operands.len() + o].iter().map(|&x| x as f32).collect();
        assert_eq!(got, want.as_floats().unwrap(), "AdamW output {o} is the interpreter's bit for bit");
    }
}

#[test]
fn causal_conv1d_and_its_gradient_match_the_reference_interpreter() {
    use lsc_ir::{DType, Op};
    use lsc_kir::gpu::conv::{forward, grad_w, grad_x, Conv};
    let f = |shape: &[usize], seed: u32| {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0);
        Value::<f32>::floats(shape.to_vec(), v.collect())
    };
    // More taps than positions, and more positions than a block.
    for (batch, seq, channels, taps) in [(2usize, 5usize, 3usize, 4usize), (1, 3, 2, 5), (3, 130, 4, 3)] {
        let s = Conv { batch, seq, channels, taps };
        let (x, w, dy) = (f(&[batch, seq, channels], 1), f(&[channels, 1, taps], 2), f(&[batch, seq, channels], 3));
        let mut y = Value::<f32>::zeros(DType::F32, x.shape.clone());
        lsc_interp::kernels::eval_into(&Op::CausalConv1d, &[x.view(), w.view()], &mut [y.view_mut()], &Bindings::new())
            .unwrap();
        let mut dx = Value::<f32>::zeros(DType::F32, x.shape.clone());
        let mut dw = Value::<f32>::zeros(DType::F32, w.shape.clone());
        let views = [x.view(), w.view(), dy.view()];
        lsc_interp::kernels::eval_into(
            &Op::CausalConv1dGrad,
            &views,
            &mut [dx.view_mut(), dw.view_mut()],
            &Bindings::new(),
        )
        .unwrap();
        let run = |k: lsc_kir::Kernel, ins: [&Value<f32>; 2], want: &Value<f32>| {
            let mut bufs = vec![device(ins[0]).0, device(ins[1]).0, vec![f64::NAN; want.numel()]];
            lsc_kir::gpu::eval::run(&k, &mut bufs).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            for (i, (&a, &b)) in want.as_floats().unwrap().iter().zip(&bufs[2]).enumerate() {
                assert!((a - b as f32).abs() <= 1e-5 * (1.0 + a.abs()), "{s:?} {}[{i}]: {a} vs {b}", k.name);
            }
        };
        run(forward("y", &s).unwrap(), [&x, &w], &y);
        run(grad_x("d_x", &s).unwrap(), [&w, &dy], &dx);
        run(grad_w("d_w", &s).unwrap(), [&x, &dy], &dw);
    }
}

#[test]
fn ls_attention_backward_matches_the_reference_interpreter() {
    use lsc_ir::{DType, Op};
    use lsc_kir::gpu::attention::Attention;
    use lsc_kir::gpu::attention_grad::{grad_kv, grad_q, stats};
    let cases = [(1, 2, 1, 8, vec![0, 3]), (2, 3, 37, 8, vec![0, 4, 100]), (1, 2, 70, 40, vec![5, 32])];
    for (batch, heads, seq, dim, windows) in cases {
        let n = batch * heads * seq * dim;
        let shape = vec![batch, heads, seq, dim];
        let x = |seed: u32| {
            let v =
                (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0);
            Value::<f32>::floats(shape.clone(), v.collect())
        };
        let (q, k, v, d_out) = (x(1), x(2), x(3), x(4));
        let scale = 1.0 / (dim as f32).sqrt();
        let fwd = Op::LsAttention { windows: windows.clone(), scale: f64::from(scale) };
        let mut out = Value::<f32>::zeros(DType::F32, shape.clone());
        let mut row_max = Value::<f32>::zeros(DType::F32, vec![batch, heads, seq]);
        let views = [q.view(), k.view(), v.view()];
        lsc_interp::kernels::eval_into(&fwd, &views, &mut [out.view_mut(), row_max.view_mut()], &Bindings::new())
            .unwrap();
        let bwd = Op::LsAttentionGrad { windows: windows.clone(), scale: f64::from(scale) };
        let mut grads: Vec<Value<f32>> = (0..3).map(|_| Value::zeros(DType::F32, shape.clone())).collect();
        let views = [q.view(), k.view(), v.view(), out.view(), d_out.view()];
        let mut gv: Vec<_> = grads.iter_mut().map(|g| g.view_mut()).collect();
        lsc_interp::kernels::eval_into(&bwd, &views, &mut gv, &Bindings::new()).unwrap();
        let a = Attention { batch, heads, seq, dim, windows: windows.clone(), scale };
        let h = |v: &Value<f32>| device(v).0;
        // The three kernels in order, d_q holding the row statistics until the last.
        let mut d_q = vec![f64::NAN; n];
        let mut bufs = vec![h(&q), h(&k), h(&out), h(&d_out), d_q];
        lsc_kir::gpu::eval::run(&stats("s", &a).unwrap(), &mut bufs).unwrap();
        d_q = bufs.pop().unwrap();
        let mut bufs = vec![h(&q), h(&k), h(&v), h(&d_out), d_q.clone(), vec![f64::NAN; n], vec![f64::NAN; n]];
        lsc_kir::gpu::eval::run(&grad_kv("kv", &a).unwrap(), &mut bufs).unwrap_or_else(|e| panic!("{e}"));
        let (d_k, d_v) = (bufs[5].clone(), bufs[6].clone());
        let mut bufs = vec![h(&q), h(&k), h(&v), h(&out), h(&d_out), d_q];
        lsc_kir::gpu::eval::run(&grad_q("q", &a).unwrap(), &mut bufs).unwrap();
        for (what, want, got) in [("d_q", &grads[0], &bufs[5]), ("d_k", &grads[1], &d_k), ("d_v", &grads[2], &d_v)] {
            for (i, (&w, &g)) in want.as_floats().unwrap().iter().zip(got).enumerate() {
                let g = g as f32;
                assert!((w - g).abs() <= 5e-5 * (1.0 + w.abs()), "{seq}×{dim} {windows:?} {what}[{i}]: {w} vs {g}");
            }
        }
    }
}

#[test]
fn topk_matches_the_reference_interpreter() {
    use lsc_ir::{DType, Dim, Op};
    use lsc_kir::gpu::movement::{op_kernel, Operand};
    use lsc_kir::Elem;
    // Ties (values repeat every 7) go to the lower index.
    for (shape, axis, k) in [(vec![3usize, 20usize], 1usize, 5usize), (vec![9, 4], 0, 9), (vec![2, 6, 3], 1, 2)] {
        let n: usize = shape.iter().product();
        let x = Value::<f32>::floats(shape.clone(), (0..n).map(|i| ((i * 5) % 7) as f32 - 3.0).collect());
        let mut out_shape = shape.clone();
        out_shape[axis] = k;
        let op = Op::TopK { k: Dim::new(k as i64), axis };
        let mut values = Value::<f32>::zeros(DType::F32, out_shape.clone());
        let mut indices = Value::<f32>::zeros(DType::I64, out_shape.clone());
        lsc_interp::kernels::eval_into(
            &op,
            &[x.view()],
            &mut [values.view_mut(), indices.view_mut()],
            &Bindings::new(),
        )
        .unwrap();
        let ins = [Operand { shape: shape.clone(), elem: Elem::F32 }];
        let outs = [
            Operand { shape: out_shape.clone(), elem: Elem::F32 },
            Operand { shape: out_shape.clone(), elem: Elem::I64 },
        ];
        let kernel = op_kernel("topk", &op, &ins, &outs, false).unwrap();
        let m: usize = out_shape.iter().product();
        let mut bufs = vec![device(&x).0, vec![f64::NAN; m], vec![f64::NAN; m]];
        lsc_kir::gpu::eval::run(&kernel, &mut bufs).unwrap();
        assert_eq!(bufs[1], device(&values).0, "{shape:?} values");
        assert_eq!(bufs[2], device(&indices).0, "{shape:?} indices");
    }
}

#[test]
fn ternary_pack_and_product_match_the_reference_interpreter() {
    use lsc_interp::Buffer;
    use lsc_ir::{DType, Op};
    use lsc_kir::gpu::ternary::{matmul, pack, TernaryProduct};
    // Columns below, at and across 64-bit words.
    for (n, k, m) in [(3usize, 5usize, 2usize), (4, 64, 1), (5, 130, 3)] {
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 9) as f32 / 4.0 - 1.0).collect();
        let w = Value::<f32>::floats(vec![n, k], w);
        let s = Value::<f32>::floats(vec![], vec![0.6]);
        let mut packed = Value::<f32>::zeros(DType::Ternary, vec![n, k]);
        lsc_interp::kernels::eval_into(
            &Op::TernaryPack,
            &[w.view(), s.view()],
            &mut [packed.view_mut()],
            &Bindings::new(),
        )
        .unwrap();
        let Buffer::Ternary(planes) = &packed.data else { panic!("packed") };
        // The reference's u64 words as the GPU's u32 halves, low first.
        let words: Vec<f64> =
            planes.as_ref().planes.iter().flat_map(|&x| [f64::from(x as u32), f64::from((x >> 32) as u32)]).collect();
        let kernel = pack("pack", n, k).unwrap();
        let mut bufs = vec![device(&w).0, vec![0.6], vec![f64::NAN; words.len()]];
        lsc_kir::gpu::eval::run(&kernel, &mut bufs).unwrap();
        assert_eq!(bufs[2], words, "{n}×{k} planes");
        let x = Value::<f32>::floats(vec![m, k], (0..m * k).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect());
        let mut y = Value::<f32>::zeros(DType::F32, vec![m, n]);
        let views = [x.view(), packed.view(), s.view()];
        lsc_interp::kernels::eval_into(
            &Op::TernaryMatmul { trans_b: true },
            &views,
            &mut [y.view_mut()],
            &Bindings::new(),
        )
        .unwrap();
        let kernel = matmul("tm", &TernaryProduct { m, k, n, trans_b: true }).unwrap();
        let mut bufs = vec![device(&x).0, words, vec![0.6], vec![f64::NAN; m * n]];
        lsc_kir::gpu::eval::run(&kernel, &mut bufs).unwrap();
        for (i, (&a, &b)) in y.as_floats().unwrap().iter().zip(&bufs[3]).enumerate() {
            assert!((a - b as f32).abs() <= 1e-5 * (1.0 + a.abs()), "{n}×{k} y[{i}]: {a} vs {b}");
        }
    }
}

#[test]
fn gam_mixer_matches_the_reference_interpreter() {
    use lsc_ir::{DType, Op};
    use lsc_kir::gpu::gam::{mixer, Gam};
    let f = |shape: &[usize], seed: u32| {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0);
        Value::<f32>::floats(shape.to_vec(), v.collect())
    };
    // Fewer and more memory slots than a warp; widths below and above it; more taps than positions.
    for g in
        [Gam { batch: 2, seq: 5, dim: 8, taps: 3, slots: 4 }, Gam { batch: 1, seq: 3, dim: 40, taps: 4, slots: 70 }]
    {
        let ops = [
            f(&[g.batch, g.seq, g.dim], 1),
            f(&[g.dim, 1, g.taps], 2),
            f(&[g.dim], 3),
            f(&[g.slots, g.dim], 4),
            f(&[g.batch, g.seq, 2 * g.dim], 5),
        ];
        let mut y = Value::<f32>::zeros(DType::F32, vec![g.batch, g.seq, g.dim]);
        let views: Vec<_> = ops.iter().map(|v| v.view()).collect();
        lsc_interp::kernels::eval_into(&Op::Gam, &views, &mut [y.view_mut()], &Bindings::new()).unwrap();
        let mut bufs: Vec<Vec<f64>> = ops.iter().map(|v| device(v).0).collect();
        bufs.push(vec![f64::NAN; y.numel()]);
        lsc_kir::gpu::eval::run(&mixer("gam", &g).unwrap(), &mut bufs).unwrap();
        for (i, (&a, &b)) in y.as_floats().unwrap().iter().zip(&bufs[5]).enumerate() {
            assert!((a - b as f32).abs() <= 2e-5 * (1.0 + a.abs()), "{g:?} y[{i}]: {a} vs {b}");
        }
    }
}

#[test]
fn routed_packing_matches_the_reference_interpreter() {
    use lsc_interp::routing::ActiveRows;
    use lsc_interp::Buffer;
    use lsc_kir::gpu::routing::{active_rows, pack, unpack, Rows};
    // Sequences longer than a warp's tile, one with no active row.
    let (batch, seq, width) = (3usize, 40usize, 3usize);
    let on: Vec<bool> = (0..batch * seq).map(|i| i / seq != 2 && (i * 7) % 5 < 2).collect();
    let mask = Value::<f32> { dtype: lsc_ir::DType::Bool, shape: vec![batch, seq], data: Buffer::Bool(on.clone()) };
    let rows = ActiveRows::new(&mask.view()).unwrap();
    let x = Value::<f32>::floats(vec![batch, seq, width], (0..batch * seq * width).map(|i| i as f32).collect());
    let want_packed = rows.pack(&x).unwrap();
    let want_back = rows.unpack(&want_packed).unwrap();
    let mut bufs = vec![device(&mask).0, vec![f64::NAN; batch * seq], vec![-7.0; batch * seq], vec![f64::NAN; batch]];
    lsc_kir::gpu::eval::run(&active_rows("rows", batch, seq).unwrap(), &mut bufs).unwrap();
    let counts: Vec<f64> =
        (0..batch).map(|b| on[b * seq..(b + 1) * seq].iter().filter(|&&a| a).count() as f64).collect();
    assert_eq!(bufs[3], counts);
    let (slots, positions) = (bufs[1].clone(), bufs[2].clone());
    let r = Rows { batch, seq, packed: rows.packed, width, elem: lsc_kir::Elem::F32 };
    let mut p = vec![device(&x).0, positions, counts, vec![f64::NAN; batch * rows.packed * width]];
    lsc_kir::gpu::eval::run(&pack("pack", &r).unwrap(), &mut p).unwrap();
    assert_eq!(p[3], device(&want_packed).0, "packed rows");
    let mut u = vec![p[3].clone(), slots, vec![f64::NAN; batch * seq * width]];
    lsc_kir::gpu::eval::run(&unpack("unpack", &r).unwrap(), &mut u).unwrap();
    assert_eq!(u[2], device(&want_back).0, "unpacked rows");
}
