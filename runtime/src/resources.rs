//! The machine's limits, checked before work rather than discovered by an
//! abort: how much memory is available, and file-size limits turned into
//! errors instead of a silent kill.

/// Bytes of memory the system can give this process now without swapping
/// (`MemAvailable` of `/proc/meminfo`), or `None` where that is not known.
pub fn available_memory() -> Option<u64> {
    meminfo_field("MemAvailable:")
}

/// Bytes of physical memory, or `None` where that is not known.
pub fn total_memory() -> Option<u64> {
    meminfo_field("MemTotal:")
}

fn meminfo_field(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Makes a write past the file-size limit (`ulimit -f`) fail with `EFBIG`,
/// which the atomic writers report and clean up after, instead of the default
/// `SIGXFSZ` that kills the process without a word and leaves a temp file.
/// Call it once, at program start.
pub fn report_file_size_limit_as_error() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Restores the default action of `SIGPIPE`, so that `lsc models | head -3`
/// ends quietly when `head` stops reading, as other command-line tools do,
/// instead of failing to print. Call it once, at program start.
pub fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: SIG_DFL installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `bytes` in GiB (or MiB below one GiB), for messages.
pub fn show_bytes(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Refuses work that needs more memory than is available, naming both figures.
pub fn check_fits(what: &str, bytes: u64, fix: &str) -> Result<(), String> {
    match available_memory() {
        Some(free) if bytes > free => Err(format!(
            "{what} needs {} of memory but {} is available; {fix}",
            show_bytes(bytes),
            show_bytes(free)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_known_on_linux_and_an_impossible_request_is_refused() {
        if !std::path::Path::new("/proc/meminfo").exists() {
            eprintln!("skipped: no /proc/meminfo");
            return;
        }
        let free = available_memory().unwrap();
        assert!(free > 0 && free <= total_memory().unwrap());
        let e = check_fits("the plan", u64::MAX / 2, "lower --batch").unwrap_err();
        assert!(e.contains("the plan needs") && e.contains("available; lower --batch"), "{e}");
        assert_eq!(check_fits("the plan", 1, "x"), Ok(()));
    }
}
