//! Multinomial logistic regression: logsumexp(z) - z_y over K classes.

use super::{xlogx, Labels, Link, Loss, LossInfo};

/// logsumexp(z) - z_y over K classes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax;

impl Loss for Softmax {
    const INFO: LossInfo = LossInfo {
        name: "softmax",
        // The Hessian diag(p) - p p' has eigenvalues at most 1/2.
        curvature: 0.5,
        labels: Labels::Classes,
        link: Link::Class,
        metric: "logloss",
        param: None,
    };

    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|&v| (v - max).exp()).sum();
        max + sum.ln() - z[y as usize]
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for (d, &v) in dz.iter_mut().zip(z) {
            *d = (v - max).exp();
            sum += *d;
        }
        for d in dz.iter_mut() {
            *d /= sum;
        }
        let c = y as usize;
        dz[c] -= 1.0;
        max + sum.ln() - z[c]
    }
    /// q = theta + e_y in the simplex: sum_k q_k ln q_k.
    #[inline]
    fn conjugate(&self, theta: &[f64], y: f32) -> Option<f64> {
        let c = y as usize;
        Some(
            theta
                .iter()
                .enumerate()
                .map(|(k, &t)| xlogx((t + if k == c { 1.0 } else { 0.0 }).clamp(0.0, 1.0)))
                .sum(),
        )
    }
}
