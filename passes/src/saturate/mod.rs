//! Equality saturation with egg: the graph becomes an e-graph, named rule
//! groups add equivalent forms in bounded stages, and a DAG-aware extraction
//! under a cost model picks the cheapest program. Every rule preserves meaning;
//! the tests run the interpreter before and after on every built-in model.
//!
//! Rule groups, run in stages (each saturates before the next starts):
//! 1. `algebra` (transpose and reshape cancellation, units, transposes absorbed
//!    into matmul flags, scales moved through matmul; common subexpressions
//!    merge for free in the e-graph), `inference` (straight-through and
//!    `stop_gradient` are identities in value; only for graphs autodiff will
//!    not differentiate again) and `unroll` (small loops become calls);
//! 2. `attention` (causal/banded softmax attention → `ls_attention`, with its
//!    row max for the monitor), `ternary` (→ `ternary_matmul`), `gam` (→ `gam`),
//!    `routed` (a recursion step over the whole sequence runs on its active
//!    rows only: `routed_call`; forward values only);
//! 3. `step` (softmax + cross-entropy with its gradient, one AdamW over all
//!    parameters), for training-step graphs.

pub(crate) mod analysis;
pub(crate) mod extract;
pub(crate) mod lang;
mod recursion;
pub(crate) mod rules;

pub use crate::fused::routed_call::ROUTED_SHARE;
pub use extract::Machine;
pub use recursion::{UNROLL_MAX_NODES, UNROLL_MAX_TRIPS};

use analysis::{LscGraph, Types};
use egg::Id;
use lang::{node, Key};
use lsc_ir::{Graph, Program, ValueRef};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Bounds and rule selection.
#[derive(Clone, Debug)]
pub struct Config {
    /// Rule groups to run (empty: all).
    pub groups: Vec<String>,
    /// Rule groups to skip.
    pub without: Vec<String>,
    /// Stop when the e-graph has more e-nodes than this.
    pub node_limit: usize,
    /// Stop a stage after this many iterations.
    pub iter_limit: usize,
    /// Stop after this much time per graph.
    pub time_limit: Duration,
    /// The cost model's machine.
    pub machine: Machine,
    /// The graph will still be differentiated: rules that keep only forward
    /// values (the `inference` group) do not run.
    pub keep_gradients: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            groups: Vec::new(),
            without: Vec::new(),
            node_limit: 100_000,
            iter_limit: 8,
            time_limit: Duration::from_millis(500),
            machine: Machine::default(),
            keep_gradients: true,
        }
    }
}

/// Why saturation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// No rule added anything new.
    Saturated,
    /// The iteration limit.
    IterationLimit,
    /// The e-node limit.
    NodeLimit,
    /// The time limit.
    TimeLimit,
}

/// What saturation did, summed over the program's graphs.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Rule name → times it merged something new.
    pub fired: BTreeMap<String, usize>,
    /// E-nodes at the end (all graphs).
    pub enodes: usize,
    /// E-classes at the end (all graphs).
    pub eclasses: usize,
    /// Iterations (the most of any graph, all stages).
    pub iterations: usize,
    /// Why each graph's stages stopped (`stage: reason after n iterations`).
    pub stop: BTreeMap<String, String>,
    /// Estimated seconds of one run of the input (DAG cost of `@main`, each
    /// call priced at its callee's cost).
    pub cost_before: f64,
    /// Estimated seconds of one run after optimisation.
    pub cost_after: f64,
    /// Wall time.
    pub seconds: f64,
}

/// A graph loaded into an e-graph, with the classes of its interface.
struct Loaded {
    eg: LscGraph,
    inputs: Vec<Id>,
    params: Vec<Id>,
    outputs: Vec<(String, Id)>,
}

/// Estimated seconds of one run of each function.
type CallCosts = HashMap<String, f64>;

