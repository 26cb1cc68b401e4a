//! Regularizers h and their proximal operators, with the closed form of repeated prox
//! steps that makes the shard's lazy update exact.
//!
//! `prox_{eta h}(y) = argmin_x h(x) + ||x - y||^2 / (2 eta)`, applied to one *group* of
//! coordinates at a time: a single coordinate for separable regularizers, a group of
//! `group_len()` consecutive coordinates for group lasso.
//!
//! Lazy prox. A block that receives a push applies one prox step to *all* its
//! coordinates; a coordinate with zero gradient just gets `x <- prox_{eta_k h}(x)`. The
//! shard records the step sizes of its block's updates as running sums ([`StepSums`],
//! built by [`Regularizer::advance`]) and, when a coordinate is next read or touched,
//! applies all the steps it skipped at once with [`Regularizer::prox_skipped`]:
//!
//! - L1, `lambda |x|`: soft-threshold by `lambda * sum(eta)`;
//! - squared L2, `lambda/2 x^2`: multiply by `prod 1/(1 + eta lambda)`;
//! - elastic net, `lambda (r |x| + (1-r)/2 x^2)`: each step is `z <- (z - eta l1) a`
//!   with `a = 1/(1 + eta l2)` on `z = |x|`, clamped at 0; unrolled over steps
//!   t0..t1, `z1 = z0 exp(-(D1 - D0)) - l1 (W1 - exp(-(D1 - D0)) W0)` with `D = sum
//!   ln(1 + eta l2)` and `W = sum eta_s exp(D_s - D)` (D_s taken before step s, D at the
//!   end of the sum); W carries the factor exp(-D) so that it stays below sum(eta),
//!   where exp(D) itself overflows once a long run takes D past ~709; the clamp commutes
//!   because the unclamped sequence is decreasing and 0 is a fixed point;
//! - box and nonnegativity constraints: the prox is a projection, idempotent;
//! - group lasso, `lambda ||x_g||_2`: the group keeps its direction and its norm
//!   shrinks by `lambda * sum(eta)`, clamped at 0.
//!
//! Diagonal metric. The shard may take its steps in a fixed metric `diag(1/d)`: the step
//! of coordinate c is `eta_k d_c`, so one step is `x_c <- prox_{eta_k d_c h}(x_c - eta_k
//! d_c G_c)`. For a separable h, x is a fixed point iff `0 in eta d_c (grad_c f(x) +
//! dh_c(x_c))` for every c, which is the plain step's condition times a positive
//! number: the optimum is unchanged. The lazy closed form stays exact only where the
//! skipped steps compose through `sum(eta)` linearly or not at all: h = 0, L1 (shrink by
//! `lambda d_c sum(eta)`) and the constraints (one projection), which set
//! [`Regularizer::DIAGONAL_METRIC`]. Squared L2 and the elastic net decay by
//! `prod 1/(1 + eta d_c l2)`, which one history of running sums cannot give for every
//! `d_c`, and group lasso couples its coordinates, so they take plain steps only.
//!
//! Drift (variance reduction). With SVRG every step adds a constant `a_c` (the full
//! gradient at the last snapshot) to every coordinate's gradient, so an untouched
//! coordinate takes `x <- prox_{e_s h}(x - e_s a)` with `e_s = eta_s d_c`. For h = 0
//! that is `x - a sum(e)`. For L1 the motion is piecewise linear: while `x > 0` it moves
//! by `-(a + lambda) e_s` per step; if that crosses 0, the crossing step is computed
//! exactly, and after it x stays 0 when `|a| <= lambda` or moves by `-(a - lambda) e_s`
//! per step on the negative side (mirror for `x < 0`). The crossing step is found by
//! binary search on the running sums of eta, so skipping any number of steps costs
//! `O(log steps)` ([`Regularizer::prox_skipped_drift`]).

use serde::{Deserialize, Serialize};

/// Which regularizer, as named on the command line and in config files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegKind {
    /// h = 0.
    None,
    /// lambda * ||x||_1.
    L1,
    /// lambda / 2 * ||x||_2^2.
    L2,
    /// lambda * (r ||x||_1 + (1 - r) / 2 ||x||_2^2), r = l1_ratio.
    ElasticNet,
    /// Indicator of x >= 0.
    Nonneg,
    /// Indicator of lower <= x <= upper.
    Box,
    /// lambda * sum over groups of ||x_g||_2.
    GroupLasso,
}

