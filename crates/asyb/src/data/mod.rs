//! Training and test data: an in-memory CSR matrix with labels, shared read-only by all
//! workers, and the readers and generators that build it. Knows nothing of the
//! parameter server or of the model.

/// A sparse dataset in compressed sparse row form.
///
/// Row `i` has feature ids `indices[indptr[i]..indptr[i + 1]]` (0-based, strictly
/// increasing within a row, all `< features`) with the matching `values`; when `values`
/// is `None` every stored value is 1 (binary rows, as in click-through-rate data).
/// `weights`, when given, weighs each row's loss (importance or sample weights, finite
/// and >= 0): a row of weight 2 counts as two copies of it. A training [`Problem`]
/// (crate::problem::Problem) holds them scaled to a mean of 1, so that its objective is
/// the weighted mean loss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    pub indptr: Array<usize>,
    pub indices: Array<u32>,
    pub values: Option<Array<f32>>,
    pub labels: Array<f32>,
    /// Per-row weights of the loss; `None`: every row weighs 1.
    pub weights: Option<Array<f32>>,
    /// Number of features d (columns).
    pub features: usize,
}

/// A borrowed view of one row.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    pub indices: &'a [u32],
    /// `None`: all values are 1.
    pub values: Option<&'a [f32]>,
}

impl Row<'_> {
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Value of the k-th stored entry.
    #[inline]
    pub fn value(&self, k: usize) -> f32 {
        match self.values {
            Some(v) => v[k],
            None => 1.0,
        }
    }

    /// `(feature, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.indices
            .iter()
            .enumerate()
            .map(|(k, &f)| (f, self.value(k)))
    }
}

impl Dataset {
    /// An empty dataset with `features` columns.
    pub fn new(features: usize) -> Self {
        Dataset {
            indptr: vec![0].into(),
            indices: Array::default(),
            values: Some(Array::default()),
            labels: Array::default(),
            weights: None,
            features,
        }
    }

    /// Builds a dataset from rows of `(feature, value)` pairs (which must be sorted by
    /// feature, without duplicates). Convenient in tests and generators.
    pub fn from_rows(features: usize, rows: &[(f32, Vec<(u32, f32)>)]) -> Self {
        let mut ds = Dataset::new(features);
        for (label, row) in rows {
            ds.push_row(*label, row.iter().copied());
        }
        ds
    }

    /// Appends one row. Entries must be sorted by feature and unique.
    pub fn push_row(&mut self, label: f32, entries: impl IntoIterator<Item = (u32, f32)>) {
        for (f, v) in entries {
            debug_assert!((f as usize) < self.features);
            self.indices.push(f);
            if let Some(vals) = self.values.as_mut() {
                vals.push(v);
            }
        }
        self.indptr.push(self.indices.len());
        self.labels.push(label);
    }

    /// A copy of rows `lo..hi`.
    pub fn slice_rows(&self, lo: usize, hi: usize) -> Dataset {
        let (a, b) = (self.indptr[lo], self.indptr[hi]);
        Dataset {
            indptr: self.indptr[lo..=hi].iter().map(|&p| p - a).collect(),
            indices: self.indices[a..b].to_vec().into(),
            values: self.values.as_ref().map(|v| v[a..b].to_vec().into()),
            labels: self.labels[lo..hi].to_vec().into(),
            weights: self.weights.as_ref().map(|w| w[lo..hi].to_vec().into()),
            features: self.features,
        }
    }

