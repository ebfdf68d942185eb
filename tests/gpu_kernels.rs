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

/// The GPU evaluator's outputs of `g` against the CPU evaluator's.
fn agrees(g: &GpuKernel) -> Result<(), String> {
    let cpu = lsc_kir::lower::lower_elementwise(&g.group, 1)?;
    let ins = inputs(&cpu, 11);
    let mut want = ins.clone();
    want.extend(cpu.buffers.iter().filter(|b| b.output).map(|b| vec![0.0; b.len as usize]));
    lsc_kir::eval::run(&cpu, &mut want);
    let mut got: Vec<Vec<f64>> = want.iter().map(|w| w.iter().map(|&x| f64::from(x)).collect()).collect();
    for o in got.iter_mut().skip(ins.len()) {
        o.iter_mut().for_each(|x| *x = f64::NAN);
    }
    lsc_kir::gpu::eval::run(&g.kernel, &mut got)?;
    let exact = g.group.reduced_axes == 0;
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
        let v = (0..n).map(|i| ((i as u32 * 2654435761 + seed) % 1000) as f32 / 250.0 - 2.0).collect();
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

#[test]
fn unsupported_ops_are_named_with_the_model() {
    let (m, _, p, b) = programs().into_iter().find(|(m, w, ..)| *m == "ls-transformer" && *w == "inference").unwrap();
    let gpu = lowered(&p, &b);
    let e = gpu.require_supported(m).unwrap_err();
    assert!(e.starts_with("model ls-transformer: the GPU lowering has no kernel for"), "{e}");
    assert!(e.contains("ls_attention"), "{e}");
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
