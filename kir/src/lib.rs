//! Kernel IR: what every lsc backend compiles. A [`Kernel`] is a loop nest
//! over an index space whose body binds scalars, accumulates reductions and
//! stores results, plus a [`Schedule`]. Backends render it without lowering
//! logic of their own; [`eval`] runs it directly and is its ground truth.
//!
//! | module | contents |
//! |---|---|
//! | [`check`] | static bounds checks every backend runs first |
//! | [`conformance`] | the tests every native backend must pass against the evaluator |
//! | [`eval`] | the reference evaluator |
//! | [`lower`] | fused elementwise/reduction groups of a graph → kernels |
//! | [`math`] | exp, log, tanh, sigmoid as polynomials in kernel IR (one definition for every backend) |
//! | [`native`] | the compiled-kernel calling convention, argument checks and thread split every native backend shares |
//! | [`print`] | the text form (`lsc compile --emit kir`) |
//! | [`vector`] | which loops run 4 lanes at a time, and the order they accumulate in |

#![warn(missing_docs)]

pub mod check;
pub mod conformance;
pub mod eval;
pub mod lower;
pub mod math;
pub mod native;
pub mod print;
pub mod vector;

/// A scalar variable (loop index, bound value or accumulator), numbered per kernel.
pub type Var = usize;

/// Scalar types of kernel expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    /// 32-bit float.
    F32,
    /// 32-bit integer (bit manipulation in the transcendentals).
    I32,
    /// A comparison result.
    Bool,
}

/// Float unary operations every backend has as an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// `−x`
    Neg,
    /// `|x|`
    Abs,
    /// Correctly rounded square root.
    Sqrt,
    /// Round toward −∞.
    Floor,
    /// Round half to even.
    Nearest,
}

/// Binary operations (float ones on f32, integer ones on i32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// f32 `+`
    Add,
    /// f32 `−`
    Sub,
    /// f32 `·`
    Mul,
    /// f32 `/`
    Div,
    /// f32 minimum (NaN if either is NaN)
    Min,
    /// f32 maximum (NaN if either is NaN)
    Max,
    /// i32 `+` (wrapping)
    IAdd,
    /// i32 `−` (wrapping)
    ISub,
    /// i32 `<<`
    Shl,
    /// i32 `>>` (logical)
    ShrU,
    /// i32 bitwise and
    And,
    /// i32 bitwise or
    Or,
}

/// Comparisons: the IR's own (on f32 they are ordered, false if either side
/// is NaN, except `Ne`; on i32 they are signed).
pub use lsc_ir::CmpOp as Compare;

/// An affine element index `offset + Σ stride · var` into a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    /// `(loop variable, stride)` terms.
    pub terms: Vec<(Var, i64)>,
    /// Constant offset.
    pub offset: i64,
}

/// A scalar expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// An f32 constant.
    F32(f32),
    /// An i32 constant.
    I32(i32),
    /// A bound variable.
    Var(Var),
    /// Element `index` of f32 buffer `buf`.
    Load {
        /// Buffer number.
        buf: usize,
        /// Element index.
        index: Index,
    },
    /// A unary float op.
    Unary(Unary, Box<Expr>),
    /// A binary op.
    Binary(Binary, Box<Expr>, Box<Expr>),
    /// A comparison (a `Bool`) of two f32s, or of two i32s (signed).
    Compare(Compare, Box<Expr>, Box<Expr>),
    /// `c ? a : b`
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// The f32 with these bits.
    FromBits(Box<Expr>),
    /// The bits of an f32.
    ToBits(Box<Expr>),
    /// f32 → i32, truncating toward zero and saturating (NaN → 0).
    ToInt(Box<Expr>),
    /// i32 → f32.
    ToFloat(Box<Expr>),
}

/// A statement of a kernel body.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in 0..extent { body }`.
    Loop {
        /// The index variable.
        var: Var,
        /// Trip count.
        extent: u64,
        /// Body.
        body: Vec<Stmt>,
    },
    /// Binds `var` to `value` (single assignment).
    Let {
        /// The new variable.
        var: Var,
        /// Its value.
        value: Expr,
    },
    /// `var = var ∘ value` for an accumulator declared by [`Stmt::Let`] before a loop.
    Accumulate {
        /// The accumulator.
        var: Var,
        /// The combining op (`Add`, `Max`, `Min`).
        op: Binary,
        /// The value folded in.
        value: Expr,
    },
    /// Writes `value` to element `index` of buffer `buf`.
    Store {
        /// Buffer number.
        buf: usize,
        /// Element index.
        index: Index,
        /// The value.
        value: Expr,
    },
}

/// A buffer a kernel reads or writes (f32 elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Name, for printing and manifests.
    pub name: String,
    /// Elements.
    pub len: u64,
    /// Written by the kernel.
    pub output: bool,
}

/// How a kernel runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The outermost loop's iterations are split between threads.
    pub parallel: bool,
    /// SIMD lanes of the innermost loop (1: scalar).
    pub vector_width: u32,
}

/// A kernel: buffers (inputs first, then outputs) and a loop-nest body.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Name (unique in a program).
    pub name: String,
    /// Buffers, by number.
    pub buffers: Vec<Buffer>,
    /// The body; its outermost statement is the loop the schedule may split.
    pub body: Vec<Stmt>,
    /// Variables used (`0..vars`).
    pub vars: usize,
    /// Schedule.
    pub schedule: Schedule,
}

impl Kernel {
    /// The trip count of the outermost loop (1 if the body has none).
    pub fn outer_extent(&self) -> u64 {
        match self.body.as_slice() {
            [Stmt::Loop { extent, .. }] => *extent,
            _ => 1,
        }
    }
}

/// Boxes for building expressions.
impl Expr {
    /// `self ∘ other` for a binary op.
    pub fn bin(self, op: Binary, other: Expr) -> Expr {
        Expr::Binary(op, Box::new(self), Box::new(other))
    }
    /// A unary op of `self`.
    pub fn un(self, op: Unary) -> Expr {
        Expr::Unary(op, Box::new(self))
    }
    /// `c ? a : b`.
    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }
    /// A comparison.
    pub fn cmp(self, op: Compare, other: Expr) -> Expr {
        Expr::Compare(op, Box::new(self), Box::new(other))
    }
}

/// A statement list under construction, with fresh variables.
#[derive(Debug, Default)]
pub struct Body {
    /// The statements so far.
    pub stmts: Vec<Stmt>,
    /// The next free variable.
    pub next_var: Var,
}

impl Body {
    /// A new variable.
    pub fn fresh(&mut self) -> Var {
        self.next_var += 1;
        self.next_var - 1
    }
    /// Binds `value` to a new variable and returns it (so a value used twice is computed once).
    pub fn bind(&mut self, value: Expr) -> Expr {
        if matches!(value, Expr::Var(_) | Expr::F32(_) | Expr::I32(_)) {
            return value;
        }
        let var = self.fresh();
        self.stmts.push(Stmt::Let { var, value });
        Expr::Var(var)
    }
}
