//! The (LS-)attention forward as one AVX-512 kernel with online softmax.
//!
//! For each group of [`ROWS`] query rows, the keys a row can see (causal, and
//! within its window for a local head) are visited in tiles of [`TILE`]: the
//! scaled logits of the tile stay in registers, the running row max and sum
//! are rescaled when the max grows, and the tile's probabilities times `v`
//! are added to the output accumulators. No logit or probability matrix is
//! written to memory, and a local head only visits the tiles of its window.
//! Keys are read transposed (`kᵀ`: once per global head, and per block of
//! rows, over its window only, for a local head), so a tile's logits are
//! broadcast-FMAs of `q` against 16 keys at a time.
//!
//! Head sizes 16, 32 and 64 take this path on CPUs with AVX-512F; others use
//! the blocked-GEMM kernel in [`crate::attention`].

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Query rows per group (their accumulators stay in registers).
const ROWS: usize = 4;
/// Keys per tile (5 vectors of 16): a local head with a 64-key window sees
/// 67 keys per group of 4 rows, one tile.
const TILE: usize = 80;

/// Whether [`head`] handles head size `d` on this CPU.
pub fn supported(d: usize) -> bool {
    matches!(d, 16 | 32 | 64) && std::arch::is_x86_feature_detected!("avx512f")
}

/// Transposed keys `first..first + len` of a head: feature `c` of key `j` at
/// `data[c·len + j − first]`.
#[derive(Clone, Copy)]
pub struct KeysT<'a> {
    /// `[d, len]` values.
    pub data: &'a [f32],
    /// The first key held.
    pub first: usize,
    /// Keys held.
    pub len: usize,
}

/// One head's attention rows `i0..i1`: `out [i1−i0, d]` and each row's largest
/// scaled logit. `q, v` are the head's `[T, d]` rows, `kt` must hold every key
/// the rows see, `window` is 0 for a global head.
///
/// # Safety
/// The CPU must have AVX-512F and `d` must be [`supported`]; `q` and `v` must
/// hold `T·d` values, `out` `(i1−i0)·d` and `row_max` `i1−i0`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn head(
    q: &[f32],
    kt: KeysT,
    v: &[f32],
    d: usize,
    window: usize,
    scale: f32,
    (i0, i1): (usize, usize),
    out: &mut [f32],
    row_max: &mut [f32],
) {
    let mut r0 = i0;
    while r0 < i1 {
        let rows = (i1 - r0).min(ROWS);
        let o = &mut out[(r0 - i0) * d..(r0 - i0 + rows) * d];
        let m = &mut row_max[r0 - i0..r0 - i0 + rows];
        match d {
            16 => group::<1>(q, kt, v, window, scale, r0, rows, o, m),
            32 => group::<2>(q, kt, v, window, scale, r0, rows, o, m),
            _ => group::<4>(q, kt, v, window, scale, r0, rows, o, m),
        }
        r0 += rows;
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
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
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

/// The first key row `i` sees (`w = 0`: global).
fn first_key(i: usize, w: usize) -> usize {
    if w == 0 {
        0
    } else {
        (i + 1).saturating_sub(w)
    }
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

/// One group's inputs: the head's tensors and the group's rows.
struct Rows<'a> {
    kt: KeysT<'a>,
    v: &'a [f32],
    window: usize,
    /// The group's rows (rows past the real ones repeat the last).
    index: [usize; ROWS],
}

/// One group's running state: output accumulators, sums and maxima per row,
/// and the scaled query rows.
struct State<const DV: usize> {
    o: [[__m512; DV]; ROWS],
    l: [__m512; ROWS],
    m: [f32; ROWS],
    qs: [[f32; 64]; ROWS],
}

/// Query rows `r0..r0+rows` (`rows ≤ ROWS`) of a head with `DV·16` features.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn group<const DV: usize>(
    q: &[f32],
    kt: KeysT,
    v: &[f32],
    window: usize,
    scale: f32,
    r0: usize,
    rows: usize,
    out: &mut [f32],
    row_max: &mut [f32],
) {
    let d = DV * 16;
    // Rows past `rows` repeat the last row, so the loops need no row masks.
    let index: [usize; ROWS] = std::array::from_fn(|r| r0 + r.min(rows - 1));
    let g = Rows { kt, v, window, index };
    let mut st = State::<DV> {
        o: [[_mm512_setzero_ps(); DV]; ROWS],
        l: [_mm512_setzero_ps(); ROWS],
        m: [f32::NEG_INFINITY; ROWS],
        qs: [[0f32; 64]; ROWS],
    };
    let sv = _mm512_set1_ps(scale);
    for (qr, &i) in st.qs.iter_mut().zip(&index) {
        for x in 0..DV {
            let scaled = _mm512_mul_ps(_mm512_loadu_ps(q.as_ptr().add(i * d + 16 * x)), sv);
            _mm512_storeu_ps(qr.as_mut_ptr().add(16 * x), scaled);
        }
    }
    let (lo, hi) = (first_key(r0, window), index[ROWS - 1] + 1);
    let mut j0 = lo;
    while j0 < hi {
        let width = (hi - j0).min(TILE);
        // A partial tile computes only the 16-key chunks it needs.
        match width.div_ceil(16) {
            1 => tile::<DV, 1>(&g, &mut st, j0, width),
            2 => tile::<DV, 2>(&g, &mut st, j0, width),
            3 => tile::<DV, 3>(&g, &mut st, j0, width),
            4 => tile::<DV, 4>(&g, &mut st, j0, width),
            _ => tile::<DV, 5>(&g, &mut st, j0, width),
        }
        j0 += width;
    }
    for (ri, mx) in row_max.iter_mut().enumerate().take(rows) {
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(st.l[ri]));
        for (x, ov) in st.o[ri].iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(ri * d + 16 * x), _mm512_mul_ps(*ov, inv));
        }
        *mx = st.m[ri];
    }
}

