//! Row loops of the library kernels (softmax in attention, dot products of
//! matrix-vector products), written so the compiler vectorises them, and
//! compiled for AVX-512 when the CPU has it.

/// Lanes of the f32 path's partial maxima and sums.
const LANES: usize = 16;

/// `row ← softmax(row · scale)` in place; returns the largest scaled value.
/// NaN propagates to the whole row, as in the unfused graph.
pub fn scaled_softmax(row: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { scaled_softmax_avx512(row, scale) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { scaled_softmax_avx2(row, scale) };
    }
    scaled_softmax_f32(row, scale)
}

/// `out[j] = x · m[j·stride ..][..x.len()]` for every `j`: the rows of `m`
/// against one vector (a matrix-vector product over row-major rows).
pub fn dots(x: &[f32], m: &[f32], stride: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe { dots_avx512(x, m, stride, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { dots_avx2(x, m, stride, out) };
        return;
    }
    dots_f32(x, m, stride, out);
}

/// `out[r·n + j] = x_r · w[j·k ..][..k]` for the `m` rows `x_r` of `x` (`m·k`
/// values) against rows `j` of `w` (decoding's `x · Wᵀ`: the weights stream once).
pub fn row_dots(x: &[f32], m: usize, k: usize, w: &[f32], rows: std::ops::Range<usize>, out: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= rows.end * k && out.len() >= m * rows.len(), "row_dots out of bounds");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let width = rows.len();
        for r0 in (0..m).step_by(SHARED_ROWS) {
            let (x, out) = (&x[r0 * k..], &mut out[r0 * width..]);
            // SAFETY: the CPU has AVX2 and FMA; the slices cover the rows (asserted above).
            unsafe {
                match m - r0 {
                    1 => rows_avx2::<1>(x, k, w, rows.clone(), out),
                    2 => rows_avx2::<2>(x, k, w, rows.clone(), out),
                    3 => rows_avx2::<3>(x, k, w, rows.clone(), out),
                    _ => rows_avx2::<SHARED_ROWS>(x, k, w, rows.clone(), out),
                }
            }
        }
        return;
    }
    row_dots_f32(x, m, k, w, rows, out);
}

/// Rows of `x` that share each load of a row of `w` in [`row_dots`].
#[cfg(target_arch = "x86_64")]
const SHARED_ROWS: usize = 4;

/// `R` rows of `x` against rows `rows` of `w`: two 8-lane partial sums per
/// row of `x`, each load of `w` feeding `R` fused multiply-adds.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `x` holds `R·k` values, `w` the rows, `out` `R` rows of `rows.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const R: usize>(x: &[f32], k: usize, w: &[f32], rows: std::ops::Range<usize>, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let width = rows.len();
    let split = k - k % 16;
    let xp = x.as_ptr();
    for (c, j) in rows.enumerate() {
        let wp = w.as_ptr().add(j * k);
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        let mut p = 0;
        while p < split {
            let (w0, w1) = (_mm256_loadu_ps(wp.add(p)), _mm256_loadu_ps(wp.add(p + 8)));
            for i in 0..R {
                let xi = xp.add(i * k + p);
                lo[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xi), w0, lo[i]);
                hi[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xi.add(8)), w1, hi[i]);
            }
            p += 16;
        }
        for i in 0..R {
            let v = _mm256_add_ps(lo[i], hi[i]);
            let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            let mut sum = _mm_cvtss_f32(q);
            for t in split..k {
                sum += *xp.add(i * k + t) * *wp.add(t);
            }
            out[i * width + c] = sum;
        }
    }
}

