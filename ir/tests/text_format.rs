//! `.lsir` round trips and parse errors with `line:col`.

use lsc_ir::*;

const SAMPLE: &str = r#"lsir 1

graph @main {
  %0 = input "x" : f32[B,T,8]
  %1 = param "w.weight" : f32[8,8]
  %2 = input "cache" : f32[B,P+T,8]
  %3 = matmul(%0, %1) {trans_a=false, trans_b=true} : f32[B,T,8]
  %4 = topk(%3) {k=2, axis=2} : (f32[B,T,2], i64[B,T,2])
  %5 = constant {value=-inf} : f32[]
  %6 = clamp(%3) {min=-1.5, max=1e-5} : f32[B,T,8]
  %7 = call(%6, %1) {callee=@block} : f32[B,T,8]
  %8 = loop(%7, %1) {body=@step, trips=3} : f32[B,T,8]
  output "y" = %8
  output "idx" = %4.1
}

graph @block {
  %0 = input "h" : f32[N,M,8]
  %1 = input "w" : f32[8,8]
  %2 = matmul(%0, %1) {trans_a=false, trans_b=false} : f32[N,M,8]
  %3 = silu(%2) : f32[N,M,8]
  output "out" = %3
}

graph @step {
  %0 = input "i" : i64[]
  %1 = input "h" : f32[N,M,8]
  %2 = input "w" : f32[8,8]
  %3 = call(%1, %2) {callee=@block} : f32[N,M,8]
  output "h" = %3
}
"#;

#[test]
fn sample_round_trips_and_verifies() {
    let p = parse_and_verify(SAMPLE).expect("sample is valid");
    let printed = print_program(&p).unwrap();
    assert_eq!(printed, SAMPLE);
    assert_eq!(p.functions.len(), 2);
}

fn parse_err(text: &str) -> ParseError {
    parse_and_verify(text).expect_err("must be rejected")
}

#[test]
fn parse_errors_carry_line_and_column() {
    let e = parse_err("lsir 1\ngraph @main {\n  %0 = input \"x\" : f32[4]\n  %1 = frobnicate(%0) : f32[4]\n}\n");
    assert_eq!((e.line, e.col), (4, 8), "{e}");
    assert!(e.message.contains("unknown op `frobnicate`"), "{e}");

    let e = parse_err("lsir 1\ngraph @main {\n  %0 = exp(%3) : f32[4]\n}\n");
    assert_eq!((e.line, e.col), (3, 12));
    assert!(e.message.contains("%3 is used before it is defined"));

    let e = parse_err("lsir 1\ngraph @main {\n  %0 = input \"x\" : f33[4]\n}\n");
    assert_eq!((e.line, e.col), (3, 20));
    assert!(e.message.contains("unknown dtype `f33`"));

    let e = parse_err("lsir 2\n");
    assert_eq!((e.line, e.col), (1, 6));

    let e = parse_err("lsir 1\ngraph @main {\n  %0 = input \"x : f32[4]\n");
    assert!(e.message.contains("unterminated string"), "{e}");
}

#[test]
fn verifier_errors_point_at_the_node_line() {
    let text = "lsir 1\ngraph @main {\n  %0 = input \"x\" : f32[4]\n  %1 = input \"y\" : f32[5]\n  %2 = add(%0, %1) : f32[4]\n  output \"z\" = %2\n}\n";
    let e = parse_err(text);
    assert_eq!(e.line, 5, "{e}");
    assert!(e.message.contains("[typing]") && e.message.contains("%2 (add)"), "{e}");
}

#[test]
fn names_with_escapes_round_trip() {
    let mut p = Program::new();
    let g = &mut p.main;
    let x = g.add_node(Op::Input { name: "we\"ird\\name\n\t\u{1}é".into() }, &[], vec![TensorType::scalar(DType::F32)]);
    g.outputs.push(("out \"1\"".into(), ValueRef::first(x)));
    let text = print_program(&p).unwrap();
    let back = parse_and_verify(&text).unwrap();
    assert_eq!(print_program(&back).unwrap(), text);
    assert_eq!(back.main.input_types()[0].0, "we\"ird\\name\n\t\u{1}é");
}

mod mutations {
    use super::SAMPLE;
    use lsc_ir::parse_and_verify;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// Malformed text is an error, never a panic: random edits of a valid file.
        #[test]
        fn edited_files_never_panic(edits in prop::collection::vec((0usize..2000, 0usize..3, any::<char>()), 1..6)) {
            let mut text: Vec<char> = SAMPLE.chars().collect();
            for (at, kind, c) in edits {
                let at = at % (text.len() + 1);
                match kind {
                    0 => text.insert(at, c),
                    1 if at < text.len() => { text.remove(at); }
                    _ if at < text.len() => text[at] = c,
                    _ => {}
                }
            }
            let text: String = text.into_iter().collect();
            let _ = parse_and_verify(&text);
        }
    }
}
