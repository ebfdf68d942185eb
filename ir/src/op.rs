//! The primitive op set, plus the attribute encoding shared by the printer
//! and the parser. Fused ops (attention, LS-attention, ternary matmul, GAM)
//! are added by the equality-saturation passes and are never emitted by the DSL.

use crate::dim::Dim;
use crate::dtype::DType;

/// Elementwise ops of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `e^x`
    Exp,
    /// Natural logarithm.
    Log,
    /// Square root.
    Sqrt,
    /// `1/sqrt(x)`
    Rsqrt,
    /// `1/x`
    Recip,
    /// Hyperbolic tangent.
    Tanh,
    /// `1/(1+e^-x)`
    Sigmoid,
    /// `x·sigmoid(x)`
    Silu,
    /// Exact GELU, `x·Φ(x)` with the erf form (PyTorch's default).
    Gelu,
    /// The error function (GELU's derivative needs it).
    Erf,
    /// Sine (radians).
    Sin,
    /// Cosine (radians).
    Cos,
    /// Round half to even.
    Round,
    /// Logical not of a bool tensor.
    Not,
}

/// Elementwise ops of two operands of identical type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// Elementwise maximum.
    Max,
    /// Elementwise minimum.
    Min,
    /// `a^b` for floats.
    Pow,
    /// Logical and of bools.
    And,
    /// Logical or of bools.
    Or,
}

/// Elementwise comparisons; the result is `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

