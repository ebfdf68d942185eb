//! `lsc repro NAME`: one seed paper's claim at small scale, as a report
//! (`report.md` with the paper's numbers beside the measured ones and a
//! verdict), `*.svg` plots and the raw `metrics.jsonl` of every run.

mod flatness;
mod pawn;

use crate::error::{CliError, CliResult};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The experiments of `lsc repro`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// Liu et al.: same loss, different flatness (continued training, width, optimizer) on an HMM language.
    Flatness,
    /// PAWN: AI-text detection over a frozen lsc LM, against mean aggregation and zero-shot scores.
    Pawn,
}

/// Arguments of `lsc repro`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReproArgs {
    /// Which experiment.
    #[arg(value_enum)]
    pub experiment: Experiment,
    /// Output folder (created if missing; its report, plots and metrics are replaced).
    #[arg(long, default_value = "repro")]
    pub out: PathBuf,
    /// A short version (at most 3 minutes on 2 cores) that CI runs: fewer steps and samples.
    #[arg(long)]
    pub quick: bool,
    /// The language model PAWN reads (pawn; default: trains one and names the command in the report).
    #[arg(long)]
    pub ckpt: Option<PathBuf>,
    #[command(flatten)]
    pub backend: crate::source::BackendArg,
}

/// The verdict of one claim at this scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The measured effect has the paper's sign, beyond the noise.
    Reproduced,
    /// The measured effect has the opposite sign, beyond the noise.
    NotReproduced,
    /// The effect is within the noise.
    Inconclusive,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Inconclusive => "inconclusive at this scale",
        }
    }
}

/// The verdict on a difference `a − b` that the paper says has the sign
/// `paper_sign`, against the noise (a 95 % half-width) of the difference.
fn verdict(a: f64, b: f64, noise: f64, paper_sign: f64) -> Verdict {
    let d = a - b;
    if d.abs() <= noise || d.is_nan() {
        Verdict::Inconclusive
    } else if d.signum() == paper_sign {
        Verdict::Reproduced
    } else {
        Verdict::NotReproduced
    }
}

/// Appends JSON rows to `metrics.jsonl` as they are measured.
pub struct Metrics {
    file: std::fs::File,
    path: PathBuf,
}

impl Metrics {
    fn create(dir: &Path) -> Result<Metrics, CliError> {
        let path = dir.join("metrics.jsonl");
        let file = std::fs::File::create(&path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
        Ok(Metrics { file, path })
    }

    fn push(&mut self, row: &serde_json::Value) -> Result<(), CliError> {
        writeln!(self.file, "{row}").map_err(|e| CliError::new(format!("{}: {e}", self.path.display())))
    }
}

/// Runs `lsc repro`.
pub fn run(a: &ReproArgs) -> CliResult {
    std::fs::create_dir_all(&a.out)
        .map_err(|e| CliError::with_fix(format!("{}: {e}", a.out.display()), "pass a writable --out folder"))?;
    let mut metrics = Metrics::create(&a.out)?;
    let report = match a.experiment {
        Experiment::Flatness => flatness::run(a, &mut metrics)?,
        Experiment::Pawn => pawn::run(a, &mut metrics)?,
    };
    let path = a.out.join("report.md");
    lsc_runtime::weights::write_atomic(&path, report.as_bytes())?;
    println!("wrote {} (plots and metrics.jsonl beside it)", path.display());
    Ok(())
}
