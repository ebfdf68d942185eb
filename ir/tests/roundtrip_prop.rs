//! print → parse → print is the identity on random well-typed programs.

use lsc_ir::infer::NoFunctions;
use lsc_ir::*;
use proptest::prelude::*;

/// One random construction step: which op, which operands (by pool index).
#[derive(Clone, Debug)]
enum Step {
    Unary(usize, usize),
    Binary(usize, usize, usize),
    Cmp(usize, usize),
    Reduce(usize, usize, bool),
    Softmax(usize, usize),
    Transpose(usize),
    MatMul(usize, usize, bool),
    Constant(f64),
    Slice(usize),
    Concat(usize, usize),
    TopK(usize),
    Cast(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    let i = 0usize..64;
    prop_oneof![
        (i.clone(), 0usize..12).prop_map(|(a, u)| Step::Unary(a, u)),
        (i.clone(), i.clone(), 0usize..7).prop_map(|(a, b, o)| Step::Binary(a, b, o)),
        (i.clone(), i.clone()).prop_map(|(a, b)| Step::Cmp(a, b)),
        (i.clone(), 0usize..3, any::<bool>()).prop_map(|(a, x, k)| Step::Reduce(a, x, k)),
        (i.clone(), 0usize..3).prop_map(|(a, x)| Step::Softmax(a, x)),
        i.clone().prop_map(Step::Transpose),
        (i.clone(), i.clone(), any::<bool>()).prop_map(|(a, b, t)| Step::MatMul(a, b, t)),
        prop_oneof![any::<f64>(), Just(f64::NEG_INFINITY), Just(1e-5), Just(-0.0)].prop_map(Step::Constant),
        i.clone().prop_map(Step::Slice),
        (i.clone(), i.clone()).prop_map(|(a, b)| Step::Concat(a, b)),
        i.clone().prop_map(Step::TopK),
        (i, 0usize..7).prop_map(|(a, d)| Step::Cast(a, d)),
    ]
}

fn build(steps: &[Step], names: &[String]) -> Program {
    let mut p = Program::new();
    let g = &mut p.main;
    let dims = [Dim::sym("B"), Dim::sym("T"), Dim::new(4)];
    let mut pool: Vec<ValueRef> = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let ty = TensorType::new(DType::F32, dims.iter().cloned());
        let op = if k % 2 == 0 { Op::Input { name: name.clone() } } else { Op::Param { name: name.clone() } };
        pool.push(ValueRef::first(g.add_node(op, &[], vec![ty])));
    }
    let pick = |pool: &[ValueRef], i: usize| pool[i % pool.len()];
    for s in steps {
        let (op, args): (Op, Vec<ValueRef>) = match s {
            Step::Unary(a, u) => {
                let float_ops: Vec<UnaryOp> = UnaryOp::ALL.iter().copied().filter(|u| *u != UnaryOp::Not).collect();
                (Op::Unary(float_ops[*u % float_ops.len()]), vec![pick(&pool, *a)])
            }
            Step::Binary(a, b, o) => {
                let arithmetic: Vec<BinaryOp> =
                    BinaryOp::ALL.iter().copied().filter(|b| !matches!(b, BinaryOp::And | BinaryOp::Or)).collect();
                (Op::Binary(arithmetic[*o % arithmetic.len()]), vec![pick(&pool, *a), pick(&pool, *b)])
            }
            Step::Cmp(a, b) => (Op::Compare(CmpOp::Lt), vec![pick(&pool, *a), pick(&pool, *b)]),
            Step::Reduce(a, x, k) => {
                (Op::Reduce { kind: ReduceKind::Sum, axes: vec![*x], keep_dims: *k }, vec![pick(&pool, *a)])
            }
            Step::Softmax(a, x) => (Op::Softmax { axis: *x }, vec![pick(&pool, *a)]),
            Step::Transpose(a) => (Op::Transpose { perm: vec![1, 0, 2] }, vec![pick(&pool, *a)]),
            Step::MatMul(a, b, t) => (Op::MatMul { trans_a: !*t, trans_b: *t }, vec![pick(&pool, *a), pick(&pool, *b)]),
            Step::Constant(v) => {
                let id = g.add_node(Op::Constant { value: *v }, &[], vec![TensorType::scalar(DType::F32)]);
                pool.push(ValueRef::first(id));
                continue;
            }
            Step::Slice(a) => (Op::Slice { axis: 1, start: Dim::new(1), end: Dim::sym("T") }, vec![pick(&pool, *a)]),
            Step::Concat(a, b) => (Op::Concat { axis: 1 }, vec![pick(&pool, *a), pick(&pool, *b)]),
            Step::TopK(a) => (Op::TopK { k: Dim::new(2), axis: 2 }, vec![pick(&pool, *a)]),
            Step::Cast(a, d) => (Op::Cast { to: DType::ALL[*d] }, vec![pick(&pool, *a)]),
        };
        if let Ok(id) = g.add_op(op, &args, &NoFunctions) {
            for o in 0..g.node(id).outputs.len() {
                pool.push(ValueRef { node: id, output: o as u32 });
            }
        }
    }
    let last = *pool.last().expect("pool starts non-empty");
    g.outputs.push(("result".into(), last));
    g.outputs.push(("first".into(), pool[0]));
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn print_parse_print_is_identity(steps in prop::collection::vec(step(), 1..40), names in prop::collection::btree_set("[a-z.\" \\\\]{1,12}", 1..4)) {
        let names: Vec<String> = names.into_iter().collect();
        let p = build(&steps, &names);
        verify(&p).expect("builder only adds well-typed nodes");
        let text = print_program(&p).unwrap();
        let back = parse_and_verify(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert_eq!(print_program(&back).unwrap(), text);
    }
}
