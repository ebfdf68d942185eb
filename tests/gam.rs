//! GAM's two paths: the local path is causal with a receptive field of 3, the
//! global path is position-wise.

use lsc_frontend::ModelBuilder;
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim};
use lsc_models::gam::GamMixer;
use lsc_runtime::init;

#[test]
fn local_path_is_causal_and_global_path_is_position_wise() {
    let (t, d) = (10, 8);
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::new(1), Dim::sym("T"), Dim::new(d as i64)]);
    let gam = GamMixer::new(&b, "gam", d);
    b.output("local", &gam.local(&x));
    b.output("global", &gam.global(&x));
    let p = b.finish().unwrap();
    let mut params = init::init_params(&p, 4).unwrap();
    // Non-zero bias so the test also sees it.
    params.insert("gam.conv.bias".into(), Value::floats(vec![d], (0..d).map(|i| i as f32 * 0.1).collect()));
    let interp = Interpreter::new(&p).unwrap();
    let mut rng = init::Rng::new(5);
    let base: Vec<f32> = (0..t * d).map(|_| rng.normal() as f32).collect();
    let run = |data: Vec<f32>| {
        let mut feed = Tensors::new();
        feed.insert("x".to_string(), Value::floats(vec![1, t, d], data));
        let out = interp.run(&feed, &params).unwrap();
        (out[0].1.as_floats().unwrap().to_vec(), out[1].1.as_floats().unwrap().to_vec())
    };
    let (l0, g0) = run(base.clone());
    let at = 4;
    let mut moved = base;
    for v in &mut moved[at * d..(at + 1) * d] {
        *v += 1.0;
    }
    let (l1, g1) = run(moved);
    let changed = |a: &[f32], b: &[f32], pos: usize| a[pos * d..(pos + 1) * d] != b[pos * d..(pos + 1) * d];
    for pos in 0..t {
        assert_eq!(changed(&l0, &l1, pos), (at..at + 3).contains(&pos), "local path at {pos}");
        assert_eq!(changed(&g0, &g1, pos), pos == at, "global path at {pos}");
    }
}
