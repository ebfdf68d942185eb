//! Whether a function may run on the active rows only (`routed_call`).
//!
//! Packing a sequence's active rows keeps their order and drops the rest. A
//! function's outputs on the kept rows are unchanged by that when every value
//! it computes is, per row, a function of that row alone, except where rows
//! meet: a comparison of two row positions (order survives packing), and a
//! reduction over rows (softmax, sum, max, a product over rows), which is only
//! allowed where the dropped rows contribute the reduction's identity. That is
//! proved from the function's `active` mask: a key whose row is inactive is
//! masked to `false`, then to `−∞` before a softmax, whose result there is 0.
//!
//! This is an abstract interpretation over the function body: every value gets
//! a role per axis, and, per row axis, the value its entries hold where that
//! row is inactive and the other row axes are active ("dead" entries). Any op
//! it does not understand on row-dependent data makes the function unroutable,
//! so the analysis errs on the side of not routing. It assumes finite inputs
//! (`x + (−∞)` is `−∞`, `0 · x` is 0).

use lsc_ir::{BinaryOp, CmpOp, Dim, Graph, NodeId, Op, ReduceKind, TensorType};
use std::collections::{HashMap, HashSet};

/// What an axis of a value depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The sequence.
    Batch,
    /// The row (packed by routing).
    Row,
    /// Neither: features, heads, weights' axes.
    Plain,
    /// Constant along the axis (broadcast or unit).
    Const,
}

/// What dead entries hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dead {
    False,
    NegInf,
    Zero,
}

#[derive(Clone, Debug)]
enum Abs {
    /// Row positions along `axis` of a rank-`rank` iota: only comparable with another.
    Index { axis: usize, rank: usize },
    /// A value with a role per axis, and the dead-entry facts per row axis.
    Val { roles: Vec<Role>, dead: Vec<(usize, Dead)>, constant: Option<f64> },
}

fn val(roles: Vec<Role>) -> Abs {
    Abs::Val { roles, dead: Vec::new(), constant: None }
}

type R<T> = Result<T, String>;

/// Checks that `f` may be called on packed active rows. Its first `routed`
/// inputs are per-row (`[B, N, ..]`); `mask` is the input, among them, that
/// holds the rows' activity (`bool[B, N]`), if any.
pub fn check_routable(f: &Graph, routed: usize, mask: Option<usize>) -> R<()> {
    let first = f.inputs.first().map(|&n| &f.node(n).outputs[0]).ok_or("the function takes no inputs")?;
    let (Some(batch), Some(row)) = (first.shape.first().cloned(), first.shape.get(1).cloned()) else {
        return Err("its first input is not per-row".into());
    };
    if row.as_symbol().is_none() {
        return Err(format!("its row dimension {row} is not a symbol"));
    }
    let order = f.topo_order().map_err(|_| "it has a cycle".to_string())?;
    let mut abs: HashMap<NodeId, Vec<Abs>> = HashMap::new();
    for (i, &n) in f.inputs.iter().enumerate() {
        let t = &f.node(n).outputs[0];
        let roles: Vec<Role> = t
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match (axis, i < routed) {
                (0, _) if *d == batch => Role::Batch,
                (1, true) => Role::Row,
                _ if *d == row => Role::Row,
                _ => Role::Plain,
            })
            .collect();
        if i < routed && roles.get(1) != Some(&Role::Row) {
            return Err(format!("routed input {i} ({t}) is not per-row"));
        }
        if i >= routed && roles.contains(&Role::Row) {
            return Err(format!("input {i} ({t}) has the row dimension but is not routed"));
        }
        let dead = if Some(i) == mask { vec![(1, Dead::False)] } else { Vec::new() };
        abs.insert(n, vec![Abs::Val { roles, dead, constant: None }]);
    }
    // Only what the outputs read matters (bodies may hold unused values, e.g. monitors).
    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = f.outputs.iter().map(|(_, v)| v.node).collect();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(f.operands(n).iter().map(|v| v.node));
        }
    }
    let ctx = Ctx { f, row };
    for &n in &order {
        if abs.contains_key(&n) || !live.contains(&n) {
            continue;
        }
        let node = f.node(n);
        let ins: Vec<&Abs> = f.operands(n).iter().map(|v| &abs[&v.node][v.output as usize]).collect();
        let types: Vec<&TensorType> = f.operands(n).iter().map(|v| f.value_type(*v)).collect();
        let out =
            ctx.transfer(n, &node.op, &ins, &types).map_err(|e| format!("%{}: {} {e}", n.index(), node.op.name()))?;
        abs.insert(n, out);
    }
    for (name, v) in &f.outputs {
        match &abs[&v.node][v.output as usize] {
            Abs::Val { roles, .. }
                if matches!(roles.first(), Some(Role::Batch | Role::Const))
                    && matches!(roles.get(1), Some(Role::Row | Role::Const))
                    && !roles[2..].contains(&Role::Row) => {}
            _ => return Err(format!("output `{name}` is not per-row")),
        }
    }
    Ok(())
}