impl RegKind {
    /// All kinds with their command-line names.
    pub const ALL: [(&'static str, RegKind); 7] = [
        ("none", RegKind::None),
        ("l1", RegKind::L1),
        ("l2", RegKind::L2),
        ("elastic-net", RegKind::ElasticNet),
        ("nonneg", RegKind::Nonneg),
        ("box", RegKind::Box),
        ("group-lasso", RegKind::GroupLasso),
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

impl std::str::FromStr for RegKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::parse_name(&Self::ALL, s, "regularizer")
    }
}

/// A validated regularizer with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegSpec {
    pub kind: RegKind,
    /// Strength lambda (>= 0).
    pub lambda: f64,
    /// Elastic-net mixing r in [0, 1]: 1 is pure L1.
    pub l1_ratio: f64,
    /// Box constraint bounds.
    pub lower: f64,
    pub upper: f64,
    /// Group lasso: coordinates per group (>= 1).
    pub group_len: usize,
}

impl RegSpec {
    /// h = 0.
    pub const NONE: RegSpec = RegSpec {
        kind: RegKind::None,
        lambda: 0.0,
        l1_ratio: 0.0,
        lower: 0.0,
        upper: 0.0,
        group_len: 1,
    };
}

/// Running sums over a block's sequence of prox steps, from which any stretch of skipped
/// steps is applied in closed form. All zero at the start of a history.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepSums {
    /// sum of eta.
    pub eta: f64,
    /// D = sum of ln(1 + eta * l2) (squared-L2 part of the regularizer; 0 without one).
    pub log_decay: f64,
    /// W = sum of eta_s * exp(D_s - D), D_s the value of `log_decay` before step s and
    /// D its current value.
    pub weighted_eta: f64,
}

/// A regularizer: value, one prox step, and the closed form of skipped steps.
pub trait Regularizer: Copy + Send + Sync + 'static {
    /// Whether [`Regularizer::prox_skipped`] needs the individual step sizes. Those with
    /// a closed form in the running sums alone set it to false, which lets the shard skip
    /// copying the step list.
    const STEP_LIST: bool = true;

    /// Coordinates coupled by the regularizer (1 for separable ones).
    fn group_len(&self) -> usize {
        1
    }

    /// h of one group.
    fn value(&self, x: &[f64]) -> f64;

    /// One step in place on one group: `x <- prox_{eta h}(x)`.
    fn prox(&self, eta: f64, x: &mut [f64]);

    /// The convex conjugate of h on one group, `h*(v) = sup_x <v, x> - h(x)`: +inf
    /// outside its domain. The duality gap's dual objective holds it.
    fn conjugate(&self, v: &[f64]) -> f64;

    /// The largest s in [0, 1] with `h*(s v)` finite on this group: 1 where h* is finite
    /// everywhere, the factor that brings `v` into the ball where h* is the indicator
    /// of a norm ball, 0 where no positive factor does.
    fn dual_scale(&self, _v: &[f64]) -> f64 {
        1.0
    }

    /// Squared-L2 strength inside h, used by [`StepSums::log_decay`] (0 by default).
    fn l2_part(&self) -> f64 {
        0.0
    }

    /// The running sums after one more step of size `eta`.
    fn advance(&self, s: StepSums, eta: f64) -> StepSums {
        StepSums {
            eta: s.eta + eta,
            log_decay: s.log_decay + (eta * self.l2_part()).ln_1p(),
            weighted_eta: (s.weighted_eta + eta) / (1.0 + eta * self.l2_part()),
        }
    }

    /// Whether steps scaled per coordinate by a fixed factor (a diagonal metric, see the
    /// module doc) keep [`Regularizer::prox_skipped_scaled`] exact.
    const DIAGONAL_METRIC: bool = false;

    /// One step in the metric `diag(1/d)`: `x_c <- prox_{eta d_c h}(x_c)` for every
    /// coordinate c of the group. Only for [`Regularizer::DIAGONAL_METRIC`] regularizers,
    /// which are separable, so the default steps each coordinate on its own.
    fn prox_scaled(&self, eta: f64, d: &[f64], x: &mut [f64]) {
        debug_assert!(Self::DIAGONAL_METRIC);
        for (v, &dc) in x.iter_mut().zip(d) {
            self.prox(eta * dc, std::slice::from_mut(v));
        }
    }

    /// [`Regularizer::prox_skipped`] in the metric `diag(1/d)`: the skipped steps of
    /// coordinate c had sizes `eta_s d_c`. The default loops over `etas`; only for
    /// [`Regularizer::DIAGONAL_METRIC`] regularizers.
    fn prox_skipped_scaled(
        &self,
        x: &mut [f64],
        d: &[f64],
        etas: &[f64],
        _from: StepSums,
        _to: StepSums,
    ) {
        debug_assert!(Self::DIAGONAL_METRIC);
        for (v, &dc) in x.iter_mut().zip(d) {
            for &eta in etas {
                self.prox(eta * dc, std::slice::from_mut(v));
            }
        }
    }

    /// Whether [`Regularizer::prox_skipped_drift`] has an exact closed form (separable,
    /// one coordinate per group).
    const DRIFT: bool = false;

    /// One coordinate after the skipped steps `from..to` of a history, each of which is
    /// `x <- prox_{e h}(x - e a)` with `e = d * eta_s`; `eta_sum(t)` is the running sum
    /// of eta at history point t. Only for [`Regularizer::DRIFT`] regularizers.
    fn prox_skipped_drift(
        &self,
        _x: f64,
        _a: f64,
        _d: f64,
        _from: usize,
        _to: usize,
        _eta_sum: &impl Fn(usize) -> f64,
    ) -> f64 {
        unreachable!("no closed form of skipped steps with a drift")
    }

    /// Applies, to a group that got zero gradient over them, the steps between two
    /// points `from` and `to` of one history; `etas` are those steps' sizes. The default
    /// loops over `etas`; regularizers override it with their closed form.
    fn prox_skipped(&self, x: &mut [f64], etas: &[f64], _from: StepSums, _to: StepSums) {
        for &eta in etas {
            self.prox(eta, x);
        }
    }
}

