//! Text data as byte tokens: a file is split into train (the first 90% of its
//! bytes) and validation (the last 10%).

use crate::error::RuntimeError;
use std::path::Path;

/// Which part of a text file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The first 90% of bytes.
    Train,
    /// The last 10% of bytes.
    Validation,
}

/// The byte offset where validation starts.
pub fn split_point(len: usize) -> usize {
    len - len / 10
}

/// The bytes of `split` of `text`.
pub fn split(text: &[u8], which: Split) -> &[u8] {
    let at = split_point(text.len());
    match which {
        Split::Train => &text[..at],
        Split::Validation => &text[at..],
    }
}

/// Reads a text file's `split` as byte tokens.
pub fn read_split(path: &Path, which: Split) -> Result<Vec<u8>, RuntimeError> {
    let bytes = crate::weights::read_file(path)?;
    Ok(split(&bytes, which).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_is_the_last_tenth() {
        let text: Vec<u8> = (0..100).collect();
        assert_eq!(split(&text, Split::Train).len(), 90);
        assert_eq!(split(&text, Split::Validation)[0], 90);
        assert_eq!(split(&text[..7], Split::Validation).len(), 0);
    }
}

/// The built-in synthetic corpus: a seeded generator of a small language with
/// dense local structure (invented words spelled from syllables, agreement
/// between subject and verb, fixed phrase patterns) and rare long-range
/// dependencies (each paragraph introduces a character and an object that are
/// recalled, occasionally, many sentences later). Needs no files.
pub fn synthetic_corpus(seed: u64, bytes: usize) -> Vec<u8> {
    let mut rng = crate::init::Rng::new(seed ^ 0x5e7_c0de);
    let syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vu", "ne", "dor", "pi", "ta", "shi", "mo", "el", "ar", "qu"];
    let word = |rng: &mut crate::init::Rng, parts: usize| -> String {
        (0..parts).map(|_| syllables[(rng.next_u64() % syllables.len() as u64) as usize]).collect()
    };
    let names: Vec<String> = (0..12)
        .map(|_| {
            let w = word(&mut rng, 2);
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or(w)
        })
        .collect();
    let nouns: Vec<String> = (0..40).map(|_| word(&mut rng, 2)).collect();
    let verbs: Vec<String> = (0..20).map(|_| word(&mut rng, 2)).collect();
    let adjs: Vec<String> = (0..20).map(|_| word(&mut rng, 1) + "y").collect();
    let pick = |rng: &mut crate::init::Rng, v: &[String]| v[(rng.next_u64() % v.len() as u64) as usize].clone();
    let mut out = String::new();
    while out.len() < bytes {
        let hero = pick(&mut rng, &names);
        let treasure = pick(&mut rng, &nouns);
        out += &format!("{hero} had a {} {treasure}.", pick(&mut rng, &adjs));
        let sentences = 4 + rng.next_u64() % 8;
        for _ in 0..sentences {
            let roll = rng.next_u64() % 10;
            let plural = rng.next_u64().is_multiple_of(2);
            let subject = pick(&mut rng, &nouns);
            let (s, verb_end) = if plural { ("s", "") } else { ("", "s") };
            out += &match roll {
                0 => format!(" Later {hero} found the {treasure} again."),
                1 => format!(" \"{} {}!\" said {hero}.", pick(&mut rng, &adjs), pick(&mut rng, &nouns)),
                _ => format!(
                    " The {} {subject}{s} {}{verb_end} the {}.",
                    pick(&mut rng, &adjs),
                    pick(&mut rng, &verbs),
                    pick(&mut rng, &nouns)
                ),
            };
        }
        out += "\n\n";
    }
    out.truncate(bytes);
    out.into_bytes()
}

/// Where the shared corpora live, relative to the project root.
pub const SHARED_DATA: &str = "../shared/data";

/// Resolves `--data`: `synthetic` (built in), a corpus name from `../shared/data`
/// (`tinyshakespeare`, `tinystories`, `wikitext-2`), or a path to a text file.
/// Returns the whole text.
pub fn load_text(spec: &str, seed: u64) -> Result<Vec<u8>, RuntimeError> {
    let corpus = match spec {
        "synthetic" => return Ok(synthetic_corpus(seed, 2 << 20)),
        "tinyshakespeare" => Some("tinyshakespeare/input.txt"),
        "tinystories" => Some("tinystories/tinystories_val_first1000.txt"),
        "wikitext-2" => Some("wikitext-2/wiki.train.tokens"),
        _ => None,
    };
    match corpus {
        Some(rel) => {
            let path = Path::new(SHARED_DATA).join(rel);
            crate::weights::read_file(&path).map_err(|_| {
                RuntimeError::Input(format!(
                    "corpus `{spec}` is not at {} (it ships in ../shared/data beside the repo); pass a text file path or `synthetic`",
                    path.display()
                ))
            })
        }
        None => crate::weights::read_file(Path::new(spec)),
    }
}

/// Draws training batches of random windows, deterministically from a seed.
#[derive(Clone, Debug)]
pub struct Sampler {
    rng: crate::init::Rng,
    /// Batches drawn so far (the data position saved in checkpoints).
    pub draws: u64,
}

impl Sampler {
    /// A sampler from a seed.
    pub fn new(seed: u64) -> Sampler {
        Sampler { rng: crate::init::Rng::new(seed), draws: 0 }
    }

    /// Advances past `draws` batches of `batch` windows (resuming a run): the
    /// generator draws one number per window whatever the text, so replaying it
    /// restores the exact data position.
    pub fn skip(&mut self, draws: u64, batch: usize) {
        for _ in 0..draws * batch as u64 {
            self.rng.next_u64();
        }
        self.draws += draws;
    }

    fn offsets(&mut self, batch: usize, tokens: usize, seq: usize) -> Vec<usize> {
        self.draws += 1;
        let span = (tokens - seq) as u64;
        (0..batch).map(|_| (self.rng.next_u64() % span) as usize).collect()
    }

    /// `(input_ids, targets)`, each `batch × seq`, from windows of `seq + 1` tokens.
    pub fn next(&mut self, tokens: &[u32], batch: usize, seq: usize) -> Result<(Vec<i64>, Vec<i64>), RuntimeError> {
        if tokens.len() <= seq + 1 {
            return Err(RuntimeError::Input(format!(
                "the training text has {} tokens, fewer than one window of {}",
                tokens.len(),
                seq + 1
            )));
        }
        let mut ids = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for o in self.offsets(batch, tokens.len(), seq) {
            ids.extend(tokens[o..o + seq].iter().map(|&b| b as i64));
            targets.extend(tokens[o + 1..o + seq + 1].iter().map(|&b| b as i64));
        }
        Ok((ids, targets))
    }
}

#[cfg(test)]
mod corpus_tests {
    use super::*;

    #[test]
    fn synthetic_corpus_is_seeded_and_has_long_range_recalls() {
        let a = synthetic_corpus(1, 20_000);
        assert_eq!(a, synthetic_corpus(1, 20_000));
        assert_ne!(a, synthetic_corpus(2, 20_000));
        let text = String::from_utf8(a).unwrap();
        assert!(text.contains(" found the ") && text.contains("\n\n"));
        assert!(text.is_ascii());
    }

    #[test]
    fn sampler_resumes_where_it_stopped() {
        let tokens: Vec<u32> = synthetic_corpus(0, 5000).into_iter().map(u32::from).collect();
        let mut a = Sampler::new(3);
        for _ in 0..4 {
            a.next(&tokens, 2, 16).unwrap();
        }
        let mut b = Sampler::new(3);
        b.skip(4, 2);
        assert_eq!(a.next(&tokens, 2, 16).unwrap(), b.next(&tokens, 2, 16).unwrap());
    }
}
