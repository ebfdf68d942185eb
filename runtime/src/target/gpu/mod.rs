//! The GPU target: a compiled plan on a [`Device`]. Every arena, input and
//! parameter is one device allocation, so parameters, gradients, optimizer
//! moments and decoding caches stay on the device between runs; tensors are
//! bytes there at the planned offsets ([`storage`]). Fused groups and library
//! ops run the generated GPU kernels of [`crate::gpu`], loaded once per op and
//! shape; GEMMs are cuBLAS calls ([`cublas`]). All work goes in order on the
//! device's one stream; only a download, and a routed call (whose active-row
//! count decides its plan), wait for it.
//!
//! The device is the real one through cudarc ([`cuda`], the `cuda` feature) or
//! the [`emulated`] one, which runs the same target on the host.

pub mod cublas;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod emulated;
pub mod storage;

use super::{At, Target};
use crate::gpu::{elem_of, op_kernels};
use device::{Device, Ptr};
use lsc_interp::routing::ActiveRows;
use lsc_interp::Value;
use lsc_ir::{DType, Op};
use lsc_kir::gpu::lower::lower_group;
use lsc_kir::gpu::movement::Operand;
use lsc_kir::gpu::routing::{self, Rows};
use lsc_kir::lower::Group;
use lsc_kir::Elem;
use lsc_passes::plan::storage_bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The precision of a GPU target's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere (cuBLAS with f32 compute, no TF32).
    #[default]
    F32,
    /// GEMM operands rounded to bf16, products accumulated in f32; everything
    /// else (weights, optimizer state, norms, softmax, loss) stays f32.
    Bf16,
}

impl std::fmt::Display for Precision {
    /// `f32` or `bf16`, as `--precision` spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl Precision {
    /// The element type of GEMM operands.
    fn operands(self) -> Elem {
        match self {
            Precision::F32 => Elem::F32,
            Precision::Bf16 => Elem::BF16,
        }
    }
}

/// Loaded kernels of one library op at one shape, each with the positions of
/// its buffers among the op's operands, then results.
type OpFunctions<F> = Arc<Vec<(F, Vec<usize>)>>;

/// Device buffers kept by a key, made on first use and never freed before the
/// target (queued work may still use them).
type Kept<K, V> = Mutex<HashMap<K, Arc<V>>>;

/// The device buffers a routed call's moves read: each row's packed slot,
/// each sequence's active positions and their count (i32s, `[B·T]`, `[B·T]`, `[B]`).
struct RowMap<B> {
    slots: B,
    positions: B,
    counts: B,
    /// The rows they were last written for.
    written: Mutex<Option<Vec<Vec<usize>>>>,
}

/// A plan's target on a GPU device.
pub struct GpuTarget<D: Device> {
    device: D,
    precision: Precision,
    /// Kernels generated so far (for unique names).
    count: AtomicUsize,
    /// Library ops' kernels by op and operands.
    ops: Mutex<HashMap<String, OpFunctions<D::Function>>>,
    /// bf16 copies of GEMM operands, by bytes and operand.
    scratch: Kept<(u64, usize), D::Buffer>,
    /// Row maps of routed calls, by `(B, T)`.
    rows: Kept<(usize, usize), RowMap<D::Buffer>>,
}

fn poisoned<T>(_: T) -> String {
    "a GPU target's lock is poisoned (an earlier launch panicked)".into()
}

fn ptr<'a, B>(at: &At<'a, B>) -> Ptr<'a, B> {
    Ptr { buffer: at.memory, offset: at.offset }
}

fn operand<B>(at: &At<'_, B>) -> Operand {
    Operand { shape: at.shape.to_vec(), elem: elem_of(at.dtype) }
}

