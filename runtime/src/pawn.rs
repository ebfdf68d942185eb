//! Training and running PAWN's detector head (`lsc_models::pawn`) on cached
//! features: batches of padded texts with the gate's inputs `[h_t; h_{t+1};
//! t/T]`, token dropout, AdamW with a cosine schedule, and the logits.

use crate::detect::{TextFeatures, METRICS};
use crate::error::RuntimeError;
use crate::fit::Fitter;
use crate::init::Rng;
use lsc_interp::{Tensors, Value};
use lsc_models::pawn::PawnConfig;
use lsc_passes::train::{Optimizer, StepOptions};
use serde::{Deserialize, Serialize};

/// Per-metric mean and standard deviation over the training tokens: the
/// metrics (log-probabilities of −20 beside quantiles in [0, 1]) are
/// standardised before the head sees them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricNorm {
    /// Means, in [`METRICS`] order.
    pub mean: Vec<f64>,
    /// Standard deviations.
    pub std: Vec<f64>,
}

impl MetricNorm {
    /// The statistics of every token of `texts`.
    pub fn fit(texts: &[&TextFeatures]) -> MetricNorm {
        let k = METRICS.len();
        let (mut sum, mut sq, mut n) = (vec![0.0; k], vec![0.0; k], 0.0);
        for t in texts {
            for row in t.metrics.chunks(k) {
                for (j, &x) in row.iter().enumerate() {
                    sum[j] += x as f64;
                    sq[j] += (x as f64).powi(2);
                }
                n += 1.0;
            }
        }
        let n: f64 = f64::max(n, 1.0);
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq.iter().zip(&mean).map(|(q, m)| (q / n - m * m).max(0.0).sqrt().max(1e-6)).collect();
        MetricNorm { mean, std }
    }
}

/// The head's shape: its config, the positions per text and the metric statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// The head's hyperparameters.
    pub cfg: PawnConfig,
    /// Positions per text `T` (the backbone's token limit − 1).
    pub positions: usize,
    /// Standardisation of the metrics.
    pub norm: MetricNorm,
}

/// The head's inputs for a batch of texts (rows beyond `texts.len()`, up to
/// `rows`, are padding with no token that counts). With `dropout`, each
/// token is masked with that probability, never all of a text's.
pub fn batch(
    head: &Head,
    texts: &[&TextFeatures],
    labels: &[u8],
    rows: usize,
    mut dropout: Option<(f64, &mut Rng)>,
) -> Tensors<f32> {
    let (t, k, d) = (head.positions, METRICS.len(), head.cfg.hidden);
    let g = 2 * d + 1;
    let mut metrics = vec![0.0f32; rows * t * k];
    let mut gate = vec![0.0f32; rows * t * g];
    let mut mask = vec![0.0f32; rows * t];
    let mut y = vec![0.0f32; rows];
    for (r, (f, &label)) in texts.iter().zip(labels).enumerate() {
        y[r] = label as f32;
        let n = (f.tokens - 1).min(t);
        for p in 0..n {
            for j in 0..k {
                metrics[(r * t + p) * k + j] =
                    ((f.metrics[p * k + j] as f64 - head.norm.mean[j]) / head.norm.std[j]) as f32;
            }
            let at = (r * t + p) * g;
            gate[at..at + d].copy_from_slice(&f.hidden[p * d..(p + 1) * d]);
            gate[at + d..at + 2 * d].copy_from_slice(&f.hidden[(p + 1) * d..(p + 2) * d]);
            gate[at + 2 * d] = p as f32 / t as f32;
            mask[r * t + p] = 1.0;
        }
        if let Some((rate, rng)) = dropout.as_mut() {
            let keep: Vec<bool> = (0..n).map(|_| rng.uniform() >= *rate).collect();
            if keep.iter().any(|&k| k) {
                (0..n).filter(|&p| !keep[p]).for_each(|p| mask[r * t + p] = 0.0);
            }
        }
    }
    Tensors::from([
        ("metrics".to_string(), Value::floats(vec![rows, t, k], metrics)),
        ("gate_in".to_string(), Value::floats(vec![rows, t, g], gate)),
        ("mask".to_string(), Value::floats(vec![rows, t], mask)),
        ("labels".to_string(), Value::floats(vec![rows], y)),
    ])
}

