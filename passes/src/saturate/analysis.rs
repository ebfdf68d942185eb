//! The e-class analysis: the types of the values a class stands for, so rules
//! can check shapes. Computed with the IR's own typing rules.

use super::lang::{Interner, Key, LscNode};
use egg::{Analysis, DidMerge, EGraph, Id};
use lsc_ir::infer::infer;
use lsc_ir::{Graph, TensorType};
use std::collections::HashMap;

/// Types per class, plus the interner and the program's functions.
#[derive(Default)]
pub struct Types {
    /// Key interner.
    pub interner: Interner,
    /// Functions, for the types of `call` and `loop`.
    pub functions: Vec<Graph>,
    /// Estimated seconds of one run of each function (the cost of a call).
    pub call_costs: HashMap<String, f64>,
}

/// The e-graph of the saturation passes.
pub type LscGraph = EGraph<LscNode, Types>;

/// The single type of a class (every class that is an operand is single-valued).
pub fn ty(g: &LscGraph, id: Id) -> Option<&TensorType> {
    g[id].data.first()
}

impl Analysis<LscNode> for Types {
    /// Output types (several for a multi-output op's class).
    type Data = Vec<TensorType>;

    fn make(egraph: &mut LscGraph, enode: &LscNode, _id: Id) -> Self::Data {
        let LscNode::Other(sym, children) = enode;
        match egraph.analysis.interner.key(*sym).clone() {
            Key::Proj(i) => egraph[children[0]].data.get(i as usize).cloned().into_iter().collect(),
            Key::Op(_, Some(declared)) => vec![declared],
            Key::Op(op, None) => {
                let types: Option<Vec<&TensorType>> = children.iter().map(|c| egraph[*c].data.first()).collect();
                types.and_then(|t| infer(&op, &t, &egraph.analysis.functions).ok()).unwrap_or_default()
            }
        }
    }

    fn merge(&mut self, a: &mut Self::Data, b: Self::Data) -> DidMerge {
        // Equal classes have equal types; keep what is known.
        if a.is_empty() && !b.is_empty() {
            *a = b;
            return DidMerge(true, false);
        }
        DidMerge(false, !b.is_empty() && a.is_empty())
    }
}
