//! Feature-id compaction: a dataset whose feature ids are spread over a huge space (hashed
//! click-through features, `--features 1073741824`) but touch only a few million of them
//! is renumbered to the used ids `0..u`, in increasing order of the original id, so that
//! the parameter server holds `u` coordinates instead of `d`.
//!
//! The renumbering is exact for every regularizer whose prox keeps 0 at 0 (none, L1, L2,
//! elastic net, non-negativity, a box that contains 0): a feature that occurs in no
//! training row has a zero gradient, so its weight stays at 0 on every iterate and at
//! the optimum. [`ColumnMap`] keeps the original ids so that model files, test data and
//! warm starts speak of the original features.

use super::{Array, Dataset};

/// The used feature ids of a dataset, in increasing order: compact id `c` is original
/// feature `ids[c]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMap {
    /// Number of original features d.
    pub features: usize,
    /// Original ids of the used features, strictly increasing, all `< features`.
    pub ids: Vec<u32>,
}

impl ColumnMap {
    /// The features of `ds` that occur in at least one row.
    pub fn of(ds: &Dataset) -> ColumnMap {
        let bits = used_bits(ds);
        let mut ids = Vec::with_capacity(bits.iter().map(|w| w.count_ones() as usize).sum());
        for (k, &w) in bits.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                ids.push((k * 64) as u32 + w.trailing_zeros());
                w &= w - 1;
            }
        }
        ColumnMap {
            features: ds.features,
            ids,
        }
    }

    /// Number of used features.
    pub fn used(&self) -> usize {
        self.ids.len()
    }

    /// Compact id of original feature `f`, if it is used.
    pub fn compact_id(&self, f: u32) -> Option<u32> {
        self.ids.binary_search(&f).ok().map(|c| c as u32)
    }

    /// Renumbers `ds` (the dataset this map was built from, or any dataset whose features
    /// are all in the map) to compact ids and sets its feature count to [`Self::used`].
    /// Returns `false`, leaving `ds` as it was, when a row holds a feature the map does
    /// not have.
    pub fn compact(&self, ds: &mut Dataset) -> bool {
        // Rank of each original id: the count of used ids before its 64-bit word, plus
        // the used ids below it within the word.
        let words = self.features.div_ceil(64);
        let mut bits = vec![0u64; words];
        for &f in &self.ids {
            bits[f as usize / 64] |= 1 << (f % 64);
        }
        let mut before = Vec::with_capacity(words);
        let mut acc = 0u32;
        for &w in &bits {
            before.push(acc);
            acc += w.count_ones();
        }
        let mut out: Vec<u32> = Vec::with_capacity(ds.indices.len());
        for &f in ds.indices.iter() {
            let (k, b) = (f as usize / 64, f % 64);
            let w = match bits.get(k) {
                Some(&w) if w >> b & 1 == 1 => w,
                _ => return false,
            };
            out.push(before[k] + (w & ((1u64 << b) - 1)).count_ones());
        }
        ds.indices = Array::from(out);
        ds.features = self.used();
        true
    }

    /// `ds` renumbered to compact ids, without the entries of features the map does not
    /// have (a test row's features that no training row has get no weight anyway), and
    /// the number of entries dropped.
    pub fn restricted(&self, ds: &Dataset) -> (Dataset, usize) {
        let mut indptr = Vec::with_capacity(ds.indptr.len());
        let mut indices = Vec::with_capacity(ds.indices.len());
        let mut values = ds.values.as_ref().map(|v| Vec::with_capacity(v.len()));
        indptr.push(0);
        for i in 0..ds.rows() {
            let row = ds.row(i);
            for k in 0..row.nnz() {
                if let Some(c) = self.compact_id(row.indices[k]) {
                    indices.push(c);
                    if let Some(v) = values.as_mut() {
                        v.push(row.value(k));
                    }
                }
            }
            indptr.push(indices.len());
        }
        let dropped = ds.nnz() - indices.len();
        let out = Dataset {
            indptr: indptr.into(),
            indices: indices.into(),
            values: values.map(Into::into),
            labels: ds.labels.clone(),
            features: self.used(),
        };
        (out, dropped)
    }
}

/// One bit per feature of `ds`, set where a row uses it.
fn used_bits(ds: &Dataset) -> Vec<u64> {
    let mut bits = vec![0u64; ds.features.div_ceil(64)];
    for &f in ds.indices.iter() {
        if let Some(w) = bits.get_mut(f as usize / 64) {
            *w |= 1 << (f % 64);
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Dataset {
        Dataset::from_rows(
            1 << 20,
            &[
                (1.0, vec![(3, 1.0), (70, 2.0), (1_000_000, 0.5)]),
                (0.0, vec![(0, 1.5), (70, 1.0)]),
                (1.0, vec![]),
                (0.0, vec![(63, 1.0), (64, 1.0), (1_048_575, 3.0)]),
            ],
        )
    }

    #[test]
    fn the_map_lists_the_used_features_in_order() {
        let m = ColumnMap::of(&data());
        assert_eq!(m.ids, vec![0, 3, 63, 64, 70, 1_000_000, 1_048_575]);
        assert_eq!(m.features, 1 << 20);
        assert_eq!(m.compact_id(70), Some(4));
        assert_eq!(m.compact_id(71), None);
    }

    #[test]
    fn compaction_renumbers_rows_and_keeps_values() {
        let ds = data();
        let m = ColumnMap::of(&ds);
        let mut c = ds.clone();
        assert!(m.compact(&mut c));
        assert_eq!(c.features, 7);
        assert_eq!(c.indptr, ds.indptr);
        assert_eq!(c.values, ds.values);
        // Brute force: every compact id maps back to the original one.
        for (k, &cid) in c.indices.iter().enumerate() {
            assert_eq!(m.ids[cid as usize], ds.indices[k]);
        }
        // restricted() gives the same answer when nothing is dropped.
        assert_eq!(m.restricted(&ds), (c, 0));
    }

    #[test]
    fn other_data_loses_the_features_the_map_lacks() {
        let m = ColumnMap::of(&data());
        let other = Dataset::from_rows(
            1 << 20,
            &[
                (1.0, vec![(2, 1.0), (3, 4.0), (900_000, 1.0)]),
                (0.0, vec![(5, 1.0)]),
            ],
        );
        let mut c = other.clone();
        assert!(!m.compact(&mut c));
        assert_eq!(c, other, "a failed compaction leaves the data alone");
        let (c, dropped) = m.restricted(&c);
        assert_eq!(dropped, 3);
        assert_eq!(c.features, 7);
        assert_eq!(c.labels, other.labels);
        assert_eq!(c.row(0).indices, &[1]);
        assert_eq!(c.row(0).value(0), 4.0);
        assert_eq!(c.row(1).nnz(), 0);
    }
}
