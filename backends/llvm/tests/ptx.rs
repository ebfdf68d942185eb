//! The NVPTX renderer: GPU kernels become PTX entries with the launch's
//! block size, shared memory, CTA barriers and warp shuffles, without
//! contraction into FMAs; ptxas (when installed) accepts them for sm_80 and
//! sm_90 and reports no spills; one kernel's PTX is held by a snapshot.
#![cfg(feature = "llvm")]

use lsc_kir::conformance::{random_group, rms_norm, row_group};
use lsc_kir::gpu::lower::lower_group;
use lsc_kir::{Buffer, Elem, Expr, GpuExpr, GpuStmt, Kernel, Launch, LaunchIndex, Schedule, Shuffle, Stmt};
use lsc_llvm::ptx::{PtxGenerator, ARCHS};
use lsc_llvm::ptxas;

fn kernels() -> Vec<Kernel> {
    vec![
        lower_group(&random_group("ew", &[300, 7], &[0, 4, 7, 9])).unwrap(),
        lower_group(&rms_norm(3, 700)).unwrap(),
        lower_group(&row_group("softmax_like", &[5, 40], &[1, 3], 2, 1)).unwrap(),
        lower_group(&row_group("two_axes", &[4, 3, 9], &[2], 1, 2)).unwrap(),
    ]
}

/// Assembles `ptx` for `arch` when ptxas is installed; says "skipped" otherwise.
fn assemble(ptx: &str, arch: &str) -> Option<Vec<ptxas::KernelReport>> {
    match ptxas::find() {
        Some(p) => Some(ptxas::assemble(&p, ptx, arch).unwrap_or_else(|e| panic!("{e}\n{ptx}"))),
        None => {
            eprintln!("skipped: ptxas is not installed (pip install nvidia-cuda-nvcc, or set LSC_PTXAS)");
            None
        }
    }
}

#[test]
fn lowered_kernels_render_as_ptx_entries_that_ptxas_accepts() {
    let ks = kernels();
    for arch in ARCHS {
        let m = PtxGenerator::new(arch).unwrap().module("test", &ks).unwrap();
        assert!(m.ptx.contains(&format!(".target {arch}")), "{}", m.ptx);
        for k in &ks {
            let block = k.launch.as_ref().unwrap().block;
            assert!(m.ptx.contains(&format!(".entry {}(", k.name)), "{} is not an entry", k.name);
            assert!(m.ptx.contains(&format!(".maxntid {block}\n")), "{}: no .maxntid {block}", k.name);
        }
        // The row kernels reduce through warp butterflies and shared partial sums.
        assert!(m.ptx.contains("shfl.sync.bfly.b32"), "{}", m.ptx);
        assert!(m.ptx.contains("bar.sync") || m.ptx.contains("barrier.sync"), "{}", m.ptx);
        assert!(m.ptx.contains(".shared .align 16 .b8 rms_partials[32]"), "{}", m.ptx);
        // No fast-math: products and sums stay separately rounded.
        assert!(!m.ptx.contains("fma."), "a contraction into an FMA:\n{}", m.ptx);
        assert!(m.ll.contains("ptx_kernel"), "{}", m.ll);
        if let Some(report) = assemble(&m.ptx, arch) {
            assert_eq!(report.len(), ks.len(), "{report:?}");
            for r in report {
                assert_eq!((r.spill_stores, r.spill_loads), (0, 0), "{arch}: {r:?} spills");
                assert!(r.registers > 0, "{r:?}");
            }
        }
    }
}

