//! Single-precision GEMM for CPUs with AVX-512F: `C = A·B` on any strides.
//!
//! The classic packed scheme: for each block of `KC` columns of `A` (rows of
//! `B`), `A` is packed into panels of `MR` rows laid out column by column and
//! `B` into strips of `NR` columns laid out row by row, both zero-padded, so
//! that the micro-kernel reads both operands sequentially whatever the
//! caller's layout. The micro-kernel keeps a `14 × 32` tile of `C` in 28 zmm
//! registers and does 28 FMAs per step of `k` for 2 vector loads and 14
//! broadcasts — few enough loads that the FMA pipes, not the load ports, set
//! the pace (the `8 × 8` AVX2 kernels of generic libraries need more than two
//! loads a cycle to feed two FMAs).
//!
//! Work is split across threads in items of `GROUP` panels of `A` by a run
//! of `B`'s strips: all of them when there are enough panels to balance the
//! threads, fewer when `A` is short (a weight's gradient has `m` = 256).
//! Packing is parallel too.

#![cfg(target_arch = "x86_64")]

use crate::flash::transpose16;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of a micro-tile.
const MR: usize = 14;
/// Columns of a micro-tile (two vectors of 16).
const NR: usize = 32;
/// Most depth of one packed block: `k` is cut into equal blocks of at most
/// this many (a strip of `B`, `KC × NR`, is 128 KiB, in L2 with the panels of
/// `A`). Deep blocks keep a weight's gradient (`k` = B·T) to few passes over `C`;
/// 1024 measured 5–30% faster than 512 on the models' shapes and on 4096³.
const KC: usize = 1024;
/// Values of `B` packed at once (4 MiB, in L3).
const B_BLOCK: usize = 1 << 20;
/// Most rows of `A` packed at once (`MB × KC` values, 8 MiB); `m` is cut into
/// equal blocks of at most this many.
const MB: usize = (1 << 21) / KC;
/// Panels of `A` per parallel work item.
const GROUP: usize = 4;
/// Below this many multiply-adds the product runs on the calling thread.
const SERIAL_FLOPS: usize = 1 << 21;

/// Whether [`sgemm`] can run on this CPU.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// A strided matrix: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Strided<T> {
    /// The element `(0, 0)`.
    pub ptr: T,
    /// Row stride, in elements.
    pub rs: isize,
    /// Column stride, in elements.
    pub cs: isize,
}

impl<T: Copy> Strided<*const T> {
    /// The submatrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must lie inside the matrix.
    unsafe fn at(self, i: usize, j: usize) -> Self {
        Strided { ptr: self.ptr.offset(i as isize * self.rs + j as isize * self.cs), ..self }
    }
}

impl<T: Copy> Strided<*mut T> {
    /// The submatrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must lie inside the matrix.
    unsafe fn at(self, i: usize, j: usize) -> Self {
        Strided { ptr: self.ptr.offset(i as isize * self.rs + j as isize * self.cs), ..self }
    }
}

// SAFETY: the pointers are only dereferenced inside `sgemm`, whose caller
// guarantees they are valid, and threads write disjoint tiles of `C`.
unsafe impl<T> Send for Strided<T> {}
unsafe impl<T> Sync for Strided<T> {}

/// `C = A·B` for `A` `m × k`, `B` `k × n`, `C` `m × n` (`C` is overwritten).
///
/// # Safety
/// The CPU must have AVX-512F ([`available`]); the pointers and strides must
/// describe valid matrices, and `C` must not overlap `A` or `B`.
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: Strided<*const f32>,
    b: Strided<*const f32>,
    c: Strided<*mut f32>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside C.
                unsafe { *c.ptr.offset(i as isize * c.rs + j as isize * c.cs) = 0.0 };
            }
        }
        return;
    }
    // The packing buffers live as long as the thread, so that products do not
    // page-fault fresh allocations in; a product that starts on a thread whose
    // buffers are in use (work stolen while waiting) gets its own.
    thread_local! {
        static BUFFERS: RefCell<(AlignedBuf, AlignedBuf)> = RefCell::default();
    }
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => packed_product((m, k, n), (a, b, c), &mut buffers),
        Err(_) => packed_product((m, k, n), (a, b, c), &mut Default::default()),
    })
}

