//! Runtime tensor values of the interpreter.

use crate::math::Real;
use crate::ternary::TernaryPlanes;
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

impl<T: Real> Value<T> {
    /// A float tensor of dtype f32 holding `data`.
    pub fn floats(shape: Vec<usize>, data: Vec<T>) -> Value<T> {
        Value { dtype: DType::F32, shape, data: Buffer::Float(data) }
    }

    /// An i64 tensor.
    pub fn ints(shape: Vec<usize>, data: Vec<i64>) -> Value<T> {
        Value { dtype: DType::I64, shape, data: Buffer::Int(data) }
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
        match &self.data {
            Buffer::Float(v) => v.iter().map(|x| x.to_f64()).collect(),
            Buffer::Int(v) => v.iter().map(|&x| x as f64).collect(),
            Buffer::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
            Buffer::Ternary(p) => p.unpack(),
        }
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
}
