//! Feature-id compaction: a dataset whose feature ids are spread over a huge space (hashed
//! click-through features, `--features 1073741824`) or ordered without regard to how
//! often they occur is renumbered to the used ids `0..u`, so that the parameter server
//! holds `u` coordinates instead of `d`, and, in frequency order, the features most rows
//! share sit together in memory.
//!
//! The renumbering is exact for every regularizer whose prox keeps 0 at 0 (none, L1, L2,
//! elastic net, non-negativity, a box that contains 0): a feature that occurs in no
//! training row has a zero gradient, so its weight stays at 0 on every iterate and at
//! the optimum; the order of the others does not change a separable problem. [`ColumnMap`]
//! keeps the original ids so that model files, test data and warm starts speak of the
//! original features.
//!
//! Why frequency order: a minibatch reads the weights of random rows, and on hashed
//! click-through data the thousand most frequent of a million features hold half of all
//! nonzeros. Numbered first, they share cache lines and pages, so most reads of a pull,
//! of a snapshot and of an evaluation hit the cache (docs/performance.md).

use super::{threads, Dataset};

/// The used feature ids of a dataset: compact id `c` is original feature `ids()[c]`.
///
/// Only the ids are kept while training (4 bytes per used feature): the inverse map, from
/// original to compact ids, is built by [`ColumnMap::lookup`] where it is needed (test
/// data, warm starts, model files), before or after training.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMap {
    /// Number of original features d.
    pub features: usize,
    /// Original id of each compact id: distinct, all `< features`.
    ids: Vec<u32>,
    /// Whether `ids` is increasing (compaction keeps each row's order).
    increasing: bool,
}

/// The inverse of a [`ColumnMap`]: original ids to compact ids.
pub struct Lookup<'a> {
    /// The used original ids in increasing order.
    sorted: std::borrow::Cow<'a, [u32]>,
    /// The compact id of each of `sorted`; empty when the map is increasing.
    compact_of_sorted: Vec<u32>,
}

impl Lookup<'_> {
    /// The compact id of the `r`-th smallest used original id.
    #[inline]
    fn compact_of_rank(&self, r: u32) -> u32 {
        if self.compact_of_sorted.is_empty() {
            r
        } else {
            self.compact_of_sorted[r as usize]
        }
    }

    /// Compact id of original feature `f`, if it is used.
    pub fn compact_id(&self, f: u32) -> Option<u32> {
        self.sorted
            .binary_search(&f)
            .ok()
            .map(|r| self.compact_of_rank(r as u32))
    }

    /// `(original id, compact id)` of every used feature, in increasing original id.
    pub fn by_original_id(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.sorted
            .iter()
            .enumerate()
            .map(|(r, &f)| (f, self.compact_of_rank(r as u32)))
    }
}

impl ColumnMap {
    /// The map of the original ids `ids` (strictly increasing, all below `features`) to
    /// `0..ids.len()` in their order; `None` when they are not.
    pub fn increasing(features: usize, ids: Vec<u32>) -> Option<ColumnMap> {
        let valid = ids.windows(2).all(|w| w[0] < w[1])
            && ids.last().map_or(true, |&f| (f as usize) < features);
        valid.then_some(ColumnMap {
            features,
            ids,
            increasing: true,
        })
    }

    /// The map of compact id `c` to original id `ids[c]` as a file recorded it (a
    /// cache's stored renumbering): refused with a reason unless the ids are distinct
    /// and all below `features`.
    pub fn from_ids(features: usize, ids: Vec<u32>) -> std::result::Result<ColumnMap, String> {
        if let Some(&f) = ids.iter().find(|&&f| f as usize >= features) {
            return Err(format!(
                "feature map: original id {f} is out of range for {features} features"
            ));
        }
        let increasing = ids.windows(2).all(|w| w[0] < w[1]);
        if !increasing {
            // Distinct: a bitmap when it is no larger than the ids, else a sorted copy.
            let repeated = if features / 8 <= ids.len() * 4 {
                let mut bits = vec![0u64; features.div_ceil(64)];
                ids.iter().copied().find(|&f| {
                    let (w, b) = (f as usize / 64, 1u64 << (f % 64));
                    let seen = bits[w] & b != 0;
                    bits[w] |= b;
                    seen
                })
            } else {
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
            };
            if let Some(f) = repeated {
                return Err(format!("feature map: original id {f} appears twice"));
            }
        }
        Ok(ColumnMap {
            features,
            ids,
            increasing,
        })
    }