impl<D: Device> GpuTarget<D> {
    /// A target on `device` computing matrix products in `precision`.
    pub fn new(device: D, precision: Precision) -> GpuTarget<D> {
        GpuTarget {
            device,
            precision,
            count: AtomicUsize::new(0),
            ops: Mutex::new(HashMap::new()),
            scratch: Mutex::new(HashMap::new()),
            rows: Mutex::new(HashMap::new()),
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    fn name_for(&self, what: &str) -> String {
        let safe: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("{safe}_{}", self.count.fetch_add(1, Ordering::Relaxed))
    }

    /// The kernels of library op `op` on these operands, generated and loaded on first use.
    fn op_functions(
        &self,
        op: &Op,
        operands: &[Operand],
        inputs: usize,
        in_place: bool,
    ) -> Result<OpFunctions<D::Function>, String> {
        self.cached(format!("{op:?} {operands:?} {inputs} {in_place}"), || {
            let (ins, outs) = operands.split_at(inputs);
            let kernels = op_kernels(&self.name_for(op.name()), op, ins, outs, in_place)
                .ok_or_else(|| format!("no GPU kernel computes {}", op.name()))??;
            kernels.into_iter().map(|k| Ok((self.device.load(&k.kernel)?, k.at))).collect()
        })
    }

    /// The kernels loaded under `key`, or those `make` loads (then kept under it).
    fn cached(
        &self,
        key: String,
        make: impl FnOnce() -> Result<Vec<(D::Function, Vec<usize>)>, String>,
    ) -> Result<OpFunctions<D::Function>, String> {
        if let Some(f) = self.ops.lock().map_err(poisoned)?.get(&key) {
            return Ok(f.clone());
        }
        let loaded = Arc::new(make()?);
        self.ops.lock().map_err(poisoned)?.insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Runs library op `op` on `ats` (its operands, then its results) with generated kernels.
    fn run_kernels(&self, op: &Op, ats: &[At<'_, D::Buffer>], inputs: usize, in_place: bool) -> Result<(), String> {
        let operands: Vec<Operand> = ats.iter().map(operand).collect();
        for (f, at) in self.op_functions(op, &operands, inputs, in_place)?.iter() {
            let args: Vec<Ptr<'_, D::Buffer>> = at.iter().map(|&i| ptr(&ats[i])).collect();
            self.device.launch(f, &args)?;
        }
        Ok(())
    }

    /// `at` as GEMM operand `slot` in the target's precision: itself, or a bf16 copy.
    fn gemm_operand(&self, at: &At<'_, D::Buffer>, slot: usize) -> Result<Option<Arc<D::Buffer>>, String> {
        if self.precision == Precision::F32 {
            return Ok(None);
        }
        let n: usize = at.shape.iter().product();
        let bytes = n as u64 * Elem::BF16.bytes();
        let buffer = {
            let mut scratch = self.scratch.lock().map_err(poisoned)?;
            match scratch.get(&(bytes, slot)) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(self.device.alloc(bytes)?);
                    scratch.insert((bytes, slot), b.clone());
                    b
                }
            }
        };
        let flat = [Operand { shape: vec![n], elem: Elem::F32 }, Operand { shape: vec![n], elem: Elem::BF16 }];
        for (f, _) in self.op_functions(&Op::Cast { to: DType::BF16 }, &flat, 1, false)?.iter() {
            self.device.launch(f, &[ptr(at), Ptr { buffer: &*buffer, offset: 0 }])?;
        }
        Ok(Some(buffer))
    }

    /// A `matmul` or `matmul_sum` as cuBLAS calls.
    fn gemm(&self, op: &Op, inputs: &[At<'_, D::Buffer>], out: &At<'_, D::Buffer>) -> Result<(), String> {
        let [a, b] = inputs else { return Err(format!("{} takes two operands", op.name())) };
        if [a.dtype, b.dtype, out.dtype].iter().any(|d| elem_of(*d) != Elem::F32) {
            return Err(format!("{} of {} by {} into {}: GEMMs take floats", op.name(), a.dtype, b.dtype, out.dtype));
        }
        let elem = self.precision.operands();
        let calls = match op {
            Op::MatMul { trans_a, trans_b } => cublas::matmul(a.shape, b.shape, (*trans_a, *trans_b), out.shape, elem),
            Op::MatMulSum { trans_a, trans_b } => {
                cublas::matmul_sum(a.shape, b.shape, (*trans_a, *trans_b), out.shape, elem)
            }
            _ => return Err(format!("{} is not a GEMM", op.name())),
        }?;
        if calls.is_empty() {
            return Ok(());
        }
        let copies = [self.gemm_operand(a, 0)?, self.gemm_operand(b, 1)?];
        let place = |(i, first): (usize, u64)| match &copies[i] {
            Some(c) => Ptr { buffer: &**c, offset: first * elem.bytes() },
            None => Ptr { buffer: inputs[i].memory, offset: inputs[i].offset + first * 4 },
        };
        for c in &calls {
            let to = Ptr { buffer: out.memory, offset: out.offset + c.c * 4 };
            self.device.gemm(&c.gemm, place(c.a), place(c.b), to)?;
        }
        Ok(())
    }

    /// The device's row map for `rows`, filled from the host's.
    fn row_map(&self, rows: &ActiveRows) -> Result<Arc<RowMap<D::Buffer>>, String> {
        let (batch, seq) = (rows.positions().len(), rows.full());
        let map = {
            let mut maps = self.rows.lock().map_err(poisoned)?;
            match maps.get(&(batch, seq)) {
                Some(m) => m.clone(),
                None => {
                    let n = (batch * seq) as u64 * 4;
                    let m = Arc::new(RowMap {
                        slots: self.device.alloc(n)?,
                        positions: self.device.alloc(n)?,
                        counts: self.device.alloc(batch as u64 * 4)?,
                        written: Mutex::new(None),
                    });
                    maps.insert((batch, seq), m.clone());
                    m
                }
            }
        };
        // A routed call packs every argument and unpacks every result with the same rows: write them once.
        let mut written = map.written.lock().map_err(poisoned)?;
        if written.as_deref() == Some(rows.positions()) {
            drop(written);
            return Ok(map);
        }
        let (mut slots, mut positions) = (vec![-1i32; batch * seq], vec![0i32; batch * seq]);
        let mut counts = vec![0i32; batch];
        for (s, ps) in rows.positions().iter().enumerate() {
            counts[s] = ps.len() as i32;
            for (k, &p) in ps.iter().enumerate() {
                slots[s * seq + p] = k as i32;
                positions[s * seq + k] = p as i32;
            }
        }
        let le = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        self.device.write(Ptr { buffer: &map.slots, offset: 0 }, &le(&slots))?;
        self.device.write(Ptr { buffer: &map.positions, offset: 0 }, &le(&positions))?;
        self.device.write(Ptr { buffer: &map.counts, offset: 0 }, &le(&counts))?;
        *written = Some(rows.positions().to_vec());
        drop(written);
        Ok(map)
    }
}

impl<D: Device> Target for GpuTarget<D> {
    type Memory = D::Buffer;
    type Kernel = D::Function;

    fn name(&self) -> String {
        self.device.name()
    }

    fn available_memory(&self) -> Option<u64> {
        self.device.free_memory()
    }

    fn allocate(&self, bytes: u64) -> Result<D::Buffer, String> {
        self.device.alloc(bytes)
    }

    fn upload(&self, to: At<'_, D::Buffer>, value: &Value<f32>) -> Result<(), String> {
        self.device.write(ptr(&to), &storage::encode(value, to.dtype, to.shape)?)
    }

    fn download(&self, from: At<'_, D::Buffer>) -> Result<Value<f32>, String> {
        let bytes = self.device.read(ptr(&from), storage_bytes(from.dtype, from.shape))?;
        storage::decode(&bytes, from.dtype, from.shape)
    }

    fn copy(&self, from: At<'_, D::Buffer>, to: At<'_, D::Buffer>) -> Result<(), String> {
        let bytes = storage_bytes(from.dtype, from.shape);
        if bytes != storage_bytes(to.dtype, to.shape) {
            return Err(format!(
                "a {} {:?} tensor cannot be copied to a {} {:?} one",
                from.dtype, from.shape, to.dtype, to.shape
            ));
        }
        if std::ptr::eq(from.memory, to.memory) && from.offset == to.offset {
            return Ok(());
        }
        self.device.copy(ptr(&from), ptr(&to), bytes)
    }

    fn compile(&self, group: &Group) -> Result<D::Function, String> {
        let mut named = group.clone();
        named.name = self.name_for(&group.name);
        self.device.load(&lower_group(&named)?)
    }

    fn launch(
        &self,
        kernel: &D::Function,
        inputs: &[At<'_, D::Buffer>],
        outputs: &[At<'_, D::Buffer>],
    ) -> Result<(), String> {
        let args: Vec<Ptr<'_, D::Buffer>> = inputs.iter().chain(outputs).map(ptr).collect();
        self.device.launch(kernel, &args)
    }

    fn run_op(&self, op: &Op, inputs: &[At<'_, D::Buffer>], outputs: &[At<'_, D::Buffer>]) -> Result<(), String> {
        if let (Op::MatMul { .. } | Op::MatMulSum { .. }, [out]) = (op, outputs) {
            return self.gemm(op, inputs, out);
        }
        let ats: Vec<At<'_, D::Buffer>> = inputs.iter().chain(outputs).copied().collect();
        self.run_kernels(op, &ats, inputs.len(), false)
    }

    fn run_in_place(&self, op: &Op, target: At<'_, D::Buffer>, inputs: &[At<'_, D::Buffer>]) -> Result<(), String> {
        let ats: Vec<At<'_, D::Buffer>> = inputs.iter().copied().chain([target]).collect();
        self.run_kernels(op, &ats, inputs.len(), true)
    }

    fn synchronize(&self) -> Result<(), String> {
        self.device.synchronize()
    }

    fn active_rows(&self, mask: At<'_, D::Buffer>) -> Result<ActiveRows, String> {
        // The count of active rows picks the region's plan, so the host needs the mask.
        ActiveRows::new(&self.download(mask)?.view())
    }

    fn move_rows(
        &self,
        rows: &ActiveRows,
        pack: bool,
        from: At<'_, D::Buffer>,
        to: At<'_, D::Buffer>,
    ) -> Result<(), String> {
        let full = if pack { from.shape } else { to.shape };
        let r = Rows {
            batch: rows.positions().len(),
            seq: rows.full(),
            packed: rows.packed,
            width: full.get(2..).unwrap_or(&[]).iter().product(),
            elem: elem_of(from.dtype),
        };
        if full.len() < 2 || full[0] != r.batch || full[1] != r.seq {
            return Err(format!("a routed value of shape {full:?} should start with [{}, {}]", r.batch, r.seq));
        }
        let map = self.row_map(rows)?;
        let key = format!("rows {pack} {} {} {} {} {:?}", r.batch, r.seq, r.packed, r.width, r.elem);
        let function = self.cached(key, || {
            let name = self.name_for(if pack { "pack_rows" } else { "unpack_rows" });
            let k = if pack { routing::pack(&name, &r)? } else { routing::unpack(&name, &r)? };
            Ok(vec![(self.device.load(&k)?, Vec::new())])
        })?;
        fn at<B>(b: &B) -> Ptr<'_, B> {
            Ptr { buffer: b, offset: 0 }
        }
        let args = if pack {
            vec![ptr(&from), at(&map.positions), at(&map.counts), ptr(&to)]
        } else {
            vec![ptr(&from), at(&map.slots), ptr(&to)]
        };
        self.device.launch(&function[0].0, &args)
    }
}
