//! Using a trained model: scores for new rows and metrics on a labelled set. Owns the
//! mapping from a model file's metadata back to the problem it was trained on (label
//! conventions, index base, objective); knows nothing of training.
//!
//! Scores by loss: logistic gives `P(y = +1) = sigmoid(z)`; squared gives the prediction
//! `z`; squared hinge gives the margin `z` (the sign is the class); softmax gives the
//! original label of the arg-max class. [`ScoreKind::Margins`] gives the margins (K for
//! softmax), [`ScoreKind::Probabilities`] the class probabilities (K for softmax, in the
//! order of the model's class labels; `P(y = +1)` for logistic).

use std::borrow::Cow;
use std::path::Path;

use crate::data::columns::ColumnMap;
use crate::model::Layout;

use crate::data::libsvm::{IndexBase, LabelRule, ReadOptions, ReadReport};
use crate::data::Dataset;
use crate::model::loss::{sigmoid, Labels, Link, Loss};
use crate::model::metrics;
use crate::model::objective::AnyReg;
use crate::model::objective::Objective;
use crate::model_file::SavedModel;
use crate::monitor::TestMetrics;
use crate::{with_loss, Error, Result};

/// Key of [`crate::model_file::ModelMeta::extra`] that records the index base of the
/// training file (`"1"` or `"0"`), so that new files are read the same way.
pub const INDEX_BASE_KEY: &str = "index_base";

/// The index base a model was trained with (1 when the file does not say: LIBSVM's own
/// convention).
pub fn model_index_base(model: &SavedModel) -> IndexBase {
    match model.meta.extra.get(INDEX_BASE_KEY).map(String::as_str) {
        Some("0") => IndexBase::Zero,
        _ => IndexBase::One,
    }
}

/// Reads a LIBSVM file to score with `model`: numbered as the model's training data
/// ([`crate::data::read_following`]) unless `base` says otherwise; features the model never saw are kept (they get no weight). With
/// `labelled`, labels are checked and normalized as in training (binary -1/+1, softmax
/// class indices of the model's classes); otherwise they are read as any number and
/// ignored.
pub fn read_for_model(
    path: &Path,
    model: &SavedModel,
    base: Option<IndexBase>,
    skip_bad_lines: bool,
    labelled: bool,
) -> Result<(Dataset, ReadReport)> {
    let loss = model.meta.loss;
    let labels = match (labelled, loss.info().labels) {
        (true, Labels::Binary) => LabelRule::Binary,
        _ => LabelRule::Any,
    };
    let opts = ReadOptions {
        index_base: base.unwrap_or(IndexBase::Auto),
        features: None,
        skip_bad_lines,
        labels,
    };
    let one_based = model_index_base(model) == IndexBase::One;
    let (mut ds, rep) = crate::data::read_following(path, &opts, one_based)?;
    if labelled {
        match loss.info().labels {
            Labels::Binary => {
                for y in ds.labels.iter_mut() {
                    *y = if *y > 0.0 { 1.0 } else { -1.0 };
                }
            }
            Labels::Real => {}
            Labels::Classes => {
                let classes = &model.meta.class_labels;
                for (i, y) in ds.labels.iter_mut().enumerate() {
                    match classes.iter().position(|c| c == y) {
                        Some(c) => *y = c as f32,
                        None => {
                            return Err(Error::Data {
                                path: path.into(),
                                reason: format!(
                                "row {}: label {y} is not one of the model's classes {classes:?}",
                                i + 1
                            ),
                            })
                        }
                    }
                }
            }
        }
    }
    Ok((ds, rep))
}

/// The rows `model.weights` applies to: `data` itself, or for a sparse model `data`
/// renumbered to the model's stored features (the others have weight 0), with the
/// layout of the stored features.
fn view<'a>(model: &SavedModel, data: &'a Dataset) -> (Cow<'a, Dataset>, Layout) {
    match &model.feature_ids {
        None => (Cow::Borrowed(data), model.meta.layout),
        Some(ids) => {
            let map = ColumnMap::increasing(model.meta.layout.features, ids.clone())
                .expect("a loaded model's feature ids are increasing and in range");
            let layout = Layout {
                features: ids.len(),
                ..model.meta.layout
            };
            (Cow::Owned(map.restricted(data).0), layout)
        }
    }
}

fn objective<'a, L: Loss>(
    model: &SavedModel,
    data: &'a Dataset,
    layout: Layout,
    loss: L,
) -> Objective<'a, L> {
    Objective {
        data,
        rows: None,
        loss,
        reg: AnyReg(model.meta.reg),
        layout,
        alpha: model.meta.alpha,
        threads: crate::par::cores(),
    }
}

