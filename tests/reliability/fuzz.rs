//! A fuzzing harness with fixed seeds and bounded cases: mutated `.lsir` from
//! every built-in model, malformed safetensors and checkpoints, and random CLI
//! argument vectors. Every case must exit 0 or 2, never panic or abort, finish
//! within its time bound under a memory limit, and print no non-finite number
//! as a result. `LSC_FUZZ_SCALE=N` multiplies the case counts (a longer run
//! outside CI); a failure prints the case, so it can be rerun by hand.

use super::cli_support::{lsc, scratch, stderr, stdout};
use lsc_runtime::init::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Each case's wall-clock bound; the slowest legitimate case (compiling and
/// running a `tiny` model on 2 cores) takes a few seconds.
const CASE_TIME: Duration = Duration::from_secs(60);
/// Each case's address-space limit (`ulimit -v`, KiB): far above a `tiny`
/// model, far below an allocation that would take the machine down.
const CASE_MEMORY_KIB: u64 = 8 << 20;

fn scale() -> usize {
    std::env::var("LSC_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// Runs `lsc args` in `cwd` under the memory limit, killing it after `limit`.
pub fn run_bounded(args: &[&str], limit: Duration, cwd: &Path) -> Output {
    let mut script = format!("ulimit -v {CASE_MEMORY_KIB} && exec \"$0\"");
    for i in 1..=args.len() {
        script.push_str(&format!(" \"${{{i}}}\""));
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_lsc"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!("lsc {args:?} ran past {limit:?} (a hang)\nstderr: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The promises every case keeps.
fn check_case(o: &Output, args: &[&str], what: &str) {
    let (out, err) = (stdout(o), stderr(o));
    let case = format!("{what}: lsc {}\nstdout: {out}\nstderr: {err}", args.join(" "));
    assert!(matches!(o.status.code(), Some(0) | Some(2)), "exit {:?} (an abort or a signal) in {case}", o.status);
    assert!(!err.contains("panicked") && !err.contains("internal error"), "a panic in {case}");
    if o.status.code() == Some(2) {
        assert!(err.starts_with("error:"), "an error without a message in {case}");
        assert!(err.len() < 4096, "an error of {} bytes in {case}", err.len());
    }
    for word in out.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')') {
        let w = word.trim_start_matches("p=").to_ascii_lowercase();
        assert!(!matches!(w.as_str(), "nan" | "inf" | "-inf"), "a non-finite number printed as a result in {case}");
    }
}

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.next_u64() as usize % xs.len()]
}

/// One random edit of `.lsir` text.
fn mutate_lsir(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    let i = rng.next_u64() as usize % n;
    match rng.next_u64() % 9 {
        7 | 8 => {
            // A constant's value made hostile: the graph still verifies, so it runs.
            let values = ["NaN", "inf", "-inf", "-1.0", "0.0", "1e38", "-1e-30", "1e-45"];
            let constants: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].contains("{value=")).collect();
            if let Some(&k) = constants.get(rng.next_u64() as usize % constants.len().max(1)) {
                let line = &lines[k];
                let at = line.find("{value=").unwrap() + "{value=".len();
                let end = at + line[at..].find('}').unwrap_or(0);
                lines[k] = format!("{}{}{}", &line[..at], pick(rng, &values), &line[end..]);
            }
        }
        0 => {
            lines.remove(i.min(lines.len().saturating_sub(1)));
        }
        1 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        2 => {
            let j = rng.next_u64() as usize % n;
            lines.swap(i, j);
        }
        3 => {
            // A number replaced by a hostile one.
            let numbers = ["0", "-1", "1000000000", "99999999999999999999", "NaN", "1e38", "-0", "3"];
            let line = &lines[i];
            let digits: Vec<usize> = line.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(k, _)| k).collect();
            if let Some(&at) = digits.get(rng.next_u64() as usize % digits.len().max(1)) {
                let end = line[at..].find(|c: char| !c.is_ascii_digit()).map_or(line.len(), |e| at + e);
                lines[i] = format!("{}{}{}", &line[..at], pick(rng, &numbers), &line[end..]);
            }
        }
        4 => {
            // A byte replaced by a structural character.
            let mut bytes = lines[i].clone().into_bytes();
            if !bytes.is_empty() {
                let k = rng.next_u64() as usize % bytes.len();
                bytes[k] = *pick(rng, b"%,[]{}()=:\"x9 -");
            }
            lines[i] = String::from_utf8_lossy(&bytes).into_owned();
        }
        5 => {
            let cut = rng.next_u64() as usize % text.len().max(1);
            return text.chars().take(cut).collect();
        }
        _ => {
            // An op name replaced by another.
            let ops = ["add", "matmul", "reduce", "softmax", "concat", "slice", "broadcast", "reshape", "bogus"];
            if let Some(eq) = lines[i].find("= ") {
                let rest = &lines[i][eq + 2..];
                if let Some(paren) = rest.find('(') {
                    lines[i] = format!("{}{}{}", &lines[i][..eq + 2], pick(rng, &ops), &rest[paren..]);
                }
            }
        }
    }
    lines.join("\n") + "\n"
}

