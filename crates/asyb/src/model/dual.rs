//! The duality gap: a certificate of how far a model is from the optimum.
//!
//! With `F(z) = (1/n) sum_i loss(z_i, y_i)` and the margins `z = X w`, Psi is
//! `F(X w) + h(w)`, whose Fenchel dual is `D(theta) = -(1/n) sum_i loss*(theta_i, y_i) -
//! h*(-X' theta / n)`, with the intercept (a coordinate that h leaves free) adding the
//! constraint `sum_i theta_i = 0`. Every dual-feasible theta gives `D(theta) <= Psi* <=
//! Psi(w)`, so `Psi(w) - D(theta)` bounds `Psi(w) - Psi*` from above: the run can say how
//! close it is without knowing Psi*.
//!
//! The dual point is the one the working-set solvers use: the loss derivatives at the
//! model, `theta_i = loss'(z_i)`, which is the dual optimum at the primal optimum, made
//! feasible by factors in [0, 1] (every loss domain here is an interval holding 0, so a
//! derivative times such a factor stays in it):
//! - with an intercept, the side (positive or negative derivatives) with the larger
//!   sum is scaled down to the other's, so that the derivatives sum to 0;
//! - then every theta is scaled by the largest s that makes `h*(-s X' theta / n)`
//!   finite (for L1, `lambda / ||X' theta / n||_inf`; 1 where h* is finite everywhere);
//!   for an elastic net the L1 part's factor is tried as well, and the better one kept.
//!
//! The gap is not defined (`None`) for a nonconvex objective (`alpha > 0`), a loss
//! without a conjugate in closed form, several outputs with an intercept (the
//! constraint is then one per class), or a regularizer whose dual needs more than a
//! scale (h = 0 or nonnegativity, unless the gradient already lies in its domain).

use super::loss::Loss;
use super::objective::{Objective, Weights};
use super::reg::Regularizer;
use crate::par;

