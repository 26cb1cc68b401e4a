//! The process's allocator: the system's, with the memory of large blocks (the shard
//! cells, dense gradients and model copies, the SVRG derivatives) marked for
//! transparent huge pages before it is first touched. Training reads these at random,
//! one coordinate at a time: with 4 KiB pages nearly every read of a model of tens of
//! MB also misses the TLB. On the 2M-row click-through workload this took a sixth off
//! the time to 1e-3 (docs/performance.md). Where the kernel has huge pages off, the
//! advice is ignored.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are advised; smaller ones would waste most of a 2 MiB
/// page.
const HUGE_MIN: usize = 4 << 20;

pub struct HugeAlloc;

/// Advises the whole pages of `[p, p + size)` for huge pages (Linux only).
fn advise(p: *mut u8, size: usize) {
    #[cfg(target_os = "linux")]
    if !p.is_null() && size >= HUGE_MIN {
        let page = 4096;
        let start = (p as usize).div_ceil(page) * page;
        let end = (p as usize + size) / page * page;
        if end > start {
            // SAFETY: madvise only changes how the kernel backs these pages, which lie
            // inside a block the allocator just returned; it never moves or frees them.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, size);
}

// SAFETY: every call is forwarded to the system allocator with the same arguments; the
// advice changes no contents and no addresses.
unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout)
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        advise(q, new_size);
        q
    }
}
