//! The VJP of a fused op through its primitive decomposition (GAM's, in
//! [`crate::fused::gam`]): recomputed in the backward pass.

use super::emit::{Emit, R};
use super::{backpropagate, copy_into, NodeGrad};
use lsc_ir::{Graph, Op, TensorType, ValueRef};

type G = R<Vec<Option<ValueRef>>>;

/// The VJP of a fused op through its decomposition: the decomposition is built
/// and differentiated in a scratch graph, then copied in (so the backward
/// recomputes the forward's intermediates instead of keeping them alive).
pub(crate) fn by_decomposition(
    e: &mut Emit,
    n: &NodeGrad,
    decompose: fn(&mut Emit, &[ValueRef]) -> R<Vec<ValueRef>>,
) -> G {
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
