//! The executor of compiled programs: a [`Plan`] on a [`Target`]. Memory is
//! allocated and kernels are compiled once, when the plan is loaded; a run
//! walks the launches in order with every tensor's location already known.
//! Inputs and parameters live in buffers of their own, so a caller sets them
//! between runs and feeds outputs back into them (optimizer state, decoding
//! caches) without leaving the target's memory.

use crate::target::{At, Target};
use crate::RuntimeError;
use lsc_interp::Value;
use lsc_ir::{DType, Op};
use lsc_passes::plan::{storage_bytes, Launch, Origin, Place, Plan, RoutedRegion};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A tensor's location once memory is allocated.
#[derive(Clone, Debug)]
struct Loc {
    memory: usize,
    offset: u64,
    dtype: DType,
    shape: Vec<usize>,
}

impl Loc {
    fn at<'a, M>(&'a self, memories: &'a [M]) -> At<'a, M> {
        At { memory: &memories[self.memory], offset: self.offset, dtype: self.dtype, shape: &self.shape }
    }

    fn with_shape(&self, shape: Vec<usize>) -> Loc {
        Loc { shape, ..self.clone() }
    }
}

fn ats<'a, M>(locs: &'a [Loc], memories: &'a [M]) -> Vec<At<'a, M>> {
    locs.iter().map(|l| l.at(memories)).collect()
}

/// A launch with its tensors located and its kernel compiled.
enum Step<K> {
    Kernel { kernel: K, inputs: Vec<Loc>, outputs: Vec<Loc> },
    Op { op: Op, inputs: Vec<Loc>, outputs: Vec<Loc> },
    InPlace { op: Op, target: Loc, inputs: Vec<Loc> },
    Loop { body: Box<Instance<K>>, trips: u64, counter: Loc, carried: Vec<Loc>, outputs: Vec<Loc> },
    Routed(Box<Routed<K>>),
}

/// A routed region: its memory, and its plans by active-row count.
struct Routed<K> {
    region: RoutedRegion,
    arena: usize,
    /// Packed copies of the per-row arguments, one memory each (sized for all rows).
    staging: Vec<usize>,
    mask: Loc,
    args: Vec<Loc>,
    outputs: Vec<Loc>,
    instances: HashMap<usize, Instance<K>>,
}

/// A plan with memory: where each tensor is and what each launch runs.
struct Instance<K> {
    steps: Vec<(Step<K>, Origin)>,
    outputs: Vec<Loc>,
}

/// Time per op kind: `(calls, seconds)`.
type Profile = BTreeMap<&'static str, (usize, f64)>;

impl<K> Instance<K> {
    /// Locates `plan`'s tensors (its inputs at `inputs`, parameters at
    /// `params`, the rest in `arena` or a new arena), compiles its kernels
    /// and runs its load-time launches.
    fn new<T: Target<Kernel = K>>(
        target: &T,
        memories: &mut Vec<T::Memory>,
        plan: &Plan,
        inputs: &[Loc],
        params: &[Loc],
        arena: Option<usize>,
    ) -> Result<Instance<K>, String> {
        let arena = match arena {
            Some(a) => a,
            None => {
                memories.push(target.allocate(plan.arena_bytes)?);
                memories.len() - 1
            }
        };
        let locs: Vec<Loc> = plan
            .tensors
            .iter()
            .map(|t| match t.place {
                Place::Arena(offset) => Loc { memory: arena, offset, dtype: t.dtype, shape: t.shape.clone() },
                Place::Input(i) => inputs[i].with_shape(t.shape.clone()),
                Place::Param(i) => params[i].with_shape(t.shape.clone()),
            })
            .collect();
        let mut load = Vec::with_capacity(plan.load.len());
        for l in &plan.load {
            load.push((Self::step(target, memories, l, &locs)?, l.origin().clone()));
        }
        let mut steps = Vec::with_capacity(plan.launches.len());
        for l in &plan.launches {
            steps.push((Self::step(target, memories, l, &locs)?, l.origin().clone()));
        }
        let outputs = plan.outputs.iter().map(|(_, t)| locs[*t].clone()).collect();
        let mut loaded = Instance { steps: load, outputs: Vec::new() };
        loaded.run(target, memories, &mut None).map_err(|e| e.to_string())?;
        Ok(Instance { steps, outputs })
    }