/// [`sgemm`] (for `k > 0`) with the given packing buffers for `A` and `B`.
unsafe fn packed_product(
    (m, k, n): (usize, usize, usize),
    (a, b, c): (Strided<*const f32>, Strided<*const f32>, Strided<*mut f32>),
    (a_pack, b_pack): &mut (AlignedBuf, AlignedBuf),
) {
    let parallel = m * n * k >= SERIAL_FLOPS && !crate::matmul::in_serial();
    let height = m.div_ceil(m.div_ceil(MB)).next_multiple_of(MR);
    for i0 in (0..m).step_by(height) {
        let mb = height.min(m - i0);
        let panels = mb.div_ceil(MR);
        let depth = k.div_ceil(k.div_ceil(KC)).next_multiple_of(16);
        for p0 in (0..k).step_by(depth) {
            let kc = depth.min(k - p0);
            let a_block = a.at(i0, p0);
            let a_panels = a_pack.take(panels * MR * kc);
            for_each_chunk(a_panels, MR * kc, parallel, |p, dst| {
                // SAFETY: AVX-512F is present; panel p's rows lie inside A.
                unsafe { pack_a(dst, a_block, (p * MR, MR.min(mb - p * MR)), kc) }
            });
            let width = (B_BLOCK / kc).next_multiple_of(NR);
            for j0 in (0..n).step_by(width) {
                let nc = width.min(n - j0);
                let strips = nc.div_ceil(NR);
                let b_block = b.at(p0, j0);
                let b_strips = b_pack.take(strips * NR * kc);
                for_each_chunk(b_strips, NR * kc, parallel, |s, dst| {
                    // SAFETY: AVX-512F is present; strip s's columns lie inside B.
                    unsafe { pack_b(dst, b_block, (s * NR, NR.min(nc - s * NR)), kc) }
                });
                // Work items are GROUP panels by a run of strips; the strips are
                // split only when there are too few groups to balance the threads.
                let groups = panels.div_ceil(GROUP);
                let runs = (4 * rayon::current_num_threads()).div_ceil(groups).clamp(1, strips);
                let run = strips.div_ceil(runs);
                let (c_block, a_panels, b_strips) = (c.at(i0, j0), &*a_panels, &*b_strips);
                let item = |index: usize| {
                    let (g, r) = (index % groups, index / groups);
                    for s in r * run..strips.min((r + 1) * run) {
                        let cols = NR.min(nc - s * NR);
                        for p in g * GROUP..panels.min((g + 1) * GROUP) {
                            // SAFETY: AVX-512F is present; the tile lies inside C and
                            // no other work item writes it.
                            unsafe {
                                micro_kernel(
                                    kc,
                                    &a_panels[p * MR * kc..][..MR * kc],
                                    &b_strips[s * NR * kc..][..NR * kc],
                                    c_block.at(p * MR, s * NR),
                                    (MR.min(mb - p * MR), cols),
                                    p0 > 0,
                                )
                            }
                        }
                    }
                };
                let items = groups * strips.div_ceil(run);
                if parallel {
                    (0..items).into_par_iter().for_each(item);
                } else {
                    (0..items).for_each(item);
                }
            }
        }
    }
}

/// Runs `f(index, chunk)` over `chunk`-sized pieces of `buf`, in parallel if asked.
fn for_each_chunk(buf: &mut [f32], chunk: usize, parallel: bool, f: impl Fn(usize, &mut [f32]) + Sync) {
    if parallel {
        buf.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        buf.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Packs rows `first .. first + rows` and columns `0..kc` of `a` into
/// `dst[p·MR + i]`, zero-padded to `MR` rows.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a(dst: &mut [f32], a: Strided<*const f32>, (first, rows): (usize, usize), kc: usize) {
    let a = a.at(first, 0);
    if a.cs == 1 {
        // Row-major: 16 columns of every row at once, transposed in registers.
        for p0 in (0..kc).step_by(16) {
            let width = 16.min(kc - p0);
            let mask = ((1u32 << width) - 1) as __mmask16;
            let block: [__m512; 16] = std::array::from_fn(|i| {
                if i < rows {
                    _mm512_maskz_loadu_ps(mask, a.ptr.offset(i as isize * a.rs + p0 as isize))
                } else {
                    _mm512_setzero_ps()
                }
            });
            for (c, col) in transpose16(block).iter().take(width).enumerate() {
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add((p0 + c) * MR), (1 << MR) - 1, *col);
            }
        }
    } else if a.rs == 1 {
        for p in 0..kc {
            let out = &mut dst[p * MR..p * MR + MR];
            out[..rows].copy_from_slice(std::slice::from_raw_parts(a.ptr.offset(p as isize * a.cs), rows));
            out[rows..].fill(0.0);
        }
    } else {
        for p in 0..kc {
            let out = &mut dst[p * MR..p * MR + MR];
            for (i, o) in out.iter_mut().enumerate() {
                *o = if i < rows { *a.ptr.offset(i as isize * a.rs + p as isize * a.cs) } else { 0.0 };
            }
        }
    }
}

