//! Compiled programs: a graph at bound shapes becomes a flat list of
//! [`Launch`]es over planned memory — generated kernels (the fused groups of
//! [`crate::partition`]), library ops, and regions for loops and routed
//! calls — with every tensor at a fixed place: an offset in the plan's one
//! arena, or a persistent input or parameter buffer. Nothing about shapes is
//! left for run time: a target allocates the arena once, compiles the kernels
//! once, and runs the launches in order.
//!
//! Building a plan inlines calls, runs the work that depends only on
//! constants once at load ([`Plan::load`]), makes reshapes views of their
//! operand's storage, lets a cache update or a scatter write over its operand
//! when nothing reads the old value afterwards, and reuses arena space once a
//! value's last reader has run ([`memory`]).

mod memory;
mod print;
mod schedule;

pub use schedule::bind_inputs;

use lsc_ir::{Bindings, DType, Program};
use lsc_kir::lower::Group;

/// A tensor of a plan, by number.
pub type TensorId = usize;

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// At this byte offset of the plan's arena.
    Arena(u64),
    /// In the buffer of input `i` (set by the caller before each run).
    Input(usize),
    /// In the buffer of parameter `i` (persistent across runs).
    Param(usize),
}

/// One tensor: type, concrete shape and place.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The value it holds, as `.lsir` numbers it (`%12`, `%12.1` for a second output).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Concrete dimensions.
    pub shape: Vec<usize>,
    /// Where it lives.
    pub place: Place,
    /// The tensor whose storage it shares (itself, unless it is a reshape's
    /// view or an update written in place).
    pub storage: TensorId,
}

impl Tensor {
    /// Bytes of its storage ([`storage_bytes`]).
    pub fn bytes(&self) -> u64 {
        storage_bytes(self.dtype, &self.shape)
    }
}

/// Bytes a tensor takes in a compiled program: floats of every width as
/// f32, integers of every width as i64, bools as one byte, and a packed
/// ternary `[rows, cols]` matrix as two bit planes of `rows · ⌈cols/64⌉`
/// 64-bit words (the layout of `lsc_interp::ternary`).
pub fn storage_bytes(dtype: DType, shape: &[usize]) -> u64 {
    let n: u64 = shape.iter().map(|&d| d as u64).product();
    match dtype {
        DType::Bool => n,
        DType::Ternary => match shape {
            [rows, cols] => 2 * (*rows as u64) * (*cols as u64).div_ceil(64) * 8,
            _ => 0,
        },
        d if d.is_int() => 8 * n,
        _ => 4 * n,
    }
}

/// Which node a launch computes, for errors and profiles.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    /// The graph.
    pub graph: String,
    /// The node's number as `.lsir` prints it.
    pub node: usize,
    /// The op's name.
    pub op: &'static str,
}

/// One step of a compiled program.
#[derive(Clone, Debug)]
pub enum Launch {
    /// A generated kernel: reads `inputs` (the group's input buffers, in
    /// order), writes `outputs`.
    Kernel {
        /// What to generate (lowered by the target for its hardware).
        group: Group,
        /// Tensors read, one per input buffer of the group.
        inputs: Vec<TensorId>,
        /// Tensors written, one per output of the group.
        outputs: Vec<TensorId>,
        /// The group's last node.
        origin: Origin,
    },
    /// A library op, its symbolic attributes resolved.
    Op {
        /// The op.
        op: lsc_ir::Op,
        /// Operands.
        inputs: Vec<TensorId>,
        /// Results.
        outputs: Vec<TensorId>,
        /// The node.
        origin: Origin,
    },
    /// A library op that writes its result over its first operand
    /// (`cache_update`, `scatter`, `scatter_add`): `target` is both.
    InPlace {
        /// The op.
        op: lsc_ir::Op,
        /// The operand updated in place, which is also the result.
        target: TensorId,
        /// The other operands.
        inputs: Vec<TensorId>,
        /// The node.
        origin: Origin,
    },
    /// `loop`: the body plan run `trips` times. Its inputs are the trip
    /// number, the carried values (held in `outputs` between trips) and
    /// `invariant`; its outputs are the next carried values.
    Loop {
        /// The body, planned at these shapes.
        body: Box<Plan>,
        /// Trip count.
        trips: u64,
        /// Initial carried values.
        carried: Vec<TensorId>,
        /// Values every trip reads.
        invariant: Vec<TensorId>,
        /// The final carried values (and the carried state between trips).
        outputs: Vec<TensorId>,
        /// The node.
        origin: Origin,
    },
    /// `routed_call`: the callee on each sequence's active rows only. The row
    /// count is known at run time, so the region is planned again per count
    /// ([`build_routed`]) inside the memory of `bound`, planned for all rows.
    Routed {
        /// The callee and its plan at all rows.
        region: Box<RoutedRegion>,
        /// The `bool[B, T]` mask of active rows.
        mask: TensorId,
        /// The callee's arguments (the first `region.routed` are per row).
        args: Vec<TensorId>,
        /// Results, scattered back to `[B, T, ..]` with zero rows where inactive.
        outputs: Vec<TensorId>,
        /// The node.
        origin: Origin,
    },
}

