//! Static checks a backend runs before it emits code: every load and store
//! stays inside its buffer for every iteration, and only outputs are written.

use crate::{Expr, Index, Kernel, Stmt};
use std::collections::HashMap;

fn span(ix: &Index, extents: &HashMap<usize, u64>) -> Result<(i64, i64), String> {
    let (mut lo, mut hi) = (ix.offset, ix.offset);
    for &(v, stride) in &ix.terms {
        let e = *extents.get(&v).ok_or_else(|| format!("index variable i{v} is not an enclosing loop"))?;
        let reach = stride * (e.max(1) as i64 - 1);
        lo += reach.min(0);
        hi += reach.max(0);
    }
    Ok((lo, hi))
}

fn access(k: &Kernel, buf: usize, ix: &Index, extents: &HashMap<usize, u64>, store: bool) -> Result<(), String> {
    let decl = k.buffers.get(buf).ok_or_else(|| format!("kernel {}: no buffer b{buf}", k.name))?;
    if store && !decl.output {
        return Err(format!("kernel {}: stores to input buffer {}", k.name, decl.name));
    }
    let (lo, hi) = span(ix, extents)?;
    if lo < 0 || hi >= decl.len as i64 {
        return Err(format!(
            "kernel {}: buffer {} accessed at {lo}..={hi}, outside 0..{}",
            k.name, decl.name, decl.len
        ));
    }
    Ok(())
}

fn expr(k: &Kernel, e: &Expr, extents: &HashMap<usize, u64>) -> Result<(), String> {
    match e {
        Expr::Load { buf, index } => access(k, *buf, index, extents, false),
        Expr::F32(_) | Expr::I32(_) | Expr::Var(_) => Ok(()),
        Expr::Unary(_, x) | Expr::FromBits(x) | Expr::ToBits(x) | Expr::ToInt(x) | Expr::ToFloat(x) => {
            expr(k, x, extents)
        }
        Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => expr(k, a, extents).and_then(|_| expr(k, b, extents)),
        Expr::Select(c, a, b) => [c, a, b].iter().try_for_each(|x| expr(k, x, extents)),
    }
}

fn stmts(k: &Kernel, body: &[Stmt], extents: &mut HashMap<usize, u64>) -> Result<(), String> {
    for s in body {
        match s {
            Stmt::Loop { var, extent, body } => {
                extents.insert(*var, *extent);
                stmts(k, body, extents)?;
                extents.remove(var);
            }
            Stmt::Let { value, .. } | Stmt::Accumulate { value, .. } => expr(k, value, extents)?,
            Stmt::Store { buf, index, value } => {
                expr(k, value, extents)?;
                access(k, *buf, index, extents, true)?;
            }
        }
    }
    Ok(())
}

/// Whether every access of `k` is within its buffer's declared length.
pub fn in_bounds(k: &Kernel) -> Result<(), String> {
    stmts(k, &k.body, &mut HashMap::new())
}
