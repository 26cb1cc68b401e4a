//! The reference solver: FISTA (Beck & Teboulle 2009, "A fast iterative
//! shrinkage-thresholding algorithm", with their backtracking line search) on the full
//! data, deterministic, used to compute the optimum Psi* that tests and benchmarks
//! measure the stochastic algorithms against.
//!
//! Momentum restarts whenever Psi increases (O'Donoghue & Candes 2015, "Adaptive restart
//! for accelerated gradient schemes"), which keeps it monotone and makes it usable on
//! the nonconvex objective (alpha > 0) too, where it converges to a stationary point.
//! The Lipschitz estimate L doubles until the sufficient-decrease condition holds and is
//! allowed to shrink by 10% per iteration, so the step follows the local curvature.
//!
//! Stopping: `||G||^2 <= tol * ||G_0||^2`, G the gradient mapping at the extrapolated point
//! (the prox-gradient mapping P with step 1/L), or the iteration budget.

use crate::model::loss::Loss;
use crate::model::objective::Objective;

/// What [`solve`] reports after every iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FistaIter {
    pub iter: usize,
    pub psi: f64,
    /// ||G||^2 with step 1/L.
    pub gmap_sq_norm: f64,
    pub lipschitz: f64,
}

/// Why FISTA stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FistaStop {
    Converged,
    MaxIters,
    /// The callback asked to stop.
    Interrupted,
    /// The objective became NaN or infinite.
    Diverged,
}

