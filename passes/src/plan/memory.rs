//! Memory of a plan. Tensors that share storage form a class: a reshape is a
//! view of its operand, and an update written over its operand (in place)
//! joins the operand's class. A class lives from the launch that first writes
//! it to the last launch that reads it (to the end if it is returned, for
//! ever if it is computed at load); arena classes share slots by liveness,
//! best fit by size, and the slots are laid out one after another.

use super::{Launch, Place, Plan, TensorId};
use lsc_ir::Op;

/// Arena offsets are multiples of this (a cache line; a GPU's widest load).
pub const ALIGN: u64 = 64;

/// Union-find over tensors: `root[t]` leads to the tensor whose place the class takes.
struct Classes {
    parent: Vec<TensorId>,
}

impl Classes {
    fn find(&mut self, t: TensorId) -> TensorId {
        let mut r = t;
        while self.parent[r] != r {
            r = self.parent[r];
        }
        self.parent[t] = r;
        r
    }

    /// Puts `t`'s class into `into`'s (whose root stays the root).
    fn join(&mut self, t: TensorId, into: TensorId) {
        let (a, b) = (self.find(t), self.find(into));
        if a != b {
            self.parent[a] = b;
        }
    }
}

/// Whether an op may write its result over its first operand.
fn updates_in_place(op: &Op) -> bool {
    matches!(op, Op::CacheUpdate { .. } | Op::Scatter { .. } | Op::ScatterAdd { .. })
}

