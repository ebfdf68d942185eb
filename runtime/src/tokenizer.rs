//! Tokenizers: bytes (the default: 256 tokens, nothing to train or store) or
//! BPE through the `tokenizers` crate (cargo feature `bpe`), trained on the
//! training split and stored as `tokenizer.json` (and inside checkpoints).

use crate::error::RuntimeError;

/// A tokenizer.
#[derive(Clone)]
pub enum Tokenizer {
    /// One token per byte.
    Bytes,
    /// Byte-level BPE.
    #[cfg(feature = "bpe")]
    Bpe(Box<tokenizers::Tokenizer>),
}

#[cfg(feature = "bpe")]
fn err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Input(format!("tokenizer: {e}"))
}

impl Tokenizer {
    /// The number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            #[cfg(feature = "bpe")]
            Tokenizer::Bpe(t) => t.get_vocab_size(true),
        }
    }

    /// Text to ids.
    pub fn encode(&self, text: &[u8]) -> Result<Vec<u32>, RuntimeError> {
        match self {
            Tokenizer::Bytes => Ok(text.iter().map(|&b| b as u32).collect()),
            #[cfg(feature = "bpe")]
            Tokenizer::Bpe(t) => {
                let s = String::from_utf8_lossy(text);
                Ok(t.encode(s.as_ref(), false).map_err(err)?.get_ids().to_vec())
            }
        }
    }

    /// Ids to text.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>, RuntimeError> {
        match self {
            Tokenizer::Bytes => Ok(ids.iter().map(|&i| i.min(255) as u8).collect()),
            #[cfg(feature = "bpe")]
            Tokenizer::Bpe(t) => Ok(t.decode(ids, false).map_err(err)?.into_bytes()),
        }
    }

    /// `tokenizer.json` contents (`None` for bytes, which need none).
    pub fn to_json(&self) -> Result<Option<String>, RuntimeError> {
        match self {
            Tokenizer::Bytes => Ok(None),
            #[cfg(feature = "bpe")]
            Tokenizer::Bpe(t) => Ok(Some(t.to_string(false).map_err(err)?)),
        }
    }

    /// Loads a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Tokenizer, RuntimeError> {
        #[cfg(feature = "bpe")]
        {
            let t: tokenizers::Tokenizer = json.parse().map_err(err)?;
            Ok(Tokenizer::Bpe(Box::new(t)))
        }
        #[cfg(not(feature = "bpe"))]
        {
            let _ = json;
            Err(RuntimeError::Input("this lsc was built without BPE support; rebuild with `--features bpe`".into()))
        }
    }

    /// Trains a byte-level BPE tokenizer with `vocab` tokens on `text`.
    pub fn train_bpe(text: &[u8], vocab: usize) -> Result<Tokenizer, RuntimeError> {
        #[cfg(feature = "bpe")]
        {
            use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
            use tokenizers::models::TrainerWrapper;
            use tokenizers::pre_tokenizers::byte_level::ByteLevel;
            let trainer = BpeTrainerBuilder::new()
                .vocab_size(vocab)
                .min_frequency(2)
                .show_progress(false)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .build();
            let mut trainer = TrainerWrapper::BpeTrainer(trainer);
            let mut t = tokenizers::Tokenizer::new(BPE::default());
            t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            t.with_decoder(Some(ByteLevel::new(false, true, true)));
            let dir = std::env::temp_dir().join(format!("lsc-bpe-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(err)?;
            let file = dir.join("train.txt");
            std::fs::write(&file, text).map_err(err)?;
            let files = vec![file.to_string_lossy().into_owned()];
            let result = t.train_from_files(&mut trainer, files).map(|_| ());
            let _ = std::fs::remove_dir_all(&dir);
            result.map_err(err)?;
            let wrapped = t;
            Ok(Tokenizer::Bpe(Box::new(wrapped)))
        }
        #[cfg(not(feature = "bpe"))]
        {
            let _ = (text, vocab);
            Err(RuntimeError::Input("this lsc was built without BPE support; rebuild with `--features bpe`".into()))
        }
    }
}
