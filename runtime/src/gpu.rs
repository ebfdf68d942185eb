//! GPU programs: a compiled plan's launches as GPU kernels generated in
//! kernel IR (every fused group, and the library ops that are one group:
//! [`lsc_kir::op_group`]), library calls (GEMMs, for cuBLAS), and the ops
//! the GPU lowering cannot generate yet. Regions (loops, routed calls) are
//! walked at the shapes planned. What `lsc compile --target cuda` renders to
//! PTX, and what the CUDA target launches.

use lsc_ir::{DType, Op};
use lsc_kir::gpu::attention::{self, Attention};
use lsc_kir::gpu::lower::lower_group;
use lsc_kir::gpu::movement::{op_kernel, Operand};
use lsc_kir::gpu::{attention_grad, conv, gam, routing, ternary, training};
use lsc_kir::lower::Group;
use lsc_kir::op_group::op_group;
use lsc_kir::{Elem, Kernel};
use lsc_passes::plan::{Launch, Origin, Place, Plan, RoutedRegion, TensorId};
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
    /// The group it was lowered from (`None`: a data movement or integer op, [`lsc_kir::gpu::movement`]).
    pub group: Option<Group>,
    /// What each buffer is (inputs, then outputs).
    pub buffers: Vec<BufferAt>,
}

/// The memory behind a GPU kernel's buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferAt {
    /// A tensor of a plan: the plan's graph, the tensor's name and its place there.
    Tensor {
        /// The graph the plan is of (`main`, a loop body, a routed callee).
        plan: String,
        /// The tensor's `.lsir` name.
        name: String,
        /// Where it lives in that plan.
        place: Place,
    },
    /// Scratch memory of the GPU program ([`GpuProgram::workspace`]).
    Workspace(String),
}

impl std::fmt::Display for BufferAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BufferAt::Tensor { plan, name, place } => {
                let at = match place {
                    Place::Arena(o) => format!("arena+{o}"),
                    Place::Input(i) => format!("input {i}"),
                    Place::Param(i) => format!("parameter {i}"),
                };
                write!(f, "@{plan} {name} ({at})")
            }
            BufferAt::Workspace(w) => write!(f, "workspace {w}"),
        }
    }
}

/// Plan `plan`'s tensors `ids`.
fn tensors(plan: &Plan, ids: &[TensorId]) -> Vec<BufferAt> {
    ids.iter()
        .map(|&t| BufferAt::Tensor {
            plan: plan.graph.clone(),
            name: plan.tensors[t].name.clone(),
            place: plan.tensors[t].place,
        })
        .collect()
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
    /// Scratch memory the kernels use besides the plans' tensors: name and bytes.
    pub workspace: Vec<(String, u64)>,
}

/// Whether `op` runs as a library call on the GPU.
fn library(op: &str) -> Option<&'static str> {
    matches!(op, "matmul" | "matmul_sum").then_some(GEMM_LIBRARY)
}

/// A kernel and the positions of its buffers among its op's operands, then results.
type Placed = (Kernel, Vec<usize>);

/// How a tensor of `dtype` is stored in a plan, as a GPU kernel's buffer sees it:
/// floats as f32, integers as i64, booleans as bytes, packed ternary as 32-bit words.
pub fn elem_of(dtype: DType) -> Elem {
    match dtype {
        DType::Bool => Elem::U8,
        DType::Ternary => Elem::U32,
        d if d.is_int() => Elem::I64,
        _ => Elem::F32,
    }
}

/// One GPU kernel of a library op.
#[derive(Clone, Debug)]
pub struct OpKernel {
    /// The kernel.
    pub kernel: Kernel,
    /// The group it was lowered from, if any.
    pub group: Option<Group>,
    /// The positions of its buffers among the op's operands, then its results.
    pub at: Vec<usize>,
    /// Whether the op is a fused one (attention, AdamW, …).
    pub fused: bool,
}