#[test]
fn shuffles_element_types_and_local_arrays_render() {
    let idx = |i| Expr::Gpu(GpuExpr::Index(i));
    let load = |buf, at| Expr::Gpu(GpuExpr::LoadAt { buf, at: Box::new(at) });
    let mut body = vec![Stmt::Let { var: 0, value: load(0, idx(LaunchIndex::Thread)) }];
    for (v, mode) in [(1, Shuffle::Index), (2, Shuffle::Down), (3, Shuffle::Up), (4, Shuffle::Xor)] {
        body.push(Stmt::Gpu(GpuStmt::Shuffle { var: v, value: Expr::Var(0), mode, lane: Expr::I32(3) }));
    }
    let local = lsc_kir::ArrayRef::Local(0);
    body.push(Stmt::Gpu(GpuStmt::ArrayStore { array: local, at: Expr::I32(1), value: Expr::Var(4) }));
    let sum = Expr::Var(1)
        .bin(lsc_kir::Binary::Add, Expr::Var(2))
        .bin(lsc_kir::Binary::Add, Expr::Var(3))
        .bin(lsc_kir::Binary::Add, Expr::Gpu(GpuExpr::ArrayLoad { array: local, at: Box::new(Expr::I32(1)) }));
    body.push(Stmt::Gpu(GpuStmt::StoreAt { buf: 1, at: idx(LaunchIndex::Thread), value: sum }));
    let buffer = |name: &str, output, elem| Buffer { name: name.into(), len: 64, output, elem };
    let k = Kernel {
        name: "shuffles".into(),
        buffers: vec![buffer("x", false, Elem::BF16), buffer("y", true, Elem::F16)],
        body,
        vars: 5,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch {
            grid: 1,
            block: 64,
            shared: vec![],
            local: vec![lsc_kir::Array { name: "l".into(), len: 2, scalar: lsc_kir::Scalar::F32 }],
        }),
    };
    let m = PtxGenerator::new("sm_90").unwrap().module("shuffles", &[k]).unwrap();
    for op in ["shfl.sync.idx.b32", "shfl.sync.down.b32", "shfl.sync.up.b32", "shfl.sync.bfly.b32"] {
        assert!(m.ptx.contains(op), "no {op}:\n{}", m.ptx);
    }
    assert!(m.ptx.contains("ld.global.b16") || m.ptx.contains("ld.global.u16"), "a bf16 load:\n{}", m.ptx);
    assert!(m.ptx.contains("cvt.rn.f16.f32"), "an f16 store rounds to nearest:\n{}", m.ptx);
    assemble(&m.ptx, "sm_90");
}

#[test]
fn refuses_unknown_architectures_and_out_of_bounds_kernels() {
    let e = PtxGenerator::new("sm_75").err().unwrap();
    assert!(e.contains("sm_80, sm_90"), "{e}");
    let mut k = lower_group(&rms_norm(2, 8)).unwrap();
    k.buffers[0].len = 3;
    let e = PtxGenerator::new("sm_80").unwrap().module("m", &[k]).unwrap_err();
    assert!(e.contains("kernel rms") && e.contains("outside 0..3"), "{e}");
}

#[test]
fn rms_norm_ptx_snapshot() {
    let m = PtxGenerator::new("sm_90").unwrap().module("rms", &[lower_group(&rms_norm(4, 64)).unwrap()]).unwrap();
    insta::assert_snapshot!(m.ptx);
}

/// The kernels whose ptxas figures the README reports, at model-like sizes.
fn reported_kernels() -> Vec<Kernel> {
    use lsc_kir::gpu::attention::{forward, Attention};
    use lsc_kir::gpu::{attention_grad, ternary, training};
    let a = Attention { batch: 8, heads: 4, seq: 256, dim: 64, windows: vec![0, 64, 64, 64], scale: 0.125 };
    let h = training::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decay: vec![true, false] };
    vec![
        forward("ls_attention", &a).unwrap(),
        attention_grad::stats("ls_attention_grad_stats", &a).unwrap(),
        attention_grad::grad_kv("ls_attention_grad_dkv", &a).unwrap(),
        attention_grad::grad_q("ls_attention_grad_dq", &a).unwrap(),
        ternary::pack("ternary_pack", 256, 256).unwrap(),
        ternary::matmul("ternary_matmul", &ternary::TernaryProduct { m: 8, k: 256, n: 1024, trans_b: true }).unwrap(),
        training::adamw("adamw", &[65536, 256], &h).unwrap(),
        training::softmax_cross_entropy("softmax_cross_entropy", 2048, 256).unwrap(),
    ]
}

#[test]
fn attention_ternary_and_adamw_kernels_assemble_without_spills() {
    let ks = reported_kernels();
    for arch in ARCHS {
        let m = PtxGenerator::new(arch).unwrap().module("reported", &ks).unwrap();
        if let Some(report) = assemble(&m.ptx, arch) {
            for r in report {
                println!(
                    "{arch} {}: {} registers, {} B shared, {} B stack, spills {}/{} B",
                    r.name, r.registers, r.shared_bytes, r.stack_bytes, r.spill_stores, r.spill_loads
                );
                assert_eq!((r.spill_stores, r.spill_loads), (0, 0), "{arch}: {r:?} spills");
            }
        }
    }
}

#[test]
fn attention_forward_ptx_snapshot() {
    use lsc_kir::gpu::attention::{forward, Attention};
    let a = Attention { batch: 1, heads: 2, seq: 64, dim: 32, windows: vec![0, 16], scale: 0.176_776_7 };
    let m = PtxGenerator::new("sm_90").unwrap().module("attention", &[forward("ls_attention", &a).unwrap()]).unwrap();
    insta::assert_snapshot!(m.ptx);
}
