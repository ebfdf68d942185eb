//! Packing and unpacking of the active rows of a `routed_call`.

use crate::math::Real;
use crate::value::{numel, Buffer, Value};

/// Packed rows are padded to a multiple of this, so that generated kernels,
/// which are compiled per shape, see few distinct row counts.
pub const ROW_QUANTUM: usize = 16;

/// Where each sequence's active rows go.
#[derive(Clone, Debug)]
pub struct ActiveRows {
    /// Per sequence, its active positions in order.
    positions: Vec<Vec<usize>>,
    /// Rows per sequence before packing (`T`).
    full: usize,
    /// Rows per sequence after packing (`N`); 0 when nothing is active.
    pub packed: usize,
}

impl ActiveRows {
    /// The active rows of a `bool[B, T]` mask.
    pub fn new<T: Real>(mask: &Value<T>) -> Result<ActiveRows, String> {
        let (Buffer::Bool(m), &[b, t]) = (&mask.data, &mask.shape[..]) else {
            return Err(format!("routed_call's mask must be bool[B, T], got {} {:?}", mask.dtype, mask.shape));
        };
        let positions: Vec<Vec<usize>> = (0..b).map(|i| (0..t).filter(|&j| m[i * t + j]).collect()).collect();
        let most = positions.iter().map(Vec::len).max().unwrap_or(0);
        let packed = if most == 0 { 0 } else { most.div_ceil(ROW_QUANTUM).saturating_mul(ROW_QUANTUM).min(t) };
        Ok(ActiveRows { positions, full: t, packed })
    }

    /// `x [B, T, ..]` → `[B, N, ..]`: the active rows in order, then zero (or `false`) rows.
    pub fn pack<T: Real>(&self, x: &Value<T>) -> Result<Value<T>, String> {
        self.check(x, self.full)?;
        Ok(self.moved(x, self.packed, true))
    }

    /// `y [B, N, ..]` → `[B, T, ..]`: row `k` of each sequence goes back to its
    /// position; inactive rows are zero (or `false`).
    pub fn unpack<T: Real>(&self, y: &Value<T>) -> Result<Value<T>, String> {
        self.check(y, self.packed)?;
        Ok(self.moved(y, self.full, false))
    }

    fn check<T: Real>(&self, x: &Value<T>, rows: usize) -> Result<(), String> {
        if x.shape.len() < 2 || x.shape[0] != self.positions.len() || x.shape[1] != rows {
            return Err(format!(
                "a routed value of shape {:?} should start with [{}, {rows}]",
                x.shape,
                self.positions.len()
            ));
        }
        Ok(())
    }

    /// Copies rows between the `[B, T, ..]` and `[B, N, ..]` layouts (packed
    /// row `k` of sequence `s` is full row `positions[s][k]`); `packing` says
    /// which side is the source. Rows nothing is copied to are zero.
    fn moved<T: Real>(&self, x: &Value<T>, rows: usize, packing: bool) -> Value<T> {
        let width = numel(&x.shape[2..]);
        let (full, packed) = if packing { (x.shape[1], rows) } else { (rows, x.shape[1]) };
        let pairs: Vec<(usize, usize)> = self
            .positions
            .iter()
            .enumerate()
            .flat_map(|(s, ps)| {
                ps.iter().enumerate().map(move |(k, &p)| {
                    let (f, q) = (s * full + p, s * packed + k);
                    if packing {
                        (f, q)
                    } else {
                        (q, f)
                    }
                })
            })
            .collect();
        fn copy<E: Clone>(src: &[E], zero: E, len: usize, pairs: &[(usize, usize)], width: usize) -> Vec<E> {
            let mut out = vec![zero; len];
            for &(from, to) in pairs {
                out[to * width..(to + 1) * width].clone_from_slice(&src[from * width..(from + 1) * width]);
            }
            out
        }
        let mut shape = x.shape.clone();
        shape[1] = rows;
        let len = numel(&shape);
        let data = match &x.data {
            Buffer::Float(v) => Buffer::Float(copy(v, T::from_f64(0.0), len, &pairs, width)),
            Buffer::Int(v) => Buffer::Int(copy(v, 0, len, &pairs, width)),
            Buffer::Bool(v) => Buffer::Bool(copy(v, false, len, &pairs, width)),
            Buffer::Ternary(p) => Buffer::Float(copy(&p.unpack(), T::from_f64(0.0), len, &pairs, width)),
        };
        Value { dtype: x.dtype, shape, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(b: usize, t: usize, on: &[usize]) -> Value<f32> {
        let mut m = vec![false; b * t];
        for &i in on {
            m[i] = true;
        }
        Value { dtype: lsc_ir::DType::Bool, shape: vec![b, t], data: Buffer::Bool(m) }
    }

    #[test]
    fn packs_active_rows_in_order_and_restores_them() {
        // Two sequences of 20 rows, 2 features; sequence 0 keeps rows 3 and 7, sequence 1 keeps row 19.
        let rows = ActiveRows::new(&mask(2, 20, &[3, 7, 39])).unwrap();
        assert_eq!(rows.packed, 16);
        let x = Value::floats(vec![2, 20, 2], (0..80).map(|i| i as f32).collect());
        let p = rows.pack(&x).unwrap();
        assert_eq!(p.shape, vec![2, 16, 2]);
        let f = p.as_floats().unwrap();
        assert_eq!(&f[..4], &[6.0, 7.0, 14.0, 15.0]);
        assert!(f[4..32].iter().all(|&v| v == 0.0));
        assert_eq!(&f[32..34], &[78.0, 79.0]);
        let back = rows.unpack(&p).unwrap();
        let b = back.as_floats().unwrap();
        for (i, (&got, &orig)) in b.iter().zip(x.as_floats().unwrap()).enumerate() {
            let row = i / 2;
            let kept = [3, 7, 39].contains(&row);
            assert_eq!(got, if kept { orig } else { 0.0 }, "element {i}");
        }
    }

    #[test]
    fn row_count_is_quantised_but_never_above_t() {
        assert_eq!(ActiveRows::new(&mask(1, 10, &[1, 2, 3])).unwrap().packed, 10);
        assert_eq!(ActiveRows::new(&mask(1, 40, &(0..17).collect::<Vec<_>>())).unwrap().packed, 32);
        assert_eq!(ActiveRows::new(&mask(2, 8, &[])).unwrap().packed, 0);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let rows = ActiveRows::new(&mask(1, 4, &[0])).unwrap();
        assert!(rows.pack(&Value::<f32>::floats(vec![1, 5], vec![0.0; 5])).is_err());
        assert!(ActiveRows::new(&Value::<f32>::floats(vec![1, 4], vec![0.0; 4])).is_err());
    }
}
