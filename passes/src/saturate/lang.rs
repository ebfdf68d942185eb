//! The e-graph language: every IR op is one e-node kind, identified by an
//! interned key (the op with its attributes, and for leaves their declared
//! type); multi-output ops are read through projection nodes.

use egg::{define_language, Id, Symbol};
use lsc_ir::{Op, TensorType};

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

/// Interns keys as symbols `"{index}:{name}"`.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    keys: Vec<Key>,
}

impl Interner {
    /// The symbol of `key`, interning it if new.
    pub fn symbol(&mut self, key: Key) -> Symbol {
        let index = match self.keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
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

    /// The key of a symbol made by [`Interner::symbol`].
    pub fn key(&self, sym: Symbol) -> &Key {
        let index: usize = sym.as_str().split(':').next().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
        self.keys.get(index).unwrap_or(&Key::Proj(u32::MAX))
    }
}

/// The node of `key` with `children`.
pub fn node(interner: &mut Interner, key: Key, children: Vec<Id>) -> LscNode {
    LscNode::Other(interner.symbol(key), children)
}
