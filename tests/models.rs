//! Built-in models on the interpreter: the golden PyTorch fixture, primitive
//! ops only, causality, and LS-attention's limiting cases.

use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::DType;
use lsc_models::{transformer, TransformerConfig, MODELS};
use lsc_runtime::numerics::{compare, tolerance};
use lsc_runtime::{init, weights};
use std::path::Path;

fn logits(p: &lsc_ir::Program, params: &Tensors<f32>, ids: &Value<f32>) -> Value<f32> {
    let exe = lsc_runtime::backend::Executable::new(p.clone(), lsc_runtime::backend::Backend::Interp).unwrap();
    lsc_runtime::generate::logits(&exe, params, ids).expect("runs")
}

fn golden(model: &str) -> (Tensors<f32>, Value<f32>, Value<f32>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let p = lsc_models::build(model, "tiny").unwrap();
    let (params, warnings) = weights::load_params(&dir.join(format!("{model}-tiny.weights.safetensors")), &p).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let io = weights::load_tensors(&dir.join(format!("{model}-tiny.io.safetensors"))).unwrap();
    (params, io["input_ids"].clone(), io["logits"].clone())
}

#[test]
fn interpreter_reproduces_pytorch_golden_logits() {
    for model in MODELS.iter().map(|m| m.name) {
        let p = lsc_models::build(model, "tiny").unwrap();
        let (params, ids, want) = golden(model);
        let got = logits(&p, &params, &ids);
        assert_eq!(got.shape, want.shape);
        let c = compare(&got.to_f64_vec(), &want.to_f64_vec(), tolerance(DType::F32));
        println!("{model}: max |Δ| = {:.3e} (bound {:.3e})", c.max_abs_diff, c.bound);
        assert!(c.ok(), "{model}: max |Δ| {} exceeds {}", c.max_abs_diff, c.bound);
    }
}

#[test]
fn generated_code_reproduces_pytorch_golden_logits() {
    // The fixture's program, optimised as `lsc run` prepares it, on Cranelift kernels.
    for backend in lsc_runtime::backend::Backend::native() {
        for model in MODELS.iter().map(|m| m.name) {
            let p = lsc_models::build(model, "tiny").unwrap();
            let (params, ids, want) = golden(model);
            let prepared = lsc_runtime::prepare::prepare(&p, &params, backend).unwrap();
            let bindings = [("B".to_string(), ids.shape[0] as i64), ("T".to_string(), ids.shape[1] as i64)].into();
            assert!(prepared.exe.generated_kernels(&bindings).unwrap() > 0, "{model}: no generated kernels");
            let got = lsc_runtime::generate::logits(&prepared.exe, &prepared.params, &ids).unwrap();
            let c = compare(&got.to_f64_vec(), &want.to_f64_vec(), tolerance(DType::F32));
            assert!(c.ok(), "{model} on {backend}: max |Δ| {} exceeds {}", c.max_abs_diff, c.bound);
        }
    }
}

#[test]
fn golden_fixture_distinguishes_the_two_models() {
    // The LS fixture's logits must not be reproducible by MHSA: the masks matter.
    let p = lsc_models::build("transformer", "tiny").unwrap();
    let (params, ids, want) = golden("ls-transformer");
    let got = logits(&p, &params, &ids);
    assert!(!compare(&got.to_f64_vec(), &want.to_f64_vec(), tolerance(DType::F32)).ok());
}

#[test]
fn dsl_emits_only_primitive_ops_for_every_model_and_config() {
    for m in MODELS {
        for &c in m.configs {
            let p = lsc_models::build(m.name, c).unwrap();
            assert!(lsc_passes::non_primitive_ops(&p).is_empty(), "{}/{c}", m.name);
            lsc_ir::verify(&p).unwrap();
        }
    }
}

fn ids(t: usize, seed: u64) -> Value<f32> {
    let mut rng = init::Rng::new(seed);
    Value::ints(vec![1, t], (0..t).map(|_| (rng.next_u64() % 256) as i64).collect())
}

#[test]
fn every_model_is_causal() {
    for model in MODELS.iter().map(|m| m.name) {
        let p = lsc_models::build_inference(model, "tiny").unwrap();
        let params = init::init_params(&p, 7).unwrap();
        let a = ids(20, 1);
        let mut b = a.clone();
        if let lsc_interp::Buffer::Int(v) = &mut b.data {
            for x in &mut v[10..] {
                *x = (*x + 101) % 256;
            }
        }
        let (la, lb) = (logits(&p, &params, &a), logits(&p, &params, &b));
        let v = 256;
        let (fa, fb) = (la.to_f64_vec(), lb.to_f64_vec());
        assert!(compare(&fb[..10 * v], &fa[..10 * v], tolerance(DType::F32)).ok(), "{model}: the past changed");
        assert!(
            !compare(&fb[10 * v..], &fa[10 * v..], tolerance(DType::F32)).ok(),
            "{model}: the future did not change"
        );
    }
}