/// Loads one graph into an e-graph; calls are priced by `call_costs`.
fn load(g: &Graph, functions: &[Graph], call_costs: &CallCosts) -> Result<Loaded, String> {
    let types = Types { interner: Default::default(), functions: functions.to_vec(), call_costs: call_costs.clone() };
    let mut eg = LscGraph::new(types);
    let order = g.topo_order().map_err(|_| format!("@{} has a cycle", g.name))?;
    let mut class: HashMap<lsc_ir::NodeId, Id> = HashMap::new();
    let value = |eg: &mut LscGraph, class: &HashMap<lsc_ir::NodeId, Id>, v: ValueRef| -> Id {
        let id = class[&v.node];
        if g.node(v.node).outputs.len() == 1 {
            id
        } else {
            let n = node(&mut eg.analysis.interner, Key::Proj(v.output), vec![id]);
            eg.add(n)
        }
    };
    for &n in &order {
        let nd = g.node(n);
        let children: Vec<Id> = g.operands(n).into_iter().map(|v| value(&mut eg, &class, v)).collect();
        let declared = nd.op.is_leaf().then(|| nd.outputs[0].clone());
        let en = node(&mut eg.analysis.interner, Key::Op(nd.op.clone(), declared), children);
        let id = eg.add(en);
        class.insert(n, id);
    }
    let inputs = g.inputs.iter().map(|n| class[n]).collect();
    let params = g.params().into_iter().map(|(n, _)| class[&n]).collect();
    let outputs = g.outputs.iter().map(|(name, v)| (name.clone(), value(&mut eg, &class, *v))).collect();
    eg.rebuild();
    Ok(Loaded { eg, inputs, params, outputs })
}

/// Adds `e`; `shared` remembers the class of each shared sub-expression.
fn add_expr(eg: &mut LscGraph, e: &rules::Expr, shared: &mut HashMap<*const rules::Expr, Id>) -> Id {
    match e {
        rules::Expr::Class(id) => *id,
        rules::Expr::Node(key, children) => {
            let ch: Vec<Id> = children.iter().map(|c| add_expr(eg, c, shared)).collect();
            let n = node(&mut eg.analysis.interner, key.clone(), ch);
            eg.add(n)
        }
        rules::Expr::Shared(inner) => {
            let at = std::rc::Rc::as_ptr(inner);
            if let Some(&id) = shared.get(&at) {
                return id;
            }
            let id = add_expr(eg, inner, shared);
            shared.insert(at, id);
            id
        }
    }
}

/// One graph saturated and extracted, with its estimated seconds before and after.
struct Optimized {
    graph: Graph,
    cost_before: f64,
    cost_after: f64,
}

/// Saturates and extracts one graph. Its calls are priced at their callees'
/// cost before (`costs.0`) and after (`costs.1`) optimisation.
fn optimize_graph(
    g: &Graph,
    functions: &[Graph],
    cfg: &Config,
    stats: &mut Stats,
    costs: (&CallCosts, &CallCosts),
) -> Result<Optimized, String> {
    let start = Instant::now();
    let Loaded { mut eg, inputs, params, outputs } = load(g, functions, costs.0)?;
    let roots: Vec<Id> = inputs.iter().chain(&params).copied().chain(outputs.iter().map(|(_, id)| *id)).collect();
    let original: extract::Choice = eg.classes().map(|c| (c.id, c.nodes[0].clone())).collect();
    let cost_before = extract::dag_cost(&eg, &roots, &original, &cfg.machine);
    eg.analysis.call_costs = costs.1.clone();
    let selected = |group: &str| {
        (cfg.groups.is_empty() || cfg.groups.iter().any(|g| g == group))
            && !cfg.without.iter().any(|g| g == group)
            && !(cfg.keep_gradients && rules::FORWARD_ONLY.contains(&group))
    };
    let all = rules::all();
    let mut iterations = 0;
    let mut reasons = Vec::new();
    for stage in rules::STAGES {
        let rules: Vec<&rules::Rule> = all.iter().filter(|r| stage.contains(&r.group) && selected(r.group)).collect();
        if rules.is_empty() {
            continue;
        }
        let (stop, n) = run_stage(&mut eg, &rules, cfg, start, stats);
        iterations += n;
        reasons.push(format!("{}: {stop:?} after {n}", stage.join("+")));
    }
    let (choice, cut) = extract::extract(&eg, &roots, &cfg.machine, start + cfg.time_limit);
    if cut {
        reasons.push("extraction: TimeLimit in the DAG refinement".into());
    }
    let cost_after = extract::dag_cost(&eg, &roots, &choice, &cfg.machine);
    stats.enodes += eg.total_number_of_nodes();
    stats.eclasses += eg.number_of_classes();
    stats.iterations = stats.iterations.max(iterations);
    stats.stop.insert(g.name.clone(), reasons.join("; "));
    let graph = extract::to_graph(&eg, &choice, &g.name, &inputs, &params, &outputs)?;
    stats.seconds += start.elapsed().as_secs_f64();
    Ok(Optimized { graph, cost_before, cost_after })
}

