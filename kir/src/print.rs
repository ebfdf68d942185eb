//! The text form of kernel IR (`lsc compile --emit kir`).

use crate::{Binary, Compare, Expr, Index, Kernel, Stmt, Unary};
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
        .map(|(i, b)| format!("b{i}: {}{} f32[{}]", if b.output { "out " } else { "" }, b.name, b.len))
        .collect();
    let _ = writeln!(out, "kernel @{}({}) {{", k.name, bufs.join(", "));
    let _ = writeln!(
        out,
        "  // schedule: parallel outer loop: {}, vector width {}",
        k.schedule.parallel, k.schedule.vector_width
    );
    stmts(&mut out, &k.body, 1);
    out.push_str("}\n");
    out
}
