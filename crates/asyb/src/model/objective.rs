//! The objective `Psi(x) = f(x) + h(x)` over a whole dataset, its full gradient, and the
//! prox-gradient mapping `P(x) = (x - prox_{eta h}(x - eta grad f(x))) / eta`, the
//! paper's convergence measure (x is stationary iff P(x) = 0).
//!
//! `f(x) = (1/n) sum_i loss(z_i, y_i) + alpha sum_k x_k^2/(1 + x_k^2)` with margins
//! `z_i = X_i W + b`; `h` sums the regularizer over the feature rows' groups, never over
//! the intercept. Features of a row at or past `layout.features` (a test set wider than
//! the training set) have no weight and are ignored.
//!
//! Row loops are split over `threads` scoped threads: evaluation runs while the workers
//! are paused, so it may use every core.

use std::borrow::Cow;

use super::loss::Loss;
use super::reg::{RegSpec, Regularizer};
use super::{nonconvex_deriv, nonconvex_value, Layout};
use crate::data::Dataset;
use crate::hint::prefetch;
use crate::par;

/// How many rows ahead a pass over the rows prefetches the weights a row touches: the
/// rows are read in order, but their features are random columns of a model that does
/// not fit in the caches.
const ROWS_AHEAD: usize = 4;

/// A regularizer chosen at run time, dispatched per call: for cold paths (evaluation,
/// the reference solver), where a match per group costs nothing measurable.
#[derive(Clone, Copy, Debug)]
pub struct AnyReg(pub RegSpec);

impl AnyReg {
    /// Coordinates handed to one call of the regularizer's value, prox or conjugate on
    /// the cold paths: a group, or for a separable regularizer a run of 256 coordinates
    /// (the same result as one call per coordinate, without a dispatch per coordinate).
    pub fn span(&self) -> usize {
        match self.group_len() {
            1 => 256,
            g => g,
        }
    }
}

impl Regularizer for AnyReg {
    fn group_len(&self) -> usize {
        crate::with_reg!(self.0, |r| r.group_len())
    }
    fn value(&self, x: &[f64]) -> f64 {
        crate::with_reg!(self.0, |r| r.value(x))
    }
    fn prox(&self, eta: f64, x: &mut [f64]) {
        crate::with_reg!(self.0, |r| r.prox(eta, x))
    }
    fn conjugate(&self, v: &[f64]) -> f64 {
        crate::with_reg!(self.0, |r| r.conjugate(v))
    }
    fn dual_scale(&self, v: &[f64]) -> f64 {
        crate::with_reg!(self.0, |r| r.dual_scale(v))
    }
}

/// Read access to a model's coordinates in [`Layout`] order: a dense vector, or the
/// shards' cells read in place ([`crate::ps::ModelView`]: the trainer's snapshots and
/// evaluations, which then need no dense copy of the model).
pub trait Weights: Sync {
    /// Number of coordinates.
    fn len(&self) -> usize;
    /// Coordinate `j`.
    fn at(&self, j: usize) -> f64;
    /// Asks the CPU to fetch coordinate `j`, if it exists.
    fn prefetch_at(&self, j: usize);
    /// Whether there are no coordinates.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Weights for [f64] {
    fn len(&self) -> usize {
        <[f64]>::len(self)
    }
    #[inline(always)]
    fn at(&self, j: usize) -> f64 {
        self[j]
    }
    #[inline(always)]
    fn prefetch_at(&self, j: usize) {
        if let Some(x) = self.get(j) {
            prefetch(x);
        }
    }
}

impl Weights for Vec<f64> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    #[inline(always)]
    fn at(&self, j: usize) -> f64 {
        self[j]
    }
    #[inline(always)]
    fn prefetch_at(&self, j: usize) {
        self.as_slice().prefetch_at(j)
    }
}

/// What a pass over the rows ([`Objective::pass_with`]) does with each row's loss
/// derivatives `d loss_i / d z_i` (times the row's weight, where rows are weighted)
/// besides summing the gradient: one sink per thread's share of the rows.
pub(crate) trait DerivSink {
    /// Whether the sink uses the derivatives (without a gradient, a pass for a sink
    /// that does not computes only the loss values).
    const USES: bool = true;
    /// Whether the derivatives are rounded to f32 before the sink and the gradient see
    /// them: the gradient is then `X' theta / n` for exactly the values the sink sees,
    /// and a second pass at the same model hands a sink the same values as the first.
    const ROUNDS: bool = true;
    /// Row `i` of the objective's rows, with label `y`, has the derivatives `dz`
    /// (`classes` values). The sink may rewrite them: a pass with a gradient adds
    /// what it leaves there.
    fn row(&mut self, i: usize, y: f32, dz: &mut [f64]);
}

/// The sink of a pass that needs no derivatives: the gradient, if any, from the
/// derivatives in f64.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoDerivs;

impl DerivSink for NoDerivs {
    const USES: bool = false;
    const ROUNDS: bool = false;
    #[inline(always)]
    fn row(&mut self, _i: usize, _y: f32, _dz: &mut [f64]) {}
}

/// Keeps a thread's rows' derivatives rounded to f32: `classes` values per row into
/// `out`, from the row `start` ([`Objective::keep_sinks`]).
pub(crate) struct KeepDerivs<'s> {
    out: &'s mut [f32],
    start: usize,
}

