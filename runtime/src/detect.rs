//! AI-generated text detection (PAWN): labelled texts from JSON files, a
//! frozen language model's per-token next-token metrics and hidden states
//! cached on disk, and the scores a detector is judged by.
//!
//! The metrics at position `t`, predicting the actual next token `y = x_{t+1}`
//! from the log-softmax `ℓ` of the logits (in f64): `log p(y)`, the entropy
//! `−Σ p_v ℓ_v`, `max_v ℓ_v`, the rank quantile `#{v : ℓ_v ≥ ℓ_y} / V` and the
//! top-p mass `Σ_{ℓ_v ≥ ℓ_y} p_v`.

use crate::backend::{Executable, Loaded, RunOn};
use crate::error::RuntimeError;
use lsc_interp::{Tensors, Value};
use lsc_ir::Program;
use std::path::{Path, PathBuf};

/// The metrics per token, in this order.
pub const METRICS: [&str; 5] = ["next_token_log_prob", "entropy", "max_log_prob", "rank_quantile", "top_p"];

/// One text with its label and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The text.
    pub text: String,
    /// 1 for machine-generated, 0 for human.
    pub label: u8,
    /// The file it was read from.
    pub source: String,
}

fn bad(path: &Path, what: String) -> RuntimeError {
    RuntimeError::Input(format!("{}: {what}", path.display()))
}

/// Reads labelled texts from a JSON file: either fast-detect-gpt's
/// `{"original": [human texts], "sampled": [machine texts]}`, or an array of
/// `{"text": "...", "label": 0 | 1}`. A missing or malformed field is an
/// error naming the file and the record.
pub fn read_records(path: &Path) -> Result<Vec<Record>, RuntimeError> {
    let bytes = crate::weights::read_file(path)?;
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("not valid JSON ({e})")))?;
    let source = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut out = Vec::new();
    match &doc {
        serde_json::Value::Object(map) if map.contains_key("original") || map.contains_key("sampled") => {
            for (key, label) in [("original", 0u8), ("sampled", 1u8)] {
                let list = map.get(key).and_then(|v| v.as_array()).ok_or_else(|| {
                    bad(path, format!("field `{key}` is missing or not an array (fast-detect-gpt files have `original` and `sampled`)"))
                })?;
                for (i, v) in list.iter().enumerate() {
                    let text = v.as_str().ok_or_else(|| bad(path, format!("record {i} of `{key}` is not a string")))?;
                    out.push(Record { text: text.to_string(), label, source: source.clone() });
                }
            }
        }
        serde_json::Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                let text = v.get("text").and_then(|t| t.as_str());
                let text =
                    text.ok_or_else(|| bad(path, format!("record {i}: field `text` is missing or not a string")))?;
                let label = match v.get("label").and_then(|l| l.as_u64()) {
                    Some(l @ (0 | 1)) => l as u8,
                    _ => {
                        return Err(bad(
                            path,
                            format!("record {i}: field `label` is missing or not 0 (human) or 1 (machine)"),
                        ))
                    }
                };
                out.push(Record { text: text.to_string(), label, source: source.clone() });
            }
        }
        _ => {
            return Err(bad(
                path,
                "expected {\"original\": [...], \"sampled\": [...]} or [{\"text\": ..., \"label\": 0|1}, ...]".into(),
            ))
        }
    }
    if out.is_empty() {
        return Err(bad(path, "holds no texts".into()));
    }
    Ok(out)
}

/// Which records of a file a command uses: a fixed 80/20 split by a hash of
/// the text, so that it is the same in every run and for every model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The 80 % whose hash falls below the cut.
    Train,
    /// The other 20 %.
    Test,
    /// Every record.
    All,
}

impl Part {
    /// Whether `text` belongs to this part.
    pub fn holds(self, text: &str) -> bool {
        let in_train = !fnv(text.as_bytes(), 0x5917).is_multiple_of(5);
        match self {
            Part::Train => in_train,
            Part::Test => !in_train,
            Part::All => true,
        }
    }
}

fn fnv(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A 128-bit content key (two independent FNV-1a streams), as hex.
pub fn content_key(parts: &[&[u8]]) -> String {
    let mut a = 0xcbf2_9ce4_8422_2325u64;
    let mut b = 0x6c62_272e_07bb_0142u64;
    for part in parts {
        // Length-prefixed, so that part boundaries matter.
        for byte in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            a = (a ^ *byte as u64).wrapping_mul(0x0100_0000_01b3);
            b = (b ^ *byte as u64).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x2);
            b = b.rotate_left(5);
        }
    }
    format!("{a:016x}{b:016x}")
}

