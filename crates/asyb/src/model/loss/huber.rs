//! Huber's loss for robust regression: quadratic within `delta` of the target, linear
//! beyond, so that outliers pull on the fit with a bounded force.

use super::{Labels, Link, Loss, LossInfo, Param};

/// r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond, r = z - y.
#[derive(Clone, Copy, Debug)]
pub struct Huber {
    /// Where the loss turns from quadratic to linear (> 0).
    pub delta: f64,
}

impl Default for Huber {
    fn default() -> Self {
        Huber {
            delta: Self::INFO.param.expect("huber takes delta").default,
        }
    }
}

impl Loss for Huber {
    const INFO: LossInfo = LossInfo {
        name: "huber",
        // The second derivative is 1 inside the quadratic zone, 0 outside.
        curvature: 1.0,
        labels: Labels::Real,
        link: Link::Margin,
        metric: "loss",
        param: Some(Param {
            name: "huber-delta",
            default: 1.0,
        }),
    };

    #[inline]
    fn with_param(delta: f64) -> Self {
        Huber { delta }
    }
    #[inline]
    fn value(&self, z: &[f64], y: f32) -> f64 {
        let a = (z[0] - f64::from(y)).abs();
        if a <= self.delta {
            0.5 * a * a
        } else {
            self.delta * (a - 0.5 * self.delta)
        }
    }
    #[inline]
    fn grad(&self, z: &[f64], y: f32, dz: &mut [f64]) -> f64 {
        let r = z[0] - f64::from(y);
        dz[0] = r.clamp(-self.delta, self.delta);
        self.value(z, y)
    }
    /// theta in [-delta, delta]: theta^2 / 2 + y theta (the squared loss's, on the
    /// derivatives' range).
    #[inline]
    fn conjugate(&self, theta: &[f64], y: f32) -> Option<f64> {
        let t = theta[0].clamp(-self.delta, self.delta);
        Some(0.5 * t * t + f64::from(y) * t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written as the minimum over the split of r into a quadratic and
    /// a linear part: Huber(r) = min_s s^2/2 + delta |r - s| (its Moreau envelope form),
    /// the minimum of that convex function of s found by ternary search.
    fn by_envelope(r: f64, delta: f64) -> f64 {
        let f = |s: f64| 0.5 * s * s + delta * (r - s).abs();
        let (mut a, mut b) = (-r.abs() - 1.0, r.abs() + 1.0);
        for _ in 0..300 {
            let (m1, m2) = (a + (b - a) / 3.0, b - (b - a) / 3.0);
            if f(m1) <= f(m2) {
                b = m2;
            } else {
                a = m1;
            }
        }
        f(0.5 * (a + b))
    }

    #[test]
    fn closed_form_values_at_and_around_delta() {
        let h = Huber::with_param(2.0);
        // Quadratic inside: r = 1.5 -> 1.125; at the joint r = 2 -> 2; beyond: r = -5 ->
        // 2 (5 - 1) = 8.
        for (z, y, want) in [(1.5, 0.0f32, 1.125), (3.0, 1.0, 2.0), (-4.0, 1.0, 8.0)] {
            let got = h.value(&[z], y);
            assert!((got - want).abs() < 1e-12, "z {z} y {y}: {got} vs {want}");
        }
        for (r, delta) in [
            (0.3, 1.0),
            (-2.5, 1.0),
            (7.0, 0.5),
            (-0.1, 0.05),
            (1.0, 1.0),
        ] {
            let got = Huber::with_param(delta).value(&[r], 0.0);
            let want = by_envelope(r, delta);
            assert!(
                (got - want).abs() < 1e-6,
                "r {r} delta {delta}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn gradient_matches_finite_differences_and_is_bounded_by_delta() {
        for delta in [0.1, 1.0, 3.0] {
            let h = Huber::with_param(delta);
            for i in 0..200 {
                let z = -10.0 + 0.1003 * i as f64;
                let y = 0.7f32;
                let mut dz = [0.0];
                let v = h.grad(&[z], y, &mut dz);
                assert_eq!(v, h.value(&[z], y));
                let eps = 1e-6;
                let fd = (h.value(&[z + eps], y) - h.value(&[z - eps], y)) / (2.0 * eps);
                assert!(
                    (dz[0] - fd).abs() < 1e-6,
                    "delta {delta} z {z}: {} vs {fd}",
                    dz[0]
                );
                assert!(dz[0].abs() <= delta);
                let mut d2 = [0.0];
                h.deriv(&[z], y, &mut d2);
                assert_eq!(d2, dz);
            }
        }
    }

    #[test]
    fn curvature_bounds_the_change_of_the_derivative() {
        let h = Huber::with_param(0.8);
        let d = |z: f64| {
            let mut g = [0.0];
            h.grad(&[z], -0.25, &mut g);
            g[0]
        };
        for i in 0..400 {
            let (a, b) = (-3.0 + 0.015 * i as f64, -3.0 + 0.015 * i as f64 + 0.007);
            assert!((d(b) - d(a)).abs() <= Huber::INFO.curvature * (b - a) + 1e-12);
        }
        assert_eq!(Huber::default().delta, 1.0);
    }
}
