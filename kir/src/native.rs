//! What every native backend shares: the calling convention of a compiled
//! kernel, the table of compiled kernels with its argument checks, and the
//! split of a parallel outer loop between threads. A backend only turns
//! kernel IR into a [`KernelFn`].

use crate::Kernel;
use std::collections::HashMap;

/// The machine code of one kernel: `f(buffers, begin, end)` runs iterations
/// `begin..end` of the kernel's outermost loop on `buffers` (one pointer per
/// buffer, inputs first).
pub type KernelFn = unsafe extern "C" fn(*const *mut f32, i64, i64);

/// A backend that compiles kernel IR to native code.
pub trait NativeCompiler: Send {
    /// Compiles `k` (after checking its accesses in bounds) and adds it to [`NativeCompiler::kernels`].
    fn compile(&mut self, k: &Kernel) -> Result<(), String>;
    /// The kernels compiled so far.
    fn kernels(&self) -> &Compiled;
    /// The vector width kernels should be lowered with for this backend.
    fn vector_width(&self) -> u32;
    /// The backend's listings of compiled kernel `name`, by file extension
    /// (what `lsc compile --emit` writes, e.g. `clif`, or `ll` and `asm`).
    fn listings(&self, name: &str) -> Vec<(&'static str, String)>;
    /// One relocatable object file defining `kernels` (each a [`KernelFn`]
    /// named after the kernel), for ahead-of-time linking, if the backend writes them.
    fn object_file(&self, kernels: &[Kernel]) -> Option<Result<Vec<u8>, String>> {
        let _ = kernels;
        None
    }
}

/// Compiled kernels by name, each with the kernel IR it implements.
#[derive(Default)]
pub struct Compiled {
    kernels: HashMap<String, (KernelFn, Kernel)>,
}

impl Compiled {
    /// Registers `f` as the code of `k`.
    ///
    /// # Safety
    /// `f` must implement `k` with the [`KernelFn`] convention, and `k` must
    /// have passed [`crate::check::in_bounds`]; the code must outlive `self`.
    pub unsafe fn insert(&mut self, k: &Kernel, f: KernelFn) {
        self.kernels.insert(k.name.clone(), (f, k.clone()));
    }

    /// Whether kernel `name` is compiled.
    pub fn contains(&self, name: &str) -> bool {
        self.kernels.contains_key(name)
    }

    /// Kernel `name`, once the given buffer lengths match its buffers (count) and cover them.
    fn checked(&self, name: &str, lens: &[usize]) -> Result<(KernelFn, &Kernel), String> {
        let (f, k) = self.kernels.get(name).ok_or_else(|| format!("no compiled kernel `{name}`"))?;
        if lens.len() != k.buffers.len() {
            return Err(format!("kernel {name} takes {} buffers, got {}", k.buffers.len(), lens.len()));
        }
        for (&len, decl) in lens.iter().zip(&k.buffers) {
            if (len as u64) < decl.len {
                return Err(format!("kernel {name}: buffer {} has {len} elements, needs {}", decl.name, decl.len));
            }
        }
        Ok((*f, k))
    }

    /// Runs iterations `begin..end` of kernel `name`'s outer loop on `bufs`
    /// (one slice per buffer, each at least as long as declared).
    pub fn run_range(&self, name: &str, bufs: &mut [&mut [f32]], begin: u64, end: u64) -> Result<(), String> {
        let lens: Vec<usize> = bufs.iter().map(|b| b.len()).collect();
        let (f, k) = self.checked(name, &lens)?;
        let ptrs: Vec<*mut f32> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let end = end.min(k.outer_extent());
        // SAFETY: every access was checked in bounds for the declared lengths, which the slices cover.
        unsafe { f(ptrs.as_ptr(), begin.min(end) as i64, end as i64) };
        Ok(())
    }

    /// Kernel `name`'s entry point with what running it needs, to call
    /// without looking it up again.
    pub fn handle(&self, name: &str) -> Option<Handle> {
        let (f, k) = self.kernels.get(name)?;
        Some(Handle {
            f: *f,
            name: k.name.clone(),
            lens: k.buffers.iter().map(|b| b.len).collect(),
            inputs: k.buffers.iter().filter(|b| !b.output).count(),
            extent: k.outer_extent(),
            parallel: k.schedule.parallel,
        })
    }

