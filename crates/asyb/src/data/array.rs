//! The storage of one dataset array: a vector the process owns, a region of a
//! memory-mapped cache file read in place (no copy, pages loaded by the kernel as they
//! are touched, shared with the page cache), or memory another owner lends (a Python
//! array, kept alive by the owner's handle). Reads see a slice either way; the first
//! mutable access of a mapped or lent array copies it into an owned vector.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;
use memmap2::Mmap;

/// A slice of `T`, owned or mapped.
pub struct Array<T: Pod> {
    store: Store<T>,
}

enum Store<T> {
    Owned(Vec<T>),
    /// `len` items at `ptr`, inside `map`, which keeps them alive and never changes.
    Mapped {
        _map: Arc<Mmap>,
        ptr: *const T,
        len: usize,
    },
    /// `len` items at `ptr`, which `_owner` keeps alive and unchanged.
    Lent {
        _owner: Arc<dyn Send + Sync>,
        ptr: *const T,
        len: usize,
    },
}

// SAFETY: a mapped array is an immutable view of a read-only mapping kept alive by the
// `Arc`, and a lent one of memory its owner keeps alive and unchanged (the contract of
// `Array::lent`); nothing writes through `ptr`, so sharing or moving it across threads
// is as safe as for a `Vec<T>`.
unsafe impl<T: Pod + Send> Send for Array<T> {}
// SAFETY: as above: only shared reads go through `ptr`.
unsafe impl<T: Pod + Sync> Sync for Array<T> {}

impl<T: Pod> Array<T> {
    /// `len` items of `map` starting at byte `offset`, or `None` if they do not fit in
    /// the mapping or are not aligned for `T`.
    pub fn mapped(map: &Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = offset.checked_add(bytes)?;
        let region = map.get(offset..end)?;
        let items: &[T] = bytemuck::try_cast_slice(region).ok()?;
        Some(Array {
            store: Store::Mapped {
                _map: map.clone(),
                ptr: items.as_ptr(),
                len,
            },
        })
    }

    /// `len` items at `ptr`, read in place for as long as the array (or a clone) lives.
    ///
    /// # Safety
    ///
    /// `ptr` must be aligned for `T` and valid for reads of `len` items for as long as
    /// `owner` lives, and nothing may write to those items meanwhile.
    pub unsafe fn lent(owner: Arc<dyn Send + Sync>, ptr: *const T, len: usize) -> Self {
        Array {
            store: Store::Lent {
                _owner: owner,
                ptr,
                len,
            },
        }
    }

    /// Whether the items are read in place from memory this array does not own (a mapped
    /// file or a lent array).
    pub fn is_borrowed(&self) -> bool {
        !matches!(self.store, Store::Owned(_))
    }

    /// Whether the items live in a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    /// The owned vector, copied out of the mapping first if the array is mapped. The
    /// copied pages are then released from this process (they stay in the page cache),
    /// so that a mapped array made mutable does not count twice in its memory.
    pub fn make_mut(&mut self) -> &mut Vec<T> {
        if let Store::Mapped { _map, len, .. } = &self.store {
            // In pieces, each released once copied: the peak is one copy plus a piece.
            const PIECE: usize = 1 << 22;
            let items: &[T] = self;
            let mut owned = Vec::with_capacity(*len);
            for piece in items.chunks(PIECE / std::mem::size_of::<T>().max(1)) {
                owned.extend_from_slice(piece);
                #[cfg(unix)]
                {
                    let offset = piece.as_ptr() as usize - _map.as_ptr() as usize;
                    // SAFETY: the mapping is read-only, so no change can be lost; a later
                    // read of these pages (another array sharing them) faults the file's
                    // unchanged bytes back in. A failure only leaves the pages resident.
                    let _ = unsafe {
                        _map.unchecked_advise_range(
                            memmap2::UncheckedAdvice::DontNeed,
                            offset,
                            std::mem::size_of_val(piece),
                        )
                    };
                }
            }
            self.store = Store::Owned(owned);
        }
        if let Store::Lent { .. } = &self.store {
            let items: &[T] = self;
            self.store = Store::Owned(items.to_vec());
        }
        match &mut self.store {
            Store::Owned(v) => v,
            Store::Mapped { .. } | Store::Lent { .. } => unreachable!("converted above"),
        }
    }

    pub fn push(&mut self, item: T) {
        self.make_mut().push(item);
    }
}

