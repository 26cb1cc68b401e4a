//! What the unit tests of the solvers share: regularizers, objectives over every row,
//! and the lasso with an orthogonal design, whose solution has a closed form.

use crate::data::Dataset;
use crate::model::loss::Loss;
use crate::model::objective::{AnyReg, Objective};
use crate::model::reg::{RegKind, RegSpec};
use crate::model::Layout;

/// `kind` at strength `lambda`, elastic-net ratio 1/2, the box [-0.3, 0.4], groups of 1.
pub(crate) fn spec(kind: RegKind, lambda: f64) -> RegSpec {
    RegSpec {
        kind,
        lambda,
        l1_ratio: 0.5,
        lower: -0.3,
        upper: 0.4,
        group_len: 1,
    }
}

/// `loss` + `reg` over every row of `ds` (its `features`, one output, an intercept with
/// `bias`), without the nonconvex term, on `threads`.
pub(crate) fn objective<L: Loss>(
    ds: &Dataset,
    bias: bool,
    loss: L,
    reg: RegSpec,
    threads: usize,
) -> Objective<'_, L> {
    Objective {
        data: ds,
        rows: None,
        loss,
        reg: AnyReg(reg),
        layout: Layout {
            features: ds.features,
            classes: 1,
            bias,
        },
        alpha: 0.0,
        threads,
    }
}

/// The lasso with an orthogonal design: row i holds feature i with value s = sqrt(d)
/// rounded to f32, label `ys[i]`. Then `f = sum (x_i - y_i / s)^2 c / 2` with
/// `c = s^2 / d` (1 to rounding), and the minimizer of `f + lambda ||x||_1` is
/// `soft_threshold(y_i / s, lambda / c)` coordinate by coordinate: the data and that
/// solution.
pub(crate) fn orthogonal_lasso(ys: &[f32], lambda: f64) -> (Dataset, Vec<f64>) {
    let d = ys.len();
    let s = (d as f32).sqrt();
    let rows: Vec<(f32, Vec<(u32, f32)>)> = ys
        .iter()
        .enumerate()
        .map(|(i, &y)| (y, vec![(i as u32, s)]))
        .collect();
    let c = f64::from(s) * f64::from(s) / d as f64;
    let solution = ys
        .iter()
        .map(|&y| crate::model::reg::soft_threshold(f64::from(y) / f64::from(s), lambda / c))
        .collect();
    (Dataset::from_rows(d, &rows), solution)
}