/// How the head is trained.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Passes over the training texts.
    pub epochs: usize,
    /// Texts per step.
    pub batch: usize,
    /// AdamW's peak rate (cosine decay to 0, no warmup).
    pub lr: f64,
    /// AdamW's weight decay.
    pub weight_decay: f64,
    /// Tokens masked out of the gate softmax per step.
    pub token_dropout: f64,
    /// Seed of the initialisation, shuffling and dropout.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions { epochs: 5, batch: 32, lr: 1e-3, weight_decay: 1e-2, token_dropout: 0.15, seed: 0 }
    }
}

fn bindings(rows: usize, t: usize) -> lsc_ir::Bindings {
    [("B".to_string(), rows as i64), ("T".to_string(), t as i64)].into()
}

/// Trains the head on `texts` with `labels`; returns its parameters and the
/// loss of every step. `progress` is called once per step.
pub fn train(
    head: &Head,
    texts: &[&TextFeatures],
    labels: &[u8],
    opts: &TrainOptions,
    on: crate::backend::RunOn,
    progress: &mut dyn FnMut(),
) -> Result<(Tensors<f32>, Vec<f64>), RuntimeError> {
    let program = lsc_models::pawn::build(&head.cfg).map_err(|e| RuntimeError::Input(e.to_string()))?;
    let params = crate::init::init_params(&program, opts.seed).map_err(RuntimeError::Input)?;
    let step_opts = StepOptions {
        optimizer: Optimizer::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: opts.weight_decay },
        clip_norm: Some(1.0),
        ..Default::default()
    };
    let rows = opts.batch.min(texts.len()).max(1);
    let mut fitter = Fitter::new(&program, &step_opts, &params, on, &bindings(rows, head.positions))?;
    let per_epoch = texts.len() / rows;
    let total = (per_epoch * opts.epochs).max(1);
    let mut rng = Rng::new(opts.seed ^ 0x9a57);
    let mut order: Vec<usize> = (0..texts.len()).collect();
    let mut losses = Vec::with_capacity(total);
    for _ in 0..opts.epochs {
        // Fisher–Yates with the run's generator.
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks_exact(rows) {
            let (t, y): (Vec<&TextFeatures>, Vec<u8>) = chunk.iter().map(|&i| (texts[i], labels[i])).unzip();
            let inputs = batch(head, &t, &y, rows, Some((opts.token_dropout, &mut rng)));
            let done = losses.len() as f64 / total as f64;
            let lr = opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * done).cos());
            losses.push(fitter.step(&inputs, lr)?);
            progress();
        }
    }
    Ok((fitter.params()?, losses))
}

/// The head's logit for every text (positive: machine).
pub fn logits(
    head: &Head,
    params: &Tensors<f32>,
    texts: &[&TextFeatures],
    on: crate::backend::RunOn,
) -> Result<Vec<f64>, RuntimeError> {
    let mut program = lsc_models::pawn::build(&head.cfg).map_err(|e| RuntimeError::Input(e.to_string()))?;
    program.main.outputs.retain(|(n, _)| n == "logit");
    lsc_passes::dce::eliminate_dead_code(&mut program);
    let rows = 32.min(texts.len()).max(1);
    let exe = crate::backend::Executable::new(program, on)?;
    let mut loaded = exe.load(&bindings(rows, head.positions))?;
    exe.set_params(loaded.as_mut(), params)?;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(rows) {
        let inputs = batch(head, chunk, &vec![0; chunk.len()], rows, None);
        for name in ["metrics", "gate_in", "mask"] {
            loaded.set(name, &inputs[name])?;
        }
        loaded.run()?;
        out.extend(loaded.output("logit")?.to_f64_vec().into_iter().take(chunk.len()));
    }
    Ok(out)
}
