//! Packed weight formats and bit accounting.
//!
//! **Packed ternary (TQ2-style).** The row-major elements of a matrix are cut
//! into blocks of 256 (the last one zero-padded). A block is 64 bytes: byte `j`
//! holds elements `j`, `j+64`, `j+128`, `j+192` in bits 0–1, 2–3, 4–5, 6–7, each as
//! the code `q + 1 ∈ {0, 1, 2}` (3 is invalid). Striding by 64 lets a SIMD
//! unpacker turn one load into four contiguous runs. Spectra uses one scale per
//! matrix, so a single f32 scale follows the blocks and unpacking is exact.
//!
//! **Group-wise k-bit.** For `W [out, in]` and group size `G` dividing `in`, each
//! run of `G` consecutive input weights of a row has the scale
//! `max|w| / (2^(k−1) − 1)` (f32; at least 1e-12) and codes `q + 2^(k−1) − 1` in
//! `k` bits, packed LSB-first into a byte stream in row-major order.
//!
//! Both mirror the in-graph fake quantisation of `lsc_frontend::modules::quant`
//! operation for operation, so the values they unpack to equal the forward
//! pass's weights bit for bit.

/// Elements per packed ternary block.
pub const TERNARY_BLOCK: usize = 256;

/// A ternary matrix in the TQ2-style layout.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedTernary {
    /// Logical shape.
    pub shape: Vec<usize>,
    /// The per-matrix scale `s`.
    pub scale: f32,
    /// `64 · ceil(n / 256)` bytes of 2-bit codes.
    pub codes: Vec<u8>,
}

impl PackedTernary {
    /// Storage in bits (codes plus the f32 scale).
    pub fn storage_bits(&self) -> usize {
        self.codes.len() * 8 + 32
    }
}

/// The ternarisation of the forward pass: `s = max(mean|W|, 1e-5)`,
/// `q = clamp(round_half_even(W/s), −1, 1)`. Returns `(q, s)`.
pub fn ternarize(w: &[f32]) -> (Vec<i8>, f32) {
    let mean = w.iter().map(|x| x.abs()).sum::<f32>() / w.len().max(1) as f32;
    let s = mean.max(1e-5);
    (w.iter().map(|&x| (x / s).round_ties_even().clamp(-1.0, 1.0) as i8).collect(), s)
}

/// Packs ternary codes `q ∈ {−1, 0, 1}` with scale `s`.
pub fn pack_ternary(q: &[i8], scale: f32, shape: &[usize]) -> Result<PackedTernary, String> {
    if q.len() != shape.iter().product::<usize>() {
        return Err(format!("{} codes do not fill shape {shape:?}", q.len()));
    }
    let blocks = q.len().div_ceil(TERNARY_BLOCK);
    let mut codes = vec![0u8; blocks * TERNARY_BLOCK / 4];
    for (i, &v) in q.iter().enumerate() {
        if !(-1..=1).contains(&v) {
            return Err(format!("element {i} is {v}, not in {{-1, 0, 1}}"));
        }
        let (block, r) = (i / TERNARY_BLOCK, i % TERNARY_BLOCK);
        codes[block * 64 + r % 64] |= ((v + 1) as u8) << (2 * (r / 64));
    }
    // Padding elements encode 0 (code 1) so a block decodes without a length check.
    for i in q.len()..blocks * TERNARY_BLOCK {
        let r = i % TERNARY_BLOCK;
        codes[(i / TERNARY_BLOCK) * 64 + r % 64] |= 1 << (2 * (r / 64));
    }
    Ok(PackedTernary { shape: shape.to_vec(), scale, codes })
}

/// Unpacks to the codes `q ∈ {−1, 0, 1}`; errors on an invalid code.
pub fn unpack_ternary_codes(p: &PackedTernary) -> Result<Vec<i8>, String> {
    let n: usize = p.shape.iter().product();
    if p.codes.len() != n.div_ceil(TERNARY_BLOCK) * 64 {
        return Err(format!("{} code bytes for {n} elements", p.codes.len()));
    }
    (0..n)
        .map(|i| {
            let r = i % TERNARY_BLOCK;
            match (p.codes[(i / TERNARY_BLOCK) * 64 + r % 64] >> (2 * (r / 64))) & 3 {
                3 => Err(format!("element {i} has the invalid code 3")),
                c => Ok(c as i8 - 1),
            }
        })
        .collect()
}

/// Unpacks to values `q · s`.
pub fn unpack_ternary(p: &PackedTernary) -> Result<Vec<f32>, String> {
    Ok(unpack_ternary_codes(p)?.into_iter().map(|q| q as f32 * p.scale).collect())
}

/// A group-wise k-bit matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedGroupwise {
    /// Bits per weight.
    pub bits: u32,
    /// Input features per scale.
    pub group: usize,
    /// `[out, in]`.
    pub shape: Vec<usize>,
    /// One scale per (row, group), row-major.
    pub scales: Vec<f32>,
    /// `ceil(out·in·bits / 8)` bytes.
    pub codes: Vec<u8>,
}

impl PackedGroupwise {
    /// Storage in bits (codes plus f32 scales).
    pub fn storage_bits(&self) -> usize {
        self.codes.len() * 8 + self.scales.len() * 32
    }
}