    /// Number of rows n.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// The weight of row `i`'s loss (1 without weights).
    #[inline]
    pub fn weight(&self, i: usize) -> f64 {
        self.weights.as_ref().map_or(1.0, |w| f64::from(w[i]))
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> Row<'_> {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        Row {
            indices: &self.indices[a..b],
            values: self.values.as_ref().map(|v| &v[a..b]),
        }
    }

    /// Prefetches what [`Dataset::row`] and the label of row `i` read first: the row's
    /// bounds and its label.
    #[inline]
    pub fn prefetch_row_start(&self, i: usize) {
        crate::hint::prefetch(&self.indptr[i]);
        crate::hint::prefetch(&self.labels[i]);
    }

    /// Prefetches the entries of row `i` (best after [`Dataset::prefetch_row_start`] had
    /// time to bring its bounds in).
    #[inline]
    pub fn prefetch_row_data(&self, i: usize) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        if a < b {
            crate::hint::prefetch(&self.indices[a]);
            crate::hint::prefetch(&self.indices[b - 1]);
            if let Some(v) = &self.values {
                crate::hint::prefetch(&v[a]);
                crate::hint::prefetch(&v[b - 1]);
            }
        }
    }

    /// Checks the CSR invariants every reader of a dataset relies on: one row pointer
    /// per row plus one, spanning the nonzeros and never decreasing; feature indices
    /// strictly increasing within a row and below `features`; finite values and labels;
    /// one weight per row, finite and >= 0, where there are weights.
    /// The error names the first bad row (1-based), as a sequential check would.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let nnz = self.indices.len();
        if self.indptr.len() != self.rows() + 1 {
            return Err(format!(
                "{} row pointers for {} rows (expected one more than the rows)",
                self.indptr.len(),
                self.rows()
            ));
        }
        if let Some(v) = self.values.as_ref().filter(|v| v.len() != nnz) {
            return Err(format!("{} values for {nnz} feature indices", v.len()));
        }
        if self.indptr.first() != Some(&0) || self.indptr.last() != Some(&nnz) {
            return Err("row pointers do not span the nonzeros".into());
        }
        // Each thread checks a range of rows; the first failing range reports (its first
        // bad row).
        crate::par::map_ranges(self.rows(), threads(), |rows| self.validate_rows(rows))
            .into_iter()
            .collect::<std::result::Result<Vec<()>, String>>()?;
        if let Some(i) = self.labels.iter().position(|y| !y.is_finite()) {
            return Err(format!("row {}: label is not finite", i + 1));
        }
        if let Some(w) = &self.weights {
            if w.len() != self.rows() {
                return Err(format!("{} weights for {} rows", w.len(), self.rows()));
            }
            if let Some(i) = w.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(format!(
                    "row {}: weight {} is not a finite number >= 0",
                    i + 1,
                    w[i]
                ));
            }
        }
        Ok(())
    }

    /// The per-row CSR invariants over `rows` (row pointers already span the nonzeros).
    fn validate_rows(&self, rows: std::ops::Range<usize>) -> std::result::Result<(), String> {
        let nnz = self.indices.len();
        for i in rows {
            let (a, b) = (self.indptr[i], self.indptr[i + 1]);
            if a > b || b > nnz {
                return Err(format!("row {}: row pointers decrease", i + 1));
            }
            let idx = &self.indices[a..b];
            if idx.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("row {}: feature indices not increasing", i + 1));
            }
            if idx.last().is_some_and(|&j| j as usize >= self.features) {
                return Err(format!(
                    "row {}: feature index beyond {}",
                    i + 1,
                    self.features
                ));
            }
            if let Some(k) = self
                .values
                .as_ref()
                .and_then(|v| v[a..b].iter().position(|x| !x.is_finite()))
            {
                return Err(format!("row {}: value {} is not finite", i + 1, k + 1));
            }
        }
        Ok(())
    }

    /// Drops the value array when every value is exactly 1 (saves a third of the memory
    /// on binary data).
    pub fn compact_binary(&mut self) {
        if self
            .values
            .as_ref()
            .is_some_and(|v| v.iter().all(|&x| x == 1.0))
        {
            self.values = None;
        }
    }

    /// A checksum of the whole dataset (dimensions, row pointers, indices, values,
    /// labels): equal datasets have equal fingerprints, so results computed on one (a
    /// reference optimum, a checkpoint) can be matched to it later.
    pub fn fingerprint(&self) -> u64 {
        let mut h = crc32fast::Hasher::new();
        h.update(&(self.rows() as u64).to_le_bytes());
        h.update(&(self.features as u64).to_le_bytes());
        h.update(&(self.nnz() as u64).to_le_bytes());
        // Little-endian bytes of every array, the row pointers as u64.
        fn le<T: bytemuck::Pod>(h: &mut crc32fast::Hasher, xs: &[T]) {
            if cfg!(target_endian = "little") {
                h.update(bytemuck::cast_slice(xs));
            } else {
                for x in xs {
                    let mut b = bytemuck::bytes_of(x).to_vec();
                    b.reverse();
                    h.update(&b);
                }
            }
        }
        if std::mem::size_of::<usize>() == 8 {
            le(&mut h, &self.indptr);
        } else {
            let wide: Vec<u64> = self.indptr.iter().map(|&p| p as u64).collect();
            le(&mut h, &wide);
        }
        le(&mut h, &self.indices);
        if let Some(v) = &self.values {
            le(&mut h, v);
        }
        le(&mut h, &self.labels);
        if let Some(w) = &self.weights {
            le(&mut h, w);
        }
        let crc = h.finalize();
        // The CRC in the low half, the size in the high half: a cheap second check.
        (u64::from(crc)) | ((self.nnz() as u64 & 0xffff_ffff) << 32)
    }

    /// Bytes held by the CSR arrays and labels.
    pub fn heap_bytes(&self) -> usize {
        self.indptr.len() * std::mem::size_of::<usize>()
            + self.indices.len() * 4
            + self.values.as_ref().map_or(0, |v| v.len() * 4)
            + self.labels.len() * 4
            + self.weights.as_ref().map_or(0, |w| w.len() * 4)
    }
}

