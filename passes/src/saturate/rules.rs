//! Rewrite rules as data: each has a name, a group, and a matcher that, given
//! one e-node of a class, proposes equivalent expressions for that class.
//! Shape conditions read the analysis, so a rule never fires where types differ.

use super::analysis::{ty, LscGraph};
use super::lang::{Key, LscNode};
use egg::Id;
use lsc_ir::{BinaryOp, Op};

/// An expression to add to the e-graph: an existing class or a new node.
#[derive(Clone, Debug)]
pub enum Expr {
    /// An existing class.
    Class(Id),
    /// A new node over sub-expressions.
    Node(Key, Vec<Expr>),
    /// A sub-expression used in several places, added once.
    Shared(std::rc::Rc<Expr>),
}

/// How a rule finds its matches.
pub enum Apply {
    /// A plain term rewrite, as an egg pattern over the ops' `.lsir` names.
    Pattern(egg::Rewrite<LscNode, super::analysis::Types>),
    /// Proposals for the class of one e-node: rules that read the analysis
    /// (types, constants) or compute attributes, which a pattern cannot.
    Node(fn(&LscGraph, &LscNode) -> Vec<Expr>),
    /// Proposals over the whole e-graph, each for a class (horizontal fusions,
    /// and fusions that rewrite several classes at once).
    Graph(fn(&LscGraph) -> Vec<(Id, Expr)>),
}

/// One named rewrite.
pub struct Rule {
    /// Name (as reported in the statistics).
    pub name: &'static str,
    /// Group (`--rules` / `--no-rules` select groups).
    pub group: &'static str,
    /// The matcher.
    pub apply: Apply,
}

/// The rule groups, in the stages they run in: cheap shape and algebra rules
/// saturate first, then the fusions, then the training-step fusions.
pub const STAGES: [&[&str]; 3] =
    [&["algebra", "inference", "unroll"], &["attention", "ternary", "gam", "routed"], &["step", "gradients"]];

/// Groups whose rules change gradients (they keep forward values only, or
/// make ops autodiff has no rule for): never run on a graph that autodiff
/// will still differentiate.
pub const FORWARD_ONLY: [&str; 3] = ["inference", "routed", "gradients"];

impl Rule {
    /// A rule that proposes forms for the class of one e-node.
    pub(crate) fn node(name: &'static str, group: &'static str, f: fn(&LscGraph, &LscNode) -> Vec<Expr>) -> Rule {
        Rule { name, group, apply: Apply::Node(f) }
    }

    /// A rule that proposes forms for classes over the whole e-graph.
    pub(crate) fn graph(name: &'static str, group: &'static str, f: fn(&LscGraph) -> Vec<(Id, Expr)>) -> Rule {
        Rule { name, group, apply: Apply::Graph(f) }
    }
}

/// Every rule: the algebra, inference and unroll groups here, and each fused
/// op's rules from its module ([`crate::fused`]).
pub fn all() -> Vec<Rule> {
    use super::recursion;
    let node = Rule::node;
    let pattern = |name: &'static str, group, lhs: &str, rhs: &str| {
        let (l, r): (egg::Pattern<LscNode>, egg::Pattern<LscNode>) =
            (lhs.parse().expect("a valid pattern"), rhs.parse().expect("a valid pattern"));
        let rw = egg::Rewrite::new(name, l, r).expect("a valid rewrite");
        Rule { name, group, apply: Apply::Pattern(rw) }
    };
    vec![
        node("transpose-transpose", "algebra", transpose_transpose),
        node("transpose-identity", "algebra", transpose_identity),
        node("reshape-reshape", "algebra", reshape_reshape),
        node("reshape-identity", "algebra", reshape_identity),
        pattern("neg-neg", "algebra", "(neg (neg ?x))", "?x"),
        node("mul-one", "algebra", mul_one),
        node("add-zero", "algebra", add_zero),
        node("add-concat", "algebra", add_concat),
        node("broadcast-broadcast", "algebra", broadcast_broadcast),
        node("reshape-broadcast-scalar", "algebra", reshape_broadcast_scalar),
        node("boolean-constant", "algebra", boolean_constant),
        node("matmul-absorb-transpose", "algebra", matmul_absorb_transpose),
        node("scale-through-matmul", "algebra", scale_through_matmul),
        pattern("drop-stop-gradient", "inference", "(stop_gradient ?x)", "?x"),
        // A straight-through estimator's forward value: `sg(q) + (w − sg(w)) → q`.
        pattern("straight-through-forward", "inference", "(add (stop_gradient ?q) (sub ?w (stop_gradient ?w)))", "?q"),
        node("loop-unroll", "unroll", recursion::loop_unroll),
    ]
    .into_iter()
    .chain(crate::fused::rules())
    .collect()
}

