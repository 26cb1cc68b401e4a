//! The binary dataset cache: a [`Dataset`] as its CSR arrays on disk, written once by
//! `asyb convert` and memory-mapped on load, its arrays used in place. Owns the format and its
//! validation; knows nothing of the text format beyond what it records of its source.
//!
//! Layout (all integers little-endian; format version [`VERSION`], which also reads
//! version 1, the same layout without the feature map):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `ASYBCSR\0` |
//! | 8 | 4 | version |
//! | 12 | 4 | flags: bit 0 values present, bit 1 source was 1-based, bit 2 features renumbered |
//! | 16 | 8 | rows n |
//! | 24 | 8 | features d (of the source: the original ids) |
//! | 32 | 8 | nonzeros |
//! | 40 | 8 | source size in bytes |
//! | 48 | 8 | source modification time, seconds since the epoch (signed) |
//! | 56 | 4 | source modification time, nanoseconds |
//! | 60 | 4 | length of the source path that follows the header |
//! | 64 | 4 | CRC-32 of the payload |
//! | 68 | 4 | CRC-32 of bytes 0..68, 72..128 and the source path |
//! | 72 | 8 | renumbered features u (0 unless bit 2 is set) |
//! | 80 | 48 | zero |
//! | 128 | p | source path (UTF-8, as given to `convert`, made absolute) |
//!
//! The payload starts at the first multiple of 64 after the path; each array starts on a
//! 64-byte boundary (zero padding between): `indptr` (n + 1 u64), `indices` (nnz u32),
//! `values` (nnz f32, when flagged), `labels` (n f32), and when the features are
//! renumbered `map` (u u32: the original id of each feature id the rows use). The file
//! ends with the last array. The alignment lets the loader map the arrays in place.
//!
//! Renumbered features: `asyb convert` numbers the used features most frequent first, as
//! the trainer's compaction does on load ([`ColumnMap::by_frequency`]), and stores the
//! rows in those ids (all below u) with the map, so that a training run uses the mapped
//! rows as they are, without the renumbering's copy and sort. Readers that want the
//! original ids ([`crate::data::read`]) renumber them back.
//!
//! Loading checks everything: magic, version, both checksums, the exact file length,
//! and the CSR invariants (monotone `indptr`, strictly increasing indices below d, or
//! below u with a map of distinct ids below d, finite values and labels), so that a truncated, corrupted or foreign file is refused
//! with a message naming it, never misread. A cache whose recorded source still exists
//! but has changed size or modification time is refused as stale.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use memmap2::Mmap;

use crate::data::columns::ColumnMap;
use crate::data::{Array, Dataset};
use crate::io::{atomic_write, io_err};
use crate::{Error, Result};

/// First bytes of every cache file.
pub const MAGIC: [u8; 8] = *b"ASYBCSR\0";

/// Format version written by [`write_cache`]; [`read_cache`] reads it and
/// [`OLDEST_VERSION`] onwards, and refuses any other.
pub const VERSION: u32 = 2;

/// The oldest format version [`read_cache`] reads.
pub const OLDEST_VERSION: u32 = 1;

const HEADER_BYTES: usize = 128;
const ALIGN: usize = 64;
const FLAG_VALUES: u32 = 1;
const FLAG_ONE_BASED: u32 = 2;
const FLAG_RENUMBERED: u32 = 4;
const KNOWN_FLAGS: u32 = FLAG_VALUES | FLAG_ONE_BASED | FLAG_RENUMBERED;

/// What a cache records about the text file it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub bytes: u64,
    pub mtime: SystemTime,
    /// Whether the text used 1-based feature indices.
    pub index_base_one: bool,
}

impl Source {
    /// The source as it is on disk now.
    pub fn of(path: &Path, index_base_one: bool) -> Result<Source> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        Ok(Source {
            path,
            bytes: meta.len(),
            mtime: meta.modified().unwrap_or(UNIX_EPOCH),
            index_base_one,
        })
    }
}

