//! Splitting work over threads: the one place where the crate's data-parallel passes
//! (the objective's sums and margins, the power iteration, the cache's checksum and
//! validation, the renumbering of features) start their threads. Training's long-lived
//! worker and server threads belong to the backends, and the text reader's pipeline to
//! `data::libsvm`.

use std::ops::Range;

/// Units of work (nonzeros or rows: a few nanoseconds each) a thread of a pass should
/// have at least: starting and joining a thread costs tens of microseconds, so a
/// smaller share is done sooner on the calling thread. 1 in this crate's unit tests,
/// so that their small data still go through the threaded code.
pub const MIN_THREAD_WORK: usize = if cfg!(test) { 1 } else { 50_000 };

/// Threads, at most `threads`, for a pass over `work` units: each with at least
/// [`MIN_THREAD_WORK`] of them, and at least one.
pub fn threads_for(work: usize, threads: usize) -> usize {
    threads.min(work / MIN_THREAD_WORK).max(1)
}

/// The machine's cores (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Splits `0..n` into at most `parts` contiguous ranges of about equal length (one empty
/// range for `n = 0`).
pub fn ranges(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|p| p * n / parts..(p + 1) * n / parts)
        .collect()
}

/// `f` on every item, one scoped thread each (a single item runs on the calling
/// thread), the results in the items' order. A panic in `f` is raised again here with
/// its own payload.
pub fn each<I: Send, T: Send>(
    items: impl IntoIterator<Item = I>,
    f: impl Fn(I) -> T + Sync,
) -> Vec<T> {
    let mut items: Vec<I> = items.into_iter().collect();
    if items.len() == 1 {
        return vec![f(items.pop().expect("one item"))];
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| s.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// `f` on the ranges of `0..n` split into at most `parts` ([`ranges`]), one thread
/// each, the results in order.
pub fn map_ranges<T: Send>(n: usize, parts: usize, f: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
    each(ranges(n, parts), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_each_index_once_in_order() {
        for n in [0, 1, 2, 7, 100, 1001] {
            for parts in [0, 1, 2, 3, 8, 2000] {
                let rs = ranges(n, parts);
                assert!(!rs.is_empty() && rs.len() <= parts.max(1));
                let flat: Vec<usize> = rs.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..n).collect::<Vec<_>>(), "n {n} parts {parts}");
                let (min, max) = (
                    rs.iter().map(|r| r.len()).min().unwrap(),
                    rs.iter().map(|r| r.len()).max().unwrap(),
                );
                assert!(max - min <= 1, "n {n} parts {parts}: {rs:?}");
            }
        }
    }

    /// Every thread gets at least `MIN_THREAD_WORK` units, there is always one, and
    /// never more than asked.
    #[test]
    fn threads_for_gives_each_thread_enough_work() {
        let m = MIN_THREAD_WORK;
        for t in [1, 2, 3, 16] {
            assert_eq!(threads_for(0, t), 1);
            assert_eq!(threads_for(m - 1, t), 1);
            assert_eq!(threads_for(2 * m, t), t.min(2));
            assert_eq!(threads_for(3 * m + m / 2, t), t.min(3));
            assert_eq!(threads_for(usize::MAX, t), t);
        }
        assert_eq!(threads_for(10 * m, 0), 1);
    }

    #[test]
    fn each_keeps_the_order_and_runs_every_item() {
        let sums = map_ranges(10_000, 7, |r| r.map(|i| i as u64).sum::<u64>());
        assert_eq!(sums.len(), 7);
        assert_eq!(sums.iter().sum::<u64>(), 10_000 * 9_999 / 2);
        let mut out = vec![0u32; 10];
        each(out.chunks_mut(3).enumerate(), |(c, s)| s.fill(c as u32));
        assert_eq!(out, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
    }

    #[test]
    fn a_panic_keeps_its_message() {
        let r = std::panic::catch_unwind(|| {
            each(0..3, |i| {
                if i == 1 {
                    panic!("item {i} failed");
                }
                i
            })
        });
        let p = r.unwrap_err();
        assert_eq!(
            p.downcast_ref::<String>().map(String::as_str),
            Some("item 1 failed")
        );
    }
}
