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
//!
//! Diagonal metric (optional): with factors `d > 0` per coordinate the method runs in the
//! norm `||v||^2_{D^-1} = sum v_c^2 / d_c`, i.e. the step of coordinate c is `d_c / L`:
//! `x+ = prox_{h, D/L}(y - D grad f(y) / L)`, with the sufficient-decrease test and G
//! measured in that norm. This is FISTA for `f(D^(1/2) u) + h(D^(1/2) u)` written in x,
//! so the guarantees carry over, and for a separable h the optimum does not change. On
//! one-hot data whose column frequencies span orders of magnitude, Jacobi factors
//! `d_j ~ n / s_j` make every column about equally well conditioned; the plain method
//! is limited by the most frequent column and crawls on the rare ones.

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

/// Why a full-data solver (FISTA, [`crate::cd`]) stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverStop {
    Converged,
    /// No step decreases the objective any more: the model is optimal to rounding, short
    /// of the tolerance.
    Stalled,
    MaxIters,
    /// The callback asked to stop.
    Interrupted,
    /// The objective became NaN or infinite.
    Diverged,
}

/// Minimizes Psi from `x` (updated in place to the solution). `l0` is a first Lipschitz
/// estimate (any positive value works; a good one saves backtracking). `metric`: one
/// factor `d > 0` per coordinate (see the module doc; only for a separable h, see
/// [`Objective::prox_metric`]), or `None` for the plain method. `observe` sees every
/// iteration and returns false to stop.
pub fn solve<L: Loss>(
    obj: &Objective<L>,
    x: &mut Vec<f64>,
    l0: f64,
    tol: f64,
    max_iters: usize,
    metric: Option<&[f64]>,
    mut observe: impl FnMut(&FistaIter, &[f64]) -> bool,
) -> SolverStop {
    let n = x.len();
    if let Some(d) = metric {
        assert_eq!(d.len(), n, "one metric factor per coordinate");
    }
    let dc = |i: usize| metric.map_or(1.0, |d| d[i]);
    let mut lip = l0.max(1e-12);
    let mut y = x.clone();
    let mut x_new = vec![0.0; n];
    let mut grad = vec![0.0; n];
    let mut t = 1.0f64;
    let mut psi = obj.psi(x);
    if !psi.is_finite() {
        return SolverStop::Diverged;
    }
    let mut g0: Option<f64> = None;
    for iter in 1..=max_iters {
        let fy = obj.f_and_grad(&y, Some(&mut grad));
        // Backtracking: find L with f(x+) <= f(y) + <g, x+ - y> + L/2 ||x+ - y||^2.
        let fx_new = loop {
            let eta = 1.0 / lip;
            for i in 0..n {
                x_new[i] = y[i] - eta * dc(i) * grad[i];
            }
            match metric {
                None => obj.prox(eta, &mut x_new),
                Some(d) => obj.prox_metric(eta, d, &mut x_new),
            }
            let fx = obj.f_and_grad(&x_new, None);
            let (mut lin, mut quad) = (0.0, 0.0);
            for i in 0..n {
                let d = x_new[i] - y[i];
                lin += grad[i] * d;
                quad += d * d / dc(i);
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
            .enumerate()
            .map(|(i, (a, b))| ((a - b) * lip).powi(2) / dc(i))
            .sum();
        let psi_new = fx_new + obj.h(&x_new);
        if !psi_new.is_finite() {
            return SolverStop::Diverged;
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
            return SolverStop::Interrupted;
        }
        if gmap <= tol * g0v {
            return SolverStop::Converged;
        }
        lip *= 0.9;
    }
    SolverStop::MaxIters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::model::loss::{Logistic, Squared};
    use crate::model::reg::RegKind;
    use crate::testing::{objective, orthogonal_lasso, spec};
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// The lasso with an orthogonal design has a closed-form solution
    /// ([`orthogonal_lasso`]).
    #[test]
    fn lasso_orthonormal_closed_form() {
        let ys = [3.0f32, -2.0, 0.1, -0.05, 1.0, 0.0];
        let (ds, want) = orthogonal_lasso(&ys, 0.1);
        let obj = objective(&ds, false, Squared, spec(RegKind::L1, 0.1), 1);
        let mut x = vec![0.0; obj.layout.coords()];
        let stop = solve(&obj, &mut x, 1.0, 1e-20, 10_000, None, |_, _| true);
        assert_eq!(stop, SolverStop::Converged);
        for (i, w) in want.iter().enumerate() {
            assert!((x[i] - w).abs() < 1e-8, "x[{i}] = {} want {w}", x[i]);
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
        let obj = objective(&ds, true, Logistic, spec(RegKind::L1, 0.01), 2);
        let mut x = vec![0.0; obj.layout.coords()];
        let stop = solve(&obj, &mut x, 1.0, 1e-16, 20_000, None, |_, _| true);
        assert_eq!(stop, SolverStop::Converged);
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

    /// In a diagonal metric FISTA reaches the plain method's optimum (a separable h does
    /// not move it) and, on one-hot columns of very different frequencies with Jacobi
    /// factors, in fewer iterations.
    #[test]
    fn diagonal_metric_keeps_the_optimum_and_converges_faster() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let d = 60;
        // Column j is active with probability ~ (j+1)^-1.5: frequencies span 460x.
        let rows: Vec<(f32, Vec<(u32, f32)>)> = (0..5000)
            .map(|_| {
                let fs: Vec<(u32, f32)> = (0..d as u32)
                    .filter(|&j| rng.random_bool(0.5 / f64::from(j + 1).powf(1.5)))
                    .map(|j| (j, 1.0))
                    .collect();
                let s: f32 = fs
                    .iter()
                    .map(|&(j, _)| if j % 3 == 0 { 1.0 } else { -0.5 })
                    .sum();
                let y = if rng.random_bool(1.0 / (1.0 + f64::from(-s).exp())) {
                    1.0
                } else {
                    0.0
                };
                (y, fs)
            })
            .collect();
        let ds = Dataset::from_rows(d, &rows);
        let obj = objective(&ds, true, Logistic, spec(RegKind::L1, 2e-3), 2);
        let n = ds.rows() as f64;
        let mut metric: Vec<f64> = (0..d)
            .map(|j| {
                let s = (0..ds.rows())
                    .filter(|&i| ds.row(i).indices.contains(&(j as u32)))
                    .count();
                (n + 1.0) / (s as f64 + 1.0)
            })
            .collect();
        metric.push(1.0);
        // Psi along the iterations, and the iteration count at convergence.
        let run = |m: Option<&[f64]>| {
            let mut x = vec![0.0; obj.layout.coords()];
            let mut trace = Vec::new();
            let stop = solve(&obj, &mut x, 1.0, 1e-20, 50_000, m, |it, _| {
                trace.push(it.psi);
                true
            });
            assert_eq!(stop, SolverStop::Converged);
            trace
        };
        let plain = run(None);
        let scaled = run(Some(&metric));
        let (pp, ps) = (*plain.last().unwrap(), *scaled.last().unwrap());
        assert!((pp - ps).abs() <= 1e-10 * pp, "psi {pp} vs {ps}");
        // Iterations to a relative gap of 1e-6.
        let reach = |t: &[f64]| t.iter().position(|&p| p <= pp * (1.0 + 1e-6)).unwrap();
        let (rp, rs) = (reach(&plain), reach(&scaled));
        eprintln!("iterations to 1e-6: metric {rs}, plain {rp}");
        assert!(rs < rp, "metric {rs} iterations, plain {rp}");
    }
}