impl DerivSink for KeepDerivs<'_> {
    #[inline(always)]
    fn row(&mut self, i: usize, _y: f32, dz: &mut [f64]) {
        let k = dz.len();
        let at = (i - self.start) * k;
        for (o, &d) in self.out[at..at + k].iter_mut().zip(dz.iter()) {
            *o = d as f32;
        }
    }
}

/// `f` on every item, one thread each ([`par::each`]), each with a dense vector to add
/// into: the first item's is `out` itself, the others' their own (zeros of `out`'s
/// length), added into `out` in the items' order at the end: one dense vector fewer at
/// the memory peak. The results in the items' order.
pub(crate) fn each_adding<I: Send, T: Send>(
    items: impl IntoIterator<Item = I>,
    out: &mut [f64],
    f: impl Fn(I, &mut [f64]) -> T + Sync,
) -> Vec<T> {
    let len = out.len();
    let mut first = Some(&mut *out);
    let pieces: Vec<(I, Option<&mut [f64]>)> =
        items.into_iter().map(|item| (item, first.take())).collect();
    let parts: Vec<(T, Option<Vec<f64>>)> = par::each(pieces, |(item, mine)| match mine {
        Some(g) => (f(item, g), None),
        None => {
            let mut own = vec![0.0; len];
            (f(item, &mut own), Some(own))
        }
    });
    let mut results = Vec::with_capacity(parts.len());
    for (t, own) in parts {
        if let Some(own) = own {
            for (a, b) in out.iter_mut().zip(&own) {
                *a += b;
            }
        }
        results.push(t);
    }
    results
}

/// Psi and its parts over one dataset.
#[derive(Clone, Copy)]
pub struct Objective<'a, L: Loss> {
    pub data: &'a Dataset,
    /// The rows the objective is over: every row of `data`, or these (a fixed
    /// subsample, held as row numbers instead of a copy of the rows).
    pub rows: Option<&'a [u32]>,
    pub loss: L,
    pub reg: AnyReg,
    pub layout: Layout,
    pub alpha: f64,
    pub threads: usize,
}

impl<'a, L: Loss> Objective<'a, L> {
    /// Number of rows the objective is over.
    #[inline]
    pub fn n(&self) -> usize {
        self.rows.map_or(self.data.rows(), <[u32]>::len)
    }

    /// The data row of the objective's i-th row.
    #[inline]
    fn at(&self, i: usize) -> usize {
        match self.rows {
            Some(r) => r[i] as usize,
            None => i,
        }
    }