/// Whether the file at `path` is a regular file that starts with the cache magic
/// (content, not name, tells a cache from text). Unreadable or short files are not
/// caches, and neither is anything but a regular file: a pipe, a FIFO or a device is
/// never opened here, since reading its first bytes would take them from the text
/// reader (a cache is memory-mapped, so it must be a regular file; the text reader
/// refuses a cache that comes through a stream).
pub fn is_cache(path: &Path) -> bool {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| head == MAGIC)
}

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Byte ranges of the arrays inside the file.
struct Sections {
    indptr: usize,
    indices: usize,
    values: Option<usize>,
    labels: usize,
    /// The feature map, when the features are renumbered.
    map: Option<usize>,
    end: usize,
}

fn sections(
    path_len: usize,
    rows: usize,
    nnz: usize,
    has_values: bool,
    renumbered: Option<usize>,
) -> Option<Sections> {
    let indptr = align(HEADER_BYTES.checked_add(path_len)?);
    let indices = align(indptr.checked_add(rows.checked_add(1)?.checked_mul(8)?)?);
    let mut next = align(indices.checked_add(nnz.checked_mul(4)?)?);
    let values = if has_values {
        let v = next;
        next = align(v.checked_add(nnz.checked_mul(4)?)?);
        Some(v)
    } else {
        None
    };
    let labels = next;
    let mut end = labels.checked_add(rows.checked_mul(4)?)?;
    let map = match renumbered {
        Some(u) => {
            let m = align(end);
            end = m.checked_add(u.checked_mul(4)?)?;
            Some(m)
        }
        None => None,
    };
    Some(Sections {
        indptr,
        indices,
        values,
        labels,
        map,
        end,
    })
}

/// Writes `ds` as a cache at `path`, atomically, recording `source`. With `columns`,
/// `ds` holds the renumbered features of that map (its feature count is the map's
/// [`ColumnMap::used`]), and the map is stored with it.
pub fn write_cache(
    path: &Path,
    ds: &Dataset,
    columns: Option<&ColumnMap>,
    source: &Source,
) -> Result<()> {
    let rows = ds.rows();
    let nnz = ds.indices.len();
    if let Some(m) = columns {
        if m.used() != ds.features {
            return Err(Error::config(
                "cache",
                format!(
                    "the feature map has {} features, the rows {}",
                    m.used(),
                    ds.features
                ),
            ));
        }
    }
    let src_path = source.path.to_string_lossy().into_owned();
    let s = sections(
        src_path.len(),
        rows,
        nnz,
        ds.values.is_some(),
        columns.map(ColumnMap::used),
    )
    .ok_or_else(|| Error::config("cache", "dataset too large for the cache format"))?;
    let mut crc = crc32fast::Hasher::new();
    write_payload(ds, columns, &s, |b| {
        crc.update(b);
        Ok(())
    })?;
    let payload_crc = crc.finalize();

    let mut head = vec![0u8; HEADER_BYTES];
    head[0..8].copy_from_slice(&MAGIC);
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let mut flags = 0;
    if ds.values.is_some() {
        flags |= FLAG_VALUES;
    }
    if source.index_base_one {
        flags |= FLAG_ONE_BASED;
    }
    if columns.is_some() {
        flags |= FLAG_RENUMBERED;
    }
    let features = columns.map_or(ds.features, |m| m.features);
    head[12..16].copy_from_slice(&flags.to_le_bytes());
    head[16..24].copy_from_slice(&(rows as u64).to_le_bytes());
    head[24..32].copy_from_slice(&(features as u64).to_le_bytes());
    head[32..40].copy_from_slice(&(nnz as u64).to_le_bytes());
    head[40..48].copy_from_slice(&source.bytes.to_le_bytes());
    let (secs, nanos) = split_time(source.mtime);
    head[48..56].copy_from_slice(&secs.to_le_bytes());
    head[56..60].copy_from_slice(&nanos.to_le_bytes());
    head[60..64].copy_from_slice(&(src_path.len() as u32).to_le_bytes());
    head[64..68].copy_from_slice(&payload_crc.to_le_bytes());
    let used = columns.map_or(0, ColumnMap::used) as u64;
    head[72..80].copy_from_slice(&used.to_le_bytes());
    let mut hcrc = crc32fast::Hasher::new();
    hcrc.update(&head[..68]);
    hcrc.update(&head[72..]);
    hcrc.update(src_path.as_bytes());
    head[68..72].copy_from_slice(&hcrc.finalize().to_le_bytes());
    head.extend_from_slice(src_path.as_bytes());
    head.resize(s.indptr, 0);

    atomic_write(path, |w| {
        w.write_all(&head).map_err(io_err(path))?;
        write_payload(ds, columns, &s, |b| w.write_all(b).map_err(io_err(path)))
    })
}

