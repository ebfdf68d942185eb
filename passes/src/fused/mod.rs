//! The fused ops, one module each: the saturation rules that make the op,
//! its VJP (the rule autodiff uses where the op appears before
//! differentiation, or the VJP that emits it), and its cost in the cost model.
//! The op's typing rule is in `lsc_ir::infer` and its reference kernel in
//! `lsc_interp::kernels`, since the IR and the interpreter sit below the
//! passes; each module names them. A new fused op is an `Op` variant with its
//! typing and reference kernel, a module here, and a line in [`ALL`].
//!
//! | module | ops |
//! |---|---|
//! | [`ls_attention`] | `ls_attention`, `ls_attention_grad` |
//! | [`ternary`] | `ternary_pack`, `ternary_matmul` |
//! | [`gam`] | `gam` |
//! | [`softmax_cross_entropy`] | `softmax_cross_entropy` |
//! | [`adamw`] | `adamw` |
//! | [`matmul_sum`] | `matmul_sum` |
//! | [`routed_call`] | `routed_call` |
//! | [`causal_conv1d_grad`] | `causal_conv1d_grad` |

pub(crate) mod adamw;
pub(crate) mod causal_conv1d_grad;
pub(crate) mod gam;
pub(crate) mod ls_attention;
pub(crate) mod matmul_sum;
pub(crate) mod routed_call;
pub(crate) mod softmax_cross_entropy;
pub(crate) mod ternary;

use crate::autodiff::VjpRule;
use crate::saturate::rules::Rule;
use lsc_ir::{Op, TensorType};

/// What a fused op registers.
pub(crate) struct FusedOp {
    /// The saturation rules that make it.
    pub rules: fn() -> Vec<Rule>,
    /// VJP rules by op name.
    pub vjps: &'static [(&'static str, VjpRule)],
    /// The floating-point work of a node of this op (`None` for other ops).
    pub flops: fn(&Op, &[&TensorType], &[TensorType]) -> Option<f64>,
}

/// Every fused op.
pub(crate) const ALL: [FusedOp; 8] = [
    ls_attention::OP,
    ternary::OP,
    gam::OP,
    routed_call::OP,
    softmax_cross_entropy::OP,
    adamw::OP,
    matmul_sum::OP,
    causal_conv1d_grad::OP,
];

/// Every fused op's saturation rules.
pub(crate) fn rules() -> Vec<Rule> {
    ALL.iter().flat_map(|f| (f.rules)()).collect()
}

/// The floating-point work of a fused op's node, if `op` is one that prices it.
pub(crate) fn flops(op: &Op, ins: &[&TensorType], outs: &[TensorType]) -> Option<f64> {
    ALL.iter().find_map(|f| (f.flops)(op, ins, outs))
}

fn no_flops(_: &Op, _: &[&TensorType], _: &[TensorType]) -> Option<f64> {
    None
}

/// Elements of `t` (symbolic dims at 64).
fn numel(t: &TensorType) -> f64 {
    crate::saturate::extract::numel(t)
}

/// Elements of all of `ts`.
fn numels<'a>(ts: impl IntoIterator<Item = &'a TensorType>) -> f64 {
    ts.into_iter().map(numel).sum()
}

/// The size of axis `axis` of `t`.
fn dim(t: &TensorType, axis: usize) -> f64 {
    numel(&TensorType::new(t.dtype, [t.shape[axis].clone()]))
}
