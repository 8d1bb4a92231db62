//! The allocator of a reference plugin instance: a bump arena.
//!
//! The host runs every call in a fresh instance whose memory is thrown away
//! afterwards, so freeing is pointless work: allocation bumps a pointer,
//! `dealloc` only takes back the most recent block, and `realloc` of the most
//! recent block grows in place (the pattern of a growing `String` or `Vec`).
//! Memory beyond the initial pages is taken with `memory.grow`, so a large
//! request still works, bounded by the instance's memory cap.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 64 * 1024;

/// A bump allocator over the instance's linear memory, from `__heap_base`.
pub struct InstanceArena {
    /// Next free byte; 0 until the first allocation.
    next: Cell<usize>,
    /// End of the memory the arena may use (the current memory size).
    end: Cell<usize>,
    /// Start of the most recent block, which may be freed or grown in place.
    last: Cell<usize>,
}

// SAFETY: wasm32 plugin instances are single-threaded.
unsafe impl Sync for InstanceArena {}

unsafe extern "C" {
    static __heap_base: u8;
}

impl InstanceArena {
    /// An empty arena, for the `#[global_allocator]` static.
    pub const fn new() -> Self {
        Self {
            next: Cell::new(0),
            end: Cell::new(0),
            last: Cell::new(0),
        }
    }

    /// Makes room for `size` bytes at `start`, growing memory if needed.
    fn reserve(&self, start: usize, size: usize) -> bool {
        let Some(needed) = start.checked_add(size) else {
            return false;
        };
        if self.end.get() == 0 {
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        if needed <= self.end.get() {
            return true;
        }
        let pages = (needed - self.end.get()).div_ceil(PAGE);
        if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
            return false;
        }
        self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        true
    }
}

impl Default for InstanceArena {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for InstanceArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.next.get() == 0 {
            self.next.set(&raw const __heap_base as usize);
        }
        let start = self.next.get().next_multiple_of(layout.align());
        if !self.reserve(start, layout.size()) {
            return core::ptr::null_mut();
        }
        self.next.set(start + layout.size());
        self.last.set(start);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if ptr as usize == self.last.get() {
            self.next.set(self.last.get());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start == self.last.get() && self.reserve(start, new_size) {
            self.next.set(start + new_size);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout.align()` is valid and
        // `new_size` is non-zero and does not overflow when rounded up.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`; the copy is within both blocks.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
            }
            new
        }
    }
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ARENA: InstanceArena = InstanceArena::new();
