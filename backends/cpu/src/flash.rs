//! (LS-)attention as AVX-512 kernels with online softmax, forward and backward.
//!
//! Forward: for each group of [`ROWS`] query rows, the keys a row can see
//! (causal, and within its window for a local head) are visited in tiles of
//! up to [`TILE`]: the scaled logits of the tile stay in registers, the
//! running row max and sum are rescaled when the max grows, and the tile's
//! probabilities times `v` are added to the output accumulators. No logit or
//! probability matrix is written to memory, and a local head only visits the
//! tiles of its window.
//!
//! Backward (recomputing the probabilities): per group of query rows, one
//! sweep finds each row's log-sum-exp and a second accumulates
//! `dq = scale · dS · k` with `dS = P ⊙ (dO·vᵀ − rowsum(dO ⊙ O))`; then per
//! group of key rows, a sweep over the queries that see them accumulates
//! `dv = Pᵀ · dO` and `dk = scale · dSᵀ · q`. Each output row is written by
//! one task, so the passes run in parallel without atomics.
//!
//! Logits are broadcast-FMAs of one row's features against 16 columns of a
//! transposed operand (`kᵀ`, or `qᵀ` for the key pass). Head sizes 16, 32 and
//! 64 take these kernels on CPUs with AVX-512F; others use the blocked-GEMM
//! kernels in [`crate::attention`].

#![cfg(target_arch = "x86_64")]

use lsc_interp::kernels::first_key;
use std::arch::x86_64::*;

/// Rows per group (their accumulators stay in registers).
const ROWS: usize = 4;
/// Columns per tile (5 vectors of 16): a local head with a 64-key window sees
/// 67 keys per group of 4 rows, one tile.
const TILE: usize = 80;

/// Whether these kernels handle head size `d` on this CPU.
pub fn supported(d: usize) -> bool {
    matches!(d, 16 | 32 | 64) && std::arch::is_x86_feature_detected!("avx512f")
}

/// Columns `first..first + len` of a transposed `[d, ·]` matrix: feature `c`
/// of row `j` at `data[c·len + j − first]`.
#[derive(Clone, Copy)]
pub struct Transposed<'a> {
    /// `[d, len]` values.
    pub data: &'a [f32],
    /// The first row held.
    pub first: usize,
    /// Rows held.
    pub len: usize,
}

impl<'a> Transposed<'a> {
    /// All `len` rows of `data`.
    pub fn whole(data: &'a [f32], len: usize) -> Self {
        Transposed { data, first: 0, len }
    }
}

/// `kᵀ [d, t]` of keys `k [t, d]` (`d` a multiple of 16): 16×16 blocks
/// transposed in registers, the last `t mod 16` keys one by one.
///
/// # Safety
/// The CPU must have AVX-512F; `k` must hold `t·d` values.
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose(k: &[f32], t: usize, d: usize) -> Vec<f32> {
    let mut kt: Vec<f32> = Vec::with_capacity(t * d);
    let out = kt.spare_capacity_mut().as_mut_ptr() as *mut f32;
    let full = t / 16 * 16;
    for j0 in (0..full).step_by(16) {
        for c0 in (0..d).step_by(16) {
            let rows: [__m512; 16] = std::array::from_fn(|r| _mm512_loadu_ps(k.as_ptr().add((j0 + r) * d + c0)));
            for (c, col) in transpose16(rows).iter().enumerate() {
                _mm512_storeu_ps(out.add((c0 + c) * t + j0), *col);
            }
        }
    }
    for j in full..t {
        for c in 0..d {
            *out.add(c * t + j) = k[j * d + c];
        }
    }
    // Every one of the t·d entries was written above.
    kt.set_len(t * d);
    kt
}