/// Feeds the payload (the arrays as little-endian bytes with the zero padding between
/// them, in file order) to `f` in pieces of about 64 KiB.
fn write_payload(
    ds: &Dataset,
    columns: Option<&ColumnMap>,
    s: &Sections,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    const PIECE: usize = 1 << 16;
    let zeros = [0u8; ALIGN];
    let mut buf: Vec<u8> = Vec::with_capacity(PIECE + 8);
    let mut array = |items: &mut dyn Iterator<Item = u8>,
                     f: &mut dyn FnMut(&[u8]) -> Result<()>| {
        for b in items {
            buf.push(b);
            if buf.len() >= PIECE {
                f(&buf)?;
                buf.clear();
            }
        }
        f(&buf)?;
        buf.clear();
        Ok::<(), Error>(())
    };
    array(
        &mut ds.indptr.iter().flat_map(|&p| (p as u64).to_le_bytes()),
        &mut f,
    )?;
    f(&zeros[..s.indices - (s.indptr + ds.indptr.len() * 8)])?;
    array(&mut ds.indices.iter().flat_map(|i| i.to_le_bytes()), &mut f)?;
    let mut pos = s.indices + ds.indices.len() * 4;
    if let (Some(v0), Some(vals)) = (s.values, &ds.values) {
        f(&zeros[..v0 - pos])?;
        array(&mut vals.iter().flat_map(|v| v.to_le_bytes()), &mut f)?;
        pos = v0 + vals.len() * 4;
    }
    f(&zeros[..s.labels - pos])?;
    array(&mut ds.labels.iter().flat_map(|y| y.to_le_bytes()), &mut f)?;
    if let (Some(m0), Some(map)) = (s.map, columns) {
        f(&zeros[..m0 - (s.labels + ds.labels.len() * 4)])?;
        array(&mut map.ids().iter().flat_map(|i| i.to_le_bytes()), &mut f)?;
    }
    Ok(())
}

fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            // Before the epoch: floor to whole seconds below.
            let secs = -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0);
            let nanos = if d.subsec_nanos() > 0 {
                1_000_000_000 - d.subsec_nanos()
            } else {
                0
            };
            (secs, nanos)
        }
    }
}

fn join_time(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    }
}

/// A loaded cache: the data and its recorded source.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The rows as stored: in the renumbered feature ids when `columns` is given.
    pub data: Dataset,
    pub source: Source,
    /// The stored renumbering of the features (compact id to original id), if any.
    pub columns: Option<ColumnMap>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `n` little-endian items of `T` at byte `at` of the mapped file: in place on a
/// little-endian machine, decoded into a vector otherwise (the caller has checked that
/// they lie inside the file).
fn array_at<T: bytemuck::Pod>(
    map: &Arc<Mmap>,
    at: usize,
    n: usize,
    from_le: fn(T) -> T,
) -> Option<Array<T>> {
    if cfg!(target_endian = "little") {
        return Array::mapped(map, at, n);
    }
    let size = std::mem::size_of::<T>();
    let bytes = map.get(at..at + n * size)?;
    Some(
        bytes
            .chunks_exact(size)
            .map(|c| from_le(bytemuck::pod_read_unaligned(c)))
            .collect(),
    )
}

fn f32_from_le(x: f32) -> f32 {
    f32::from_bits(u32::from_le(x.to_bits()))
}

