//! The text form of kernel IR (`lsc compile --emit kir`).

use crate::{
    ArrayRef, Binary, Compare, Expr, GpuExpr, GpuStmt, Index, IntOp, Kernel, LaunchIndex, Shuffle, Stmt, Unary,
};
use std::fmt::Write;

fn index(ix: &Index) -> String {
    let mut parts: Vec<String> =
        ix.terms.iter().map(|(v, s)| if *s == 1 { format!("i{v}") } else { format!("{s}*i{v}") }).collect();
    if ix.offset != 0 || parts.is_empty() {
        parts.push(ix.offset.to_string());
    }
    parts.join(" + ")
}

fn expr(e: &Expr) -> String {
    match e {
        Expr::F32(x) => format!("{x:?}"),
        Expr::I32(x) => format!("{x}i"),
        Expr::Var(v) => format!("v{v}"),
        Expr::Load { buf, index: ix } => format!("b{buf}[{}]", index(ix)),
        Expr::Unary(op, x) => {
            let name = match op {
                Unary::Neg => "neg",
                Unary::Abs => "abs",
                Unary::Sqrt => "sqrt",
                Unary::Floor => "floor",
                Unary::Nearest => "nearest",
            };
            format!("{name}({})", expr(x))
        }
        Expr::Binary(op, a, b) => {
            let name = match op {
                Binary::Add => "add",
                Binary::Sub => "sub",
                Binary::Mul => "mul",
                Binary::Div => "div",
                Binary::Min => "min",
                Binary::Max => "max",
                Binary::IAdd => "iadd",
                Binary::ISub => "isub",
                Binary::Shl => "shl",
                Binary::ShrU => "shr_u",
                Binary::And => "and",
                Binary::Or => "or",
            };
            format!("{name}({}, {})", expr(a), expr(b))
        }
        Expr::Compare(op, a, b) => {
            let name = match op {
                Compare::Eq => "eq",
                Compare::Ne => "ne",
                Compare::Lt => "lt",
                Compare::Le => "le",
                Compare::Gt => "gt",
                Compare::Ge => "ge",
            };
            format!("{name}({}, {})", expr(a), expr(b))
        }
        Expr::Select(c, a, b) => format!("select({}, {}, {})", expr(c), expr(a), expr(b)),
        Expr::FromBits(x) => format!("from_bits({})", expr(x)),
        Expr::ToBits(x) => format!("to_bits({})", expr(x)),
        Expr::ToInt(x) => format!("to_int({})", expr(x)),
        Expr::ToFloat(x) => format!("to_float({})", expr(x)),
        Expr::Gpu(g) => gpu_expr(g),
    }
}

fn array(a: &ArrayRef) -> String {
    match a {
        ArrayRef::Shared(i) => format!("shared{i}"),
        ArrayRef::Local(i) => format!("local{i}"),
    }
}

fn gpu_expr(g: &GpuExpr) -> String {
    match g {
        GpuExpr::Index(i) => match i {
            LaunchIndex::Block => "block",
            LaunchIndex::Thread => "thread",
            LaunchIndex::BlockDim => "block_dim",
            LaunchIndex::GridDim => "grid_dim",
            LaunchIndex::Lane => "lane",
            LaunchIndex::Warp => "warp",
        }
        .to_string(),
        GpuExpr::LoadAt { buf, at } => format!("b{buf}[{}]", expr(at)),
        GpuExpr::ArrayLoad { array: a, at } => format!("{}[{}]", array(a), expr(at)),
        GpuExpr::Int(op, a, b) => {
            let name = match op {
                IntOp::Mul => "imul",
                IntOp::Div => "idiv",
                IntOp::Rem => "irem",
                IntOp::Min => "imin",
                IntOp::Max => "imax",
            };
            format!("{name}({}, {})", expr(a), expr(b))
        }
    }
}

fn gpu_stmt(out: &mut String, g: &GpuStmt, depth: usize) -> std::fmt::Result {
    let pad = "  ".repeat(depth);
    match g {
        GpuStmt::Range { var, start, end, step, body } => {
            writeln!(out, "{pad}for i{var} in {}..{} step {} {{", expr(start), expr(end), expr(step))?;
            stmts(out, body, depth + 1);
            writeln!(out, "{pad}}}")
        }
        GpuStmt::If { cond, body } => {
            writeln!(out, "{pad}if {} {{", expr(cond))?;
            stmts(out, body, depth + 1);
            writeln!(out, "{pad}}}")
        }
        GpuStmt::Set { var, value } => writeln!(out, "{pad}v{var} := {}", expr(value)),
        GpuStmt::StoreAt { buf, at, value } => writeln!(out, "{pad}b{buf}[{}] = {}", expr(at), expr(value)),
        GpuStmt::ArrayStore { array: a, at, value } => {
            writeln!(out, "{pad}{}[{}] = {}", array(a), expr(at), expr(value))
        }
        GpuStmt::Barrier => writeln!(out, "{pad}barrier"),
        GpuStmt::WarpReduce { var, op, value } => writeln!(out, "{pad}v{var} = warp_{op:?}({})", expr(value)),
        GpuStmt::Shuffle { var, value, mode, lane } => {
            let m = match mode {
                Shuffle::Index => "idx",
                Shuffle::Down => "down",
                Shuffle::Up => "up",
                Shuffle::Xor => "xor",
            };
            writeln!(out, "{pad}v{var} = shuffle_{m}({}, {})", expr(value), expr(lane))
        }
    }
}

fn stmts(out: &mut String, body: &[Stmt], depth: usize) {
    let pad = "  ".repeat(depth);
    for s in body {
        let _ = match s {
            Stmt::Loop { var, extent, body } => {
                let _ = writeln!(out, "{pad}for i{var} in 0..{extent} {{");
                stmts(out, body, depth + 1);
                writeln!(out, "{pad}}}")
            }
            Stmt::Let { var, value } => writeln!(out, "{pad}v{var} = {}", expr(value)),
            Stmt::Accumulate { var, op, value } => writeln!(out, "{pad}v{var} {op:?}= {}", expr(value)),
            Stmt::Store { buf, index: ix, value } => writeln!(out, "{pad}b{buf}[{}] = {}", index(ix), expr(value)),
            Stmt::Gpu(g) => gpu_stmt(out, g, depth),
        };
    }
}

/// The kernel as text: signature, schedule, body.
pub fn print(k: &Kernel) -> String {
    let mut out = String::new();
    let bufs: Vec<String> = k
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| format!("b{i}: {}{} {}[{}]", if b.output { "out " } else { "" }, b.name, b.elem.name(), b.len))
        .collect();
    let _ = writeln!(out, "kernel @{}({}) {{", k.name, bufs.join(", "));
    match &k.launch {
        None => {
            let _ = writeln!(
                out,
                "  // schedule: parallel outer loop: {}, vector width {}",
                k.schedule.parallel, k.schedule.vector_width
            );
        }
        Some(l) => {
            let _ = writeln!(out, "  // launch: {} blocks × {} threads", l.grid, l.block);
            for (kind, arrays) in [("shared", &l.shared), ("local", &l.local)] {
                for (i, a) in arrays.iter().enumerate() {
                    let ty = if a.scalar == crate::Scalar::I32 { "i32" } else { "f32" };
                    let _ = writeln!(out, "  {kind}{i}: {} {ty}[{}]", a.name, a.len);
                }
            }
        }
    }
    stmts(&mut out, &k.body, 1);
    out.push_str("}\n");
    out
}
