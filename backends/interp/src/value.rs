//! Tensors: owned [`Value`]s (what the interpreter allocates and callers pass
//! in) and borrowed [`View`]s / [`ViewMut`]s (what every kernel reads and
//! writes, so that an executor can run the same kernels on memory it planned).

use crate::math::Real;
use crate::ternary::{TernaryMut, TernaryPlanes, TernaryRef};
use lsc_ir::DType;

/// Element storage: floats (of every float dtype, and unpacked ternary)
/// are held in the interpreter's float type `T`.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer<T> {
    /// f32 / f16 / bf16 / ternary values.
    Float(Vec<T>),
    /// i64 / i32 / i8 values.
    Int(Vec<i64>),
    /// bool values.
    Bool(Vec<bool>),
    /// A ternary matrix packed as two bit planes (made by `ternary_pack`, read
    /// by `ternary_matmul`).
    Ternary(TernaryPlanes),
}

/// A concrete tensor: dtype, shape and row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct Value<T> {
    /// Element type.
    pub dtype: DType,
    /// Concrete dimensions.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: Buffer<T>,
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// How a tensor of a dtype is held: floats widened to the float type, every
/// integer width as `i64`, bools as `bool`, and packed ternary matrices as
/// bit planes. Executors size their buffers from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `T` elements.
    Float,
    /// `i64` elements.
    Int,
    /// `bool` elements.
    Bool,
    /// Two bit planes of `u64` words ([`TernaryPlanes`]).
    Ternary,
}

impl Storage {
    /// The storage of `dtype`.
    pub fn of(dtype: DType) -> Storage {
        match dtype {
            DType::Bool => Storage::Bool,
            DType::Ternary => Storage::Ternary,
            d if d.is_int() => Storage::Int,
            _ => Storage::Float,
        }
    }

    /// Elements of the storage unit (`T`, `i64`, `bool` or `u64` words) a
    /// tensor of `shape` needs.
    pub fn units(self, shape: &[usize]) -> usize {
        match (self, shape) {
            (Storage::Ternary, &[rows, cols]) => 2 * rows * TernaryPlanes::words(cols),
            (Storage::Ternary, _) => 0,
            _ => numel(shape),
        }
    }
}

