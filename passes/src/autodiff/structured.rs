//! VJP rules of the structured ops. Weight sharing stays explicit: the
//! backward of `call f` is `call f__vjp`, and the backward of `loop f` is a
//! reverse `loop` that accumulates the gradients of the loop-invariant values.

use super::emit::{Emit, R};
use super::{backpropagate, copy_into, NodeGrad, VjpTable};
use lsc_ir::{DType, Dim, Graph, Op, TensorType, ValueRef};

type G = R<Vec<Option<ValueRef>>>;

fn function<'a>(functions: &'a [Graph], name: &str) -> R<&'a Graph> {
    functions.iter().find(|f| f.name == name).ok_or_else(|| format!("unknown function @{name}"))
}

/// Builds (once) `{f}__vjp(inputs of f.., grad of each output of f..)`, which
/// recomputes `f` and returns the gradient of each float input of `f`.
fn vjp_function(functions: &mut Vec<Graph>, table: &VjpTable, f: &str) -> R<String> {
    let name = format!("{f}__vjp");
    if functions.iter().any(|g| g.name == name) {
        return Ok(name);
    }
    let src = function(functions, f)?.clone();
    let mut g = Graph::new(&name);
    let mut args = Vec::new();
    for (n, ty) in src.input_types() {
        args.push(ValueRef::first(g.add_node(Op::Input { name: n.to_string() }, &[], vec![ty.clone()])));
    }
    let mut seeds = Vec::new();
    for (out_name, v) in &src.outputs {
        let ty = src.value_type(*v).clone();
        seeds.push(ValueRef::first(g.add_node(Op::Input { name: format!("grad.{out_name}") }, &[], vec![ty])));
    }
    let map = copy_into(&src, &mut g, &args)?;
    let seed_pairs: Vec<(ValueRef, ValueRef)> =
        src.outputs.iter().zip(&seeds).map(|((_, v), &s)| (map[v], s)).collect();
    let mut e = Emit { g: &mut g, functions, table };
    let adj = backpropagate(&mut e, &seed_pairs)?;
    let mut outs = Vec::new();
    for (i, (n, ty)) in src.input_types().into_iter().enumerate() {
        if ty.dtype.is_float() {
            let grad = match adj.get(&args[i]) {
                Some(&v) => v,
                None => e.zeros_like(args[i])?,
            };
            outs.push((format!("grad.{n}"), grad));
        }
    }
    g.outputs = outs;
    functions.push(g);
    Ok(name)
}

/// `call f(args)` → `call f__vjp(args, output grads)`.
pub(super) fn call(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Call { callee } = &n.op else { unreachable!() };
    let vjp = vjp_function(e.functions, e.table, callee)?;
    let mut args = n.operands.clone();
    for (o, g) in n.outputs.iter().zip(&n.grads) {
        args.push(match g {
            Some(g) => *g,
            None => e.zeros_like(*o)?,
        });
    }
    let grads = e.op_all(Op::Call { callee: vjp }, &args)?;
    let mut it = grads.into_iter();
    Ok(n.operands.iter().map(|&x| if e.ty(x).dtype.is_float() { it.next() } else { None }).collect())
}

/// `[1, ...shape]`
fn with_leading_one(shape: &[Dim]) -> Vec<Dim> {
    std::iter::once(Dim::new(1)).chain(shape.iter().cloned()).collect()
}

/// `[trips, ...shape]`
fn history_type(t: &TensorType, trips: u64) -> TensorType {
    TensorType::new(t.dtype, std::iter::once(Dim::new(trips as i64)).chain(t.shape.iter().cloned()))
}

/// `{f}__hist(i, carried.., history.., invariant..)`: runs `f` and records each
/// iteration's input state in `history[i]`.
fn history_function(functions: &mut Vec<Graph>, f: &str, trips: u64) -> R<String> {
    let name = format!("{f}__hist{trips}");
    if functions.iter().any(|g| g.name == name) {
        return Ok(name);
    }
    let src = function(functions, f)?.clone();
    let inputs: Vec<(String, TensorType)> =
        src.input_types().into_iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    let n_c = src.outputs.len();
    let mut g = Graph::new(&name);
    let add_input =
        |g: &mut Graph, n: String, t: TensorType| ValueRef::first(g.add_node(Op::Input { name: n }, &[], vec![t]));
    let iter = add_input(&mut g, inputs[0].0.clone(), inputs[0].1.clone());
    let carried: Vec<ValueRef> = inputs[1..=n_c].iter().map(|(n, t)| add_input(&mut g, n.clone(), t.clone())).collect();
    let hist: Vec<ValueRef> = inputs[1..=n_c]
        .iter()
        .map(|(n, t)| add_input(&mut g, format!("history.{n}"), history_type(t, trips)))
        .collect();
    let inv: Vec<ValueRef> = inputs[n_c + 1..].iter().map(|(n, t)| add_input(&mut g, n.clone(), t.clone())).collect();
    let mut args = vec![iter];
    args.extend(&carried);
    args.extend(&inv);
    let sigs = functions.clone();
    let step = g.add_op(Op::Call { callee: f.to_string() }, &args, &sigs)?;
    let mut outs: Vec<(String, ValueRef)> = src
        .outputs
        .iter()
        .enumerate()
        .map(|(j, (n, _))| (n.clone(), ValueRef { node: step, output: j as u32 }))
        .collect();
    for (j, (&c, &h)) in carried.iter().zip(&hist).enumerate() {
        let shape = with_leading_one(&g.value_type(c).shape);
        let row = ValueRef::first(g.add_op(Op::Reshape { shape }, &[c], &sigs)?);
        let written = ValueRef::first(g.add_op(Op::CacheUpdate { axis: 0 }, &[h, row, iter], &sigs)?);
        outs.push((format!("history.{}", inputs[1 + j].0), written));
    }
    g.outputs = outs;
    functions.push(g);
    Ok(name)
}