/// h = 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReg;

/// lambda * |x|.
#[derive(Clone, Copy, Debug)]
pub struct L1 {
    pub lambda: f64,
}

/// lambda / 2 * x^2.
#[derive(Clone, Copy, Debug)]
pub struct L2 {
    pub lambda: f64,
}

/// l1 * |x| + l2 / 2 * x^2.
#[derive(Clone, Copy, Debug)]
pub struct ElasticNet {
    pub l1: f64,
    pub l2: f64,
}

/// Indicator of lower <= x <= upper (nonnegativity is lower = 0, upper = inf).
#[derive(Clone, Copy, Debug)]
pub struct BoxConstraint {
    pub lower: f64,
    pub upper: f64,
}

/// lambda * ||x_g||_2 over groups of `len` coordinates.
#[derive(Clone, Copy, Debug)]
pub struct GroupLasso {
    pub lambda: f64,
    pub len: usize,
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn norm2(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The indicator of a ball of radius `r` at a point of norm `norm`: 0 inside, +inf
/// outside; a relative 1e-12 beyond the edge counts as inside (rounding of a point
/// scaled onto the edge by [`ball_scale`]).
fn ball_indicator(norm: f64, r: f64) -> f64 {
    if norm <= r * (1.0 + 1e-12) {
        0.0
    } else {
        f64::INFINITY
    }
}

/// The largest s in [0, 1] with `s * norm <= r`.
fn ball_scale(norm: f64, r: f64) -> f64 {
    if norm <= r {
        1.0
    } else {
        r / norm
    }
}

/// Soft threshold: sign(x) max(|x| - t, 0).
#[inline]
pub fn soft_threshold(x: f64, t: f64) -> f64 {
    if x > t {
        x - t
    } else if x < -t {
        x + t
    } else {
        0.0
    }
}

impl Regularizer for NoReg {
    const STEP_LIST: bool = false;
    const DIAGONAL_METRIC: bool = true;

    fn value(&self, _x: &[f64]) -> f64 {
        0.0
    }
    /// The indicator of v = 0.
    fn conjugate(&self, v: &[f64]) -> f64 {
        ball_indicator(max_abs(v), 0.0)
    }
    fn dual_scale(&self, v: &[f64]) -> f64 {
        ball_scale(max_abs(v), 0.0)
    }
    #[inline]
    fn prox(&self, _eta: f64, _x: &mut [f64]) {}
    #[inline]
    fn prox_skipped(&self, _x: &mut [f64], _etas: &[f64], _from: StepSums, _to: StepSums) {}
    #[inline]
    fn prox_scaled(&self, _eta: f64, _d: &[f64], _x: &mut [f64]) {}
    const DRIFT: bool = true;
    #[inline]
    fn prox_skipped_drift(
        &self,
        x: f64,
        a: f64,
        d: f64,
        from: usize,
        to: usize,
        eta_sum: &impl Fn(usize) -> f64,
    ) -> f64 {
        drift_unregularized(x, a, d, from, to, eta_sum)
    }
    #[inline]
    fn prox_skipped_scaled(
        &self,
        _x: &mut [f64],
        _d: &[f64],
        _etas: &[f64],
        _from: StepSums,
        _to: StepSums,
    ) {
    }
}

impl Regularizer for L1 {
    const STEP_LIST: bool = false;
    const DIAGONAL_METRIC: bool = true;

    fn value(&self, x: &[f64]) -> f64 {
        self.lambda * x.iter().map(|v| v.abs()).sum::<f64>()
    }
    /// The indicator of |v| <= lambda.
    fn conjugate(&self, v: &[f64]) -> f64 {
        ball_indicator(max_abs(v), self.lambda)
    }
    fn dual_scale(&self, v: &[f64]) -> f64 {
        ball_scale(max_abs(v), self.lambda)
    }
    #[inline]
    fn prox(&self, eta: f64, x: &mut [f64]) {
        for v in x {
            *v = soft_threshold(*v, eta * self.lambda);
        }
    }
    #[inline]
    fn prox_skipped(&self, x: &mut [f64], _etas: &[f64], from: StepSums, to: StepSums) {
        let t = self.lambda * (to.eta - from.eta);
        for v in x {
            *v = soft_threshold(*v, t);
        }
    }
    const DRIFT: bool = true;
    #[inline]
    fn prox_skipped_drift(
        &self,
        x: f64,
        a: f64,
        d: f64,
        from: usize,
        to: usize,
        eta_sum: &impl Fn(usize) -> f64,
    ) -> f64 {
        if from >= to {
            return x;
        }
        let lam = self.lambda;
        // Mirror so that x >= 0; at 0 the side is the one the drift pushes towards.
        let sgn = if x > 0.0 || (x == 0.0 && a <= 0.0) {
            1.0
        } else {
            -1.0
        };
        let (x, a) = (x * sgn, a * sgn);
        let s0 = eta_sum(from);
        let total = d * (eta_sum(to) - s0);
        if a + lam <= 0.0 {
            // Moving away from 0 (or resting at it when a = -lambda).
            return sgn * (x - (a + lam) * total);
        }
        if x == 0.0 {
            // |a| < lambda: 0 is a fixed point.
            return 0.0;
        }
        let rate = a + lam;
        if x - rate * total > 0.0 {
            return sgn * (x - rate * total);
        }
        if a <= lam {
            // It reaches 0 within the span, and 0 is then a fixed point.
            return sgn * 0.0;
        }
        // The first step t whose end is at or below 0: x - rate d (S(t+1) - S0) <= 0.
        let crossed = |t: usize| x - rate * d * (eta_sum(t + 1) - s0) <= 0.0;
        // Equal steps put it where the mean step does: try there first (two reads of the
        // history instead of a search's log2(span) dependent ones), then search what is
        // left of the range.
        let (mut lo, mut hi) = (from, to - 1);
        let steps = (to - from) as f64 * x / (rate * total);
        if steps.is_finite() && steps >= 1.0 {
            let guess = (from + steps.ceil() as usize - 1).min(hi);
            if crossed(guess) {
                if guess == from || !crossed(guess - 1) {
                    (lo, hi) = (guess, guess);
                } else {
                    hi = guess - 1;
                }
            } else {
                lo = (guess + 1).min(hi);
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if crossed(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let before = (x - rate * d * (eta_sum(lo) - s0)).max(0.0);
        let e = d * (eta_sum(lo + 1) - eta_sum(lo));
        let after = soft_threshold(before - e * a, e * lam);
        let rest = d * (eta_sum(to) - eta_sum(lo + 1));
        sgn * (after.min(0.0) - (a - lam) * rest)
    }
    #[inline]
    fn prox_scaled(&self, eta: f64, d: &[f64], x: &mut [f64]) {
        let t = eta * self.lambda;
        for (v, &dc) in x.iter_mut().zip(d) {
            *v = soft_threshold(*v, t * dc);
        }
    }
    #[inline]
    fn prox_skipped_scaled(
        &self,
        x: &mut [f64],
        d: &[f64],
        _etas: &[f64],
        from: StepSums,
        to: StepSums,
    ) {
        let t = self.lambda * (to.eta - from.eta);
        for (v, &dc) in x.iter_mut().zip(d) {
            *v = soft_threshold(*v, t * dc);
        }
    }
}

impl Regularizer for L2 {
    const STEP_LIST: bool = false;

    fn value(&self, x: &[f64]) -> f64 {
        0.5 * self.lambda * x.iter().map(|v| v * v).sum::<f64>()
    }
    /// v^2 / (2 lambda); for lambda = 0, the indicator of v = 0.
    fn conjugate(&self, v: &[f64]) -> f64 {
        ElasticNet {
            l1: 0.0,
            l2: self.lambda,
        }
        .conjugate(v)
    }
    fn dual_scale(&self, v: &[f64]) -> f64 {
        ElasticNet {
            l1: 0.0,
            l2: self.lambda,
        }
        .dual_scale(v)
    }
    #[inline]
    fn prox(&self, eta: f64, x: &mut [f64]) {
        let a = 1.0 / (1.0 + eta * self.lambda);
        for v in x {
            *v *= a;
        }
    }
    fn l2_part(&self) -> f64 {
        self.lambda
    }
    #[inline]
    fn prox_skipped(&self, x: &mut [f64], _etas: &[f64], from: StepSums, to: StepSums) {
        let a = (from.log_decay - to.log_decay).exp();
        for v in x {
            *v *= a;
        }
    }
}

impl Regularizer for ElasticNet {
    const STEP_LIST: bool = false;

    fn value(&self, x: &[f64]) -> f64 {
        x.iter()
            .map(|v| self.l1 * v.abs() + 0.5 * self.l2 * v * v)
            .sum()
    }
    /// max(|v| - l1, 0)^2 / (2 l2); for l2 = 0, L1's indicator of |v| <= l1.
    fn conjugate(&self, v: &[f64]) -> f64 {
        if self.l2 > 0.0 {
            v.iter()
                .map(|x| (x.abs() - self.l1).max(0.0).powi(2))
                .sum::<f64>()
                / (2.0 * self.l2)
        } else {
            ball_indicator(max_abs(v), self.l1)
        }
    }
    fn dual_scale(&self, v: &[f64]) -> f64 {
        if self.l2 > 0.0 {
            1.0
        } else {
            ball_scale(max_abs(v), self.l1)
        }
    }
    #[inline]
    fn prox(&self, eta: f64, x: &mut [f64]) {
        let a = 1.0 / (1.0 + eta * self.l2);
        let t = eta * self.l1;
        for v in x {
            *v = soft_threshold(*v, t) * a;
        }
    }
    fn l2_part(&self) -> f64 {
        self.l2
    }
    #[inline]
    fn prox_skipped(&self, x: &mut [f64], _etas: &[f64], from: StepSums, to: StepSums) {
        let decay = (from.log_decay - to.log_decay).exp();
        let shrink = self.l1 * (to.weighted_eta - decay * from.weighted_eta);
        for v in x {
            let z = (v.abs() * decay - shrink).max(0.0);
            *v = z.copysign(*v);
        }
    }
}

impl Regularizer for BoxConstraint {
    const DIAGONAL_METRIC: bool = true;

    fn value(&self, x: &[f64]) -> f64 {
        // The indicator is +inf outside the box; iterates never leave it, but a warm
        // start may. A small tolerance absorbs rounding at the bounds.
        let tol = 1e-12;
        if x.iter()
            .all(|&v| v >= self.lower - tol && v <= self.upper + tol)
        {
            0.0
        } else {
            f64::INFINITY
        }
    }
    /// The support function of the box: sum of upper v (v > 0) and lower v (v < 0).
    fn conjugate(&self, v: &[f64]) -> f64 {
        v.iter()
            .map(|&x| {
                if x > 0.0 {
                    self.upper * x
                } else if x < 0.0 {
                    self.lower * x
                } else {
                    0.0
                }
            })
            .sum()
    }
    fn dual_scale(&self, v: &[f64]) -> f64 {
        if self.conjugate(v).is_finite() {
            1.0
        } else {
            0.0
        }
    }
    #[inline]
    fn prox(&self, _eta: f64, x: &mut [f64]) {
        for v in x {
            *v = v.clamp(self.lower, self.upper);
        }
    }
    #[inline]
    fn prox_skipped(&self, x: &mut [f64], etas: &[f64], _from: StepSums, _to: StepSums) {
        if !etas.is_empty() {
            self.prox(0.0, x);
        }
    }
    #[inline]
    fn prox_scaled(&self, eta: f64, _d: &[f64], x: &mut [f64]) {
        self.prox(eta, x);
    }
    #[inline]
    fn prox_skipped_scaled(
        &self,
        x: &mut [f64],
        _d: &[f64],
        etas: &[f64],
        from: StepSums,
        to: StepSums,
    ) {
        self.prox_skipped(x, etas, from, to);
    }
}

impl Regularizer for GroupLasso {
    const STEP_LIST: bool = false;

    fn group_len(&self) -> usize {
        self.len
    }
    fn value(&self, x: &[f64]) -> f64 {
        x.chunks(self.len)
            .map(|g| self.lambda * g.iter().map(|v| v * v).sum::<f64>().sqrt())
            .sum()
    }
    /// The indicator of ||v_g||_2 <= lambda on every group.
    fn conjugate(&self, v: &[f64]) -> f64 {
        v.chunks(self.len)
            .map(|g| ball_indicator(norm2(g), self.lambda))
            .sum()
    }
    fn dual_scale(&self, v: &[f64]) -> f64 {
        v.chunks(self.len)
            .map(|g| ball_scale(norm2(g), self.lambda))
            .fold(1.0, f64::min)
    }
    #[inline]
    fn prox(&self, eta: f64, x: &mut [f64]) {
        group_shrink(x, eta * self.lambda);
    }
    #[inline]
    fn prox_skipped(&self, x: &mut [f64], _etas: &[f64], from: StepSums, to: StepSums) {
        group_shrink(x, self.lambda * (to.eta - from.eta));
    }
}

/// A coordinate without regularizer (h = 0 or the intercept) after the skipped steps
/// `from..to` with drift `a` and factor `d`: `x - a d sum(eta)`.
#[inline]
pub fn drift_unregularized(
    x: f64,
    a: f64,
    d: f64,
    from: usize,
    to: usize,
    eta_sum: &impl Fn(usize) -> f64,
) -> f64 {
    if from >= to || a == 0.0 {
        return x;
    }
    x - a * d * (eta_sum(to) - eta_sum(from))
}

/// x <- x * max(0, 1 - t / ||x||_2): the prox of t * ||x||_2.
#[inline]
fn group_shrink(x: &mut [f64], t: f64) {
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let scale = if norm > t { 1.0 - t / norm } else { 0.0 };
    for v in x {
        *v *= scale;
    }
}

/// Runs `$body` with `$r` bound to the concrete regularizer of the [`RegSpec`] `$spec`,
/// so that `$body` is monomorphized once per regularizer.
#[macro_export]
macro_rules! with_reg {
    ($spec:expr, |$r:ident| $body:expr) => {{
        let spec: $crate::model::reg::RegSpec = $spec;
        match spec.kind {
            $crate::model::reg::RegKind::None => {
                let $r = $crate::model::reg::NoReg;
                $body
            }
            $crate::model::reg::RegKind::L1 => {
                let $r = $crate::model::reg::L1 {
                    lambda: spec.lambda,
                };
                $body
            }
            $crate::model::reg::RegKind::L2 => {
                let $r = $crate::model::reg::L2 {
                    lambda: spec.lambda,
                };
                $body
            }
            $crate::model::reg::RegKind::ElasticNet => {
                let $r = $crate::model::reg::ElasticNet {
                    l1: spec.lambda * spec.l1_ratio,
                    l2: spec.lambda * (1.0 - spec.l1_ratio),
                };
                $body
            }
            $crate::model::reg::RegKind::Nonneg => {
                let $r = $crate::model::reg::BoxConstraint {
                    lower: 0.0,
                    upper: f64::INFINITY,
                };
                $body
            }
            $crate::model::reg::RegKind::Box => {
                let $r = $crate::model::reg::BoxConstraint {
                    lower: spec.lower,
                    upper: spec.upper,
                };
                $body
            }
            $crate::model::reg::RegKind::GroupLasso => {
                let $r = $crate::model::reg::GroupLasso {
                    lambda: spec.lambda,
                    len: spec.group_len,
                };
                $body
            }
        }
    }};
}
