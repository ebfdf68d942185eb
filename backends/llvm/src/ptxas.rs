//! NVIDIA's PTX assembler as a checker: `ptxas -arch=sm_XX -v` assembles a
//! PTX module (proving the driver would accept it) and reports each
//! kernel's registers, shared memory and spills. ptxas comes from PyPI
//! (`pip install nvidia-cuda-nvcc`); nothing here needs a GPU.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What ptxas reports for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelReport {
    /// The kernel (entry function).
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// Bytes spilled to local memory (stores).
    pub spill_stores: u32,
    /// Bytes reloaded from spills.
    pub spill_loads: u32,
    /// Stack frame per thread, in bytes (local arrays and spills).
    pub stack_bytes: u32,
}

/// The ptxas to use: `$LSC_PTXAS`, else `ptxas` on the `PATH`, else the one
/// PyPI's `nvidia-cuda-nvcc` installs next to `python3`'s packages.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LSC_PTXAS") {
        // Named explicitly: used as given, so a wrong path fails loudly instead of skipping.
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let out = Command::new("python3")
            .args(["-c", "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'bin', 'ptxas'))"])
            .output()
            .ok()?;
        Some(PathBuf::from(String::from_utf8(out.stdout).ok()?.trim())).filter(|p| p.is_file())
    })
}

/// Assembles `ptx` for `arch` with `ptxas` and returns its report per kernel.
pub fn assemble(ptxas: &Path, ptx: &str, arch: &str) -> Result<Vec<KernelReport>, String> {
    let dir = std::env::temp_dir().join(format!("lsc-ptxas-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let src = dir.join("module.ptx");
    std::fs::write(&src, ptx).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let out = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(&src)
        .arg("-o")
        .arg(dir.join("module.cubin"))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ptxas.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("ptxas -arch={arch} rejected the module:\n{log}"));
    }
    Ok(parse(&log))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The number before `unit` in `line` (`"8 registers"` → 8).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let head = &line[..line.find(unit)?];
    head.split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
}

/// Parses `ptxas -v`'s report.
pub fn parse(log: &str) -> Vec<KernelReport> {
    let mut out: Vec<KernelReport> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(KernelReport { name, ..Default::default() });
            continue;
        }
        let Some(k) = out.last_mut() else { continue };
        if line.contains("spill stores") {
            k.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("registers") {
            k.registers = number_before(line, " registers").unwrap_or(0);
            k.shared_bytes = number_before(line, " bytes smem").unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'rms' for 'sm_90'\n\
            ptxas info    : Function properties for rms\n\
            \x20   16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
            ptxas info    : Used 23 registers, used 1 barriers, 32 bytes smem, 368 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'add' for 'sm_90'\n\
            ptxas info    : Function properties for add\n\
            \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 8 registers, used 0 barriers, 372 bytes cmem[0]\n";
        let r = parse(log);
        assert_eq!(
            r,
            vec![
                KernelReport {
                    name: "rms".into(),
                    registers: 23,
                    shared_bytes: 32,
                    spill_stores: 8,
                    spill_loads: 4,
                    stack_bytes: 16
                },
                KernelReport { name: "add".into(), registers: 8, ..Default::default() },
            ]
        );
    }
}