/// Borrowed elements of a tensor.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a, T> {
    /// Float elements.
    Float(&'a [T]),
    /// Integer elements.
    Int(&'a [i64]),
    /// Bool elements.
    Bool(&'a [bool]),
    /// A packed ternary matrix.
    Ternary(TernaryRef<'a>),
}

/// Mutably borrowed elements of a tensor.
#[derive(Debug)]
pub enum DataMut<'a, T> {
    /// Float elements.
    Float(&'a mut [T]),
    /// Integer elements.
    Int(&'a mut [i64]),
    /// Bool elements.
    Bool(&'a mut [bool]),
    /// A packed ternary matrix.
    Ternary(TernaryMut<'a>),
}

/// A tensor read by a kernel.
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T> {
    /// Element type.
    pub dtype: DType,
    /// Concrete dimensions.
    pub shape: &'a [usize],
    /// Row-major elements.
    pub data: Data<'a, T>,
}

/// A tensor a kernel writes: every element, whatever the memory held before.
#[derive(Debug)]
pub struct ViewMut<'a, T> {
    /// Element type.
    pub dtype: DType,
    /// Concrete dimensions.
    pub shape: &'a [usize],
    /// Row-major elements.
    pub data: DataMut<'a, T>,
}

impl<T: Real> Value<T> {
    /// A float tensor of dtype f32 holding `data`.
    pub fn floats(shape: Vec<usize>, data: Vec<T>) -> Value<T> {
        Value { dtype: DType::F32, shape, data: Buffer::Float(data) }
    }

    /// An i64 tensor.
    pub fn ints(shape: Vec<usize>, data: Vec<i64>) -> Value<T> {
        Value { dtype: DType::I64, shape, data: Buffer::Int(data) }
    }

    /// A tensor of `dtype` and `shape` with every element zero (or `false`).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Value<T> {
        let n = numel(&shape);
        let data = match Storage::of(dtype) {
            Storage::Float => Buffer::Float(vec![T::default(); n]),
            Storage::Int => Buffer::Int(vec![0; n]),
            Storage::Bool => Buffer::Bool(vec![false; n]),
            Storage::Ternary => {
                let (rows, cols) = match shape[..] {
                    [r, c] => (r, c),
                    _ => (0, 0),
                };
                Buffer::Ternary(TernaryPlanes::zeros(rows, cols))
            }
        };
        Value { dtype, shape, data }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The float elements, if this is a float tensor.
    pub fn as_floats(&self) -> Option<&[T]> {
        match &self.data {
            Buffer::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The integer elements, if this is an integer tensor.
    pub fn as_ints(&self) -> Option<&[i64]> {
        match &self.data {
            Buffer::Int(v) => Some(v),
            _ => None,
        }
    }

    /// Every element widened to f64 (bools as 0/1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.view().to_f64_vec()
    }

    /// Converts float data to another interpreter float type.
    pub fn convert<U: Real>(&self) -> Value<U> {
        let data = match &self.data {
            Buffer::Float(v) => Buffer::Float(v.iter().map(|x| U::from_f64(x.to_f64())).collect()),
            Buffer::Int(v) => Buffer::Int(v.clone()),
            Buffer::Bool(v) => Buffer::Bool(v.clone()),
            Buffer::Ternary(p) => Buffer::Ternary(p.clone()),
        };
        Value { dtype: self.dtype, shape: self.shape.clone(), data }
    }

    /// The tensor as a kernel reads it.
    pub fn view(&self) -> View<'_, T> {
        let data = match &self.data {
            Buffer::Float(v) => Data::Float(v),
            Buffer::Int(v) => Data::Int(v),
            Buffer::Bool(v) => Data::Bool(v),
            Buffer::Ternary(p) => Data::Ternary(p.as_ref()),
        };
        View { dtype: self.dtype, shape: &self.shape, data }
    }

    /// The tensor as a kernel writes it.
    pub fn view_mut(&mut self) -> ViewMut<'_, T> {
        let data = match &mut self.data {
            Buffer::Float(v) => DataMut::Float(v),
            Buffer::Int(v) => DataMut::Int(v),
            Buffer::Bool(v) => DataMut::Bool(v),
            Buffer::Ternary(p) => DataMut::Ternary(p.as_mut()),
        };
        ViewMut { dtype: self.dtype, shape: &self.shape, data }
    }
}

impl<'a, T: Real> View<'a, T> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(self.shape)
    }

    /// The float elements, or an error naming the dtype.
    pub fn floats(&self) -> Result<&'a [T], String> {
        match self.data {
            Data::Float(v) => Ok(v),
            _ => Err(format!("expected a float tensor, got {}", self.dtype)),
        }
    }

    /// The integer elements, or an error naming the dtype.
    pub fn ints(&self) -> Result<&'a [i64], String> {
        match self.data {
            Data::Int(v) => Ok(v),
            _ => Err(format!("expected an integer tensor, got {}", self.dtype)),
        }
    }

    /// The first float element (a scalar operand such as a learning rate).
    pub fn scalar(&self) -> Result<T, String> {
        self.floats()?.first().copied().ok_or_else(|| "expected a scalar".to_string())
    }

    /// Every element widened to f64 (bools as 0/1, packed ternary unpacked).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self.data {
            Data::Float(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::Int(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
            Data::Ternary(p) => p.unpack(),
        }
    }

    /// An owned copy.
    pub fn to_value(&self) -> Value<T> {
        let data = match self.data {
            Data::Float(v) => Buffer::Float(v.to_vec()),
            Data::Int(v) => Buffer::Int(v.to_vec()),
            Data::Bool(v) => Buffer::Bool(v.to_vec()),
            Data::Ternary(p) => Buffer::Ternary(p.to_owned()),
        };
        Value { dtype: self.dtype, shape: self.shape.to_vec(), data }
    }
}

impl<T: Real> ViewMut<'_, T> {
    /// The float elements, or an error naming the dtype.
    pub fn floats(&mut self) -> Result<&mut [T], String> {
        match &mut self.data {
            DataMut::Float(v) => Ok(v),
            _ => Err(format!("expected to write a float tensor, not {}", self.dtype)),
        }
    }

    /// The integer elements, or an error naming the dtype.
    pub fn ints(&mut self) -> Result<&mut [i64], String> {
        match &mut self.data {
            DataMut::Int(v) => Ok(v),
            _ => Err(format!("expected to write an integer tensor, not {}", self.dtype)),
        }
    }

    /// The bool elements, or an error naming the dtype.
    pub fn bools(&mut self) -> Result<&mut [bool], String> {
        match &mut self.data {
            DataMut::Bool(v) => Ok(v),
            _ => Err(format!("expected to write a bool tensor, not {}", self.dtype)),
        }
    }

    /// The same tensor, read-only.
    pub fn as_view(&self) -> View<'_, T> {
        let data = match &self.data {
            DataMut::Float(v) => Data::Float(v),
            DataMut::Int(v) => Data::Int(v),
            DataMut::Bool(v) => Data::Bool(v),
            DataMut::Ternary(p) => Data::Ternary(p.as_ref()),
        };
        View { dtype: self.dtype, shape: self.shape, data }
    }

    /// A shorter-lived reborrow (to pass to a kernel and keep using after).
    pub fn reborrow(&mut self) -> ViewMut<'_, T> {
        let data = match &mut self.data {
            DataMut::Float(v) => DataMut::Float(v),
            DataMut::Int(v) => DataMut::Int(v),
            DataMut::Bool(v) => DataMut::Bool(v),
            DataMut::Ternary(p) => DataMut::Ternary(p.reborrow()),
        };
        ViewMut { dtype: self.dtype, shape: self.shape, data }
    }
}
