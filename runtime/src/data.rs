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
