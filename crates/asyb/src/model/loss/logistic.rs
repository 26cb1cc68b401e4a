//! Logistic regression: log(1 + exp(-y z)), binary labels.

use super::{log1pexp, sigmoid, xlogx, Labels, Link, Loss, LossInfo};

/// log(1 + exp(-y z)).
#[derive(Clone, Copy, Debug, Default)]
pub struct Logistic;

impl Loss for Logistic {
    const INFO: LossInfo = LossInfo {
        name: "logistic",
        curvature: 0.25,
        labels: Labels::Binary,
        link: Link::Probability,
        metric: "logloss",
        param: None,
    };

    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        log1pexp(-f64::from(y) * z[0])
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        // d/dz log(1 + exp(-y z)) = -y sigmoid(-y z). One exponential for both, the
        // same values as `sigmoid` and `log1pexp`.
        let y = f64::from(y);
        let t = -y * z[0];
        let e = (-t.abs()).exp();
        if t > 0.0 {
            dz[0] = -y / (1.0 + e);
            t + e.ln_1p()
        } else {
            dz[0] = -y * (e / (1.0 + e));
            e.ln_1p()
        }
    }
    #[inline]
    fn deriv(&self, z: &[f64], y: f32, dz: &mut [f64]) {
        let y = f64::from(y);
        dz[0] = -y * sigmoid(-y * z[0]);
    }
    /// `sigmoid(z) (1 - sigmoid(z))`, from the derivative `-y sigmoid(-y z)` (y = +-1).
    #[inline]
    fn curvature_at(&self, _z: f64, _y: f32, deriv: f64) -> f64 {
        let s = deriv.abs();
        s * (1.0 - s)
    }
    /// theta = -y s with s in [0, 1]: s ln s + (1 - s) ln(1 - s).
    #[inline]
    fn conjugate(&self, theta: &[f64], y: f32) -> Option<f64> {
        let s = (-f64::from(y) * theta[0]).clamp(0.0, 1.0);
        Some(xlogx(s) + xlogx(1.0 - s))
    }
}