/// The combining function of a reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Sum of the elements.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// An operation of the graph IR. Each variant's typing rule is in `infer.rs`.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A named program input (or, in a function, a formal argument). Leaf; type declared.
    Input {
        /// PyTorch-style name, e.g. `input_ids`.
        name: String,
    },
    /// A named trainable parameter, e.g. `layers.0.attn.q_proj.weight`. Leaf; main graph only.
    Param {
        /// PyTorch-style dotted name.
        name: String,
    },
    /// A tensor filled with one value. Leaf; type declared.
    Constant {
        /// The fill value (converted to the declared dtype).
        value: f64,
    },
    /// Index along `axis` at every position of the declared type. Leaf.
    Iota {
        /// The axis whose index is written.
        axis: usize,
    },
    /// Elementwise unary op.
    Unary(UnaryOp),
    /// `min(max(x, min), max)`.
    Clamp {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Elementwise binary op; operands have identical types (broadcast is explicit).
    Binary(BinaryOp),
    /// Elementwise comparison producing `bool`.
    Compare(CmpOp),
    /// `cond ? a : b` elementwise.
    Select,
    /// Identity in the forward pass; blocks gradients in autodiff. With it a
    /// straight-through estimator is written in primitives:
    /// `stop_gradient(q(w)) + (w − stop_gradient(w))` equals `q(w)` and has gradient 1.
    StopGradient,
    /// Conversion to another dtype.
    Cast {
        /// Target dtype.
        to: DType,
    },
    /// Reduction over `axes`.
    Reduce {
        /// Combining function.
        kind: ReduceKind,
        /// Reduced axes, sorted and distinct.
        axes: Vec<usize>,
        /// Keep reduced axes with size 1.
        keep_dims: bool,
    },
    /// Index of the maximum along `axis` (first one on ties), as `i64`.
    ArgMax {
        /// Reduced axis.
        axis: usize,
        /// Keep the axis with size 1.
        keep_dims: bool,
    },
    /// `exp(x - max) / Σ exp(x - max)` along `axis`.
    Softmax {
        /// Normalised axis.
        axis: usize,
    },
    /// `x - max - log Σ exp(x - max)` along `axis`.
    LogSoftmax {
        /// Normalised axis.
        axis: usize,
    },
    /// `[..., M, K] · [..., K, N]`; `trans_a` reads the left operand as stored
    /// `[..., K, M]`, `trans_b` the right as `[..., N, K]`. Either operand may be
    /// rank 2 (shared across the other's batch), else their batch dims agree.
    MatMul {
        /// Use the transpose of the left operand.
        trans_a: bool,
        /// Use the transpose of the right operand.
        trans_b: bool,
    },
    /// `Σ over the batch of op_a(a)·op_b(b)` for operands `[..., M, K]` and
    /// `[..., K, N]` (transposes as in [`Op::MatMul`]) with the same batch
    /// dims: `[M, N]`. A shared weight's gradient over a batch of sequences as
    /// one product whose depth is the whole batch. Fused (the `gradients`
    /// group makes it of `sum(matmul(a, b))`).
    MatMulSum {
        /// Use the transpose of the left operand.
        trans_a: bool,
        /// Use the transpose of the right operand.
        trans_b: bool,
    },
    /// `out[i][j][k] = x[i][idx[i][j][k]][k]` along `axis` (PyTorch `gather`).
    Gather {
        /// Indexed axis.
        axis: usize,
    },
    /// Copy of `x` with `x[.. idx ..] = src` along `axis` (PyTorch `scatter`).
    Scatter {
        /// Indexed axis.
        axis: usize,
    },
    /// Copy of `x` with `x[.. idx ..] += src` along `axis` (PyTorch `scatter_add`).
    ScatterAdd {
        /// Indexed axis.
        axis: usize,
    },
    /// Rows of `weight [V, D]` selected by integer `ids [...]`, giving `[..., D]`.
    Embedding,
    /// Same elements, new shape.
    Reshape {
        /// Target shape.
        shape: Vec<Dim>,
    },
    /// Permutes axes: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Elements `start..end` along `axis`.
    Slice {
        /// Sliced axis.
        axis: usize,
        /// First index kept.
        start: Dim,
        /// One past the last index kept.
        end: Dim,
    },
    /// Joins operands along `axis`.
    Concat {
        /// Joined axis.
        axis: usize,
    },
    /// NumPy-style broadcast to `shape` (align right, expand size-1 axes).
    Broadcast {
        /// Target shape.
        shape: Vec<Dim>,
    },
    /// Depthwise causal conv over time: `x [B, T, C]`, `weight [C, 1, K]`, left zero
    /// padding `K-1`, cross-correlation like PyTorch's `Conv1d(groups=C)`.
    CausalConv1d,
    /// The backward of [`Op::CausalConv1d`] (made by autodiff): `(x [B, T, C],
    /// weight [C, 1, K], d_y [B, T, C]) → (d_x, d_weight)`, one pass per sequence.
    CausalConv1dGrad,
    /// Rotary position embedding: the halves `x₁, x₂` of the last axis of
    /// `x [..., T, D]` become `(x₁·cos − x₂·sin, x₂·cos + x₁·sin)`, with
    /// `cos, sin: [T, D/2]` (the rotation angles of each position).
    Rotary,
    /// The `k` largest elements along `axis`, in descending order (ties to the
    /// lower index); outputs `(values, indices: i64)`.
    TopK {
        /// How many to keep.
        k: Dim,
        /// Searched axis.
        axis: usize,
    },
    /// Per-position `-log softmax(logits)[target]`: `logits [..., V]`, `targets [...]`.
    CrossEntropy,
    /// Copy of `cache` with `update` written at `offset` (an `i64` scalar) along `axis`.
    CacheUpdate {
        /// Written axis.
        axis: usize,
    },
    /// Fused causal attention (made by the `attention` rule group, never by the
    /// DSL): `q, k, v: [B, H, T, D]`; head `h` sees keys `i − w_h < j ≤ i`
    /// (`w_h = 0`: all `j ≤ i`). Outputs `(out [B, H, T, D], row_max [B, H, T])`,
    /// `row_max` being each query row's largest scaled logit (the instability monitor).
    LsAttention {
        /// Window per head (0: global).
        windows: Vec<usize>,
        /// Logit scale.
        scale: f64,
    },
    /// The backward of [`Op::LsAttention`] with recomputed probabilities:
    /// `(q, k, v, out, d_out) → (d_q, d_k, d_v)`.
    LsAttentionGrad {
        /// Window per head (0: global).
        windows: Vec<usize>,
        /// Logit scale.
        scale: f64,
    },
    /// Fused softmax + cross-entropy with its gradient (made by the `step`
    /// rule group from a training step): `(logits [..., V], targets [...],
    /// d_loss [...]) → (loss [...], d_logits [..., V])`, one pass over the logits.
    SoftmaxCrossEntropy,
    /// One fused AdamW update of many parameters (made by the `step` rule group).
    /// Operands: `lr`, `bc1 = 1 − β1^t`, `bc2 = 1 − β2^t`, the gradient scale
    /// (clipping factor), all `f32[]`; then `(w, g, m, v)` per parameter.
    /// Outputs `(w', m', v')` per parameter.
    AdamW {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator guard.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
        /// Whether each parameter is decayed.
        decay: Vec<bool>,
    },
    /// `(w, s: f32[]) → clamp(round(w / s), −1, 1)` as packed ternary (made by
    /// the `ternary` rule group).
    TernaryPack,
    /// `(x [..., M, K], w: ternary [K, N] (or [N, K] with `trans_b`), s: f32[])
    /// → (x · w) · s`, with adds and subtracts only.
    TernaryMatmul {
        /// `w` is stored `[N, K]`.
        trans_b: bool,
    },
    /// The Gated Associative Memory mixer in one op (made by the `gam` rule group):
    /// `(x [B, T, d], conv_w [d, 1, k], conv_b [d], memory [S, d], gate_logits [B, T, 2d])
    /// → σ(g_local) · (conv(x) + conv_b) + σ(g_global) · softmax(x · memoryᵀ) · memory`.
    Gam,
    /// Applies function `body` `trips` times. Operands: loop-carried values, then
    /// loop-invariant values. The body takes `(iteration: i64[], carried.., invariant..)`
    /// and returns the next carried values; the loop returns the final ones.
    Loop {
        /// Name of the body function.
        body: String,
        /// Trip count.
        trips: u64,
    },
    /// Calls a shared function: weight sharing is explicit in the IR.
    Call {
        /// Name of the callee.
        callee: String,
    },
    /// Calls `callee` on the active rows only (made by the `routed` rule group).
    /// Operands: `(active: bool[B, T], args..)`. The first `routed` args are
    /// per-row (`[B, T, ..]`): each sequence's active rows are packed, in order,
    /// into `[B, N, ..]` (`N` = the most active rows of any sequence; shorter
    /// sequences are padded with zeros and `false`), the callee runs on them and
    /// the rest of the args, and its outputs (all per-row) are scattered back to
    /// `[B, T, ..]`, with zeros in inactive rows.
    RoutedCall {
        /// Name of the callee.
        callee: String,
        /// How many leading args are per-row.
        routed: usize,
    },
}