/// Packs columns `first .. first + cols` and rows `0..kc` of `b` into
/// `dst[p·NR + j]`, zero-padded to `NR` columns.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(dst: &mut [f32], b: Strided<*const f32>, (first, cols): (usize, usize), kc: usize) {
    let b = b.at(0, first);
    if b.rs == 1 {
        // Column-major (a transposed weight): 16 rows of 16 columns at once,
        // transposed in registers.
        for half in 0..NR / 16 {
            for p0 in (0..kc).step_by(16) {
                let width = 16.min(kc - p0);
                let mask = ((1u32 << width) - 1) as __mmask16;
                let block: [__m512; 16] = std::array::from_fn(|j| {
                    let j = half * 16 + j;
                    if j < cols {
                        _mm512_maskz_loadu_ps(mask, b.ptr.offset(j as isize * b.cs + p0 as isize))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for (r, row) in transpose16(block).iter().take(width).enumerate() {
                    _mm512_storeu_ps(dst.as_mut_ptr().add((p0 + r) * NR + half * 16), *row);
                }
            }
        }
    } else if b.cs == 1 {
        // Row-major: each row of the strip is two (masked) vector copies.
        let [lo, hi] = column_masks(cols);
        for p in 0..kc {
            let (src, out) = (b.ptr.offset(p as isize * b.rs), dst.as_mut_ptr().add(p * NR));
            _mm512_storeu_ps(out, _mm512_maskz_loadu_ps(lo, src));
            // Wrapping: past a short row's end the pointer is never dereferenced (mask 0).
            _mm512_storeu_ps(out.add(16), _mm512_maskz_loadu_ps(hi, src.wrapping_add(16)));
        }
    } else {
        for p in 0..kc {
            let out = &mut dst[p * NR..p * NR + NR];
            for (j, o) in out.iter_mut().enumerate() {
                *o = if j < cols { *b.ptr.offset(p as isize * b.rs + j as isize * b.cs) } else { 0.0 };
            }
        }
    }
}

/// `C[..rows, ..cols] (+)= Ã·B̃` for one packed panel and strip.
#[target_feature(enable = "avx512f")]
unsafe fn micro_kernel(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: Strided<*mut f32>,
    (rows, cols): (usize, usize),
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        let ap = a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
    }
    if c.cs == 1 {
        let masks = column_masks(cols);
        for (i, row) in acc.iter().enumerate().take(rows) {
            let out = c.ptr.offset(i as isize * c.rs);
            for (h, &v) in row.iter().enumerate() {
                // Wrapping: past a short row's end the pointer is never dereferenced (mask 0).
                let dst = out.wrapping_add(16 * h);
                let v = if accumulate { _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[h], dst)) } else { v };
                _mm512_mask_storeu_ps(dst, masks[h], v);
            }
        }
    } else {
        let mut tile = [[0f32; NR]; MR];
        for (row, out) in acc.iter().zip(tile.iter_mut()) {
            _mm512_storeu_ps(out.as_mut_ptr(), row[0]);
            _mm512_storeu_ps(out.as_mut_ptr().add(16), row[1]);
        }
        for (i, row) in tile.iter().enumerate().take(rows) {
            for (j, &v) in row.iter().enumerate().take(cols) {
                let dst = c.ptr.offset(i as isize * c.rs + j as isize * c.cs);
                *dst = if accumulate { *dst + v } else { v };
            }
        }
    }
}

/// The lane masks of the two vectors of a row of `cols ≤ NR` columns.
fn column_masks(cols: usize) -> [__mmask16; 2] {
    [((1u32 << cols.min(16)) - 1) as __mmask16, ((1u32 << cols.saturating_sub(16)) - 1) as __mmask16]
}

/// A reusable buffer whose data starts on a 64-byte boundary, so that the
/// micro-kernel's vector loads never straddle cache lines.
#[derive(Default)]
struct AlignedBuf(Vec<f32>);

impl AlignedBuf {
    /// `len` values (whatever they were), 64-byte aligned.
    fn take(&mut self, len: usize) -> &mut [f32] {
        if self.0.len() < len + 16 {
            self.0.resize(len + 16, 0.0);
        }
        let skip = self.0.as_ptr().align_offset(64).min(16);
        &mut self.0[skip..skip + len]
    }
}