/// Reads and validates the cache at `path`. The file is memory-mapped and its arrays
/// are used in place (on little-endian 64-bit machines): loading costs one checksum
/// pass and one validation pass over the pages, no copy. The file must not be changed
/// while the data is in use; `asyb convert` replaces caches by renaming a new file
/// over the old one, which leaves existing mappings intact.
pub fn read_cache(path: &Path) -> Result<Loaded> {
    let bad = |reason: String| Error::Data {
        path: path.into(),
        reason: format!("not a usable asyb cache: {reason}"),
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if file_len < HEADER_BYTES as u64 {
        return Err(bad(format!("{file_len} bytes, shorter than the header")));
    }
    // SAFETY: the mapping is read-only and private to this process's view; the
    // documented contract is that cache files are not modified in place while used
    // (they are written to a temporary file and renamed).
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let head = &map[..HEADER_BYTES];
    if head[0..8] != MAGIC {
        return Err(bad("wrong magic bytes".into()));
    }
    let version = le_u32(head, 8);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(bad(format!(
            "format version {version}, this asyb reads versions {OLDEST_VERSION} to {VERSION}; run asyb convert again"
        )));
    }
    let path_len = le_u32(head, 60) as usize;
    if path_len > 1 << 16 {
        return Err(bad(format!("source path length {path_len}")));
    }
    let src = map
        .get(HEADER_BYTES..HEADER_BYTES + path_len)
        .ok_or_else(|| bad("truncated header".into()))?;
    let mut hcrc = crc32fast::Hasher::new();
    hcrc.update(&head[..68]);
    hcrc.update(&head[72..]);
    hcrc.update(src);
    if hcrc.finalize() != le_u32(head, 68) {
        return Err(bad("header checksum mismatch (corrupted)".into()));
    }
    let flags = le_u32(head, 12);
    let rows = usize::try_from(le_u64(head, 16)).map_err(|_| bad("row count".into()))?;
    let features = usize::try_from(le_u64(head, 24)).map_err(|_| bad("feature count".into()))?;
    let nnz = usize::try_from(le_u64(head, 32)).map_err(|_| bad("nonzero count".into()))?;
    let has_values = flags & FLAG_VALUES != 0;
    let renumbered = flags & FLAG_RENUMBERED != 0;
    let used = usize::try_from(le_u64(head, 72)).map_err(|_| bad("feature map size".into()))?;
    let known = if version == 1 {
        KNOWN_FLAGS & !FLAG_RENUMBERED
    } else {
        KNOWN_FLAGS
    };
    if flags & !known != 0 {
        return Err(bad(format!("unknown flags {flags:#x}")));
    }
    if !renumbered && used != 0 {
        return Err(bad("a feature map size without a feature map".into()));
    }
    let s = sections(path_len, rows, nnz, has_values, renumbered.then_some(used))
        .ok_or_else(|| bad("sizes overflow".into()))?;
    if s.end as u64 != file_len {
        return Err(bad(format!(
            "{file_len} bytes where the header implies {} (truncated or corrupted)",
            s.end
        )));
    }
    let source = Source {
        path: PathBuf::from(String::from_utf8_lossy(src).into_owned()),
        bytes: le_u64(head, 40),
        mtime: join_time(le_u64(head, 48) as i64, le_u32(head, 56)),
        index_base_one: flags & FLAG_ONE_BASED != 0,
    };
    let stale = std::fs::metadata(&source.path).ok().and_then(|m| {
        let mtime = m.modified().ok()?;
        (m.len() != source.bytes || mtime != source.mtime).then_some(())
    });
    if stale.is_some() {
        return Err(Error::Data {
            path: path.into(),
            reason: format!(
                "stale cache: its source {} changed since it was converted; run asyb convert again",
                source.path.display()
            ),
        });
    }

    // The payload (arrays and the padding between them) is checksummed as one run of
    // bytes; every padding byte, the header's included, must be zero.
    if parallel_crc(&map[s.indptr..s.end]) != le_u32(head, 64) {
        return Err(bad("payload checksum mismatch (corrupted)".into()));
    }
    let indptr_end = s.indptr + (rows + 1) * 8;
    let indices_end = s.indices + nnz * 4;
    let values_end = s.values.map_or(indices_end, |v0| v0 + nnz * 4);
    let mut pads = vec![HEADER_BYTES + path_len..s.indptr, indptr_end..s.indices];
    match s.values {
        Some(v0) => pads.extend([indices_end..v0, values_end..s.labels]),
        None => pads.push(indices_end..s.labels),
    }
    if let Some(m0) = s.map {
        pads.push(s.labels + rows * 4..m0);
    }
    if pads.into_iter().any(|r| map[r].iter().any(|&b| b != 0)) {
        return Err(bad("nonzero padding (corrupted)".into()));
    }
    let truncated = || bad("array outside the file".into());
    let indptr: Array<usize> = if std::mem::size_of::<usize>() == 8 {
        array_at(&map, s.indptr, rows + 1, usize::from_le).ok_or_else(truncated)?
    } else {
        let wide: Array<u64> =
            array_at(&map, s.indptr, rows + 1, u64::from_le).ok_or_else(truncated)?;
        wide.iter()
            .map(|&v| usize::try_from(v).map_err(|_| bad("indptr value".into())))
            .collect::<Result<Vec<usize>>>()?
            .into()
    };
    let indices = array_at(&map, s.indices, nnz, u32::from_le).ok_or_else(truncated)?;
    let values = match s.values {
        Some(v0) => Some(array_at(&map, v0, nnz, f32_from_le).ok_or_else(truncated)?),
        None => None,
    };
    let labels = array_at(&map, s.labels, rows, f32_from_le).ok_or_else(truncated)?;
    let columns = match s.map {
        Some(m0) => {
            // Copied out (its pages released), as the map is held as a vector.
            let mut ids: Array<u32> =
                array_at(&map, m0, used, u32::from_le).ok_or_else(truncated)?;
            let ids = std::mem::take(ids.make_mut());
            Some(ColumnMap::from_ids(features, ids).map_err(bad)?)
        }
        None => None,
    };
    let data = Dataset {
        indptr,
        indices,
        values,
        labels,
        weights: None,
        features: if renumbered { used } else { features },
    };
    data.validate().map_err(bad)?;
    Ok(Loaded {
        data,
        source,
        columns,
    })
}

