//! The thin layer between the GPU target and a device: memory, copies,
//! kernel loading and launching, and the one library call (a cuBLAS GEMM).
//! Everything above it (where tensors live, which kernels run, how a
//! row-major product becomes a column-major call) is the same for the real
//! device ([`super::cuda`]) and the emulated one ([`super::emulated`]).

use lsc_kir::{Elem, Kernel};

/// A place in device memory: an allocation and a byte offset into it.
#[derive(Debug)]
pub struct Ptr<'a, B> {
    /// The allocation.
    pub buffer: &'a B,
    /// Bytes from its start.
    pub offset: u64,
}

impl<B> Clone for Ptr<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for Ptr<'_, B> {}

/// One call of cuBLAS's strided batched GEMM, in cuBLAS's own column-major
/// terms: for each of `batch` products, `C = alpha · op(A) · op(B) + beta · C`
/// with `C` `m × n` (leading dimension `ldc`), `op(A)` `m × k`, `op(B)` `k × n`;
/// a transposed operand is stored `k × m` (or `n × k`). Matrix `i` of an
/// operand starts `i · stride` elements after the first. Accumulation is f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Whether `A` is read transposed.
    pub trans_a: bool,
    /// Whether `B` is read transposed.
    pub trans_b: bool,
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// The reduced dimension.
    pub k: usize,
    /// Leading dimensions (elements between columns as stored).
    pub lda: usize,
    /// Of `B`.
    pub ldb: usize,
    /// Of `C`.
    pub ldc: usize,
    /// Elements between consecutive matrices of `A` (0: one `A` for every product).
    pub stride_a: u64,
    /// Of `B`.
    pub stride_b: u64,
    /// Of `C`.
    pub stride_c: u64,
    /// Products.
    pub batch: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of `C`'s previous contents (0: they are not read).
    pub beta: f32,
    /// Element type of `A` and `B` (f32 or bf16); `C` is f32.
    pub operands: Elem,
}

/// What a GPU target needs a device to do. Work is queued in order on one
/// stream: a launch or GEMM may return before it has run, and [`Device::read`]
/// waits for everything queued before it.
pub trait Device {
    /// One allocation of device memory.
    type Buffer;
    /// A kernel loaded for launching.
    type Function;

    /// A short description (`NVIDIA H200 (sm_90)`, `emulated`).
    fn name(&self) -> String;
    /// Bytes of device memory free now, where known.
    fn free_memory(&self) -> Option<u64> {
        None
    }
    /// `bytes` of zeroed memory.
    fn alloc(&self, bytes: u64) -> Result<Self::Buffer, String>;
    /// Copies `bytes` from the host to `to`.
    fn write(&self, to: Ptr<'_, Self::Buffer>, bytes: &[u8]) -> Result<(), String>;
    /// Copies `len` bytes from `from` to the host, after all queued work.
    fn read(&self, from: Ptr<'_, Self::Buffer>, len: u64) -> Result<Vec<u8>, String>;
    /// Copies `bytes` bytes within the device.
    fn copy(&self, from: Ptr<'_, Self::Buffer>, to: Ptr<'_, Self::Buffer>, bytes: u64) -> Result<(), String>;
    /// Loads GPU kernel `kernel` (one with a launch).
    fn load(&self, kernel: &Kernel) -> Result<Self::Function, String>;
    /// Launches `f` on its launch shape with `args`, one per kernel buffer in order.
    fn launch(&self, f: &Self::Function, args: &[Ptr<'_, Self::Buffer>]) -> Result<(), String>;
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<(), String>;
    /// Runs `g` on `a`, `b` and `c`.
    fn gemm(
        &self,
        g: &Gemm,
        a: Ptr<'_, Self::Buffer>,
        b: Ptr<'_, Self::Buffer>,
        c: Ptr<'_, Self::Buffer>,
    ) -> Result<(), String>;
}

impl Gemm {
    /// Elements of `A`, `B` and `C` the call touches, from each one's first.
    pub fn extents(&self) -> (u64, u64, u64) {
        let span = |stride: u64, rows: usize, cols: usize, ld: usize| {
            if rows * cols == 0 || self.batch == 0 {
                return 0;
            }
            (self.batch as u64 - 1) * stride + ((cols - 1) * ld + rows) as u64
        };
        let (ar, ac) = if self.trans_a { (self.k, self.m) } else { (self.m, self.k) };
        let (br, bc) = if self.trans_b { (self.n, self.k) } else { (self.k, self.n) };
        (
            span(self.stride_a, ar, ac, self.lda),
            span(self.stride_b, br, bc, self.ldb),
            span(self.stride_c, self.m, self.n, self.ldc),
        )
    }
}
