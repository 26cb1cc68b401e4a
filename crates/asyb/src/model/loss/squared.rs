//! Least squares: (z - y)^2 / 2, regression.

use super::{Labels, Link, Loss, LossInfo};

/// (z - y)^2 / 2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Squared;

impl Loss for Squared {
    const INFO: LossInfo = LossInfo {
        name: "squared",
        curvature: 1.0,
        labels: Labels::Real,
        link: Link::Margin,
        metric: "loss",
        param: None,
    };

    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        let r = z[0] - f64::from(y);
        0.5 * r * r
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        let r = z[0] - f64::from(y);
        dz[0] = r;
        0.5 * r * r
    }
    /// theta^2 / 2 + y theta, on every theta.
    #[inline]
    fn conjugate(&self, theta: &[f64], y: f32) -> Option<f64> {
        let t = theta[0];
        Some(0.5 * t * t + f64::from(y) * t)
    }
}
