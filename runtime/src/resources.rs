//! The machine's limits, checked before work rather than discovered by an
//! abort: how much memory is available, and file-size limits turned into
//! errors instead of a silent kill.

/// Bytes of memory the system can give this process now without swapping
/// (`MemAvailable` of `/proc/meminfo`), or `None` where that is not known.
/// An address-space limit (`ulimit -v`) lowers it to what is left under the limit.
pub fn available_memory() -> Option<u64> {
    let free = meminfo_field("MemAvailable:");
    match (free, address_space_left()) {
        (Some(f), Some(l)) => Some(f.min(l)),
        (f, l) => f.or(l),
    }
}

/// Bytes left under `RLIMIT_AS`, if one is set.
fn address_space_left() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit struct, which `lim` is.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
        let used: u64 = line["VmSize:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(lim.rlim_cur.saturating_sub(used * 1024))
    }
    #[cfg(not(unix))]
    None
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
        Some(free) if bytes > free => {
            Err(format!("{what} needs {} of memory but {} is available; {fix}", show_bytes(bytes), show_bytes(free)))
        }
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
        assert!(free > 0);
        let e = check_fits("the plan", u64::MAX / 2, "lower --batch").unwrap_err();
        assert!(e.contains("the plan needs") && e.contains("available; lower --batch"), "{e}");
        assert_eq!(check_fits("the plan", 1, "x"), Ok(()));
    }
}
