//! Synthetic datasets with a planted sparse model, for tests, benchmarks and demos:
//! CTR-like binary data (hashed categorical fields with Zipf-distributed values and a
//! planted sparse logistic model) and sparse linear regression. Owns the generative
//! models and their seeds; knows nothing of training. Everything is a deterministic
//! function of the spec: the same `model_seed` gives the same planted model and hashing
//! whatever `seed` draws the rows, so train and test files can be made apart.
//!
//! CTR: row i has, for each field f < F, a value v ~ Zipf(values_per_field, s) (rank 1 is
//! the most frequent) in column h(model_seed, f, v) of d, stored with value 1; columns
//! that collide within a row are kept once. The label is y ~ Bernoulli(sigmoid(b + w.x))
//! where w is sparse: the `PLANTED_VALUES_PER_FIELD` most frequent values of each field
//! carry a weight ~ N(0, 1) (summed when their columns collide), and b makes the expected
//! positive rate `positive_rate` on a fixed calibration sample.
//!
//! Regression: y = w.x + noise * N(0, 1), w with `support` weights ~ N(0, 1) on random
//! features, x with `nnz_per_row` distinct random features with values ~ N(0, 1).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::libsvm::{format_row, WRITE_CHUNK_BYTES};
use crate::data::Dataset;
use crate::io::{atomic_write, io_err};
use crate::{Error, Result};

/// Values of each field, by frequency rank, that carry a planted weight.
pub const PLANTED_VALUES_PER_FIELD: usize = 200;

/// Rows drawn (from `model_seed`) to calibrate the intercept. Large enough that the
/// sampling error of the positive rate (about 0.003 at 0.17) is well below what tests
/// and users notice.
const CALIBRATION_ROWS: usize = 20_000;

/// Stream tags: the model's random streams must differ from the rows' even when
/// `seed == model_seed`.
const TAG_WEIGHTS: u64 = 0x7765_6967_6874_7321;
const TAG_CALIBRATION: u64 = 0x6361_6c69_6272_6174;

/// A CTR-like dataset. See the module doc for the generative model.
#[derive(Clone, Debug, PartialEq)]
pub struct CtrSpec {
    pub rows: usize,
    /// Number of hashed columns d.
    pub features: usize,
    /// Categorical fields F (active features per row, before collisions).
    pub fields: usize,
    /// Distinct values of each field.
    pub values_per_field: usize,
    /// Zipf exponent of the value frequencies.
    pub zipf_s: f64,
    /// Expected fraction of label-1 rows.
    pub positive_rate: f64,
    /// Seed of the rows.
    pub seed: u64,
    /// Seed of the planted model and of the hashing.
    pub model_seed: u64,
}

impl Default for CtrSpec {
    fn default() -> Self {
        CtrSpec {
            rows: 100_000,
            features: 1 << 20,
            fields: 15,
            values_per_field: 100_000,
            zipf_s: 1.1,
            positive_rate: 0.17,
            seed: 1,
            model_seed: 42,
        }
    }
}

/// Rejects a feature count that 32-bit feature ids cannot number (or zero).
fn check_features(features: usize) -> Result<()> {
    if features == 0 || features as u64 > u64::from(u32::MAX) + 1 {
        return Err(Error::config("features", "must be in 1..=2^32"));
    }
    Ok(())
}