    fn step<T: Target<Kernel = K>>(
        target: &T,
        memories: &mut Vec<T::Memory>,
        launch: &Launch,
        locs: &[Loc],
    ) -> Result<Step<K>, String> {
        let get = |ts: &[usize]| ts.iter().map(|&t| locs[t].clone()).collect::<Vec<_>>();
        Ok(match launch {
            Launch::Kernel { group, inputs, outputs, .. } => {
                Step::Kernel { kernel: target.compile(group)?, inputs: get(inputs), outputs: get(outputs) }
            }
            Launch::Op { op, inputs, outputs, .. } => {
                Step::Op { op: op.clone(), inputs: get(inputs), outputs: get(outputs) }
            }
            Launch::InPlace { op, target: t, inputs, .. } => {
                Step::InPlace { op: op.clone(), target: locs[*t].clone(), inputs: get(inputs) }
            }
            Launch::Loop { body, trips, carried, invariant, outputs, .. } => {
                memories.push(target.allocate(8)?);
                let counter = Loc { memory: memories.len() - 1, offset: 0, dtype: DType::I64, shape: Vec::new() };
                // The body reads the carried values where the loop keeps them: in its outputs.
                let mut body_inputs = vec![counter.clone()];
                body_inputs.extend(get(outputs));
                body_inputs.extend(get(invariant));
                let body = Instance::new(target, memories, body, &body_inputs, &[], None)?;
                Step::Loop {
                    body: Box::new(body),
                    trips: *trips,
                    counter,
                    carried: get(carried),
                    outputs: get(outputs),
                }
            }
            Launch::Routed { region, mask, args, outputs, .. } => {
                memories.push(target.allocate(region.bound.arena_bytes)?);
                let arena = memories.len() - 1;
                let mut staging = Vec::with_capacity(region.routed);
                for &a in &args[..region.routed] {
                    memories.push(target.allocate(storage_bytes(locs[a].dtype, &locs[a].shape))?);
                    staging.push(memories.len() - 1);
                }
                Step::Routed(Box::new(Routed {
                    region: (**region).clone(),
                    arena,
                    staging,
                    mask: locs[*mask].clone(),
                    args: get(args),
                    outputs: get(outputs),
                    instances: HashMap::new(),
                }))
            }
        })
    }

    /// Runs every step in order; `profile` collects time per op kind.
    fn run<T: Target<Kernel = K>>(
        &mut self,
        target: &T,
        memories: &mut Vec<T::Memory>,
        profile: &mut Option<Profile>,
    ) -> Result<(), RuntimeError> {
        for (step, origin) in &mut self.steps {
            let start = profile.as_ref().map(|_| Instant::now());
            run_step(target, memories, step, profile)
                .map_err(|e| RuntimeError::Input(format!("@{} %{} ({}): {e}", origin.graph, origin.node, origin.op)))?;
            if let (Some(p), Some(t)) = (profile.as_mut(), start) {
                let kind = match step {
                    Step::Kernel { .. } => "fused kernel",
                    _ => origin.op,
                };
                let e = p.entry(kind).or_insert((0, 0.0));
                *e = (e.0 + 1, e.1 + t.elapsed().as_secs_f64());
            }
        }
        Ok(())
    }
}