    /// The features of `ds` that occur in at least one row, in increasing order of id.
    pub fn of(ds: &Dataset) -> ColumnMap {
        ColumnMap {
            features: ds.features,
            ids: set_bits(&used_bits(ds)),
            increasing: true,
        }
    }

    /// The features of `ds` that occur in at least one row, the most frequent first
    /// (ties in increasing order of id). Frequencies are counted on every row of data
    /// with up to [`COUNT_SAMPLE_NNZ`] nonzeros, on an even stride of rows holding about
    /// that many otherwise: the order only has to find the features that most rows
    /// share, and a full count of 30M nonzeros would cost a fifth of a second.
    pub fn by_frequency(ds: &Dataset) -> ColumnMap {
        let rank = Ranks::new(used_bits(ds));
        let counts = sampled_counts(ds, &rank);
        let sorted = set_bits(&rank.bits);
        // Ranks by decreasing count, ties by rank (= by id): a counting sort.
        let max = counts.iter().copied().max().unwrap_or(0) as usize;
        let mut start = vec![0u32; max + 2];
        for &c in &counts {
            start[max - c as usize + 1] += 1;
        }
        for k in 1..start.len() {
            start[k] += start[k - 1];
        }
        let mut order = vec![0u32; counts.len()];
        for (r, &c) in counts.iter().enumerate() {
            let slot = &mut start[max - c as usize];
            order[*slot as usize] = r as u32;
            *slot += 1;
        }
        let ids: Vec<u32> = order.iter().map(|&r| sorted[r as usize]).collect();
        ColumnMap {
            features: ds.features,
            increasing: ids.windows(2).all(|w| w[0] < w[1]),
            ids,
        }
    }

    /// Number of used features.
    pub fn used(&self) -> usize {
        self.ids.len()
    }

