//! The generator's threads and the OS: their CPU use, so a run shows how
//! much of the (shared) machine the generator took from the targets, and
//! timer precision for the pacer.

/// CPU time the calling thread has used, in ns, from Linux's
/// `/proc/thread-self/schedstat`; `None` where that is unavailable.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Asks the kernel to wake the calling thread as close to its sleep deadline
/// as it can. Linux lets timers fire up to 50µs late by default (to batch
/// wake-ups); for the pacer that slack would be lateness added to every
/// open-loop latency. Best effort: the run works without it, just less
/// precisely.
pub(crate) fn precise_sleep() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only changes
    // the calling thread's timer slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work() {
        let Some(before) = super::thread_cpu_ns() else {
            return; // not Linux, or schedstat disabled
        };
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let after = super::thread_cpu_ns().unwrap();
        assert!(after > before, "{before} -> {after} ({x})");
    }
}