pub mod array;
pub mod cache;
pub mod columns;

/// Reads the row weights of a training file from `path`: one number per line (finite
/// and >= 0), in the file's row order, `rows` of them. Errors name the file and the
/// line.
pub fn read_weights(path: &Path, rows: usize) -> Result<Array<f32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut w = Vec::with_capacity(rows);
    for (k, line) in text.lines().enumerate() {
        let at = |col: usize, reason: String| Error::Parse {
            path: path.into(),
            line: k as u64 + 1,
            col: col as u64 + 1,
            reason,
        };
        let field = line.trim();
        let col = line.len() - line.trim_start().len();
        let x: f32 = field
            .parse()
            .map_err(|_| at(col, format!("weight '{field}' is not a number")))?;
        if !(x.is_finite() && x >= 0.0) {
            return Err(at(
                col,
                format!("weight {field} is not a finite number >= 0"),
            ));
        }
        w.push(x);
    }
    if w.len() != rows {
        return Err(Error::Data {
            path: path.into(),
            reason: format!(
                "{} weights for {rows} training rows (one per line)",
                w.len()
            ),
        });
    }
    Ok(w.into())
}

/// Threads for the passes over a whole dataset (the cache's checksum and validation,
/// the renumbering of features): every core, up to 8.
pub(crate) fn threads() -> usize {
    crate::par::cores().min(8)
}
pub mod gen;
pub mod idx;
pub mod libsvm;
pub mod lines;
pub mod part;

pub use array::Array;
pub use gen::{CtrSpec, RegressionSpec};
pub use libsvm::{read_libsvm, write_libsvm, IndexBase, LabelRule, ReadOptions, ReadReport};

use std::path::Path;

use crate::{Error, Result};

/// Reads training or test data: a binary cache (see [`cache`]) or LIBSVM text, told
/// apart by the file's first bytes, in the original feature ids (a cache that stores
/// renumbered features is renumbered back). A cache is held to the same options as
/// text: a feature bound is checked against its indices, labels against the label rule,
/// and an explicit index base must be the one the cache was converted from.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<(Dataset, ReadReport)> {
    let (mut ds, report, columns) = read_renumbered(path, opts)?;
    if let Some(map) = columns {
        if !map.expand(&mut ds) {
            return Err(Error::Data {
                path: path.into(),
                reason: "a feature id beyond the cache's feature map".into(),
            });
        }
    }
    Ok((ds, report))
}

/// Reads a file whose features must be numbered like data read before it (a test file
/// beside training data, rows to score with a model), whose index base was `one_based`.
/// An explicit base in `opts` applies as it is. Under [`IndexBase::Auto`], after 1-based
/// data the file is read as 1-based (an index 0 is then an error). After 0-based data
/// the file must show its base by holding feature index 0: one that holds features but
/// no index 0 reads as 1-based as well as 0-based, and which one was meant cannot be
/// told, so it is refused (naming `--index-base`) rather than read shifted by one.
pub fn read_following(
    path: &Path,
    opts: &ReadOptions,
    one_based: bool,
) -> Result<(Dataset, ReadReport)> {
    if opts.index_base != IndexBase::Auto {
        return read(path, opts);
    }
    if one_based {
        let one = ReadOptions {
            index_base: IndexBase::One,
            ..*opts
        };
        return read(path, &one);
    }
    let (ds, report) = read(path, opts)?;
    if report.index_base_one && ds.nnz() > 0 {
        return Err(Error::Data {
            path: path.into(),
            reason: "no row holds feature index 0, so its index base cannot be told, and the \
                training data were 0-based: pass --index-base 0 to read it as 0-based \
                (1-based data must be renumbered to match the training data)"
                .into(),
        });
    }
    Ok((ds, report))
}