/// Keys `j0..j0+width` (`width ≤ 16·CH`) for every row of the group.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const DV: usize, const CH: usize>(g: &Rows, st: &mut State<DV>, j0: usize, width: usize) {
    let d = DV * 16;
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    // Lanes past the tile's end load zeros, which the visibility mask then hides.
    let live: [u16; CH] = std::array::from_fn(|ch| lanes(0, width as isize - (ch * 16) as isize));
    // Scaled logits: broadcast q[r, c] times 16 keys of kᵀ row c, for every c.
    let mut s = [[_mm512_setzero_ps(); CH]; ROWS];
    for c in 0..d {
        let kc = g.kt.data.as_ptr().add(c * g.kt.len + j0 - g.kt.first);
        let kv: [__m512; CH] = std::array::from_fn(|ch| _mm512_maskz_loadu_ps(live[ch], kc.add(ch * 16)));
        for (sr, qr) in s.iter_mut().zip(&st.qs) {
            let qc = _mm512_set1_ps(qr[c]);
            for (a, x) in sr.iter_mut().zip(&kv) {
                *a = _mm512_fmadd_ps(qc, *x, *a);
            }
        }
    }
    // Probabilities of the tile; every read entry is written below.
    let mut p = std::mem::MaybeUninit::<[[f32; TILE]; ROWS]>::uninit();
    let pp = p.as_mut_ptr() as *mut f32;
    for (ri, sr) in s.iter_mut().enumerate() {
        let i = g.index[ri];
        let mut mx = neg_inf;
        for (ch, a) in sr.iter_mut().enumerate() {
            let j = (j0 + ch * 16) as isize;
            let visible = lanes(first_key(i, g.window) as isize - j, i as isize + 1 - j) & live[ch];
            *a = _mm512_mask_mov_ps(neg_inf, visible, *a);
            mx = _mm512_max_ps(mx, *a);
        }
        let tile_max = _mm512_reduce_max_ps(mx);
        // Rescale what was accumulated under the old max.
        if tile_max > st.m[ri] {
            let old = st.m[ri];
            let alpha = _mm512_set1_ps(if old == f32::NEG_INFINITY { 0.0 } else { (old - tile_max).exp() });
            st.l[ri] = _mm512_mul_ps(st.l[ri], alpha);
            for ov in st.o[ri].iter_mut() {
                *ov = _mm512_mul_ps(*ov, alpha);
            }
            st.m[ri] = tile_max;
        }
        let row_p = pp.add(ri * TILE);
        // No visible key yet: nothing to add (and −∞ − −∞ would be NaN).
        if st.m[ri] == f32::NEG_INFINITY {
            for ch in 0..CH {
                _mm512_storeu_ps(row_p.add(ch * 16), _mm512_setzero_ps());
            }
            continue;
        }
        let mv = _mm512_set1_ps(st.m[ri]);
        for (ch, a) in sr.iter().enumerate() {
            let e = exp16(_mm512_sub_ps(*a, mv));
            st.l[ri] = _mm512_add_ps(st.l[ri], e);
            _mm512_storeu_ps(row_p.add(ch * 16), e);
        }
    }

    // o += p · v over the tile's keys.
    for jj in 0..width {
        let vj = g.v.as_ptr().add((j0 + jj) * d);
        let vv: [__m512; DV] = std::array::from_fn(|x| _mm512_loadu_ps(vj.add(16 * x)));
        for (ri, or) in st.o.iter_mut().enumerate() {
            // Written above: jj < width ≤ 16·CH.
            let pj = _mm512_set1_ps(*pp.add(ri * TILE + jj));
            for (ov, x) in or.iter_mut().zip(&vv) {
                *ov = _mm512_fmadd_ps(pj, *x, *ov);
            }
        }
    }
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