/// Quantises and packs `w [out, in]` exactly as the forward pass does.
pub fn quantize_groupwise(w: &[f32], shape: &[usize], bits: u32, group: usize) -> Result<PackedGroupwise, String> {
    let [out, inp] = shape else { return Err(format!("group-wise quantisation needs a matrix, got shape {shape:?}")) };
    if !(2..=8).contains(&bits) || group == 0 || !inp.is_multiple_of(group) || w.len() != out * inp {
        return Err(format!("bits {bits} / group {group} do not fit shape {shape:?}"));
    }
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let mut scales = Vec::with_capacity(w.len() / group);
    let mut codes = vec![0u8; (w.len() * bits as usize).div_ceil(8)];
    for (g, chunk) in w.chunks(group).enumerate() {
        let amax = chunk.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = (amax / qmax).max(1e-12);
        scales.push(scale);
        for (k, &x) in chunk.iter().enumerate() {
            let q = (x / scale).round_ties_even().clamp(-qmax, qmax);
            write_bits(&mut codes, (g * group + k) * bits as usize, bits, (q + qmax) as u32);
        }
    }
    Ok(PackedGroupwise { bits, group, shape: shape.to_vec(), scales, codes })
}

fn write_bits(buf: &mut [u8], at: usize, bits: u32, v: u32) {
    for b in 0..bits as usize {
        if (v >> b) & 1 == 1 {
            buf[(at + b) / 8] |= 1 << ((at + b) % 8);
        }
    }
}

fn read_bits(buf: &[u8], at: usize, bits: u32) -> u32 {
    (0..bits as usize).map(|b| (((buf[(at + b) / 8] >> ((at + b) % 8)) & 1) as u32) << b).sum()
}

/// Unpacks to values `q · scale`.
pub fn dequantize_groupwise(p: &PackedGroupwise) -> Result<Vec<f32>, String> {
    let n: usize = p.shape.iter().product();
    let qmax = ((1u32 << (p.bits - 1)) - 1) as f32;
    if p.scales.len() * p.group != n || p.codes.len() != (n * p.bits as usize).div_ceil(8) {
        return Err("scales or codes do not match the shape".into());
    }
    Ok((0..n)
        .map(|i| (read_bits(&p.codes, i * p.bits as usize, p.bits) as f32 - qmax) * p.scales[i / p.group])
        .collect())
}

/// Storage in bits of `n` weights packed in `quant`'s format (`None`: f32).
pub fn packed_bits(quant: lsc_frontend::modules::WeightQuant, n: usize) -> usize {
    use lsc_frontend::modules::WeightQuant as Q;
    match quant {
        Q::None => 32 * n,
        Q::Ternary => n.div_ceil(TERNARY_BLOCK) * 64 * 8 + 32,
        Q::Groupwise { bits, group } => (n * bits as usize).div_ceil(8) * 8 + n.div_ceil(group.max(1)) * 32,
    }
}

/// Bits per parameter of a whole model whose listed weights are stored packed.
#[derive(Clone, Debug, PartialEq)]
pub struct BitReport {
    /// Parameters in the model.
    pub parameters: usize,
    /// Parameters stored packed.
    pub packed_parameters: usize,
    /// Total storage in bits.
    pub total_bits: usize,
}

impl BitReport {
    /// Average bits per parameter.
    pub fn bits_per_parameter(&self) -> f64 {
        self.total_bits as f64 / self.parameters.max(1) as f64
    }
}

/// Storage of a model: `packed` maps parameter names to their packed size in bits;
/// every other parameter counts 32 bits per element.
pub fn bit_report(param_sizes: &[(String, usize)], packed: &std::collections::BTreeMap<String, usize>) -> BitReport {
    let mut r = BitReport { parameters: 0, packed_parameters: 0, total_bits: 0 };
    for (name, n) in param_sizes {
        r.parameters += n;
        match packed.get(name) {
            Some(bits) => {
                r.packed_parameters += n;
                r.total_bits += bits;
            }
            None => r.total_bits += 32 * n,
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternary_layout_is_strided_by_64() {
        let mut q = vec![0i8; 256];
        q[0] = 1;
        q[64] = -1;
        q[192] = 1;
        let p = pack_ternary(&q, 0.5, &[256]).unwrap();
        assert_eq!(p.codes.len(), 64);
        // byte 0: element 0 → 2, element 64 → 0, element 128 → 1, element 192 → 2.
        assert_eq!(p.codes[0], 2 | (1 << 4) | (2 << 6));
        assert_eq!(p.codes[1], 1 | (1 << 2) | (1 << 4) | (1 << 6));
        let mut bad = p.clone();
        bad.codes[0] |= 3;
        assert!(unpack_ternary(&bad).is_err());
    }

    #[test]
    fn bit_report_averages_over_all_parameters() {
        let sizes = vec![("a".to_string(), 100), ("b".to_string(), 300)];
        let packed = [("b".to_string(), 600)].into();
        let r = bit_report(&sizes, &packed);
        assert_eq!(r.total_bits, 3200 + 600);
        assert!((r.bits_per_parameter() - 9.5).abs() < 1e-12);
    }
}