struct Ctx<'a> {
    f: &'a Graph,
    row: Dim,
}

impl Ctx<'_> {
    fn transfer(&self, n: NodeId, op: &Op, ins: &[&Abs], types: &[&TensorType]) -> R<Vec<Abs>> {
        let out_ty = &self.f.node(n).outputs[0];
        let plain = |t: &TensorType| val(t.shape.iter().map(|_| Role::Plain).collect());
        // Work on weights and constants alone is free of rows.
        let row_free = ins.iter().zip(types).all(|(a, t)| {
            matches!(a, Abs::Val { roles, .. } if !roles.iter().any(|r| matches!(r, Role::Row | Role::Batch)))
                && !t.shape.contains(&self.row)
        });
        Ok(vec![match op {
            Op::Constant { value } => {
                Abs::Val { roles: vec![Role::Const; out_ty.rank()], dead: Vec::new(), constant: Some(*value) }
            }
            Op::Iota { axis } if out_ty.shape[*axis] == self.row => Abs::Index { axis: *axis, rank: out_ty.rank() },
            Op::Iota { axis } => {
                val((0..out_ty.rank()).map(|a| if a == *axis { Role::Plain } else { Role::Const }).collect())
            }
            Op::Broadcast { .. } => broadcast(ins[0], types[0], out_ty)?,
            Op::Transpose { perm } => {
                let (roles, dead, constant) = parts(ins[0])?;
                let at = |a: usize| perm.iter().position(|&p| p == a).expect("a permutation");
                Abs::Val {
                    roles: perm.iter().map(|&p| roles[p]).collect(),
                    dead: dead.iter().map(|&(a, d)| (at(a), d)).collect(),
                    constant,
                }
            }
            Op::Reshape { .. } => reshape(ins[0], types[0], out_ty)?,
            Op::Compare(c) => compare(*c, ins)?,
            Op::Unary(_) | Op::Clamp { .. } | Op::Cast { .. } | Op::StopGradient => {
                let (roles, _, _) = parts(ins[0])?;
                val(roles.to_vec())
            }
            Op::Binary(b) => binary(*b, ins[0], ins[1])?,
            Op::Select => select(ins)?,
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let (roles, dead, _) = parts(ins[0])?;
                let mut out = val(roles.to_vec());
                if self.over_rows(roles, types[0], *axis) {
                    if !dead.contains(&(*axis, Dead::NegInf)) {
                        return Err(format!("over rows (axis {axis}) without masking inactive rows to −∞"));
                    }
                    let kind = if matches!(op, Op::Softmax { .. }) { Dead::Zero } else { Dead::NegInf };
                    if let Abs::Val { dead, .. } = &mut out {
                        dead.push((*axis, kind));
                    }
                }
                out
            }
            Op::Reduce { kind, axes, keep_dims } => {
                let (roles, dead, _) = parts(ins[0])?;
                for &a in axes {
                    let identity = match kind {
                        ReduceKind::Sum => Some(Dead::Zero),
                        ReduceKind::Max => Some(Dead::NegInf),
                        ReduceKind::Mean | ReduceKind::Min => None,
                    };
                    if self.over_rows(roles, types[0], a) && !identity.is_some_and(|d| dead.contains(&(a, d))) {
                        return Err(format!("{kind:?} over rows (axis {a}) would see the inactive rows"));
                    }
                    if roles[a] == Role::Batch && roles.contains(&Role::Row) {
                        return Err("a reduction over sequences mixes their rows".into());
                    }
                }
                val(roles
                    .iter()
                    .enumerate()
                    .filter_map(|(a, &r)| match (axes.contains(&a), keep_dims) {
                        (false, _) => Some(r),
                        (true, true) => Some(Role::Const),
                        (true, false) => None,
                    })
                    .collect())
            }
            Op::MatMul { trans_a, trans_b } => self.matmul(ins, types, *trans_a, *trans_b)?,
            _ if row_free => return Ok(self.f.node(n).outputs.iter().map(plain).collect()),
            _ => return Err("is not understood on per-row data".into()),
        }])
    }

    /// Whether reducing `axis` combines rows.
    fn over_rows(&self, roles: &[Role], t: &TensorType, axis: usize) -> bool {
        roles[axis] == Role::Row || t.shape[axis] == self.row
    }

    fn matmul(&self, ins: &[&Abs], types: &[&TensorType], trans_a: bool, trans_b: bool) -> R<Abs> {
        let ((ra, da, _), (rb, db, _)) = (parts(ins[0])?, parts(ins[1])?);
        let (na, nb) = (ra.len(), rb.len());
        let (m, ka) = if trans_a { (na - 1, na - 2) } else { (na - 2, na - 1) };
        let (kb, nn) = if trans_b { (nb - 1, nb - 2) } else { (nb - 2, nb - 1) };
        if self.over_rows(ra, types[0], ka) || self.over_rows(rb, types[1], kb) {
            let zero = da.contains(&(ka, Dead::Zero)) || db.contains(&(kb, Dead::Zero));
            if !zero {
                return Err("contracts over rows without zeroing the inactive ones".into());
            }
        }
        // Leading (batch) axes broadcast from the right.
        let lead = (na - 2).max(nb - 2);
        let pick = |roles: &[Role], n: usize, i: usize| (i + n >= lead + 2).then(|| roles[i + n - 2 - lead]);
        let mut roles = Vec::with_capacity(lead + 2);
        for i in 0..lead {
            roles.push(join(pick(ra, na, i).unwrap_or(Role::Const), pick(rb, nb, i).unwrap_or(Role::Const))?);
        }
        roles.push(ra[m]);
        roles.push(rb[nn]);
        Ok(val(roles))
    }
}

