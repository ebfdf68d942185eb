//! The text form of a plan (`lsc compile --emit plan`): one line per launch,
//! each tensor with its type and place (`@a128`: arena offset 128, `@in0`:
//! input 0, `@p3`: parameter 3), regions indented under their launch.

use super::{Launch, Place, Plan, TensorId};
use lsc_ir::print::op_text;
use std::fmt::Write;

/// The whole plan.
pub(super) fn plan(p: &Plan) -> String {
    let mut out = String::new();
    write_plan(p, 0, &mut out);
    out
}

fn write_plan(p: &Plan, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let bindings: Vec<String> = p.bindings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "{pad}plan @{} at [{}]: arena {} bytes ({} unshared), {} launches, {} at load",
        p.graph,
        bindings.join(", "),
        p.arena_bytes,
        p.unshared_bytes,
        p.launches.len(),
        p.load.len()
    );
    for (name, t) in &p.inputs {
        let _ = writeln!(out, "{pad}  input {name:?} {}", tensor(p, *t));
    }
    for (name, t) in &p.params {
        let _ = writeln!(out, "{pad}  param {name:?} {}", tensor(p, *t));
    }
    for (i, l) in p.load.iter().enumerate() {
        let _ = write!(out, "{pad}  load {i}: ");
        write_launch(p, l, depth, out);
    }
    for (i, l) in p.launches.iter().enumerate() {
        let _ = write!(out, "{pad}  {i}: ");
        write_launch(p, l, depth, out);
    }
    for (name, t) in &p.outputs {
        let _ = writeln!(out, "{pad}  output {name:?} = {}", tensor(p, *t));
    }
}

fn tensor(p: &Plan, t: TensorId) -> String {
    let x = &p.tensors[t];
    let shape: Vec<String> = x.shape.iter().map(|d| d.to_string()).collect();
    let place = match x.place {
        Place::Arena(o) => format!("a{o}"),
        Place::Input(i) => format!("in{i}"),
        Place::Param(i) => format!("p{i}"),
    };
    let view = if x.storage == t { String::new() } else { format!(" (in {})", p.tensors[x.storage].name) };
    format!("{} {}[{}]@{place}{view}", x.name, x.dtype, shape.join(","))
}

fn list(p: &Plan, ts: &[TensorId]) -> String {
    ts.iter().map(|&t| tensor(p, t)).collect::<Vec<_>>().join(", ")
}

fn write_launch(p: &Plan, l: &Launch, depth: usize, out: &mut String) {
    match l {
        Launch::Kernel { group, inputs, outputs, .. } => {
            let _ = writeln!(out, "kernel {} ({}) -> ({})", group.name, list(p, inputs), list(p, outputs));
        }
        Launch::Op { op, inputs, outputs, .. } => {
            let _ = writeln!(out, "{} ({}) -> ({})", op_text(op), list(p, inputs), list(p, outputs));
        }
        Launch::InPlace { op, target, inputs, .. } => {
            let _ = writeln!(out, "{} in place {} <- ({})", op_text(op), tensor(p, *target), list(p, inputs));
        }
        Launch::Loop { body, trips, carried, invariant, outputs, .. } => {
            let _ = writeln!(
                out,
                "loop x{trips} (carried {}; invariant {}) -> ({})",
                list(p, carried),
                list(p, invariant),
                list(p, outputs)
            );
            write_plan(body, depth + 2, out);
        }
        Launch::Routed { region, mask, args, outputs, .. } => {
            let _ = writeln!(
                out,
                "routed_call {{routed={}}} (mask {}; {}) -> ({})",
                region.routed,
                tensor(p, *mask),
                list(p, args),
                list(p, outputs)
            );
            write_plan(&region.bound, depth + 2, out);
        }
    }
}