fn run_step<T: Target>(
    target: &T,
    memories: &mut Vec<T::Memory>,
    step: &mut Step<T::Kernel>,
    profile: &mut Option<Profile>,
) -> Result<(), String> {
    match step {
        Step::Kernel { kernel, inputs, outputs } => {
            target.launch(kernel, &ats(inputs, memories), &ats(outputs, memories))
        }
        Step::Op { op, inputs, outputs } => target.run_op(op, &ats(inputs, memories), &ats(outputs, memories)),
        Step::InPlace { op, target: t, inputs } => target.run_in_place(op, t.at(memories), &ats(inputs, memories)),
        Step::Loop { body, trips, counter, carried, outputs } => {
            for (from, to) in carried.iter().zip(outputs.iter()) {
                target.copy(from.at(memories), to.at(memories))?;
            }
            for trip in 0..*trips {
                target.upload(counter.at(memories), &Value::ints(vec![], vec![trip as i64]))?;
                body.run(target, memories, profile).map_err(|e| e.to_string())?;
                for (from, to) in body.outputs.iter().zip(outputs.iter()) {
                    target.copy(from.at(memories), to.at(memories))?;
                }
            }
            Ok(())
        }
        Step::Routed(r) => run_routed(target, memories, r, profile),
    }
}

fn run_routed<T: Target>(
    target: &T,
    memories: &mut Vec<T::Memory>,
    r: &mut Routed<T::Kernel>,
    profile: &mut Option<Profile>,
) -> Result<(), String> {
    let rows = target.active_rows(r.mask.at(memories))?;
    if rows.packed == 0 {
        for out in &r.outputs {
            target.run_op(&Op::Constant { value: 0.0 }, &[], &[out.at(memories)])?;
        }
        return Ok(());
    }
    let packed: Vec<Loc> = r.args[..r.region.routed]
        .iter()
        .zip(&r.staging)
        .map(|(a, &m)| Loc { memory: m, offset: 0, dtype: a.dtype, shape: rows.packed_shape(&a.shape) })
        .collect();
    if !r.instances.contains_key(&rows.packed) {
        let mut inputs = packed.clone();
        inputs.extend(r.args[r.region.routed..].iter().cloned());
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|l| l.shape.clone()).collect();
        let plan = lsc_passes::plan::build_routed(&r.region, &shapes)?;
        let instance = Instance::new(target, memories, &plan, &inputs, &[], Some(r.arena))?;
        r.instances.insert(rows.packed, instance);
    }
    for (a, p) in r.args.iter().zip(&packed) {
        target.move_rows(&rows, true, a.at(memories), p.at(memories))?;
    }
    let instance = r.instances.get_mut(&rows.packed).ok_or("the routed region's plan is missing")?;
    instance.run(target, memories, profile).map_err(|e| e.to_string())?;
    for (from, to) in instance.outputs.iter().zip(&r.outputs) {
        target.move_rows(&rows, false, from.at(memories), to.at(memories))?;
    }
    Ok(())
}

/// A plan loaded on a target: memory allocated, kernels compiled.
pub struct Compiled<T: Target> {
    target: T,
    plan: Plan,
    memories: Vec<T::Memory>,
    main: Instance<T::Kernel>,
    inputs: Vec<(String, Loc)>,
    params: Vec<(String, Loc)>,
    outputs: Vec<(String, Loc)>,
    profile: Option<Profile>,
}