/// The functions of `p`, each after the functions it calls (the verifier
/// rejects recursion; anything left over keeps its place at the end).
fn callees_first(p: &Program) -> Vec<&Graph> {
    let mut order: Vec<&Graph> = Vec::new();
    let mut left: Vec<&Graph> = p.functions.iter().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|f| f.callees().iter().all(|c| order.iter().any(|o| &o.name == c)));
        order.push(left.remove(ready.unwrap_or(0)));
    }
    order
}

/// Runs one stage's rules until nothing changes or a bound is hit.
fn run_stage(
    eg: &mut LscGraph,
    rules: &[&rules::Rule],
    cfg: &Config,
    start: Instant,
    stats: &mut Stats,
) -> (StopReason, usize) {
    // The bounds are checked inside an iteration too: on a graph of 40,000
    // nodes one pass of the rules can take seconds.
    let out_of_time = || start.elapsed() > cfg.time_limit;
    for iteration in 1..=cfg.iter_limit {
        let mut proposals: Vec<(Id, usize, rules::Expr)> = Vec::new();
        let mut pattern_matches = Vec::new();
        let mut cut = false;
        for (k, r) in rules.iter().enumerate() {
            if out_of_time() {
                cut = true;
                break;
            }
            match &r.apply {
                rules::Apply::Pattern(rw) => pattern_matches.push((k, rw.search(eg))),
                rules::Apply::Node(f) => {
                    let f = *f;
                    for class in eg.classes() {
                        if out_of_time() {
                            cut = true;
                            break;
                        }
                        for n in &class.nodes {
                            proposals.extend(f(eg, n).into_iter().map(|e| (class.id, k, e)));
                        }
                    }
                }
                rules::Apply::Graph(f) => proposals.extend((*f)(eg).into_iter().map(|(id, e)| (id, k, e))),
            }
        }
        let mut changed = false;
        // Patterns rewrite terms to terms of the same value, so of the same type.
        for (k, matches) in pattern_matches {
            let rules::Apply::Pattern(rw) = &rules[k].apply else { continue };
            let merged = rw.apply(eg, &matches).len();
            if merged > 0 {
                changed = true;
                *stats.fired.entry(rules[k].name.to_string()).or_insert(0) += merged;
            }
        }
        for (id, k, e) in proposals {
            if out_of_time() || eg.total_number_of_nodes() > cfg.node_limit {
                cut = true;
                break;
            }
            let new = add_expr(eg, &e, &mut HashMap::new());
            // Only a type-preserving rewrite may merge (the analysis knows both types).
            if eg[new].data != eg[id].data {
                continue;
            }
            if eg.union(id, new) {
                changed = true;
                *stats.fired.entry(rules[k].name.to_string()).or_insert(0) += 1;
            }
        }
        eg.rebuild();
        if cut {
            let reason = if out_of_time() { StopReason::TimeLimit } else { StopReason::NodeLimit };
            return (reason, iteration);
        }
        if !changed {
            return (StopReason::Saturated, iteration);
        }
        if eg.total_number_of_nodes() > cfg.node_limit {
            return (StopReason::NodeLimit, iteration);
        }
        if start.elapsed() > cfg.time_limit {
            return (StopReason::TimeLimit, iteration);
        }
    }
    (StopReason::IterationLimit, cfg.iter_limit)
}

/// Every rule's name.
pub fn rule_names() -> Vec<&'static str> {
    rules::all().iter().map(|r| r.name).collect()
}