/// [`read`], except that a cache's renumbered features are kept: the rows come in the
/// renumbered ids with the map to the original ones (whose feature count is the bound
/// of `opts`, if given, else the source's).
pub fn read_renumbered(
    path: &Path,
    opts: &ReadOptions,
) -> Result<(Dataset, ReadReport, Option<columns::ColumnMap>)> {
    if !cache::is_cache(path) {
        let (ds, report) = read_libsvm(path, opts)?;
        return Ok((ds, report, None));
    }
    let loaded = cache::read_cache(path)?;
    let mut ds = loaded.data;
    let mut columns = loaded.columns;
    let one = loaded.source.index_base_one;
    let bad = |reason: String| Error::Data {
        path: path.into(),
        reason,
    };
    match (opts.index_base, one) {
        (IndexBase::Zero, true) | (IndexBase::One, false) => {
            return Err(bad(format!(
                "the cache was converted from {}-based text; the index base given does not apply",
                if one { 1 } else { 0 }
            )))
        }
        _ => {}
    }
    if let Some(d) = opts.features {
        let largest = match &columns {
            Some(m) => m.ids().iter().max(),
            None => ds.indices.iter().max(),
        };
        if let Some(&j) = largest {
            if j as usize >= d {
                let shown = u64::from(j) + u64::from(one);
                return Err(bad(format!(
                    "feature index {shown} is out of range for {d} features"
                )));
            }
        }
        match &mut columns {
            Some(m) => m.features = d,
            None => ds.features = d,
        }
    }
    let label_ok = |y: f32| match opts.labels {
        LabelRule::Any => true,
        LabelRule::Binary => y == -1.0 || y == 0.0 || y == 1.0,
        LabelRule::Class => y >= 0.0 && y.fract() == 0.0,
    };
    if let Some(i) = ds.labels.iter().position(|&y| !label_ok(y)) {
        return Err(bad(format!(
            "row {}: label {} is not a valid {} label",
            i + 1,
            ds.labels[i],
            match opts.labels {
                LabelRule::Binary => "binary (-1, 0 or 1)",
                _ => "class (non-negative integer)",
            }
        )));
    }
    let report = ReadReport {
        rows: ds.rows(),
        skipped_lines: 0,
        first_skipped: None,
        index_base_one: one,
        bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
    };
    Ok((ds, report, columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Dataset {
        Dataset::from_rows(
            4,
            &[
                (1.0, vec![(0, 1.0), (3, 2.0)]),
                (-1.0, vec![]),
                (1.0, vec![(1, 0.5), (2, 1.0)]),
            ],
        )
    }

    #[test]
    fn validate_accepts_a_well_formed_dataset_and_names_each_fault() {
        assert_eq!(small().validate(), Ok(()));
        let broken = |f: &dyn Fn(&mut Dataset)| {
            let mut ds = small();
            f(&mut ds);
            ds.validate().unwrap_err()
        };
        let cases: Vec<(String, &str)> = vec![
            (
                broken(&|d| d.indptr.make_mut().truncate(3)),
                "3 row pointers for 3 rows",
            ),
            (
                broken(&|d| d.values.as_mut().unwrap().make_mut().push(1.0)),
                "5 values for 4",
            ),
            (broken(&|d| d.indptr[0] = 1), "do not span"),
            (broken(&|d| d.indptr[3] = 3), "do not span"),
            (broken(&|d| d.indptr[2] = 1), "row 2: row pointers decrease"),
            (
                broken(&|d| d.indices[3] = 1),
                "row 3: feature indices not increasing",
            ),
            (
                broken(&|d| d.indices[1] = 4),
                "row 1: feature index beyond 4",
            ),
            (
                broken(&|d| d.values.as_mut().unwrap()[2] = f32::NAN),
                "row 3: value 1 is not",
            ),
            (
                broken(&|d| d.labels[1] = f32::INFINITY),
                "row 2: label is not finite",
            ),
        ];
        for (got, want) in cases {
            assert!(got.contains(want), "{got:?} should say {want:?}");
        }
    }
}
