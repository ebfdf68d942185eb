//! Packing and unpacking of the active rows of a `routed_call`.

use crate::kernels::{same_kind, R};
use crate::math::Real;
use crate::value::{numel, Data, DataMut, Value, View, ViewMut};

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
    pub fn new<T: Real>(mask: &View<'_, T>) -> R<ActiveRows> {
        let (Data::Bool(m), &[b, t]) = (mask.data, mask.shape) else {
            return Err(format!("routed_call's mask must be bool[B, T], got {} {:?}", mask.dtype, mask.shape));
        };
        let positions: Vec<Vec<usize>> = (0..b).map(|i| (0..t).filter(|&j| m[i * t + j]).collect()).collect();
        let most = positions.iter().map(Vec::len).max().unwrap_or(0);
        let packed = if most == 0 { 0 } else { most.div_ceil(ROW_QUANTUM).saturating_mul(ROW_QUANTUM).min(t) };
        Ok(ActiveRows { positions, full: t, packed })
    }

    /// Per sequence, its active positions in order.
    pub fn positions(&self) -> &[Vec<usize>] {
        &self.positions
    }

    /// Rows per sequence before packing (`T`).
    pub fn full(&self) -> usize {
        self.full
    }

    /// The shape of `x [B, T, ..]` packed: `[B, N, ..]`.
    pub fn packed_shape(&self, x: &[usize]) -> Vec<usize> {
        let mut s = x.to_vec();
        if s.len() > 1 {
            s[1] = self.packed;
        }
        s
    }

    /// `x [B, T, ..]` → `out [B, N, ..]`: the active rows in order, then zero (or `false`) rows.
    pub fn pack_into<T: Real>(&self, x: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
        self.check(x.shape, self.full)?;
        self.check(out.shape, self.packed)?;
        self.moved(x, out, true)
    }

    /// `y [B, N, ..]` → `out [B, T, ..]`: row `k` of each sequence goes back to
    /// its position; inactive rows are zero (or `false`).
    pub fn unpack_into<T: Real>(&self, y: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
        self.check(y.shape, self.packed)?;
        self.check(out.shape, self.full)?;
        self.moved(y, out, false)
    }

    /// [`ActiveRows::pack_into`] a new value.
    pub fn pack<T: Real>(&self, x: &Value<T>) -> R<Value<T>> {
        let mut out = Value::zeros(x.dtype, self.packed_shape(&x.shape));
        self.pack_into(&x.view(), &mut out.view_mut())?;
        Ok(out)
    }

    /// [`ActiveRows::unpack_into`] a new value.
    pub fn unpack<T: Real>(&self, y: &Value<T>) -> R<Value<T>> {
        let mut shape = y.shape.clone();
        if shape.len() > 1 {
            shape[1] = self.full;
        }
        let mut out = Value::zeros(y.dtype, shape);
        self.unpack_into(&y.view(), &mut out.view_mut())?;
        Ok(out)
    }

    fn check(&self, shape: &[usize], rows: usize) -> R<()> {
        if shape.len() < 2 || shape[0] != self.positions.len() || shape[1] != rows {
            return Err(format!(
                "a routed value of shape {shape:?} should start with [{}, {rows}]",
                self.positions.len()
            ));
        }
        Ok(())
    }

    /// Copies rows between the `[B, T, ..]` and `[B, N, ..]` layouts (packed
    /// row `k` of sequence `s` is full row `positions[s][k]`); `packing` says
    /// which side is the source. Rows nothing is copied to are zero.
    fn moved<T: Real>(&self, x: &View<'_, T>, out: &mut ViewMut<'_, T>, packing: bool) -> R<()> {
        let width = numel(&x.shape[2..]);
        let (full, packed) = (self.full, self.packed);
        let zero = |d: &mut DataMut<'_, T>| match d {
            DataMut::Float(v) => v.fill(T::default()),
            DataMut::Int(v) => v.fill(0),
            DataMut::Bool(v) => v.fill(false),
            DataMut::Ternary(p) => p.planes.fill(0),
        };
        zero(&mut out.data);
        for (s, ps) in self.positions.iter().enumerate() {
            for (k, &p) in ps.iter().enumerate() {
                let (f, q) = (s * full + p, s * packed + k);
                let (from, to) = if packing { (f, q) } else { (q, f) };
                same_kind!(x, out, |src, dst| dst[to * width..(to + 1) * width]
                    .copy_from_slice(&src[from * width..(from + 1) * width]));
            }
        }
        Ok(())
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
        Value { dtype: lsc_ir::DType::Bool, shape: vec![b, t], data: crate::value::Buffer::Bool(m) }
    }

    #[test]
    fn packs_active_rows_in_order_and_restores_them() {
        // Two sequences of 20 rows, 2 features; sequence 0 keeps rows 3 and 7, sequence 1 keeps row 19.
        let rows = ActiveRows::new(&mask(2, 20, &[3, 7, 39]).view()).unwrap();
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
        assert_eq!(ActiveRows::new(&mask(1, 10, &[1, 2, 3]).view()).unwrap().packed, 10);
        assert_eq!(ActiveRows::new(&mask(1, 40, &(0..17).collect::<Vec<_>>()).view()).unwrap().packed, 32);
        assert_eq!(ActiveRows::new(&mask(2, 8, &[]).view()).unwrap().packed, 0);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let rows = ActiveRows::new(&mask(1, 4, &[0]).view()).unwrap();
        assert!(rows.pack(&Value::<f32>::floats(vec![1, 5], vec![0.0; 5])).is_err());
        assert!(ActiveRows::new(&Value::<f32>::floats(vec![1, 4], vec![0.0; 4]).view()).is_err());
    }
}
