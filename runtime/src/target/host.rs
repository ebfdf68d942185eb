//! The host CPU as a [`Target`]: memory is process memory, fused groups are
//! lowered to kernel IR and compiled by a native backend (Cranelift or LLVM),
//! and library ops run the CPU kernel library.

use super::{At, Target};
use lsc_interp::routing::ActiveRows;
use lsc_interp::ternary::{TernaryMut, TernaryRef};
use lsc_interp::{Data, DataMut, Storage, Value, View, ViewMut};
use lsc_ir::Op;
use lsc_kir::lower::Group;
use lsc_kir::native::{Handle, NativeCompiler};
use std::cell::UnsafeCell;
use std::sync::Mutex;

/// One allocation of host memory, in 64-bit words (so every element type is aligned).
pub struct HostMemory {
    words: Box<[UnsafeCell<u64>]>,
}

// SAFETY: the executor never hands a target overlapping tensors to write
// and read at once (see `Target`), so concurrent kernels touch disjoint words.
unsafe impl Sync for HostMemory {}
// SAFETY: the memory is plain words with no thread affinity.
unsafe impl Send for HostMemory {}

impl HostMemory {
    /// Zeroed memory of at least `bytes` bytes.
    pub fn zeroed(bytes: u64) -> Result<HostMemory, String> {
        let n = bytes.div_ceil(8) as usize;
        let mut words: Vec<UnsafeCell<u64>> = Vec::new();
        words
            .try_reserve_exact(n)
            .map_err(|_| format!("cannot allocate {} on the CPU", crate::resources::show_bytes(bytes)))?;
        words.extend((0..n).map(|_| UnsafeCell::new(0)));
        Ok(HostMemory { words: words.into_boxed_slice() })
    }

    /// `len` elements of type `E` at byte `offset`.
    ///
    /// # Safety
    /// No other live reference may overlap the elements, and every byte
    /// pattern the memory holds must be a valid `E` where it is read.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice<E>(&self, offset: u64, len: usize) -> Result<&mut [E], String> {
        let size = std::mem::size_of::<E>() as u64;
        let end = offset + size * len as u64;
        if end > 8 * self.words.len() as u64 || !offset.is_multiple_of(std::mem::align_of::<E>() as u64) {
            return Err(format!("a tensor of {len} × {size} bytes at {offset} does not fit its memory"));
        }
        let base = UnsafeCell::raw_get(self.words.as_ptr()) as *mut u8;
        // SAFETY: in bounds and aligned (checked above); exclusivity is the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts_mut(base.add(offset as usize) as *mut E, len) })
    }
}

/// The elements of `at` as a kernel writes them.
///
/// # Safety
/// As [`HostMemory::slice`]: nothing else may reference the tensor meanwhile.
unsafe fn data_mut<'a>(at: &At<'a, HostMemory>) -> Result<DataMut<'a, f32>, String> {
    let units = Storage::of(at.dtype).units(at.shape);
    let (m, o) = (at.memory, at.offset);
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        Ok(match Storage::of(at.dtype) {
            Storage::Float => DataMut::Float(m.slice(o, units)?),
            Storage::Int => DataMut::Int(m.slice(o, units)?),
            Storage::Bool => DataMut::Bool(m.slice(o, units)?),
            Storage::Ternary => {
                let &[rows, cols] = at.shape else { return Err("a packed ternary tensor must be a matrix".into()) };
                DataMut::Ternary(TernaryMut { rows, cols, planes: m.slice(o, units)? })
            }
        })
    }
}

/// `at` as a kernel writes it.
///
/// # Safety
/// As [`data_mut`].
unsafe fn view_mut<'a>(at: &At<'a, HostMemory>) -> Result<ViewMut<'a, f32>, String> {
    // SAFETY: forwarded.
    Ok(ViewMut { dtype: at.dtype, shape: at.shape, data: unsafe { data_mut(at)? } })
}

/// `at` as a kernel reads it.
///
/// # Safety
/// Nothing may write the tensor while the view lives.
unsafe fn view<'a>(at: &At<'a, HostMemory>) -> Result<View<'a, f32>, String> {
    // SAFETY: forwarded; the mutable slice is only read through.
    let data = match unsafe { data_mut(at)? } {
        DataMut::Float(v) => Data::Float(v),
        DataMut::Int(v) => Data::Int(v),
        DataMut::Bool(v) => Data::Bool(v),
        DataMut::Ternary(p) => Data::Ternary(TernaryRef { rows: p.rows, cols: p.cols, planes: p.planes }),
    };
    Ok(View { dtype: at.dtype, shape: at.shape, data })
}

fn views<'a>(ats: &[At<'a, HostMemory>]) -> Result<Vec<View<'a, f32>>, String> {
    // SAFETY: the executor does not write what a launch reads (see `Target`).
    ats.iter().map(|a| unsafe { view(a) }).collect()
}

fn views_mut<'a>(ats: &[At<'a, HostMemory>]) -> Result<Vec<ViewMut<'a, f32>>, String> {
    // SAFETY: a launch's outputs are disjoint from each other and from its inputs (see `Target`).
    ats.iter().map(|a| unsafe { view_mut(a) }).collect()
}

