//! The generator's own CPU use, so a run shows how much of the (shared)
//! machine the load generator took from the targets.

/// CPU time the calling thread has used, in ns, from Linux's
/// `/proc/thread-self/schedstat`; `None` where that is unavailable.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
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
