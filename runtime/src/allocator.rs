//! Keeps freed tensor memory inside the process. The executor allocates each
//! value's buffer when it is computed and frees it after its last use; with
//! glibc's defaults, buffers above 128 KiB are `mmap`ed and unmapped again, so
//! every training step page-faults (and the kernel zeroes) all of its large
//! tensors anew: about 30 000 faults a step for `ls-transformer` `small`,
//! a tenth of the step's time.

/// Serves tensors of up to 32 MiB (glibc's largest threshold on 64-bit) from
/// the heap and lets the heap keep up to 1 GiB of freed memory, so a step
/// reuses the pages of the step before. Call it once, at program start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any threads allocate and takes plain integer arguments.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Gives the heap's free memory back to the system (compiling a program
/// frees much more than a run allocates; [`keep_freed_memory`] would keep it).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