/// [`row_dots`] for rows `rows` of `w`; `out` holds `rows.len()` values per
/// row of `x`, row-major. Each row of `w` is read from memory once and stays
/// in L1 while every row of `x` takes its dot product with it.
#[inline(always)]
fn row_dots_f32(x: &[f32], m: usize, k: usize, w: &[f32], rows: std::ops::Range<usize>, out: &mut [f32]) {
    let width = rows.len();
    for (c, j) in rows.enumerate() {
        let wj = &w[j * k..(j + 1) * k];
        for r in 0..m {
            out[r * width + c] = dot_f32(&x[r * k..(r + 1) * k], wj);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(x: &[f32], m: &[f32], stride: usize, out: &mut [f32]) {
    dots_f32(x, m, stride, out)
}

#[inline(always)]
fn dots_f32(x: &[f32], m: &[f32], stride: usize, out: &mut [f32]) {
    let k = x.len();
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_f32(x, &m[j * stride..j * stride + k]);
    }
}

#[inline(always)]
fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // Two vectors of partial sums, so consecutive adds do not wait on each other.
    let mut acc = [0f32; 2 * LANES];
    let n = x.len().min(y.len());
    let split = n - n % (2 * LANES);
    for (a, b) in x[..split].chunks_exact(2 * LANES).zip(y[..split].chunks_exact(2 * LANES)) {
        for l in 0..2 * LANES {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = x[split..n].iter().zip(&y[split..n]).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scaled_softmax_avx2(row: &mut [f32], scale: f32) -> f32 {
    scaled_softmax_f32(row, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(x: &[f32], m: &[f32], stride: usize, out: &mut [f32]) {
    dots_f32(x, m, stride, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scaled_softmax_avx512(row: &mut [f32], scale: f32) -> f32 {
    scaled_softmax_f32(row, scale)
}

#[inline(always)]
fn scaled_softmax_f32(row: &mut [f32], scale: f32) -> f32 {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            c[j] *= scale;
            // A NaN wins, so it reaches every output.
            mx[j] = if c[j] > mx[j] || c[j].is_nan() { c[j] } else { mx[j] };
        }
    }
    for x in chunks.into_remainder() {
        *x *= scale;
        mx[0] = if *x > mx[0] || x.is_nan() { *x } else { mx[0] };
    }
    let m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a || b.is_nan() { b } else { a });
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            c[j] = exp_f32(c[j] - m);
            sums[j] += c[j];
        }
    }
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - m);
        sums[0] += *x;
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    row.iter_mut().for_each(|x| *x *= inv);
    m
}

/// `e^x` for f32 without branches, so loops over it vectorise: Cody–Waite
/// reduction by ln 2, a degree-7 polynomial on |r| ≤ ln 2 / 2, and 2^k applied
/// in two halves so that results down to the smallest subnormal are exact in
/// their exponent. Within 2 ulp of the correctly rounded value; NaN stays NaN,
/// `−∞` gives 0 (below −103 the result is at most the smallest subnormal).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = if x < -103.0 { -103.0 } else { x };
    let x = if x > 88.7 { 88.7 } else { x };
    // Round to nearest by the 1.5·2^23 trick (|x·log2 e| < 2^22).
    let k = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = (x - k * 0.693_359_4) - k * -2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let ki = k as i32;
    let (k1, k2) = (ki >> 1, ki - (ki >> 1));
    p * f32::from_bits(((k1 + 127) as u32) << 23) * f32::from_bits(((k2 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_range_that_matters() {
        let mut worst = 0;
        let mut x = -103.0f32;
        while x < 88.0 {
            let want = (x as f64).exp() as f32;
            if want.is_normal() {
                worst = worst.max(ulps(exp_f32(x), want));
            }
            x += 0.000_37;
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(exp_f32(f32::NEG_INFINITY), exp_f32(-103.0));
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-44);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn row_dot_products_match_the_definition_at_odd_lengths() {
        for (k, rows, stride) in [(1, 3, 1), (31, 5, 33), (32, 2, 32), (100, 7, 101)] {
            let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
            let m: Vec<f32> = (0..rows * stride).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut out = vec![0f32; rows];
            dots(&x, &m, stride, &mut out);
            for (j, o) in out.iter().enumerate() {
                let want: f64 = (0..k).map(|i| x[i] as f64 * m[j * stride + i] as f64).sum();
                assert!((*o as f64 - want).abs() < 1e-4, "k {k}, row {j}: {o} vs {want}");
            }
        }
    }

    #[test]
    fn softmax_matches_the_f64_definition_and_propagates_nan() {
        for n in [1, 7, 16, 33, 100] {
            let row: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7).collect();
            let mut got = row.clone();
            let m = scaled_softmax(&mut got, 0.5f32);
            let scaled: Vec<f64> = row.iter().map(|&x| x as f64 * 0.5).collect();
            let mx = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scaled.iter().map(|x| (x - mx).exp()).sum();
            assert!((m as f64 - mx).abs() < 1e-6);
            for (g, s) in got.iter().zip(&scaled) {
                assert!((*g as f64 - (s - mx).exp() / z).abs() < 1e-6);
            }
        }
        let mut row = vec![1.0f32; 20];
        row[17] = f32::NAN;
        scaled_softmax(&mut row, 1.0f32);
        assert!(row.iter().all(|x| x.is_nan()));
    }
}
