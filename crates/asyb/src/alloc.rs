//! An allocator for training processes (the `asyb` command and the benchmarks install it
//! with `#[global_allocator]`): the system's, with the memory of large new blocks (the
//! shard cells, dense gradients and model copies, the SVRG derivatives) marked for
//! transparent huge pages before it is first touched. Training reads these at random,
//! one coordinate at a time: with 4 KiB pages nearly every read of a model of tens of
//! MB also misses the TLB. On the 2M-row click-through workload this took a sixth off
//! the time to 1e-3 (docs/performance.md). Where the kernel has huge pages off, the
//! advice is ignored.
//!
//! Grown blocks (`realloc`: a parser's vectors) are left alone: a huge page is committed
//! whole on first touch, and the partly filled spare capacity of growing vectors cost
//! 27 MB of peak memory on the reference workload's text path.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are advised; smaller ones would waste most of a 2 MiB
/// page.
const HUGE_MIN: usize = 4 << 20;

/// The system allocator with huge-page advice for large new blocks.
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
        System.realloc(p, layout, new_size)
    }
}

/// Returns the heap's free memory to the system (glibc's `malloc_trim`). The command
/// keeps freed heap memory up to a high trim threshold (to spare the system calls around
/// small buffers); once the data are read, the parser's freed buffers are several MB that
/// training would otherwise carry to its peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap to the
    // system; no live block moves.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping of this process that holds address `p`.
    #[cfg(target_os = "linux")]
    fn vm_flags(p: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a <= p && p < b;
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.to_string());
                }
            }
        }
        None
    }

    /// A large block is advised for huge pages (its mapping carries the `hg` flag), a
    /// small one and a grown one are not, and all of them hold what was written.
    #[test]
    #[cfg(target_os = "linux")]
    fn large_new_blocks_are_advised_and_usable() {
        let a = HugeAlloc;
        let big = Layout::from_size_align(16 << 20, 64).unwrap();
        let small = Layout::from_size_align(1 << 16, 8).unwrap();
        // SAFETY: the layouts are valid and nonzero; each block is written within its
        // size and freed once with its layout.
        unsafe {
            let p = a.alloc_zeroed(big);
            assert!(!p.is_null());
            assert_eq!(*p.add(5 << 20), 0);
            *p.add(5 << 20) = 7;
            assert_eq!(*p.add(5 << 20), 7);
            // Kernels built without huge pages refuse the advice.
            let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
            let flags = vm_flags(p as usize + (8 << 20)).expect("mapping found");
            assert!(
                !thp || flags.split_whitespace().any(|f| f == "hg"),
                "{flags}"
            );
            a.dealloc(p, big);

            let q = a.alloc(small);
            *q = 3;
            let grown = a.realloc(q, small, 16 << 20);
            assert_eq!(*grown, 3);
            let flags = vm_flags(grown as usize + (8 << 20)).expect("mapping found");
            assert!(!flags.split_whitespace().any(|f| f == "hg"), "{flags}");
            a.dealloc(grown, Layout::from_size_align(16 << 20, 8).unwrap());
        }
    }
}
