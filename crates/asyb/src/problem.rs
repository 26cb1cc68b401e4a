//! A training problem: the training (and test) data with labels normalized for the loss,
//! and the parameter layout they imply. The one place where a loss meets the data.
//!
//! Label conventions after normalization: binary losses see -1/+1 (files may say -1/+1
//! or 0/1); softmax sees the class index 0..K-1 of the label's rank among the distinct
//! training labels; squared loss sees the raw target.

use std::path::{Path, PathBuf};

use crate::config::{
    compaction_exact, CompactFeatures, IndexBaseSetting, ValidConfig, AUTO_COMPACT_COORDS,
    AUTO_ORDER_NNZ,
};
use crate::data::columns::ColumnMap;
use crate::data::libsvm::{IndexBase, LabelRule, ReadOptions, ReadReport};
use crate::data::Dataset;
use crate::model::loss::{Labels, LossKind};
use crate::model::Layout;
use crate::{Error, Result};

/// Most classes a softmax problem may have: more distinct labels than this are almost
/// surely regression targets given to the wrong loss.
pub const MAX_CLASSES: usize = 1000;

/// Data ready for training.
#[derive(Clone, Debug)]
pub struct Problem {
    pub train: Dataset,
    pub test: Option<Dataset>,
    pub layout: Layout,
    /// Original label of each class index (softmax), or the file's `[negative,
    /// positive]` labels (binary); empty for regression.
    pub class_labels: Vec<f32>,
    pub train_path: PathBuf,
    pub test_path: Option<PathBuf>,
    pub train_report: Option<ReadReport>,
    pub test_report: Option<ReadReport>,
    /// The original feature ids when the data were compacted (`--compact-features`):
    /// `train`, `test` and `layout` then number features `0..used`.
    pub columns: Option<ColumnMap>,
}

/// How the config asks for the training data to be read.
pub(crate) fn read_options(cfg: &ValidConfig) -> ReadOptions {
    let raw = &cfg.raw;
    ReadOptions {
        index_base: match raw.index_base {
            IndexBaseSetting::Auto => IndexBase::Auto,
            IndexBaseSetting::Zero => IndexBase::Zero,
            IndexBaseSetting::One => IndexBase::One,
        },
        features: raw.features,
        skip_bad_lines: raw.skip_bad_lines,
        labels: label_rule(raw.loss),
    }
}

/// Scales the training rows' weights to a mean of 1, so that the objective's mean
/// over rows is the weighted mean loss `sum_i w_i loss_i / sum_i w_i`; drops them when
/// they are all equal (every row then weighs the same). Fails when they sum to 0.
fn normalize_weights(train: &mut Dataset, path: &Path) -> Result<()> {
    let Some(w) = train.weights.as_mut() else {
        return Ok(());
    };
    let sum: f64 = w.iter().map(|&x| f64::from(x)).sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return Err(Error::Data {
            path: path.into(),
            reason: format!("the row weights sum to {sum}: some must be positive"),
        });
    }
    if w.iter().all(|&x| x == w[0]) {
        train.weights = None;
        return Ok(());
    }
    let scale = w.len() as f64 / sum;
    for x in w.make_mut().iter_mut() {
        *x = (f64::from(*x) * scale) as f32;
    }
    Ok(())
}

fn label_rule(loss: LossKind) -> LabelRule {
    match loss.info().labels {
        Labels::Binary => LabelRule::Binary,
        Labels::Real | Labels::Classes => LabelRule::Any,
    }
}

impl Problem {
    /// Reads the files named by the config.
    pub fn load(cfg: &ValidConfig) -> Result<Problem> {
        let raw = &cfg.raw;
        let (mut train, train_report, columns) = Problem::read_train(cfg)?;
        if let Some(p) = &raw.weights {
            train.weights = Some(crate::data::read_weights(p, train.rows())?);
        }
        let train_path = raw.train.clone().expect("read_train checked it");
        let opts = read_options(cfg);
        let (test, test_report) = match &raw.test {
            Some(p) => {
                // A test set may name features the training set never saw: they get no
                // weight, so the test file is read without a feature bound.
                let topts = ReadOptions {
                    features: None,
                    ..opts
                };
                let (ds, rep) =
                    crate::data::read_following(p, &topts, train_report.index_base_one)?;
                (Some(ds), Some(rep))
            }
            None => (None, None),
        };
        let mut pb =
            Problem::from_renumbered(cfg, train, columns, &train_path, test, raw.test.as_deref())?;
        pb.train_report = Some(train_report);
        pb.test_report = test_report;
        Ok(pb)
    }

