/// jemalloc instead of the system allocator: glibc keeps freed memory in
/// per-thread arenas, so after a burst of large requests RSS stayed at its
/// peak. jemalloc's background thread purges freed pages after about a
/// second (`dirty_decay_ms`), so RSS follows what the gateway retains.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at startup (the symbol carries the crate's
/// `_rjem_` prefix).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
