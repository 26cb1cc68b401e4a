//! Evaluation metrics of a model's scores on a labelled set: logloss, accuracy and ROC
//! AUC for binary labels, accuracy and logloss for softmax, RMSE for regression.
//!
//! Scores are margins z (f64), never probabilities; labels are the normalized f32 labels
//! the losses see (see [`super::loss`]): y in {-1, +1} for binary sets (any y > 0 counts
//! as the positive class), the class index 0..K-1 for multiclass sets, the raw target for
//! regression. Multiclass margins are row-major `[n, classes]`. Every function panics
//! when the slices disagree in length (a caller bug, never user input) and returns NaN on
//! an empty set, since a mean over no rows carries no information.
//!
//! AUC is the Mann-Whitney statistic (Hanley & McNeil, Radiology 143(1), 1982):
//! `AUC = (R_+ - P (P + 1) / 2) / (P N)`, with `R_+` the sum of the ranks of the P
//! positive scores among all n = P + N scores, tied scores sharing their mean rank. It
//! equals the fraction of (positive, negative) pairs ranked correctly, ties counting 1/2,
//! in O(n log n).

use super::loss::{log1pexp, Loss, Softmax};

fn mean(sum: f64, n: usize) -> f64 {
    sum / n as f64
}

fn is_positive(y: f32) -> bool {
    y > 0.0
}

/// Mean binary logloss `(1/n) sum log(1 + exp(-y z))`, stable for any margin.
pub fn logloss(margins: &[f64], labels: &[f32]) -> f64 {
    assert_eq!(margins.len(), labels.len(), "one margin per label");
    let sum: f64 = margins
        .iter()
        .zip(labels)
        .map(|(&z, &y)| log1pexp(-f64::from(y) * z))
        .sum();
    mean(sum, margins.len())
}

/// Fraction of rows whose predicted sign matches the label; a zero margin predicts -1,
/// the same side as the decision rule `z > 0` used for prediction.
pub fn binary_accuracy(margins: &[f64], labels: &[f32]) -> f64 {
    assert_eq!(margins.len(), labels.len(), "one margin per label");
    let correct = margins
        .iter()
        .zip(labels)
        .filter(|(&z, &y)| (z > 0.0) == is_positive(y))
        .count();
    mean(correct as f64, margins.len())
}

/// Area under the ROC curve, ties counting 1/2; `None` when one class is absent, since
/// the curve is then undefined.
pub fn auc(margins: &[f64], labels: &[f32]) -> Option<f64> {
    assert_eq!(margins.len(), labels.len(), "one margin per label");
    let positives = labels.iter().filter(|&&y| is_positive(y)).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..margins.len()).collect();
    order.sort_unstable_by(|&a, &b| margins[a].total_cmp(&margins[b]));
    // Ranks are 1-based; a run of equal scores at positions i..j all get the mean rank
    // (i + 1 + j) / 2, which is what makes a tied pair count 1/2.
    let mut positive_rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let score = margins[order[i]];
        let mut j = i + 1;
        while j < order.len() && margins[order[j]] == score {
            j += 1;
        }
        let run_positives = order[i..j]
            .iter()
            .filter(|&&k| is_positive(labels[k]))
            .count();
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        positive_rank_sum += run_positives as f64 * mean_rank;
        i = j;
    }
    let p = positives as f64;
    let n = negatives as f64;
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Root mean squared error `sqrt((1/n) sum (p - t)^2)`.
pub fn rmse(preds: &[f64], targets: &[f32]) -> f64 {
    assert_eq!(preds.len(), targets.len(), "one prediction per target");
    let sum: f64 = preds
        .iter()
        .zip(targets)
        .map(|(&p, &t)| {
            let r = p - f64::from(t);
            r * r
        })
        .sum();
    mean(sum, preds.len()).sqrt()
}

fn check_rows(margins: &[f64], classes: usize, labels: &[f32]) {
    assert!(classes > 0, "at least one class");
    assert_eq!(
        margins.len(),
        labels.len() * classes,
        "one row of margins per label"
    );
}

/// Fraction of rows whose largest margin is at the label's class; ties go to the lowest
/// class index, so that the prediction is deterministic.
pub fn multiclass_accuracy(margins: &[f64], classes: usize, labels: &[f32]) -> f64 {
    check_rows(margins, classes, labels);
    let correct = margins
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &y)| {
            let mut best = 0;
            for (c, &v) in row.iter().enumerate().skip(1) {
                if v > row[best] {
                    best = c;
                }
            }
            best == y as usize
        })
        .count();
    mean(correct as f64, labels.len())
}

