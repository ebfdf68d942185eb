//! Tensors as bytes in device memory, laid out as the plan and the GPU
//! kernels expect (`lsc_passes::plan::storage_bytes`, [`crate::gpu::elem_of`]):
//! floats as f32, integers as i64, booleans as bytes, packed ternary matrices
//! as their two bit planes of 64-bit words, all little-endian.

use lsc_interp::ternary::TernaryPlanes;
use lsc_interp::{Buffer, Storage, Value};
use lsc_ir::DType;

/// The bytes of `value` stored as a tensor of `dtype` and `shape` (a float
/// value fills a ternary tensor by packing its signs, as on the host).
pub fn encode(value: &Value<f32>, dtype: DType, shape: &[usize]) -> Result<Vec<u8>, String> {
    if value.shape != shape {
        return Err(format!("a value of shape {:?} cannot fill a tensor of shape {shape:?}", value.shape));
    }
    Ok(match (&value.data, Storage::of(dtype)) {
        (Buffer::Float(v), Storage::Float) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        (Buffer::Int(v), Storage::Int) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        (Buffer::Bool(v), Storage::Bool) => v.iter().map(|&b| u8::from(b)).collect(),
        (Buffer::Ternary(p), Storage::Ternary) => words(p),
        (Buffer::Float(v), Storage::Ternary) => {
            let &[rows, cols] = shape else { return Err("a packed ternary tensor must be a matrix".into()) };
            let mut p = TernaryPlanes::zeros(rows, cols);
            p.as_mut().pack_from(v)?;
            words(&p)
        }
        _ => return Err(format!("a {} value cannot fill a {dtype} tensor", value.dtype)),
    })
}

fn words(p: &TernaryPlanes) -> Vec<u8> {
    p.as_ref().planes.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The value of a tensor of `dtype` and `shape` from its bytes.
pub fn decode(bytes: &[u8], dtype: DType, shape: &[usize]) -> Result<Value<f32>, String> {
    let mut v = Value::<f32>::zeros(dtype, shape.to_vec());
    let want = lsc_passes::plan::storage_bytes(dtype, shape) as usize;
    if bytes.len() != want {
        return Err(format!("{} bytes cannot hold a {dtype} tensor of shape {shape:?} ({want} bytes)", bytes.len()));
    }
    match &mut v.data {
        Buffer::Float(x) => x.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(o, b)| *o = f32::from_le_bytes(le(b))),
        Buffer::Int(x) => x.iter_mut().zip(bytes.chunks_exact(8)).for_each(|(o, b)| *o = i64::from_le_bytes(le(b))),
        Buffer::Bool(x) => x.iter_mut().zip(bytes).for_each(|(o, &b)| *o = b != 0),
        Buffer::Ternary(p) => {
            let mut planes = p.clone();
            let words = planes.as_mut().planes;
            words.iter_mut().zip(bytes.chunks_exact(8)).for_each(|(o, b)| *o = u64::from_le_bytes(le(b)));
            *p = planes;
        }
    }
    Ok(v)
}

/// A little-endian chunk as an array (the chunk has the array's length).
fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_storage_round_trips_through_its_bytes() {
        let cases = [
            Value::floats(vec![2, 3], vec![1.5, -2.0, 0.0, 3.25, f32::MIN_POSITIVE, -0.0]),
            Value::ints(vec![3], vec![i64::MIN, 7, -1]),
            Value { dtype: DType::Bool, shape: vec![2], data: Buffer::Bool(vec![true, false]) },
        ];
        for v in cases {
            let bytes = encode(&v, v.dtype, &v.shape).unwrap();
            assert_eq!(bytes.len() as u64, lsc_passes::plan::storage_bytes(v.dtype, &v.shape));
            assert_eq!(decode(&bytes, v.dtype, &v.shape).unwrap(), v);
        }
        let signs = Value::floats(vec![2, 70], (0..140).map(|i| [(-1.0), 0.0, 1.0][i % 3]).collect());
        let bytes = encode(&signs, DType::Ternary, &[2, 70]).unwrap();
        let back = decode(&bytes, DType::Ternary, &[2, 70]).unwrap();
        assert_eq!(encode(&back, DType::Ternary, &[2, 70]).unwrap(), bytes);
    }

    #[test]
    fn a_value_of_another_shape_or_kind_is_refused() {
        let v = Value::floats(vec![2], vec![1.0, 2.0]);
        assert!(encode(&v, DType::F32, &[3]).unwrap_err().contains("shape"));
        assert!(encode(&v, DType::I64, &[2]).unwrap_err().contains("cannot fill"));
        assert!(decode(&[0; 7], DType::F32, &[2]).unwrap_err().contains("7 bytes"));
    }
}