/// The ops (with children) of a class.
pub(crate) fn ops(g: &LscGraph, id: Id) -> Vec<(Op, Vec<Id>)> {
    g[id]
        .nodes
        .iter()
        .filter_map(|LscNode::Other(sym, ch)| match g.analysis.interner.key(*sym) {
            Key::Op(op, None) => Some((op.clone(), ch.clone())),
            _ => None,
        })
        .collect()
}

/// The children of the first node of class `id` whose op satisfies `want`.
pub(crate) fn find(g: &LscGraph, id: Id, want: impl Fn(&Op) -> bool) -> Option<Vec<Id>> {
    ops(g, id).into_iter().find_map(|(o, ch)| want(&o).then_some(ch))
}

/// The children of the first `want` node of class `id`.
pub(crate) fn is(g: &LscGraph, id: Id, want: &Op) -> Option<Vec<Id>> {
    find(g, id, |o| o == want)
}

/// The operand of a `broadcast` node of class `id`.
pub(crate) fn broadcast_of(g: &LscGraph, id: Id) -> Option<Id> {
    find(g, id, |o| matches!(o, Op::Broadcast { .. })).map(|ch| ch[0])
}

pub(crate) fn decode(g: &LscGraph, n: &LscNode) -> Option<(Op, Vec<Id>)> {
    let LscNode::Other(sym, ch) = n;
    match g.analysis.interner.key(*sym) {
        Key::Op(op, None) => Some((op.clone(), ch.clone())),
        _ => None,
    }
}

/// The scalar constant a class is (directly, or broadcast), if any.
pub(crate) fn constant(g: &LscGraph, id: Id) -> Option<f64> {
    for LscNode::Other(sym, ch) in &g[id].nodes {
        match g.analysis.interner.key(*sym) {
            Key::Op(Op::Constant { value }, Some(t)) if t.shape.is_empty() => return Some(*value),
            Key::Op(Op::Broadcast { .. }, None) => {
                if let Some(v) = constant(g, ch[0]) {
                    return Some(v);
                }
            }
            _ => {}
        }
    }
    None
}

/// The scalar constant `c` of a class `broadcast(c)` (or `c` itself).
pub(crate) fn broadcast_constant(g: &LscGraph, id: Id) -> Option<f64> {
    broadcast_of(g, id).and_then(|c| constant(g, c)).or_else(|| constant(g, id))
}

/// Whether some node under class `from` (any choice) is in class `target`.
pub(crate) fn reaches(g: &LscGraph, from: Id, target: Id) -> bool {
    let (target, mut seen, mut stack) = (g.find(target), std::collections::HashSet::new(), vec![g.find(from)]);
    while let Some(id) = stack.pop() {
        if id == target {
            return true;
        }
        if seen.insert(id) {
            for LscNode::Other(_, ch) in &g[id].nodes {
                stack.extend(ch.iter().map(|c| g.find(*c)));
            }
        }
    }
    false
}

pub(crate) fn op(op: Op, children: Vec<Expr>) -> Expr {
    Expr::Node(Key::Op(op, None), children)
}

fn transpose_transpose(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Transpose { perm: outer }, ch)) = decode(g, n) else { return vec![] };
    ops(g, ch[0])
        .into_iter()
        .filter_map(|(o, inner_ch)| match o {
            Op::Transpose { perm: inner } => {
                // Output axis i of the outer reads inner axis outer[i], which is x axis inner[outer[i]].
                let perm: Vec<usize> = outer.iter().map(|&i| inner[i]).collect();
                Some(op(Op::Transpose { perm }, vec![Expr::Class(inner_ch[0])]))
            }
            _ => None,
        })
        .collect()
}