/// Mean multinomial logloss `(1/n) sum (logsumexp(z_i) - z_{i, y_i})`, stable for any
/// margins.
pub fn softmax_logloss(margins: &[f64], classes: usize, labels: &[f32]) -> f64 {
    check_rows(margins, classes, labels);
    let sum: f64 = margins
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &y)| Softmax.value(row, y))
        .sum();
    mean(sum, labels.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: the fraction of (positive, negative) pairs with the positive
    /// scored higher, a tie counting 1/2. O(n^2).
    fn auc_by_pairs(margins: &[f64], labels: &[f32]) -> Option<f64> {
        let mut pairs = 0.0;
        let mut wins = 0.0;
        for (i, &zi) in margins.iter().enumerate() {
            for (j, &zj) in margins.iter().enumerate() {
                if labels[i] > 0.0 && labels[j] < 0.0 {
                    pairs += 1.0;
                    if zi > zj {
                        wins += 1.0;
                    } else if zi == zj {
                        wins += 0.5;
                    }
                }
            }
        }
        (pairs > 0.0).then(|| wins / pairs)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    proptest! {
        /// Scores drawn from a handful of values so that ties within and across classes
        /// are common.
        #[test]
        fn auc_equals_pair_count(
            rows in prop::collection::vec((0i32..6, any::<bool>()), 0..60)
        ) {
            let margins: Vec<f64> = rows.iter().map(|&(s, _)| f64::from(s) * 0.5 - 1.0).collect();
            let labels: Vec<f32> = rows.iter().map(|&(_, p)| if p { 1.0 } else { -1.0 }).collect();
            let fast = auc(&margins, &labels);
            let slow = auc_by_pairs(&margins, &labels);
            match (fast, slow) {
                (Some(a), Some(b)) => prop_assert!(close(a, b, 1e-12), "{a} vs {b}"),
                (a, b) => prop_assert_eq!(a, b),
            }
        }

        #[test]
        fn auc_equals_pair_count_continuous(
            rows in prop::collection::vec((-5.0f64..5.0, any::<bool>()), 2..80)
        ) {
            let margins: Vec<f64> = rows.iter().map(|&(s, _)| s).collect();
            let labels: Vec<f32> = rows.iter().map(|&(_, p)| if p { 1.0 } else { -1.0 }).collect();
            match (auc(&margins, &labels), auc_by_pairs(&margins, &labels)) {
                (Some(a), Some(b)) => prop_assert!(close(a, b, 1e-12), "{a} vs {b}"),
                (a, b) => prop_assert_eq!(a, b),
            }
        }

        #[test]
        fn logloss_equals_direct_formula(
            rows in prop::collection::vec((-30.0f64..30.0, any::<bool>()), 1..50)
        ) {
            let margins: Vec<f64> = rows.iter().map(|&(s, _)| s).collect();
            let labels: Vec<f32> = rows.iter().map(|&(_, p)| if p { 1.0 } else { -1.0 }).collect();
            // In this range exp(-y z) neither overflows nor loses the 1, so the naive
            // formula is accurate.
            let direct = rows
                .iter()
                .map(|&(z, p)| {
                    let y = if p { 1.0 } else { -1.0 };
                    (1.0 + (-y * z).exp()).ln()
                })
                .sum::<f64>()
                / rows.len() as f64;
            prop_assert!(close(logloss(&margins, &labels), direct, 1e-12));
        }

        #[test]
        fn softmax_logloss_equals_direct_formula(
            classes in 2usize..6,
            seed in prop::collection::vec((-10.0f64..10.0, 0u8..255), 6..30),
        ) {
            let margins: Vec<f64> = seed.iter().map(|&(z, _)| z).collect();
            let n = margins.len() / classes;
            let margins = &margins[..n * classes];
            let labels: Vec<f32> =
                seed[..n].iter().map(|&(_, c)| f32::from(c % classes as u8)).collect();
            let direct = margins
                .chunks(classes)
                .zip(&labels)
                .map(|(row, &y)| {
                    let p = row[y as usize].exp() / row.iter().map(|v| v.exp()).sum::<f64>();
                    -p.ln()
                })
                .sum::<f64>()
                / n as f64;
            prop_assert!(close(softmax_logloss(margins, classes, &labels), direct, 1e-10));
        }
    }

    #[test]
    fn auc_of_perfect_inverse_and_constant_scorers() {
        let labels = [1.0, -1.0, 1.0, -1.0, -1.0, 1.0];
        let perfect: Vec<f64> = labels.iter().map(|&y| f64::from(y) * 2.0 + 0.1).collect();
        let inverse: Vec<f64> = perfect.iter().map(|z| -z).collect();
        assert_eq!(auc(&perfect, &labels), Some(1.0));
        assert_eq!(auc(&inverse, &labels), Some(0.0));
        assert_eq!(auc(&[3.0; 6], &labels), Some(0.5));
    }

    #[test]
    fn auc_by_hand() {
        // Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.4) win, (0.35, 0.1) win,
        // (0.35, 0.4) loss, (0.4, 0.1) win, (0.4, 0.4) tie: 4.5 / 6.
        let margins = [0.1, 0.4, 0.35, 0.8, 0.4];
        let labels = [-1.0, -1.0, 1.0, 1.0, 1.0];
        assert!(close(auc(&margins, &labels).unwrap(), 4.5 / 6.0, 1e-15));
    }

    #[test]
    fn auc_is_none_with_one_class() {
        assert_eq!(auc(&[0.1, 0.2], &[1.0, 1.0]), None);
        assert_eq!(auc(&[0.1, 0.2], &[-1.0, -1.0]), None);
        assert_eq!(auc(&[], &[]), None);
    }

    #[test]
    fn logloss_is_stable_at_large_margins() {
        let l = logloss(&[1e3, -1e3, 1e3, -1e3], &[1.0, -1.0, -1.0, 1.0]);
        // Two rows contribute ~0, two contribute ~1e3 each.
        assert!(close(l, 500.0, 1e-12), "{l}");
        assert_eq!(logloss(&[0.0], &[1.0]), std::f64::consts::LN_2);
    }

    #[test]
    fn binary_accuracy_by_hand() {
        let margins = [2.0, -0.5, 0.0, 0.0, 1e-300, -3.0];
        let labels = [1.0, -1.0, -1.0, 1.0, 1.0, 1.0];
        // Correct: rows 0, 1, 2 (zero counts as -1), 4; wrong: rows 3, 5.
        assert!(close(binary_accuracy(&margins, &labels), 4.0 / 6.0, 1e-15));
        // Zero margins alone: only the -1 rows are right.
        assert!(close(
            binary_accuracy(&[0.0; 3], &[-1.0, -1.0, 1.0]),
            2.0 / 3.0,
            1e-15
        ));
        assert_eq!(binary_accuracy(&[1.0, -1.0], &[1.0, -1.0]), 1.0);
        assert_eq!(binary_accuracy(&[-1.0, 1.0], &[1.0, -1.0]), 0.0);
    }

    #[test]
    fn multiclass_accuracy_by_hand() {
        #[rustfmt::skip]
        let margins = [
            0.1, 0.7, 0.2, // argmax 1
            0.5, 0.5, 0.1, // tie 0/1 -> 0
            0.0, 0.3, 0.3, // tie 1/2 -> 1
            -1.0, -2.0, -0.5, // argmax 2
        ];
        assert_eq!(multiclass_accuracy(&margins, 3, &[1.0, 0.0, 1.0, 2.0]), 1.0);
        assert_eq!(
            multiclass_accuracy(&margins, 3, &[0.0, 1.0, 2.0, 2.0]),
            0.25
        );
        assert_eq!(multiclass_accuracy(&margins, 3, &[2.0, 1.0, 2.0, 0.0]), 0.0);
    }

    #[test]
    fn softmax_logloss_by_hand() {
        // Uniform margins: each row costs ln K whatever the label and the offset; the
        // offset 1e3 is added and taken away again, so it leaves its rounding behind.
        let l = softmax_logloss(&[1e3, 1e3, 1e3, -7.0, -7.0, -7.0], 3, &[0.0, 2.0]);
        assert!(close(l, 3f64.ln(), 1e-12), "{l}");
        // One row certain of the right class, one spread evenly over two of three.
        let l = softmax_logloss(&[50.0, -50.0, -50.0, 0.0, 0.0, -800.0], 3, &[0.0, 1.0]);
        assert!(close(l, 2f64.ln() / 2.0, 1e-15), "{l}");
    }

    #[test]
    fn rmse_closed_form() {
        // Residuals 1, -2, 2, 0: mean square 9/4.
        let r = rmse(&[2.0, 0.0, 3.5, -1.25], &[1.0, 2.0, 1.5, -1.25]);
        assert!(close(r, 1.5, 1e-15));
        assert_eq!(rmse(&[0.5; 3], &[0.5; 3]), 0.0);
    }

    #[test]
    fn empty_sets_give_nan() {
        assert!(logloss(&[], &[]).is_nan());
        assert!(binary_accuracy(&[], &[]).is_nan());
        assert!(rmse(&[], &[]).is_nan());
        assert!(multiclass_accuracy(&[], 3, &[]).is_nan());
        assert!(softmax_logloss(&[], 3, &[]).is_nan());
    }

    #[test]
    #[should_panic(expected = "one margin per label")]
    fn mismatched_lengths_panic() {
        logloss(&[0.0, 1.0], &[1.0]);
    }
}