/// The GPU kernels of library op `op` (not a GEMM) from `ins` into `outs`, run
/// in order; `in_place`: `outs` is the operand the op updates. `None` if no
/// GPU kernel computes the op.
pub fn op_kernels(
    name: &str,
    op: &Op,
    ins: &[Operand],
    outs: &[Operand],
    in_place: bool,
) -> Option<Result<Vec<OpKernel>, String>> {
    let all: Vec<usize> = (0..ins.len() + outs.len()).collect();
    if !in_place {
        if let Some(kernels) = fused_kernels(name, op, ins) {
            return Some(kernels.map(|ks| {
                ks.into_iter().map(|(kernel, at)| OpKernel { kernel, group: None, at, fused: true }).collect()
            }));
        }
        let floats = ins.iter().chain(outs).all(|x| x.elem == Elem::F32);
        let shapes: Vec<Vec<usize>> = ins.iter().map(|x| x.shape.clone()).collect();
        if let ([out], true) = (outs, floats) {
            if let Some(g) = op_group(name, op, &shapes, &out.shape) {
                return Some(
                    lower_group(&g).map(|kernel| vec![OpKernel { kernel, group: Some(g), at: all, fused: false }]),
                );
            }
        }
    }
    let kernel = op_kernel(name, op, ins, outs, in_place)?;
    Some(Ok(vec![OpKernel { kernel, group: None, at: all, fused: false }]))
}

/// The kernels of a fused op that is not a group (LS-attention, softmax +
/// cross-entropy, AdamW, the causal convolution and its gradient), each with
/// the positions of its buffers among the op's operands and then results;
/// `None` for any other op.
fn fused_kernels(name: &str, op: &Op, ins: &[Operand]) -> Option<Result<Vec<Placed>, String>> {
    let numel = |x: &Operand| x.shape.iter().map(|&d| d as u64).product::<u64>();
    let all = |k: Result<Kernel, String>, n: usize| k.map(|k| vec![(k, (0..n).collect())]);
    Some(match (op, ins) {
        (Op::LsAttention { windows, scale }, [q, ..]) => match q.shape[..] {
            [batch, heads, seq, dim] => {
                let shape = Attention { batch, heads, seq, dim, windows: windows.clone(), scale: *scale as f32 };
                all(attention::forward(name, &shape), 5)
            }
            _ => Err(format!("ls_attention of a {:?} query", q.shape)),
        },
        (Op::LsAttentionGrad { windows, scale }, [q, ..]) => match q.shape[..] {
            [batch, heads, seq, dim] => {
                let shape = Attention { batch, heads, seq, dim, windows: windows.clone(), scale: *scale as f32 };
                attention_grad(name, &shape)
            }
            _ => Err(format!("ls_attention_grad of a {:?} query", q.shape)),
        },
        (Op::TernaryPack, [w, _]) => match w.shape[..] {
            [rows, cols] => all(ternary::pack(name, rows, cols), 3),
            _ => Err(format!("ternary_pack of a {:?} matrix", w.shape)),
        },
        (Op::TernaryMatmul { trans_b }, [x, w, _]) => match (&x.shape[..], &w.shape[..]) {
            ([lead @ .., k], &[r0, r1]) => {
                let n = if *trans_b { r0 } else { r1 };
                let m = lead.iter().product();
                all(ternary::matmul(name, &ternary::TernaryProduct { m, k: *k, n, trans_b: *trans_b }), 4)
            }
            _ => Err(format!("ternary_matmul of {:?} by {:?}", x.shape, w.shape)),
        },
        (Op::Gam, [x, conv_w, _, memory, _]) => match (&x.shape[..], conv_w.shape.last(), memory.shape.first()) {
            (&[batch, seq, dim], Some(&taps), Some(&slots)) => {
                all(gam::mixer(name, &gam::Gam { batch, seq, dim, taps, slots }), 6)
            }
            _ => Err(format!("gam of {:?} with memory {:?}", x.shape, memory.shape)),
        },
        (Op::SoftmaxCrossEntropy, [logits, targets, _]) => {
            let vocab = logits.shape.last().copied().unwrap_or(1) as u64;
            all(training::softmax_cross_entropy(name, numel(targets), vocab), 5)
        }
        (Op::AdamW { beta1, beta2, eps, weight_decay, decay }, _) if ins.len() >= 4 => {
            let sizes: Vec<u64> = ins[4..].chunks(4).map(|p| numel(&p[0])).collect();
            let h = training::AdamW {
                beta1: *beta1,
                beta2: *beta2,
                eps: *eps,
                weight_decay: *weight_decay,
                decay: decay.clone(),
            };
            all(training::adamw(name, &sizes, &h), ins.len() + 3 * sizes.len())
        }
        (Op::CausalConv1d | Op::CausalConv1dGrad, [x, w, ..]) => {
            let (Some(&[batch, seq, channels]), Some(&taps)) =
                (Some(&x.shape[..]).filter(|s| s.len() == 3), w.shape.last())
            else {
                return Some(Err(format!("causal_conv1d of {:?} by {:?}", x.shape, w.shape)));
            };
            let s = conv::Conv { batch, seq, channels, taps };
            if matches!(op, Op::CausalConv1d) {
                all(conv::forward(name, &s), 3)
            } else {
                conv_grad(name, &s)
            }
        }
        _ => return None,
    })
}