/// Decides in-place updates, then places every tensor of `plan` and sizes
/// its arena. `view[t]` is the tensor `t` is a view of; `top` says whether
/// the plan's inputs are buffers it owns (a region's inputs are its caller's
/// tensors and are never written); `layout` is a plan of the same graph at
/// larger shapes whose places are reused.
pub(super) fn assign(
    plan: &mut Plan,
    view: &[Option<TensorId>],
    top: bool,
    layout: Option<&Plan>,
) -> Result<(), String> {
    let n = plan.tensors.len();
    let mut classes = Classes { parent: (0..n).collect() };
    for (t, v) in view.iter().enumerate() {
        if let Some(source) = v {
            classes.join(t, *source);
        }
    }
    // Load launch j runs at time j + 1, run launch i at time L + i + 1 (L load
    // launches); returned values live past the last launch.
    let loads = plan.load.len();
    let end = loads + plan.launches.len() + 1;
    let mut last_read = vec![0usize; n];
    let mut written = vec![None; n];
    let mut returned = vec![false; n];
    let fixed: Vec<TensorId> = plan.load.iter().flat_map(Launch::writes).collect();
    for (time, launch) in plan.load.iter().chain(&plan.launches).enumerate().map(|(i, l)| (i + 1, l)) {
        for t in launch.reads() {
            last_read[t] = last_read[t].max(time);
        }
        for t in launch.writes() {
            written[t].get_or_insert(time);
        }
    }
    for (_, t) in &plan.outputs {
        returned[*t] = true;
    }
    // Per class (at its root): the last read, whether it is returned, and
    // whether it is computed at load and read by the runs (so it stays for ever).
    let mut class_last = vec![0usize; n];
    let mut class_returned = vec![false; n];
    let mut class_fixed = vec![false; n];
    for t in 0..n {
        let r = classes.find(t);
        class_last[r] = class_last[r].max(last_read[t]);
        class_returned[r] |= returned[t];
    }
    for &t in &fixed {
        let r = classes.find(t);
        class_fixed[r] = true;
    }
    for ((f, &last), &ret) in class_fixed.iter_mut().zip(&class_last).zip(&class_returned) {
        *f &= last > loads || ret;
    }
    for (i, launch) in plan.launches.iter_mut().enumerate() {
        let Launch::Op { op, inputs, outputs, origin } = launch else { continue };
        if !updates_in_place(op) {
            continue;
        }
        let (old, new) = (classes.find(inputs[0]), classes.find(outputs[0]));
        let ownable = match plan.tensors[old].place {
            Place::Arena(_) => true,
            Place::Input(_) => top,
            Place::Param(_) => false,
        };
        let now = loads + i + 1;
        if !ownable || class_last[old] != now || class_returned[old] || class_fixed[old] || old == new {
            continue;
        }
        classes.join(new, old);
        class_last[old] = class_last[old].max(class_last[new]);
        class_returned[old] |= class_returned[new];
        *launch = Launch::InPlace {
            op: op.clone(),
            target: outputs[0],
            inputs: inputs[1..].to_vec(),
            origin: origin.clone(),
        };
    }
    // Slots by liveness over the classes that live in the arena.
    let roots: Vec<TensorId> = (0..n).map(|t| classes.find(t)).collect();
    let mut bytes = vec![0u64; n];
    let mut born = vec![usize::MAX; n];
    for t in 0..n {
        let r = roots[t];
        bytes[r] = bytes[r].max(plan.tensors[t].bytes());
        if let Some(w) = written[t] {
            born[r] = born[r].min(w);
        }
    }
    let arena_roots: Vec<TensorId> =
        (0..n).filter(|&r| roots[r] == r && matches!(plan.tensors[r].place, Place::Arena(_))).collect();
    let mut order = arena_roots.clone();
    order.sort_by_key(|&r| (born[r], r));
    let mut slots: Vec<u64> = Vec::new();
    let mut slot_of = vec![usize::MAX; n];
    let mut free: Vec<usize> = Vec::new();
    let mut live: Vec<(usize, usize)> = Vec::new(); // (slot, last time)
    for &r in &order {
        let now = born[r].min(end);
        live.retain(|&(slot, last)| {
            let dead = last < now;
            if dead {
                free.push(slot);
            }
            !dead
        });
        let size = bytes[r].div_ceil(ALIGN) * ALIGN;
        let fit = (0..free.len()).filter(|&k| slots[free[k]] >= size).min_by_key(|&k| slots[free[k]]);
        let slot = match fit.or_else(|| (0..free.len()).max_by_key(|&k| slots[free[k]])) {
            Some(k) => {
                let s = free.swap_remove(k);
                slots[s] = slots[s].max(size);
                s
            }
            None => {
                slots.push(size);
                slots.len() - 1
            }
        };
        slot_of[r] = slot;
        let last = if class_returned[r] || class_fixed[r] { usize::MAX } else { class_last[r].max(now) };
        live.push((slot, last));
    }
    let mut offsets = Vec::with_capacity(slots.len());
    let mut at = 0u64;
    for &s in &slots {
        offsets.push(at);
        at += s;
    }
    for (t, &r) in roots.iter().enumerate() {
        plan.tensors[t].storage = r;
        plan.tensors[t].place = match plan.tensors[r].place {
            Place::Arena(_) => Place::Arena(offsets[slot_of[r]]),
            other => other,
        };
    }
    plan.arena_bytes = at;
    plan.unshared_bytes = arena_roots.iter().map(|&r| bytes[r].div_ceil(ALIGN) * ALIGN).sum();
    if let Some(bound) = layout {
        reuse_layout(plan, bound)?;
    }
    Ok(())
}

/// Takes every tensor's place from `bound`, the same graph planned at larger
/// shapes (so each tensor fits where its larger twin lives).
fn reuse_layout(plan: &mut Plan, bound: &Plan) -> Result<(), String> {
    if bound.tensors.len() != plan.tensors.len() {
        return Err(format!("@{}: the region's plans at two sizes do not correspond", plan.graph));
    }
    for (t, b) in plan.tensors.iter_mut().zip(&bound.tensors) {
        if t.bytes() > b.bytes() {
            return Err(format!(
                "@{}: {} needs {} bytes, more than its bound's {}",
                plan.graph,
                t.name,
                t.bytes(),
                b.bytes()
            ));
        }
        t.place = b.place;
    }
    plan.arena_bytes = bound.arena_bytes;
    Ok(())
}
