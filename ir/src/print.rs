//! The `.lsir` printer. Output is canonical: nodes in a deterministic
//! topological order, numbered from 0 in each graph, so that
//! print → parse → print is the identity.

use crate::graph::{Graph, NodeId, Program, ValueRef};
use crate::op::{AttrValue, Op};
use std::collections::HashMap;
use std::fmt::Write;

/// The first line of every `.lsir` file.
pub const HEADER: &str = "lsir 1";

/// Prints a program as `.lsir` text. Fails only if a graph has a cycle
/// (which the verifier reports with more detail).
pub fn print_program(p: &Program) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push('\n');
    if !p.symbols.is_empty() {
        out.push('\n');
        for s in &p.symbols {
            let _ = writeln!(out, "{s}");
        }
    }
    for g in p.graphs() {
        out.push('\n');
        print_graph(g, &mut out)?;
    }
    Ok(out)
}

/// Quotes a name with `\"`, `\\`, `\n`, `\t` and `\u{..}` escapes.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{{{:x}}}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn write_attr(v: &AttrValue, out: &mut String) {
    match v {
        AttrValue::Dim(d) => {
            let _ = write!(out, "{d}");
        }
        AttrValue::Float(x) => {
            let _ = write!(out, "{x:?}");
        }
        AttrValue::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        AttrValue::Word(w) => out.push_str(w),
        AttrValue::Func(f) => {
            let _ = write!(out, "@{f}");
        }
        AttrValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_attr(item, out);
            }
            out.push(']');
        }
    }
}

/// Appends ` {k=v, ...}` for an op with attributes.
fn write_attrs(op: &Op, out: &mut String) {
    let attrs = op.attrs();
    if !attrs.is_empty() {
        out.push_str(" {");
        for (i, (k, v)) in attrs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{k}=");
            write_attr(v, out);
        }
        out.push('}');
    }
}

/// An op as `.lsir` spells it: its name and attributes, e.g. `reduce {kind=sum, axes=[1], keep_dims=false}`.
pub fn op_text(op: &Op) -> String {
    let mut out = op.name().to_string();
    write_attrs(op, &mut out);
    out
}

fn print_graph(g: &Graph, out: &mut String) -> Result<(), String> {
    let order = g.topo_order().map_err(|n| format!("@{}: node {} is on a cycle", g.name, n.index()))?;
    let ids: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let vref = |v: ValueRef| {
        if v.output == 0 {
            format!("%{}", ids[&v.node])
        } else {
            format!("%{}.{}", ids[&v.node], v.output)
        }
    };
    let _ = writeln!(out, "graph @{} {{", g.name);
    for &n in &order {
        let node = g.node(n);
        let _ = write!(out, "  %{} = {}", ids[&n], node.op.name());
        if let Op::Input { name } | Op::Param { name } = &node.op {
            let _ = write!(out, " {}", quote(name));
        }
        let operands = g.operands(n);
        if !node.op.is_leaf() {
            let args: Vec<String> = operands.iter().map(|v| vref(*v)).collect();
            let _ = write!(out, "({})", args.join(", "));
        }
        write_attrs(&node.op, out);
        out.push_str(" : ");
        if node.outputs.len() == 1 {
            let _ = write!(out, "{}", node.outputs[0]);
        } else {
            let ts: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
            let _ = write!(out, "({})", ts.join(", "));
        }
        out.push('\n');
    }
    for (name, v) in &g.outputs {
        if !ids.contains_key(&v.node) {
            return Err(format!("@{}: output `{name}` refers to a missing node", g.name));
        }
        let _ = writeln!(out, "  output {} = {}", quote(name), vref(*v));
    }
    out.push_str("}\n");
    Ok(())
}