/// The three kernels of LS-attention's backward, in order: operands `(q, k, v, out, d_out)`,
/// results `(d_q, d_k, d_v)`; the first writes row statistics into `d_q`, which the last rewrites.
fn attention_grad(name: &str, a: &Attention) -> Result<Vec<Placed>, String> {
    let stats = attention_grad::stats(&format!("{name}_stats"), a)?;
    let kv = attention_grad::grad_kv(&format!("{name}_dkv"), a)?;
    let q = attention_grad::grad_q(&format!("{name}_dq"), a)?;
    Ok(vec![(stats, vec![0, 1, 3, 4, 5]), (kv, vec![0, 1, 2, 4, 5, 6, 7]), (q, vec![0, 1, 2, 3, 4, 5])])
}

/// The two kernels of a convolution's gradient: operands `(x, w, d_y)`, results `(d_x, d_w)`.
fn conv_grad(name: &str, s: &conv::Conv) -> Result<Vec<Placed>, String> {
    let dx = conv::grad_x(&format!("{name}_dx"), s)?;
    let dw = conv::grad_w(&format!("{name}_dw"), s)?;
    Ok(vec![(dx, vec![1, 2, 3]), (dw, vec![0, 2, 4])])
}

impl GpuProgram {
    /// Lowers every launch of `plan` (load-time launches and regions included).
    pub fn from_plan(plan: &Plan) -> Result<GpuProgram, String> {
        let mut p = GpuProgram::default();
        let mut names = HashSet::new();
        p.walk(plan, &mut names)?;
        Ok(p)
    }

    /// Adds `kernel` (computing `group`, if it came from one) for the launch at `origin`.
    fn add(
        &mut self,
        mut kernel: Kernel,
        group: Option<&Group>,
        buffers: Vec<BufferAt>,
        origin: &Origin,
        fused: bool,
        names: &mut HashSet<String>,
    ) -> Result<(), String> {
        // Every kernel is proved in bounds here, whatever is made of it later.
        lsc_kir::check::in_bounds(&kernel).map_err(|e| format!("@{} %{}: {e}", origin.graph, origin.node))?;
        // A region's plan may name its groups as another plan does.
        let base = kernel.name.clone();
        let mut n = 1;
        while !names.insert(kernel.name.clone()) {
            n += 1;
            kernel.name = format!("{base}_{n}");
        }
        self.kernels.push(GpuKernel { kernel, origin: origin.clone(), fused, group: group.cloned(), buffers });
        Ok(())
    }

    /// The kernels of library op `op` (operands `inputs`, results `outputs`, or the
    /// updated tensor for an op `in_place`), or the op among the unsupported.
    fn op(
        &mut self,
        plan: &Plan,
        launch: (&Op, &[TensorId], &[TensorId], bool),
        o: &Origin,
        name: &str,
        names: &mut HashSet<String>,
    ) -> Result<(), String> {
        let (op, inputs, outputs, in_place) = launch;
        let ids: Vec<TensorId> = inputs.iter().chain(outputs).copied().collect();
        let operand =
            |&t: &TensorId| Operand { shape: plan.tensors[t].shape.clone(), elem: elem_of(plan.tensors[t].dtype) };
        let operands: Vec<Operand> = ids.iter().map(operand).collect();
        let (ins, outs) = operands.split_at(inputs.len());
        match op_kernels(name, op, ins, outs, in_place) {
            Some(kernels) => {
                for k in kernels.map_err(|e| format!("@{} %{}: {e}", o.graph, o.node))? {
                    let at: Vec<TensorId> = k.at.iter().map(|&i| ids[i]).collect();
                    self.add(k.kernel, k.group.as_ref(), tensors(plan, &at), o, k.fused, names)?;
                }
            }
            None => self.unsupported.push(o.clone()),
        }
        Ok(())
    }