fn run_cfg(cfg: &TransformerConfig, params: &Tensors<f32>, ids: &Value<f32>) -> Vec<f64> {
    logits(&transformer::build(cfg).unwrap(), params, ids).to_f64_vec()
}

#[test]
fn ls_attention_with_window_at_least_t_equals_full_causal() {
    let mhsa = TransformerConfig::named("tiny", false).unwrap();
    let p = transformer::build(&mhsa).unwrap();
    let params = init::init_params(&p, 3).unwrap();
    let x = ids(12, 2);
    let want = run_cfg(&mhsa, &params, &x);
    let mut wide = TransformerConfig::named("tiny", true).unwrap();
    wide.window = 12;
    assert!(compare(&run_cfg(&wide, &params, &x), &want, tolerance(DType::F32)).ok());
    let mut narrow = wide.clone();
    narrow.window = 3;
    assert!(
        !compare(&run_cfg(&narrow, &params, &x), &want, tolerance(DType::F32)).ok(),
        "a real window changes the output"
    );
}

#[test]
fn ls_attention_with_zero_local_heads_equals_mhsa() {
    let mhsa = TransformerConfig::named("tiny", false).unwrap();
    let mut ls = TransformerConfig::named("tiny", true).unwrap();
    ls.n_local_heads = 0;
    let params = init::init_params(&transformer::build(&mhsa).unwrap(), 5).unwrap();
    let x = ids(16, 4);
    assert!(compare(&run_cfg(&ls, &params, &x), &run_cfg(&mhsa, &params, &x), tolerance(DType::F32)).ok());
}

#[test]
fn f64_mode_agrees_with_f32() {
    let p = lsc_models::build("ls-transformer", "tiny").unwrap();
    let (params, ids, _) = golden("ls-transformer");
    let interp = Interpreter::new(&p).unwrap();
    let mut feed = Tensors::new();
    feed.insert("input_ids".to_string(), ids.clone());
    let f32_out = interp.run(&feed, &params).unwrap().remove(0).1.to_f64_vec();
    let params64: Tensors<f64> = params.iter().map(|(k, v)| (k.clone(), v.convert())).collect();
    let feed64: Tensors<f64> = feed.iter().map(|(k, v)| (k.clone(), v.convert())).collect();
    let f64_out = interp.run(&feed64, &params64).unwrap().remove(0).1.to_f64_vec();
    assert!(compare(&f32_out, &f64_out, tolerance(DType::F32)).ok());
}

#[test]
fn printed_ir_snapshots() {
    for m in MODELS {
        let p = lsc_models::build(m.name, "tiny").unwrap();
        let text = lsc_ir::print_program(&p).unwrap();
        insta::assert_snapshot!(format!("{}-tiny", m.name), text);
        let back = lsc_ir::parse_and_verify(&text).unwrap();
        assert_eq!(lsc_ir::print_program(&back).unwrap(), text);
    }
}

#[test]
fn weights_round_trip_and_name_missing_tensors() {
    let p = lsc_models::build("transformer", "tiny").unwrap();
    let params = init::init_params(&p, 9).unwrap();
    let dir = std::env::temp_dir().join(format!("lsc-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    weights::save_tensors(&path, &params).unwrap();
    let (back, warnings) = weights::load_params(&path, &p).unwrap();
    assert_eq!(back, params);
    assert!(warnings.is_empty());

    let mut extra = params.clone();
    extra.insert("unused.tensor".into(), Value::floats(vec![1], vec![0.0]));
    extra.remove("lm_head.weight");
    weights::save_tensors(&path, &extra).unwrap();
    let err = weights::load_params(&path, &p).unwrap_err().to_string();
    assert!(err.contains("missing tensor `lm_head.weight`"), "{err}");

    let mut extra = params.clone();
    extra.insert("unused.tensor".into(), Value::floats(vec![1], vec![0.0]));
    weights::save_tensors(&path, &extra).unwrap();
    let (_, warnings) = weights::load_params(&path, &p).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("unused.tensor"));

    let mut bad = params.clone();
    bad.insert("norm_f.weight".into(), Value::floats(vec![3], vec![1.0; 3]));
    weights::save_tensors(&path, &bad).unwrap();
    let err = weights::load_params(&path, &p).unwrap_err().to_string();
    assert!(err.contains("`norm_f.weight` is f32[3], expected f32[32]"), "{err}");

    // A dtype is named as the file has it, not as it was widened (I32 read as i64).
    let ints = vec![0u8; 256 * 32 * 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![256, 32], &ints).unwrap();
    std::fs::write(&path, safetensors::serialize([("embed.weight", view)], None).unwrap()).unwrap();
    let err = weights::load_params(&path, &p).unwrap_err().to_string();
    assert!(err.contains("`embed.weight` is i32[256, 32], expected f32[256,32]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