impl CtrSpec {
    /// Rejects specs the generator cannot honour, naming the field.
    pub fn check(&self) -> Result<()> {
        check_features(self.features)?;
        if self.fields == 0 {
            return Err(Error::config("fields", "must be at least 1"));
        }
        if self.values_per_field == 0 {
            return Err(Error::config("values_per_field", "must be at least 1"));
        }
        if !(self.zipf_s.is_finite() && self.zipf_s >= 0.0) {
            return Err(Error::config("zipf_s", "must be a finite number >= 0"));
        }
        if !(self.positive_rate > 0.0 && self.positive_rate < 1.0) {
            return Err(Error::config(
                "positive_rate",
                "must be strictly between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// A sparse linear regression dataset. See the module doc for the generative model.
#[derive(Clone, Debug, PartialEq)]
pub struct RegressionSpec {
    pub rows: usize,
    pub features: usize,
    /// Distinct features per row.
    pub nnz_per_row: usize,
    /// Nonzero weights of the planted model.
    pub support: usize,
    /// Standard deviation of the label noise.
    pub noise: f64,
    /// Seed of the rows.
    pub seed: u64,
    /// Seed of the planted model.
    pub model_seed: u64,
}

impl Default for RegressionSpec {
    fn default() -> Self {
        RegressionSpec {
            rows: 10_000,
            features: 1000,
            nnz_per_row: 20,
            support: 50,
            noise: 0.1,
            seed: 1,
            model_seed: 42,
        }
    }
}

impl RegressionSpec {
    /// Rejects specs the generator cannot honour, naming the field.
    pub fn check(&self) -> Result<()> {
        check_features(self.features)?;
        if self.nnz_per_row > self.features {
            return Err(Error::config(
                "nnz_per_row",
                format!("must be at most features ({})", self.features),
            ));
        }
        if self.support > self.features {
            return Err(Error::config(
                "support",
                format!("must be at most features ({})", self.features),
            ));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(Error::config("noise", "must be a finite number >= 0"));
        }
        Ok(())
    }
}

/// The splitmix64 finalizer (Steele, Lea & Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): a bijective 64-bit mix whose output bits each depend on
/// every input bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Column of value `v` of field `f`. Chained mixes so that (f, v) pairs never alias
/// before hashing; the multiply-shift maps the hash to [0, d) without modulo bias worth
/// the name.
fn ctr_column(model_seed: u64, field: usize, value: u64, features: usize) -> u32 {
    let h = splitmix64(splitmix64(splitmix64(model_seed) ^ field as u64) ^ value);
    ((u128::from(h) * features as u128) >> 64) as u32
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The planted CTR model: hashing, value distribution, sparse weights by column and the
/// calibrated intercept.
struct CtrModel {
    zipf: Zipf<f64>,
    /// Sorted by column, unique, nonzero.
    weights: Vec<(u32, f64)>,
    intercept: f64,
    fields: usize,
    features: usize,
    model_seed: u64,
}

impl CtrModel {
    /// The model without its intercept (0), enough for the support.
    fn uncalibrated(spec: &CtrSpec) -> Result<Self> {
        spec.check()?;
        let zipf = Zipf::new(spec.values_per_field as f64, spec.zipf_s)
            .map_err(|e| Error::config("zipf_s", e.to_string()))?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.model_seed ^ TAG_WEIGHTS);
        let planted = PLANTED_VALUES_PER_FIELD.min(spec.values_per_field);
        let mut weights = Vec::with_capacity(spec.fields.saturating_mul(planted).min(1 << 20));
        for f in 0..spec.fields {
            for rank in 1..=planted as u64 {
                let w: f64 = rng.sample(StandardNormal);
                weights.push((ctr_column(spec.model_seed, f, rank, spec.features), w));
            }
        }
        weights.sort_by_key(|&(c, _)| c);
        // Columns shared by planted values carry the sum: the model is linear in columns.
        let mut merged: Vec<(u32, f64)> = Vec::with_capacity(weights.len());
        for (c, w) in weights {
            match merged.last_mut() {
                Some((last, acc)) if *last == c => *acc += w,
                _ => merged.push((c, w)),
            }
        }
        merged.retain(|&(_, w)| w != 0.0);
        Ok(CtrModel {
            zipf,
            weights: merged,
            intercept: 0.0,
            fields: spec.fields,
            features: spec.features,
            model_seed: spec.model_seed,
        })
    }

    /// The full model, intercept chosen by bisection so that the mean predicted
    /// probability on a fixed sample is `positive_rate`.
    fn calibrated(spec: &CtrSpec) -> Result<Self> {
        let mut model = Self::uncalibrated(spec)?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.model_seed ^ TAG_CALIBRATION);
        let mut cols = Vec::with_capacity(spec.fields);
        let margins: Vec<f64> = (0..CALIBRATION_ROWS)
            .map(|_| {
                model.draw_columns(&mut rng, &mut cols);
                model.margin(&cols)
            })
            .collect();
        let rate =
            |b: f64| margins.iter().map(|&m| sigmoid(b + m)).sum::<f64>() / margins.len() as f64;
        // The rate is increasing in b; margins are sums of at most F N(0,1) weights, so
        // the root lies well inside this bracket for any sane F.
        let (mut lo, mut hi) = (
            -60.0 - 10.0 * spec.fields as f64,
            60.0 + 10.0 * spec.fields as f64,
        );
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if rate(mid) < spec.positive_rate {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo < 1e-12 {
                break;
            }
        }
        model.intercept = 0.5 * (lo + hi);
        Ok(model)
    }

    /// Fills `cols` with one row's active columns, sorted and unique.
    fn draw_columns(&self, rng: &mut Xoshiro256PlusPlus, cols: &mut Vec<u32>) {
        cols.clear();
        for f in 0..self.fields {
            // Zipf samples are integral floats in [1, n].
            let v = self.zipf.sample(rng) as u64;
            cols.push(ctr_column(self.model_seed, f, v, self.features));
        }
        cols.sort_unstable();
        cols.dedup();
    }

    fn margin(&self, cols: &[u32]) -> f64 {
        cols.iter()
            .filter_map(|c| {
                self.weights
                    .binary_search_by_key(c, |&(k, _)| k)
                    .ok()
                    .and_then(|i| self.weights.get(i))
                    .map(|&(_, w)| w)
            })
            .sum()
    }

    /// Draws one row; returns its label (0 or 1).
    fn draw_row(&self, rng: &mut Xoshiro256PlusPlus, cols: &mut Vec<u32>) -> f32 {
        self.draw_columns(rng, cols);
        let p = sigmoid(self.intercept + self.margin(cols));
        if rng.random::<f64>() < p {
            1.0
        } else {
            0.0
        }
    }
}

/// Reserves room for `n` more elements, reporting an impossible size as a config error
/// rather than aborting the process.
fn try_reserve<T>(v: &mut Vec<T>, n: usize, field: &str) -> Result<()> {
    v.try_reserve_exact(n)
        .map_err(|_| Error::config(field, format!("{n} entries do not fit in memory")))
}

/// Generates a CTR-like dataset in memory (binary values: `values` is `None`).
pub fn ctr(spec: &CtrSpec) -> Result<Dataset> {
    let model = CtrModel::calibrated(spec)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let mut indptr = vec![0];
    let mut labels = Vec::new();
    let mut indices = Vec::new();
    try_reserve(&mut indptr, spec.rows, "rows")?;
    try_reserve(&mut labels, spec.rows, "rows")?;
    try_reserve(&mut indices, spec.rows.saturating_mul(spec.fields), "rows")?;
    let mut cols = Vec::with_capacity(spec.fields);
    for _ in 0..spec.rows {
        let label = model.draw_row(&mut rng, &mut cols);
        indices.extend_from_slice(&cols);
        indptr.push(indices.len());
        labels.push(label);
    }
    Ok(Dataset {
        indptr: indptr.into(),
        indices: indices.into(),
        values: None,
        labels: labels.into(),
        weights: None,
        features: spec.features,
    })
}

/// Writes the dataset [`ctr`] would build as LIBSVM text (byte for byte what
/// [`write_libsvm`](crate::data::libsvm::write_libsvm) writes for it), atomically, one row
/// at a time.
pub fn write_ctr(spec: &CtrSpec, path: &Path) -> Result<()> {
    let model = CtrModel::calibrated(spec)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let mut cols = Vec::with_capacity(spec.fields);
    atomic_write(path, |w| {
        let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES + 4096);
        for _ in 0..spec.rows {
            let label = model.draw_row(&mut rng, &mut cols);
            format_row(&mut out, label, &cols, None);
            if out.len() >= WRITE_CHUNK_BYTES {
                w.write_all(&out).map_err(io_err(path))?;
                out.clear();
            }
        }
        w.write_all(&out).map_err(io_err(path))
    })
}

/// Sorted columns with a nonzero planted weight, to compare a learned model's support
/// against.
pub fn planted_ctr_support(spec: &CtrSpec) -> Result<Vec<u32>> {
    Ok(CtrModel::uncalibrated(spec)?
        .weights
        .iter()
        .map(|&(c, _)| c)
        .collect())
}

/// The planted CTR model: `(column, weight)` sorted by column, and the intercept.
pub fn planted_ctr_model(spec: &CtrSpec) -> Result<(Vec<(u32, f64)>, f64)> {
    let model = CtrModel::calibrated(spec)?;
    Ok((model.weights, model.intercept))
}

/// The planted regression model: `(feature, weight)` sorted by feature.
pub fn planted_regression(spec: &RegressionSpec) -> Result<Vec<(u32, f64)>> {
    spec.check()?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.model_seed ^ TAG_WEIGHTS);
    let mut support = rand::seq::index::sample(&mut rng, spec.features, spec.support).into_vec();
    support.sort_unstable();
    Ok(support
        .into_iter()
        .map(|f| (f as u32, rng.sample::<f64, _>(StandardNormal)))
        .collect())
}

/// Draws one regression row into `cols`/`vals`; returns its label.
fn regression_row(
    spec: &RegressionSpec,
    w: &[(u32, f64)],
    rng: &mut Xoshiro256PlusPlus,
    cols: &mut Vec<u32>,
    vals: &mut Vec<f32>,
) -> f32 {
    cols.clear();
    vals.clear();
    cols.extend(
        rand::seq::index::sample(rng, spec.features, spec.nnz_per_row)
            .iter()
            .map(|f| f as u32),
    );
    cols.sort_unstable();
    let mut y = 0.0f64;
    for &c in cols.iter() {
        let x = rng.sample::<f64, _>(StandardNormal) as f32;
        vals.push(x);
        // The label uses the stored f32 value, so w.x is exact on the data as written.
        if let Ok(i) = w.binary_search_by_key(&c, |&(k, _)| k) {
            if let Some(&(_, wi)) = w.get(i) {
                y += wi * f64::from(x);
            }
        }
    }
    let e: f64 = rng.sample(StandardNormal);
    (y + spec.noise * e) as f32
}

/// Generates a sparse linear regression dataset in memory.
pub fn regression(spec: &RegressionSpec) -> Result<Dataset> {
    let w = planted_regression(spec)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let nnz = spec.rows.saturating_mul(spec.nnz_per_row);
    let mut indices = Vec::new();
    let mut values = Vec::new();
    let mut indptr = vec![0];
    let mut labels = Vec::new();
    try_reserve(&mut indptr, spec.rows, "rows")?;
    try_reserve(&mut labels, spec.rows, "rows")?;
    try_reserve(&mut indices, nnz, "rows")?;
    try_reserve(&mut values, nnz, "rows")?;
    let (mut cols, mut vals) = (Vec::new(), Vec::new());
    for _ in 0..spec.rows {
        let y = regression_row(spec, &w, &mut rng, &mut cols, &mut vals);
        indices.extend_from_slice(&cols);
        values.extend_from_slice(&vals);
        indptr.push(indices.len());
        labels.push(y);
    }
    Ok(Dataset {
        indptr: indptr.into(),
        indices: indices.into(),
        values: Some(values.into()),
        labels: labels.into(),
        weights: None,
        features: spec.features,
    })
}

/// Writes the dataset [`regression`] would build as LIBSVM text, atomically, one row at a
/// time.
pub fn write_regression(spec: &RegressionSpec, path: &Path) -> Result<()> {
    let w = planted_regression(spec)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let (mut cols, mut vals) = (Vec::new(), Vec::new());
    atomic_write(path, |out_w| {
        let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES + 4096);
        for _ in 0..spec.rows {
            let y = regression_row(spec, &w, &mut rng, &mut cols, &mut vals);
            format_row(&mut out, y, &cols, Some(&vals));
            if out.len() >= WRITE_CHUNK_BYTES {
                out_w.write_all(&out).map_err(io_err(path))?;
                out.clear();
            }
        }
        out_w.write_all(&out).map_err(io_err(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CtrSpec {
        CtrSpec {
            rows: 2000,
            features: 1 << 16,
            fields: 6,
            values_per_field: 5000,
            ..CtrSpec::default()
        }
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of the reference splitmix64 generator seeded with 0 are
        // splitmix64(0), splitmix64(0x9e37..), ...
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn columns_depend_on_every_key_part() {
        let c = ctr_column(42, 3, 17, 1 << 20);
        assert!(c < 1 << 20);
        assert_ne!(c, ctr_column(43, 3, 17, 1 << 20));
        assert_ne!(c, ctr_column(42, 4, 17, 1 << 20));
        assert_ne!(c, ctr_column(42, 3, 18, 1 << 20));
        assert_eq!(ctr_column(42, 3, 17, 1), 0);
    }

    #[test]
    fn labels_follow_the_planted_model() {
        let spec = small();
        let model = CtrModel::calibrated(&spec).unwrap();
        let ds = ctr(&spec).unwrap();
        // Mean label ~ mean predicted probability, and rows with high predicted
        // probability are positive more often than rows with low.
        let (mut hi, mut hi_n, mut lo, mut lo_n) = (0.0, 0, 0.0, 0);
        for i in 0..ds.rows() {
            let p = sigmoid(model.intercept + model.margin(ds.row(i).indices));
            if p > 0.3 {
                hi += ds.labels[i] as f64;
                hi_n += 1;
            } else if p < 0.1 {
                lo += ds.labels[i] as f64;
                lo_n += 1;
            }
        }
        assert!(hi_n > 50 && lo_n > 50, "{hi_n} {lo_n}");
        assert!(hi / hi_n as f64 > lo / lo_n as f64 + 0.2);
    }

    #[test]
    fn collisions_sum_weights() {
        // With two columns every planted value collides; the support is at most 2 and
        // the weights are sums.
        let spec = CtrSpec {
            features: 2,
            ..small()
        };
        let model = CtrModel::uncalibrated(&spec).unwrap();
        assert!(model.weights.len() <= 2);
        let total: f64 = model.weights.iter().map(|&(_, w)| w).sum();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.model_seed ^ TAG_WEIGHTS);
        let direct: f64 = (0..spec.fields * PLANTED_VALUES_PER_FIELD)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .sum();
        assert!((total - direct).abs() < 1e-9);
    }

    #[test]
    fn specs_are_checked() {
        for bad in [
            CtrSpec {
                features: 0,
                ..small()
            },
            CtrSpec {
                fields: 0,
                ..small()
            },
            CtrSpec {
                values_per_field: 0,
                ..small()
            },
            CtrSpec {
                zipf_s: f64::NAN,
                ..small()
            },
            CtrSpec {
                zipf_s: -1.0,
                ..small()
            },
            CtrSpec {
                positive_rate: 0.0,
                ..small()
            },
            CtrSpec {
                positive_rate: 1.0,
                ..small()
            },
        ] {
            assert!(matches!(ctr(&bad), Err(Error::Config { .. })), "{bad:?}");
            assert!(planted_ctr_support(&bad).is_err());
        }
        let r = RegressionSpec::default();
        for bad in [
            RegressionSpec {
                features: 0,
                ..r.clone()
            },
            RegressionSpec {
                nnz_per_row: 1001,
                ..r.clone()
            },
            RegressionSpec {
                support: 1001,
                ..r.clone()
            },
            RegressionSpec {
                noise: -0.1,
                ..r.clone()
            },
        ] {
            assert!(
                matches!(regression(&bad), Err(Error::Config { .. })),
                "{bad:?}"
            );
        }
    }
}
