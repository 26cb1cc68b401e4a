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
//! The factors are known only once the gradient `X' theta / n` is complete, so the
//! dual value needs the derivatives after the gradient's pass. Where they are few
//! ([`Objective::keeps_derivs`]) that pass keeps them, rounded to f32 as the gradient is
//! summed from them. On more rows they would add `4 n` bytes to the evaluation's memory
//! peak, the run's: the pass then keeps only their sums, and the gap recomputes them
//! row by row in a second pass by the first pass's own row code, rounding the same way:
//! the same dual point and, summed in the same order, the same value to the last bit.
//! The second pass reads the model at every row's features again but adds up no
//! gradient (with an intercept, a third one scales the larger side of the gradient).
//!
//! The gap is not defined (`None`) for a nonconvex objective (`alpha > 0`), a loss
//! without a conjugate in closed form, several outputs with an intercept (the
//! constraint is then one per class), or a regularizer whose dual needs more than a
//! scale (h = 0 or nonnegativity, unless the gradient already lies in its domain).

use std::ops::Range;

use super::loss::Loss;
use super::objective::{each_adding, DerivSink, KeepDerivs, Objective, Weights};
use super::reg::Regularizer;
use crate::par;

/// Bytes of the rows' loss derivatives (`n * classes` f32s) up to which the evaluation
/// keeps them for the duality gap rather than recompute them in a second pass. Their
/// share of the memory does not depend on the number of rows (4 bytes a row, about 5%
/// of a click-through row of 15 binary features in CSR), nor does the second pass's
/// share of an evaluation's time, so the choice is made on the bytes themselves: up to
/// 1 MiB (262,144 one-output rows) they are too few to matter to any run's memory (less
/// than a thread's stack, or the 2 MiB a huge page may add to the peak by the way it
/// falls) and are kept, sparing the second pass; past it they grow with the data, and
/// a run's memory goes first.
pub const KEEP_DERIVS_MAX_BYTES: usize = 1 << 20;

/// What the evaluation's gradient pass ([`Objective::f_and_grad_for_gap`]) leaves for
/// the duality gap ([`Objective::gap_after`]).
#[derive(Debug)]
pub struct GapPass {
    /// Every row's loss derivatives rounded to f32 (`classes` per row), where kept;
    /// else the gap recomputes them.
    theta: Option<Vec<f32>>,
    /// The sum of the positive derivatives and that of the negative ones' magnitudes.
    pos: f64,
    neg: f64,
}

/// The sink of the evaluation's gradient pass: the sums of the positive and the
/// negative derivatives, and the derivatives themselves where kept.
struct PassSink<'s> {
    keep: Option<KeepDerivs<'s>>,
    pos: f64,
    neg: f64,
}

impl DerivSink for PassSink<'_> {
    #[inline(always)]
    fn row(&mut self, i: usize, y: f32, dz: &mut [f64]) {
        if let Some(k) = self.keep.as_mut() {
            k.row(i, y, dz);
        }
        for &t in dz.iter() {
            if t > 0.0 {
                self.pos += t;
            } else {
                self.neg -= t;
            }
        }
    }
}

/// Leaves `step * theta_i` for the rows whose derivative lies on the side to scale
/// down, 0 for the others: a pass adds `step * X' theta_side` to its gradient
/// ([`Objective::balance`]). One output.
struct ScaleSide {
    positive: bool,
    step: f64,
}

impl DerivSink for ScaleSide {
    #[inline]
    fn row(&mut self, _i: usize, _y: f32, dz: &mut [f64]) {
        let t = dz[0];
        dz[0] = if t != 0.0 && (t > 0.0) == self.positive {
            self.step * t
        } else {
            0.0
        };
    }
}

/// Sums `loss*(s * side * theta_i, y_i)` over the rows, one sum per factor s of
/// `scales` ([`Objective::dual_values`]). A row of weight `c` hands its sink
/// `c theta_i`, and its term is `c loss*(s side theta_i)` (none for weight 0).
struct Conjugates<'a, 'o, L: Loss> {
    obj: &'a Objective<'o, L>,
    /// Whether the rows have weights (else every weight is 1, not looked up).
    weighted: bool,
    side: (f64, f64),
    scales: &'a [f64],
    t: Vec<f64>,
    sums: Vec<f64>,
}