/// A value's roles, dead-entry facts and scalar constant.
type Parts<'a> = (&'a [Role], &'a [(usize, Dead)], Option<f64>);

fn parts(a: &Abs) -> R<Parts<'_>> {
    match a {
        Abs::Val { roles, dead, constant } => Ok((roles, dead, *constant)),
        Abs::Index { .. } => Err("uses a row position other than by comparing it with another".into()),
    }
}

fn join(a: Role, b: Role) -> R<Role> {
    match (a, b) {
        (x, y) if x == y => Ok(x),
        (Role::Const, x) | (x, Role::Const) => Ok(x),
        _ => Err(format!("combines a {a:?} axis with a {b:?} axis")),
    }
}

fn joined(a: &[Role], b: &[Role]) -> R<Vec<Role>> {
    a.iter().zip(b).map(|(&x, &y)| join(x, y)).collect()
}

/// Right-aligned broadcast: new axes and expanded unit axes are constant.
fn broadcast(a: &Abs, from: &TensorType, to: &TensorType) -> R<Abs> {
    let (roles, dead, constant) = parts(a)?;
    let shift = to.rank() - from.rank();
    let roles = (0..to.rank())
        .map(|i| match i.checked_sub(shift) {
            Some(j) if from.shape[j] == to.shape[i] => roles[j],
            _ => Role::Const,
        })
        .collect();
    Ok(Abs::Val { roles, dead: dead.iter().map(|&(x, d)| (x + shift, d)).collect(), constant })
}