/// An attribute value in `.lsir` text.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// An integer or symbolic dimension (`64`, `T`, `P+T`).
    Dim(Dim),
    /// A float (always printed with a `.`, an exponent, `inf` or `NaN`).
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A keyword such as `sum` or `f32`.
    Word(String),
    /// A function reference `@name`.
    Func(String),
    /// `[a,b,...]`.
    List(Vec<AttrValue>),
}

macro_rules! name_table {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The `.lsir` spelling.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            /// Looks up a `.lsir` spelling.
            pub fn from_name(s: &str) -> Option<$ty> {
                match s { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

name_table!(UnaryOp {
    Neg => "neg", Abs => "abs", Exp => "exp", Log => "log", Sqrt => "sqrt", Rsqrt => "rsqrt",
    Recip => "recip", Tanh => "tanh", Sigmoid => "sigmoid", Silu => "silu", Gelu => "gelu", Erf => "erf",
    Sin => "sin", Cos => "cos", Round => "round", Not => "not",
});
name_table!(BinaryOp {
    Add => "add", Sub => "sub", Mul => "mul", Div => "div", Max => "max", Min => "min",
    Pow => "pow", And => "and", Or => "or",
});
name_table!(CmpOp { Eq => "eq", Ne => "ne", Lt => "lt", Le => "le", Gt => "gt", Ge => "ge" });
name_table!(ReduceKind { Sum => "sum", Mean => "mean", Max => "max", Min => "min" });

impl Op {
    /// The op with the symbols of its dimension attributes replaced (inlining a
    /// function instantiates its body at the call site's dimensions).
    pub fn substitute_dims(&self, subst: &std::collections::BTreeMap<String, Dim>) -> Op {
        let all = |shape: &[Dim]| shape.iter().map(|d| d.substitute(subst)).collect();
        match self {
            Op::Reshape { shape } => Op::Reshape { shape: all(shape) },
            Op::Broadcast { shape } => Op::Broadcast { shape: all(shape) },
            Op::Slice { axis, start, end } => {
                Op::Slice { axis: *axis, start: start.substitute(subst), end: end.substitute(subst) }
            }
            Op::TopK { k, axis } => Op::TopK { k: k.substitute(subst), axis: *axis },
            other => other.clone(),
        }
    }

    /// The op's name in `.lsir` text.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Constant { .. } => "constant",
            Op::Iota { .. } => "iota",
            Op::Unary(u) => u.name(),
            Op::Clamp { .. } => "clamp",
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Select => "select",
            Op::StopGradient => "stop_gradient",
            Op::Cast { .. } => "cast",
            Op::Reduce { .. } => "reduce",
            Op::ArgMax { .. } => "argmax",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::MatMul { .. } => "matmul",
            Op::MatMulSum { .. } => "matmul_sum",
            Op::Gather { .. } => "gather",
            Op::Scatter { .. } => "scatter",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Embedding => "embedding",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Broadcast { .. } => "broadcast",
            Op::CausalConv1d => "causal_conv1d",
            Op::Rotary => "rotary",
            Op::CausalConv1dGrad => "causal_conv1d_grad",
            Op::TopK { .. } => "topk",
            Op::CrossEntropy => "cross_entropy",
            Op::CacheUpdate { .. } => "cache_update",
            Op::LsAttention { .. } => "ls_attention",
            Op::LsAttentionGrad { .. } => "ls_attention_grad",
            Op::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Op::AdamW { .. } => "adamw",
            Op::TernaryPack => "ternary_pack",
            Op::TernaryMatmul { .. } => "ternary_matmul",
            Op::Gam => "gam",
            Op::Loop { .. } => "loop",
            Op::Call { .. } => "call",
            Op::RoutedCall { .. } => "routed_call",
        }
    }

    /// Leaves take no operands and carry a declared output type.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } | Op::Iota { .. })
    }

    /// Whether the op belongs to the primitive set the DSL may emit. The match is
    /// exhaustive so that every new op (the fused ones made by the passes) must
    /// state which side it is on.
    pub fn is_primitive(&self) -> bool {
        match self {
            Op::Input { .. }
            | Op::Param { .. }
            | Op::Constant { .. }
            | Op::Iota { .. }
            | Op::Unary(_)
            | Op::Clamp { .. }
            | Op::Binary(_)
            | Op::Compare(_)
            | Op::Select
            | Op::StopGradient
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::ArgMax { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::MatMul { .. }
            | Op::Gather { .. }
            | Op::Scatter { .. }
            | Op::ScatterAdd { .. }
            | Op::Embedding
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Broadcast { .. }
            | Op::CausalConv1d
            | Op::Rotary
            | Op::TopK { .. }
            | Op::CrossEntropy
            | Op::CacheUpdate { .. }
            | Op::Loop { .. }
            | Op::Call { .. } => true,
            Op::LsAttention { .. }
            | Op::LsAttentionGrad { .. }
            | Op::CausalConv1dGrad
            | Op::SoftmaxCrossEntropy
            | Op::MatMulSum { .. }
            | Op::AdamW { .. }
            | Op::TernaryPack
            | Op::TernaryMatmul { .. }
            | Op::Gam
            | Op::RoutedCall { .. } => false,
        }
    }

    /// The name carried by `input`/`param` leaves.
    pub fn leaf_name(&self) -> Option<&str> {
        match self {
            Op::Input { name } | Op::Param { name } => Some(name),
            _ => None,
        }
    }

    /// Attributes in their canonical printing order.
    pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
        let dim = |d: &Dim| AttrValue::Dim(d.clone());
        let int = |v: usize| AttrValue::Dim(Dim::new(v as i64));
        let ints = |v: &[usize]| AttrValue::List(v.iter().map(|&x| int(x)).collect());
        let dims = |v: &[Dim]| AttrValue::List(v.iter().map(dim).collect());
        match self {
            Op::Constant { value } => vec![("value", AttrValue::Float(*value))],
            Op::Iota { axis }
            | Op::Softmax { axis }
            | Op::LogSoftmax { axis }
            | Op::Gather { axis }
            | Op::Scatter { axis }
            | Op::ScatterAdd { axis }
            | Op::Concat { axis }
            | Op::CacheUpdate { axis } => vec![("axis", int(*axis))],
            Op::Clamp { min, max } => vec![("min", AttrValue::Float(*min)), ("max", AttrValue::Float(*max))],
            Op::Cast { to } => vec![("to", AttrValue::Word(to.name().to_string()))],
            Op::Reduce { kind, axes, keep_dims } => vec![
                ("kind", AttrValue::Word(kind.name().to_string())),
                ("axes", ints(axes)),
                ("keep_dims", AttrValue::Bool(*keep_dims)),
            ],
            Op::ArgMax { axis, keep_dims } => vec![("axis", int(*axis)), ("keep_dims", AttrValue::Bool(*keep_dims))],
            Op::MatMul { trans_a, trans_b } | Op::MatMulSum { trans_a, trans_b } => {
                vec![("trans_a", AttrValue::Bool(*trans_a)), ("trans_b", AttrValue::Bool(*trans_b))]
            }
            Op::Reshape { shape } | Op::Broadcast { shape } => vec![("shape", dims(shape))],
            Op::Transpose { perm } => vec![("perm", ints(perm))],
            Op::Slice { axis, start, end } => vec![("axis", int(*axis)), ("start", dim(start)), ("end", dim(end))],
            Op::TopK { k, axis } => vec![("k", dim(k)), ("axis", int(*axis))],
            Op::Loop { body, trips } => vec![("body", AttrValue::Func(body.clone())), ("trips", int(*trips as usize))],
            Op::Call { callee } => vec![("callee", AttrValue::Func(callee.clone()))],
            Op::RoutedCall { callee, routed } => {
                vec![("callee", AttrValue::Func(callee.clone())), ("routed", int(*routed))]
            }
            Op::LsAttention { windows, scale } | Op::LsAttentionGrad { windows, scale } => {
                vec![("windows", ints(windows)), ("scale", AttrValue::Float(*scale))]
            }
            Op::AdamW { beta1, beta2, eps, weight_decay, decay } => vec![
                ("beta1", AttrValue::Float(*beta1)),
                ("beta2", AttrValue::Float(*beta2)),
                ("eps", AttrValue::Float(*eps)),
                ("weight_decay", AttrValue::Float(*weight_decay)),
                ("decay", AttrValue::List(decay.iter().map(|&d| AttrValue::Bool(d)).collect())),
            ],
            Op::TernaryMatmul { trans_b } => vec![("trans_b", AttrValue::Bool(*trans_b))],
            Op::Input { .. }
            | Op::Param { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Compare(_)
            | Op::Select
            | Op::StopGradient
            | Op::Embedding
            | Op::CausalConv1d
            | Op::CausalConv1dGrad
            | Op::Rotary
            | Op::CrossEntropy
            | Op::SoftmaxCrossEntropy
            | Op::TernaryPack
            | Op::Gam => vec![],
        }
    }

    /// Rebuilds an op from its name and attributes (the parser's half of
    /// [`Op::attrs`]); `leaf_name` is the quoted name of `input`/`param`.
    pub fn from_parts(name: &str, leaf_name: Option<String>, attrs: Vec<(String, AttrValue)>) -> Result<Op, String> {
        let mut a = Attrs { name, attrs };
        let op = match name {
            "input" | "param" => {
                let n = leaf_name.ok_or_else(|| format!("`{name}` needs a quoted name, e.g. {name} \"x\""))?;
                if name == "input" {
                    Op::Input { name: n }
                } else {
                    Op::Param { name: n }
                }
            }
            "constant" => Op::Constant { value: a.float("value")? },
            "iota" => Op::Iota { axis: a.usize("axis")? },
            "clamp" => Op::Clamp { min: a.float("min")?, max: a.float("max")? },
            "select" => Op::Select,
            "stop_gradient" => Op::StopGradient,
            "cast" => Op::Cast { to: a.word("to")?.parse()? },
            "reduce" => Op::Reduce {
                kind: ReduceKind::from_name(&a.word("kind")?).ok_or("unknown reduce kind (sum, mean, max, min)")?,
                axes: a.usizes("axes")?,
                keep_dims: a.bool("keep_dims")?,
            },
            "argmax" => Op::ArgMax { axis: a.usize("axis")?, keep_dims: a.bool("keep_dims")? },
            "softmax" => Op::Softmax { axis: a.usize("axis")? },
            "log_softmax" => Op::LogSoftmax { axis: a.usize("axis")? },
            "matmul" => Op::MatMul { trans_a: a.bool("trans_a")?, trans_b: a.bool("trans_b")? },
            "matmul_sum" => Op::MatMulSum { trans_a: a.bool("trans_a")?, trans_b: a.bool("trans_b")? },
            "gather" => Op::Gather { axis: a.usize("axis")? },
            "scatter" => Op::Scatter { axis: a.usize("axis")? },
            "scatter_add" => Op::ScatterAdd { axis: a.usize("axis")? },
            "embedding" => Op::Embedding,
            "reshape" => Op::Reshape { shape: a.dims("shape")? },
            "transpose" => Op::Transpose { perm: a.usizes("perm")? },
            "slice" => Op::Slice { axis: a.usize("axis")?, start: a.dim("start")?, end: a.dim("end")? },
            "concat" => Op::Concat { axis: a.usize("axis")? },
            "broadcast" => Op::Broadcast { shape: a.dims("shape")? },
            "causal_conv1d" => Op::CausalConv1d,
            "rotary" => Op::Rotary,
            "causal_conv1d_grad" => Op::CausalConv1dGrad,
            "topk" => Op::TopK { k: a.dim("k")?, axis: a.usize("axis")? },
            "cross_entropy" => Op::CrossEntropy,
            "cache_update" => Op::CacheUpdate { axis: a.usize("axis")? },
            "loop" => Op::Loop { body: a.func("body")?, trips: a.usize("trips")? as u64 },
            "call" => Op::Call { callee: a.func("callee")? },
            "routed_call" => Op::RoutedCall { callee: a.func("callee")?, routed: a.usize("routed")? },
            "ls_attention" => Op::LsAttention { windows: a.usizes("windows")?, scale: a.float("scale")? },
            "ls_attention_grad" => Op::LsAttentionGrad { windows: a.usizes("windows")?, scale: a.float("scale")? },
            "softmax_cross_entropy" => Op::SoftmaxCrossEntropy,
            "adamw" => Op::AdamW {
                beta1: a.float("beta1")?,
                beta2: a.float("beta2")?,
                eps: a.float("eps")?,
                weight_decay: a.float("weight_decay")?,
                decay: a.bools("decay")?,
            },
            "ternary_pack" => Op::TernaryPack,
            "ternary_matmul" => Op::TernaryMatmul { trans_b: a.bool("trans_b")? },
            "gam" => Op::Gam,
            other => {
                if let Some(u) = UnaryOp::from_name(other) {
                    Op::Unary(u)
                } else if let Some(b) = BinaryOp::from_name(other) {
                    Op::Binary(b)
                } else if let Some(c) = CmpOp::from_name(other) {
                    Op::Compare(c)
                } else {
                    return Err(format!("unknown op `{other}`"));
                }
            }
        };
        a.finish()?;
        Ok(op)
    }
}

/// Attribute lookup with errors that name the op and the key.
struct Attrs<'a> {
    name: &'a str,
    attrs: Vec<(String, AttrValue)>,
}

