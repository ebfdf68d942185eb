//! Dead-code elimination: drops nodes that no output depends on. Inputs and
//! parameters are kept, since they are the program's interface.

use lsc_ir::{Graph, NodeId, Op, Program};
use petgraph::Direction;
use std::collections::HashMap;

/// Removes dead nodes from every graph; returns how many were removed.
pub fn eliminate_dead_code(program: &mut Program) -> usize {
    let mut removed = eliminate_in(&mut program.main);
    for f in &mut program.functions {
        removed += eliminate_in(f);
    }
    removed
}

fn eliminate_in(g: &mut Graph) -> usize {
    let n = g.dag.node_count();
    let mut live = vec![false; n];
    let mut stack: Vec<NodeId> = g.outputs.iter().map(|(_, v)| v.node).collect();
    stack.extend(g.dag.node_indices().filter(|&i| matches!(g.dag[i].op, Op::Input { .. } | Op::Param { .. })));
    while let Some(x) = stack.pop() {
        if std::mem::replace(&mut live[x.index()], true) {
            continue;
        }
        stack.extend(g.dag.neighbors_directed(x, Direction::Incoming));
    }
    let dead = live.iter().filter(|l| !**l).count();
    if dead == 0 {
        return 0;
    }
    // Rebuild in the old order so indices stay topologically sorted.
    let mut fresh = Graph::new(&g.name);
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let order = g.topo_order().unwrap_or_else(|_| g.dag.node_indices().collect());
    for old in order.into_iter().filter(|o| live[o.index()]) {
        let operands: Vec<_> = g
            .operands(old)
            .into_iter()
            .map(|mut v| {
                v.node = map[&v.node];
                v
            })
            .collect();
        let node = g.dag[old].clone();
        map.insert(old, fresh.add_node(node.op, &operands, node.outputs));
    }
    fresh.inputs = g.inputs.iter().map(|i| map[i]).collect();
    fresh.outputs = g
        .outputs
        .iter()
        .map(|(name, v)| (name.clone(), lsc_ir::ValueRef { node: map[&v.node], output: v.output }))
        .collect();
    *g = fresh;
    dead
}
