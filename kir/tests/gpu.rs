//! GPU kernels: lowered groups run through the GPU-semantics evaluator
//! agree with the CPU evaluator at random shapes (elementwise kernels bit for
//! bit); the evaluator's lane rules, element types, race and divergence
//! reports; and the bounds check's handling of GPU indices.

use lsc_kir::conformance::{random_group, rms_norm, row_group};
use lsc_kir::gpu::eval::{round_bf16, round_f16, run};
use lsc_kir::gpu::lower::lower_group;
use lsc_kir::lower::{lower_elementwise, Group};
use lsc_kir::{
    check, eval, Array, ArrayRef, Binary, Buffer, Compare, Elem, Expr, GpuExpr, GpuStmt, IntOp, Kernel, Launch,
    LaunchIndex, Scalar, Schedule, Shuffle, Stmt,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

fn inputs(k: &Kernel, seed: u32) -> Vec<Vec<f32>> {
    let value = |i: usize| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 / 500.0 - 2.0;
    k.buffers
        .iter()
        .filter(|b| !b.output)
        .enumerate()
        .map(|(j, b)| (0..b.len as usize).map(|i| value(i + 7 * j)).collect())
        .collect()
}

/// Runs `g` lowered for the CPU (the evaluator) and for the GPU (the GPU
/// evaluator) and compares every output: bit for bit without reductions,
/// else within `max(4·n·ε, 1e-4)` relative for `n` terms per output: the block
/// folds partial sums in another order than the CPU's sequential loop (a sum's
/// rounding bound is `n·ε`), and the ops after a reduction may amplify that
/// difference a little (an `exp` of a large argument). A dropped or doubled
/// term of `n` would be off by about `1/n`, far beyond it.
fn gpu_agrees(g: &Group, seed: u32) -> Result<(), String> {
    let cpu = lower_elementwise(g, 1)?;
    let gpu = lower_group(g)?;
    let ins = inputs(&cpu, seed);
    let mut want: Vec<Vec<f32>> = ins.clone();
    want.extend(cpu.buffers.iter().filter(|b| b.output).map(|b| vec![0.0; b.len as usize]));
    eval::run(&cpu, &mut want);
    let mut got: Vec<Vec<f64>> = want.iter().map(|b| vec![0.0; b.len()]).collect();
    for (g, i) in got.iter_mut().zip(&ins) {
        *g = i.iter().map(|&x| f64::from(x)).collect();
    }
    run(&gpu, &mut got)?;
    let exact = g.reduced_axes == 0;
    // Terms per reduced value: the widest operand over the narrowest result (the row statistic).
    let widest = ins.iter().map(Vec::len).max().unwrap_or(1);
    let rows = want[ins.len()..].iter().map(Vec::len).min().unwrap_or(1).max(1);
    let rtol = (4.0 * widest.div_ceil(rows) as f32 * f32::EPSILON).max(1e-4);
    for (b, w) in want.iter().enumerate().skip(ins.len()) {
        for (i, (&w, &v)) in w.iter().zip(&got[b]).enumerate() {
            let v = v as f32;
            let ok = if exact {
                w.to_bits() == v.to_bits() || (w.is_nan() && v.is_nan())
            } else {
                (w.is_nan() && v.is_nan()) || w == v || (w - v).abs() <= rtol * (1.0 + w.abs().max(v.abs()))
            };
            if !ok {
                return Err(format!(
                    "{}[{i}]: CPU {w} vs GPU {v}\n{}",
                    gpu.buffers[b].name,
                    lsc_kir::print::print(&gpu)
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    // Fixed cases, so CI sees the same shapes and values on every run.
    #![proptest_config(ProptestConfig { rng_seed: RngSeed::Fixed(17), ..ProptestConfig::with_cases(24) })]

    #[test]
    fn elementwise_kernels_agree_bit_for_bit(
        shape in prop::collection::vec(1usize..40, 1..4),
        ops in prop::collection::vec(0u8..12, 1..8),
        seed in 0u32..1000,
    ) {
        gpu_agrees(&random_group("ew", &shape, &ops), seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn row_kernels_agree(
        shape in prop::collection::vec(1usize..40, 1..4),
        ops in prop::collection::vec(0u8..12, 1..5),
        kind in 0usize..4,
        axes in 1usize..3,
        seed in 0u32..1000,
    ) {
        gpu_agrees(&row_group("row", &shape, &ops, kind, axes), seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn long_rows_use_every_warp_of_the_block() {
    // 700 elements per row: 256 threads, 8 warps, partial sums through shared memory.
    let g = rms_norm(3, 700);
    let k = lower_group(&g).unwrap();
    let l = k.launch.as_ref().unwrap();
    assert_eq!((l.grid, l.block, l.shared_bytes()), (3, 256, 32));
    gpu_agrees(&g, 3).unwrap();
    // More elements than threads and blocks: a grid-stride loop.
    gpu_agrees(&random_group("big", &[300, 301], &[0, 4, 7]), 1).unwrap();
}

fn idx(i: LaunchIndex) -> Expr {
    Expr::Gpu(GpuExpr::Index(i))
}

fn shared_load(at: Expr) -> Expr {
    Expr::Gpu(GpuExpr::ArrayLoad { array: ArrayRef::Shared(0), at: Box::new(at) })
}

fn shared_store(at: Expr, value: Expr) -> Stmt {
    Stmt::Gpu(GpuStmt::ArrayStore { array: ArrayRef::Shared(0), at, value })
}

fn store(buf: usize, at: Expr, value: Expr) -> Stmt {
    Stmt::Gpu(GpuStmt::StoreAt { buf, at, value })
}

fn buffer(name: &str, len: u64, output: bool, elem: Elem) -> Buffer {
    Buffer { name: name.into(), len, output, elem }
}

/// A one-block kernel of 64 threads with a 64-element shared array and output `y[64]`.
fn block_kernel(body: Vec<Stmt>, vars: usize) -> Kernel {
    Kernel {
        name: "k".into(),
        buffers: vec![buffer("y", 64, true, Elem::F32)],
        body,
        vars,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch {
            grid: 1,
            block: 64,
            shared: vec![Array { name: "s".into(), len: 64, scalar: Scalar::F32 }],
            local: vec![],
        }),
    }
}

fn thread_f32() -> Expr {
    Expr::ToFloat(Box::new(idx(LaunchIndex::Thread)))
}

/// Each thread publishes its index and reads its neighbour's: `y[t] = (t + 1) mod 64`.
fn rotate(with_barrier: bool) -> Kernel {
    let next = int(IntOp::Rem, idx(LaunchIndex::Thread).bin(Binary::IAdd, Expr::I32(1)), Expr::I32(64));
    let mut body = vec![shared_store(idx(LaunchIndex::Thread), thread_f32())];
    if with_barrier {
        body.push(Stmt::Gpu(GpuStmt::Barrier));
    }
    body.push(store(0, idx(LaunchIndex::Thread), shared_load(next)));
    block_kernel(body, 0)
}

fn int(op: IntOp, a: Expr, b: Expr) -> Expr {
    Expr::Gpu(GpuExpr::Int(op, Box::new(a), Box::new(b)))
}

#[test]
fn a_read_before_the_barrier_that_publishes_it_is_a_race() {
    let mut y = vec![vec![0.0; 64]];
    let e = run(&rotate(false), &mut y).unwrap_err();
    assert!(e.contains("race on shared s[") && e.contains("between barriers"), "{e}");
    run(&rotate(true), &mut y).unwrap();
    assert_eq!(y[0], (0..64).map(|t| f64::from((t + 1) % 64)).collect::<Vec<_>>());
}

#[test]
fn two_threads_writing_one_element_is_a_race() {
    let k = block_kernel(vec![shared_store(Expr::I32(0), thread_f32())], 0);
    let e = run(&k, &mut [vec![0.0; 64]]).unwrap_err();
    assert!(e.contains("race on shared s[0]") && e.contains("written by threads 0 and 1"), "{e}");
    let k = block_kernel(vec![store(0, Expr::I32(5), thread_f32())], 0);
    let e = run(&k, &mut [vec![0.0; 64]]).unwrap_err();
    assert!(e.contains("race on y[5]"), "{e}");
}

#[test]
fn reading_shared_memory_nobody_wrote_is_an_error() {
    let k = block_kernel(vec![store(0, idx(LaunchIndex::Thread), shared_load(idx(LaunchIndex::Thread)))], 0);
    let e = run(&k, &mut [vec![0.0; 64]]).unwrap_err();
    assert!(e.contains("before any thread writes it"), "{e}");
}

#[test]
fn a_barrier_under_divergent_control_flow_is_reported() {
    let cond = idx(LaunchIndex::Thread).cmp(Compare::Lt, Expr::I32(5));
    let k = block_kernel(vec![Stmt::Gpu(GpuStmt::If { cond, body: vec![Stmt::Gpu(GpuStmt::Barrier)] })], 0);
    let e = run(&k, &mut [vec![0.0; 64]]).unwrap_err();
    assert!(e.contains("differs between threads"), "{e}");
}

#[test]
fn shuffles_follow_the_lane_rules() {
    for (mode, lane, want) in [
        (Shuffle::Xor, 1, (0..64).map(|t| t ^ 1).collect::<Vec<i32>>()),
        (Shuffle::Down, 3, (0..64).map(|t| if t % 32 + 3 < 32 { t + 3 } else { t }).collect()),
        (Shuffle::Up, 2, (0..64).map(|t| if t % 32 >= 2 { t - 2 } else { t }).collect()),
        (Shuffle::Index, 37, (0..64).map(|t| t / 32 * 32 + 5).collect()),
    ] {
        let body = vec![
            Stmt::Gpu(GpuStmt::Shuffle { var: 0, value: thread_f32(), mode, lane: Expr::I32(lane) }),
            store(0, idx(LaunchIndex::Thread), Expr::Var(0)),
        ];
        let mut y = vec![vec![0.0; 64]];
        run(&block_kernel(body, 1), &mut y).unwrap();
        assert_eq!(y[0], want.iter().map(|&t| f64::from(t)).collect::<Vec<_>>(), "{mode:?}");
    }
    // A warp sum: every lane of warp w gets Σ of its lanes' indices.
    let body = vec![
        Stmt::Gpu(GpuStmt::WarpReduce { var: 0, op: Binary::Add, value: thread_f32() }),
        store(0, idx(LaunchIndex::Thread), Expr::Var(0)),
    ];
    let mut y = vec![vec![0.0; 64]];
    run(&block_kernel(body, 1), &mut y).unwrap();
    assert_eq!((y[0][0], y[0][31], y[0][32]), (496.0, 496.0, 1520.0));
}

/// `y[i] = x[idx[i]]` for 40 elements, the index clamped into `x` or not.
fn gather(clamped: bool) -> Kernel {
    let mut at = Expr::Gpu(GpuExpr::LoadAt { buf: 0, at: Box::new(Expr::Var(0)) });
    if clamped {
        at = int(IntOp::Min, int(IntOp::Max, at, Expr::I32(0)), Expr::I32(9));
    }
    let body = vec![Stmt::Gpu(GpuStmt::Range {
        var: 0,
        start: idx(LaunchIndex::Thread),
        end: Expr::I32(40),
        step: idx(LaunchIndex::BlockDim),
        body: vec![store(2, Expr::Var(0), Expr::Gpu(GpuExpr::LoadAt { buf: 1, at: Box::new(at) }))],
    })];
    Kernel {
        name: "gather".into(),
        buffers: vec![
            buffer("idx", 40, false, Elem::I64),
            buffer("x", 10, false, Elem::F32),
            buffer("y", 40, true, Elem::BF16),
        ],
        body,
        vars: 1,
        schedule: Schedule { parallel: false, vector_width: 1 },
        launch: Some(Launch { grid: 1, block: 32, shared: vec![], local: vec![] }),
    }
}

#[test]
fn loads_through_an_index_buffer_must_be_clamped() {
    let e = check::in_bounds(&gather(false)).unwrap_err();
    assert!(e.contains("buffer x accessed at"), "{e}");
    let idx: Vec<f64> = (0..40).map(|i| f64::from((i * 7) % 10)).collect();
    let x: Vec<f64> = (0..10).map(|i| 1.0 + f64::from(i) / 128.0 + 1.0 / 1024.0).collect();
    let mut bufs = vec![idx.clone(), x.clone(), vec![0.0; 40]];
    run(&gather(true), &mut bufs).unwrap();
    for i in 0..40 {
        // bf16 keeps 7 bits of fraction: the 1/1024 is rounded away.
        assert_eq!(bufs[2][i], f64::from(round_bf16(x[idx[i] as usize] as f32)));
        assert_eq!(bufs[2][i], 1.0 + idx[i] / 128.0);
    }
}

#[test]
fn half_precision_rounds_to_nearest_even() {
    assert_eq!(round_f16(1.0 / 3.0), 0.333_251_95);
    assert_eq!(round_f16(65519.0), 65504.0);
    assert_eq!(round_f16(65520.0), f32::INFINITY);
    assert_eq!(round_f16(1e-8), 0.0);
    assert_eq!(round_f16(4e-8), 2f32.powi(-24));
    assert_eq!(round_f16(1.0 + 2f32.powi(-11)), 1.0, "a tie goes to the even neighbour");
    assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0, "a tie goes to the even neighbour");
    assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
    assert!(round_bf16(f32::NAN).is_nan());
}

#[test]
fn the_check_refuses_bad_gpu_kernels() {
    // A loop that would never end.
    let body = vec![Stmt::Gpu(GpuStmt::Range {
        var: 0,
        start: Expr::I32(0),
        end: Expr::I32(10),
        step: Expr::I32(0),
        body: vec![],
    })];
    let e = check::in_bounds(&block_kernel(body, 1)).unwrap_err();
    assert!(e.contains("may not step forward"), "{e}");
    // A division by something that may be zero.
    let body = vec![Stmt::Let { var: 0, value: int(IntOp::Div, Expr::I32(7), idx(LaunchIndex::Lane)) }];
    let e = check::in_bounds(&block_kernel(body, 1)).unwrap_err();
    assert!(e.contains("divisor may be zero"), "{e}");
    // A block that is not whole warps.
    let mut k = block_kernel(vec![], 0);
    k.launch.as_mut().unwrap().block = 48;
    assert!(check::in_bounds(&k).unwrap_err().contains("multiple of 32"));
}

#[test]
fn cpu_renderers_are_told_what_they_cannot_compile() {
    let e = check::cpu_only(&lower_group(&rms_norm(2, 8)).unwrap()).unwrap_err();
    assert!(e.contains("is a GPU kernel"), "{e}");
    let mut k = lower_elementwise(&rms_norm(2, 8), 1).unwrap();
    k.body.push(Stmt::Gpu(GpuStmt::Barrier));
    let e = check::cpu_only(&k).unwrap_err();
    assert!(e.contains("a barrier is a GPU-only construct"), "{e}");
    check::cpu_only(&lower_elementwise(&rms_norm(2, 8), 1).unwrap()).unwrap();
}