/// The callee of a `routed_call`, ready to plan at any row count.
#[derive(Clone, Debug)]
pub struct RoutedRegion {
    /// The callee as a program's main graph, calls inlined.
    pub program: Program,
    /// How many leading arguments are per row.
    pub routed: usize,
    /// The callee planned with every row active: its arena holds any smaller plan.
    pub bound: Plan,
}

/// A graph compiled at bound shapes.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The graph's name.
    pub graph: String,
    /// The symbol values it was planned at.
    pub bindings: Bindings,
    /// Every tensor a launch reads or writes, and the interface's tensors.
    pub tensors: Vec<Tensor>,
    /// Bytes of the arena.
    pub arena_bytes: u64,
    /// Bytes if every arena tensor had its own memory.
    pub unshared_bytes: u64,
    /// Launches run once, when the plan is loaded: the values that depend on
    /// constants only (their arena space is never reused).
    pub load: Vec<Launch>,
    /// Launches of every run, in order.
    pub launches: Vec<Launch>,
    /// Inputs by name, in the graph's order.
    pub inputs: Vec<(String, TensorId)>,
    /// Parameters by name.
    pub params: Vec<(String, TensorId)>,
    /// Outputs by name, in the graph's order.
    pub outputs: Vec<(String, TensorId)>,
}

/// Plans `p`'s main graph at `bindings` (derived symbols are added).
pub fn build(p: &Program, bindings: &Bindings) -> Result<Plan, String> {
    let mut bindings = bindings.clone();
    lsc_ir::DerivedSymbol::bind_all(&p.symbols, &mut bindings)?;
    let program = prepared(p)?;
    schedule::build(&program, bindings, true, None)
}

/// Plans the callee of a routed region at `shapes` (of its inputs), inside
/// the memory layout of `region.bound`.
pub fn build_routed(region: &RoutedRegion, shapes: &[Vec<usize>]) -> Result<Plan, String> {
    let bindings = schedule::bind_inputs(&region.program.main, shapes)?;
    schedule::build(&region.program, bindings, false, Some(&region.bound))
}

/// `p` as plans see it: calls inlined, and every shared broadcast copied per
/// user so kernels can read its source through strides.
fn prepared(p: &Program) -> Result<Program, String> {
    Ok(crate::partition::unshare_broadcasts(&crate::inline::inline_calls(p)?))
}

impl Plan {
    /// The tensor of input `name`.
    pub fn input(&self, name: &str) -> Option<TensorId> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    /// How many generated kernels it launches (regions included, at the shapes planned).
    pub fn kernel_count(&self) -> usize {
        self.load.iter().chain(&self.launches).map(Launch::kernel_count).sum()
    }

    /// The plan as text (`lsc compile --emit plan`).
    pub fn to_text(&self) -> String {
        print::plan(self)
    }
}

impl Launch {
    fn kernel_count(&self) -> usize {
        match self {
            Launch::Kernel { .. } => 1,
            Launch::Loop { body, .. } => body.kernel_count(),
            Launch::Routed { region, .. } => region.bound.kernel_count(),
            Launch::Op { .. } | Launch::InPlace { .. } => 0,
        }
    }

    /// The node it computes.
    pub fn origin(&self) -> &Origin {
        match self {
            Launch::Kernel { origin, .. }
            | Launch::Op { origin, .. }
            | Launch::InPlace { origin, .. }
            | Launch::Loop { origin, .. }
            | Launch::Routed { origin, .. } => origin,
        }
    }

    /// Tensors it reads.
    pub fn reads(&self) -> Vec<TensorId> {
        match self {
            Launch::Kernel { inputs, .. } | Launch::Op { inputs, .. } => inputs.clone(),
            Launch::InPlace { target, inputs, .. } => std::iter::once(*target).chain(inputs.iter().copied()).collect(),
            Launch::Loop { carried, invariant, .. } => carried.iter().chain(invariant).copied().collect(),
            Launch::Routed { mask, args, .. } => std::iter::once(*mask).chain(args.iter().copied()).collect(),
        }
    }

    /// Tensors it writes.
    pub fn writes(&self) -> Vec<TensorId> {
        match self {
            Launch::Kernel { outputs, .. }
            | Launch::Op { outputs, .. }
            | Launch::Loop { outputs, .. }
            | Launch::Routed { outputs, .. } => outputs.clone(),
            Launch::InPlace { target, .. } => vec![*target],
        }
    }
}
