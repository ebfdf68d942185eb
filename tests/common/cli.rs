//! Running the real `lsc` binary from integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `lsc` with `args`.
pub fn lsc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsc")).args(args).output().expect("lsc runs")
}

/// Its standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An empty folder of this test process named `name`.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lsc-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts exit status 2, `needle` on stderr, and no panic.
pub fn assert_bad(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
}

/// Asserts stderr is one line.
pub fn assert_one_line(o: &Output) {
    assert_eq!(stderr(o).trim_end().lines().count(), 1, "{}", stderr(o));
}
