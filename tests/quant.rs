//! Ternary and group-wise k-bit weights: the forward pass's quantised matrices,
//! and packed formats that reproduce them exactly.

use lsc_frontend::modules::{Linear, WeightQuant};
use lsc_frontend::ModelBuilder;
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim};
use lsc_runtime::init::Rng;
use lsc_runtime::quant::*;
use proptest::prelude::*;

/// The forward pass's effective weight `Ŵ` of a quantised Linear, from the interpreter.
fn effective_weight(w: &[f32], out: usize, inp: usize, quant: WeightQuant) -> Vec<f32> {
    let b = ModelBuilder::new();
    let lin = Linear::quantized(&b, "lin", inp, out, false, quant);
    b.output("w_hat", &lin.effective_weight());
    let p = b.finish().unwrap();
    let mut params = Tensors::new();
    params.insert("lin.weight".to_string(), Value::floats(vec![out, inp], w.to_vec()));
    let outs = Interpreter::new(&p).unwrap().run(&Tensors::new(), &params).unwrap();
    outs[0].1.as_floats().unwrap().to_vec()
}

fn random(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| (r.normal() * scale) as f32).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn ternarised_matrices_hold_only_minus_s_zero_plus_s(out in 1usize..20, inp in 1usize..40, seed: u64) {
        let w = random(out * inp, seed, 0.05);
        let w_hat = effective_weight(&w, out, inp, WeightQuant::Ternary);
        let (q, s) = ternarize(&w);
        let mean = w.iter().map(|x| x.abs()).sum::<f32>() / w.len() as f32;
        prop_assert!((s - mean.max(1e-5)).abs() <= 1e-6 * s);
        for &v in &w_hat {
            prop_assert!(v == 0.0 || v == s || v == -s, "{} is not in {{-{s}, 0, {s}}}", v);
        }
        let packed = pack_ternary(&q, s, &[out, inp]).unwrap();
        prop_assert_eq!(unpack_ternary(&packed).unwrap(), w_hat, "packed format reproduces the forward pass");
        let again = pack_ternary(&unpack_ternary_codes(&packed).unwrap(), packed.scale, &[out, inp]).unwrap();
        prop_assert_eq!(again, packed);
    }

    #[test]
    fn groupwise_formats_reproduce_the_forward_pass(out in 1usize..6, groups in 1usize..4, bits_i in 0usize..4, seed: u64) {
        let bits = [3u32, 4, 6, 8][bits_i];
        let group = 16;
        let inp = groups * group;
        let w = random(out * inp, seed, 0.1);
        let w_hat = effective_weight(&w, out, inp, WeightQuant::Groupwise { bits, group });
        let packed = quantize_groupwise(&w, &[out, inp], bits, group).unwrap();
        prop_assert_eq!(dequantize_groupwise(&packed).unwrap(), w_hat.clone());
        prop_assert_eq!(packed.codes.len(), (out * inp * bits as usize).div_ceil(8));
        // Each group uses at most 2^bits − 1 distinct levels.
        for g in w_hat.chunks(group) {
            let mut levels: Vec<f32> = g.to_vec();
            levels.sort_by(|a, b| a.partial_cmp(b).unwrap());
            levels.dedup();
            prop_assert!(levels.len() < (1 << bits));
        }
    }
}

#[test]
fn an_all_zero_matrix_stays_zero() {
    assert_eq!(effective_weight(&[0.0; 12], 3, 4, WeightQuant::Ternary), vec![0.0; 12]);
    let g = WeightQuant::Groupwise { bits: 4, group: 4 };
    assert_eq!(effective_weight(&[0.0; 12], 3, 4, g), vec![0.0; 12]);
}

#[test]
fn bad_group_sizes_are_dsl_errors_at_the_call_site() {
    let b = ModelBuilder::new();
    let lin = Linear::quantized(&b, "lin", 10, 4, false, WeightQuant::Groupwise { bits: 4, group: 128 });
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::new(10)]);
    let line = line!() + 1;
    b.output("y", &lin.forward(&x));
    let err = b.finish().unwrap_err();
    assert_eq!(err.location.line(), line, "{err}");
    assert!(err.message.contains("group size dividing the input width 10"), "{err}");
}

#[test]
fn trilm_small_stores_block_weights_in_about_two_bits() {
    let q = lsc_models::quantized_weights("trilm", "small").unwrap();
    assert_eq!(q.len(), 4 * 7);
    assert!(lsc_models::quantized_weights("transformer", "small").unwrap().is_empty());
    assert_eq!(packed_bits(WeightQuant::Ternary, 256 * 768), 256 * 768 * 2 + 32);
}
