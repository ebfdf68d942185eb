//! VJP rules of the fused ops that the rewrite passes put into forward graphs
//! (which autodiff then differentiates): ternary matmul, and GAM through its
//! primitive decomposition (recomputed in the backward pass).

use super::emit::{Emit, R};
use super::{backpropagate, copy_into, NodeGrad};
use lsc_ir::{BinaryOp, Dim, Graph, Op, TensorType, UnaryOp, ValueRef};

type G = R<Vec<Option<ValueRef>>>;

/// `y = (x·w)·s`: `dx = (dy·wᵀ)·s` (a ternary matmul again), `ds = Σ dy ⊙ (x·w)`;
/// the packed weights get no gradient (training reaches the latent weights
/// through the straight-through spelling, which this op never replaces).
pub(super) fn ternary_matmul(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::TernaryMatmul { trans_b } = n.op else { unreachable!() };
    let (x, w, s) = (n.operands[0], n.operands[1], n.operands[2]);
    let Some(dy) = n.grads[0] else { return Ok(vec![None; 3]) };
    let dx = e.op(Op::TernaryMatmul { trans_b: !trans_b }, &[dy, w, s])?;
    let one = e.full(1.0, &e.ty(s))?;
    let unscaled = e.op(Op::TernaryMatmul { trans_b }, &[x, w, one])?;
    let prod = e.mul(dy, unscaled)?;
    let axes: Vec<usize> = (0..e.ty(prod).rank()).collect();
    let ds = e.sum(prod, axes)?;
    Ok(vec![Some(dx), None, Some(ds)])
}

/// GAM in primitives: the function [`Op::Gam`] computes.
pub fn gam_decomposed(e: &mut Emit, args: &[ValueRef]) -> R<Vec<ValueRef>> {
    let (x, conv_w, conv_b, memory, gate_logits) = (args[0], args[1], args[2], args[3], args[4]);
    let xt = e.ty(x);
    let d = xt.shape[2].clone();
    let conv = e.op(Op::CausalConv1d, &[x, conv_w])?;
    let bias = e.broadcast(conv_b, &xt.shape)?;
    let local = e.add(conv, bias)?;
    let scores = e.op(Op::MatMul { trans_a: false, trans_b: true }, &[x, memory])?;
    let p = e.op(Op::Softmax { axis: 2 }, &[scores])?;
    let glob = e.op(Op::MatMul { trans_a: false, trans_b: false }, &[p, memory])?;
    let gates = e.unary(UnaryOp::Sigmoid, gate_logits)?;
    let g_local = e.op(Op::Slice { axis: 2, start: Dim::new(0), end: d.clone() }, &[gates])?;
    let g_global = e.op(Op::Slice { axis: 2, start: d.clone(), end: d.scale(2) }, &[gates])?;
    let a = e.mul(g_local, local)?;
    let b = e.bin(BinaryOp::Mul, g_global, glob)?;
    Ok(vec![e.add(a, b)?])
}

pub(super) fn gam(e: &mut Emit, n: &NodeGrad) -> G {
    by_decomposition(e, n, gam_decomposed)
}

/// The VJP of a fused op through its decomposition: the decomposition is built
/// and differentiated in a scratch graph, then copied in (so the backward
/// recomputes the forward's intermediates instead of keeping them alive).
fn by_decomposition(e: &mut Emit, n: &NodeGrad, decompose: fn(&mut Emit, &[ValueRef]) -> R<Vec<ValueRef>>) -> G {
    let mut scratch = Graph::new("decomposition");
    let input =
        |g: &mut Graph, name: String, ty: TensorType| ValueRef::first(g.add_node(Op::Input { name }, &[], vec![ty]));
    let args: Vec<ValueRef> =
        n.operands.iter().enumerate().map(|(i, v)| input(&mut scratch, format!("x{i}"), e.ty(*v))).collect();
    let seeds: Vec<(usize, ValueRef)> = n
        .grads
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.map(|g| (i, input(&mut scratch, format!("dy{i}"), e.ty(g)))))
        .collect();
    let mut functions = Vec::new();
    let mut sub = Emit { g: &mut scratch, functions: &mut functions, table: e.table };
    let outs = decompose(&mut sub, &args)?;
    let pairs: Vec<(ValueRef, ValueRef)> = seeds.iter().map(|&(i, dy)| (outs[i], dy)).collect();
    let adj = backpropagate(&mut sub, &pairs)?;
    let mut wanted = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if let (Some(&g), true) = (adj.get(a), e.ty(n.operands[i]).dtype.is_float()) {
            scratch.outputs.push((format!("d{i}"), g));
            wanted.push(i);
        }
    }
    let mut actual = n.operands.clone();
    actual.extend(n.grads.iter().flatten().copied());
    let map = copy_into(&scratch, e.g, &actual)?;
    let mut grads = vec![None; n.operands.len()];
    for (i, (_, g)) in wanted.into_iter().zip(&scratch.outputs) {
        grads[i] = Some(map[g]);
    }
    Ok(grads)
}