    /// Labels of the objective's rows, in order.
    pub fn labels(&self) -> Cow<'a, [f32]> {
        match self.rows {
            Some(r) => Cow::Owned(r.iter().map(|&i| self.data.labels[i as usize]).collect()),
            None => Cow::Borrowed(&self.data.labels[..]),
        }
    }

    /// Margins of every row: `n * classes` values, row-major.
    pub fn margins<W: Weights + ?Sized>(&self, w: &W) -> Vec<f64> {
        let k = self.layout.classes;
        let n = self.n();
        let mut z = vec![0.0; n * k];
        let mut rest = z.as_mut_slice();
        let mut pieces = Vec::new();
        for r in par::ranges(n, self.parts()) {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * k);
            rest = tail;
            pieces.push((r, mine));
        }
        par::each(pieces, |(r, mine)| {
            for (i, zi) in r.zip(mine.chunks_mut(k)) {
                self.prefetch_row(w, i + ROWS_AHEAD);
                self.row_margins(w, i, zi);
            }
        });
        z
    }

    /// Prefetches the weights (`classes` per feature, the first of them) that row `i`
    /// touches in `w`, if row `i` exists.
    #[inline]
    fn prefetch_row<W: Weights + ?Sized>(&self, w: &W, i: usize) {
        if i < self.n() {
            let k = self.layout.classes;
            for &f in self.data.row(self.at(i)).indices {
                w.prefetch_at(f as usize * k);
            }
        }
    }

    #[inline]
    fn row_margins<W: Weights + ?Sized>(&self, w: &W, i: usize, zi: &mut [f64]) {
        let k = self.layout.classes;
        let d = self.layout.features;
        let b = self.layout.bias_row() * k;
        for (c, z) in zi.iter_mut().enumerate() {
            *z = w.at(b + c);
        }
        let row = self.data.row(self.at(i));
        for (f, v) in row.iter() {
            let f = f as usize;
            if f >= d {
                continue;
            }
            let v = f64::from(v);
            for (c, zc) in zi.iter_mut().enumerate() {
                *zc += v * w.at(f * k + c);
            }
        }
    }

    /// The objective's rows split into the shares of the threads of every pass over
    /// them ([`par::ranges`] into [`Objective::parts`] parts), in order.
    pub(crate) fn shares(&self) -> Vec<std::ops::Range<usize>> {
        par::ranges(self.n(), self.parts())
    }

    /// Threads of a pass over the objective's rows: `threads`, fewer where a share
    /// would hold less work than starting its thread costs ([`par::threads_for`], the
    /// work being the rows' nonzeros and the rows).
    pub(crate) fn parts(&self) -> usize {
        let n = self.n();
        let nnz = self.data.nnz() as u128 * n as u128 / self.data.rows().max(1) as u128;
        par::threads_for(nnz as usize + n, self.threads)
    }

    /// The label of the objective's i-th row.
    #[inline]
    pub(crate) fn label(&self, i: usize) -> f32 {
        self.data.labels[self.at(i)]
    }

    /// The weight of the objective's i-th row's loss (1 without weights): the passes
    /// sum `weight * loss` and hand their sinks `weight * loss'`.
    #[inline]
    pub(crate) fn row_weight(&self, i: usize) -> f64 {
        self.data.weight(self.at(i))
    }

    /// The objective's i-th row.
    #[inline]
    pub(crate) fn row_at(&self, i: usize) -> crate::data::Row<'_> {
        self.data.row(self.at(i))
    }

    /// `derivs` (`classes` values per row of the objective) split into sinks that keep
    /// the derivatives of each thread's share of the rows ([`Objective::shares`]).
    pub(crate) fn keep_sinks<'s>(&self, derivs: &'s mut [f32]) -> Vec<KeepDerivs<'s>> {
        let k = self.layout.classes;
        assert_eq!(derivs.len(), self.n() * k);
        let mut rest = derivs;
        self.shares()
            .into_iter()
            .map(|r| {
                let (out, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * k);
                rest = tail;
                KeepDerivs {
                    out,
                    start: r.start,
                }
            })
            .collect()
    }

    /// One threaded pass over the rows: returns the mean loss `(1/n) sum_i loss_i`; with
    /// `grad`, writes the mean loss gradient (the intercept row included, whatever
    /// `layout.bias`; no nonconvex term).
    pub fn loss_pass<W: Weights + ?Sized>(&self, w: &W, grad: Option<&mut [f64]>) -> f64 {
        let sinks = vec![NoDerivs; self.shares().len()];
        self.pass_with(w, grad, sinks, true).0
    }

    /// The pass of an SVRG snapshot: every row's loss derivatives `d loss_i / d z_i`
    /// rounded to f32 into `derivs` (`n * classes` values; half the memory of f64), and
    /// into `grad` the mean loss gradient computed from those same rounded derivatives,
    /// so that a worker's `l'(z_i) - d_i` plus the gradient stays an unbiased estimate.
    /// No loss value: the logarithms are skipped.
    pub fn gradient_pass<W: Weights + ?Sized>(&self, w: &W, grad: &mut [f64], derivs: &mut [f32]) {
        let sinks = self.keep_sinks(derivs);
        self.pass_with(w, Some(grad), sinks, false);
    }

    /// One threaded pass over the rows, each thread's share ([`Objective::shares`])
    /// handing its rows' loss derivatives to its sink of `sinks` (one per share, in
    /// order): returns the mean loss `(1/n) sum_i loss_i` (0 without `want_loss` when
    /// the derivatives are used: their logarithms are skipped) and the sinks; with
    /// `grad`, writes the mean loss gradient (the intercept row included, whatever
    /// `layout.bias`; no nonconvex term), summed from the derivatives the sinks see.
    pub(crate) fn pass_with<W: Weights + ?Sized, S: DerivSink + Send>(
        &self,
        w: &W,
        grad: Option<&mut [f64]>,
        sinks: Vec<S>,
        want_loss: bool,
    ) -> (f64, Vec<S>) {
        let n = self.n();
        let rs = self.shares();
        assert_eq!(sinks.len(), rs.len());
        let items = rs.into_iter().zip(sinks);
        let inv_n = 1.0 / n.max(1) as f64;
        let parts: Vec<(f64, S)> = match grad {
            Some(grad) => {
                assert_eq!(grad.len(), self.layout.coords());
                grad.fill(0.0);
                let parts = each_adding(items, grad, |(r, mut sink), g| {
                    (self.pass_rows(w, r, &mut sink, Some(g), want_loss), sink)
                });
                for a in grad.iter_mut() {
                    *a *= inv_n;
                }
                parts
            }
            None => par::each(items, |(r, mut sink)| {
                (self.pass_rows(w, r, &mut sink, None, want_loss), sink)
            }),
        };
        let f = parts.iter().map(|p| p.0).sum::<f64>() * inv_n;
        (f, parts.into_iter().map(|p| p.1).collect())
    }

    /// One thread's share of [`Objective::pass_with`]: the rows `rows`, their loss
    /// derivatives handed to `sink` (rounded to f32 first where it asks), their unscaled
    /// loss gradient added to `g` when given (from the derivatives `sink` sees); returns
    /// their summed loss (0 when `want_loss` is false and the derivatives are needed:
    /// the derivatives alone skip the logarithms). Every pass computes a row's margins
    /// and derivatives here, so that two passes at the same model see the same values.
    pub(crate) fn pass_rows<W: Weights + ?Sized, S: DerivSink>(
        &self,
        w: &W,
        rows: std::ops::Range<usize>,
        sink: &mut S,
        g: Option<&mut [f64]>,
        want_loss: bool,
    ) -> f64 {
        if self.layout.classes == 1 {
            return self.pass_rows_single(w, rows, sink, g, want_loss);
        }
        let k = self.layout.classes;
        let mut g = g;
        let mut zi = vec![0.0; k];
        let mut dz = vec![0.0; k];
        let mut sum = 0.0;
        let weighted = self.data.weights.is_some();
        for i in rows {
            self.prefetch_row(w, i + ROWS_AHEAD);
            if let Some(g) = g.as_deref() {
                self.prefetch_row(g, i + ROWS_AHEAD);
            }
            self.row_margins(w, i, &mut zi);
            let y = self.data.labels[self.at(i)];
            let s = if weighted { self.row_weight(i) } else { 1.0 };
            if g.is_none() && !S::USES {
                sum += s * self.loss.value(&zi, y);
                continue;
            }
            sum += s * self.loss.grad(&zi, y, &mut dz);
            for d in dz.iter_mut() {
                *d *= s;
            }
            if S::ROUNDS {
                for d in dz.iter_mut() {
                    *d = f64::from(*d as f32);
                }
            }
            sink.row(i, y, &mut dz);
            if let Some(g) = g.as_deref_mut() {
                self.add_row(g, self.data.row(self.at(i)), &dz);
            }
        }
        sum
    }

    /// Adds a row's derivatives `dz` (`classes` of them) times its values into the
    /// unscaled gradient `g`, the intercept row's included: a pass's sum, with several
    /// outputs.
    #[inline(always)]
    fn add_row(&self, g: &mut [f64], row: crate::data::Row<'_>, dz: &[f64]) {
        let k = dz.len();
        for (f, v) in row.iter() {
            let f = f as usize;
            if f >= self.layout.features {
                continue;
            }
            let v = f64::from(v);
            for (gc, d) in g[f * k..f * k + k].iter_mut().zip(dz) {
                *gc += v * d;
            }
        }
        let b = self.layout.bias_row() * k;
        for (gc, d) in g[b..b + k].iter_mut().zip(dz) {
            *gc += d;
        }
    }

    /// [`Objective::add_row`] with one output; features at or past `layout.features`
    /// are skipped only with `clip` (a dataset wider than the model).
    #[inline(always)]
    fn add_row_single(&self, g: &mut [f64], row: crate::data::Row<'_>, dz: f64, clip: bool) {
        let d = self.layout.features;
        let keep = |f: u32| !clip || (f as usize) < d;
        match row.values {
            None => {
                for &f in row.indices {
                    if keep(f) {
                        g[f as usize] += dz;
                    }
                }
            }
            Some(vals) => {
                for (&f, &v) in row.indices.iter().zip(vals) {
                    if keep(f) {
                        g[f as usize] += f64::from(v) * dz;
                    }
                }
            }
        }
        g[self.layout.bias_row()] += dz;
    }

    /// The rows `rows` with the derivatives `theta` that a pass at the same model kept
    /// (`classes` per row, from the first row of the objective): each row's handed to
    /// `sink` as that pass handed them, and what the sink leaves added into `g` when
    /// given, as that pass adds them; without reading the model.
    pub(crate) fn kept_rows<S: DerivSink>(
        &self,
        theta: &[f32],
        rows: std::ops::Range<usize>,
        sink: &mut S,
        mut g: Option<&mut [f64]>,
    ) {
        let k = self.layout.classes;
        let n = self.n();
        let clip = self.data.features > self.layout.features;
        let mut dz = vec![0.0; k];
        for i in rows {
            if let Some(g) = g.as_deref() {
                if k == 1 && i + ROWS_AHEAD < n {
                    for &f in self.row_at(i + ROWS_AHEAD).indices {
                        if let Some(x) = g.get(f as usize) {
                            prefetch(x);
                        }
                    }
                } else if k > 1 {
                    self.prefetch_row(g, i + ROWS_AHEAD);
                }
            }
            for (d, &t) in dz.iter_mut().zip(&theta[i * k..(i + 1) * k]) {
                *d = f64::from(t);
            }
            sink.row(i, self.label(i), &mut dz);
            let Some(g) = g.as_deref_mut() else {
                continue;
            };
            let row = self.row_at(i);
            if k == 1 {
                self.add_row_single(g, row, dz[0], clip);
            } else {
                self.add_row(g, row, &dz);
            }
        }
    }

    /// [`Objective::pass_rows`] with one output per row (binary and regression losses):
    /// the same sums without the per-class loops, one prefetch loop per row for the
    /// weights and the gradient, and no value loads for binary rows. The snapshot of
    /// every SVRG run is such a pass.
    fn pass_rows_single<W: Weights + ?Sized, S: DerivSink>(
        &self,
        w: &W,
        rows: std::ops::Range<usize>,
        sink: &mut S,
        mut g: Option<&mut [f64]>,
        want_loss: bool,
    ) -> f64 {
        let d = self.layout.features;
        let bias_at = self.layout.bias_row();
        // Only a test set wider than the model has features to skip.
        let clip = self.data.features > d;
        let keep = |f: u32| !clip || (f as usize) < d;
        let n = self.n();
        let need_dz = g.is_some() || S::USES;
        let mut sum = 0.0;
        let weighted = self.data.weights.is_some();
        let mut dz = [0.0];
        for i in rows {
            if i + ROWS_AHEAD < n {
                for &f in self.data.row(self.at(i + ROWS_AHEAD)).indices {
                    w.prefetch_at(f as usize);
                    if let Some(x) = g.as_deref().and_then(|g| g.get(f as usize)) {
                        prefetch(x);
                    }
                }
            }
            let row = self.data.row(self.at(i));
            let mut z = w.at(bias_at);
            match row.values {
                None => {
                    for &f in row.indices {
                        if keep(f) {
                            z += w.at(f as usize);
                        }
                    }
                }
                Some(vals) => {
                    for (&f, &v) in row.indices.iter().zip(vals) {
                        if keep(f) {
                            z += f64::from(v) * w.at(f as usize);
                        }
                    }
                }
            }
            let y = self.data.labels[self.at(i)];
            let s = if weighted { self.row_weight(i) } else { 1.0 };
            if !need_dz {
                sum += s * self.loss.value(&[z], y);
                continue;
            }
            if want_loss {
                sum += s * self.loss.grad(&[z], y, &mut dz);
            } else {
                self.loss.deriv(&[z], y, &mut dz);
            }
            let mut dz = s * dz[0];
            if S::ROUNDS {
                dz = f64::from(dz as f32);
            }
            sink.row(i, y, std::slice::from_mut(&mut dz));
            if let Some(g) = g.as_deref_mut() {
                self.add_row_single(g, row, dz, clip);
            }
        }
        sum
    }

    /// f(w); with `grad`, also writes grad f(w) (zero on the intercept row when the
    /// intercept is not trained).
    pub fn f_and_grad<W: Weights + ?Sized>(&self, w: &W, mut grad: Option<&mut [f64]>) -> f64 {
        let k = self.layout.classes;
        let feature_coords = self.layout.features * self.layout.classes;
        let mut f = self.loss_pass(w, grad.as_deref_mut());
        if self.alpha > 0.0 {
            f += (0..feature_coords)
                .map(|j| nonconvex_value(self.alpha, w.at(j)))
                .sum::<f64>();
        }
        if let Some(grad) = grad {
            if self.alpha > 0.0 {
                for (j, a) in grad[..feature_coords].iter_mut().enumerate() {
                    *a += nonconvex_deriv(self.alpha, w.at(j));
                }
            }
            if !self.layout.bias {
                let b = self.layout.bias_row() * k;
                grad[b..b + k].fill(0.0);
            }
        }
        f
    }

    /// h(w): the regularizer over the feature rows' groups.
    pub fn h<W: Weights + ?Sized>(&self, w: &W) -> f64 {
        let fc = self.layout.features * self.layout.classes;
        let gl = self.reg.span();
        let mut x = vec![0.0; gl];
        (0..fc)
            .step_by(gl)
            .map(|a| {
                let x = &mut x[..gl.min(fc - a)];
                for (i, v) in x.iter_mut().enumerate() {
                    *v = w.at(a + i);
                }
                self.reg.value(x)
            })
            .sum()
    }

    /// Psi(w) = f(w) + h(w).
    pub fn psi(&self, w: &[f64]) -> f64 {
        self.f_and_grad(w, None) + self.h(w)
    }

    /// `w <- prox_{eta h}(w)` on the feature rows; the intercept row is untouched.
    pub fn prox(&self, eta: f64, w: &mut [f64]) {
        let fc = self.layout.features * self.layout.classes;
        for g in w[..fc].chunks_mut(self.reg.group_len()) {
            self.reg.prox(eta, g);
        }
    }

    /// Whether [`Objective::prox_metric`] applies: h is separable (one coordinate per
    /// group), so its prox in a diagonal metric is a prox per coordinate.
    pub fn separable(&self) -> bool {
        self.reg.group_len() == 1
    }

    /// `w <- prox` of h in the metric `diag(1/d)`: coordinate c takes `prox_{eta d_c h}`
    /// (one factor per coordinate); the intercept row is untouched.
    ///
    /// # Panics
    /// If h is not [`Objective::separable`].
    pub fn prox_metric(&self, eta: f64, d: &[f64], w: &mut [f64]) {
        assert!(self.separable(), "a diagonal metric needs a separable h");
        let fc = self.layout.features * self.layout.classes;
        for (v, &dc) in w[..fc].iter_mut().zip(d) {
            self.reg.prox(eta * dc, std::slice::from_mut(v));
        }
    }

    /// ||P(w)||^2 given `grad` = grad f(w): group by group, with one group's buffer
    /// (no dense vector besides `w` and `grad`).
    pub fn pgm_sq_norm<W: Weights + ?Sized>(&self, w: &W, grad: &[f64], eta: f64) -> f64 {
        let fc = self.layout.features * self.layout.classes;
        let gl = self.reg.span();
        let (mut x, mut y) = (vec![0.0; gl], vec![0.0; gl]);
        let mut sum = 0.0;
        let term = |x: f64, p: f64| {
            let d = (x - p) / eta;
            d * d
        };
        for (a, g) in (0..fc).step_by(gl).zip(grad[..fc].chunks(gl)) {
            let (x, y) = (&mut x[..g.len()], &mut y[..g.len()]);
            for (i, (x, (y, &g))) in x.iter_mut().zip(y.iter_mut().zip(g)).enumerate() {
                *x = w.at(a + i);
                *y = *x - eta * g;
            }
            self.reg.prox(eta, y);
            sum += x
                .iter()
                .zip(y.iter())
                .map(|(&x, &p)| term(x, p))
                .sum::<f64>();
        }
        // The intercept is not regularized: its prox is the identity.
        sum + (fc..w.len())
            .zip(&grad[fc..])
            .map(|(j, &g)| {
                let x = w.at(j);
                term(x, x - eta * g)
            })
            .sum::<f64>()
    }

    /// Largest eigenvalue of `S X^T X S / n` (X with a column of ones for the intercept
    /// when it is trained; S the diagonal `scale`, one factor per column and the
    /// intercept's last, or the identity), by at most `iters` power iterations from a
    /// fixed start, stopping early once the estimate changes by at most `tol` (relative)
    /// between iterations; an estimate from below that converges quickly for the
    /// dominant direction of sparse data. The rows are read in place and every buffer
    /// is allocated once.
    pub fn gram_top_eigenvalue(&self, iters: usize, tol: f64, scale: Option<&[f64]>) -> f64 {
        let d = self.layout.features;
        let n = self.n().max(1) as f64;
        let cols = d + usize::from(self.layout.bias);
        let sc = |j: usize| scale.map_or(1.0, |s| s[j]);
        // A positive start overlaps the dominant (nonnegative) eigenvector of count data.
        let mut v: Vec<f64> = (0..cols)
            .map(|i| 1.0 + ((i * 2_654_435_761) % 1000) as f64 * 1e-4)
            .collect();
        let ranges = par::ranges(self.n(), self.parts());
        let mut parts = vec![vec![0.0; cols]; ranges.len()];
        let mut lambda = 0.0;
        for _ in 0..iters {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                return 0.0;
            }
            // v <- S v / |v|, the vector X^T X multiplies.
            for (j, x) in v.iter_mut().enumerate() {
                *x *= sc(j) / norm;
            }
            par::each(parts.iter_mut().zip(&ranges), |(p, r)| {
                self.gram_product(&v, r.clone(), p)
            });
            for (j, x) in v.iter_mut().enumerate() {
                *x = parts.iter().map(|p| p[j]).sum::<f64>() * sc(j) / n;
            }
            let prev = lambda;
            lambda = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if (lambda - prev).abs() <= tol * lambda {
                break;
            }
        }
        lambda
    }

    /// `next = sum_{i in rows} s_i x_i (x_i . v)` (`s_i` the row's weight) over the feature columns and the
    /// intercept's column of ones when trained: one thread's share of `X^T X v`.
    fn gram_product(&self, v: &[f64], rows: std::ops::Range<usize>, next: &mut [f64]) {
        let d = self.layout.features;
        let bias = self.layout.bias;
        let weighted = self.data.weights.is_some();
        next.fill(0.0);
        for i in rows {
            if let Some(a) =
                (i + ROWS_AHEAD < self.n()).then(|| self.data.row(self.at(i + ROWS_AHEAD)))
            {
                for &f in a.indices {
                    if let (Some(x), Some(y)) = (v.get(f as usize), next.get(f as usize)) {
                        prefetch(x);
                        prefetch(y);
                    }
                }
            }
            let row = self.data.row(self.at(i));
            let mut u = if bias { v[d] } else { 0.0 };
            for (f, x) in row.iter() {
                if (f as usize) < d {
                    u += f64::from(x) * v[f as usize];
                }
            }
            // A weighted row counts its weight times.
            if weighted {
                u *= self.row_weight(i);
            }
            for (f, x) in row.iter() {
                if (f as usize) < d {
                    next[f as usize] += f64::from(x) * u;
                }
            }
            if bias {
                next[d] += u;
            }
        }
    }

    /// Number of nonzero feature coordinates (the intercept excluded).
    pub fn nnz<W: Weights + ?Sized>(w: &W, layout: Layout) -> u64 {
        (0..layout.features * layout.classes)
            .filter(|&j| w.at(j) != 0.0)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loss::{Logistic, Softmax};
    use crate::model::reg::RegKind;

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

    fn toy() -> Dataset {
        Dataset::from_rows(
            4,
            &[
                (1.0, vec![(0, 1.0), (2, 0.5)]),
                (-1.0, vec![(1, 2.0), (3, -1.0)]),
                (1.0, vec![(0, -0.5), (1, 1.0), (3, 2.0)]),
                (-1.0, vec![(2, 1.5)]),
                (1.0, vec![]),
            ],
        )
    }

    /// An objective over chosen rows (held as row numbers) is the objective of a copy
    /// of those rows: margins, loss, gradient, labels and the top eigenvalue.
    #[test]
    fn selected_rows_equal_a_copy_of_them() {
        let ds = toy();
        let pick: Vec<u32> = vec![0, 2, 3];
        let copy = Dataset::from_rows(
            4,
            &pick
                .iter()
                .map(|&i| (ds.labels[i as usize], ds.row(i as usize).iter().collect()))
                .collect::<Vec<_>>(),
        );
        let layout = Layout {
            features: 4,
            classes: 1,
            bias: true,
        };
        let w = vec![0.3, -0.7, 1.1, 0.2, -0.4];
        for threads in [1, 2, 3] {
            let on = |data, rows| Objective {
                data,
                rows,
                loss: Logistic,
                reg: AnyReg(spec(RegKind::L1, 0.1)),
                layout,
                alpha: 0.01,
                threads,
            };
            let (sel, full) = (on(&ds, Some(&pick[..])), on(&copy, None));
            assert_eq!(sel.n(), 3);
            assert_eq!(sel.labels(), full.labels());
            assert_eq!(sel.margins(&w), full.margins(&w));
            let (mut g1, mut g2) = (vec![0.0; 5], vec![0.0; 5]);
            let f1 = sel.loss_pass(&w, Some(&mut g1));
            let f2 = full.loss_pass(&w, Some(&mut g2));
            assert_eq!((f1, &g1), (f2, &g2));
            let (mut z1, mut z2) = (vec![0.0; 3], vec![0.0; 3]);
            sel.gradient_pass(&w, &mut g1, &mut z1);
            full.gradient_pass(&w, &mut g2, &mut z2);
            assert_eq!((&g1, &z1), (&g2, &z2));
            assert_eq!(sel.psi(&w), full.psi(&w));
            assert_eq!(
                sel.gram_top_eigenvalue(50, 0.0, None),
                full.gram_top_eigenvalue(50, 0.0, None)
            );
        }
    }

    /// The one-output pass (rows with values, binary rows without stored values, a
    /// dataset wider than the model, selected rows) equals the sums written out row by
    /// row: loss, gradient and every row's loss derivative, with and without the loss.
    #[test]
    fn single_output_pass_equals_the_sums_by_hand() {
        use crate::model::loss::{log1pexp, sigmoid};
        let valued = toy();
        let mut binary = Dataset::from_rows(
            6,
            &[
                (1.0, vec![(0, 1.0), (2, 1.0), (5, 1.0)]),
                (-1.0, vec![(1, 1.0), (3, 1.0)]),
                (1.0, vec![(4, 1.0)]),
                (-1.0, vec![]),
                (-1.0, vec![(0, 1.0), (1, 1.0), (3, 1.0)]),
            ],
        );
        binary.compact_binary();
        assert!(binary.values.is_none());
        let layout = Layout {
            features: 4,
            classes: 1,
            bias: true,
        };
        let w = vec![0.3, -0.7, 1.1, 0.2, -0.4];
        let pick: Vec<u32> = vec![2, 0, 3];
        for data in [&valued, &binary] {
            for rows in [None, Some(&pick[..])] {
                for threads in [1, 2, 3] {
                    let o = Objective {
                        data,
                        rows,
                        loss: Logistic,
                        reg: AnyReg(spec(RegKind::None, 0.0)),
                        layout,
                        alpha: 0.0,
                        threads,
                    };
                    let n = o.n();
                    let (mut f_ref, mut g_ref, mut d_ref) = (0.0, vec![0.0; 5], vec![]);
                    for r in 0..n {
                        let i = rows.map_or(r, |p| p[r] as usize);
                        let row = data.row(i);
                        let z = w[4]
                            + row
                                .iter()
                                .filter(|&(f, _)| f < 4)
                                .map(|(f, v)| f64::from(v) * w[f as usize])
                                .sum::<f64>();
                        let y = f64::from(data.labels[i]);
                        let d = -y * sigmoid(-y * z);
                        f_ref += log1pexp(-y * z) / n as f64;
                        for (f, v) in row.iter().filter(|&(f, _)| f < 4) {
                            g_ref[f as usize] += f64::from(v) * d / n as f64;
                        }
                        g_ref[4] += d / n as f64;
                        d_ref.push(d);
                    }
                    let close = |a: &[f64], b: &[f64]| {
                        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
                    };
                    let mut g = vec![0.0; 5];
                    let f = o.loss_pass(&w, Some(&mut g));
                    assert!((f - f_ref).abs() < 1e-12, "{f} vs {f_ref}");
                    assert!(close(&g, &g_ref), "{g:?} vs {g_ref:?}");
                    assert!((o.loss_pass(&w, None) - f_ref).abs() < 1e-12);
                    // The snapshot's pass: the derivatives rounded to f32, and the
                    // gradient summed from exactly those.
                    let d_f32: Vec<f32> = d_ref.iter().map(|&d| d as f32).collect();
                    let mut g_f32 = vec![0.0; 5];
                    for r in 0..n {
                        let i = rows.map_or(r, |p| p[r] as usize);
                        let d = f64::from(d_f32[r]) / n as f64;
                        for (f, v) in data.row(i).iter().filter(|&(f, _)| f < 4) {
                            g_f32[f as usize] += f64::from(v) * d;
                        }
                        g_f32[4] += d;
                    }
                    let (mut g2, mut d2) = (vec![1.0; 5], vec![0.0f32; n]);
                    o.gradient_pass(&w, &mut g2, &mut d2);
                    assert_eq!(d2, d_f32);
                    assert!(close(&g2, &g_f32), "{g2:?} vs {g_f32:?}");
                }
            }
        }
    }

    /// The full gradient agrees with central differences of f, for several thread counts.
    #[test]
    fn gradient_matches_finite_differences() {
        let ds = toy();
        for (classes, alpha) in [(1, 0.0), (1, 0.2), (3, 0.1)] {
            let layout = Layout {
                features: 4,
                classes,
                bias: true,
            };
            let labels: Vec<f32> = ds
                .labels
                .iter()
                .map(|&y| if y > 0.0 { 1.0 } else { 0.0 })
                .collect();
            let mut ds3 = ds.clone();
            if classes == 3 {
                ds3.labels = labels
                    .iter()
                    .enumerate()
                    .map(|(i, _)| (i % 3) as f32)
                    .collect();
            }
            let w: Vec<f64> = (0..layout.coords())
                .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3)
                .collect();
            for threads in [1, 2, 3] {
                type GradFn<'a> = &'a dyn Fn(&[f64], Option<&mut [f64]>) -> f64;
                let check = |f: GradFn| {
                    let mut g = vec![0.0; w.len()];
                    f(&w, Some(&mut g));
                    for i in 0..w.len() {
                        let h = 1e-6;
                        let (mut a, mut b) = (w.clone(), w.clone());
                        a[i] += h;
                        b[i] -= h;
                        let fd = (f(&a, None) - f(&b, None)) / (2.0 * h);
                        assert!((fd - g[i]).abs() < 1e-6, "coord {i}: fd {fd} grad {}", g[i]);
                    }
                };
                if classes == 1 {
                    let o = Objective {
                        data: &ds,
                        rows: None,
                        loss: Logistic,
                        reg: AnyReg(spec(RegKind::None, 0.0)),
                        layout,
                        alpha,
                        threads,
                    };
                    check(&|w, g| o.f_and_grad(w, g));
                } else {
                    let o = Objective {
                        data: &ds3,
                        rows: None,
                        loss: Softmax,
                        reg: AnyReg(spec(RegKind::None, 0.0)),
                        layout,
                        alpha,
                        threads,
                    };
                    check(&|w, g| o.f_and_grad(w, g));
                }
            }
        }
    }

    /// Psi at a point equals the sum of the losses by hand plus lambda * ||w||_1 (the
    /// intercept unpenalized), and P = grad f where h = 0.
    #[test]
    fn psi_and_pgm_closed_forms() {
        let ds = toy();
        let layout = Layout {
            features: 4,
            classes: 1,
            bias: true,
        };
        let w = vec![0.5, -1.0, 0.0, 0.25, 0.3];
        let o = Objective {
            data: &ds,
            rows: None,
            loss: Logistic,
            reg: AnyReg(spec(RegKind::L1, 0.1)),
            layout,
            alpha: 0.0,
            threads: 2,
        };
        let z = o.margins(&w);
        let by_hand = [
            0.5 + 0.3,
            -2.0 - 0.25 + 0.3,
            -0.25 - 1.0 + 0.5 + 0.3,
            0.3,
            0.3,
        ];
        for (a, b) in z.iter().zip(by_hand) {
            assert!((a - b).abs() < 1e-12);
        }
        let f: f64 = z
            .iter()
            .zip(&ds.labels)
            .map(|(z, &y)| (1.0 + (-f64::from(y) * z).exp()).ln())
            .sum::<f64>()
            / 5.0;
        assert!((o.psi(&w) - (f + 0.1 * 1.75)).abs() < 1e-12);
        assert_eq!(Objective::<Logistic>::nnz(&w, layout), 3);
        // Dense reference for the top eigenvalue of X^T X / n with the ones column.
        let mut x = vec![vec![0.0f64; 5]; 5];
        for (i, xi) in x.iter_mut().enumerate() {
            xi[4] = 1.0;
            for (f, v) in ds.row(i).iter() {
                xi[f as usize] = f64::from(v);
            }
        }
        let gram: Vec<Vec<f64>> = (0..5)
            .map(|a| {
                (0..5)
                    .map(|b| (0..5).map(|i| x[i][a] * x[i][b]).sum::<f64>() / 5.0)
                    .collect()
            })
            .collect();
        let dense_top = |m: &[Vec<f64>]| -> f64 {
            let mut v = vec![1.0; 5];
            for _ in 0..500 {
                let nv: Vec<f64> = (0..5)
                    .map(|a| (0..5).map(|b| m[a][b] * v[b]).sum())
                    .collect();
                let nn = nv.iter().map(|t| t * t).sum::<f64>().sqrt();
                v = nv.iter().map(|t| t / nn).collect();
            }
            (0..5)
                .map(|a| (0..5).map(|b| m[a][b] * v[b]).sum::<f64>() * v[a])
                .sum()
        };
        let top = dense_top(&gram);
        assert!(
            (o.gram_top_eigenvalue(200, 0.0, None) - top).abs() < 1e-9 * top,
            "{} vs {top}",
            o.gram_top_eigenvalue(200, 0.0, None)
        );
        // In a diagonal metric S: the top eigenvalue of S X^T X S / n.
        let s = [0.5, 2.0, 1.5, 0.25, 1.0];
        let scaled: Vec<Vec<f64>> = (0..5)
            .map(|a| (0..5).map(|b| s[a] * gram[a][b] * s[b]).collect())
            .collect();
        let top = dense_top(&scaled);
        let got = o.gram_top_eigenvalue(200, 0.0, Some(&s));
        assert!((got - top).abs() < 1e-9 * top, "{got} vs {top}");
        assert!((top - dense_top(&gram)).abs() > 1e-3 * top);
        let none = Objective {
            reg: AnyReg(spec(RegKind::None, 0.0)),
            ..o
        };
        let mut g = vec![0.0; 5];
        none.f_and_grad(&w, Some(&mut g));
        let p = none.pgm_sq_norm(&w, &g, 0.7);
        assert!((p - g.iter().map(|x| x * x).sum::<f64>()).abs() < 1e-12);
        // At the L1 optimum of a problem whose optimum is 0 (huge lambda), P(0) = 0 on
        // features; only the unpenalized intercept's gradient remains.
        let big = Objective {
            reg: AnyReg(spec(RegKind::L1, 100.0)),
            ..o
        };
        let zero = vec![0.0; 5];
        big.f_and_grad(&zero, Some(&mut g));
        let p = big.pgm_sq_norm(&zero, &g, 0.5);
        assert!((p - g[4] * g[4]).abs() < 1e-12);
        // Group by group equals the prox of the whole vector at once (groups of 2 over
        // the 4 features; the intercept's coordinate untouched).
        for (kind, lambda, len) in [
            (RegKind::GroupLasso, 0.3, 2),
            (RegKind::L1, 0.2, 1),
            (RegKind::ElasticNet, 0.4, 1),
        ] {
            let o = Objective {
                reg: AnyReg(RegSpec {
                    group_len: len,
                    ..spec(kind, lambda)
                }),
                ..o
            };
            o.f_and_grad(&w, Some(&mut g));
            let eta = 0.8;
            let mut y: Vec<f64> = w.iter().zip(&g).map(|(x, g)| x - eta * g).collect();
            o.prox(eta, &mut y);
            let want: f64 = w.iter().zip(&y).map(|(x, p)| ((x - p) / eta).powi(2)).sum();
            let got = o.pgm_sq_norm(&w, &g, eta);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "{kind:?}: {got} vs {want}"
            );
            assert!(got > 0.0);
        }
    }
}