impl<T: Target> Compiled<T> {
    /// Allocates `plan`'s memory on `target`, compiles its kernels and runs its load-time launches.
    pub fn new(target: T, plan: Plan) -> Result<Compiled<T>, RuntimeError> {
        let own_bytes: u64 = plan.inputs.iter().chain(&plan.params).map(|(_, t)| plan.tensors[*t].bytes()).sum();
        let planned = plan.arena_bytes.saturating_add(own_bytes);
        if let Some(free) = target.available_memory().filter(|&free| planned > free) {
            use crate::resources::show_bytes;
            return Err(RuntimeError::Input(format!(
                "@{} needs {} on {} (arena {}, inputs and parameters {}) but {} is available; lower --batch or --seq",
                plan.graph,
                show_bytes(planned),
                target.name(),
                show_bytes(plan.arena_bytes),
                show_bytes(own_bytes),
                show_bytes(free)
            )));
        }
        let mut memories = Vec::new();
        let own = |t: usize, memories: &mut Vec<T::Memory>| -> Result<Loc, String> {
            let x = &plan.tensors[t];
            memories.push(target.allocate(x.bytes())?);
            Ok(Loc { memory: memories.len() - 1, offset: 0, dtype: x.dtype, shape: x.shape.clone() })
        };
        let located = |list: &[(String, usize)], memories: &mut Vec<T::Memory>| -> Result<Vec<(String, Loc)>, String> {
            list.iter().map(|(n, t)| Ok((n.clone(), own(*t, memories)?))).collect()
        };
        let inputs = located(&plan.inputs, &mut memories).map_err(RuntimeError::Input)?;
        let params = located(&plan.params, &mut memories).map_err(RuntimeError::Input)?;
        let input_locs: Vec<Loc> = inputs.iter().map(|(_, l)| l.clone()).collect();
        let param_locs: Vec<Loc> = params.iter().map(|(_, l)| l.clone()).collect();
        let main = Instance::new(&target, &mut memories, &plan, &input_locs, &param_locs, None)
            .map_err(|e| RuntimeError::Input(format!("loading @{} on {}: {e}", plan.graph, target.name())))?;
        let outputs = plan.outputs.iter().map(|(n, _)| n.clone()).zip(main.outputs.iter().cloned()).collect();
        Ok(Compiled { target, plan, memories, main, inputs, params, outputs, profile: None })
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Records the time per op kind of each run (see [`Compiled::profile`]).
    pub fn enable_profile(&mut self) {
        self.profile = Some(Profile::new());
    }

    /// `(op, calls, seconds)` since profiling was enabled, slowest first.
    pub fn profile(&self) -> Vec<(String, usize, f64)> {
        let mut v: Vec<_> = self.profile.iter().flatten().map(|(k, (n, t))| (k.to_string(), *n, *t)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    fn find<'a>(list: &'a [(String, Loc)], name: &str) -> Option<&'a Loc> {
        list.iter().find(|(n, _)| n == name).map(|(_, l)| l)
    }

    /// The buffer of input or parameter `name`.
    fn slot(&self, name: &str) -> Result<&Loc, RuntimeError> {
        Self::find(&self.inputs, name)
            .or_else(|| Self::find(&self.params, name))
            .ok_or_else(|| RuntimeError::Input(format!("@{} has no input or parameter `{name}`", self.plan.graph)))
    }

    /// Whether `name` is an input or a parameter.
    pub fn has(&self, name: &str) -> bool {
        self.slot(name).is_ok()
    }

    /// Sets input or parameter `name`.
    pub fn set(&mut self, name: &str, value: &Value<f32>) -> Result<(), RuntimeError> {
        let loc = self.slot(name)?;
        self.target.upload(loc.at(&self.memories), value).map_err(|e| RuntimeError::Input(format!("`{name}`: {e}")))
    }

    /// The current value of input or parameter `name`.
    pub fn get(&self, name: &str) -> Result<Value<f32>, RuntimeError> {
        let loc = self.slot(name)?;
        self.target.download(loc.at(&self.memories)).map_err(RuntimeError::Input)
    }

    /// Output `name` of the last run.
    pub fn output(&self, name: &str) -> Result<Value<f32>, RuntimeError> {
        let loc = Self::find(&self.outputs, name)
            .ok_or_else(|| RuntimeError::Input(format!("@{} has no output `{name}`", self.plan.graph)))?;
        self.target.download(loc.at(&self.memories)).map_err(RuntimeError::Input)
    }

    /// The output names, in order.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Copies output `output` of the last run into input or parameter `into`, on the target.
    pub fn feed_back(&mut self, output: &str, into: &str) -> Result<(), RuntimeError> {
        let from = Self::find(&self.outputs, output)
            .ok_or_else(|| RuntimeError::Input(format!("@{} has no output `{output}`", self.plan.graph)))?;
        let to = self.slot(into)?;
        self.target.copy(from.at(&self.memories), to.at(&self.memories)).map_err(RuntimeError::Input)
    }

    /// Waits until every launch queued on the target has run.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.target.synchronize().map_err(RuntimeError::Input)
    }

    /// Runs the launches once on the current inputs and parameters.
    pub fn run(&mut self) -> Result<(), RuntimeError> {
        self.main.run(&self.target, &mut self.memories, &mut self.profile)
    }
}