fn transpose_identity(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    match decode(g, n) {
        Some((Op::Transpose { perm }, ch)) if perm.iter().enumerate().all(|(i, &p)| i == p) => vec![Expr::Class(ch[0])],
        _ => vec![],
    }
}

fn reshape_reshape(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Reshape { shape }, ch)) = decode(g, n) else { return vec![] };
    ops(g, ch[0])
        .into_iter()
        .filter_map(|(o, inner)| match o {
            Op::Reshape { .. } => Some(op(Op::Reshape { shape: shape.clone() }, vec![Expr::Class(inner[0])])),
            _ => None,
        })
        .collect()
}

fn reshape_identity(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    match decode(g, n) {
        Some((Op::Reshape { shape } | Op::Broadcast { shape }, ch))
            if ty(g, ch[0]).is_some_and(|t| t.shape == shape) =>
        {
            vec![Expr::Class(ch[0])]
        }
        _ => vec![],
    }
}

/// `broadcast(broadcast(x)) → broadcast(x)` (NumPy broadcasting composes).
fn broadcast_broadcast(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Broadcast { shape }, ch)) = decode(g, n) else { return vec![] };
    ops(g, ch[0])
        .into_iter()
        .filter(|(o, _)| matches!(o, Op::Broadcast { .. }))
        .map(|(_, inner)| op(Op::Broadcast { shape: shape.clone() }, vec![Expr::Class(inner[0])]))
        .collect()
}

/// `reshape(broadcast(s)) → broadcast(s)` for a scalar `s`.
fn reshape_broadcast_scalar(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Reshape { shape }, ch)) = decode(g, n) else { return vec![] };
    ops(g, ch[0])
        .into_iter()
        .filter(|(o, inner)| matches!(o, Op::Broadcast { .. }) && ty(g, inner[0]).is_some_and(|t| t.rank() == 0))
        .map(|(_, inner)| op(Op::Broadcast { shape: shape.clone() }, vec![Expr::Class(inner[0])]))
        .collect()
}

/// Boolean units and absorbing elements: `x ∧ true → x`, `x ∧ false → false`,
/// `x ∨ false → x`, `x ∨ true → true`, `select(true, a, b) → a`, `select(false, a, b) → b`.
fn boolean_constant(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((o, ch)) = decode(g, n) else { return vec![] };
    let truth = |id: Id| constant(g, id).map(|c| c != 0.0);
    let mut out = Vec::new();
    match o {
        Op::Binary(b @ (BinaryOp::And | BinaryOp::Or)) => {
            for (x, c) in [(ch[0], ch[1]), (ch[1], ch[0])] {
                match (b, truth(c)) {
                    (BinaryOp::And, Some(true)) | (BinaryOp::Or, Some(false)) => out.push(Expr::Class(x)),
                    (BinaryOp::And, Some(false)) | (BinaryOp::Or, Some(true)) => out.push(Expr::Class(c)),
                    _ => {}
                }
            }
        }
        Op::Select => match truth(ch[0]) {
            Some(true) => out.push(Expr::Class(ch[1])),
            Some(false) => out.push(Expr::Class(ch[2])),
            None => {}
        },
        _ => {}
    }
    out
}

/// `x ∘ c → x` when `c` is the constant `unit` (either side for commutative ops).
fn drop_unit(g: &LscGraph, n: &LscNode, which: BinaryOp, unit: f64) -> Vec<Expr> {
    let Some((Op::Binary(b), ch)) = decode(g, n) else { return vec![] };
    if b != which {
        return vec![];
    }
    let mut out = Vec::new();
    if constant(g, ch[1]) == Some(unit) {
        out.push(Expr::Class(ch[0]));
    }
    if constant(g, ch[0]) == Some(unit) {
        out.push(Expr::Class(ch[1]));
    }
    out
}

fn mul_one(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    drop_unit(g, n, BinaryOp::Mul, 1.0)
}

fn add_zero(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    drop_unit(g, n, BinaryOp::Add, 0.0)
}