/// CRC-32 of `bytes`, its pieces checksummed on several threads and combined.
fn parallel_crc(bytes: &[u8]) -> u32 {
    let parts = super::threads();
    let piece = bytes.len().div_ceil(parts).max(1 << 20);
    let hashers = crate::par::each(bytes.chunks(piece), |c| {
        let mut h = crc32fast::Hasher::new();
        h.update(c);
        h
    });
    let mut total = crc32fast::Hasher::new();
    for h in &hashers {
        total.combine(h);
    }
    total.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: bool) -> Dataset {
        let rows: Vec<(f32, Vec<(u32, f32)>)> = (0..300u32)
            .map(|i| {
                let v = if values { 0.5 + i as f32 } else { 1.0 };
                let entries = if i % 7 == 3 {
                    Vec::new()
                } else {
                    vec![(i % 5, v), (5 + i % 11, 1.0), (20 + i % 3, v)]
                };
                ((i % 2) as f32, entries)
            })
            .collect();
        let mut ds = Dataset::from_rows(23, &rows);
        ds.compact_binary();
        ds
    }

    fn setup(values: bool) -> (tempfile::TempDir, PathBuf, PathBuf, Dataset) {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("data.svm");
        std::fs::write(&text, "source text").unwrap();
        let cache = dir.path().join("data.cache");
        let ds = sample(values);
        assert_eq!(ds.values.is_some(), values);
        write_cache(&cache, &ds, None, &Source::of(&text, true).unwrap()).unwrap();
        (dir, text, cache, ds)
    }

    /// `sample(values)` renumbered by frequency (not in id order) written as a cache with
    /// its map: the directory, the cache, the original rows, the renumbered rows, the map.
    fn setup_renumbered(values: bool) -> (tempfile::TempDir, PathBuf, Dataset, Dataset, ColumnMap) {
        let (dir, text, cache, ds) = setup(values);
        let mut rows = ds.clone();
        let map = ColumnMap::by_frequency(&rows);
        assert!(map.compact(&mut rows));
        assert!(
            map.ids().windows(2).any(|w| w[0] > w[1]),
            "not a reordering"
        );
        write_cache(&cache, &rows, Some(&map), &Source::of(&text, true).unwrap()).unwrap();
        (dir, cache, ds, rows, map)
    }

    /// The header's and the payload's checksums recomputed after an edit of `bytes`.
    fn reseal(bytes: &mut [u8]) {
        let path_len = le_u32(bytes, 60) as usize;
        let payload = align(HEADER_BYTES + path_len);
        let crc = crc32fast::hash(&bytes[payload..]);
        bytes[64..68].copy_from_slice(&crc.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[..68]);
        h.update(&bytes[72..HEADER_BYTES + path_len]);
        bytes[68..72].copy_from_slice(&h.finalize().to_le_bytes());
    }

    #[test]
    fn renumbered_rows_round_trip_with_their_map() {
        for values in [false, true] {
            let (_d, cache, ds, rows, map) = setup_renumbered(values);
            let l = read_cache(&cache).unwrap();
            assert_eq!(l.data, rows);
            assert_eq!(l.data.features, map.used());
            assert_eq!(l.columns.as_ref(), Some(&map));
            assert_eq!(l.columns.unwrap().features, ds.features);
            if cfg!(target_endian = "little") {
                assert!(l.data.indices.is_mapped());
            }
            // The general reader gives the original rows back.
            let opts = crate::data::ReadOptions::default();
            let (back, _) = crate::data::read(&cache, &opts).unwrap();
            assert_eq!(back, ds);
            let (kept, _, m) = crate::data::read_renumbered(&cache, &opts).unwrap();
            assert_eq!((kept, m), (rows, Some(map)));
        }
    }

    #[test]
    fn every_flipped_byte_of_a_renumbered_cache_is_refused() {
        let (_d, cache, _ds, _rows, _map) = setup_renumbered(false);
        let good = std::fs::read(&cache).unwrap();
        for at in (0..good.len()).step_by(5) {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            std::fs::write(&cache, &bad).unwrap();
            assert!(read_cache(&cache).is_err(), "flip at byte {at} accepted");
        }
    }

    #[test]
    fn maps_with_a_repeated_or_out_of_range_id_are_refused_even_if_checksummed() {
        let (_d, cache, ds, _rows, map) = setup_renumbered(false);
        let good = std::fs::read(&cache).unwrap();
        let m0 = good.len() - map.used() * 4;
        assert_eq!(&good[m0..m0 + 4], &map.ids()[0].to_le_bytes());
        for (id, says) in [
            (map.ids()[1], "appears twice"),
            (ds.features as u32, "out of range"),
        ] {
            let mut bad = good.clone();
            bad[m0..m0 + 4].copy_from_slice(&id.to_le_bytes());
            reseal(&mut bad);
            std::fs::write(&cache, &bad).unwrap();
            let e = read_cache(&cache).unwrap_err().to_string();
            assert!(e.contains("data.cache") && e.contains(says), "{e}");
        }
        // A row's last id at the map's size, one beyond the renumbered features.
        let path_len = le_u32(&good, 60) as usize;
        let s = sections(path_len, ds.rows(), ds.nnz(), false, Some(map.used())).unwrap();
        let last = s.indices + (ds.indptr[1] - 1) * 4;
        let mut bad = good.clone();
        bad[last..last + 4].copy_from_slice(&(map.used() as u32).to_le_bytes());
        reseal(&mut bad);
        std::fs::write(&cache, &bad).unwrap();
        let e = read_cache(&cache).unwrap_err().to_string();
        assert!(
            e.contains(&format!("row 1: feature index beyond {}", map.used())),
            "{e}"
        );
    }

    #[test]
    fn version_1_files_are_read_and_cannot_claim_a_map() {
        let (_d, _text, cache, ds) = setup(true);
        let mut v1 = std::fs::read(&cache).unwrap();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        reseal(&mut v1);
        std::fs::write(&cache, &v1).unwrap();
        let l = read_cache(&cache).unwrap();
        assert_eq!((l.data, l.columns), (ds, None));

        let (_d, cache, ..) = setup_renumbered(true);
        let mut v1 = std::fs::read(&cache).unwrap();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        reseal(&mut v1);
        std::fs::write(&cache, &v1).unwrap();
        let e = read_cache(&cache).unwrap_err().to_string();
        assert!(e.contains("unknown flags"), "{e}");
    }

    #[test]
    fn parallel_crc_equals_the_sequential_one() {
        let bytes: Vec<u8> = (0..5_000_017u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 1 << 20, (1 << 20) + 3, bytes.len()] {
            assert_eq!(
                parallel_crc(&bytes[..len]),
                crc32fast::hash(&bytes[..len]),
                "{len}"
            );
        }
    }

    #[test]
    fn round_trip_is_exact() {
        for values in [false, true] {
            let (_d, text, cache, ds) = setup(values);
            assert!(is_cache(&cache));
            assert!(!is_cache(&text));
            let l = read_cache(&cache).unwrap();
            assert_eq!(l.data, ds);
            // Read in place from the mapped file, not copied.
            if cfg!(target_endian = "little") {
                assert!(l.data.indices.is_mapped() && l.data.labels.is_mapped());
                assert_eq!(l.data.indptr.is_mapped(), cfg!(target_pointer_width = "64"));
            }
            assert_eq!(l.source, Source::of(&text, true).unwrap());
            let len = std::fs::metadata(&cache).unwrap().len() as usize;
            assert_eq!(len % 4, 0);
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (_d, _text, cache, _ds) = setup(true);
        let good = std::fs::read(&cache).unwrap();
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&cache, &bad).unwrap();
            match read_cache(&cache) {
                Ok(_) => panic!("flip at byte {at} accepted"),
                Err(e) => assert!(e.to_string().contains("data.cache"), "{e}"),
            }
        }
    }

    #[test]
    fn truncated_or_extended_files_are_refused() {
        let (_d, _text, cache, _ds) = setup(false);
        let good = std::fs::read(&cache).unwrap();
        for len in [0, 7, 100, HEADER_BYTES + 3, good.len() / 2, good.len() - 1] {
            std::fs::write(&cache, &good[..len]).unwrap();
            assert!(read_cache(&cache).is_err(), "length {len} accepted");
        }
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 4]);
        std::fs::write(&cache, &longer).unwrap();
        let e = read_cache(&cache).unwrap_err().to_string();
        assert!(e.contains("truncated or corrupted"), "{e}");
    }

    #[test]
    fn stale_cache_is_refused_and_missing_source_is_fine() {
        let (_d, text, cache, ds) = setup(false);
        std::fs::write(&text, "source text, edited").unwrap();
        let e = read_cache(&cache).unwrap_err().to_string();
        assert!(e.contains("stale cache"), "{e}");
        std::fs::remove_file(&text).unwrap();
        assert_eq!(read_cache(&cache).unwrap().data, ds);
    }

    #[test]
    fn foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"1 1:1\n0 2:1\n").unwrap();
        let e = read_cache(&p).unwrap_err().to_string();
        assert!(e.contains("not a usable asyb cache"), "{e}");
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&(VERSION + 1).to_le_bytes());
        v.resize(HEADER_BYTES, 0);
        std::fs::write(&p, &v).unwrap();
        let e = read_cache(&p).unwrap_err().to_string();
        assert!(e.contains(&format!("version {}", VERSION + 1)), "{e}");
    }

    #[test]
    fn times_before_the_epoch_survive() {
        for t in [
            UNIX_EPOCH - Duration::new(5, 300),
            UNIX_EPOCH + Duration::new(1_700_000_000, 999_999_999),
            UNIX_EPOCH,
        ] {
            let (s, n) = split_time(t);
            assert_eq!(join_time(s, n), t);
        }
    }
}