/// The transpose of a 16×16 block held as 16 rows: 32-bit, then 64-bit
/// interleaves within 128-bit lanes, then two rounds of lane shuffles.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved (a0 b0 a1 b1 | a2 b2 a3 b3 per lane).
    let t: [__m512; 16] = std::array::from_fn(|x| {
        let (a, b) = (r[x & !1], r[x | 1]);
        if x % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4i + k]: column 4L + k of rows 4i..4i+4, in lane L.
    let pd = _mm512_castps_pd;
    let u: [__m512; 16] = std::array::from_fn(|x| {
        let (i, k) = (x / 4, x % 4);
        let (lo, hi) = (t[4 * i + k / 2], t[4 * i + 2 + k / 2]);
        _mm512_castpd_ps(if k % 2 == 0 {
            _mm512_unpacklo_pd(pd(lo), pd(hi))
        } else {
            _mm512_unpackhi_pd(pd(lo), pd(hi))
        })
    });
    let mut out = [_mm512_setzero_ps(); 16];
    for k in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[k], u[4 + k]);
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + k], u[12 + k]);
        out[k] = _mm512_shuffle_f32x4::<0x88>(v0, w0);
        out[8 + k] = _mm512_shuffle_f32x4::<0xDD>(v0, w0);
        out[4 + k] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
        out[12 + k] = _mm512_shuffle_f32x4::<0xDD>(v1, w1);
    }
    out
}

/// `e^x` on 16 lanes: Cody–Waite reduction, a degree-7 polynomial and
/// `scalef` for 2^k (which handles underflow to subnormals and 0). NaN stays NaN.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp16(x: __m512) -> __m512 {
    // max/min return their second operand when either is NaN: x keeps a NaN.
    let x = _mm512_min_ps(_mm512_set1_ps(88.7), _mm512_max_ps(_mm512_set1_ps(-104.0), x));
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, k)
}

/// Lanes `lo..hi` (clamped to 0..16) set.
fn lanes(lo: isize, hi: isize) -> __mmask16 {
    let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
    if hi <= lo {
        0
    } else {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
    }
}

/// The keys `j..j+16` query `i` sees.
fn keys_seen(i: usize, w: usize, j: usize) -> __mmask16 {
    lanes(first_key(i, w) as isize - j as isize, i as isize + 1 - j as isize)
}

/// The queries `i..i+16` that see key `j`: `i ≥ j`, and `i < j + w` for a local head.
fn queries_seeing(j: usize, w: usize, i: usize) -> __mmask16 {
    let end = if w == 0 { isize::MAX / 2 } else { (j + w) as isize };
    lanes(j as isize - i as isize, end - i as isize)
}

/// The chunks of 16 columns a tile of `width` loads (zeros past its end).
fn live<const CH: usize>(width: usize) -> [__mmask16; CH] {
    std::array::from_fn(|ch| lanes(0, width as isize - (ch * 16) as isize))
}

/// A group's rows of one operand (each row's `d ≤ 64` features times a factor).
type RowValues = [[f32; 64]; ROWS];

/// Rows `index` of `m [·, d]`, times `factor`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_rows<const DV: usize>(m: &[f32], index: &[usize; ROWS], factor: f32) -> RowValues {
    let (d, f) = (DV * 16, _mm512_set1_ps(factor));
    let mut out = [[0f32; 64]; ROWS];
    for (row, &i) in out.iter_mut().zip(index) {
        for x in 0..DV {
            let v = _mm512_mul_ps(_mm512_loadu_ps(m.as_ptr().add(i * d + 16 * x)), f);
            _mm512_storeu_ps(row.as_mut_ptr().add(16 * x), v);
        }
    }
    out
}

