//! Dataflow graphs (on petgraph) and programs: a `main` graph plus named
//! functions used by `Loop` and `Call`.

use crate::infer::{infer, Signature, Signatures};
use crate::op::Op;
use crate::types::TensorType;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Identifies a node of a graph.
pub type NodeId = NodeIndex<u32>;

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    /// The producing node.
    pub node: NodeId,
    /// Which of its outputs.
    pub output: u32,
}

impl ValueRef {
    /// Output 0 of `node`.
    pub fn first(node: NodeId) -> ValueRef {
        ValueRef { node, output: 0 }
    }
}

/// A node: an op and the types of its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Output types (declared for leaves, inferred for the rest).
    pub outputs: Vec<TensorType>,
}

/// An edge: which output of the source feeds which operand slot of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    /// Operand position at the consumer.
    pub slot: u32,
    /// Output index at the producer.
    pub output: u32,
}

/// A dataflow graph with named inputs and outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// `main` for the entry graph, otherwise the function name.
    pub name: String,
    /// Nodes and operand edges.
    pub dag: DiGraph<Node, Operand>,
    /// Input nodes in argument order.
    pub inputs: Vec<NodeId>,
    /// Named results in order.
    pub outputs: Vec<(String, ValueRef)>,
}

impl Graph {
    /// The functions this graph runs: the callees of its `call`s and
    /// `routed_call`s and the bodies of its `loop`s.
    pub fn callees(&self) -> std::collections::BTreeSet<String> {
        self.dag
            .node_weights()
            .filter_map(|n| match &n.op {
                Op::Call { callee } | Op::RoutedCall { callee, .. } => Some(callee.clone()),
                Op::Loop { body, .. } => Some(body.clone()),
                _ => None,
            })
            .collect()
    }

    /// An empty graph.
    pub fn new(name: &str) -> Graph {
        Graph { name: name.to_string(), ..Graph::default() }
    }

    /// Adds a node with the given output types and operands, without checking.
    pub fn add_node(&mut self, op: Op, operands: &[ValueRef], outputs: Vec<TensorType>) -> NodeId {
        let is_input = matches!(op, Op::Input { .. });
        let id = self.dag.add_node(Node { op, outputs });
        for (slot, v) in operands.iter().enumerate() {
            self.dag.add_edge(v.node, id, Operand { slot: slot as u32, output: v.output });
        }
        if is_input {
            self.inputs.push(id);
        }
        id
    }

    /// Adds a non-leaf node whose output types are inferred; errors explain the
    /// typing rule that failed.
    pub fn add_op(&mut self, op: Op, operands: &[ValueRef], sigs: &dyn Signatures) -> Result<NodeId, String> {
        let types: Vec<TensorType> = operands.iter().map(|v| self.value_type(*v).clone()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let outputs = infer(&op, &refs, sigs)?;
        Ok(self.add_node(op, operands, outputs))
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    /// The type of one value. Panics if `v` is not in this graph (a caller bug).
    pub fn value_type(&self, v: ValueRef) -> &TensorType {
        &self.dag[v.node].outputs[v.output as usize]
    }

    /// The operands of `id`, in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<ValueRef> {
        let mut edges: Vec<(u32, ValueRef)> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().slot, ValueRef { node: e.source(), output: e.weight().output }))
            .collect();
        edges.sort_by_key(|(slot, _)| *slot);
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// Operand slots as stored (for the verifier: detects gaps and duplicates).
    pub fn operand_slots(&self, id: NodeId) -> Vec<u32> {
        let mut slots: Vec<u32> = self.dag.edges_directed(id, Direction::Incoming).map(|e| e.weight().slot).collect();
        slots.sort();
        slots
    }

    /// All node ids in a deterministic topological order (the smallest index
    /// first among ready nodes), or `Err(node)` naming a node on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        let mut indeg: Vec<usize> =
            self.dag.node_indices().map(|n| self.dag.edges_directed(n, Direction::Incoming).count()).collect();
        let mut ready: BinaryHeap<Reverse<u32>> =
            self.dag.node_indices().filter(|n| indeg[n.index()] == 0).map(|n| Reverse(n.index() as u32)).collect();
        let mut order = Vec::with_capacity(self.dag.node_count());
        while let Some(Reverse(i)) = ready.pop() {
            let n = NodeId::new(i as usize);
            order.push(n);
            for e in self.dag.edges_directed(n, Direction::Outgoing) {
                let t = e.target().index();
                indeg[t] -= 1;
                if indeg[t] == 0 {
                    ready.push(Reverse(t as u32));
                }
            }
        }
        if order.len() == self.dag.node_count() {
            Ok(order)
        } else {
            let stuck = self.dag.node_indices().find(|n| indeg[n.index()] > 0).unwrap_or_default();
            Err(stuck)
        }
    }

    /// Parameter nodes with their names, in node order.
    pub fn params(&self) -> Vec<(NodeId, &str)> {
        self.dag
            .node_indices()
            .filter_map(|n| match &self.dag[n].op {
                Op::Param { name } => Some((n, name.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The names and types of the inputs, in order.
    pub fn input_types(&self) -> Vec<(&str, &TensorType)> {
        self.inputs.iter().map(|&n| (self.dag[n].op.leaf_name().unwrap_or(""), &self.dag[n].outputs[0])).collect()
    }

    /// The function signature of this graph.
    pub fn signature(&self) -> Signature {
        Signature {
            inputs: self.inputs.iter().map(|&n| self.dag[n].outputs[0].clone()).collect(),
            outputs: self.outputs.iter().map(|(_, v)| self.value_type(*v).clone()).collect(),
        }
    }
}

/// A whole program: the `main` graph and the functions it calls.
#[derive(Clone, Debug)]
pub struct Program {
    /// The entry graph; the only one that may hold parameters.
    pub main: Graph,
    /// Functions referenced by `Loop` and `Call`, in definition order.
    pub functions: Vec<Graph>,
    /// Symbols computed from the input-bound ones before the program runs.
    pub symbols: Vec<crate::symbols::DerivedSymbol>,
}

impl Program {
    /// A program with an empty `main` graph.
    pub fn new() -> Program {
        Program { main: Graph::new("main"), functions: Vec::new(), symbols: Vec::new() }
    }

    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<&Graph> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// `main` then every function.
    pub fn graphs(&self) -> impl Iterator<Item = &Graph> {
        std::iter::once(&self.main).chain(self.functions.iter())
    }
}

impl Default for Program {
    fn default() -> Self {
        Program::new()
    }
}

impl Signatures for Program {
    fn signature(&self, name: &str) -> Option<Signature> {
        self.function(name).map(Graph::signature)
    }
}

impl Signatures for Vec<Graph> {
    fn signature(&self, name: &str) -> Option<Signature> {
        self.iter().find(|f| f.name == name).map(Graph::signature)
    }
}