/// The host CPU with a native code generator.
pub struct Host {
    compiler: Mutex<(Box<dyn NativeCompiler>, usize)>,
    threads: usize,
    name: &'static str,
}

impl Host {
    /// A host target generating kernels with `compiler` (named `name`, e.g. `cranelift`).
    pub fn new(compiler: Box<dyn NativeCompiler>, name: &'static str) -> Host {
        Host { compiler: Mutex::new((compiler, 0)), threads: lsc_cpu::pool::threads(), name }
    }
}

impl Target for Host {
    type Memory = HostMemory;
    type Kernel = Handle;

    fn name(&self) -> String {
        format!("cpu ({})", self.name)
    }

    fn available_memory(&self) -> Option<u64> {
        crate::resources::available_memory()
    }

    fn allocate(&self, bytes: u64) -> Result<HostMemory, String> {
        HostMemory::zeroed(bytes)
    }

    fn upload(&self, to: At<'_, HostMemory>, value: &Value<f32>) -> Result<(), String> {
        if value.shape != to.shape {
            return Err(format!("a value of shape {:?} cannot fill a tensor of shape {:?}", value.shape, to.shape));
        }
        // SAFETY: uploads happen between launches, when nothing else references the tensor.
        let mut dst = unsafe { view_mut(&to)? };
        match (&value.data, &mut dst.data) {
            (lsc_interp::Buffer::Float(v), DataMut::Float(d)) => d.copy_from_slice(v),
            (lsc_interp::Buffer::Int(v), DataMut::Int(d)) => d.copy_from_slice(v),
            (lsc_interp::Buffer::Bool(v), DataMut::Bool(d)) => d.copy_from_slice(v),
            (lsc_interp::Buffer::Ternary(p), DataMut::Ternary(d)) => d.planes.copy_from_slice(p.as_ref().planes),
            (lsc_interp::Buffer::Float(v), DataMut::Ternary(d)) => d.pack_from(v)?,
            _ => return Err(format!("a {} value cannot fill a {} tensor", value.dtype, to.dtype)),
        }
        Ok(())
    }

    fn download(&self, from: At<'_, HostMemory>) -> Result<Value<f32>, String> {
        // SAFETY: downloads happen between launches.
        Ok(unsafe { view(&from)? }.to_value())
    }

    fn copy(&self, from: At<'_, HostMemory>, to: At<'_, HostMemory>) -> Result<(), String> {
        if std::ptr::eq(from.memory, to.memory) && from.offset == to.offset {
            return Ok(());
        }
        self.run_op(&Op::StopGradient, &[from], &[to])
    }

    fn compile(&self, group: &Group) -> Result<Handle, String> {
        let mut guard = self.compiler.lock().map_err(|_| "the code generator's lock is poisoned".to_string())?;
        let (compiler, count) = &mut *guard;
        let mut named = group.clone();
        named.name = format!("{}_{count}", group.name);
        *count += 1;
        let kernel = lsc_kir::lower::lower_elementwise(&named, compiler.vector_width())?;
        compiler.compile(&kernel)?;
        compiler.kernels().handle(&named.name).ok_or_else(|| format!("kernel {} was not compiled", named.name))
    }

    fn launch(
        &self,
        kernel: &Handle,
        inputs: &[At<'_, HostMemory>],
        outputs: &[At<'_, HostMemory>],
    ) -> Result<(), String> {
        let mut ins: Vec<&[f32]> = Vec::with_capacity(inputs.len());
        for v in views(inputs)? {
            ins.push(v.floats()?);
        }
        let mut outs: Vec<&mut [f32]> = Vec::with_capacity(outputs.len());
        for v in views_mut(outputs)? {
            match v.data {
                DataMut::Float(f) => outs.push(f),
                _ => return Err("generated kernels write f32 tensors".into()),
            }
        }
        kernel.run_on(&ins, &mut outs, self.threads, &lsc_cpu::pool::parallel)
    }

    fn run_op(&self, op: &Op, inputs: &[At<'_, HostMemory>], outputs: &[At<'_, HostMemory>]) -> Result<(), String> {
        let ins = views(inputs)?;
        let mut outs = views_mut(outputs)?;
        lsc_cpu::run_op(op, &ins, &mut outs)
    }

    fn run_in_place(&self, op: &Op, target: At<'_, HostMemory>, inputs: &[At<'_, HostMemory>]) -> Result<(), String> {
        let ins = views(inputs)?;
        // SAFETY: the target is disjoint from the other operands (see `Target`).
        let mut t = unsafe { view_mut(&target)? };
        lsc_cpu::run_in_place(op, &mut t, &ins)
    }

    fn active_rows(&self, mask: At<'_, HostMemory>) -> Result<ActiveRows, String> {
        ActiveRows::new(&views(&[mask])?[0])
    }

    fn move_rows(
        &self,
        rows: &ActiveRows,
        pack: bool,
        from: At<'_, HostMemory>,
        to: At<'_, HostMemory>,
    ) -> Result<(), String> {
        let src = &views(&[from])?[0];
        let dst = &mut views_mut(&[to])?[0];
        if pack {
            rows.pack_into(src, dst)
        } else {
            rows.unpack_into(src, dst)
        }
    }
}