/// Minimizes Psi from `x` (updated in place to the solution). `l0` is a first Lipschitz
/// estimate (any positive value works; a good one saves backtracking). `observe` sees
/// every iteration and returns false to stop.
pub fn solve<L: Loss>(
    obj: &Objective<L>,
    x: &mut Vec<f64>,
    l0: f64,
    tol: f64,
    max_iters: usize,
    mut observe: impl FnMut(&FistaIter, &[f64]) -> bool,
) -> FistaStop {
    let n = x.len();
    let mut lip = l0.max(1e-12);
    let mut y = x.clone();
    let mut x_new = vec![0.0; n];
    let mut grad = vec![0.0; n];
    let mut t = 1.0f64;
    let mut psi = obj.psi(x);
    if !psi.is_finite() {
        return FistaStop::Diverged;
    }
    let mut g0: Option<f64> = None;
    for iter in 1..=max_iters {
        let fy = obj.f_and_grad(&y, Some(&mut grad));
        // Backtracking: find L with f(x+) <= f(y) + <g, x+ - y> + L/2 ||x+ - y||^2.
        let fx_new = loop {
            let eta = 1.0 / lip;
            for i in 0..n {
                x_new[i] = y[i] - eta * grad[i];
            }
            obj.prox(eta, &mut x_new);
            let fx = obj.f_and_grad(&x_new, None);
            let (mut lin, mut quad) = (0.0, 0.0);
            for i in 0..n {
                let d = x_new[i] - y[i];
                lin += grad[i] * d;
                quad += d * d;
            }
            if !fx.is_finite() && lip < 1e300 {
                lip *= 2.0;
                continue;
            }
            if fx <= fy + lin + 0.5 * lip * quad + 1e-12 * fy.abs() || lip >= 1e300 {
                break fx;
            }
            lip *= 2.0;
        };
        let gmap: f64 = y
            .iter()
            .zip(&x_new)
            .map(|(a, b)| ((a - b) * lip).powi(2))
            .sum();
        let psi_new = fx_new + obj.h(&x_new);
        if !psi_new.is_finite() {
            return FistaStop::Diverged;
        }
        let g0v = *g0.get_or_insert(gmap.max(f64::MIN_POSITIVE));
        if psi_new > psi && t > 1.0 {
            // Restart: drop the momentum and retry from x with a plain step, which the
            // line search makes monotone (up to rounding, hence no restart when t = 1).
            t = 1.0;
            y.copy_from_slice(x);
            continue;
        }
        let t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
        let beta = (t - 1.0) / t_new;
        for i in 0..n {
            y[i] = x_new[i] + beta * (x_new[i] - x[i]);
        }
        std::mem::swap(x, &mut x_new);
        t = t_new;
        psi = psi.min(psi_new);
        let rec = FistaIter {
            iter,
            psi,
            gmap_sq_norm: gmap,
            lipschitz: lip,
        };
        if !observe(&rec, x) {
            return FistaStop::Interrupted;
        }
        if gmap <= tol * g0v {
            return FistaStop::Converged;
        }
        lip *= 0.9;
    }
    FistaStop::MaxIters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::model::loss::{Logistic, Squared};
    use crate::model::objective::AnyReg;
    use crate::model::reg::{RegKind, RegSpec};
    use crate::model::Layout;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn spec(kind: RegKind, lambda: f64) -> RegSpec {
        RegSpec {
            kind,
            lambda,
            l1_ratio: 0.5,
            lower: -1.0,
            upper: 1.0,
            group_len: 1,
        }
    }

    /// Lasso with an orthogonal design has a closed-form solution: row i holds feature i
    /// with value sqrt(d), so f = (1/d) sum (sqrt(d) x_i - y_i)^2 / 2 = sum (x_i -
    /// y_i/sqrt(d))^2 / 2 and the minimizer of f + lambda ||x||_1 is
    /// soft_threshold(y_i / sqrt(d), lambda) coordinate by coordinate.
    #[test]
    fn lasso_orthonormal_closed_form() {
        let d = 6;
        let s = (d as f32).sqrt();
        let ys = [3.0f32, -2.0, 0.1, -0.05, 1.0, 0.0];
        let rows: Vec<(f32, Vec<(u32, f32)>)> = ys
            .iter()
            .enumerate()
            .map(|(i, &y)| (y, vec![(i as u32, s)]))
            .collect();
        let ds = Dataset::from_rows(d, &rows);
        let layout = Layout {
            features: d,
            classes: 1,
            bias: false,
        };
        let lambda = 0.1;
        let obj = Objective {
            data: &ds,
            loss: Squared,
            reg: AnyReg(spec(RegKind::L1, lambda)),
            layout,
            alpha: 0.0,
            threads: 1,
        };
        let mut x = vec![0.0; layout.coords()];
        let stop = solve(&obj, &mut x, 1.0, 1e-20, 10_000, |_, _| true);
        assert_eq!(stop, FistaStop::Converged);
        for (i, &y) in ys.iter().enumerate() {
            let want = crate::model::reg::soft_threshold(f64::from(y) / f64::from(s), lambda);
            assert!((x[i] - want).abs() < 1e-8, "x[{i}] = {} want {want}", x[i]);
        }
    }

    /// On random sparse logistic data the solution satisfies the optimality condition
    /// P(x) = 0 to high accuracy, and random perturbations never lower Psi.
    #[test]
    fn logistic_l1_is_optimal() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let d = 30;
        let rows: Vec<(f32, Vec<(u32, f32)>)> = (0..300)
            .map(|_| {
                let mut fs: Vec<u32> = (0..5).map(|_| rng.random_range(0..d as u32)).collect();
                fs.sort();
                fs.dedup();
                let y = if rng.random_bool(0.4) { 1.0 } else { -1.0 };
                (
                    y,
                    fs.into_iter()
                        .map(|f| (f, rng.random_range(-1.0..1.0f32)))
                        .collect(),
                )
            })
            .collect();
        let ds = Dataset::from_rows(d, &rows);
        let layout = Layout {
            features: d,
            classes: 1,
            bias: true,
        };
        let obj = Objective {
            data: &ds,
            loss: Logistic,
            reg: AnyReg(spec(RegKind::L1, 0.01)),
            layout,
            alpha: 0.0,
            threads: 2,
        };
        let mut x = vec![0.0; layout.coords()];
        let stop = solve(&obj, &mut x, 1.0, 1e-16, 20_000, |_, _| true);
        assert_eq!(stop, FistaStop::Converged);
        let mut g = vec![0.0; x.len()];
        obj.f_and_grad(&x, Some(&mut g));
        assert!(obj.pgm_sq_norm(&x, &g, 1.0) < 1e-12);
        let psi = obj.psi(&x);
        for _ in 0..200 {
            let mut z = x.clone();
            let i = rng.random_range(0..z.len());
            z[i] += rng.random_range(-1e-3..1e-3);
            assert!(obj.psi(&z) >= psi - 1e-12);
        }
        assert!(
            x.iter().take(d).any(|&v| v == 0.0),
            "L1 should zero some weights"
        );
    }
}
