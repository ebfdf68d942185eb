//! Element types of tensor values.

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    BF16,
    /// Signed 64-bit integer (token ids, indices).
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 8-bit integer (quantised weights).
    I8,
    /// Boolean (masks, comparisons).
    Bool,
    /// Packed ternary weights: values in {-1, 0, +1}, 2 bits each.
    Ternary,
}

impl DType {
    /// Every dtype, in a fixed order (for tests and generators).
    pub const ALL: [DType; 8] =
        [DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I8, DType::Bool, DType::Ternary];

    /// The name used in `.lsir` text and manifests.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::Bool => "bool",
            DType::Ternary => "ternary",
        }
    }

    /// Floating-point types (arithmetic, transcendentals, softmax).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// Signed integer types (indices, token ids).
    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8)
    }

    /// Types that support `add`, `mul`, comparisons by magnitude and reductions.
    pub fn is_numeric(self) -> bool {
        self.is_float() || self.is_int()
    }

    /// Storage size of one element in bits.
    pub fn bits(self) -> u32 {
        match self {
            DType::F32 | DType::I32 => 32,
            DType::F16 | DType::BF16 => 16,
            DType::I64 => 64,
            DType::I8 | DType::Bool => 8,
            DType::Ternary => 2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown dtype `{s}` (expected one of f32, f16, bf16, i64, i32, i8, bool, ternary)"))
    }
}
