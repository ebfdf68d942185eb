//! BPE tokenizers (cargo feature `bpe`): training, exact round trips, storage
//! in checkpoints, and a model trained end to end on BPE tokens.
#![cfg(feature = "bpe")]

use lsc_runtime::tokenizer::Tokenizer;
use std::process::Command;

#[test]
fn bpe_trains_round_trips_and_reloads_from_json() {
    let text = lsc_runtime::data::synthetic_corpus(0, 100_000);
    let tok = Tokenizer::train_bpe(&text, 400).unwrap();
    assert!(tok.vocab_size() > 256 && tok.vocab_size() <= 400, "{}", tok.vocab_size());
    let sample = &text[..2000];
    let ids = tok.encode(sample).unwrap();
    assert!(ids.len() < sample.len() / 2, "BPE compresses: {} ids for {} bytes", ids.len(), sample.len());
    assert!(tok.decode(&ids).unwrap() == sample, "decode(encode(x)) == x");
    let json = tok.to_json().unwrap().unwrap();
    let again = Tokenizer::from_json(&json).unwrap();
    assert_eq!(again.encode(sample).unwrap(), ids);
}

#[test]
fn a_model_trains_on_bpe_tokens_and_generates() {
    let dir = std::env::temp_dir().join(format!("lsc-bpe-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let lsc = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_lsc")).args(args).output().unwrap();
    let out = dir.to_str().unwrap();
    let o = lsc(&[
        "train",
        "--model",
        "transformer",
        "--steps",
        "3",
        "--batch",
        "2",
        "--seq",
        "16",
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "320",
        "--out",
        out,
        "--sample-tokens",
        "5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.join("tokenizer.json").exists());
    let ckpt = dir.join("checkpoint.safetensors");
    let c = lsc_runtime::checkpoint::Checkpoint::load(&ckpt).unwrap();
    assert!(c.tokenizer.is_some());
    assert_eq!(c.params["embed.weight"].shape[0], c.meta.train["vocab"].as_u64().unwrap() as usize);
    let o = lsc(&["generate", "--ckpt", ckpt.to_str().unwrap(), "--prompt", "The ", "--max-tokens", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("The "));
    let o = lsc(&["eval", "--ckpt", ckpt.to_str().unwrap(), "--max-windows", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}