/// Margins of every row, `classes` per row.
pub fn margins(model: &SavedModel, data: &Dataset) -> Vec<f64> {
    let (data, layout) = view(model, data);
    with_loss!(model.meta.loss_spec(), |l| objective(
        model, &data, layout, l
    )
    .margins(&model.weights))
}

/// What [`scores`] gives for each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreKind {
    /// The loss's own score (see the module doc).
    Default,
    /// The margins, `classes` per row.
    Margins,
    /// The class probabilities: `classes` per row for softmax, in the order of the
    /// model's class labels; `P(y = +1)` for the logistic loss. Only for a loss whose
    /// scores are probabilities ([`has_probabilities`]).
    Probabilities,
}

/// Whether a model's loss gives class probabilities (logistic, softmax).
pub fn has_probabilities(model: &SavedModel) -> bool {
    model.meta.loss.info().link != Link::Margin
}

/// Scores of every row (see [`ScoreKind`]).
///
/// # Panics
/// With [`ScoreKind::Probabilities`] for a loss without them ([`has_probabilities`]).
pub fn scores(model: &SavedModel, data: &Dataset, kind: ScoreKind) -> Vec<Vec<f64>> {
    let z = margins(model, data);
    let k = model.meta.layout.classes;
    let link = model.meta.loss.info().link;
    assert!(
        kind != ScoreKind::Probabilities || link != Link::Margin,
        "probabilities of a loss without them"
    );
    z.chunks(k)
        .map(|zi| match (kind, link) {
            (ScoreKind::Margins, _) | (_, Link::Margin) => zi.to_vec(),
            (_, Link::Probability) => vec![sigmoid(zi[0])],
            (ScoreKind::Probabilities, Link::Class) => {
                let top = zi.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = zi.iter().map(|&v| (v - top).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.into_iter().map(|v| v / sum).collect()
            }
            (ScoreKind::Default, Link::Class) => {
                let best = zi
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                    .map_or(0, |(c, _)| c);
                let label = model
                    .meta
                    .class_labels
                    .get(best)
                    .map_or(best as f64, |&l| f64::from(l));
                vec![label]
            }
        })
        .collect()
}

/// A model's quality on a labelled set.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    pub rows: usize,
    /// Psi on this set: mean loss + regularizer (+ the nonconvex term).
    pub psi: f64,
    pub metrics: TestMetrics,
    /// Nonzero feature weights of the model.
    pub nnz: u64,
}

/// Evaluates `model` on `data` (labels normalized by [`read_for_model`]).
pub fn evaluate(model: &SavedModel, data: &Dataset) -> Evaluation {
    let (data, layout) = view(model, data);
    with_loss!(model.meta.loss_spec(), |l| {
        let obj = objective(model, &data, layout, l);
        let w = &model.weights;
        Evaluation {
            rows: data.rows(),
            psi: obj.f_and_grad(w, None) + obj.h(w),
            metrics: test_metrics(&obj, w),
            nnz: Objective::<crate::model::loss::Logistic>::nnz(w, layout),
        }
    })
}