    /// Runs kernel `name` reading `inputs` and writing `outputs` (in buffer
    /// order), splitting its outer loop between `threads` threads when its
    /// schedule says the loop is parallel.
    pub fn run_parallel(
        &self,
        name: &str,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        threads: usize,
    ) -> Result<(), String> {
        let handle = self.handle(name).ok_or_else(|| format!("no compiled kernel `{name}`"))?;
        handle.run_on(inputs, outputs, threads, &|tasks, f| {
            std::thread::scope(|s| {
                for t in 1..tasks {
                    s.spawn(move || f(t));
                }
                f(0);
            })
        })
    }

    /// Runs kernel `name` over its whole index space.
    pub fn run(&self, name: &str, bufs: &mut [&mut [f32]]) -> Result<(), String> {
        let n = self.kernels.get(name).map(|(_, k)| k.outer_extent()).unwrap_or(0);
        self.run_range(name, bufs, 0, n)
    }
}

/// Runs `f(0)`, …, `f(tasks − 1)` on threads of its choice and returns when all are done.
pub type Split = dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// A compiled kernel ready to run: its code and the buffer lengths it was
/// checked for. Valid while the backend that compiled it lives.
#[derive(Clone, Debug)]
pub struct Handle {
    f: KernelFn,
    name: String,
    lens: Vec<u64>,
    inputs: usize,
    extent: u64,
    parallel: bool,
}

impl Handle {
    /// Runs the kernel reading `inputs` and writing `outputs` (in buffer
    /// order, each at least as long as declared). A parallel outer loop is
    /// cut into `threads` ranges, handed to `split(tasks, f)`, which must call
    /// `f(0)`, …, `f(tasks − 1)` (on threads of its choice) and return when they are done.
    pub fn run_on(
        &self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        threads: usize,
        split: &Split,
    ) -> Result<(), String> {
        let name = &self.name;
        if inputs.len() != self.inputs || inputs.len() + outputs.len() != self.lens.len() {
            return Err(format!(
                "kernel {name} takes {} inputs and {} outputs, got {} and {}",
                self.inputs,
                self.lens.len() - self.inputs,
                inputs.len(),
                outputs.len()
            ));
        }
        let lens = inputs.iter().map(|b| b.len()).chain(outputs.iter().map(|b| b.len()));
        for (i, (len, &want)) in lens.zip(&self.lens).enumerate() {
            if (len as u64) < want {
                return Err(format!("kernel {name}: buffer {i} has {len} elements, needs {want}"));
            }
        }
        // Inputs are only read: the bounds check refuses kernels that store to them.
        let mut ptrs: Vec<*mut f32> = inputs.iter().map(|b| b.as_ptr() as *mut f32).collect();
        ptrs.extend(outputs.iter_mut().map(|b| b.as_mut_ptr()));
        let (f, n) = (self.f, self.extent as i64);
        let threads = if self.parallel { threads.clamp(1, n.max(1) as usize) } else { 1 };
        if threads == 1 {
            // SAFETY: every access was checked in bounds for the declared lengths, which the slices cover.
            unsafe { f(ptrs.as_ptr(), 0, n) };
            return Ok(());
        }
        let chunk = (n + threads as i64 - 1) / threads as i64;
        let table = Pointers(ptrs);
        // SAFETY: bounds were checked; iterations of a parallel outer loop write disjoint elements.
        let table = &table;
        split(threads, &|t| unsafe { f(table.ptr(), (t as i64 * chunk).min(n), ((t as i64 + 1) * chunk).min(n)) });
        Ok(())
    }
}

/// Buffer pointers shared by the threads of one parallel kernel run.
struct Pointers(Vec<*mut f32>);
// SAFETY: the threads read inputs and write disjoint parts of the outputs.
unsafe impl Sync for Pointers {}

impl Pointers {
    fn ptr(&self) -> *const *mut f32 {
        self.0.as_ptr()
    }
}
