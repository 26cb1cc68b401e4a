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
use crate::model::loss::LossKind;
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

fn label_rule(loss: LossKind) -> LabelRule {
    match loss {
        LossKind::Logistic | LossKind::SquaredHinge => LabelRule::Binary,
        LossKind::Squared | LossKind::Softmax => LabelRule::Any,
    }
}

impl Problem {
    /// Reads the files named by the config.
    pub fn load(cfg: &ValidConfig) -> Result<Problem> {
        let raw = &cfg.raw;
        let (train, train_report) = Problem::read_train(cfg)?;
        let train_path = raw.train.clone().expect("read_train checked it");
        let opts = read_options(cfg);
        let (test, test_report) = match &raw.test {
            Some(p) => {
                // A test set may name features the training set never saw: they get no
                // weight, so the test file is read without a feature bound.
                let topts = ReadOptions {
                    features: None,
                    index_base: if train_report.index_base_one {
                        IndexBase::One
                    } else {
                        IndexBase::Zero
                    },
                    ..opts
                };
                let (ds, rep) = crate::data::read(p, &topts)?;
                (Some(ds), Some(rep))
            }
            None => (None, None),
        };
        let mut pb = Problem::from_datasets(cfg, train, &train_path, test, raw.test.as_deref())?;
        pb.train_report = Some(train_report);
        pb.test_report = test_report;
        Ok(pb)
    }

    /// Reads the training file named by the config as it is: no label normalization, no
    /// renumbering of features ([`Problem::from_datasets`] does those).
    pub fn read_train(cfg: &ValidConfig) -> Result<(Dataset, ReadReport)> {
        let train_path = cfg
            .raw
            .train
            .as_ref()
            .ok_or_else(|| Error::config("train", "no training data given"))?;
        crate::data::read(train_path, &read_options(cfg))
    }

    /// Builds a problem from datasets already in memory (generated data, tests).
    pub fn from_datasets(
        cfg: &ValidConfig,
        mut train: Dataset,
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
        let features = raw.features.unwrap_or(train.features);
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
        train.features = features;
        let (classes, class_labels) = match raw.loss {
            LossKind::Logistic | LossKind::SquaredHinge => {
                let labels = binary_labels(&train);
                normalize_binary(&mut train);
                if let Some(t) = test.as_mut() {
                    normalize_binary(t);
                }
                (1, labels)
            }
            LossKind::Squared => (1, Vec::new()),
            LossKind::Softmax => {
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
        let columns = compact(cfg, &mut train, test.as_mut(), classes);
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
/// [`CompactFeatures`].
fn compact(
    cfg: &ValidConfig,
    train: &mut Dataset,
    test: Option<&mut Dataset>,
    classes: usize,
) -> Option<ColumnMap> {
    let raw = &cfg.raw;
    let auto = raw.compact_features == CompactFeatures::Auto;
    let wanted = match raw.compact_features {
        CompactFeatures::Off => false,
        // The config check refused the runs that compaction would change.
        CompactFeatures::On => true,
        CompactFeatures::Auto => {
            compaction_exact(raw).is_none()
                && (train.features.saturating_mul(classes) > AUTO_COMPACT_COORDS
                    || train.nnz() >= AUTO_ORDER_NNZ)
        }
    };
    if !wanted {
        return None;
    }
    let map = ColumnMap::by_frequency(train);
    // Rows without features leave nothing to compact (the intercept alone is trained).
    // A huge model with most features used is left to the memory check: compaction
    // would save little of it.
    let huge = train.features.saturating_mul(classes) > AUTO_COMPACT_COORDS;
    if map.used() == 0 || (auto && huge && map.used() * 2 > train.features) {
        return None;
    }
    let compacted = map.compact(train);
    debug_assert!(compacted, "the map was built from these rows");
    if let Some(t) = test {
        *t = map.restricted(t).0;
    }
    Some(map)
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