    /// Original id of each compact id.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The inverse map (a sorted copy of the ids and their compact ids unless the ids
    /// are increasing): built on each call, for the callers that map many ids.
    pub fn lookup(&self) -> Lookup<'_> {
        if self.increasing {
            return Lookup {
                sorted: std::borrow::Cow::Borrowed(&self.ids),
                compact_of_sorted: Vec::new(),
            };
        }
        let mut pairs: Vec<(u32, u32)> = (0..)
            .zip(self.ids.iter().copied())
            .map(|(c, f)| (f, c))
            .collect();
        pairs.sort_unstable();
        Lookup {
            sorted: std::borrow::Cow::Owned(pairs.iter().map(|p| p.0).collect()),
            compact_of_sorted: pairs.iter().map(|p| p.1).collect(),
        }
    }

    /// Renumbers `ds` (the dataset this map was built from, or any dataset whose features
    /// are all in the map) to compact ids, each row's entries sorted again, and sets its
    /// feature count to [`Self::used`]. Rewrites the indices in place when they are not
    /// memory-mapped, on several threads. Returns `false`, leaving `ds` as it was, when a
    /// row holds a feature the map does not have.
    pub fn compact(&self, ds: &mut Dataset) -> bool {
        if self.features <= DENSE_TABLE_MAX {
            let mut table = vec![u32::MAX; self.features];
            for (c, &f) in self.ids.iter().enumerate() {
                table[f as usize] = c as u32;
            }
            self.compact_with(
                ds,
                |f| table.get(f as usize).copied().filter(|&c| c != u32::MAX),
                |c| self.ids[c as usize],
                self.used(),
            )
        } else {
            let mut bits = vec![0u64; self.features.div_ceil(64)];
            for &f in &self.ids {
                bits[f as usize / 64] |= 1 << (f % 64);
            }
            let rank = Ranks::new(bits);
            let lookup = self.lookup();
            self.compact_with(
                ds,
                |f| rank.of(f).map(|r| lookup.compact_of_rank(r)),
                |c| self.ids[c as usize],
                self.used(),
            )
        }
    }

    /// The inverse of [`ColumnMap::compact`]: renumbers `ds`, whose feature ids are
    /// this map's compact ids, back to the original ids, each row's entries sorted again,
    /// and sets its feature count to the original one. Returns `false`, leaving `ds` as
    /// it was, when a row holds an id beyond [`Self::used`].
    pub fn expand(&self, ds: &mut Dataset) -> bool {
        // Checked first, so that the renumbering cannot stop half way (putting rows back
        // would need the inverse of the map).
        if ds.indices.iter().any(|&c| c as usize >= self.used()) {
            return false;
        }
        self.compact_with(
            ds,
            |c| self.ids.get(c as usize).copied(),
            |f| {
                self.ids
                    .iter()
                    .position(|&o| o == f)
                    .map_or(f, |c| c as u32)
            },
            self.features,
        )
    }

    /// Renumbers every entry of `ds` by `to_new` and sets its feature count to
    /// `features`; where `to_new` has no id for an entry, the rows renumbered so far are
    /// put back with `to_old` and `false` is returned.
    fn compact_with(
        &self,
        ds: &mut Dataset,
        to_new: impl Fn(u32) -> Option<u32> + Sync,
        to_old: impl Fn(u32) -> u32 + Sync,
        features: usize,
    ) -> bool {
        let sort = !self.increasing;
        let rows = ds.rows();
        let indptr = &ds.indptr;
        let indices = ds.indices.make_mut();
        let mut values = ds.values.as_mut().map(|v| v.make_mut().as_mut_slice());
        // The rows in pieces of about equal nonzeros, one thread each; each renumbers and
        // sorts its rows and stops at the first row with a feature the map lacks.
        let pieces = row_pieces(indptr, rows);
        let stopped: Vec<Option<usize>> = std::thread::scope(|sc| {
            let (mut idx, mut val): (&mut [u32], Option<&mut [f32]>) =
                (indices.as_mut_slice(), values.as_deref_mut());
            let mut handles = Vec::new();
            for w in pieces.windows(2) {
                let (lo, hi) = (w[0], w[1]);
                let len = indptr[hi] - indptr[lo];
                let (piece, rest) = std::mem::take(&mut idx).split_at_mut(len);
                idx = rest;
                let mut vpiece = match val.take() {
                    Some(v) => {
                        let (p, r) = v.split_at_mut(len);
                        val = Some(r);
                        Some(p)
                    }
                    None => None,
                };
                let base = indptr[lo];
                let (to_new, to_old) = (&to_new, &to_old);
                handles.push(sc.spawn(move || {
                    let mut pairs = Vec::new();
                    for r in lo..hi {
                        let (a, b) = (indptr[r] - base, indptr[r + 1] - base);
                        let row = &mut piece[a..b];
                        for k in 0..row.len() {
                            match to_new(row[k]) {
                                Some(c) => row[k] = c,
                                None => {
                                    for f in &mut row[..k] {
                                        *f = to_old(*f);
                                    }
                                    return Some(r);
                                }
                            }
                        }
                        if sort {
                            sort_row(row, vpiece.as_deref_mut().map(|v| &mut v[a..b]), &mut pairs);
                        }
                    }
                    None
                }));
            }
            handles
                .into_iter()
                .map(|h| h.join().expect("compaction thread"))
                .collect()
        });
        if stopped.iter().all(Option::is_none) {
            ds.features = features;
            return true;
        }
        // Put back the rows renumbered before the stop: original ids, sorted again.
        let mut pairs = Vec::new();
        for (w, stop) in pieces.windows(2).zip(stopped) {
            for r in w[0]..stop.unwrap_or(w[1]) {
                let (a, b) = (indptr[r], indptr[r + 1]);
                let row = &mut indices[a..b];
                for f in row.iter_mut() {
                    *f = to_old(*f);
                }
                sort_row(row, values.as_deref_mut().map(|v| &mut v[a..b]), &mut pairs);
            }
        }
        false
    }

    /// `ds` renumbered to compact ids, without the entries of features the map does not
    /// have (a test row's features that no training row has get no weight anyway), and
    /// the number of entries dropped.
    pub fn restricted(&self, ds: &Dataset) -> (Dataset, usize) {
        let mut indptr = Vec::with_capacity(ds.indptr.len());
        let mut indices = Vec::with_capacity(ds.indices.len());
        let mut values = ds.values.as_ref().map(|v| Vec::with_capacity(v.len()));
        let lookup = self.lookup();
        indptr.push(0);
        for i in 0..ds.rows() {
            let row = ds.row(i);
            for k in 0..row.nnz() {
                if let Some(c) = lookup.compact_id(row.indices[k]) {
                    indices.push(c);
                    if let Some(v) = values.as_mut() {
                        v.push(row.value(k));
                    }
                }
            }
            indptr.push(indices.len());
        }
        let dropped = ds.nnz() - indices.len();
        let mut out = Dataset {
            indptr: indptr.into(),
            indices: indices.into(),
            values: values.map(Into::into),
            labels: ds.labels.clone(),
            weights: ds.weights.clone(),
            features: self.used(),
        };
        if !self.increasing {
            let indptr = &out.indptr;
            let indices = out.indices.make_mut();
            let values = out.values.as_mut().map(|v| v.make_mut().as_mut_slice());
            sort_rows(indptr, 0, indices, values);
        }
        (out, dropped)
    }
}