/// `s[r][ch]` = row `r` of `rows` times columns `j0 + 16·ch ..` of `mt`
/// (zero past `width`): for each feature, one broadcast and `CH` FMAs per row.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dots<const CH: usize>(
    rows: &RowValues,
    d: usize,
    mt: Transposed,
    j0: usize,
    width: usize,
) -> [[__m512; CH]; ROWS] {
    let live = live::<CH>(width);
    let mut s = [[_mm512_setzero_ps(); CH]; ROWS];
    for c in 0..d {
        let col = mt.data.as_ptr().add(c * mt.len + j0 - mt.first);
        let m: [__m512; CH] = std::array::from_fn(|ch| _mm512_maskz_loadu_ps(live[ch], col.add(ch * 16)));
        for (sr, row) in s.iter_mut().zip(rows) {
            let x = _mm512_set1_ps(row[c]);
            for (a, y) in sr.iter_mut().zip(&m) {
                *a = _mm512_fmadd_ps(x, *y, *a);
            }
        }
    }
    s
}

/// Weights of a tile, `ROWS × TILE`; only the first `16·CH` of each row are
/// written (and read).
type TileWeights = std::mem::MaybeUninit<[[f32; TILE]; ROWS]>;

/// `acc[r] += Σ_{jj < width} w[r][jj] · m[j0 + jj]` for `m [·, DV·16]`.
///
/// # Safety
/// `w`'s rows must hold `width` written values.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate<const DV: usize>(
    acc: &mut [[__m512; DV]; ROWS],
    w: &TileWeights,
    m: &[f32],
    j0: usize,
    width: usize,
) {
    let (d, wp) = (DV * 16, w.as_ptr() as *const f32);
    for jj in 0..width {
        let mj = m.as_ptr().add((j0 + jj) * d);
        let mv: [__m512; DV] = std::array::from_fn(|x| _mm512_loadu_ps(mj.add(16 * x)));
        for (r, ar) in acc.iter_mut().enumerate() {
            let wj = _mm512_set1_ps(*wp.add(r * TILE + jj));
            for (a, y) in ar.iter_mut().zip(&mv) {
                *a = _mm512_fmadd_ps(wj, *y, *a);
            }
        }
    }
}

/// Stores `v` as chunk `ch` of row `r` of `w`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn put(w: &mut TileWeights, r: usize, ch: usize, v: __m512) {
    _mm512_storeu_ps((w.as_mut_ptr() as *mut f32).add(r * TILE + ch * 16), v);
}

/// Calls `$f::<DV, CH>(args)` with `CH` the chunks of 16 a tile of `$width` needs.
macro_rules! by_chunks {
    ($width:expr, $f:ident::<$dv:ident>($($a:expr),*)) => {
        match ($width).div_ceil(16) {
            1 => $f::<$dv, 1>($($a),*),
            2 => $f::<$dv, 2>($($a),*),
            3 => $f::<$dv, 3>($($a),*),
            4 => $f::<$dv, 4>($($a),*),
            _ => $f::<$dv, 5>($($a),*),
        }
    };
}

/// The groups `(first row, rows)` that cover rows `i0..i1`, [`ROWS`] at a time.
fn groups(i0: usize, i1: usize) -> impl Iterator<Item = (usize, usize)> {
    (i0..i1).step_by(ROWS).map(move |r0| (r0, (i1 - r0).min(ROWS)))
}

/// The group of rows starting at `r0` (`rows ≤ ROWS` real ones; the rest
/// repeat the last, so the loops need no row masks).
fn group_rows(r0: usize, rows: usize) -> [usize; ROWS] {
    std::array::from_fn(|r| r0 + r.min(rows - 1))
}

/// Stores `acc[r] · factor[r]` as row `r` of `out [·, DV·16]` for the real rows.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_rows<const DV: usize>(acc: &[[__m512; DV]; ROWS], factor: [f32; ROWS], rows: usize, out: &mut [f32]) {
    for (r, ar) in acc.iter().enumerate().take(rows) {
        for (x, a) in ar.iter().enumerate() {
            let v = _mm512_mul_ps(*a, _mm512_set1_ps(factor[r]));
            _mm512_storeu_ps(out.as_mut_ptr().add(r * DV * 16 + 16 * x), v);
        }
    }
}

/// Running softmax state of a group: per row the max, and the sum as 16 lanes.
struct Softmax {
    m: [f32; ROWS],
    l: [__m512; ROWS],
}

