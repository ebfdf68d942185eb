//! The memory plan of a partitioned graph at bound shapes: every value a
//! kernel writes gets a slot, and a slot is reused once every reader of its
//! previous value has run (liveness over the launch order, best fit by
//! size). Inputs and parameters are the caller's and are not planned.

use crate::partition::Part;
use lsc_ir::{Bindings, Graph, NodeId, Op, Program, ValueRef};
use std::collections::HashMap;

/// The shapes to plan each graph of `p` at: `main`'s are `bindings`; a
/// function's symbols take the largest size any call passes, so one plan
/// (upper-bound buffers) serves every call, e.g. MoR's shared block running
/// on K_r tokens at each depth r. Functions no call reaches are left out.
pub fn upper_bounds(p: &Program, bindings: &Bindings) -> Result<HashMap<String, Bindings>, String> {
    let mut bounds: HashMap<String, Bindings> = HashMap::from([(p.main.name.clone(), bindings.clone())]);
    // Callers before callees; a fixpoint covers functions called from functions.
    for _ in 0..=p.functions.len() {
        let mut changed = false;
        for g in p.graphs() {
            let Some(here) = bounds.get(&g.name).cloned() else { continue };
            for n in g.dag.node_indices() {
                // Inputs and operands that do not correspond: the loop's trip
                // counter, the routed call's mask. Routed rows are at most all rows.
                let (callee, skip_inputs, skip_operands) = match &g.node(n).op {
                    Op::Call { callee } => (callee, 0, 0),
                    Op::Loop { body, .. } => (body, 1, 0),
                    Op::RoutedCall { callee, .. } => (callee, 0, 1),
                    _ => continue,
                };
                let f = p.function(callee).ok_or_else(|| format!("@{} calls unknown @{callee}", g.name))?;
                let entry = bounds.entry(f.name.clone()).or_default();
                for (&input, arg) in
                    f.inputs.iter().skip(skip_inputs).zip(g.operands(n).into_iter().skip(skip_operands))
                {
                    let sizes = g.value_type(arg).concrete_shape(&here)?;
                    for (d, size) in f.node(input).outputs[0].shape.iter().zip(sizes) {
                        if let Some(sym) = d.as_symbol() {
                            let slot = entry.entry(sym.to_string()).or_insert(0);
                            if (size as i64) > *slot {
                                *slot = size as i64;
                                changed = true;
                            }
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    Ok(bounds)
}

/// Where each kernel output lives, and what that costs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Slot sizes in bytes.
    pub slots: Vec<u64>,
    /// `(value, slot)` for every kernel output, in launch order.
    pub assignment: Vec<(ValueRef, usize)>,
    /// Bytes of all slots: the most live intermediate memory at once under this plan.
    pub peak_bytes: u64,
    /// Bytes if every value had its own buffer.
    pub unshared_bytes: u64,
}

/// Plans `g`'s intermediates for the kernels `parts` (in launch order).
pub fn plan(g: &Graph, parts: &[Part], bindings: &Bindings) -> Result<Plan, String> {
    let part_of: HashMap<NodeId, usize> =
        parts.iter().enumerate().flat_map(|(i, p)| p.nodes.iter().map(move |&n| (n, i))).collect();
    // The last kernel reading each value (graph outputs live to the end).
    let mut last_use: HashMap<ValueRef, usize> = HashMap::new();
    for (i, p) in parts.iter().enumerate() {
        for &n in &p.nodes {
            for v in g.operands(n) {
                if part_of.get(&v.node) != Some(&i) {
                    let e = last_use.entry(v).or_insert(i);
                    *e = (*e).max(i);
                }
            }
        }
    }
    for (_, v) in &g.outputs {
        last_use.insert(*v, parts.len());
    }
    let mut slots: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live: Vec<(usize, usize)> = Vec::new(); // (slot, last use)
    let mut assignment = Vec::new();
    let mut unshared = 0u64;
    for (i, p) in parts.iter().enumerate() {
        // Values whose last reader ran before this kernel give their slot back.
        live.retain(|&(slot, last)| {
            let dead = last < i;
            if dead {
                free.push(slot);
            }
            !dead
        });
        for &v in &p.outputs {
            let t = g.value_type(v);
            let bytes =
                t.concrete_shape(bindings)?.iter().product::<usize>() as u64 * u64::from(t.dtype.bits()).div_ceil(8);
            unshared += bytes;
            // Best fit: the smallest free slot that holds it, else the largest (grown), else a new one.
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slots[s] >= bytes)
                .min_by_key(|(_, &s)| slots[s])
                .map(|(k, _)| k);
            let k = fit.or_else(|| (0..free.len()).max_by_key(|&k| slots[free[k]]));
            let slot = match k {
                Some(k) => {
                    let s = free.swap_remove(k);
                    slots[s] = slots[s].max(bytes);
                    s
                }
                None => {
                    slots.push(bytes);
                    slots.len() - 1
                }
            };
            live.push((slot, last_use.get(&v).copied().unwrap_or(i)));
            assignment.push((v, slot));
        }
    }
    Ok(Plan { peak_bytes: slots.iter().sum(), slots, assignment, unshared_bytes: unshared })
}
