//! The real device: an NVIDIA GPU through cudarc (driver API and cuBLAS, both
//! loaded at run time, so lsc builds without CUDA installed). Kernels are
//! rendered to PTX by LLVM's NVPTX back end for the device's architecture and
//! JIT-loaded by the driver; everything is queued on one stream, and cuBLAS
//! runs on the same stream.

use super::device::{Device, Gemm, Ptr};
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    result, sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use lsc_kir::{Elem, Kernel};
use lsc_llvm::ptx::PtxGenerator;
use std::ffi::c_void;
use std::sync::Arc;

/// An NVIDIA GPU (device 0).
pub struct Cuda {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    ptx: PtxGenerator,
    name: String,
}

/// One device allocation, and its address.
pub struct Buffer {
    _slice: CudaSlice<u8>,
    address: u64,
    bytes: u64,
}

/// A loaded kernel, with its launch shape and its buffers' sizes.
pub struct Function {
    function: CudaFunction,
    name: String,
    grid: u32,
    block: u32,
    /// Bytes of each buffer, for the bounds check before a launch.
    sizes: Vec<u64>,
}

fn driver<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("CUDA {what}: {e:?}")
}

/// Fails unless `len` bytes at `p` lie in its allocation.
fn inside(p: &Ptr<'_, Buffer>, len: u64, what: &str) -> Result<u64, String> {
    match p.offset.checked_add(len) {
        Some(end) if end <= p.buffer.bytes => Ok(p.buffer.address + p.offset),
        _ => Err(format!("{what}: {len} bytes at {} reach past an allocation of {}", p.offset, p.buffer.bytes)),
    }
}

/// Whether the CUDA driver and cuBLAS libraries can be loaded (a GPU may still be absent).
pub fn libraries_present() -> bool {
    // SAFETY: only asks whether the shared libraries can be loaded.
    unsafe { sys::is_culib_present() && blas_sys::is_culib_present() }
}

impl Cuda {
    /// Device 0, or an error saying why there is none (never a panic: cudarc
    /// panics on first use when the driver library is missing, so that is checked first).
    pub fn new() -> Result<Cuda, String> {
        // SAFETY: only asks whether the shared libraries can be loaded.
        let (driver_present, blas_present) = unsafe { (sys::is_culib_present(), blas_sys::is_culib_present()) };
        if !driver_present {
            return Err("no CUDA driver on this machine (libcuda.so could not be loaded): --backend cuda needs an \
                        NVIDIA GPU and its driver; --backend cuda-emu runs the same target on an emulated device"
                .into());
        }
        if !blas_present {
            return Err("cuBLAS (libcublas.so) could not be loaded: install the CUDA toolkit's cuBLAS, or pass \
                        --backend cuda-emu"
                .into());
        }
        let context = CudaContext::new(0).map_err(driver("device 0"))?;
        let (major, minor) = context.compute_capability().map_err(driver("compute capability"))?;
        // PTX is forward compatible: sm_90's runs on every later chip through the driver's JIT.
        let arch = match major {
            8 => "sm_80",
            m if m >= 9 => "sm_90",
            _ => return Err(format!("lsc generates PTX for sm_80 and later; this GPU is sm_{major}{minor}")),
        };
        let stream = context.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(driver("cuBLAS"))?;
        let gpu = context.name().map_err(driver("device name"))?;
        Ok(Cuda { name: format!("{gpu} ({arch}, cuda)"), ptx: PtxGenerator::new(arch)?, context, stream, blas })
    }

    /// The stream, with the context made current on this thread (raw driver calls need it).
    fn stream(&self) -> Result<sys::CUstream, String> {
        self.context.bind_to_thread().map_err(driver("binding the context"))?;
        Ok(self.stream.cu_stream())
    }

    /// Peak dense FLOP/s of the tensor cores in bf16 and of the f32 cores
    /// (SMs × clock × per-SM rate of the architecture: NVIDIA's A100 and H100 whitepapers).
    pub fn peak_flops(&self) -> Result<(f64, f64), String> {
        use sys::CUdevice_attribute as A;
        let attr = |a| self.context.attribute(a).map_err(driver("device attribute"));
        let sms = f64::from(attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?);
        let hz = f64::from(attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?) * 1e3;
        let (major, _) = self.context.compute_capability().map_err(driver("compute capability"))?;
        // FLOP per clock per SM: bf16 dense tensor-core and f32 FMA.
        let (bf16, f32) = if major >= 9 { (4096.0, 256.0) } else { (2048.0, 128.0) };
        Ok((sms * hz * bf16, sms * hz * f32))
    }
}

impl Device for Cuda {
    type Buffer = Buffer;
    type Function = Function;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn free_memory(&self) -> Option<u64> {
        self.stream().ok()?;
        cudarc::driver::result::mem_get_info().ok().map(|(free, _)| free as u64)
    }

    fn alloc(&self, bytes: u64) -> Result<Buffer, String> {
        let n = usize::try_from(bytes.max(1)).map_err(|_| format!("{bytes} bytes"))?;
        let slice =
            self.stream.alloc_zeros::<u8>(n).map_err(|e| format!("cannot allocate {bytes} bytes on the GPU: {e:?}"))?;
        let address = slice.device_ptr(&self.stream).0;
        Ok(Buffer { address, _slice: slice, bytes })
    }