impl Softmax {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn new() -> Self {
        Softmax { m: [f32::NEG_INFINITY; ROWS], l: [_mm512_setzero_ps(); ROWS] }
    }

    /// Adds a tile of logits (`−∞` where not visible) to row `r`; returns the
    /// factor that rescales what was accumulated before (1 if the max held),
    /// and writes the tile's `e^(s − max)` into `w`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add<const CH: usize>(&mut self, r: usize, s: &[__m512; CH], w: &mut TileWeights) -> f32 {
        let mut mx = s[0];
        for x in &s[1..] {
            mx = _mm512_max_ps(mx, *x);
        }
        let tile_max = _mm512_reduce_max_ps(mx);
        let mut alpha = 1.0;
        if tile_max > self.m[r] {
            let old = self.m[r];
            alpha = if old == f32::NEG_INFINITY { 0.0 } else { (old - tile_max).exp() };
            self.l[r] = _mm512_mul_ps(self.l[r], _mm512_set1_ps(alpha));
            self.m[r] = tile_max;
        }
        // No visible key yet: nothing to add (and −∞ − −∞ would be NaN).
        let mv = _mm512_set1_ps(self.m[r]);
        for (ch, x) in s.iter().enumerate() {
            let e = if self.m[r] == f32::NEG_INFINITY { _mm512_setzero_ps() } else { exp16(_mm512_sub_ps(*x, mv)) };
            self.l[r] = _mm512_add_ps(self.l[r], e);
            put(w, r, ch, e);
        }
        alpha
    }

    /// Row `r`'s sum.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum(&self, r: usize) -> f32 {
        _mm512_reduce_add_ps(self.l[r])
    }
}

/// Masks the tile's logits of the rows `index` to `−∞` where `seen(row, column)` is false.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn mask<const CH: usize>(
    s: &mut [[__m512; CH]; ROWS],
    index: &[usize; ROWS],
    j0: usize,
    width: usize,
    seen: impl Fn(usize, usize) -> __mmask16,
) {
    let live = live::<CH>(width);
    for (sr, &i) in s.iter_mut().zip(index) {
        for (ch, a) in sr.iter_mut().enumerate() {
            *a = _mm512_mask_mov_ps(_mm512_set1_ps(f32::NEG_INFINITY), seen(i, j0 + ch * 16) & live[ch], *a);
        }
    }
}

// ---------------------------------------------------------------- forward

