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
//! | [`gpu`] | GPU kernels: lowering a group to a launch of threads, the GPU-semantics evaluator (blocks, barriers, warps, races) |
//! | [`lower`] | fused elementwise/reduction groups of a graph → kernels |
//! | [`math`] | exp, log, tanh, sigmoid as polynomials in kernel IR (one definition for every backend) |
//! | [`native`] | the compiled-kernel calling convention, argument checks and thread split every native backend shares |
//! | [`op_group`] | library ops that are one group (transpose, broadcast, elementwise ops, reductions), for targets without a library for them |
//! | [`print`] | the text form (`lsc compile --emit kir`) |
//! | [`vector`] | which loops run 4 lanes at a time, and the order they accumulate in |

#![warn(missing_docs)]

pub mod check;
pub mod conformance;
pub mod eval;
pub mod gpu;
pub mod lower;
pub mod math;
pub mod native;
pub mod op_group;
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
    /// A GPU-only expression (rejected by the CPU renderers).
    Gpu(GpuExpr),
}

/// Expressions only a GPU kernel (one with a [`Launch`]) has.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuExpr {
    /// An index of the launch (an i32).
    Index(LaunchIndex),
    /// Element `at` (an i32 expression, possibly loaded from an index buffer) of buffer `buf`.
    LoadAt {
        /// Buffer number.
        buf: usize,
        /// Element index.
        at: Box<Expr>,
    },
    /// Element `at` of a shared or thread-local array.
    ArrayLoad {
        /// The array.
        array: ArrayRef,
        /// Element index.
        at: Box<Expr>,
    },
    /// Integer arithmetic beyond `+`/`−` on two i32s.
    Int(IntOp, Box<Expr>, Box<Expr>),
}

/// The indices of a launch, each an i32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchIndex {
    /// The block's index in the grid (`ctaid.x`).
    Block,
    /// The thread's index in its block (`tid.x`).
    Thread,
    /// Threads per block (`ntid.x`).
    BlockDim,
    /// Blocks in the grid (`nctaid.x`).
    GridDim,
    /// The thread's lane in its warp (`thread % 32`).
    Lane,
    /// The thread's warp in its block (`thread / 32`).
    Warp,
}

/// Integer ops of GPU index arithmetic (signed i32; division and remainder
/// truncate toward zero and need a non-zero divisor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    /// `a · b` (wrapping)
    Mul,
    /// `a / b`
    Div,
    /// `a % b`
    Rem,
    /// `min(a, b)`
    Min,
    /// `max(a, b)`
    Max,
}

/// A shared (per-block) or local (per-thread) array of a GPU kernel, by number in its [`Launch`] list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayRef {
    /// `launch.shared[i]`
    Shared(usize),
    /// `launch.local[i]`
    Local(usize),
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
    /// A GPU-only statement (rejected by the CPU renderers).
    Gpu(GpuStmt),
}

/// Statements only a GPU kernel has. Barriers and warp operations are
/// *convergent*: every thread of the block (of the warp) must execute them
/// together, so the loops and conditionals around them must have the same
/// bounds and conditions in every thread; the evaluator reports it otherwise.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuStmt {
    /// `for var = start; var < end; var += step { body }` with i32 bounds computed in the kernel (`step > 0`).
    Range {
        /// The index variable.
        var: Var,
        /// First value.
        start: Expr,
        /// Bound (exclusive).
        end: Expr,
        /// Increment.
        step: Expr,
        /// Body.
        body: Vec<Stmt>,
    },
    /// `if cond { body }`.
    If {
        /// A `Bool` expression.
        cond: Expr,
        /// Body.
        body: Vec<Stmt>,
    },
    /// Assigns a new value to a variable bound earlier (running maxima and sums).
    Set {
        /// The variable.
        var: Var,
        /// Its new value.
        value: Expr,
    },
    /// Writes `value` to element `at` (an i32 expression) of buffer `buf`.
    StoreAt {
        /// Buffer number.
        buf: usize,
        /// Element index.
        at: Expr,
        /// The value.
        value: Expr,
    },
    /// Writes `value` to element `at` of a shared or local array.
    ArrayStore {
        /// The array.
        array: ArrayRef,
        /// Element index.
        at: Expr,
        /// The value.
        value: Expr,
    },
    /// Every thread of the block waits here; shared-memory writes before it are visible after it.
    Barrier,
    /// Binds `var`, in every lane of the warp, to `value` folded over the warp's 32 lanes
    /// by `op` (`Add`, `Max`, `Min`) in butterfly order (lane distance 16, 8, 4, 2, 1).
    WarpReduce {
        /// The result.
        var: Var,
        /// The combining op.
        op: Binary,
        /// Each lane's contribution.
        value: Expr,
    },
    /// Binds `var` to `value` as computed in another lane of the warp.
    Shuffle {
        /// The result.
        var: Var,
        /// Each lane's value.
        value: Expr,
        /// Which lane is read.
        mode: Shuffle,
        /// The lane operand (an i32: a lane, a distance or an xor mask).
        lane: Expr,
    },
}

/// How a [`GpuStmt::Shuffle`] picks its source lane; a source outside the
/// warp reads the thread's own value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shuffle {
    /// Lane `lane`.
    Index,
    /// Lane `self + lane`.
    Down,
    /// Lane `self − lane`.
    Up,
    /// Lane `self ^ lane`.
    Xor,
}

/// Element types of buffers. Floats load as f32 and are rounded to the
/// buffer's type on store (round to nearest even); integers load as i32
/// (u8/u32 zero-extended, i64 truncated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Elem {
    /// 32-bit float.
    #[default]
    F32,
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Byte.
    U8,
    /// 32-bit unsigned integer (packed ternary planes).
    U32,
}

impl Elem {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Elem::U8 => 1,
            Elem::BF16 | Elem::F16 => 2,
            Elem::F32 | Elem::I32 | Elem::U32 => 4,
            Elem::I64 => 8,
        }
    }
    /// Whether it loads as an f32 (else as an i32).
    pub fn is_float(self) -> bool {
        matches!(self, Elem::F32 | Elem::BF16 | Elem::F16)
    }
    /// Its name in printed kernels and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::BF16 => "bf16",
            Elem::F16 => "f16",
            Elem::I32 => "i32",
            Elem::I64 => "i64",
            Elem::U8 => "u8",
            Elem::U32 => "u32",
        }
    }
}

/// A buffer a kernel reads or writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Name, for printing and manifests.
    pub name: String,
    /// Elements.
    pub len: u64,
    /// Written by the kernel.
    pub output: bool,
    /// Element type (CPU kernels: f32 only).
    pub elem: Elem,
}

/// A per-block shared or per-thread local array of a GPU kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Array {
    /// Name, for printing.
    pub name: String,
    /// Elements.
    pub len: u32,
    /// `F32` or `I32`.
    pub scalar: Scalar,
}

/// The launch shape of a GPU kernel: a one-dimensional grid of blocks of threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks.
    pub grid: u32,
    /// Threads per block (a multiple of the warp size, 32).
    pub block: u32,
    /// Arrays each block shares.
    pub shared: Vec<Array>,
    /// Arrays each thread has.
    pub local: Vec<Array>,
}

impl Launch {
    /// Bytes of shared memory a block uses.
    pub fn shared_bytes(&self) -> u64 {
        self.shared.iter().map(|a| u64::from(a.len) * 4).sum()
    }
}

/// Threads per warp.
pub const WARP: u32 = 32;

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
    /// For a GPU kernel, its launch shape and arrays (its body then runs once per thread).
    pub launch: Option<Launch>,
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