/// The rank of a feature among the set bits of a bitmap: the count of set bits before
/// its 64-bit word plus those below it within the word.
struct Ranks {
    bits: Vec<u64>,
    before: Vec<u32>,
}

impl Ranks {
    fn new(bits: Vec<u64>) -> Ranks {
        let mut before = Vec::with_capacity(bits.len() + 1);
        let mut acc = 0u32;
        for &w in &bits {
            before.push(acc);
            acc += w.count_ones();
        }
        before.push(acc);
        Ranks { bits, before }
    }

    /// Number of set bits.
    fn used(&self) -> usize {
        self.before.last().map_or(0, |&n| n as usize)
    }

    /// The rank of `f`, if its bit is set.
    #[inline]
    fn of(&self, f: u32) -> Option<u32> {
        let (k, b) = (f as usize / 64, f % 64);
        match self.bits.get(k) {
            Some(&w) if w >> b & 1 == 1 => {
                Some(self.before[k] + (w & ((1u64 << b) - 1)).count_ones())
            }
            _ => None,
        }
    }
}

/// The positions of the set bits, in increasing order.
fn set_bits(bits: &[u64]) -> Vec<u32> {
    let mut ids = Vec::with_capacity(bits.iter().map(|w| w.count_ones() as usize).sum());
    for (k, &w) in bits.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            ids.push((k * 64) as u32 + w.trailing_zeros());
            w &= w - 1;
        }
    }
    ids
}

/// Largest feature count for which compaction uses tables of one entry per original
/// feature (4 bytes each) instead of ranks in a bitmap.
const DENSE_TABLE_MAX: usize = 1 << 24;

/// `f` on about equal pieces of `0..n` (at least 2^16 each), one thread each, the results
/// in order.
fn parts<T: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let k = threads().min(n.div_ceil(1 << 16)).max(1);
    crate::par::map_ranges(n, k, f)
}

/// Row boundaries `0 = r0 < r1 < ... = rows` splitting the nonzeros about equally over
/// [`threads`] pieces.
fn row_pieces(indptr: &[usize], rows: usize) -> Vec<usize> {
    let k = threads().min(rows.div_ceil(1 << 14)).max(1);
    let nnz = indptr[rows];
    let mut cuts = vec![0];
    for p in 1..k {
        let target = nnz * p / k;
        let r = indptr[..=rows].partition_point(|&a| a < target).min(rows);
        if r > *cuts.last().unwrap() {
            cuts.push(r);
        }
    }
    if rows > 0 {
        cuts.push(rows);
    }
    cuts
}