/// `concat(a₁, …, aₙ) + concat(b₁, …, bₙ) → concat(a₁ + b₁, …, aₙ + bₙ)` along one
/// axis, where each `aᵢ` and `bᵢ` have one type. The gradient of a value split in
/// parts (GAM's gates) is such a sum of zero-padded concats; with `add-zero` it
/// becomes one concat of the parts' gradients.
fn add_concat(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Binary(BinaryOp::Add), ch)) = decode(g, n) else { return vec![] };
    let concats = |id: Id| -> Vec<(usize, Vec<Id>)> {
        ops(g, id)
            .into_iter()
            .filter_map(|(o, parts)| match o {
                Op::Concat { axis } => Some((axis, parts)),
                _ => None,
            })
            .collect()
    };
    let mut out = Vec::new();
    for (axis, a) in concats(ch[0]) {
        for (axis_b, b) in concats(ch[1]) {
            let aligned = axis == axis_b
                && a.len() == b.len()
                && a.iter().zip(&b).all(|(&x, &y)| ty(g, x).is_some() && ty(g, x) == ty(g, y));
            if aligned {
                let sums = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| op(Op::Binary(BinaryOp::Add), vec![Expr::Class(x), Expr::Class(y)]));
                out.push(op(Op::Concat { axis }, sums.collect()));
            }
        }
    }
    out
}

fn is_last_two_swap(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2 && perm[r - 2] == r - 1 && perm[r - 1] == r - 2 && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
}

/// `matmul(a, transpose_last(b)) → matmul{trans_b flipped}(a, b)`, and the same for `a`.
fn matmul_absorb_transpose(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::MatMul { trans_a, trans_b }, ch)) = decode(g, n) else { return vec![] };
    let mut out = Vec::new();
    for (o, inner) in ops(g, ch[1]) {
        if let Op::Transpose { perm } = o {
            if is_last_two_swap(&perm) {
                out.push(op(
                    Op::MatMul { trans_a, trans_b: !trans_b },
                    vec![Expr::Class(ch[0]), Expr::Class(inner[0])],
                ));
            }
        }
    }
    for (o, inner) in ops(g, ch[0]) {
        if let Op::Transpose { perm } = o {
            if is_last_two_swap(&perm) {
                out.push(op(
                    Op::MatMul { trans_a: !trans_a, trans_b },
                    vec![Expr::Class(inner[0]), Expr::Class(ch[1])],
                ));
            }
        }
    }
    out
}

/// `(x·c)·b ↔ (x·b)·c` for a scalar constant `c`: scale whichever tensor is smaller.
fn scale_through_matmul(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((o, ch)) = decode(g, n) else { return vec![] };
    let scalar = |c: f64, like: Id| -> Option<Expr> {
        let t = ty(g, like)?;
        let k = Expr::Node(Key::Op(Op::Constant { value: c }, Some(lsc_ir::TensorType::scalar(t.dtype))), vec![]);
        Some(op(Op::Broadcast { shape: t.shape.clone() }, vec![k]))
    };
    let mut out = Vec::new();
    match o {
        Op::MatMul { trans_a, trans_b } => {
            // matmul(mul(x, c), b) → mul(matmul(x, b), c)
            for (inner, ich) in ops(g, ch[0]) {
                if inner != Op::Binary(BinaryOp::Mul) {
                    continue;
                }
                if let Some(c) = constant(g, ich[1]) {
                    let mm = op(Op::MatMul { trans_a, trans_b }, vec![Expr::Class(ich[0]), Expr::Class(ch[1])]);
                    if let Some(k) = scalar(c, g.lookup(n.clone()).unwrap_or(ch[0])) {
                        out.push(op(Op::Binary(BinaryOp::Mul), vec![mm, k]));
                    }
                }
            }
        }
        Op::Binary(BinaryOp::Mul) => {
            // mul(matmul(x, b), c) → matmul(mul(x, c), b)
            if let Some(c) = constant(g, ch[1]) {
                for (inner, ich) in ops(g, ch[0]) {
                    if let Op::MatMul { trans_a, trans_b } = inner {
                        if let Some(k) = scalar(c, ich[0]) {
                            let scaled = op(Op::Binary(BinaryOp::Mul), vec![Expr::Class(ich[0]), k]);
                            out.push(op(Op::MatMul { trans_a, trans_b }, vec![scaled, Expr::Class(ich[1])]));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    out
}