/// The rule groups, in stage order.
pub fn groups() -> Vec<&'static str> {
    rules::STAGES.iter().flat_map(|s| s.iter().copied()).collect()
}

/// Estimated seconds of one run of `g` as it is, calls priced by `call_costs`.
fn graph_cost(g: &Graph, functions: &[Graph], call_costs: &CallCosts, machine: &Machine) -> Result<f64, String> {
    let l = load(g, functions, call_costs)?;
    let roots: Vec<Id> = l.inputs.iter().chain(&l.params).copied().chain(l.outputs.iter().map(|(_, id)| *id)).collect();
    let original: extract::Choice = l.eg.classes().map(|c| (c.id, c.nodes[0].clone())).collect();
    Ok(extract::dag_cost(&l.eg, &roots, &original, machine))
}

/// Estimated seconds of one run of `p` as it is, under the cost model (each
/// call priced at its callee's cost).
pub fn estimated_cost(p: &Program, machine: &Machine) -> Result<f64, String> {
    let mut costs = CallCosts::new();
    for f in callees_first(p) {
        let c = graph_cost(f, &p.functions, &costs, machine)?;
        costs.insert(f.name.clone(), c);
    }
    graph_cost(&p.main, &p.functions, &costs, machine)
}

/// The compiler's training pipeline: `egg(forward)` (gradients kept) →
/// autodiff → `egg(training step)`. The statistics sum both saturations;
/// their "before" cost is that of the step built from the saturated forward
/// (a caller holding the primitive step can price it with [`estimated_cost`]).
pub fn optimize_training_step(
    forward: &Program,
    opts: &crate::train::StepOptions,
    cfg: &Config,
) -> Result<(Program, Stats), String> {
    // GAM's VJP recomputes the whole mixer from its decomposition, which costs
    // more than the fused forward saves (measured 0.95× with `lsc bench`): the
    // forward keeps GAM in primitives, and the step may still fuse its forward value.
    let mut without = cfg.without.clone();
    without.push("gam".into());
    let forward_cfg = Config { keep_gradients: true, without, ..cfg.clone() };
    let (fused_forward, first) = optimize(forward, &forward_cfg)?;
    let step = crate::train::training_step(&fused_forward, opts)?;
    let (out, mut stats) = optimize(&step, &Config { keep_gradients: false, ..cfg.clone() })?;
    for (rule, n) in first.fired {
        *stats.fired.entry(rule).or_insert(0) += n;
    }
    for (graph, why) in first.stop {
        stats.stop.insert(format!("forward @{graph}"), why);
    }
    stats.enodes += first.enodes;
    stats.eclasses += first.eclasses;
    stats.iterations = stats.iterations.max(first.iterations);
    stats.seconds += first.seconds;
    Ok((out, stats))
}

/// Saturates every graph of `p` (functions keep their signatures).
pub fn optimize(p: &Program, cfg: &Config) -> Result<(Program, Stats), String> {
    let mut stats = Stats::default();
    let mut specialized = p.clone();
    let p = &mut specialized;
    let n = crate::specialize::specialize_constant_arguments(p);
    if n > 0 {
        stats.fired.insert("constant-argument".into(), n);
    }
    // Callees first, so that each call is priced at its callee's cost before and after.
    let (mut before, mut after) = (CallCosts::new(), CallCosts::new());
    let mut done: HashMap<String, Graph> = HashMap::new();
    for f in callees_first(p) {
        let o = optimize_graph(f, &p.functions, cfg, &mut stats, (&before, &after))?;
        before.insert(f.name.clone(), o.cost_before);
        after.insert(f.name.clone(), o.cost_after);
        done.insert(f.name.clone(), o.graph);
    }
    let main = optimize_graph(&p.main, &p.functions, cfg, &mut stats, (&before, &after))?;
    stats.cost_before = main.cost_before;
    stats.cost_after = main.cost_after;
    let functions = p.functions.iter().map(|f| done.remove(&f.name).expect("every function is optimised")).collect();
    let out = Program { main: main.graph, functions, symbols: p.symbols.clone() };
    lsc_ir::verify(&out).map_err(|e| format!("saturation produced an invalid program: {e}"))?;
    Ok((out, stats))
}