impl<L: Loss> DerivSink for Conjugates<'_, '_, L> {
    #[inline]
    fn row(&mut self, i: usize, y: f32, dz: &mut [f64]) {
        let c = if self.weighted {
            self.obj.row_weight(i)
        } else {
            1.0
        };
        if c == 0.0 {
            return;
        }
        for (&s, sum) in self.scales.iter().zip(self.sums.iter_mut()) {
            for (tc, &v) in self.t.iter_mut().zip(dz.iter()) {
                *tc = s * v * if v > 0.0 { self.side.0 } else { self.side.1 };
                if c != 1.0 {
                    *tc /= c;
                }
            }
            let conj = self.obj.loss.conjugate(&self.t, y).unwrap_or(f64::INFINITY);
            *sum += if c == 1.0 { conj } else { c * conj };
        }
    }
}

impl<L: Loss> Objective<'_, L> {
    /// Whether the duality gap is defined for this objective (see the module doc).
    pub fn gap_defined(&self) -> bool {
        let k = self.layout.classes;
        self.alpha == 0.0
            && self.n() > 0
            && !(k > 1 && self.layout.bias)
            && self.loss.conjugate(&vec![0.0; k], self.label(0)).is_some()
    }

    /// Whether the evaluation's pass keeps every row's loss derivatives for the
    /// duality gap: when they take at most [`KEEP_DERIVS_MAX_BYTES`]; else the gap
    /// recomputes them (see the module doc).
    pub fn keeps_derivs(&self) -> bool {
        self.n() * self.layout.classes * std::mem::size_of::<f32>() <= KEEP_DERIVS_MAX_BYTES
    }

    /// f(w) and grad f(w) as [`Objective::f_and_grad`] gives them, the gradient summed
    /// from the loss derivatives rounded to f32 (the dual point's `X' theta / n`
    /// exactly), and what [`Objective::gap_after`] needs: with `keep`, the derivatives
    /// themselves (`n * classes` f32s). Only where [`Objective::gap_defined`].
    pub fn f_and_grad_for_gap<W: Weights + ?Sized>(
        &self,
        w: &W,
        grad: &mut [f64],
        keep: bool,
    ) -> (f64, GapPass) {
        debug_assert!(self.alpha == 0.0);
        let mut theta = keep.then(|| vec![0.0f32; self.n() * self.layout.classes]);
        let keeps: Vec<Option<KeepDerivs>> = match theta.as_deref_mut() {
            Some(t) => self.keep_sinks(t).into_iter().map(Some).collect(),
            None => self.shares().iter().map(|_| None).collect(),
        };
        let sinks: Vec<PassSink> = keeps
            .into_iter()
            .map(|keep| PassSink {
                keep,
                pos: 0.0,
                neg: 0.0,
            })
            .collect();
        let (f, sinks) = self.pass_with(w, Some(&mut *grad), sinks, true);
        let (pos, neg) = sinks
            .iter()
            .fold((0.0, 0.0), |(p, m), s| (p + s.pos, m + s.neg));
        drop(sinks);
        if !self.layout.bias {
            let k = self.layout.classes;
            let b = self.layout.bias_row() * k;
            grad[b..b + k].fill(0.0);
        }
        (f, GapPass { theta, pos, neg })
    }

    /// An upper bound on `psi - Psi*` for the model `w` whose objective is `psi` (on
    /// the same rows), from the dual point described in the module doc; `None` where the
    /// module doc says. Costs the gradient's pass over the rows and what
    /// [`Objective::gap_after`] costs.
    pub fn duality_gap<W: Weights + ?Sized>(&self, w: &W, psi: f64) -> Option<f64> {
        self.duality_gap_keeping(w, psi, self.keeps_derivs())
    }

    /// [`Objective::duality_gap`] with the derivatives kept or recomputed as `keep`
    /// says.
    fn duality_gap_keeping<W: Weights + ?Sized>(&self, w: &W, psi: f64, keep: bool) -> Option<f64> {
        if !self.gap_defined() {
            return None;
        }
        let mut grad = vec![0.0; self.layout.coords()];
        let (_, pass) = self.f_and_grad_for_gap(w, &mut grad, keep);
        self.gap_after(w, psi, grad, pass)
    }

    /// The duality gap of the model `w` whose objective is `psi`, from its loss
    /// gradient `grad` and the `pass` that computed it
    /// ([`Objective::f_and_grad_for_gap`] at the same `w`); `grad`'s memory is reused.
    /// Where the pass kept the derivatives, costs a scan of them (and with an
    /// intercept, part of a pass over the rows); where it did not, a pass over the rows
    /// that reads the model but adds up no gradient (two with an intercept).
    pub fn gap_after<W: Weights + ?Sized>(
        &self,
        w: &W,
        psi: f64,
        mut grad: Vec<f64>,
        pass: GapPass,
    ) -> Option<f64> {
        if !psi.is_finite() || !self.gap_defined() {
            return None;
        }
        let theta = pass.theta.as_deref();
        // (factor of positive derivatives, factor of negative ones)
        let mut side = (1.0, 1.0);
        if self.layout.bias {
            side = self.balance(w, theta, (pass.pos, pass.neg), &mut grad);
        }
        grad.truncate(self.layout.features * self.layout.classes);
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
        let best = self
            .dual_values(w, theta, side, &scales, &u)
            .into_iter()
            .fold(f64::NEG_INFINITY, f64::max);
        best.is_finite().then(|| (psi - best).max(0.0))
    }

    /// Hands `sink` the rounded loss derivatives of the rows `rows` at the model `w`,
    /// and adds what it leaves into `g` when given (as the gradient's pass adds them):
    /// from `theta` where the gradient's pass kept them, else recomputed by the pass's
    /// own row code (the same values).
    fn derivs_again<W: Weights + ?Sized, S: DerivSink>(
        &self,
        w: &W,
        theta: Option<&[f32]>,
        rows: Range<usize>,
        sink: &mut S,
        g: Option<&mut [f64]>,
    ) {
        debug_assert!(S::ROUNDS);
        match theta {
            Some(theta) => self.kept_rows(theta, rows, sink, g),
            // With the loss (as the gradient's pass): the same derivatives.
            None => {
                self.pass_rows(w, rows, sink, g, true);
            }
        }
    }

    /// Scales the side of the derivatives (positive or negative values) whose sum of
    /// `sums` (positive, negative magnitudes) is larger down to the other's sum, and
    /// `grad` (`X' theta / n`) with it; returns the factors of the positive and the
    /// negative side. One output only.
    fn balance<W: Weights + ?Sized>(
        &self,
        w: &W,
        theta: Option<&[f32]>,
        (pos, neg): (f64, f64),
        grad: &mut [f64],
    ) -> (f64, f64) {
        debug_assert_eq!(self.layout.classes, 1);
        if pos == neg {
            return (1.0, 1.0);
        }
        let (c, positive) = if pos > neg {
            (neg / pos, true)
        } else {
            (pos / neg, false)
        };
        // grad -= (1 - c) X' theta_side / n (and the intercept's coordinate with it).
        let step = -(1.0 - c) / self.n() as f64;
        each_adding(self.shares(), grad, |r, g| {
            let mut sink = ScaleSide { positive, step };
            self.derivs_again(w, theta, r, &mut sink, Some(g));
        });
        if positive {
            (c, 1.0)
        } else {
            (1.0, c)
        }
    }

    /// D at the dual points `s * side * theta` for each factor s of `scales`:
    /// `-(1/n) sum_i loss*(s side theta_i) - h*(s u)`, `u = -X' (side * theta) / n`.
    /// One pass over the rows for all the factors.
    fn dual_values<W: Weights + ?Sized>(
        &self,
        w: &W,
        theta: Option<&[f32]>,
        side: (f64, f64),
        scales: &[f64],
        u: &[f64],
    ) -> Vec<f64> {
        let k = self.layout.classes;
        let n = self.n();
        let sums = par::each(self.shares(), |r| {
            let mut sink = Conjugates {
                obj: self,
                weighted: self.data.weights.is_some(),
                side,
                scales,
                t: vec![0.0; k],
                sums: vec![0.0; scales.len()],
            };
            self.derivs_again(w, theta, r, &mut sink, None);
            sink.sums
        });
        let gl = self.reg.span();
        let mut su = vec![0.0; gl];
        scales
            .iter()
            .enumerate()
            .map(|(j, &s)| {
                let loss_part = sums.iter().map(|p| p[j]).sum::<f64>() / n as f64;
                // h*(s u) group by group, with one group's buffer.
                let reg_part: f64 = u
                    .chunks(gl)
                    .map(|g| {
                        let su = &mut su[..g.len()];
                        for (a, &x) in su.iter_mut().zip(g) {
                            *a = s * x;
                        }
                        self.reg.conjugate(su)
                    })
                    .sum();
                -loss_part - reg_part
            })
            .collect()
    }
}

