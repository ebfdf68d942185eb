//! The interpreter's [`Accelerator`] on generated code: every fused kernel
//! of a partitioned program runs as machine code from a native backend,
//! compiled once per shape it meets; everything else stays with the
//! interpreter's kernels (GEMM, fused attention, …).

use lsc_interp::{Accelerator, FusedGroup, Value};
use lsc_ir::{Bindings, Graph, Program, ValueRef};
use lsc_kir::native::NativeCompiler;
use lsc_passes::partition::{lowerable, partition, to_group, Part};
use std::collections::HashMap;
use std::sync::Mutex;

/// Compiled kernels by `graph:group:bindings`: kernel name and the outside values it reads.
type Compiled = HashMap<String, (String, Vec<ValueRef>)>;

/// Generated kernels for one program, compiled by backend `C`.
pub struct Accelerated<C> {
    groups: HashMap<String, Vec<FusedGroup>>,
    parts: HashMap<String, Vec<Part>>,
    /// The backend, and (graph, group, bindings) → the kernel it compiled and the values it reads.
    state: Mutex<(C, Compiled)>,
    threads: usize,
}

impl<C: NativeCompiler> Accelerated<C> {
    /// Partitions every graph of `p` and keeps the kernels that can be generated.
    pub fn new(p: &Program, backend: C) -> Result<Accelerated<C>, String> {
        let (mut groups, mut parts) = (HashMap::new(), HashMap::new());
        for g in p.graphs() {
            let kept: Vec<Part> = partition(g)?.into_iter().filter(|part| lowerable(g, part).is_ok()).collect();
            let fused = kept
                .iter()
                .map(|part| FusedGroup {
                    members: part.nodes.clone(),
                    outputs: part.outputs.iter().map(|v| v.node).collect(),
                })
                .collect();
            groups.insert(g.name.clone(), fused);
            parts.insert(g.name.clone(), kept);
        }
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Accelerated { groups, parts, state: Mutex::new((backend, HashMap::new())), threads })
    }

    /// How many fused kernels the program has.
    pub fn kernel_count(&self) -> usize {
        self.groups.values().map(Vec::len).sum()
    }
}

impl<C: NativeCompiler> Accelerator for Accelerated<C> {
    fn groups(&self, graph: &str) -> &[FusedGroup] {
        self.groups.get(graph).map(Vec::as_slice).unwrap_or(&[])
    }

    fn run<'v>(
        &self,
        g: &Graph,
        index: usize,
        value: &dyn Fn(ValueRef) -> Option<&'v Value<f32>>,
        bindings: &Bindings,
    ) -> Result<Vec<Value<f32>>, String> {
        let part = &self.parts[&g.name][index];
        let mut state = self.state.lock().map_err(|_| "the JIT lock is poisoned".to_string())?;
        let (jit, compiled) = &mut *state;
        // The bound shapes decide the kernel: lower and compile once per (group, bindings).
        let key = format!("{}:{index}:{bindings:?}", g.name);
        if !compiled.contains_key(&key) {
            let fresh = format!("{}_k{index}_{}", g.name, compiled.len());
            let (group, sources) = to_group(g, part, bindings, &fresh)?;
            let width = jit.vector_width();
            jit.compile(&lsc_kir::lower::lower_elementwise(&group, width)?)?;
            compiled.insert(key.clone(), (fresh, sources));
        }
        let (name, sources) = &compiled[&key];
        let inputs: Vec<&[f32]> = sources
            .iter()
            .map(|v| {
                value(*v)
                    .and_then(Value::as_floats)
                    .ok_or_else(|| format!("kernel input %{} is not available", v.node.index()))
            })
            .collect::<Result<_, _>>()?;
        let types: Vec<&lsc_ir::TensorType> = part.outputs.iter().map(|v| g.value_type(*v)).collect();
        let shapes: Vec<Vec<usize>> = types.iter().map(|t| t.concrete_shape(bindings)).collect::<Result<_, _>>()?;
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|s| vec![0.0f32; s.iter().product()]).collect();
        let mut views: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
        jit.kernels().run_parallel(name, &inputs, &mut views, self.threads)?;
        Ok(outs
            .into_iter()
            .zip(shapes)
            .zip(types)
            .map(|((data, shape), t)| Value { dtype: t.dtype, shape, data: lsc_interp::Buffer::Float(data) })
            .collect())
    }
}
