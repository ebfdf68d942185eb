//! PAWN: the cached features against a direct computation with the
//! reference interpreter, the head's gradient by finite differences, and its
//! pooling ignoring the tokens that do not count.

use lsc_interp::{Buffer, Interpreter, Tensors, Value};
use lsc_models::pawn::{Aggregation, PawnConfig};
use lsc_passes::autodiff::{add_parameter_gradients, VjpTable};
use lsc_runtime::backend::Backend;
use lsc_runtime::detect::{Extractor, Reading, Record, METRICS};
use lsc_runtime::init::{self, Rng};

/// 40 tokens per text in windows of 16: the window boundaries are crossed.
const READ: Reading = Reading { max_tokens: 40, window: 16 };

fn record(text: &str, label: u8) -> Record {
    Record { text: text.to_string(), label, source: "test".into() }
}

#[test]
fn features_match_a_direct_computation_and_come_back_from_the_cache() {
    let forward = lsc_models::build_inference("transformer", "tiny").unwrap();
    let params = init::init_params(&forward, 3).unwrap();
    let with = lsc_models::with_features(&forward).unwrap();
    let cache = std::env::temp_dir().join(format!("lsc-detect-features-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let texts = [
        record("The quick brown fox jumps over the lazy dog.", 0),
        record("A longer text, of more than forty bytes, that is cut at forty.", 1),
    ];
    let tok = lsc_runtime::tokenizer::Tokenizer::Bytes;
    let mut ex =
        Extractor::new(with.clone(), &params, Backend::default(), tok.clone(), READ, "k".into(), cache.clone())
            .unwrap();
    let feats = ex.features(&texts).unwrap();
    assert_eq!((ex.hits, ex.misses), (0, 2));
    for (r, f) in texts.iter().zip(&feats) {
        // The reference: the interpreter on each window of 16 of the text alone,
        // metrics from the definitions in f64.
        let ids: Vec<i64> = r.text.bytes().take(40).map(|b| b as i64).collect();
        let n = ids.len();
        assert_eq!(f.tokens, n);
        let (mut logits, mut hidden) = (Vec::new(), Vec::new());
        for w in ids.chunks(16) {
            let inputs = Tensors::from([("input_ids".to_string(), Value::ints(vec![1, w.len()], w.to_vec()))]);
            let outs = Interpreter::new(&with).unwrap().run(&inputs, &params).unwrap();
            let get = |name: &str| outs.iter().find(|(k, _)| k == name).unwrap().1.to_f64_vec();
            logits.extend(get("logits"));
            hidden.extend(get("features"));
        }
        for p in 0..n - 1 {
            let row = &logits[p * 256..(p + 1) * 256];
            let z = row.iter().map(|x| x.exp()).sum::<f64>().ln();
            let lp: Vec<f64> = row.iter().map(|x| x - z).collect();
            let y = ids[p + 1] as usize;
            let want = [
                lp[y],
                -lp.iter().map(|l| l.exp() * l).sum::<f64>(),
                lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                lp.iter().filter(|&&l| l >= lp[y]).count() as f64 / 256.0,
                lp.iter().filter(|&&l| l >= lp[y]).map(|l| l.exp()).sum::<f64>(),
            ];
            for (j, w) in want.iter().enumerate() {
                let got = f.metrics[p * METRICS.len() + j] as f64;
                assert!((got - w).abs() <= 1e-4 * w.abs().max(1.0), "{} at {p}: {got} vs {w}", METRICS[j]);
            }
        }
        // Hidden states, rounded to f16 as cached.
        for (a, b) in f.hidden.iter().zip(&hidden) {
            assert!((*a as f64 - b).abs() <= 2e-3 * b.abs().max(1.0), "hidden {a} vs {b}");
        }
    }
    // A second extractor reads the same features back from the cache.
    let mut again =
        Extractor::new(with.clone(), &params, Backend::default(), tok.clone(), READ, "k".into(), cache.clone())
            .unwrap();
    assert_eq!(again.features(&texts).unwrap(), feats);
    assert_eq!((again.hits, again.misses), (2, 0));
    // Another model key does not read them.
    let mut other =
        Extractor::new(with.clone(), &params, Backend::default(), tok.clone(), READ, "j".into(), cache.clone())
            .unwrap();
    other.features(&texts[..1]).unwrap();
    assert_eq!(other.misses, 1);
    // A corrupt cache file is recomputed, not trusted.
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let mut fixed = Extractor::new(with, &params, Backend::default(), tok, READ, "k".into(), cache).unwrap();
    assert_eq!(fixed.features(&texts).unwrap(), feats);
    assert_eq!(fixed.misses, 2);
    // Too short a text is refused, naming its source.
    let e = fixed.features(&[record("short", 0)]).unwrap_err().to_string();
    assert!(e.contains("test: a text of 5 tokens"), "{e}");
}

fn tiny_head(aggregation: Aggregation) -> PawnConfig {
    PawnConfig { metrics: 5, hidden: 3, features: 4, layers: 1, aggregation, label_smoothing: 0.2, pos_weight: 1.7 }
}

fn head_inputs(b: usize, t: usize, cfg: &PawnConfig, seed: u64) -> Tensors<f64> {
    let mut rng = Rng::new(seed);
    let mut floats = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
    let mut x = Tensors::new();
    x.insert("metrics".into(), Value::floats(vec![b, t, 5], floats(b * t * 5)));
    x.insert("gate_in".into(), Value::floats(vec![b, t, 2 * cfg.hidden + 1], floats(b * t * (2 * cfg.hidden + 1))));
    // The last two tokens of each text do not count.
    let mask: Vec<f64> = (0..b * t).map(|i| if i % t < t - 2 { 1.0 } else { 0.0 }).collect();
    x.insert("mask".into(), Value::floats(vec![b, t], mask));
    x.insert("labels".into(), Value::floats(vec![b], (0..b).map(|i| (i % 2) as f64).collect()));
    x
}

#[test]
fn the_heads_gradient_matches_finite_differences() {
    for aggregation in [Aggregation::Weighted, Aggregation::Mean] {
        let cfg = tiny_head(aggregation);
        let mut p = lsc_models::pawn::build(&cfg).unwrap();
        let grads = add_parameter_gradients(&mut p, "loss", &VjpTable::standard()).unwrap();
        for (n, g) in grads {
            p.main.outputs.push((format!("grad.{n}"), g));
        }
        let mut params: Tensors<f64> =
            init::init_params(&p, 4).unwrap().iter().map(|(k, v)| (k.clone(), v.convert())).collect();
        // Weights far from the 0.02 init, so every path carries gradient.
        let mut rng = Rng::new(8);
        for v in params.values_mut() {
            if let Buffer::Float(x) = &mut v.data {
                x.iter_mut().for_each(|w| *w += 0.5 * rng.normal());
            }
        }
        let x = head_inputs(3, 6, &cfg, 2);
        let interp = Interpreter::new(&p).unwrap();
        let outs = interp.run(&x, &params).unwrap();
        let loss =
            |t: &Tensors<f64>| interp.run(&x, t).unwrap().iter().find(|(k, _)| k == "loss").unwrap().1.to_f64_vec()[0];
        let mut checked = 0;
        for (name, v) in params.clone() {
            let g = outs.iter().find(|(k, _)| *k == format!("grad.{name}")).unwrap().1.to_f64_vec();
            for _ in 0..3 {
                let i = (rng.next_u64() % v.numel() as u64) as usize;
                let bump = |h: f64| {
                    let mut t = params.clone();
                    if let Buffer::Float(d) = &mut t.get_mut(&name).unwrap().data {
                        d[i] += h;
                    }
                    loss(&t)
                };
                let fd = (bump(1e-6) - bump(-1e-6)) / 2e-6;
                assert!(
                    (fd - g[i]).abs() <= 1e-7 + 1e-5 * fd.abs().max(g[i].abs()),
                    "{aggregation:?} d loss/d {name}[{i}]: {} vs {fd}",
                    g[i]
                );
                checked += 1;
            }
        }
        assert!(checked >= 30, "{checked}");
    }
}

#[test]
fn tokens_that_do_not_count_change_nothing() {
    for aggregation in [Aggregation::Weighted, Aggregation::Mean] {
        let cfg = tiny_head(aggregation);
        let p = lsc_models::pawn::build(&cfg).unwrap();
        let params: Tensors<f64> =
            init::init_params(&p, 4).unwrap().iter().map(|(k, v)| (k.clone(), v.convert())).collect();
        let x = head_inputs(2, 5, &cfg, 1);
        let logit = |x: &Tensors<f64>| {
            let o = Interpreter::new(&p).unwrap().run(x, &params).unwrap();
            o.iter().find(|(k, _)| k == "logit").unwrap().1.to_f64_vec()
        };
        let mut y = x.clone();
        // Position 4 of each text is masked out: change its metrics and gate inputs wildly.
        for name in ["metrics", "gate_in"] {
            let v = y.get_mut(name).unwrap();
            let per = v.shape[2];
            if let Buffer::Float(d) = &mut v.data {
                for b in 0..2 {
                    d[(b * 5 + 4) * per..(b * 5 + 5) * per].iter_mut().for_each(|z| *z = 1e3);
                }
            }
        }
        let (a, b) = (logit(&x), logit(&y));
        for (u, w) in a.iter().zip(&b) {
            assert!((u - w).abs() < 1e-9, "{aggregation:?}: {a:?} vs {b:?}");
        }
        // A counted token does change it.
        let mut z = x.clone();
        if let Buffer::Float(d) = &mut z.get_mut("metrics").unwrap().data {
            d[0] += 5.0;
        }
        assert_ne!(logit(&z)[0], a[0], "{aggregation:?}");
    }
}