/// `{f}__bwd(i, grad carried.., grad invariant acc.., history.., invariant..)`:
/// one reverse step at iteration `trips − 1 − i`.
fn backward_function(functions: &mut Vec<Graph>, table: &VjpTable, f: &str, trips: u64) -> R<String> {
    let name = format!("{f}__bwd{trips}");
    if functions.iter().any(|g| g.name == name) {
        return Ok(name);
    }
    let vjp = vjp_function(functions, table, f)?;
    let src = function(functions, f)?.clone();
    let inputs: Vec<(String, TensorType)> =
        src.input_types().into_iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    let n_c = src.outputs.len();
    let (carried_ty, inv_ty) = (&inputs[1..=n_c], &inputs[n_c + 1..]);
    let mut g = Graph::new(&name);
    let add_input =
        |g: &mut Graph, n: String, t: TensorType| ValueRef::first(g.add_node(Op::Input { name: n }, &[], vec![t]));
    let i = add_input(&mut g, "i".into(), TensorType::scalar(DType::I64));
    let g_carried: Vec<ValueRef> = carried_ty
        .iter()
        .filter(|(_, t)| t.dtype.is_float())
        .map(|(n, t)| add_input(&mut g, format!("grad.{n}"), t.clone()))
        .collect();
    let g_inv: Vec<ValueRef> = inv_ty
        .iter()
        .filter(|(_, t)| t.dtype.is_float())
        .map(|(n, t)| add_input(&mut g, format!("grad.{n}"), t.clone()))
        .collect();
    let hist: Vec<ValueRef> =
        carried_ty.iter().map(|(n, t)| add_input(&mut g, format!("history.{n}"), history_type(t, trips))).collect();
    let inv: Vec<ValueRef> = inv_ty.iter().map(|(n, t)| add_input(&mut g, n.clone(), t.clone())).collect();
    let mut e = Emit { g: &mut g, functions, table };
    let last = e.full((trips - 1) as f64, &TensorType::scalar(DType::I64))?;
    let it = e.sub(last, i)?;
    let mut state = Vec::new();
    for (h, (_, t)) in hist.iter().zip(carried_ty) {
        let idx_ty = TensorType::new(DType::I64, with_leading_one(&t.shape));
        let idx = e.full(0.0, &idx_ty)?;
        let idx = e.add(idx, it)?;
        let row = e.op(Op::Gather { axis: 0 }, &[*h, idx])?;
        state.push(e.reshape(row, &t.shape)?);
    }
    let mut args = vec![it];
    args.extend(&state);
    args.extend(&inv);
    let mut gi = g_carried.iter();
    for (_, t) in carried_ty {
        args.push(match (t.dtype.is_float(), gi.next()) {
            (true, Some(&gr)) => gr,
            _ => e.full(0.0, t)?,
        });
    }
    let grads = e.op_all(Op::Call { callee: vjp }, &args)?;
    // f's float inputs, in order: carried then invariants (the iteration index is an integer).
    let n_cf = g_carried.len();
    let mut outs: Vec<(String, ValueRef)> = Vec::new();
    for (k, (n, _)) in carried_ty.iter().filter(|(_, t)| t.dtype.is_float()).enumerate() {
        outs.push((format!("grad.{n}"), grads[k]));
    }
    for (k, ((n, _), &acc)) in inv_ty.iter().filter(|(_, t)| t.dtype.is_float()).zip(&g_inv).enumerate() {
        let sum = e.add(acc, grads[n_cf + k])?;
        outs.push((format!("grad.{n}"), sum));
    }
    g.outputs = outs;
    functions.push(g);
    Ok(name)
}

/// `loop f (carried.., invariant..)` → a history loop recording every
/// iteration's state, then a reverse loop accumulating invariant gradients.
pub(super) fn lp(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Loop { body, trips } = &n.op else { unreachable!() };
    let (body, trips) = (body.clone(), *trips);
    let n_c = n.outputs.len();
    let (carried, inv) = n.operands.split_at(n_c);
    let hist_fn = history_function(e.functions, &body, trips)?;
    let bwd_fn = backward_function(e.functions, e.table, &body, trips)?;
    let mut hist_args: Vec<ValueRef> = carried.to_vec();
    for &c in carried {
        let t = history_type(&e.ty(c), trips);
        hist_args.push(e.full(0.0, &t)?);
    }
    hist_args.extend(inv);
    let hist_outs = e.op_all(Op::Loop { body: hist_fn, trips }, &hist_args)?;
    let history = &hist_outs[n_c..];
    let mut args = Vec::new();
    for (o, g) in n.outputs.iter().zip(&n.grads) {
        if e.ty(*o).dtype.is_float() {
            args.push(match g {
                Some(g) => *g,
                None => e.zeros_like(*o)?,
            });
        }
    }
    for &x in inv {
        if e.ty(x).dtype.is_float() {
            args.push(e.zeros_like(x)?);
        }
    }
    args.extend(history);
    args.extend(inv);
    let grads = e.op_all(Op::Loop { body: bwd_fn, trips }, &args)?;
    let mut it = grads.into_iter();
    Ok(n.operands.iter().map(|&x| if e.ty(x).dtype.is_float() { it.next() } else { None }).collect())
}
