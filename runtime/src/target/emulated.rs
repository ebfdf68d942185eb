//! An emulated GPU as a [`Target`] (`--backend gpu-emu`): device memory is
//! host memory, and every kernel is the GPU kernel the CUDA target launches
//! (`lsc_runtime::gpu`: a fused group's, or a library op's), run by the
//! GPU-semantics evaluator (`lsc_kir::gpu::eval`) — every block, every
//! thread, barriers and warp lanes. GEMMs, which the CUDA target hands to
//! cuBLAS, run the CPU library's product; a routed call's active rows are
//! found on the host. It checks the GPU lowering of whole programs, decoding
//! and training without a GPU, and is slow: every thread is interpreted.

use super::host::{Host, HostMemory};
use super::{At, Target};
use crate::gpu::{elem_of, op_kernels};
use lsc_interp::routing::ActiveRows;
use lsc_interp::ternary::TernaryPlanes;
use lsc_interp::{Buffer, Value};
use lsc_ir::Op;
use lsc_kir::gpu::lower::lower_group;
use lsc_kir::gpu::movement::Operand;
use lsc_kir::lower::Group;
use lsc_kir::Kernel;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The emulated device.
pub struct EmulatedGpu {
    /// Memory, copies, GEMMs and the routing's host side.
    host: Host,
    /// Kernels generated so far (for unique names).
    count: AtomicUsize,
}

impl EmulatedGpu {
    /// A new emulated device.
    pub fn new() -> Result<EmulatedGpu, String> {
        let jit = lsc_cranelift::Jit::new()?;
        Ok(EmulatedGpu { host: Host::new(Box::new(jit), "cranelift"), count: AtomicUsize::new(0) })
    }

    fn name_for(&self, what: &str) -> String {
        format!("{what}_{}", self.count.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs GPU kernel `k` on the tensors `ats` (one per buffer, in order).
    fn run(&self, k: &Kernel, ats: &[At<'_, HostMemory>]) -> Result<(), String> {
        if ats.len() != k.buffers.len() {
            return Err(format!("kernel {} takes {} buffers, not {}", k.name, k.buffers.len(), ats.len()));
        }
        let mut bufs =
            ats.iter().map(|a| Ok(elements(&self.host.download(*a)?))).collect::<Result<Vec<_>, String>>()?;
        lsc_kir::gpu::eval::run(k, &mut bufs)?;
        for ((b, at), data) in k.buffers.iter().zip(ats).zip(&bufs) {
            if b.output {
                self.host.upload(*at, &value(at, data)?)?;
            }
        }
        Ok(())
    }

    fn run_kernels(&self, op: &Op, ats: &[At<'_, HostMemory>], inputs: usize, in_place: bool) -> Result<(), String> {
        let operands: Vec<Operand> =
            ats.iter().map(|a| Operand { shape: a.shape.to_vec(), elem: elem_of(a.dtype) }).collect();
        let (ins, outs) = operands.split_at(inputs);
        let kernels = op_kernels(&self.name_for(op.name()), op, ins, outs, in_place)
            .ok_or_else(|| format!("no GPU kernel computes {}", op.name()))??;
        for k in kernels {
            let at: Vec<At<'_, HostMemory>> = k.at.iter().map(|&i| ats[i]).collect();
            self.run(&k.kernel, &at)?;
        }
        Ok(())
    }
}

/// A tensor's elements as the GPU evaluator holds them (packed ternary words as 32-bit halves, low first).
fn elements(v: &Value<f32>) -> Vec<f64> {
    match &v.data {
        Buffer::Float(x) => x.iter().map(|&a| f64::from(a)).collect(),
        Buffer::Int(x) => x.iter().map(|&a| a as f64).collect(),
        Buffer::Bool(x) => x.iter().map(|&a| f64::from(u8::from(a))).collect(),
        Buffer::Ternary(p) => {
            p.as_ref().planes.iter().flat_map(|&w| [f64::from(w as u32), f64::from((w >> 32) as u32)]).collect()
        }
    }
}

/// The value of tensor `at` from the evaluator's elements.
fn value(at: &At<'_, HostMemory>, data: &[f64]) -> Result<Value<f32>, String> {
    let mut v = Value::<f32>::zeros(at.dtype, at.shape.to_vec());
    match &mut v.data {
        Buffer::Float(x) => x.iter_mut().zip(data).for_each(|(o, &a)| *o = a as f32),
        Buffer::Int(x) => x.iter_mut().zip(data).for_each(|(o, &a)| *o = a as i64),
        Buffer::Bool(x) => x.iter_mut().zip(data).for_each(|(o, &a)| *o = a != 0.0),
        Buffer::Ternary(p) => {
            let &[rows, cols] = at.shape else { return Err("a packed ternary tensor must be a matrix".into()) };
            let mut planes = TernaryPlanes::zeros(rows, cols);
            for (w, pair) in planes.as_mut().planes.iter_mut().zip(data.chunks(2)) {
                *w = (pair[0] as u64) | ((pair.get(1).copied().unwrap_or(0.0) as u64) << 32);
            }
            *p = planes;
        }
    }
    Ok(v)
}

impl Target for EmulatedGpu {
    type Memory = HostMemory;
    type Kernel = Kernel;

    fn name(&self) -> String {
        "emulated gpu".into()
    }

    fn allocate(&self, bytes: u64) -> Result<HostMemory, String> {
        self.host.allocate(bytes)
    }

    fn upload(&self, to: At<'_, HostMemory>, value: &Value<f32>) -> Result<(), String> {
        self.host.upload(to, value)
    }

    fn download(&self, from: At<'_, HostMemory>) -> Result<Value<f32>, String> {
        self.host.download(from)
    }

    fn copy(&self, from: At<'_, HostMemory>, to: At<'_, HostMemory>) -> Result<(), String> {
        self.host.copy(from, to)
    }

    fn compile(&self, group: &Group) -> Result<Kernel, String> {
        let mut named = group.clone();
        named.name = self.name_for(&group.name);
        lower_group(&named)
    }

    fn launch(
        &self,
        kernel: &Kernel,
        inputs: &[At<'_, HostMemory>],
        outputs: &[At<'_, HostMemory>],
    ) -> Result<(), String> {
        let ats: Vec<At<'_, HostMemory>> = inputs.iter().chain(outputs).copied().collect();
        self.run(kernel, &ats)
    }

    fn run_op(&self, op: &Op, inputs: &[At<'_, HostMemory>], outputs: &[At<'_, HostMemory>]) -> Result<(), String> {
        if matches!(op, Op::MatMul { .. } | Op::MatMulSum { .. }) {
            return self.host.run_op(op, inputs, outputs);
        }
        let ats: Vec<At<'_, HostMemory>> = inputs.iter().chain(outputs).copied().collect();
        self.run_kernels(op, &ats, inputs.len(), false)
    }

    fn run_in_place(&self, op: &Op, target: At<'_, HostMemory>, inputs: &[At<'_, HostMemory>]) -> Result<(), String> {
        let ats: Vec<At<'_, HostMemory>> = inputs.iter().copied().chain([target]).collect();
        self.run_kernels(op, &ats, inputs.len(), true)
    }

    fn active_rows(&self, mask: At<'_, HostMemory>) -> Result<ActiveRows, String> {
        self.host.active_rows(mask)
    }

    fn move_rows(
        &self,
        rows: &ActiveRows,
        pack: bool,
        from: At<'_, HostMemory>,
        to: At<'_, HostMemory>,
    ) -> Result<(), String> {
        self.host.move_rows(rows, pack, from, to)
    }
}
