//! The e-graph language: every IR op is one e-node kind, identified by an
//! interned key (the op with its attributes, and for leaves their declared
//! type); multi-output ops are read through projection nodes.

use egg::{define_language, Id, Symbol};
use lsc_ir::{BinaryOp, CmpOp, Op, TensorType, UnaryOp};
use std::collections::HashMap;

define_language! {
    /// An e-node: an interned key (see [`Key`]) and its children.
    pub enum LscNode {
        Other(Symbol, Vec<Id>),
    }
}

/// What an e-node stands for.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// An IR op; leaves carry their declared type.
    Op(Op, Option<TensorType>),
    /// Output `i` of a multi-output node.
    Proj(u32),
}

/// Interns keys as symbols. An op without attributes or declared type is
/// its own `.lsir` name (`neg`, `stop_gradient`), so egg patterns written in
/// those names match and build its nodes; every other key is `"{index}:{name}"`.
#[derive(Clone, Debug)]
pub struct Interner {
    keys: Vec<Key>,
    /// The keys of the plain names, by name.
    plain: HashMap<&'static str, usize>,
    /// Candidate indices of each key by its printed form (`Op` holds floats,
    /// so it is not `Hash`); equality is checked within a bucket. Without it,
    /// interning is a linear search and a graph of 20,000 distinct slices quadratic.
    index: HashMap<String, Vec<usize>>,
}

impl Default for Interner {
    /// An interner that knows every plain name.
    fn default() -> Interner {
        let mut i = Interner { keys: Vec::new(), plain: HashMap::new(), index: HashMap::new() };
        for op in plain_ops() {
            i.plain.insert(op.name(), i.keys.len());
            let key = Key::Op(op, None);
            i.index.entry(format!("{key:?}")).or_default().push(i.keys.len());
            i.keys.push(key);
        }
        i
    }
}

/// Every op without attributes (and that is not a leaf with a declared type).
fn plain_ops() -> Vec<Op> {
    let named = ["select", "stop_gradient", "embedding", "causal_conv1d", "causal_conv1d_grad", "rotary"]
        .into_iter()
        .chain(["cross_entropy", "softmax_cross_entropy", "ternary_pack", "gam"])
        .filter_map(|n| Op::from_parts(n, None, Vec::new()).ok());
    UnaryOp::ALL
        .iter()
        .map(|&u| Op::Unary(u))
        .chain(BinaryOp::ALL.iter().map(|&b| Op::Binary(b)))
        .chain(CmpOp::ALL.iter().map(|&c| Op::Compare(c)))
        .chain(named)
        .collect()
}

/// Whether `key` is spelled by its plain name.
fn is_plain(key: &Key) -> bool {
    matches!(key, Key::Op(op, None) if op.attrs().is_empty() && !op.is_leaf())
}

impl Interner {
    /// The symbol of `key`, interning it if new.
    pub fn symbol(&mut self, key: Key) -> Symbol {
        if is_plain(&key) {
            if let Key::Op(op, _) = &key {
                return Symbol::from(op.name());
            }
        }
        let bucket = self.index.entry(format!("{key:?}")).or_default();
        let index = match bucket.iter().copied().find(|&i| self.keys[i] == key) {
            Some(i) => i,
            None => {
                bucket.push(self.keys.len());
                self.keys.push(key);
                self.keys.len() - 1
            }
        };
        let name = match &self.keys[index] {
            Key::Op(op, _) => op.name().to_string(),
            Key::Proj(i) => format!("out{i}"),
        };
        Symbol::from(format!("{index}:{name}"))
    }

    /// The key of a symbol made by [`Interner::symbol`] (or written in a pattern).
    pub fn key(&self, sym: Symbol) -> &Key {
        let s = sym.as_str();
        let index = match s.split_once(':') {
            Some((i, _)) => i.parse().ok(),
            None => self.plain.get(s).copied(),
        };
        index.and_then(|i| self.keys.get(i)).unwrap_or(&Key::Proj(u32::MAX))
    }
}

/// The node of `key` with `children`.
pub fn node(interner: &mut Interner, key: Key, children: Vec<Id>) -> LscNode {
    LscNode::Other(interner.symbol(key), children)
}