impl Attrs<'_> {
    fn take(&mut self, key: &str) -> Result<AttrValue, String> {
        let pos = self
            .attrs
            .iter()
            .position(|(k, _)| k == key)
            .ok_or_else(|| format!("`{}` is missing attribute `{key}`", self.name))?;
        Ok(self.attrs.remove(pos).1)
    }
    fn wrong(&self, key: &str, want: &str) -> String {
        format!("attribute `{key}` of `{}` must be {want}", self.name)
    }
    fn float(&mut self, key: &str) -> Result<f64, String> {
        match self.take(key)? {
            AttrValue::Float(v) => Ok(v),
            _ => Err(self.wrong(key, "a float such as 1.0")),
        }
    }
    fn bool(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key)? {
            AttrValue::Bool(v) => Ok(v),
            _ => Err(self.wrong(key, "true or false")),
        }
    }
    fn word(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            AttrValue::Word(v) => Ok(v),
            AttrValue::Dim(d) if d.as_symbol().is_some() => Ok(d.as_symbol().unwrap_or_default().to_string()),
            _ => Err(self.wrong(key, "a keyword")),
        }
    }
    fn func(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            AttrValue::Func(v) => Ok(v),
            _ => Err(self.wrong(key, "a function reference @name")),
        }
    }
    fn dim(&mut self, key: &str) -> Result<Dim, String> {
        match self.take(key)? {
            AttrValue::Dim(d) => Ok(d),
            _ => Err(self.wrong(key, "a dimension such as 64 or T")),
        }
    }
    fn usize(&mut self, key: &str) -> Result<usize, String> {
        let v = self.take(key)?;
        as_usize(&v).ok_or_else(|| self.wrong(key, "a non-negative integer"))
    }
    fn bools(&mut self, key: &str) -> Result<Vec<bool>, String> {
        match self.take(key)? {
            AttrValue::List(items) => items
                .iter()
                .map(|v| match v {
                    AttrValue::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.wrong(key, "a list of true/false")),
            _ => Err(self.wrong(key, "a list such as [true,false]")),
        }
    }
    fn usizes(&mut self, key: &str) -> Result<Vec<usize>, String> {
        match self.take(key)? {
            AttrValue::List(items) => items
                .iter()
                .map(as_usize)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.wrong(key, "a list of non-negative integers")),
            _ => Err(self.wrong(key, "a list such as [0,1]")),
        }
    }
    fn dims(&mut self, key: &str) -> Result<Vec<Dim>, String> {
        match self.take(key)? {
            AttrValue::List(items) => items
                .into_iter()
                .map(|v| match v {
                    AttrValue::Dim(d) => Some(d),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.wrong(key, "a list of dimensions")),
            _ => Err(self.wrong(key, "a list such as [B,T,64]")),
        }
    }
    fn finish(self) -> Result<(), String> {
        match self.attrs.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("`{}` has no attribute `{k}`", self.name)),
        }
    }
}

fn as_usize(v: &AttrValue) -> Option<usize> {
    match v {
        AttrValue::Dim(d) => d.as_const().and_then(|c| usize::try_from(c).ok()),
        _ => None,
    }
}
