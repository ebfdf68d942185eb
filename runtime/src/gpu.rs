//! GPU programs: a compiled plan's launches as GPU kernels generated in
//! kernel IR (every fused group, and the library ops that are one group:
//! [`lsc_kir::op_group`]), library calls (GEMMs, for cuBLAS), and the ops
//! the GPU lowering cannot generate yet. Regions (loops, routed calls) are
//! walked at the shapes planned. What `lsc compile --target cuda` renders to
//! PTX, and what the CUDA target launches.

use lsc_kir::gpu::lower::lower_group;
use lsc_kir::lower::Group;
use lsc_kir::op_group::op_group;
use lsc_kir::Kernel;
use lsc_passes::plan::{Launch, Origin, Place, Plan, TensorId};
use std::collections::HashSet;

/// The library GEMMs are called from on the GPU.
pub const GEMM_LIBRARY: &str = "cublas";

/// A generated GPU kernel and the node it computes.
#[derive(Clone, Debug)]
pub struct GpuKernel {
    /// The kernel (with its launch shape).
    pub kernel: Kernel,
    /// The node (a fused group's last one).
    pub origin: Origin,
    /// Whether it computes a fused group (else one library op).
    pub fused: bool,
    /// The group it was lowered from.
    pub group: Group,
    /// The plan's tensor behind each buffer (inputs, then outputs): its name and place.
    pub tensors: Vec<(String, Place)>,
}

/// A plan lowered for a GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuProgram {
    /// Generated kernels, names unique.
    pub kernels: Vec<GpuKernel>,
    /// Ops run by a library, with the library's name.
    pub library: Vec<(Origin, &'static str)>,
    /// Ops the GPU lowering has no kernel for.
    pub unsupported: Vec<Origin>,
}

/// Whether `op` runs as a library call on the GPU.
fn library(op: &str) -> Option<&'static str> {
    matches!(op, "matmul" | "matmul_sum").then_some(GEMM_LIBRARY)
}

impl GpuProgram {
    /// Lowers every launch of `plan` (load-time launches and regions included).
    pub fn from_plan(plan: &Plan) -> Result<GpuProgram, String> {
        let mut p = GpuProgram::default();
        let mut names = HashSet::new();
        p.walk(plan, &mut names)?;
        Ok(p)
    }

    fn add(
        &mut self,
        group: &Group,
        at: (&Plan, &[TensorId]),
        origin: &Origin,
        fused: bool,
        names: &mut HashSet<String>,
    ) -> Result<(), String> {
        let mut kernel = lower_group(group)?;
        let (plan, ids) = at;
        let tensors = ids.iter().map(|&t| (plan.tensors[t].name.clone(), plan.tensors[t].place)).collect();
        // A region's plan may name its groups as another plan does.
        let base = kernel.name.clone();
        let mut n = 1;
        while !names.insert(kernel.name.clone()) {
            n += 1;
            kernel.name = format!("{base}_{n}");
        }
        self.kernels.push(GpuKernel { kernel, origin: origin.clone(), fused, group: group.clone(), tensors });
        Ok(())
    }

    fn walk(&mut self, plan: &Plan, names: &mut HashSet<String>) -> Result<(), String> {
        for l in plan.load.iter().chain(&plan.launches) {
            let o = l.origin();
            match l {
                Launch::Kernel { group, inputs, outputs, .. } => {
                    let ids: Vec<TensorId> = inputs.iter().chain(outputs).copied().collect();
                    self.add(group, (plan, &ids), o, true, names)?;
                }
                Launch::Op { op, inputs, outputs, .. } => {
                    if let Some(lib) = library(o.op) {
                        self.library.push((o.clone(), lib));
                        continue;
                    }
                    let t = |i: usize| &plan.tensors[i];
                    let floats = inputs.iter().chain(outputs).all(|&i| t(i).dtype.is_float());
                    let shapes: Vec<Vec<usize>> = inputs.iter().map(|&i| t(i).shape.clone()).collect();
                    let name = format!("{}_{}_{}", o.graph, o.node, o.op).replace(|c: char| !c.is_alphanumeric(), "_");
                    let group = match outputs.as_slice() {
                        [out] if floats => op_group(&name, op, &shapes, &t(*out).shape),
                        _ => None,
                    };
                    match group {
                        Some(g) => {
                            let ids: Vec<TensorId> = inputs.iter().chain(outputs).copied().collect();
                            self.add(&g, (plan, &ids), o, false, names)?
                        }
                        None => self.unsupported.push(o.clone()),
                    }
                }
                Launch::InPlace { .. } => self.unsupported.push(o.clone()),
                Launch::Loop { body, .. } => self.walk(body, names)?,
                Launch::Routed { region, .. } => {
                    // Packing the active rows is the routing's own step.
                    self.unsupported.push(o.clone());
                    self.walk(&region.bound, names)?;
                }
            }
        }
        Ok(())
    }

    /// The ops without a GPU kernel, as `op (n)` by first appearance.
    pub fn unsupported_ops(&self) -> Vec<(&'static str, usize)> {
        let mut out: Vec<(&'static str, usize)> = Vec::new();
        for o in &self.unsupported {
            match out.iter_mut().find(|(op, _)| *op == o.op) {
                Some((_, n)) => *n += 1,
                None => out.push((o.op, 1)),
            }
        }
        out
    }

    /// An error naming `model` and every op it needs that has no GPU kernel.
    pub fn require_supported(&self, model: &str) -> Result<(), String> {
        let ops = self.unsupported_ops();
        if ops.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = ops.iter().map(|(op, n)| format!("{op} ({n}×)")).collect();
        let first = &self.unsupported[0];
        Err(format!(
            "model {model}: the GPU lowering has no kernel for {} (first: @{} %{} {})",
            list.join(", "),
            first.graph,
            first.node,
            first.op
        ))
    }
}
