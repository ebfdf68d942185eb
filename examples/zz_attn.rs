use lsc_interp::Value;
use lsc_ir::DType;
use std::time::Instant;
fn main() {
    for t in [1024usize, 4096] {
        let shape = [1, 8, t, 32];
        let mut s = t as u64;
        let mut r = |len: usize| {
            (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect::<Vec<f32>>()
        };
        let n = 8 * t * 32;
        let (q, k, v) = (
            Value::floats(shape.to_vec(), r(n)),
            Value::floats(shape.to_vec(), r(n)),
            Value::floats(shape.to_vec(), r(n)),
        );
        let outs = vec![(DType::F32, shape.to_vec()), (DType::F32, vec![1, 8, t])];
        let time = |w: &[usize]| {
            let f = || lsc_interp::attention::ls_attention(&[&q, &k, &v], w, 32f64.powf(-0.5), &outs).unwrap();
            f();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t0 = Instant::now();
                f();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            best * 1e3
        };
        let (g, l, lo) = (time(&[0; 8]), time(&[64, 64, 64, 64, 0, 0, 0, 0]), time(&[64; 8]));
        println!("T={t}: global {g:.2} ms, LS {l:.2} ms ({:.2}x), local {lo:.2} ms ({:.2}x)", g / l, g / lo);
    }
}