/// One head's attention rows `i0..i1`: `out [i1−i0, d]` and each row's largest
/// scaled logit. `q, v` are the head's `[T, d]` rows, `kt` must hold every key
/// the rows see, `window` is 0 for a global head.
///
/// # Safety
/// The CPU must have AVX-512F and `d` must be [`supported`]; `q` and `v` must
/// hold `T·d` values, `out` `(i1−i0)·d` and `row_max` `i1−i0`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn forward(
    q: &[f32],
    kt: Transposed,
    v: &[f32],
    d: usize,
    window: usize,
    scale: f32,
    (i0, i1): (usize, usize),
    out: &mut [f32],
    row_max: &mut [f32],
) {
    for (r0, rows) in groups(i0, i1) {
        let o = &mut out[(r0 - i0) * d..(r0 - i0 + rows) * d];
        let m = &mut row_max[r0 - i0..r0 - i0 + rows];
        match d {
            16 => forward_group::<1>(q, kt, v, window, scale, (r0, rows), o, m),
            32 => forward_group::<2>(q, kt, v, window, scale, (r0, rows), o, m),
            _ => forward_group::<4>(q, kt, v, window, scale, (r0, rows), o, m),
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn forward_group<const DV: usize>(
    q: &[f32],
    kt: Transposed,
    v: &[f32],
    window: usize,
    scale: f32,
    (r0, rows): (usize, usize),
    out: &mut [f32],
    row_max: &mut [f32],
) {
    let index = group_rows(r0, rows);
    let qs = load_rows::<DV>(q, &index, scale);
    let mut o = [[_mm512_setzero_ps(); DV]; ROWS];
    let mut sm = Softmax::new();
    let (lo, hi) = (first_key(r0, window), index[ROWS - 1] + 1);
    let mut j0 = lo;
    while j0 < hi {
        let width = (hi - j0).min(TILE);
        by_chunks!(width, forward_tile::<DV>(&qs, kt, v, window, &index, j0, width, &mut o, &mut sm));
        j0 += width;
    }
    let inv: [f32; ROWS] = std::array::from_fn(|r| 1.0 / sm.sum(r));
    store_rows(&o, inv, rows, out);
    row_max[..rows].copy_from_slice(&sm.m[..rows]);
}

/// Keys `j0..j0+width` (`width ≤ 16·CH`) for every row of the group.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn forward_tile<const DV: usize, const CH: usize>(
    qs: &RowValues,
    kt: Transposed,
    v: &[f32],
    window: usize,
    index: &[usize; ROWS],
    j0: usize,
    width: usize,
    o: &mut [[__m512; DV]; ROWS],
    sm: &mut Softmax,
) {
    let mut s = dots::<CH>(qs, DV * 16, kt, j0, width);
    mask(&mut s, index, j0, width, |i, j| keys_seen(i, window, j));
    let mut p = TileWeights::uninit();
    for (r, sr) in s.iter().enumerate() {
        let alpha = sm.add(r, sr, &mut p);
        if alpha != 1.0 {
            for x in o[r].iter_mut() {
                *x = _mm512_mul_ps(*x, _mm512_set1_ps(alpha));
            }
        }
    }
    accumulate(o, &p, v, j0, width);
}

// ---------------------------------------------------------------- backward

/// One head's operands for the backward: `[T, d]` rows of `q, k, v`, the
/// forward output `o` and its cotangent `g`, and the transposes the passes read.
pub struct Head<'a> {
    /// Queries.
    pub q: &'a [f32],
    /// Keys.
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// The forward output.
    pub o: &'a [f32],
    /// Its cotangent.
    pub g: &'a [f32],
    /// `qᵀ`.
    pub qt: Transposed<'a>,
    /// `kᵀ`.
    pub kt: Transposed<'a>,
    /// `vᵀ`.
    pub vt: Transposed<'a>,
    /// `gᵀ`.
    pub gt: Transposed<'a>,
    /// Rows.
    pub t: usize,
    /// Head size.
    pub d: usize,
    /// 0 for a global head.
    pub window: usize,
    /// Logit scale.
    pub scale: f32,
}

/// Query pass: `dq` of rows `i0..i1`, and each row's log-sum-exp and
/// `rowsum(g ⊙ o)` for the key pass.
///
/// # Safety
/// The CPU must have AVX-512F and `h.d` must be [`supported`]; `dq` must hold
/// `(i1−i0)·d` values, `lse` and `delta` `i1−i0`.
#[target_feature(enable = "avx512f")]
pub unsafe fn backward_queries(h: &Head, (i0, i1): (usize, usize), dq: &mut [f32], lse: &mut [f32], delta: &mut [f32]) {
    let d = h.d;
    for (r0, rows) in groups(i0, i1) {
        let (a, b) = (r0 - i0, r0 - i0 + rows);
        let outs = (&mut dq[a * d..b * d], &mut lse[a..b], &mut delta[a..b]);
        match d {
            16 => query_group::<1>(h, (r0, rows), outs),
            32 => query_group::<2>(h, (r0, rows), outs),
            _ => query_group::<4>(h, (r0, rows), outs),
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn query_group<const DV: usize>(
    h: &Head,
    (r0, rows): (usize, usize),
    (dq, lse_out, delta_out): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let d = DV * 16;
    let index = group_rows(r0, rows);
    let qs = load_rows::<DV>(h.q, &index, h.scale);
    let gs = load_rows::<DV>(h.g, &index, 1.0);
    let (lo, hi) = (first_key(r0, h.window), index[ROWS - 1] + 1);
    // Sweep 1: each row's log-sum-exp.
    let mut sm = Softmax::new();
    let mut j0 = lo;
    while j0 < hi {
        let width = (hi - j0).min(TILE);
        by_chunks!(width, lse_tile::<DV>(h, &qs, &index, j0, width, &mut sm));
        j0 += width;
    }
    let lse: [f32; ROWS] = std::array::from_fn(|r| sm.m[r] + sm.sum(r).ln());
    let delta: [f32; ROWS] = std::array::from_fn(|r| {
        let at = index[r] * d;
        let mut acc = _mm512_setzero_ps();
        for x in 0..DV {
            let gv = _mm512_loadu_ps(h.g.as_ptr().add(at + 16 * x));
            acc = _mm512_fmadd_ps(gv, _mm512_loadu_ps(h.o.as_ptr().add(at + 16 * x)), acc);
        }
        _mm512_reduce_add_ps(acc)
    });
    // Sweep 2: dq = scale · dS · k.
    let mut acc = [[_mm512_setzero_ps(); DV]; ROWS];
    let mut j0 = lo;
    while j0 < hi {
        let width = (hi - j0).min(TILE);
        by_chunks!(width, dq_tile::<DV>(h, (&qs, &gs), &index, (&lse, &delta), j0, width, &mut acc));
        j0 += width;
    }
    store_rows(&acc, [h.scale; ROWS], rows, dq);
    lse_out.copy_from_slice(&lse[..rows]);
    delta_out.copy_from_slice(&delta[..rows]);
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn lse_tile<const DV: usize, const CH: usize>(
    h: &Head,
    qs: &RowValues,
    index: &[usize; ROWS],
    j0: usize,
    width: usize,
    sm: &mut Softmax,
) {
    let mut s = dots::<CH>(qs, DV * 16, h.kt, j0, width);
    mask(&mut s, index, j0, width, |i, j| keys_seen(i, h.window, j));
    let mut scratch = TileWeights::uninit();
    for (r, sr) in s.iter().enumerate() {
        sm.add(r, sr, &mut scratch);
    }
}

/// `dS = P ⊙ (g·vᵀ − delta)` over keys `j0..j0+width`, then `acc += dS · k`.
#[allow(clippy::type_complexity)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dq_tile<const DV: usize, const CH: usize>(
    h: &Head,
    (qs, gs): (&RowValues, &RowValues),
    index: &[usize; ROWS],
    (lse, delta): (&[f32; ROWS], &[f32; ROWS]),
    j0: usize,
    width: usize,
    acc: &mut [[__m512; DV]; ROWS],
) {
    let d = DV * 16;
    let mut s = dots::<CH>(qs, d, h.kt, j0, width);
    mask(&mut s, index, j0, width, |i, j| keys_seen(i, h.window, j));
    let dp = dots::<CH>(gs, d, h.vt, j0, width);
    let mut ds = TileWeights::uninit();
    for r in 0..ROWS {
        let (l, dl) = (_mm512_set1_ps(lse[r]), _mm512_set1_ps(delta[r]));
        for ch in 0..CH {
            let p = exp16(_mm512_sub_ps(s[r][ch], l));
            put(&mut ds, r, ch, _mm512_mul_ps(p, _mm512_sub_ps(dp[r][ch], dl)));
        }
    }
    accumulate(acc, &ds, h.k, j0, width);
}

/// Key pass: `dk` and `dv` of key rows `j0..j1`, from the query pass's
/// `lse` and `delta` of every row of the head.
///
/// # Safety
/// The CPU must have AVX-512F and `h.d` must be [`supported`]; `lse` and
/// `delta` must hold `T` values, `dk` and `dv` `(j1−j0)·d`.
#[target_feature(enable = "avx512f")]
pub unsafe fn backward_keys(
    h: &Head,
    (j0, j1): (usize, usize),
    (lse, delta): (&[f32], &[f32]),
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let d = h.d;
    for (r0, rows) in groups(j0, j1) {
        let (a, b) = (r0 - j0, r0 - j0 + rows);
        let outs = (&mut dk[a * d..b * d], &mut dv[a * d..b * d]);
        match d {
            16 => key_group::<1>(h, (r0, rows), (lse, delta), outs),
            32 => key_group::<2>(h, (r0, rows), (lse, delta), outs),
            _ => key_group::<4>(h, (r0, rows), (lse, delta), outs),
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn key_group<const DV: usize>(
    h: &Head,
    (r0, rows): (usize, usize),
    stats: (&[f32], &[f32]),
    (dk, dv): (&mut [f32], &mut [f32]),
) {
    let index = group_rows(r0, rows);
    let ks = load_rows::<DV>(h.k, &index, h.scale);
    let vs = load_rows::<DV>(h.v, &index, 1.0);
    let last = index[ROWS - 1];
    let (lo, hi) = (r0, if h.window == 0 { h.t } else { (last + h.window).min(h.t) });
    let mut acc_k = [[_mm512_setzero_ps(); DV]; ROWS];
    let mut acc_v = [[_mm512_setzero_ps(); DV]; ROWS];
    let mut i0 = lo;
    while i0 < hi {
        let width = (hi - i0).min(TILE);
        by_chunks!(width, kv_tile::<DV>(h, (&ks, &vs), &index, stats, i0, width, (&mut acc_k, &mut acc_v)));
        i0 += width;
    }
    store_rows(&acc_k, [h.scale; ROWS], rows, dk);
    store_rows(&acc_v, [1.0; ROWS], rows, dv);
}

/// Over queries `i0..i0+width`: `P` and `dS` of the group's keys, then
/// `dv += Pᵀ · g` and `dk += dSᵀ · q`.
#[allow(clippy::type_complexity)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn kv_tile<const DV: usize, const CH: usize>(
    h: &Head,
    (ks, vs): (&RowValues, &RowValues),
    index: &[usize; ROWS],
    (lse, delta): (&[f32], &[f32]),
    i0: usize,
    width: usize,
    (acc_k, acc_v): (&mut [[__m512; DV]; ROWS], &mut [[__m512; DV]; ROWS]),
) {
    let d = DV * 16;
    let live = live::<CH>(width);
    let mut s = dots::<CH>(ks, d, h.qt, i0, width);
    mask(&mut s, index, i0, width, |j, i| queries_seeing(j, h.window, i));
    let dp = dots::<CH>(vs, d, h.gt, i0, width);
    let (mut p, mut ds) = (TileWeights::uninit(), TileWeights::uninit());
    for (ch, lv) in live.iter().enumerate() {
        let at = i0 + ch * 16;
        let l = _mm512_maskz_loadu_ps(*lv, lse.as_ptr().add(at));
        let dl = _mm512_maskz_loadu_ps(*lv, delta.as_ptr().add(at));
        for r in 0..ROWS {
            let pr = exp16(_mm512_sub_ps(s[r][ch], l));
            put(&mut p, r, ch, pr);
            put(&mut ds, r, ch, _mm512_mul_ps(pr, _mm512_sub_ps(dp[r][ch], dl)));
        }
    }
    accumulate(acc_v, &p, h.g, i0, width);
    accumulate(acc_k, &ds, h.q, i0, width);
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_matches_the_definition() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for (t, d) in [(1, 16), (16, 16), (37, 32), (64, 64)] {
            let k: Vec<f32> = (0..t * d).map(|i| i as f32).collect();
            // SAFETY: the CPU has AVX-512F (checked above).
            let kt = unsafe { super::transpose(&k, t, d) };
            for j in 0..t {
                for c in 0..d {
                    assert_eq!(kt[c * t + j], k[j * d + c], "t {t}, d {d}, key {j}, feature {c}");
                }
            }
        }
    }
}
