//! The component's global allocator: the system allocator (wasi-libc's dlmalloc), except that
//! argon2's block array comes straight from `memory.grow`.
//!
//! argon2 asks for its 19 MiB with `alloc_zeroed`, and `calloc` zeroes them with a
//! `memory.fill` although pages fresh from `memory.grow` are zero by the wasm specification:
//! 3.5% of a login's CPU (docs/benchmarks.md, "Where a login's CPU goes"). An instance serves
//! one request, so the first large zeroed allocation of an instance takes fresh pages and skips
//! that fill. The pages are kept for the instance's life (wasm memory cannot shrink); a second
//! hash of no larger size in the same request (a password change verifies, then hashes) gets
//! them back zeroed by hand, as `calloc` would have. Everything else, and any large request
//! while the pages are lent or larger than they are, goes to the system allocator, which copes
//! with memory grown by someone else (dlmalloc starts a new segment).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

/// wasm's page.
const PAGE: usize = 65_536;
/// Zeroed allocations from this size on are served from fresh pages (argon2's is 19 MiB; the
/// component's other allocations are far smaller).
const LARGE: usize = 1 << 20;

const NONE: u8 = 0;
const LENT: u8 = 1;
const RETURNED: u8 = 2;

/// Grows memory by a number of pages, returning the old size in pages (`memory.grow`), or
/// `None` when there is no more.
pub type Grow = fn(usize) -> Option<usize>;

pub struct FreshPages {
    grow: Grow,
    state: AtomicU8,
    start: AtomicUsize,
    bytes: AtomicUsize,
}

impl FreshPages {
    pub const fn new(grow: Grow) -> Self {
        Self { grow, state: AtomicU8::new(NONE), start: AtomicUsize::new(0), bytes: AtomicUsize::new(0) }
    }

    fn is_ours(&self, ptr: *mut u8) -> bool {
        self.state.load(Relaxed) == LENT && ptr as usize == self.start.load(Relaxed)
    }
}

// Atomics only so the type is `Sync`, as a global allocator must be: wasm32-wasip2 runs one
// thread, and natively the tests use their own instance on one thread. `inline(never)` keeps
// these out of every call site, as Rust's default allocator shim is: inlined into each drop,
// `dealloc` alone made auth.wasm 58 KB larger.
unsafe impl GlobalAlloc for FreshPages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        if size >= LARGE && layout.align() <= PAGE {
            let state = self.state.load(Relaxed);
            if state == RETURNED && size <= self.bytes.load(Relaxed) {
                let ptr = self.start.load(Relaxed) as *mut u8;
                // SAFETY: the pages are ours, at least `size` long, and nobody holds them.
                unsafe { ptr.write_bytes(0, size) };
                self.state.store(LENT, Relaxed);
                return ptr;
            }
            if state == NONE {
                let pages = size.div_ceil(PAGE);
                let Some(old_pages) = (self.grow)(pages) else { return std::ptr::null_mut() };
                self.start.store(old_pages * PAGE, Relaxed);
                self.bytes.store(pages * PAGE, Relaxed);
                self.state.store(LENT, Relaxed);
                return (old_pages * PAGE) as *mut u8;
            }
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.is_ours(ptr) {
            self.state.store(RETURNED, Relaxed);
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.is_ours(ptr) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: as `GlobalAlloc::realloc` requires of its default: a new block, the old
        // contents copied, the old block given back (here: to us).
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = System.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn memory_grow(pages: usize) -> Option<usize> {
    let old = core::arch::wasm32::memory_grow(0, pages);
    (old != usize::MAX).then_some(old)
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: FreshPages = FreshPages::new(memory_grow);

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for `memory.grow`: page-aligned zeroed memory from the test's allocator, as
    /// "page numbers" (address / PAGE), leaked like wasm memory.
    fn fake_grow(pages: usize) -> Option<usize> {
        let layout = Layout::from_size_align(pages * PAGE, PAGE).ok()?;
        let ptr = unsafe { System.alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(ptr as usize / PAGE)
    }

    fn argon2_layout() -> Layout {
        // What argon2 asks for: M_COST blocks of 1 KiB, aligned to 64 bytes.
        Layout::from_size_align(crate::domain::password::M_COST as usize * 1024, 64).expect("layout")
    }

    #[test]
    fn the_first_large_zeroed_allocation_gets_fresh_pages_and_a_second_gets_them_zeroed() {
        let pages = FreshPages::new(fake_grow);
        let layout = argon2_layout();
        unsafe {
            let first = pages.alloc_zeroed(layout);
            assert_eq!(first as usize % PAGE, 0);
            assert!(std::slice::from_raw_parts(first, layout.size()).iter().all(|&b| b == 0));
            first.write_bytes(0xA5, layout.size());
            pages.dealloc(first, layout);

            let second = pages.alloc_zeroed(layout);
            assert_eq!(second, first, "the same pages again");
            assert!(std::slice::from_raw_parts(second, layout.size()).iter().all(|&b| b == 0));

            // While they are lent, another large request is the system allocator's.
            let third = pages.alloc_zeroed(layout);
            assert_ne!(third, second);
            assert!(std::slice::from_raw_parts(third, layout.size()).iter().all(|&b| b == 0));
            pages.dealloc(third, layout);
            pages.dealloc(second, layout);
        }
    }

    #[test]
    fn small_or_plain_allocations_and_a_failed_grow_are_not_served_from_fresh_pages() {
        let pages = FreshPages::new(|_| None);
        unsafe {
            let small = Layout::from_size_align(4096, 8).expect("layout");
            let ptr = pages.alloc_zeroed(small);
            assert!(!ptr.is_null());
            pages.dealloc(ptr, small);
            // A failed grow is an allocation failure, as calloc's would be.
            assert!(pages.alloc_zeroed(argon2_layout()).is_null());
        }
        let pages = FreshPages::new(fake_grow);
        unsafe {
            let layout = argon2_layout();
            let fresh = pages.alloc_zeroed(layout);
            fresh.write_bytes(7, 16);
            let moved = pages.realloc(fresh, layout, 32);
            assert_eq!(std::slice::from_raw_parts(moved, 16), &[7; 16]);
            pages.dealloc(moved, Layout::from_size_align(32, 64).expect("layout"));
            assert_eq!(pages.alloc_zeroed(layout), fresh, "given back by realloc");
        }
    }
}