/// A reshape keeps batch and row axes whole; unit axes come and go; other
/// axes may merge and split among themselves.
fn reshape(a: &Abs, from: &TensorType, to: &TensorType) -> R<Abs> {
    let (roles, dead, constant) = parts(a)?;
    let unit = Dim::new(1);
    let (mut i, mut j) = (0, 0);
    let mut out = vec![Role::Const; to.rank()];
    let mut moved = Vec::new();
    loop {
        while i < from.rank() && from.shape[i] == unit {
            i += 1;
        }
        while j < to.rank() && to.shape[j] == unit {
            j += 1;
        }
        if i == from.rank() || j == to.rank() {
            break;
        }
        if from.shape[i] == to.shape[j] {
            out[j] = roles[i];
            if let Some(&(_, d)) = dead.iter().find(|(x, _)| *x == i) {
                moved.push((j, d));
            }
            i += 1;
            j += 1;
            continue;
        }
        // A group of concrete plain axes on both sides with equal products.
        let (mut pi, mut pj) = (1i64, 1i64);
        let (i0, j0) = (i, j);
        loop {
            if pi <= pj && i < from.rank() {
                pi *= from.shape[i].as_const().ok_or("merges or splits a symbolic axis")?;
                i += 1;
            } else if j < to.rank() {
                pj *= to.shape[j].as_const().ok_or("merges or splits a symbolic axis")?;
                j += 1;
            } else {
                return Err("has no matching axis groups".into());
            }
            if pi == pj {
                break;
            }
        }
        if roles[i0..i].iter().any(|r| matches!(r, Role::Row | Role::Batch)) {
            return Err("merges or splits a row or batch axis".into());
        }
        out[j0..j].iter_mut().for_each(|r| *r = Role::Plain);
    }
    if roles[i..].iter().any(|r| matches!(r, Role::Row | Role::Batch)) {
        return Err("drops a row or batch axis".into());
    }
    Ok(Abs::Val { roles: out, dead: moved, constant })
}

fn compare(c: CmpOp, ins: &[&Abs]) -> R<Abs> {
    match (ins[0], ins[1]) {
        (Abs::Index { axis: a, rank }, Abs::Index { axis: b, .. }) if a != b => {
            let roles = (0..*rank).map(|x| if x == *a || x == *b { Role::Row } else { Role::Const }).collect();
            // An inactive row never equals an active one.
            let dead = if c == CmpOp::Eq { vec![(*a, Dead::False), (*b, Dead::False)] } else { Vec::new() };
            Ok(Abs::Val { roles, dead, constant: None })
        }
        (x, y) => {
            let ((rx, _, _), (ry, _, _)) = (parts(x)?, parts(y)?);
            Ok(val(joined(rx, ry)?))
        }
    }
}

fn binary(b: BinaryOp, x: &Abs, y: &Abs) -> R<Abs> {
    let ((rx, dx, cx), (ry, dy, cy)) = (parts(x)?, parts(y)?);
    let roles = joined(rx, ry)?;
    let either = |kind: Dead| -> Vec<(usize, Dead)> {
        let mut d: Vec<_> = dx.iter().chain(dy).copied().filter(|&(_, k)| k == kind).collect();
        d.dedup();
        d
    };
    let dead = match b {
        BinaryOp::And => either(Dead::False),
        BinaryOp::Or => dx.iter().copied().filter(|e| e.1 == Dead::False && dy.contains(e)).collect(),
        BinaryOp::Add => either(Dead::NegInf),
        BinaryOp::Mul => either(Dead::Zero),
        _ => Vec::new(),
    };
    let constant = match (b, cx, cy) {
        (BinaryOp::Add, Some(p), Some(q)) => Some(p + q),
        _ => None,
    };
    Ok(Abs::Val { roles, dead, constant })
}

/// `select(c, x, y)`: where `c` is dead (`false`), the result is `y`.
fn select(ins: &[&Abs]) -> R<Abs> {
    let ((rc, dc, _), (rx, dx, _), (ry, dy, cy)) = (parts(ins[0])?, parts(ins[1])?, parts(ins[2])?);
    let roles = joined(&joined(rc, rx)?, ry)?;
    let mut dead: Vec<(usize, Dead)> = dx.iter().copied().filter(|e| dy.contains(e)).collect();
    let fill = match cy {
        Some(v) if v == f64::NEG_INFINITY => Some(Dead::NegInf),
        Some(0.0) => Some(Dead::Zero),
        _ => None,
    };
    if let Some(kind) = fill {
        dead.extend(dc.iter().filter(|e| e.1 == Dead::False).map(|&(a, _)| (a, kind)));
    }
    Ok(Abs::Val { roles, dead, constant: None })
}
