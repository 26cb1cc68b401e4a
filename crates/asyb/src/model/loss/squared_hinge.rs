//! L2-loss SVM: max(0, 1 - y z)^2, binary labels.

use super::{Labels, Link, Loss, LossInfo};

/// max(0, 1 - y z)^2.
#[derive(Clone, Copy, Debug, Default)]
pub struct SquaredHinge;

impl Loss for SquaredHinge {
    const INFO: LossInfo = LossInfo {
        name: "squared-hinge",
        curvature: 2.0,
        labels: Labels::Binary,
        link: Link::Margin,
        metric: "loss",
        param: None,
    };

    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        let m = (1.0 - f64::from(y) * z[0]).max(0.0);
        m * m
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        let y = f64::from(y);
        let m = (1.0 - y * z[0]).max(0.0);
        dz[0] = -2.0 * y * m;
        m * m
    }
    /// 2 where the hinge is active (a nonzero derivative), 0 past it: the generalized
    /// second derivative.
    #[inline]
    fn curvature_at(&self, _z: f64, _y: f32, deriv: f64) -> f64 {
        if deriv != 0.0 {
            2.0
        } else {
            0.0
        }
    }
    /// theta = -y s with s >= 0: s^2 / 4 - s.
    #[inline]
    fn conjugate(&self, theta: &[f64], y: f32) -> Option<f64> {
        let s = (-f64::from(y) * theta[0]).max(0.0);
        Some(0.25 * s * s - s)
    }
}