    /// Reads the training file named by the config as it is: no label normalization, no
    /// renumbering of features ([`Problem::from_renumbered`] does those), except that a
    /// cache's stored renumbering is kept (the rows in its ids, and the map).
    pub fn read_train(cfg: &ValidConfig) -> Result<(Dataset, ReadReport, Option<ColumnMap>)> {
        let train_path = cfg
            .raw
            .train
            .as_ref()
            .ok_or_else(|| Error::config("train", "no training data given"))?;
        crate::data::read_renumbered(train_path, &read_options(cfg))
    }

    /// Builds a problem from datasets already in memory (generated data, tests).
    pub fn from_datasets(
        cfg: &ValidConfig,
        train: Dataset,
        train_path: &Path,
        test: Option<Dataset>,
        test_path: Option<&Path>,
    ) -> Result<Problem> {
        Problem::from_renumbered(cfg, train, None, train_path, test, test_path)
    }

    /// [`Problem::from_datasets`] for training rows in renumbered feature ids with their
    /// map to the original ones (`columns`, as a cache stores them; `None`: the rows are
    /// in original ids). The map is used as the problem's own when the config compacts
    /// features (it is the one compaction would compute); otherwise the rows are
    /// renumbered back.
    pub fn from_renumbered(
        cfg: &ValidConfig,
        mut train: Dataset,
        mut columns: Option<ColumnMap>,
        train_path: &Path,
        mut test: Option<Dataset>,
        test_path: Option<&Path>,
    ) -> Result<Problem> {
        let raw = &cfg.raw;
        if train.rows() == 0 {
            return Err(Error::Data {
                path: train_path.into(),
                reason: "no data rows".into(),
            });
        }
        normalize_weights(&mut train, train_path)?;
        let features = raw.features.unwrap_or(match &columns {
            Some(m) => m.features,
            None => train.features,
        });
        if features == 0 {
            return Err(Error::Data {
                path: train_path.into(),
                reason: "no features".into(),
            });
        }
        if features >= u32::MAX as usize {
            return Err(Error::Data {
                path: train_path.into(),
                reason: format!(
                    "{features} features: at most {} are supported (32-bit feature ids)",
                    u32::MAX - 1
                ),
            });
        }
        match columns.as_mut() {
            Some(m) => {
                if let Some(&f) = m.ids().iter().find(|&&f| f as usize >= features) {
                    return Err(Error::Data {
                        path: train_path.into(),
                        reason: format!("feature id {f} is out of range for {features} features"),
                    });
                }
                m.features = features;
            }
            None => train.features = features,
        }
        let (classes, class_labels) = match raw.loss.info().labels {
            Labels::Binary => {
                let labels = binary_labels(&train);
                normalize_binary(&mut train);
                if let Some(t) = test.as_mut() {
                    normalize_binary(t);
                }
                (1, labels)
            }
            Labels::Real => (1, Vec::new()),
            Labels::Classes => {
                let mut distinct: Vec<f32> = train.labels.to_vec();
                distinct.sort_by(f32::total_cmp);
                distinct.dedup();
                if distinct.len() > MAX_CLASSES {
                    return Err(Error::Data {
                        path: train_path.into(),
                        reason: format!(
                            "{} distinct labels: softmax takes at most {MAX_CLASSES} classes (regression data? try --loss squared)",
                            distinct.len()
                        ),
                    });
                }
                to_class_index(&mut train, &distinct, train_path)?;
                if let (Some(t), Some(p)) = (test.as_mut(), test_path) {
                    to_class_index(t, &distinct, p)?;
                }
                (distinct.len().max(2), distinct)
            }
        };
        let columns =
            compact(cfg, &mut train, columns, test.as_mut(), classes).map_err(|reason| {
                Error::Data {
                    path: train_path.into(),
                    reason,
                }
            })?;
        if cfg.workers > train.rows() {
            return Err(Error::config(
                "workers",
                format!(
                    "{} workers for {} rows: at most one worker per row",
                    cfg.workers,
                    train.rows()
                ),
            ));
        }
        // The readers' and the compaction's freed buffers.
        crate::alloc::release_free_memory();
        Ok(Problem {
            layout: Layout {
                features: train.features,
                classes,
                bias: raw.bias,
            },
            train,
            test,
            class_labels,
            train_path: train_path.into(),
            test_path: test_path.map(Into::into),
            train_report: None,
            test_report: None,
            columns,
        })
    }
}