/// Held-out metrics of `w` on the objective's data: the mean loss (the logloss of the
/// logistic and softmax losses), and by the loss's labels accuracy and AUC (binary), RMSE
/// (regression) or accuracy (classes).
pub fn test_metrics<L: Loss, W: crate::model::objective::Weights + ?Sized>(
    t: &Objective<L>,
    w: &W,
) -> TestMetrics {
    let z = t.margins(w);
    let y = &*t.labels();
    let k = t.layout.classes;
    let mean_loss = || {
        let sum: f64 = z
            .chunks(k)
            .zip(y)
            .map(|(zi, &yi)| t.loss.value(zi, yi))
            .sum();
        sum / y.len().max(1) as f64
    };
    match L::INFO.labels {
        Labels::Binary => TestMetrics {
            loss: mean_loss(),
            accuracy: Some(metrics::binary_accuracy(&z, y)),
            auc: metrics::auc(&z, y),
            rmse: None,
        },
        Labels::Real => TestMetrics {
            loss: mean_loss(),
            accuracy: None,
            auc: None,
            rmse: Some(metrics::rmse(&z, y)),
        },
        Labels::Classes => TestMetrics {
            loss: mean_loss(),
            accuracy: Some(metrics::multiclass_accuracy(&z, k, y)),
            auc: None,
            rmse: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loss::LossKind;
    use crate::model::reg::{RegKind, RegSpec};
    use crate::model::Layout;
    use crate::model_file::ModelMeta;

    fn model(loss: LossKind, classes: usize, weights: Vec<f64>, labels: Vec<f32>) -> SavedModel {
        SavedModel {
            meta: ModelMeta {
                loss,
                reg: RegSpec {
                    kind: RegKind::L1,
                    lambda: 0.5,
                    l1_ratio: 1.0,
                    lower: 0.0,
                    upper: 0.0,
                    group_len: 1,
                },
                blocks: 1,
                layout: Layout {
                    features: 2,
                    classes,
                    bias: true,
                },
                class_labels: labels,
                alpha: 0.0,
                extra: Default::default(),
            },
            weights,
            feature_ids: None,
        }
    }

    #[test]
    fn logistic_scores_and_objective_by_hand() {
        // w = (1, -2), bias 0.5. Rows: x = (1, 0) label +1; x = (0, 3) label -1.
        let m = model(LossKind::Logistic, 1, vec![1.0, -2.0, 0.5], vec![-1.0, 1.0]);
        let ds = Dataset::from_rows(
            3,
            &[(1.0, vec![(0, 1.0)]), (-1.0, vec![(1, 3.0), (2, 9.0)])],
        );
        let s = scores(&m, &ds, ScoreKind::Default);
        assert_eq!(scores(&m, &ds, ScoreKind::Probabilities), s);
        let (z0, z1): (f64, f64) = (1.5, -5.5);
        assert!((s[0][0] - 1.0 / (1.0 + (-z0).exp())).abs() < 1e-12);
        assert!((s[1][0] - 1.0 / (1.0 + (-z1).exp())).abs() < 1e-12);
        let e = evaluate(&m, &ds);
        // Labels +1 and -1: losses log(1 + exp(-z0)) and log(1 + exp(z1)).
        let f = ((1.0 + (-z0).exp()).ln() + (1.0 + z1.exp()).ln()) / 2.0;
        assert!(
            (e.psi - (f + 0.5 * 3.0)).abs() < 1e-12,
            "{} vs {}",
            e.psi,
            f + 1.5
        );
        assert_eq!(e.metrics.accuracy, Some(1.0));
        assert_eq!(e.metrics.auc, Some(1.0));
        assert_eq!(e.nnz, 2);
    }

    #[test]
    fn softmax_scores_name_the_original_label() {
        // Two features, three classes (labels 3, 5, 7), bias row zero.
        let w = vec![0.0, 2.0, 1.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let m = model(LossKind::Softmax, 3, w, vec![3.0, 5.0, 7.0]);
        let ds = Dataset::from_rows(2, &[(0.0, vec![(0, 1.0)]), (0.0, vec![(1, 1.0)])]);
        let s = scores(&m, &ds, ScoreKind::Default);
        assert_eq!(s, vec![vec![5.0], vec![3.0]]);
        assert_eq!(scores(&m, &ds, ScoreKind::Margins)[1], vec![3.0, 0.0, 0.0]);
        // Probabilities: the softmax of the margins (0, 2, 1) and (3, 0, 0), in the order
        // of the labels 3, 5, 7.
        let p = scores(&m, &ds, ScoreKind::Probabilities);
        let (e1, e2, e3) = (1f64.exp(), 2f64.exp(), 3f64.exp());
        let s0 = 1.0 + e2 + e1;
        let want = [
            [1.0 / s0, e2 / s0, e1 / s0],
            [e3 / (e3 + 2.0), 1.0 / (e3 + 2.0), 1.0 / (e3 + 2.0)],
        ];
        for (got, want) in p.iter().zip(want) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-15, "{got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn a_sparse_model_scores_like_its_dense_weights() {
        // Softmax, 6 features x 2 classes; features 1, 2 and 4 have zero rows.
        let dense = vec![
            0.5, -1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.25, 0.0, 0.0, -0.75, 1.5, 0.1, -0.2,
        ];
        let mut m = model(LossKind::Softmax, 2, dense.clone(), vec![0.0, 1.0]);
        m.meta.layout.features = 6;
        let mut sparse = m.clone();
        sparse.feature_ids = Some(vec![0, 3, 5]);
        sparse.weights = vec![0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 0.1, -0.2];
        // Rows with listed features, unlisted ones, and ids beyond the model's features.
        let ds = Dataset::from_rows(
            9,
            &[
                (0.0, vec![(0, 1.0), (1, 2.0), (5, 0.5)]),
                (1.0, vec![(2, 1.0), (3, -1.5), (8, 4.0)]),
                (1.0, vec![(4, 3.0)]),
                (0.0, vec![(0, 0.25), (3, 1.0), (4, 1.0), (5, 2.0), (7, 1.0)]),
            ],
        );
        assert_eq!(margins(&sparse, &ds), margins(&m, &ds));
        assert_eq!(
            scores(&sparse, &ds, ScoreKind::Default),
            scores(&m, &ds, ScoreKind::Default)
        );
        let (a, b) = (evaluate(&sparse, &ds), evaluate(&m, &ds));
        assert!((a.psi - b.psi).abs() < 1e-12, "{} vs {}", a.psi, b.psi);
        assert_eq!((a.metrics, a.nnz, a.rows), (b.metrics, b.nnz, b.rows));
    }
}
