//! Multinomial logistic regression: logsumexp(z) - z_y over K classes.

use super::{Labels, Link, Loss, LossInfo};

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
}