impl<T: Pod> Deref for Array<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match &self.store {
            Store::Owned(v) => v,
            // SAFETY: `ptr` and `len` were checked against the mapping (bounds and
            // alignment) when the array was made, and the mapping outlives `self`.
            Store::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            // SAFETY: `Array::lent`'s contract: valid, aligned, unchanged while the owner
            // lives, and `self` holds the owner.
            Store::Lent { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl<T: Pod> DerefMut for Array<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.make_mut()
    }
}

impl<'a, T: Pod> IntoIterator for &'a Array<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T: Pod> IntoIterator for &'a mut Array<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.make_mut().iter_mut()
    }
}

impl<T: Pod> From<Vec<T>> for Array<T> {
    fn from(v: Vec<T>) -> Self {
        Array {
            store: Store::Owned(v),
        }
    }
}

impl<T: Pod> FromIterator<T> for Array<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<T>>().into()
    }
}

impl<T: Pod> Default for Array<T> {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        match &self.store {
            Store::Owned(v) => v.clone().into(),
            Store::Mapped { _map, ptr, len } => Array {
                store: Store::Mapped {
                    _map: _map.clone(),
                    ptr: *ptr,
                    len: *len,
                },
            },
            Store::Lent { _owner, ptr, len } => Array {
                store: Store::Lent {
                    _owner: _owner.clone(),
                    ptr: *ptr,
                    len: *len,
                },
            },
        }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Pod + PartialEq> PartialEq for Array<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Pod + PartialEq> PartialEq<Vec<T>> for Array<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn map_of(bytes: &[u8]) -> Arc<Mmap> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        // SAFETY: the temporary file is private to this test and not modified.
        Arc::new(unsafe { Mmap::map(&f) }.unwrap())
    }

    #[test]
    fn lent_reads_in_place_and_copies_on_write() {
        let words: Arc<Vec<u32>> = Arc::new((0..100).map(|i| i * 7).collect());
        // SAFETY: `words` is kept alive by the owner handle and never written.
        let mut a: Array<u32> = unsafe { Array::lent(words.clone(), words.as_ptr(), 100) };
        assert!(a.is_borrowed() && !a.is_mapped());
        assert_eq!(a.as_ptr(), words.as_ptr());
        let other = a.clone();
        a[3] = 1;
        assert!(!a.is_borrowed());
        assert_eq!(a[3], 1);
        assert_eq!(words[3], 21);
        assert_eq!(&other[..], &words[..]);
        drop(other);
        assert_eq!(Arc::strong_count(&words), 1);
    }

    #[test]
    fn mapped_reads_in_place_and_copies_on_write() {
        let words: Vec<u32> = (0..100).map(|i| i * 3).collect();
        let map = map_of(bytemuck::cast_slice(&words));
        let mut a: Array<u32> = Array::mapped(&map, 16, 10).unwrap();
        assert!(a.is_mapped());
        assert_eq!(&a[..], &words[4..14]);
        let b = a.clone();
        a[0] = 7;
        assert!(!a.is_mapped());
        assert_eq!(a[0], 7);
        // The clone still reads the file.
        assert!(b.is_mapped());
        assert_eq!(b[0], 12);
    }

    /// A copy of several pieces, each released from the mapping once copied: the copy
    /// and every other view of the same pages still read the file's bytes.
    #[test]
    fn large_copies_release_the_mapped_pages_and_keep_the_bytes() {
        let words: Vec<u32> = (0..3_000_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let map = map_of(bytemuck::cast_slice(&words));
        let mut a: Array<u32> = Array::mapped(&map, 4, words.len() - 1).unwrap();
        let whole: Array<u32> = Array::mapped(&map, 0, words.len()).unwrap();
        let other = a.clone();
        a.make_mut();
        assert!(!a.is_mapped());
        assert_eq!(&a[..], &words[1..]);
        assert_eq!(&other[..], &words[1..]);
        assert_eq!(&whole[..], &words[..]);
    }

    #[test]
    fn out_of_bounds_or_misaligned_regions_are_refused() {
        let map = map_of(&[0u8; 64]);
        assert!(Array::<u32>::mapped(&map, 60, 2).is_none());
        assert!(Array::<u32>::mapped(&map, 2, 1).is_none());
        assert!(Array::<u32>::mapped(&map, usize::MAX - 2, 1).is_none());
        assert!(Array::<u64>::mapped(&map, 0, 8).is_some());
    }
}
