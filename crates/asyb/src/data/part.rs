//! The part of a training set that one of several worker processes reads, so that no
//! process holds the whole data and every row is read by exactly one of them:
//!
//! - a path with `{rank}` names one file per worker: worker w reads the file with its
//!   index w (0-based) in place of `{rank}`, whole;
//! - an uncompressed LIBSVM file is cut into equal byte ranges moved to line breaks;
//! - a binary cache is cut into equal row ranges.

use std::path::{Path, PathBuf};

use crate::data::libsvm::{read_libsvm_range, ReadOptions, ReadReport};
use crate::data::{cache, Dataset};
use crate::{Error, Result};

/// The placeholder for the worker's index in a per-worker file name.
pub const RANK_PLACEHOLDER: &str = "{rank}";

/// Where a part came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartSource {
    /// A whole file of its own.
    File(PathBuf),
    /// Bytes `start..end` (at line breaks) of a text file.
    Bytes { start: u64, end: u64 },
    /// Rows `lo..hi` of a cache.
    Rows { lo: usize, hi: usize },
}

/// Reads part `part` of `parts` (see the module doc).
pub fn read_part(
    path: &Path,
    part: usize,
    parts: usize,
    opts: &ReadOptions,
) -> Result<(Dataset, ReadReport, PartSource)> {
    assert!(part < parts, "part {part} of {parts}");
    let name = path.to_string_lossy();
    if name.contains(RANK_PLACEHOLDER) {
        let own = PathBuf::from(name.replace(RANK_PLACEHOLDER, &part.to_string()));
        let (ds, rep) = crate::data::read(&own, opts)?;
        return Ok((ds, rep, PartSource::File(own)));
    }
    if cache::is_cache(path) {
        let (ds, mut rep) = crate::data::read(path, opts)?;
        let n = ds.rows();
        let (lo, hi) = (n * part / parts, n * (part + 1) / parts);
        let piece = ds.slice_rows(lo, hi);
        rep.rows = piece.rows();
        return Ok((piece, rep, PartSource::Rows { lo, hi }));
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Data {
            path: path.into(),
            reason: format!(
                "the ranks read parts of one file by byte ranges, so it must be a regular file, not a pipe, FIFO or device: give a regular file, a cache, or one file per rank ({RANK_PLACEHOLDER} in the name)"
            ),
        });
    }
    let len = meta.len();
    let (start, end) = (
        (u128::from(len) * part as u128 / parts as u128) as u64,
        (u128::from(len) * (part as u128 + 1) / parts as u128) as u64,
    );
    let (ds, rep) = read_libsvm_range(path, start, end, opts)?;
    Ok((ds, rep, PartSource::Bytes { start, end }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cache::{write_cache, Source};
    use crate::data::gen::{ctr, CtrSpec};
    use crate::data::libsvm::{write_libsvm, IndexBase, LabelRule};

    fn opts() -> ReadOptions {
        ReadOptions {
            index_base: IndexBase::One,
            features: Some(4096),
            skip_bad_lines: false,
            labels: LabelRule::Binary,
        }
    }

    /// Concatenating the parts gives the whole file, row for row, for every count of
    /// parts (more parts than some ranges have lines included).
    fn check_parts(path: &Path, whole: &Dataset) {
        for parts in [1, 2, 3, 7, 16] {
            let mut rows = Vec::new();
            for p in 0..parts {
                let (ds, rep, _) = read_part(path, p, parts, &opts()).unwrap();
                assert_eq!(rep.rows, ds.rows());
                for i in 0..ds.rows() {
                    let r = ds.row(i);
                    rows.push((ds.labels[i], r.iter().collect::<Vec<_>>()));
                }
            }
            assert_eq!(rows.len(), whole.rows(), "{parts} parts");
            for (i, (y, r)) in rows.iter().enumerate() {
                assert_eq!(*y, whole.labels[i]);
                assert_eq!(*r, whole.row(i).iter().collect::<Vec<_>>(), "row {i}");
            }
        }
    }

    #[test]
    fn parts_of_text_and_cache_cover_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CtrSpec {
            rows: 1000,
            features: 4096,
            seed: 3,
            ..CtrSpec::default()
        };
        let ds = ctr(&spec).unwrap();
        let text = dir.path().join("d.svm");
        write_libsvm(&text, &ds).unwrap();
        let (whole, _) = crate::data::read(&text, &opts()).unwrap();
        assert_eq!(whole.rows(), 1000);
        check_parts(&text, &whole);
        let bin = dir.path().join("d.cache");
        write_cache(&bin, &whole, None, &Source::of(&text, true).unwrap()).unwrap();
        check_parts(&bin, &whole);
        // A cache of renumbered features gives the parts in the original ids.
        let mut rows = whole.clone();
        let map = crate::data::columns::ColumnMap::by_frequency(&rows);
        assert!(map.compact(&mut rows) && !map.ids().windows(2).all(|w| w[0] < w[1]));
        write_cache(&bin, &rows, Some(&map), &Source::of(&text, true).unwrap()).unwrap();
        check_parts(&bin, &whole);
    }

    #[test]
    fn per_rank_files_and_errors_name_the_whole_files_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p-0.svm"), "1 1:1\n-1 2:1\n").unwrap();
        std::fs::write(dir.path().join("p-1.svm"), "1 3:1\n").unwrap();
        let pat = dir.path().join("p-{rank}.svm");
        let (a, _, src) = read_part(&pat, 0, 2, &opts()).unwrap();
        assert_eq!(a.rows(), 2);
        assert_eq!(src, PartSource::File(dir.path().join("p-0.svm")));
        let (b, _, _) = read_part(&pat, 1, 2, &opts()).unwrap();
        assert_eq!(b.rows(), 1);
        assert_eq!(b.row(0).indices, &[2]);
        // A bad line in the second half is reported with its line in the whole file.
        let bad = dir.path().join("bad.svm");
        let mut text = String::new();
        for _ in 0..50 {
            text.push_str("1 1:1 2:1\n");
        }
        text.push_str("1 3:x\n");
        std::fs::write(&bad, &text).unwrap();
        let e = read_part(&bad, 1, 2, &opts()).unwrap_err().to_string();
        assert!(e.contains("bad.svm:51:"), "{e}");
        // A compressed file cannot be cut by bytes.
        let gz = dir.path().join("d.svm.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"1 1:1\n").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let e = read_part(&gz, 0, 2, &opts()).unwrap_err().to_string();
        assert!(e.contains("cannot be split by byte ranges"), "{e}");
    }
}
