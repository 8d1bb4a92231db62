//! What retained data costs in memory: the caches count their entries with
//! these, so a bound in bytes is a bound on what the process really holds.
//!
//! Sizes follow the allocator the `sluice` binary uses (jemalloc): a request
//! of `n` bytes takes the next size class (16-byte steps up to 128 bytes,
//! then four classes per doubling), and a hash table of capacity `c` holds
//! a power-of-two number of slots, at most 7/8 full, plus one control byte
//! per slot. The figures err upwards; the tests compare them with what a
//! counting allocator measures.

use std::mem::size_of;

/// Bytes the allocator really sets aside for a request of `n` bytes.
pub fn alloc_size(n: usize) -> usize {
    match n {
        0 => 0,
        1..=8 => 8,
        9..=128 => n.div_ceil(16) * 16,
        _ => {
            // Four classes between consecutive powers of two.
            let power = usize::BITS - 1 - (n - 1).leading_zeros();
            let step = 1usize << (power - 2);
            n.div_ceil(step) * step
        }
    }
}

/// Bytes of one boxed (or `Arc`ed: add the two counters) `T`.
pub fn boxed<T>() -> usize {
    alloc_size(size_of::<T>())
}

/// Bytes of a `hashbrown`/`std` hash table built for `capacity` entries of
/// `slot` bytes each (key and value side by side).
pub fn hash_table(capacity: usize, slot: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let slots = if capacity < 8 {
        if capacity < 4 { 4 } else { 8 }
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    // Slots, one control byte each, and one trailing group of control bytes.
    alloc_size(slots * slot + slots + 16)
}

/// Bytes of a `Vec<T>` with `capacity` (its buffer; the header is counted
/// where the `Vec` lives).
pub fn vec<T>(capacity: usize) -> usize {
    alloc_size(capacity * size_of::<T>())
}

/// A global allocator for unit tests that counts, per thread, the bytes
/// requested and not yet freed: tests compare the caches' own accounting
/// with it.
#[cfg(test)]
pub(crate) mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    struct Counting;

    fn add(delta: isize) {
        let _ = LIVE.try_with(|c| c.set(c.get() + delta));
    }

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: the caller's contract is passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: the caller's contract is passed on.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            // SAFETY: the caller's contract is passed on.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            // SAFETY: the caller's contract is passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Bytes this thread allocated and has not freed (may be negative when
    /// it frees what another thread allocated).
    pub fn live() -> isize {
        LIVE.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_like_jemalloc() {
        assert_eq!(alloc_size(1), 8);
        assert_eq!(alloc_size(17), 32);
        assert_eq!(alloc_size(128), 128);
        assert_eq!(alloc_size(129), 160);
        assert_eq!(alloc_size(257), 320);
        assert_eq!(alloc_size(1000), 1024);
        assert_eq!(alloc_size(1025), 1280);
        for n in 1..100_000 {
            let c = alloc_size(n);
            assert!(c >= n && c <= n + n / 4 + 16, "{n} -> {c}");
        }
    }

    #[test]
    fn hash_tables_are_measured_as_allocated() {
        let before = counting::live();
        let map: std::collections::HashMap<u64, u64> =
            std::collections::HashMap::with_capacity(1000);
        let measured = (counting::live() - before) as usize;
        let counted = hash_table(map.capacity().min(1000), 16);
        assert!(counted >= measured, "{counted} < {measured}");
        assert!(
            counted <= measured + measured / 4 + 16,
            "{counted} vs {measured}"
        );
    }
}