/// Nonzeros up to which [`ColumnMap::by_frequency`] counts every row.
pub const COUNT_SAMPLE_NNZ: usize = 1 << 22;

/// How often each used feature (by rank) occurs in the rows `0, s, 2s, ...` where the
/// stride `s` keeps about [`COUNT_SAMPLE_NNZ`] nonzeros.
fn sampled_counts(ds: &Dataset, rank: &Ranks) -> Vec<u32> {
    let stride = (ds.nnz() / COUNT_SAMPLE_NNZ).max(1);
    let sampled = ds.rows().div_ceil(stride);
    let len = rank.used();
    let mut parts = parts(sampled, |r| {
        let mut c = vec![0u32; len];
        for j in r {
            for &f in ds.row(j * stride).indices {
                if let Some(i) = rank.of(f) {
                    c[i as usize] = c[i as usize].saturating_add(1);
                }
            }
        }
        c
    })
    .into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0; len]);
    for p in parts {
        for (t, c) in total.iter_mut().zip(p) {
            *t = t.saturating_add(c);
        }
    }
    total
}

/// Sorts the entries of every row by feature (with their values): `indptr` holds the
/// rows' bounds, `indices` and `values` start at entry `base`.
fn sort_rows(indptr: &[usize], base: usize, indices: &mut [u32], mut values: Option<&mut [f32]>) {
    let mut pairs = Vec::new();
    for w in indptr.windows(2) {
        let (a, b) = (w[0] - base, w[1] - base);
        sort_row(
            &mut indices[a..b],
            values.as_deref_mut().map(|v| &mut v[a..b]),
            &mut pairs,
        );
    }
}

/// Sorts one row's entries by feature (with their values; `pairs` is scratch).
fn sort_row(indices: &mut [u32], values: Option<&mut [f32]>, pairs: &mut Vec<(u32, f32)>) {
    match values {
        None => sort_short(indices),
        Some(values) => {
            pairs.clear();
            pairs.extend(indices.iter().copied().zip(values.iter().copied()));
            pairs.sort_unstable_by_key(|e| e.0);
            for (k, (f, v)) in pairs.iter().enumerate() {
                indices[k] = *f;
                values[k] = *v;
            }
        }
    }
}

/// Sorts a row's distinct feature ids in place. Short rows are ranked without branches
/// (each id's place is the count of smaller ids: a few vector compares per id, where an
/// insertion sort mispredicts once per id); long ones go to the library sort.
fn sort_short(v: &mut [u32]) {
    // Padded with ids that are never smaller, so the counts run over a fixed length.
    const SHORT: usize = 16;
    if v.len() > SHORT {
        v.sort_unstable();
        return;
    }
    let mut buf = [u32::MAX; SHORT];
    buf[..v.len()].copy_from_slice(v);
    for &x in &buf[..v.len()] {
        let rank = buf.iter().map(|&y| u32::from(y < x)).sum::<u32>();
        v[rank as usize] = x;
    }
}