/// The `.lsir` of every built-in model (`tiny`): forward, inference and decoding graphs.
fn model_irs(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for m in lsc_models::MODELS {
        for graph in ["", "--inference", "--decode"] {
            let out = dir.join(format!("{}{graph}", m.name));
            let mut args = vec!["compile", "--model", m.name, "--emit", "ir", "-o", out.to_str().unwrap()];
            if !graph.is_empty() {
                args.push(graph);
            }
            let o = lsc(&args);
            assert!(o.status.success(), "{}", stderr(&o));
            files.extend(
                std::fs::read_dir(&out)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "lsir")),
            );
        }
    }
    files
}

#[test]
fn mutated_lsir_of_every_built_in_model_is_refused_cleanly_or_runs() {
    let dir = scratch("fuzz-lsir");
    let sources = model_irs(&dir);
    assert!(sources.len() >= 15, "{} graphs", sources.len());
    let mut rng = Rng::new(23);
    let (mut verdicts, mut executed) = ([0usize; 2], 0);
    for case in 0..240 * scale() {
        let src = pick(&mut rng, &sources).clone();
        let mut text = std::fs::read_to_string(&src).unwrap();
        for _ in 0..1 + rng.next_u64() % 3 {
            text = mutate_lsir(&text, &mut rng);
        }
        let file = dir.join(format!("case{case}.lsir"));
        std::fs::write(&file, &text).unwrap();
        let f = file.to_str().unwrap();
        let what = format!("mutation {case} of {}", src.display());
        let check = run_bounded(&["check", f], CASE_TIME, &dir);
        check_case(&check, &["check", f], &what);
        verdicts[usize::from(check.status.success())] += 1;
        // Every fourth case that still verifies also compiles to a plan and runs.
        if check.status.success() && case % 4 == 0 {
            for args in [
                vec!["run", "--ir", f, "--prompt", "ab"],
                vec!["compile", "--ir", f, "--emit", "plan", "--bind", "B=1,T=4", "-o", "compiled"],
            ] {
                let o = run_bounded(&args, CASE_TIME, &dir);
                check_case(&o, &args, &what);
                executed += 1;
            }
        }
    }
    eprintln!(
        "{} mutations refused by `lsc check`, {} verified; {executed} runs and compiles",
        verdicts[0], verdicts[1]
    );
    assert!(verdicts[0] > 0 && verdicts[1] > 0, "the mutations both break and keep graphs: {verdicts:?}");
}

/// One random corruption of a safetensors file.
fn corrupt(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    match rng.next_u64() % 6 {
        0 => b.truncate(rng.next_u64() as usize % b.len()),
        1 => {
            // A byte of the JSON header.
            let k = 8 + rng.next_u64() as usize % header;
            b[k] = *pick(rng, b"{}[],:\"0 9x");
        }
        2 => {
            // A byte of the tensor data: the CRC must catch it.
            let k = 8 + header + rng.next_u64() as usize % (b.len() - 8 - header);
            b[k] ^= 1 << (rng.next_u64() % 8);
        }
        3 => {
            let fake = *pick(rng, &[0u64, 1, u64::MAX, (b.len() * 2) as u64, header as u64 - 1]);
            b[..8].copy_from_slice(&fake.to_le_bytes());
        }
        4 => {
            // A dtype or a shape rewritten in the header.
            let text = String::from_utf8_lossy(&b[8..8 + header]).into_owned();
            let edits = [
                ("\"F32\"", "\"I32\""),
                ("\"F32\"", "\"F16\""),
                ("[32]", "[33]"),
                ("[256,32]", "[32,256]"),
                ("\"F32\"", "\"U64\""),
            ];
            let (from, to) = pick(rng, &edits);
            let new = text.replacen(from, to, 1);
            b.splice(8..8 + header, new.bytes());
        }
        _ => b.extend_from_slice(b"trailing garbage"),
    }
    b
}