    fn write(&self, to: Ptr<'_, Buffer>, bytes: &[u8]) -> Result<(), String> {
        let at = inside(&to, bytes.len() as u64, "a write")?;
        // SAFETY: in bounds (checked); from pageable memory the driver copies `bytes` before returning.
        unsafe { result::memcpy_htod_async(at, bytes, self.stream()?) }.map_err(driver("copy to the device"))
    }

    fn synchronize(&self) -> Result<(), String> {
        self.stream.synchronize().map_err(driver("synchronize"))
    }

    fn read(&self, from: Ptr<'_, Buffer>, len: u64) -> Result<Vec<u8>, String> {
        let at = inside(&from, len, "a read")?;
        let mut out = vec![0u8; len as usize];
        // SAFETY: in bounds (checked); the stream is synchronised before `out` is used.
        unsafe { result::memcpy_dtoh_async(&mut out, at, self.stream()?) }.map_err(driver("copy from the device"))?;
        self.synchronize()?;
        Ok(out)
    }

    fn copy(&self, from: Ptr<'_, Buffer>, to: Ptr<'_, Buffer>, bytes: u64) -> Result<(), String> {
        let (src, dst) = (inside(&from, bytes, "a copy")?, inside(&to, bytes, "a copy")?);
        // SAFETY: both ranges are in bounds (checked).
        unsafe { result::memcpy_dtod_async(dst, src, bytes as usize, self.stream()?) }.map_err(driver("device copy"))
    }

    fn load(&self, kernel: &Kernel) -> Result<Function, String> {
        let launch = kernel.launch.as_ref().ok_or_else(|| format!("kernel {} is not a GPU kernel", kernel.name))?;
        let module = self.ptx.module(&kernel.name, std::slice::from_ref(kernel))?;
        let loaded = self.context.load_module(Ptx::from_src(module.ptx)).map_err(driver("loading PTX"))?;
        let function = loaded.load_function(&kernel.name).map_err(driver("kernel lookup"))?;
        Ok(Function {
            function,
            name: kernel.name.clone(),
            grid: launch.grid,
            block: launch.block,
            sizes: kernel.buffers.iter().map(|b| b.len * b.elem.bytes()).collect(),
        })
    }

    fn launch(&self, f: &Function, args: &[Ptr<'_, Buffer>]) -> Result<(), String> {
        if args.len() != f.sizes.len() {
            return Err(format!("kernel {} takes {} buffers, not {}", f.name, f.sizes.len(), args.len()));
        }
        let addresses =
            args.iter().zip(&f.sizes).map(|(p, &n)| inside(p, n, &f.name)).collect::<Result<Vec<u64>, String>>()?;
        let mut builder = self.stream.launch_builder(&f.function);
        for a in &addresses {
            builder.arg(a);
        }
        let cfg = LaunchConfig { grid_dim: (f.grid, 1, 1), block_dim: (f.block, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the kernel takes one pointer per buffer, each in bounds for its
        // length (checked), and its launch shape is the one it was generated for.
        unsafe { builder.launch(cfg) }.map(|_| ()).map_err(driver("launch"))
    }

    fn gemm(&self, g: &Gemm, a: Ptr<'_, Buffer>, b: Ptr<'_, Buffer>, c: Ptr<'_, Buffer>) -> Result<(), String> {
        let (na, nb, nc) = g.extents();
        let size = g.operands.bytes();
        let (pa, pb, pc) =
            (inside(&a, na * size, "GEMM A")?, inside(&b, nb * size, "GEMM B")?, inside(&c, nc * 4, "GEMM C")?);
        if g.k == 0 || g.batch == 0 {
            // No products: C = beta · C, which is zero for every call lsc makes.
            // SAFETY: in bounds (checked).
            return unsafe { result::memset_d8_async(pc, 0, (nc * 4) as usize, self.stream()?) }
                .map_err(driver("memset"));
        }
        let int =
            |x: usize| i32::try_from(x).map_err(|_| format!("a GEMM dimension of {x} exceeds cuBLAS's 32-bit sizes"));
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let ty = match g.operands {
            Elem::BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
            _ => blas_sys::cudaDataType::CUDA_R_32F,
        };
        let (alpha, beta) = (g.alpha, g.beta);
        self.stream()?; // cuBLAS runs on it, with the context current
                        // SAFETY: every operand lies in its allocation (checked above); alpha and beta are host scalars.
        unsafe {
            blas::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(g.trans_a),
                op(g.trans_b),
                int(g.m)?,
                int(g.n)?,
                int(g.k)?,
                &alpha as *const f32 as *const c_void,
                pa as *const c_void,
                ty,
                int(g.lda)?,
                g.stride_a as i64,
                pb as *const c_void,
                ty,
                int(g.ldb)?,
                g.stride_b as i64,
                &beta as *const f32 as *const c_void,
                pc as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_32F,
                int(g.ldc)?,
                g.stride_c as i64,
                int(g.batch)?,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(driver("cuBLAS GEMM"))
    }
}
