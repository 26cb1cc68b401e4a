//! Math only: losses, regularizers and their prox operators, the objective and its
//! prox-gradient mapping, evaluation metrics. Nothing here knows of threads, files or
//! transports.
//!
//! Parameter layout shared by every part of the crate (see [`Layout`]): feature row `f`
//! holds `classes` consecutive coordinates `f * classes .. (f + 1) * classes`; row
//! `features` is the intercept (bias) row, never regularized.

pub mod dual;
pub mod loss;
pub mod metrics;
pub mod objective;
pub mod reg;

use serde::{Deserialize, Serialize};

/// Shape of the parameter vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Number of features d (rows 0..d of the parameter matrix).
    pub features: usize,
    /// Outputs per feature: 1 for binary and regression losses, K for softmax.
    pub classes: usize,
    /// Whether the intercept row (row `features`) is trained. When false it stays 0.
    pub bias: bool,
}

impl Layout {
    /// Number of parameter rows, the intercept row included.
    pub fn rows(&self) -> usize {
        self.features + 1
    }

    /// Total number of coordinates, the intercept row included.
    pub fn coords(&self) -> usize {
        self.rows() * self.classes
    }

    /// Index of the intercept row.
    pub fn bias_row(&self) -> usize {
        self.features
    }
}

/// The smooth nonconvex term `alpha * x^2 / (1 + x^2)` of one coordinate, added to f
/// when `alpha > 0` (the standard nonconvex sparse-learning benchmark term).
#[inline]
pub fn nonconvex_value(alpha: f64, x: f64) -> f64 {
    let x2 = x * x;
    alpha * x2 / (1.0 + x2)
}

/// Derivative of [`nonconvex_value`] in x: `2 alpha x / (1 + x^2)^2`.
#[inline]
pub fn nonconvex_deriv(alpha: f64, x: f64) -> f64 {
    let d = 1.0 + x * x;
    2.0 * alpha * x / (d * d)
}