#[test]
fn malformed_safetensors_and_checkpoints_are_refused_cleanly() {
    let dir = scratch("fuzz-safetensors");
    let mut args = vec!["train", "--out", "run", "--steps", "1"];
    args.extend(super::TINY);
    let o = run_bounded(&args, CASE_TIME, &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let good = std::fs::read(dir.join("run/checkpoint.safetensors")).unwrap();
    let mut rng = Rng::new(41);
    for case in 0..60 * scale() {
        let file = dir.join(format!("case{case}.safetensors"));
        std::fs::write(&file, corrupt(&good, &mut rng)).unwrap();
        let f = file.to_str().unwrap();
        for args in [
            vec!["eval", "--ckpt", f, "--max-windows", "1"],
            vec!["run", "--model", "transformer", "--weights", f, "--prompt", "ab"],
        ] {
            let o = run_bounded(&args, CASE_TIME, &dir);
            check_case(&o, &args, &format!("corruption {case}"));
        }
    }
}

/// Random argument vectors over every subcommand and its flags, with hostile values.
fn random_args(rng: &mut Rng) -> Vec<String> {
    // `bench` is left out: with valid arguments it times every model for minutes.
    let commands = ["models", "check", "compile", "train", "eval", "generate", "run", "bogus"];
    let flags = [
        "--model",
        "--config",
        "--ir",
        "--emit",
        "--train",
        "--inference",
        "--decode",
        "--steps",
        "--batch",
        "--seq",
        "--lr",
        "--min-lr",
        "--schedule",
        "--warmup",
        "--optimizer",
        "--clip",
        "--data",
        "--resume",
        "--ckpt",
        "--weights",
        "--prompt",
        "--max-tokens",
        "--temperature",
        "--top-k",
        "--max-windows",
        "--backend",
        "--precision",
        "--bind",
        "--egg-node-limit",
        "--egg-time-limit-ms",
        "--max-seconds",
        "--tokenizer",
        "--eval-windows",
        "--beta1",
        "--seed",
        "--overwrite",
        "--json",
        "--models",
        "--inputs",
        "--out",
    ];
    let values = [
        "0",
        "1",
        "2",
        "-1",
        "NaN",
        "inf",
        "1e308",
        "99999999999999999999",
        "",
        "tiny",
        "small",
        "transformer",
        "ls-transformer",
        "mor",
        "gam",
        "trilm",
        "bogus",
        "cosine",
        "constant",
        "sgd",
        "cranelift",
        "interp",
        "cuda",
        "bf16",
        "B=1,T=4",
        "B=0",
        "T=-3",
        "ir,plan",
        "kir",
        "/nonexistent",
        "nonexistent.lsir",
        ".",
        "ab",
        "\u{1F600}",
        "synthetic",
    ];
    let mut args = vec![pick(rng, &commands).to_string()];
    for _ in 0..rng.next_u64() % 7 {
        args.push(pick(rng, &flags).to_string());
        if !rng.next_u64().is_multiple_of(5) {
            args.push(pick(rng, &values).to_string());
        }
    }
    // Work a valid vector starts is bounded: a short run, few windows and tokens.
    let has = |f: &str| args.iter().any(|a| a == f);
    let extra: &[&str] = match args[0].as_str() {
        "train" if !has("--max-seconds") => &["--max-seconds", "5", "--sample-tokens", "0"],
        "eval" if !has("--max-windows") => &["--max-windows", "2"],
        "generate" if !has("--max-tokens") => &["--max-tokens", "5"],
        _ => &[],
    };
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn random_command_lines_exit_0_or_2_with_a_message() {
    let dir = scratch("fuzz-cli");
    let mut rng = Rng::new(5);
    let mut codes = [0usize; 3];
    for case in 0..120 * scale() {
        let args = random_args(&mut rng);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run_bounded(&args, CASE_TIME, &dir);
        check_case(&o, &args, &format!("argument vector {case}"));
        codes[o.status.code().unwrap_or(1) as usize] += 1;
    }
    assert!(codes[2] > 0, "hostile vectors are refused: {codes:?}");
}