/// One text's cached features: `metrics [n − 1, 5]` (position `t` predicting
/// token `t + 1`) and `hidden [n, d]` (the last hidden states).
#[derive(Clone, Debug, PartialEq)]
pub struct TextFeatures {
    /// Row-major `(n − 1) × 5`.
    pub metrics: Vec<f32>,
    /// Row-major `n × d`.
    pub hidden: Vec<f32>,
    /// Tokens `n`.
    pub tokens: usize,
    /// Hidden size `d`.
    pub dim: usize,
}

/// The five metrics of one position from its logits row and the actual next token.
pub fn token_metrics(logits: &[f32], next: usize) -> [f32; 5] {
    let top = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let total: f64 = logits.iter().map(|&x| (x as f64 - top).exp()).sum();
    let log_z = top + total.ln();
    let lp = |x: f32| x as f64 - log_z;
    let target = lp(logits[next]);
    let (mut entropy, mut above, mut mass) = (0.0, 0usize, 0.0);
    for &x in logits {
        let (l, p) = (lp(x), lp(x).exp());
        entropy -= p * l;
        if l >= target {
            above += 1;
            mass += p;
        }
    }
    [target as f32, entropy as f32, (top - log_z) as f32, (above as f64 / logits.len() as f64) as f32, mass as f32]
}

/// Extracts features with a frozen language model, through a cache folder
/// of one safetensors file per (model, text).
pub struct Extractor {
    loaded: Box<dyn Loaded>,
    batch: usize,
    reading: Reading,
    model_key: String,
    cache: PathBuf,
    tokenizer: crate::tokenizer::Tokenizer,
    /// Texts whose features came from the cache / were computed, so far.
    pub hits: usize,
    /// Texts whose features were computed.
    pub misses: usize,
}

/// The fewest tokens a text must have (PAWN's minimum).
pub const MIN_TOKENS: usize = 16;

/// How much of each text the model reads: at most `max_tokens`, in
/// consecutive windows of `window` (the model's context or less), each read
/// afresh, so a text can be longer than the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Tokens read per text.
    pub max_tokens: usize,
    /// Tokens per window.
    pub window: usize,
}

impl Extractor {
    /// `forward` must have `logits` and `features` outputs (see
    /// `lsc_models::with_features`); `model_key` identifies the weights.
    pub fn new(
        forward: Program,
        params: &Tensors<f32>,
        on: impl Into<RunOn>,
        tokenizer: crate::tokenizer::Tokenizer,
        reading: Reading,
        model_key: String,
        cache: PathBuf,
    ) -> Result<Extractor, RuntimeError> {
        if reading.window == 0 || reading.max_tokens < MIN_TOKENS {
            return Err(RuntimeError::Input(format!("cannot read texts as {reading:?}")));
        }
        std::fs::create_dir_all(&cache).map_err(|source| RuntimeError::Io { path: cache.clone(), source })?;
        let batch = 8;
        let loaded = Executable::new(forward, on)?.load_with(batch, reading.window, params)?;
        Ok(Extractor { loaded, batch, reading, model_key, cache, tokenizer, hits: 0, misses: 0 })
    }

    /// Tokens read per text.
    pub fn max_tokens(&self) -> usize {
        self.reading.max_tokens
    }

    /// The key of the model's weights that the cache files are keyed by.
    pub fn model_key(&self) -> &str {
        &self.model_key
    }

    fn path(&self, text: &str) -> PathBuf {
        let (m, w) = (self.reading.max_tokens as u64, self.reading.window as u64);
        let key = content_key(&[self.model_key.as_bytes(), &m.to_le_bytes(), &w.to_le_bytes(), text.as_bytes()]);
        self.cache.join(format!("{key}.safetensors"))
    }

