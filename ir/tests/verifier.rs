//! The verifier rejects ill-formed programs with the expected named rule.

use lsc_ir::*;

fn f32s(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape.iter().map(|&d| Dim::new(d)))
}

fn with_output(mut p: Program, v: ValueRef) -> Program {
    p.main.outputs.push(("out".into(), v));
    p
}

/// Each case builds a broken program and names the rule it must break.
fn cases() -> Vec<(&'static str, Program, Rule)> {
    let mut out = Vec::new();

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2, 3])]);
    let b = p.main.add_node(Op::Input { name: "b".into() }, &[], vec![f32s(&[4, 5])]);
    let m = p.main.add_node(
        Op::MatMul { trans_a: false, trans_b: false },
        &[ValueRef::first(a), ValueRef::first(b)],
        vec![f32s(&[2, 5])],
    );
    out.push(("matmul inner dims differ", with_output(p, ValueRef::first(m)), Rule::Typing));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2, 3])]);
    let e = p.main.add_node(Op::Unary(UnaryOp::Exp), &[ValueRef::first(a)], vec![f32s(&[3, 2])]);
    out.push(("declared type differs", with_output(p, ValueRef::first(e)), Rule::DeclaredType));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    let e = p.main.add_node(Op::Binary(BinaryOp::Add), &[ValueRef::first(a)], vec![f32s(&[2])]);
    out.push(("add with one operand", with_output(p, ValueRef::first(e)), Rule::Arity));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    let b = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    let s = p.main.add_node(Op::Binary(BinaryOp::Add), &[ValueRef::first(a), ValueRef::first(b)], vec![f32s(&[2])]);
    out.push(("duplicate input name", with_output(p, ValueRef::first(s)), Rule::UniqueNames));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    let c = p.main.add_node(Op::Call { callee: "nowhere".into() }, &[ValueRef::first(a)], vec![f32s(&[2])]);
    out.push(("call of a missing function", with_output(p, ValueRef::first(c)), Rule::UnknownFunction));

    let mut p = Program::new();
    let mut f = Graph::new("f");
    let w = f.add_node(Op::Param { name: "w".into() }, &[], vec![f32s(&[2])]);
    f.outputs.push(("y".into(), ValueRef::first(w)));
    p.functions.push(f);
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    out.push(("param inside a function", with_output(p, ValueRef::first(a)), Rule::ParamOutsideMain));

    let mut p = Program::new();
    let mut f = Graph::new("f");
    let x = f.add_node(Op::Input { name: "x".into() }, &[], vec![f32s(&[2])]);
    let c = f.add_node(Op::Call { callee: "f".into() }, &[ValueRef::first(x)], vec![f32s(&[2])]);
    f.outputs.push(("y".into(), ValueRef::first(c)));
    p.functions.push(f);
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    out.push(("recursive function", with_output(p, ValueRef::first(a)), Rule::Recursion));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    let e1 = p.main.add_node(Op::Unary(UnaryOp::Exp), &[ValueRef::first(a)], vec![f32s(&[2])]);
    let e2 = p.main.add_node(Op::Unary(UnaryOp::Exp), &[ValueRef::first(e1)], vec![f32s(&[2])]);
    p.main.dag.add_edge(e2, e1, lsc_ir::graph::Operand { slot: 1, output: 0 });
    out.push(("cycle", with_output(p, ValueRef::first(e2)), Rule::Acyclic));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Iota { axis: 3 }, &[], vec![TensorType::new(DType::I64, [Dim::new(4)])]);
    out.push(("iota axis out of range", with_output(p, ValueRef::first(a)), Rule::Leaf));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    out.push(("output of a missing value", with_output(p, ValueRef { node: a, output: 3 }), Rule::OutputRef));

    let mut p = Program::new();
    p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    out.push(("no outputs", p, Rule::Entry));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[6])]);
    let r = p.main.add_node(Op::Reshape { shape: vec![Dim::new(4)] }, &[ValueRef::first(a)], vec![f32s(&[4])]);
    out.push(("reshape changes element count", with_output(p, ValueRef::first(r)), Rule::Typing));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![TensorType::new(DType::F32, [Dim::sym("T")])]);
    let b = p.main.add_node(Op::Input { name: "b".into() }, &[], vec![TensorType::new(DType::F32, [Dim::sym("S")])]);
    let s = p.main.add_node(
        Op::Binary(BinaryOp::Add),
        &[ValueRef::first(a), ValueRef::first(b)],
        vec![TensorType::new(DType::F32, [Dim::sym("T")])],
    );
    out.push(("symbolic dims differ", with_output(p, ValueRef::first(s)), Rule::Typing));

    let mut p = Program::new();
    let a = p.main.add_node(Op::Input { name: "a".into() }, &[], vec![f32s(&[2])]);
    let k = DerivedSymbol { name: "K".into(), of: Dim::sym("T"), fraction: 0.5, min: 1 };
    p.symbols = vec![k.clone(), k];
    out.push(("symbol defined twice", with_output(p, ValueRef::first(a)), Rule::DerivedSymbol));

    out
}

#[test]
fn verifier_rejects_each_ill_formed_program_with_its_rule() {
    for (what, p, rule) in cases() {
        match verify(&p) {
            Ok(()) => panic!("{what}: accepted"),
            Err(e) => {
                assert_eq!(e.rule, rule, "{what}: got {e}");
                assert!(e.to_string().contains(rule.name()), "{what}: message {e} names the rule");
            }
        }
    }
}

#[test]
fn node_errors_name_the_node() {
    let (_, p, _) = cases().remove(0);
    let e = verify(&p).unwrap_err();
    assert_eq!(e.node, Some((2, "matmul".to_string())));
    assert_eq!(
        e.to_string(),
        "@main %2 (matmul): [typing] `matmul` of f32[2,3] and f32[4,5]: inner dimensions 3 and 4 differ"
    );
}