/// One bit per feature of `ds`, set where a row uses it.
fn used_bits(ds: &Dataset) -> Vec<u64> {
    let words = ds.features.div_ceil(64);
    // One bitmap per thread, up to 2^26 features (8 MB each); one thread above.
    let n = if words <= 1 << 20 { ds.nnz() } else { 0 };
    let mut parts = parts(n, |r| {
        let mut bits = vec![0u64; words];
        for &f in &ds.indices[r] {
            if let Some(w) = bits.get_mut(f as usize / 64) {
                *w |= 1 << (f % 64);
            }
        }
        bits
    })
    .into_iter();
    let mut bits = parts.next().unwrap_or_else(|| vec![0; words]);
    for p in parts {
        for (b, w) in bits.iter_mut().zip(p) {
            *b |= w;
        }
    }
    if n == 0 {
        for &f in ds.indices.iter() {
            if let Some(w) = bits.get_mut(f as usize / 64) {
                *w |= 1 << (f % 64);
            }
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
        assert_eq!(m.ids(), [0, 3, 63, 64, 70, 1_000_000, 1_048_575]);
        assert_eq!(m.features, 1 << 20);
        assert_eq!(m.lookup().compact_id(70), Some(4));
        assert_eq!(m.lookup().compact_id(71), None);
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
            assert_eq!(m.ids()[cid as usize], ds.indices[k]);
        }
        // restricted() gives the same answer when nothing is dropped.
        assert_eq!(m.restricted(&ds), (c, 0));
    }

    /// Every `step`-th row of `c` (`ds` compacted by `m`) is sorted and holds the same
    /// entries as in `ds` once mapped back to original ids.
    fn same_rows(m: &ColumnMap, ds: &Dataset, c: &Dataset, step: usize) {
        for i in (0..ds.rows()).step_by(step) {
            let row = c.row(i);
            assert!(row.indices.windows(2).all(|w| w[0] < w[1]), "row {i}");
            let mut back: Vec<(u32, f32)> =
                row.iter().map(|(f, v)| (m.ids()[f as usize], v)).collect();
            back.sort_by_key(|e| e.0);
            assert_eq!(back, ds.row(i).iter().collect::<Vec<_>>(), "row {i}");
        }
    }

    #[test]
    fn frequency_order_puts_the_most_used_features_first() {
        let ds = Dataset::from_rows(
            1 << 20,
            &[
                (1.0, vec![(3, 1.0), (70, 2.0), (1_000_000, 0.5)]),
                (0.0, vec![(0, 1.5), (70, 1.0), (1_000_000, 4.0)]),
                (1.0, vec![(70, 3.0)]),
                (0.0, vec![(63, 1.0), (64, 1.0), (1_000_000, 3.0)]),
            ],
        );
        let m = ColumnMap::by_frequency(&ds);
        // 70 and 1_000_000 three times, the others once; ties by id.
        assert_eq!(m.ids(), [70, 1_000_000, 0, 3, 63, 64]);
        assert_eq!(m.lookup().compact_id(1_000_000), Some(1));
        assert_eq!(m.lookup().compact_id(63), Some(4));
        assert_eq!(m.lookup().compact_id(71), None);
        let pairs: Vec<_> = m.lookup().by_original_id().collect();
        assert_eq!(
            pairs,
            [(0, 2), (3, 3), (63, 4), (64, 5), (70, 0), (1_000_000, 1)]
        );

        let mut c = ds.clone();
        assert!(m.compact(&mut c));
        assert_eq!(c.features, 6);
        assert_eq!(c.indptr, ds.indptr);
        // Every row sorted again, each value still with its feature (brute force).
        same_rows(&m, &ds, &c, 1);
        assert_eq!(c.row(0).indices, [0, 1, 3]);
        assert_eq!(m.restricted(&ds), (c, 0));

        // A feature the map lacks leaves the data as it was.
        let other = Dataset::from_rows(1 << 20, &[(1.0, vec![(70, 1.0)]), (0.0, vec![(5, 1.0)])]);
        let mut o = other.clone();
        assert!(!m.compact(&mut o));
        assert_eq!(o, other);
    }

    #[test]
    fn short_rows_sort_like_the_library_sort() {
        let mut state = 0x9e37_79b9_u64;
        for len in 0..40 {
            for _ in 0..50 {
                let mut v: Vec<u32> = Vec::new();
                while v.len() < len {
                    state = crate::ps::blocks::splitmix64(state);
                    // Small ids collide often: keep them distinct, as in a row.
                    let f = match len % 3 {
                        0 => state as u32,
                        1 => (state % 64) as u32,
                        // The padding's value may be an id too.
                        _ => u32::MAX - (state % 48) as u32,
                    };
                    if !v.contains(&f) {
                        v.push(f);
                    }
                }
                let mut want = v.clone();
                want.sort_unstable();
                sort_short(&mut v);
                assert_eq!(v, want);
            }
        }
    }

    /// Many rows (several threads' pieces), with values: renumbered in frequency order
    /// they hold the same entries; with one unknown feature in the last row the data is
    /// left exactly as it was.
    #[test]
    fn large_compactions_keep_entries_or_leave_the_data_alone() {
        let mut rows = Vec::new();
        let mut state = 7u64;
        for i in 0..60_000u32 {
            let mut row: Vec<(u32, f32)> = Vec::new();
            for k in 0..6u32 {
                state = crate::ps::blocks::splitmix64(state);
                // Skewed: small ids are frequent.
                let f = (state % 1000) as u32 * (state >> 60) as u32 + k;
                if !row.iter().any(|e| e.0 == f) {
                    row.push((f, (i % 7) as f32 + k as f32));
                }
            }
            row.sort_by_key(|e| e.0);
            rows.push((1.0, row));
        }
        let ds = Dataset::from_rows(1 << 16, &rows);
        let m = ColumnMap::by_frequency(&ds);
        let mut c = ds.clone();
        assert!(m.compact(&mut c));
        same_rows(&m, &ds, &c, 97);
        assert_eq!(m.restricted(&ds), (c.clone(), 0));

        let mut foreign_rows = rows.clone();
        foreign_rows.last_mut().unwrap().1.push((65_000, 1.0));
        let foreign = Dataset::from_rows(1 << 16, &foreign_rows);
        let mut f = foreign.clone();
        assert!(!m.compact(&mut f));
        assert_eq!(f, foreign);

        // Expanded back, the compacted rows are the original ones, values with them.
        let mut back = c.clone();
        assert!(m.expand(&mut back));
        assert_eq!(back, ds);
        // An id beyond the map leaves the rows alone.
        let mut beyond = c.clone();
        let last = beyond.indices.len() - 1;
        beyond.indices[last] = m.used() as u32;
        let kept = beyond.clone();
        assert!(!m.expand(&mut beyond));
        assert_eq!(beyond, kept);
    }

    #[test]
    fn stored_maps_are_checked_for_range_and_repeats() {
        // Both checks for repeats: a bitmap (few features) and a sorted copy (many).
        for features in [100, 1 << 30] {
            let m = ColumnMap::from_ids(features, vec![7, 3, 99, 0]).unwrap();
            assert_eq!(m.ids(), [7, 3, 99, 0]);
            assert_eq!(m.lookup().compact_id(99), Some(2));
            let e = ColumnMap::from_ids(features, vec![7, 3, 99, 3]).unwrap_err();
            assert!(e.contains("original id 3 appears twice"), "{e}");
        }
        let e = ColumnMap::from_ids(99, vec![7, 99]).unwrap_err();
        assert!(
            e.contains("original id 99 is out of range for 99 features"),
            "{e}"
        );
        let inc = ColumnMap::from_ids(10, vec![1, 4, 9]).unwrap();
        assert_eq!(inc, ColumnMap::increasing(10, vec![1, 4, 9]).unwrap());
        let mut ds = data();
        let by_freq = ColumnMap::by_frequency(&ds);
        let stored = ColumnMap::from_ids(ds.features, by_freq.ids().to_vec()).unwrap();
        assert_eq!(stored, by_freq);
        assert!(stored.compact(&mut ds));
    }

    #[test]
    fn increasing_maps_refuse_other_orders() {
        assert!(ColumnMap::increasing(10, vec![1, 4, 9]).is_some());
        assert!(ColumnMap::increasing(10, vec![]).is_some());
        assert!(ColumnMap::increasing(10, vec![4, 1]).is_none());
        assert!(ColumnMap::increasing(10, vec![1, 1]).is_none());
        assert!(ColumnMap::increasing(10, vec![1, 10]).is_none());
        let m = ColumnMap::increasing(10, vec![1, 4, 9]).unwrap();
        assert_eq!(
            m,
            ColumnMap::of(&Dataset::from_rows(
                10,
                &[(1.0, vec![(1, 1.0), (4, 1.0), (9, 1.0)])]
            ))
        );
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