    /// The features of every text, from the cache where present (a cache
    /// file that is corrupt or of another shape is recomputed and replaced,
    /// with a warning). Texts of fewer than [`MIN_TOKENS`] tokens are an error
    /// naming the record.
    pub fn features(&mut self, records: &[Record]) -> Result<Vec<TextFeatures>, RuntimeError> {
        let mut out: Vec<Option<TextFeatures>> = vec![None; records.len()];
        let mut todo = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let path = self.path(&r.text);
            if path.exists() {
                match load_cached(&path) {
                    Ok(f) => {
                        out[i] = Some(f);
                        self.hits += 1;
                        continue;
                    }
                    Err(e) => eprintln!("warning: recomputing a corrupt feature cache file: {e}"),
                }
            }
            let mut ids = self.tokenizer.encode(r.text.as_bytes())?;
            ids.truncate(self.reading.max_tokens);
            if ids.len() < MIN_TOKENS {
                return Err(RuntimeError::Input(format!(
                    "{}: a text of {} tokens (at least {MIN_TOKENS} are needed): {:?}",
                    r.source,
                    ids.len(),
                    r.text.chars().take(40).collect::<String>()
                )));
            }
            todo.push((i, ids));
        }
        // A group of texts at a time bounds the memory their logits take.
        for group in todo.chunks(64) {
            let computed = self.run_texts(group)?;
            for ((i, _), f) in group.iter().zip(computed) {
                save_cached(&self.path(&records[*i].text), &f)?;
                out[*i] = Some(f);
                self.misses += 1;
            }
        }
        Ok(out.into_iter().map(|f| f.expect("every text has features")).collect())
    }

    /// The features of texts, their windows run `batch` at a time.
    fn run_texts(&mut self, texts: &[(usize, Vec<u32>)]) -> Result<Vec<TextFeatures>, RuntimeError> {
        let (b, t) = (self.batch, self.reading.window);
        let windows: Vec<(usize, usize)> =
            texts.iter().enumerate().flat_map(|(k, (_, x))| (0..x.len().div_ceil(t)).map(move |w| (k, w))).collect();
        let mut out: Vec<TextFeatures> = Vec::with_capacity(texts.len());
        for chunk in windows.chunks(b) {
            let mut ids = vec![0i64; b * t];
            for (row, &(k, w)) in chunk.iter().enumerate() {
                let x = &texts[k].1[w * t..((w + 1) * t).min(texts[k].1.len())];
                ids[row * t..row * t + x.len()].iter_mut().zip(x).for_each(|(d, s)| *d = *s as i64);
            }
            self.loaded.set("input_ids", &Value::ints(vec![b, t], ids))?;
            self.loaded.run()?;
            let logits = self.loaded.output("logits")?;
            crate::generate::check_finite(&logits)?;
            let hidden = self.loaded.output("features")?;
            let (v, d) = (logits.shape[2], hidden.shape[2]);
            let (logits, hidden) = (logits.as_floats().unwrap_or_default(), hidden.as_floats().unwrap_or_default());
            for (row, &(k, w)) in chunk.iter().enumerate() {
                let x = &texts[k].1;
                let n = x.len();
                if k == out.len() {
                    out.push(TextFeatures {
                        metrics: Vec::with_capacity((n - 1) * 5),
                        hidden: Vec::new(),
                        tokens: n,
                        dim: d,
                    });
                }
                let f = &mut out[k];
                for o in 0..t.min(n - w * t) {
                    let p = w * t + o;
                    if p + 1 < n {
                        f.metrics.extend(token_metrics(
                            &logits[(row * t + o) * v..(row * t + o + 1) * v],
                            x[p + 1] as usize,
                        ));
                    }
                    // Rounded as the cache stores them (f16), so a rerun from the cache sees the same values.
                    f.hidden.extend(
                        hidden[(row * t + o) * d..(row * t + o + 1) * d]
                            .iter()
                            .map(|&h| half::f16::from_f32(h).to_f32()),
                    );
                }
            }
        }
        Ok(out)
    }
}

fn load_cached(path: &Path) -> Result<TextFeatures, RuntimeError> {
    let t = crate::weights::load_tensors(path)?;
    let (m, h) = match (t.get("metrics"), t.get("hidden")) {
        (Some(m), Some(h)) => (m, h),
        _ => return Err(bad(path, "no `metrics` and `hidden` tensors".into())),
    };
    let ok = m.shape.len() == 2 && h.shape.len() == 2 && m.shape[1] == METRICS.len() && m.shape[0] + 1 == h.shape[0];
    if !ok {
        return Err(bad(path, format!("metrics {:?} and hidden {:?} do not belong together", m.shape, h.shape)));
    }
    Ok(TextFeatures {
        metrics: m.as_floats().unwrap_or_default().to_vec(),
        hidden: h.as_floats().unwrap_or_default().to_vec(),
        tokens: h.shape[0],
        dim: h.shape[1],
    })
}

fn save_cached(path: &Path, f: &TextFeatures) -> Result<(), RuntimeError> {
    let mut hidden = Value::floats(vec![f.tokens, f.dim], f.hidden.clone());
    hidden.dtype = lsc_ir::DType::F16;
    let t = Tensors::from([
        ("metrics".to_string(), Value::floats(vec![f.tokens - 1, METRICS.len()], f.metrics.clone())),
        ("hidden".to_string(), hidden),
    ]);
    crate::weights::save_tensors(path, &t)
}

/// Accuracy, macro-F1 (the mean of both classes' F1) and AUROC of scores
/// (higher: more likely machine) against labels, at `threshold`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Fraction classified right.
    pub accuracy: f64,
    /// Mean F1 of the human and the machine class.
    pub macro_f1: f64,
    /// Area under the ROC curve (ties count half).
    pub auroc: f64,
}