    fn walk(&mut self, plan: &Plan, names: &mut HashSet<String>) -> Result<(), String> {
        for l in plan.load.iter().chain(&plan.launches) {
            let o = l.origin();
            let name = format!("{}_{}_{}", o.graph, o.node, o.op).replace(|c: char| !c.is_alphanumeric(), "_");
            // A launch whose results are all empty has nothing to compute.
            let writes = l.writes();
            if !writes.is_empty() && writes.iter().all(|&t| plan.tensors[t].shape.contains(&0)) {
                continue;
            }
            match l {
                Launch::Kernel { group, inputs, outputs, .. } => {
                    let ids: Vec<TensorId> = inputs.iter().chain(outputs).copied().collect();
                    self.add(lower_group(group)?, Some(group), tensors(plan, &ids), o, true, names)?;
                }
                Launch::Op { op, inputs, outputs, .. } => {
                    if let Some(lib) = library(o.op) {
                        self.library.push((o.clone(), lib));
                        continue;
                    }
                    self.op(plan, (op, inputs, outputs, false), o, &name, names)?;
                }
                Launch::InPlace { op, target, inputs, .. } => {
                    self.op(plan, (op, inputs, std::slice::from_ref(target), true), o, &name, names)?;
                }
                Launch::Loop { body, .. } => self.walk(body, names)?,
                Launch::Routed { region, mask, args, outputs, .. } => {
                    self.routed(plan, (region, *mask, args, outputs), o, names)?;
                }
            }
        }
        Ok(())
    }

    /// A routed region at all rows: the active rows of its mask, its per-row
    /// arguments packed, its plan's kernels, and its results unpacked.
    fn routed(
        &mut self,
        plan: &Plan,
        launch: (&RoutedRegion, TensorId, &[TensorId], &[TensorId]),
        o: &Origin,
        names: &mut HashSet<String>,
    ) -> Result<(), String> {
        let (region, mask, args, outputs) = launch;
        let [batch, seq] = plan.tensors[mask].shape[..] else {
            return Err(format!("@{} %{}: a routed mask of shape {:?}", o.graph, o.node, plan.tensors[mask].shape));
        };
        let at = |e: String| format!("@{} %{}: {e}", o.graph, o.node);
        let ws = format!("{}_{}_routed", o.graph, o.node);
        let space = |what: &str| BufferAt::Workspace(format!("{ws}_{what}"));
        for (what, bytes) in [("slots", batch * seq * 4), ("positions", batch * seq * 4), ("counts", batch * 4)] {
            self.workspace.push((format!("{ws}_{what}"), bytes as u64));
        }
        let scan = routing::active_rows(&format!("{ws}_rows"), batch, seq).map_err(at)?;
        let mut buffers = tensors(plan, &[mask]);
        buffers.extend([space("slots"), space("positions"), space("counts")]);
        self.add(scan, None, buffers, o, false, names)?;
        // At all rows the packed count is the sequence length.
        let rows = |t: &lsc_passes::plan::Tensor| routing::Rows {
            batch,
            seq,
            packed: seq,
            width: t.shape[2..].iter().product(),
            elem: elem_of(t.dtype),
        };
        for (i, &a) in args[..region.routed].iter().enumerate() {
            let r = rows(&plan.tensors[a]);
            let packed = format!("arg{i}");
            self.workspace.push((format!("{ws}_{packed}"), (r.batch * r.packed * r.width) as u64 * r.elem.bytes()));
            let k = routing::pack(&format!("{ws}_pack{i}"), &r).map_err(at)?;
            let mut buffers = tensors(plan, &[a]);
            buffers.extend([space("positions"), space("counts"), space(&packed)]);
            self.add(k, None, buffers, o, false, names)?;
        }
        self.walk(&region.bound, names)?;
        for (i, (&out, (_, result))) in outputs.iter().zip(&region.bound.outputs).enumerate() {
            let r = rows(&plan.tensors[out]);
            let k = routing::unpack(&format!("{ws}_unpack{i}"), &r).map_err(at)?;
            let mut buffers = tensors(&region.bound, &[*result]);
            buffers.push(space("slots"));
            buffers.extend(tensors(plan, &[out]));
            self.add(k, None, buffers, o, false, names)?;
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