/// Compacts the feature ids of `train` (and `test`) when the config asks for it; see
/// [`CompactFeatures`]. `stored`: the rows of `train` are already renumbered by this
/// map (a cache's), which is kept if compaction applies, else undone.
fn compact(
    cfg: &ValidConfig,
    train: &mut Dataset,
    stored: Option<ColumnMap>,
    test: Option<&mut Dataset>,
    classes: usize,
) -> std::result::Result<Option<ColumnMap>, String> {
    let raw = &cfg.raw;
    let setting = raw.compact_features;
    let features = stored.as_ref().map_or(train.features, |m| m.features);
    // The config check refused the runs that compaction would change with `on`.
    let exact = compaction_exact(raw).is_none();
    let nnz = train.nnz();
    let wanted = compaction_wanted(setting, exact, features, classes, nnz);
    let worth = |map: &ColumnMap| compaction_worth(setting, features, classes, nnz, map.used());
    let map = match stored {
        Some(map) if wanted && worth(&map) => {
            // Training reads random rows: out of the mapping's 4 KiB pages they were
            // 5-14% slower than from memory advised for huge pages (docs/performance.md),
            // and the copy costs a twentieth of the renumbering it replaces.
            train.indices.make_mut();
            map
        }
        Some(map) => {
            if !map.expand(train) {
                return Err("a feature id beyond the feature map".into());
            }
            return Ok(None);
        }
        None if !wanted => return Ok(None),
        None => {
            let map = ColumnMap::by_frequency(train);
            if !worth(&map) {
                return Ok(None);
            }
            let compacted = map.compact(train);
            debug_assert!(compacted, "the map was built from these rows");
            map
        }
    };
    if let Some(t) = test {
        *t = map.restricted(t).0;
    }
    Ok(Some(map))
}

/// Whether `setting` compacts data of `features` original ids (`classes` outputs each)
/// and `nnz` nonzeros; `exact`: compaction does not change the problem.
fn compaction_wanted(
    setting: CompactFeatures,
    exact: bool,
    features: usize,
    classes: usize,
    nnz: usize,
) -> bool {
    match setting {
        CompactFeatures::Off => false,
        CompactFeatures::On => true,
        CompactFeatures::Auto => {
            exact && (nnz >= AUTO_ORDER_NNZ || oversized(features, classes, nnz))
        }
    }
}

/// Whether a dense model of `features` ids (`classes` outputs each) is too large for
/// data of `nnz` nonzeros: above [`AUTO_COMPACT_COORDS`] coordinates, or with more
/// coordinates than the data has nonzeros (hashed text of a few thousand documents in
/// 2^20 columns), where every pass over the model (the snapshot's gradient, the
/// evaluation's prox-gradient mapping) would cost more than a pass over the data.
fn oversized(features: usize, classes: usize, nnz: usize) -> bool {
    let coords = features.saturating_mul(classes);
    coords > AUTO_COMPACT_COORDS || coords > nnz
}

/// Whether a compaction that `setting` wants, of `features` ids to `used`, is kept. Rows
/// without features leave nothing to compact (the intercept alone is trained). With
/// `auto`, a model compacted for its size ([`oversized`]) with most features used is
/// left as it is: compaction would save little of it (the memory check judges a huge
/// one).
fn compaction_worth(
    setting: CompactFeatures,
    features: usize,
    classes: usize,
    nnz: usize,
    used: usize,
) -> bool {
    let for_size = oversized(features, classes, nnz);
    used > 0 && !(setting == CompactFeatures::Auto && for_size && used * 2 > features)
}

/// The renumbering `asyb convert` stores in a cache under `setting` (`auto`: where a
/// training run's default compaction, for one output, would apply): `ds` renumbered
/// by frequency ([`ColumnMap::by_frequency`], the map a training run computes) and the
/// map, or `None` with `ds` unchanged. A run that compacts uses the stored rows as
/// they are; one that does not renumbers them back ([`Problem::from_renumbered`]).
pub fn renumber_for_cache(ds: &mut Dataset, setting: CompactFeatures) -> Option<ColumnMap> {
    if !compaction_wanted(setting, true, ds.features, 1, ds.nnz()) {
        return None;
    }
    let map = ColumnMap::by_frequency(ds);
    if !compaction_worth(setting, ds.features, 1, ds.nnz(), map.used()) {
        return None;
    }
    map.compact(ds).then_some(map)
}

/// The file's own names for the two classes: 0/1 or -1/+1.
fn binary_labels(ds: &Dataset) -> Vec<f32> {
    if ds.labels.contains(&0.0) {
        vec![0.0, 1.0]
    } else {
        vec![-1.0, 1.0]
    }
}

pub(crate) fn normalize_binary(ds: &mut Dataset) {
    for y in &mut ds.labels {
        *y = if *y > 0.0 { 1.0 } else { -1.0 };
    }
}

fn to_class_index(ds: &mut Dataset, distinct: &[f32], path: &Path) -> Result<()> {
    for (i, y) in ds.labels.iter_mut().enumerate() {
        match distinct.binary_search_by(|v| v.total_cmp(y)) {
            Ok(c) => *y = c as f32,
            Err(_) => {
                return Err(Error::Data {
                    path: path.into(),
                    reason: format!(
                        "row {}: label {y} does not occur in the training data",
                        i + 1
                    ),
                })
            }
        }
    }
    Ok(())
}