/// Scores of `scores` against `labels`, classifying `score > threshold` as machine.
pub fn evaluate(scores: &[f64], labels: &[u8], threshold: f64) -> Scores {
    let predicted: Vec<u8> = scores.iter().map(|&s| u8::from(s > threshold)).collect();
    let n = labels.len().max(1) as f64;
    let accuracy = predicted.iter().zip(labels).filter(|(p, y)| p == y).count() as f64 / n;
    let f1 = |class: u8| {
        let tp = predicted.iter().zip(labels).filter(|(p, y)| **p == class && **y == class).count() as f64;
        let fp = predicted.iter().zip(labels).filter(|(p, y)| **p == class && **y != class).count() as f64;
        let fn_ = predicted.iter().zip(labels).filter(|(p, y)| **p != class && **y == class).count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        }
    };
    Scores { accuracy, macro_f1: (f1(0) + f1(1)) / 2.0, auroc: auroc(scores, labels) }
}

/// The probability that a random machine text scores above a random human
/// one (Mann–Whitney, ties half), by sorting.
pub fn auroc(scores: &[f64], labels: &[u8]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Tied scores share the mean of their 1-based ranks.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| labels[order[k]] == 1).count() as f64 * rank;
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&y| y == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// The threshold on `scores` with the best accuracy on these labels (a
/// zero-shot detector's one fitted number).
pub fn best_threshold(scores: &[f64], labels: &[u8]) -> f64 {
    let mut sorted: Vec<f64> = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut best = (f64::NEG_INFINITY, -1.0);
    for w in sorted.windows(2) {
        let t = (w[0] + w[1]) / 2.0;
        let acc = evaluate(scores, labels, t).accuracy;
        if acc > best.1 {
            best = (t, acc);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_known_distribution() {
        // p = (0.5, 0.25, 0.25): the target 1 ties with token 2.
        let logits = [2.0f32.ln(), 0.0, 0.0];
        let [lp, h, max, q, top] = token_metrics(&logits, 1);
        assert!((lp - 0.25f32.ln()).abs() < 1e-6);
        assert!((h - 1.5 * 2f32.ln()).abs() < 1e-6, "entropy {h}");
        assert!((max - 0.5f32.ln()).abs() < 1e-6);
        assert_eq!(q, 1.0);
        assert!((top - 1.0).abs() < 1e-6);
        let [_, _, _, q, top] = token_metrics(&logits, 0);
        assert!((q - 1.0 / 3.0).abs() < 1e-6 && (top - 0.5).abs() < 1e-6);
    }

    #[test]
    fn auroc_f1_and_thresholds() {
        assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), 0.75);
        assert_eq!(auroc(&[0.5, 0.5], &[0, 1]), 0.5);
        let s = evaluate(&[0.1, 0.9, 0.2, 0.7], &[0, 1, 1, 1], 0.5);
        assert_eq!(s.accuracy, 0.75);
        // Human: P 1, R 1 → 1... no: one human predicted right, one machine predicted human.
        assert!((s.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12, "{s:?}");
        let t = best_threshold(&[0.1, 0.9, 0.2, 0.7], &[0, 1, 0, 1]);
        assert!(t > 0.2 && t < 0.7);
    }

    #[test]
    fn malformed_records_name_the_file_and_the_record() {
        let dir = std::env::temp_dir().join(format!("lsc-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let e = read_records(&write("a.json", r#"{"original": ["x", 3], "sampled": []}"#)).unwrap_err().to_string();
        assert!(e.contains("a.json") && e.contains("record 1 of `original`"), "{e}");
        let e = read_records(&write("b.json", r#"[{"text": "x", "label": 2}]"#)).unwrap_err().to_string();
        assert!(e.contains("b.json: record 0: field `label`"), "{e}");
        let e = read_records(&write("c.json", r#"{"original": ["x"]}"#)).unwrap_err().to_string();
        assert!(e.contains("field `sampled`"), "{e}");
        let e = read_records(&write("d.json", "[{")).unwrap_err().to_string();
        assert!(e.contains("d.json: not valid JSON"), "{e}");
        let ok = read_records(&write("e.json", r#"[{"text": "hello", "label": 1}]"#)).unwrap();
        assert_eq!(ok[0].label, 1);
    }

    #[test]
    fn the_split_is_fixed_and_about_four_to_one() {
        let texts: Vec<String> = (0..1000).map(|i| format!("text number {i}")).collect();
        let train = texts.iter().filter(|t| Part::Train.holds(t)).count();
        assert!((700..900).contains(&train), "{train}");
        assert!(texts.iter().all(|t| Part::Train.holds(t) != Part::Test.holds(t)));
        assert_ne!(content_key(&[b"ab", b"c"]), content_key(&[b"a", b"bc"]));
    }
}