impl<L: Loss> Objective<'_, L> {
    /// lambda_max: the smallest strength of this objective's regularizer at which the
    /// zero model (the intercept, where trained, at its own optimum) is optimal, so that
    /// every weight is zero: `||grad f||_inf` over the features at that model for L1,
    /// the same divided by `l1_ratio` for an elastic net, the largest group norm of the
    /// gradient for a group lasso. It is where the zero dual point of the module doc is
    /// feasible. `None` for the other regularizers (no such strength), the nonconvex
    /// term and several outputs with an intercept. With one class only, where the
    /// intercept alone drives the logistic loss to 0, it is about 0. Costs a pass over
    /// the rows, and a few over the labels for the intercept.
    pub fn lambda_max(&self) -> Option<f64> {
        use crate::model::reg::RegKind;
        let spec = self.reg.0;
        let per = match spec.kind {
            RegKind::L1 | RegKind::GroupLasso => 1.0,
            RegKind::ElasticNet if spec.l1_ratio > 0.0 => spec.l1_ratio,
            _ => return None,
        };
        let k = self.layout.classes;
        if self.alpha > 0.0 || self.n() == 0 || (k > 1 && self.layout.bias) {
            return None;
        }
        let mut w = vec![0.0; self.layout.coords()];
        if self.layout.bias {
            w[self.layout.bias_row()] = self.intercept_only()?;
        }
        let mut g = vec![0.0; w.len()];
        self.loss_pass(&w, Some(&mut g));
        let g = &g[..self.layout.features * k];
        let top = match spec.kind {
            RegKind::GroupLasso => g
                .chunks(self.reg.span())
                .map(|c| c.iter().map(|x| x * x).sum::<f64>().sqrt())
                .fold(0.0, f64::max),
            _ => g.iter().fold(0.0, |m: f64, x| m.max(x.abs())),
        };
        Some(top / per)
    }

    /// The intercept of the best constant model, `argmin_b (1/n) sum_i s_i loss(b, y_i)`
    /// (`s_i` the rows' weights), for
    /// one output: Newton's method with the loss's curvature (its bound where that
    /// vanishes) and halved steps until the mean loss decreases (where the loss has no
    /// finite minimizer, a point far enough that its derivative is below rounding).
    /// `None` if it is not finite.
    fn intercept_only(&self) -> Option<f64> {
        let labels = self.labels();
        let n = labels.len().max(1) as f64;
        let at = |b: f64| {
            let (mut f, mut d, mut c) = (0.0, 0.0, 0.0);
            let mut dz = [0.0];
            for (i, &y) in labels.iter().enumerate() {
                let s = self.row_weight(i);
                f += s * self.loss.grad(&[b], y, &mut dz);
                d += s * dz[0];
                c += s * self.loss.curvature_at(b, y, dz[0]);
            }
            (f / n, d / n, c / n)
        };
        let mut b = 0.0;
        for _ in 0..200 {
            let (f, d, c) = at(b);
            let c = if c > 1e-12 { c } else { L::INFO.curvature };
            let step = -d / c;
            let mut t = 1.0;
            // Near the minimizer the decrease is below the loss's rounding: a step that
            // raises it by no more than that is taken.
            let slack = 4.0 * f64::EPSILON * f.abs();
            while at(b + t * step).0 > f + 1e-4 * t * step * d + slack {
                t *= 0.5;
                if t < 1e-12 {
                    return b.is_finite().then_some(b);
                }
            }
            b += t * step;
            if (t * step).abs() <= 1e-13 * (1.0 + b.abs()) {
                break;
            }
        }
        b.is_finite().then_some(b)
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

    /// lambda_max is where the zero model (the intercept at its optimum) stops being
    /// optimal: its prox-gradient mapping is 0 just above it and not just below, for L1,
    /// the elastic net and the group lasso, with and without an intercept; the
    /// intercept is the closed form of the constant model (the log-odds of the positive
    /// share for the logistic loss, the mean label for the squared loss).
    #[test]
    fn lambda_max_is_where_the_zero_model_stops_being_optimal() {
        let binary = data(31, &|rng, z| {
            if z + rng.random_range(-0.5..0.5) > 0.2 {
                1.0
            } else {
                -1.0
            }
        });
        let real = data(32, &|rng, z| (z + rng.random_range(-0.3..0.3) + 0.7) as f32);
        fn check<L: Loss>(ds: &Dataset, loss: L) {
            for reg in regs().into_iter().filter(|r| {
                matches!(
                    r.kind,
                    RegKind::L1 | RegKind::ElasticNet | RegKind::GroupLasso
                )
            }) {
                for bias in [false, true] {
                    let obj = objective(ds, 1, bias, loss, reg);
                    let lm = obj.lambda_max().expect("defined");
                    assert!(lm > 0.0);
                    let mut w = vec![0.0; obj.layout.coords()];
                    if bias {
                        w[obj.layout.bias_row()] = obj.intercept_only().unwrap();
                    }
                    let pgm = |lambda: f64| {
                        let o = Objective {
                            reg: AnyReg(RegSpec {
                                lambda,
                                ..obj.reg.0
                            }),
                            ..obj
                        };
                        let mut g = vec![0.0; w.len()];
                        o.f_and_grad(&w, Some(&mut g));
                        o.pgm_sq_norm(&w, &g, 1.0)
                    };
                    let what = format!("{} {:?} bias {bias}", L::INFO.name, reg.kind);
                    assert!(
                        pgm(lm * (1.0 + 1e-9)) < 1e-15,
                        "{what}: {}",
                        pgm(lm * (1.0 + 1e-9))
                    );
                    assert!(
                        pgm(lm * (1.0 - 1e-3)) > 1e-12,
                        "{what}: {}",
                        pgm(lm * (1.0 - 1e-3))
                    );
                }
            }
        }
        check(&binary, Logistic);
        check(&real, Squared);
        let obj = objective(&binary, 1, true, Logistic, regs()[0]);
        let p = binary.labels.iter().filter(|&&y| y > 0.0).count() as f64 / N as f64;
        let b = obj.intercept_only().unwrap();
        assert!((b - (p / (1.0 - p)).ln()).abs() < 1e-10, "{b} vs {p}");
        let obj = objective(&real, 1, true, Squared, regs()[0]);
        let mean = real.labels.iter().map(|&y| f64::from(y)).sum::<f64>() / N as f64;
        assert!((obj.intercept_only().unwrap() - mean).abs() < 1e-12);
        // No threshold for L2; about 0 for one class only, where the intercept alone
        // drives the logistic loss to 0.
        assert_eq!(
            objective(&binary, 1, false, Logistic, regs()[2]).lambda_max(),
            None
        );
        let one = data(33, &|_, _| 1.0);
        let lm = objective(&one, 1, true, Logistic, regs()[0])
            .lambda_max()
            .unwrap();
        assert!((0.0..1e-10).contains(&lm), "{lm}");
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

    /// The gap by its definition, row by row on one thread, with none of the passes'
    /// machinery: every row's derivative rounded to f32, the side scaled down, the
    /// factors, the dual values in full.
    fn reference_gap<L: Loss>(obj: &Objective<L>, w: &[f64], psi: f64) -> Option<f64> {
        let (k, n, d) = (obj.layout.classes, obj.n(), obj.layout.features);
        let z = obj.margins(w);
        let mut theta = vec![0.0; n * k];
        let mut dz = vec![0.0; k];
        for i in 0..n {
            obj.loss.grad(&z[i * k..(i + 1) * k], obj.label(i), &mut dz);
            for (t, &v) in theta[i * k..(i + 1) * k].iter_mut().zip(&dz) {
                *t = f64::from(v as f32);
            }
        }
        if obj.layout.bias {
            let pos: f64 = theta.iter().filter(|&&t| t > 0.0).sum();
            let neg: f64 = -theta.iter().filter(|&&t| t < 0.0).sum::<f64>();
            let (p, m) = if pos > neg {
                (neg / pos, 1.0)
            } else if neg > pos {
                (1.0, pos / neg)
            } else {
                (1.0, 1.0)
            };
            for t in &mut theta {
                *t *= if *t > 0.0 { p } else { m };
            }
        }
        // u = -X' theta / n on the features.
        let mut u = vec![0.0; d * k];
        for i in 0..n {
            for (f, v) in obj.row_at(i).iter().filter(|&(f, _)| (f as usize) < d) {
                for c in 0..k {
                    u[f as usize * k + c] -= f64::from(v) * theta[i * k + c] / n as f64;
                }
            }
        }
        let gl = obj.reg.group_len();
        let s_max = u
            .chunks(gl)
            .map(|g| obj.reg.dual_scale(g))
            .fold(1.0, f64::min);
        if s_max.is_nan() || s_max <= 0.0 {
            return None;
        }
        let mut scales = vec![s_max];
        if let RegKind::ElasticNet = obj.reg.0.kind {
            let l1 = obj.reg.0.lambda * obj.reg.0.l1_ratio;
            let top = u.iter().fold(0.0, |m: f64, x| m.max(x.abs()));
            if l1 > 0.0 && top > l1 {
                scales.push((l1 / top).min(s_max));
            }
        }
        let best = scales
            .iter()
            .map(|&s| {
                let loss: f64 = (0..n)
                    .map(|i| {
                        let t: Vec<f64> = theta[i * k..(i + 1) * k].iter().map(|t| s * t).collect();
                        obj.loss
                            .conjugate(&t, obj.label(i))
                            .unwrap_or(f64::INFINITY)
                    })
                    .sum();
                let su: Vec<f64> = u.iter().map(|x| s * x).collect();
                let reg: f64 = su.chunks(gl).map(|g| obj.reg.conjugate(g)).sum();
                -loss / n as f64 - reg
            })
            .fold(f64::NEG_INFINITY, f64::max);
        best.is_finite().then(|| (psi - best).max(0.0))
    }

    /// The gap with the derivatives kept and recomputed: the same value to the last
    /// bit (the same dual point, summed in the same order), and that of
    /// [`reference_gap`] to rounding; the first pass gives the same loss and gradient
    /// either way.
    fn gap_both_ways<L: Loss>(obj: &Objective<L>, w: &[f64], psi: f64) -> Option<f64> {
        let kept = obj.duality_gap_keeping(w, psi, true);
        let again = obj.duality_gap_keeping(w, psi, false);
        assert_eq!(kept, again, "kept {kept:?}, recomputed {again:?}");
        if obj.gap_defined() {
            let coords = obj.layout.coords();
            let (mut g1, mut g2) = (vec![0.0; coords], vec![0.0; coords]);
            let (f1, p1) = obj.f_and_grad_for_gap(w, &mut g1, true);
            let (f2, p2) = obj.f_and_grad_for_gap(w, &mut g2, false);
            assert_eq!((f1, &g1, p1.pos, p1.neg), (f2, &g2, p2.pos, p2.neg));
            assert!(p1.theta.is_some() && p2.theta.is_none());
        }
        let reference = reference_gap(obj, w, psi);
        match (kept, reference) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-10 * psi.abs().max(1.0),
                "gap {a:e}, by the definition {b:e}"
            ),
            (a, b) => assert!(
                a.is_none() && b.is_none() || !obj.gap_defined(),
                "{a:?} vs {b:?}"
            ),
        }
        kept
    }

    /// Every row's derivatives recomputed by the gap's second pass are those the
    /// gradient's pass keeps, for one and several outputs and any split of the rows
    /// over threads; added up from the kept ones or recomputed, they give the same
    /// gradient, that of the pass.
    #[test]
    fn recomputed_derivatives_are_the_kept_ones() {
        struct Collect(Vec<(usize, f32, Vec<f64>)>);
        impl DerivSink for Collect {
            fn row(&mut self, i: usize, y: f32, dz: &mut [f64]) {
                self.0.push((i, y, dz.to_vec()));
            }
        }
        fn compare<L: Loss>(obj: &Objective<L>, w: &[f64]) {
            let k = obj.layout.classes;
            let mut grad = vec![0.0; obj.layout.coords()];
            let (_, pass) = obj.f_and_grad_for_gap(w, &mut grad, true);
            let theta = pass.theta.expect("kept");
            let coords = obj.layout.coords();
            let (mut g1, mut g2) = (vec![0.0; coords], vec![0.0; coords]);
            for r in obj.shares() {
                obj.derivs_again(
                    w,
                    Some(&theta),
                    r.clone(),
                    &mut Collect(vec![]),
                    Some(&mut g1),
                );
                obj.derivs_again(w, None, r.clone(), &mut Collect(vec![]), Some(&mut g2));
            }
            assert_eq!(g1, g2);
            let n = obj.n() as f64;
            let b = obj.layout.bias_row() * k;
            for (j, (a, g)) in g1.iter().zip(&grad).enumerate() {
                // The pass's gradient, whose intercept is zeroed without one.
                if obj.layout.bias || j < b {
                    assert!(
                        (a / n - g).abs() <= 1e-12,
                        "coordinate {j}: {} vs {g}",
                        a / n
                    );
                }
            }
            for r in obj.shares() {
                let (mut a, mut b) = (Collect(vec![]), Collect(vec![]));
                obj.derivs_again(w, Some(&theta), r.clone(), &mut a, None);
                obj.derivs_again(w, None, r.clone(), &mut b, None);
                assert_eq!(a.0, b.0);
                assert_eq!(a.0.len(), r.len());
                for (i, y, d) in &a.0 {
                    assert_eq!(*y, obj.label(*i));
                    let t: Vec<f64> = theta[i * k..(i + 1) * k]
                        .iter()
                        .map(|&t| f64::from(t))
                        .collect();
                    assert_eq!(d, &t);
                }
            }
        }
        let binary = data(9, &sign);
        let classes = data(9, &|rng, z| three_classes(rng, z, 0.3));
        let mut rng = R::seed_from_u64(4);
        let pick: Vec<u32> = vec![5, 3, 60, 61, 2, 2, 40, 9, 0];
        for threads in [1, 2, 3, 5] {
            for rows in [None, Some(&pick[..])] {
                let mut obj = objective(&binary, 1, true, Logistic, regs()[0]);
                obj.threads = threads;
                obj.rows = rows;
                let w: Vec<f64> = (0..D + 1).map(|_| rng.random_range(-1.0..1.0)).collect();
                compare(&obj, &w);
                let mut obj = objective(&classes, 3, false, Softmax, regs()[0]);
                obj.threads = threads;
                obj.rows = rows;
                let w: Vec<f64> = (0..3 * (D + 1))
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                compare(&obj, &w);
            }
        }
    }

    /// The gap with the derivatives kept and recomputed agree to the last bit and with
    /// the gap by its definition, for every loss and regularizer, with and without an
    /// intercept, on every row and on chosen rows, split over 1 to 4 threads.
    #[test]
    fn kept_and_recomputed_derivatives_give_the_same_gap() {
        fn each<L: Loss>(loss: L, ds: &Dataset, classes: usize, rng: &mut R) {
            let pick: Vec<u32> = (0..N as u32).filter(|i| i % 3 != 1).collect();
            for reg in regs() {
                for bias in [false, true] {
                    if classes > 1 && bias {
                        continue;
                    }
                    for threads in 1..=4 {
                        for rows in [None, Some(&pick[..])] {
                            let mut obj = objective(ds, classes, bias, loss, reg);
                            obj.threads = threads;
                            obj.rows = rows;
                            for spread in [0.05, 0.5] {
                                let mut w: Vec<f64> = (0..obj.layout.coords())
                                    .map(|_| rng.random_range(-spread..spread))
                                    .collect();
                                if !bias {
                                    let b = D * classes;
                                    w[b..].fill(0.0);
                                }
                                obj.prox(0.0, &mut w);
                                let psi = obj.psi(&w);
                                gap_both_ways(&obj, &w, psi);
                            }
                        }
                    }
                }
            }
        }
        let mut rng = R::seed_from_u64(21);
        let binary = data(13, &sign);
        let real_valued = data(13, &real);
        let classes = data(13, &|_, z| if z > 0.0 { 1.0 } else { 0.0 });
        each(Logistic, &binary, 1, &mut rng);
        each(SquaredHinge, &binary, 1, &mut rng);
        each(Squared, &real_valued, 1, &mut rng);
        each(Huber::with_param(0.7), &real_valued, 1, &mut rng);
        each(Softmax, &classes, 2, &mut rng);
    }

    /// The derivatives are kept up to [`KEEP_DERIVS_MAX_BYTES`], counted over every
    /// output of every row of the objective.
    #[test]
    fn derivatives_are_kept_up_to_the_threshold() {
        let ds = data(5, &sign);
        let most = KEEP_DERIVS_MAX_BYTES / 4;
        let rows = vec![0u32; most + 1];
        let mut obj = objective(&ds, 1, true, Logistic, regs()[0]);
        assert!(obj.keeps_derivs());
        obj.rows = Some(&rows[..most]);
        assert!(obj.keeps_derivs());
        obj.rows = Some(&rows[..]);
        assert!(!obj.keeps_derivs());
        let mut obj = objective(&ds, 4, false, Softmax, regs()[0]);
        obj.rows = Some(&rows[..most / 4]);
        assert!(obj.keeps_derivs());
        obj.rows = Some(&rows[..most / 4 + 1]);
        assert!(!obj.keeps_derivs());
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
                let at_opt = gap_both_ways(&obj, &x, psi_star).expect("defined");
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
                    let Some(gap) = gap_both_ways(&obj, &w, psi) else {
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

    /// Class 0, 1 or 2 as the margin `z` is below `-t`, between, or above `t`; one in
    /// ten moved to the next class.
    fn three_classes(rng: &mut R, z: f64, t: f64) -> f32 {
        let c = if z > t {
            2.0
        } else if z < -t {
            0.0
        } else {
            1.0
        };
        if rng.random_bool(0.1) {
            (c + 1.0) % 3.0
        } else {
            c
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
        let ds = data(3, &|rng, z| three_classes(rng, z, 0.4));
        for reg in regs() {
            let obj = objective(&ds, 3, false, Softmax, reg);
            let (x, psi_star) = optimum(&obj);
            let gap = gap_both_ways(&obj, &x, psi_star).expect("defined");
            assert!(
                gap <= 1e-6 * psi_star.abs().max(1.0),
                "{:?}: {gap:e}",
                reg.kind
            );
            let w: Vec<f64> = x.iter().map(|v| v * 0.8).collect();
            let psi = obj.psi(&w);
            let gap = gap_both_ways(&obj, &w, psi).expect("defined");
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