impl<L: Loss> Objective<'_, L> {
    /// Whether the duality gap is defined for this objective (see the module doc).
    pub fn gap_defined(&self) -> bool {
        let k = self.layout.classes;
        self.alpha == 0.0
            && self.n() > 0
            && !(k > 1 && self.layout.bias)
            && self
                .loss
                .conjugate(&vec![0.0; k], self.labels()[0])
                .is_some()
    }

    /// f(w) and grad f(w) as [`Objective::f_and_grad`] gives them, keeping every row's
    /// loss derivatives in `theta` (`n * classes` values) for [`Objective::gap_at`].
    /// Only where [`Objective::gap_defined`].
    pub fn f_and_grad_keeping_derivs<W: Weights + ?Sized>(
        &self,
        w: &W,
        grad: &mut [f64],
        theta: &mut [f32],
    ) -> f64 {
        debug_assert!(self.alpha == 0.0);
        let f = self.loss_pass_keeping_derivs(w, grad, theta);
        if !self.layout.bias {
            let k = self.layout.classes;
            let b = self.layout.bias_row() * k;
            grad[b..b + k].fill(0.0);
        }
        f
    }

    /// An upper bound on `psi - Psi*` for the model `w` whose objective is `psi` (on
    /// the same rows), from the dual point described in the module doc; `None` where the
    /// module doc says. Costs a pass over the rows.
    pub fn duality_gap<W: Weights + ?Sized>(&self, w: &W, psi: f64) -> Option<f64> {
        if !self.gap_defined() {
            return None;
        }
        let mut grad = vec![0.0; self.layout.coords()];
        let mut theta = vec![0.0f32; self.n() * self.layout.classes];
        self.f_and_grad_keeping_derivs(w, &mut grad, &mut theta);
        self.gap_at(psi, grad, &theta)
    }

    /// The duality gap of a model whose objective is `psi`, from its loss gradient
    /// `grad` and its loss derivatives `theta`
    /// ([`Objective::f_and_grad_keeping_derivs`]); `grad`'s memory is reused. With an
    /// intercept, costs part of a pass over the rows.
    pub fn gap_at(&self, psi: f64, mut grad: Vec<f64>, theta: &[f32]) -> Option<f64> {
        if !psi.is_finite() || !self.gap_defined() {
            return None;
        }
        let labels = self.labels();
        let fc = self.layout.features * self.layout.classes;
        grad.truncate(fc);
        // (factor of positive derivatives, factor of negative ones)
        let mut side = (1.0, 1.0);
        if self.layout.bias {
            side = self.balance(theta, &mut grad);
        }
        for g in &mut grad {
            *g = -*g;
        }
        let u = grad;
        let gl = self.reg.span();
        let s_max = u
            .chunks(gl)
            .map(|g| self.reg.dual_scale(g))
            .fold(1.0, f64::min);
        if s_max.is_nan() || s_max <= 0.0 {
            return None;
        }
        let mut scales = vec![s_max];
        // An elastic net's h* is finite everywhere, but its L1 part may still ask for a
        // smaller factor: the one that would make the pure L1 dual feasible.
        if let crate::model::reg::RegKind::ElasticNet = self.reg.0.kind {
            let l1 = self.reg.0.lambda * self.reg.0.l1_ratio;
            let top = u.iter().fold(0.0, |m: f64, x| m.max(x.abs()));
            if l1 > 0.0 && top > l1 {
                scales.push((l1 / top).min(s_max));
            }
        }
        let best = scales
            .into_iter()
            .map(|s| self.dual_value(theta, &labels, side, s, &u))
            .fold(f64::NEG_INFINITY, f64::max);
        best.is_finite().then(|| (psi - best).max(0.0))
    }

    /// Scales the side of `theta` (positive or negative values) whose sum is larger
    /// down to the other's sum, and `grad` (`X' theta / n` on the feature coordinates)
    /// with it; returns the factors of the positive and the negative side.
    fn balance(&self, theta: &[f32], grad: &mut [f64]) -> (f64, f64) {
        let (pos, neg) = theta.iter().fold((0.0, 0.0), |(p, m), &t| {
            let t = f64::from(t);
            if t > 0.0 {
                (p + t, m)
            } else {
                (p, m - t)
            }
        });
        if pos == neg {
            return (1.0, 1.0);
        }
        let (c, big_positive) = if pos > neg {
            (neg / pos, true)
        } else {
            (pos / neg, false)
        };
        let big = self.rows_combination(|i| {
            let t = f64::from(theta[i]);
            if (t > 0.0) == big_positive && t != 0.0 {
                t
            } else {
                0.0
            }
        });
        for (g, b) in grad.iter_mut().zip(&big) {
            *g -= (1.0 - c) * b;
        }
        if big_positive {
            (c, 1.0)
        } else {
            (1.0, c)
        }
    }

    /// D at the dual point `s * side * theta`: `-(1/n) sum_i loss*(theta_i) - h*(s u)`,
    /// `u = -X' (side * theta) / n`.
    fn dual_value(
        &self,
        theta: &[f32],
        labels: &[f32],
        side: (f64, f64),
        s: f64,
        u: &[f64],
    ) -> f64 {
        let k = self.layout.classes;
        let n = labels.len();
        let sums = par::map_ranges(n, self.threads, |r| {
            let mut t = vec![0.0; k];
            let mut sum = 0.0;
            for i in r {
                for (tc, &v) in t.iter_mut().zip(&theta[i * k..(i + 1) * k]) {
                    let v = f64::from(v);
                    *tc = s * v * if v > 0.0 { side.0 } else { side.1 };
                }
                sum += self.loss.conjugate(&t, labels[i]).unwrap_or(f64::INFINITY);
            }
            sum
        });
        let loss_part = sums.iter().sum::<f64>() / n as f64;
        let su: Vec<f64> = u.iter().map(|x| s * x).collect();
        let reg_part: f64 = su
            .chunks(self.reg.span())
            .map(|g| self.reg.conjugate(g))
            .sum();
        -loss_part - reg_part
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::fista::{solve, SolverStop};
    use crate::model::loss::{Huber, Logistic, Softmax, Squared, SquaredHinge};
    use crate::model::objective::AnyReg;
    use crate::model::reg::{RegKind, RegSpec};
    use crate::model::Layout;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus as R;

    const N: usize = 70;
    const D: usize = 6;

    /// Rows of `D` features (about half of them set), labels from `label` of a planted
    /// margin.
    fn data(seed: u64, label: &dyn Fn(&mut R, f64) -> f32) -> Dataset {
        let mut rng = R::seed_from_u64(seed);
        let planted: Vec<f64> = (0..D).map(|_| rng.random_range(-1.0..1.0)).collect();
        let rows: Vec<(f32, Vec<(u32, f32)>)> = (0..N)
            .map(|_| {
                let mut feats: Vec<(u32, f32)> = Vec::new();
                for f in 0..D as u32 {
                    if rng.random_bool(0.6) {
                        feats.push((f, rng.random_range(-1.5..1.5f32)));
                    }
                }
                let z: f64 = feats
                    .iter()
                    .map(|&(f, v)| planted[f as usize] * f64::from(v))
                    .sum();
                (label(&mut rng, z), feats)
            })
            .collect();
        Dataset::from_rows(D, &rows)
    }

    fn regs() -> Vec<RegSpec> {
        let base = RegSpec {
            kind: RegKind::L1,
            lambda: 0.05,
            l1_ratio: 0.5,
            lower: -0.3,
            upper: 0.5,
            group_len: 1,
        };
        vec![
            base,
            RegSpec {
                kind: RegKind::ElasticNet,
                ..base
            },
            RegSpec {
                kind: RegKind::L2,
                lambda: 0.1,
                ..base
            },
            RegSpec {
                kind: RegKind::GroupLasso,
                group_len: 2,
                ..base
            },
            RegSpec {
                kind: RegKind::Box,
                ..base
            },
        ]
    }

    fn objective<L: Loss>(
        ds: &Dataset,
        classes: usize,
        bias: bool,
        loss: L,
        reg: RegSpec,
    ) -> Objective<'_, L> {
        Objective {
            data: ds,
            rows: None,
            loss,
            reg: AnyReg(RegSpec {
                group_len: reg.group_len * classes,
                ..reg
            }),
            layout: Layout {
                features: D,
                classes,
                bias,
            },
            alpha: 0.0,
            threads: 2,
        }
    }

    /// The optimum by FISTA, to a gradient mapping 1e-6 of its start (the gradient's
    /// derivatives are rounded to f32, so much further is noise).
    fn optimum<L: Loss>(obj: &Objective<L>) -> (Vec<f64>, f64) {
        let mut x = vec![0.0; obj.layout.coords()];
        let stop = solve(obj, &mut x, 1.0, 1e-12, 20_000, None, |_, _| true);
        assert_eq!(stop, SolverStop::Converged, "{}", L::INFO.name);
        let psi = obj.psi(&x);
        (x, psi)
    }

    /// For every regularizer, with and without an intercept: the gap is 0 (to 1e-6 of
    /// Psi*) at the optimum, and at perturbed and random models an upper bound on
    /// Psi - Psi* (Psi* from FISTA, below 1e-9 of the true one).
    fn check<L: Loss>(loss: L, classes: usize, label: &dyn Fn(&mut R, f64) -> f32) {
        let name = L::INFO.name;
        let ds = data(7, label);
        let mut rng = R::seed_from_u64(11);
        for reg in regs() {
            for bias in [false, true] {
                let obj = objective(&ds, classes, bias, loss, reg);
                let case = format!("{name} {:?} bias {bias}", reg.kind);
                assert!(obj.gap_defined(), "{case}");
                let (x, psi_star) = optimum(&obj);
                let at_opt = obj.duality_gap(&x, psi_star).expect("defined");
                assert!(
                    at_opt <= 1e-6 * psi_star.abs().max(1.0),
                    "{case}: gap {at_opt:e} at the optimum"
                );
                for t in 0..40 {
                    let spread = if t < 20 { 1e-3 } else { 0.5 };
                    let mut w: Vec<f64> = x
                        .iter()
                        .map(|&v| v + rng.random_range(-spread..spread))
                        .collect();
                    if !bias {
                        let b = D * classes;
                        w[b..].fill(0.0);
                    }
                    // Stay feasible for the box.
                    obj.prox(0.0, &mut w);
                    let psi = obj.psi(&w);
                    let Some(gap) = obj.duality_gap(&w, psi) else {
                        panic!("{case}: no gap at a feasible model");
                    };
                    assert!(
                        gap >= psi - psi_star - 1e-9,
                        "{case}: gap {gap:e} below Psi - Psi* {:e}",
                        psi - psi_star
                    );
                }
            }
        }
    }

    fn sign(rng: &mut R, z: f64) -> f32 {
        if rng.random_bool(0.15) == (z > 0.0) {
            -1.0
        } else {
            1.0
        }
    }

    fn real(rng: &mut R, z: f64) -> f32 {
        // Mostly the margin with noise, a few outliers for Huber.
        let noise = if rng.random_bool(0.1) { 4.0 } else { 0.3 };
        (z + rng.random_range(-noise..noise)) as f32
    }

    #[test]
    fn logistic_gap_is_a_tight_upper_bound() {
        check(Logistic, 1, &sign);
    }

    #[test]
    fn squared_hinge_gap_is_a_tight_upper_bound() {
        check(SquaredHinge, 1, &sign);
    }

    #[test]
    fn squared_gap_is_a_tight_upper_bound() {
        check(Squared, 1, &real);
    }

    #[test]
    fn huber_gap_is_a_tight_upper_bound() {
        check(Huber::with_param(0.7), 1, &real);
    }

    #[test]
    fn softmax_gap_without_an_intercept_is_a_tight_upper_bound() {
        let ds = data(3, &|rng, z| {
            let c = if z > 0.4 {
                2.0
            } else if z < -0.4 {
                0.0
            } else {
                1.0
            };
            if rng.random_bool(0.1) {
                (c + 1.0) % 3.0
            } else {
                c
            }
        });
        for reg in regs() {
            let obj = objective(&ds, 3, false, Softmax, reg);
            let (x, psi_star) = optimum(&obj);
            let gap = obj.duality_gap(&x, psi_star).expect("defined");
            assert!(
                gap <= 1e-6 * psi_star.abs().max(1.0),
                "{:?}: {gap:e}",
                reg.kind
            );
            let w: Vec<f64> = x.iter().map(|v| v * 0.8).collect();
            let psi = obj.psi(&w);
            let gap = obj.duality_gap(&w, psi).expect("defined");
            assert!(gap >= psi - psi_star - 1e-9, "{:?}", reg.kind);
        }
        // One intercept per class means a constraint per class: no gap.
        let obj = objective(&ds, 3, true, Softmax, regs()[0]);
        assert!(!obj.gap_defined());
    }

    #[test]
    fn no_gap_where_the_dual_needs_more_than_a_scale() {
        let ds = data(5, &sign);
        let l1 = regs()[0];
        // Nonconvex term.
        let mut obj = objective(&ds, 1, true, Logistic, l1);
        obj.alpha = 1e-3;
        assert!(!obj.gap_defined());
        assert_eq!(obj.duality_gap(&vec![0.0; D + 1], 1.0), None);
        // h = 0 away from the optimum: the gradient is not 0, and no factor makes it so.
        let none = RegSpec {
            kind: RegKind::None,
            ..l1
        };
        let obj = objective(&ds, 1, false, Logistic, none);
        let w = vec![0.0; D + 1];
        assert_eq!(obj.duality_gap(&w, obj.psi(&w)), None);
    }
}
