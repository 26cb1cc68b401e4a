//! The small-data solver: proximal Newton with coordinate descent on a working set
//! (`algorithm = "cd"`), the method of LIBLINEAR's L1-regularized logistic regression
//! (Yuan, Ho & Lin 2012, "An improved GLMNET for L1-regularized logistic regression")
//! with the working sets of Massias et al. (2018, "Celer") in place of its shrinking.
//!
//! Each outer iteration, at the model `x` with margins `z = X x + b`:
//! 1. one pass over the rows gives the loss, its derivatives `d_i` and curvatures `h_i`
//!    ([`Loss::curvature_at`]); one pass over the columns gives the gradient
//!    `g_j = sum_i x_ij d_i / n` and the model's diagonal `H_j = sum_i x_ij^2 h_i / n`;
//! 2. the run stops once `||P(x)||^2`, the trainer's measure with its step, is at the
//!    threshold it was given;
//! 3. the working set: every feature with a nonzero weight, and the features whose
//!    coordinate Newton step, measured as `|x_j - prox(x_j - g_j / H_j)| sqrt(H_j)` (for
//!    L1 at 0, `(|g_j| - lambda) / sqrt(H_j)`), is largest, at least twice the model's
//!    nonzeros;
//! 4. coordinate descent in random order over the working set (and the intercept) on
//!    the quadratic model `g' D + D' X' diag(h) X D / (2 n) + h(x + D)`, with `r = X D`
//!    kept up to date, until no coordinate moves by more than a tenth of the outer
//!    violation (in the same units) or 50 passes;
//! 5. a backtracking line search along `D` (Armijo, factor 1/2), then `x += beta D`.
//!
//! Costs: a pass over the rows and one over the columns per outer iteration, and passes
//! over the working set's columns only in between; memory: the rows by column (a copy of
//! the data) and a few vectors of the rows' length. It is for one-output losses and
//! separable regularizers without the nonconvex term; with the loss's curvature bound
//! as its model (the default of [`Loss::curvature_at`]) it is proximal coordinate
//! descent with per-coordinate steps, whose line search takes the whole step at once.

use std::ops::Range;

use crate::data::Dataset;
use crate::fista::SolverStop;
use crate::model::loss::Loss;
use crate::model::objective::Objective;
use crate::model::reg::Regularizer;
use crate::par;

/// Smallest working set (or every feature, when fewer).
const WS_MIN: usize = 16;

/// The inner passes stop once no coordinate moves by more than this share of the
/// outer iteration's largest violation.
const INNER_FRACTION: f64 = 0.1;

/// At most this many inner passes per outer iteration.
const MAX_INNER: usize = 50;

/// Added to every coordinate's curvature (LIBLINEAR's nu): a column whose rows all
/// have zero curvature still takes a finite step, which the line search then shortens.
const NU: f64 = 1e-12;

/// Armijo's sufficient-decrease factor.
const SIGMA: f64 = 0.01;

/// Halvings of the line search before the solver gives up (the step is then below
/// rounding).
const MAX_HALVINGS: usize = 40;

/// The rows of a dataset by column (compressed sparse columns): what coordinate
/// descent reads.
pub struct Columns {
    ptr: Vec<usize>,
    rows: Vec<u32>,
    /// `None`: every stored value is 1.
    vals: Option<Vec<f32>>,
}

impl Columns {
    /// The first `features` columns of `data` (entries of later columns are left out).
    pub fn of(data: &Dataset, features: usize) -> Columns {
        let mut ptr = vec![0usize; features + 1];
        for &f in data.indices.iter() {
            if (f as usize) < features {
                ptr[f as usize + 1] += 1;
            }
        }
        for j in 0..features {
            ptr[j + 1] += ptr[j];
        }
        let nnz = ptr[features];
        let mut next = ptr[..features].to_vec();
        let mut rows = vec![0u32; nnz];
        let mut vals = data.values.as_ref().map(|_| vec![0.0f32; nnz]);
        for i in 0..data.rows() {
            for (f, v) in data.row(i).iter() {
                let f = f as usize;
                if f < features {
                    let p = next[f];
                    rows[p] = i as u32;
                    if let Some(vals) = vals.as_mut() {
                        vals[p] = v;
                    }
                    next[f] += 1;
                }
            }
        }
        Columns { ptr, rows, vals }
    }

    /// The columns in at most `parts` consecutive ranges of about equal nonzeros.
    fn parts(&self, parts: usize) -> Vec<Range<usize>> {
        let d = self.len();
        let nnz = self.rows.len();
        let parts = parts.clamp(1, d.max(1));
        let mut cuts = vec![0];
        for p in 1..parts {
            let target = nnz * p / parts;
            let j = self.ptr.partition_point(|&q| q < target).min(d);
            cuts.push(j.max(*cuts.last().expect("a first cut")));
        }
        cuts.push(d);
        cuts.windows(2).map(|w| w[0]..w[1]).collect()
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.ptr.len() - 1
    }

    /// Whether there are no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `sum_i x_ij a_i b_i` over column `j`'s rows.
    #[inline]
    fn dot_prod(&self, j: usize, a: &[f64], b: &[f64]) -> f64 {
        let (lo, hi) = (self.ptr[j], self.ptr[j + 1]);
        let rows = &self.rows[lo..hi];
        match &self.vals {
            None => rows.iter().map(|&i| a[i as usize] * b[i as usize]).sum(),
            Some(v) => rows
                .iter()
                .zip(&v[lo..hi])
                .map(|(&i, &x)| f64::from(x) * a[i as usize] * b[i as usize])
                .sum(),
        }
    }

    /// `(sum_i x_ij a_i, sum_i x_ij^2 b_i)` over column `j`'s rows.
    #[inline]
    fn dot2(&self, j: usize, a: &[f64], b: &[f64]) -> (f64, f64) {
        let (lo, hi) = (self.ptr[j], self.ptr[j + 1]);
        let rows = &self.rows[lo..hi];
        let (mut s, mut q) = (0.0, 0.0);
        match &self.vals {
            None => {
                for &i in rows {
                    s += a[i as usize];
                    q += b[i as usize];
                }
            }
            Some(v) => {
                for (&i, &x) in rows.iter().zip(&v[lo..hi]) {
                    let x = f64::from(x);
                    s += x * a[i as usize];
                    q += x * x * b[i as usize];
                }
            }
        }
        (s, q)
    }

    /// `r_i += t x_ij` over column `j`'s rows.
    #[inline]
    fn axpy(&self, j: usize, t: f64, r: &mut [f64]) {
        let (lo, hi) = (self.ptr[j], self.ptr[j + 1]);
        let rows = &self.rows[lo..hi];
        match &self.vals {
            None => {
                for &i in rows {
                    r[i as usize] += t;
                }
            }
            Some(v) => {
                for (&i, &x) in rows.iter().zip(&v[lo..hi]) {
                    r[i as usize] += t * f64::from(x);
                }
            }
        }
    }
}

/// When [`solve`] stops, besides its own iteration budget.
#[derive(Clone, Copy, Debug)]
pub struct CdStop {
    /// Converged once `||P(x)||^2` with step `eta` is at most this (none: only the
    /// budget, the observer or the end of all progress stop it).
    pub pgm_sq: Option<f64>,
    pub eta: f64,
    /// Outer iterations at most.
    pub max_iters: usize,
    /// Seed of the coordinate order.
    pub seed: u64,
}

/// Whether [`solve`] runs on this objective: one output, a separable regularizer, no
/// nonconvex term, every row.
pub fn applies<L: Loss>(obj: &Objective<L>) -> bool {
    obj.layout.classes == 1 && obj.separable() && obj.alpha == 0.0 && obj.rows.is_none()
}

/// The state of a run: margins, the loss's derivatives and curvatures, the direction.
struct State {
    /// Margins `X x + b`.
    z: Vec<f64>,
    /// Loss derivatives and curvatures at `z`.
    dv: Vec<f64>,
    hv: Vec<f64>,
    /// `X D` of the direction `D`.
    r: Vec<f64>,
    /// Mean loss at `z`.
    f: f64,
}

/// Minimizes Psi from `x` (updated in place), where [`applies`] holds, on the columns
/// `cols` of `obj`'s data. `observe` sees the model after every outer iteration and
/// returns false to stop.
pub fn solve<L: Loss>(
    obj: &Objective<L>,
    cols: &Columns,
    x: &mut [f64],
    stop: &CdStop,
    mut observe: impl FnMut(usize, &[f64]) -> bool,
) -> SolverStop {
    assert!(
        applies(obj),
        "cd: one output, a separable regularizer, every row"
    );
    let d = obj.layout.features;
    let b = obj.layout.bias_row();
    let bias = obj.layout.bias;
    assert_eq!(cols.len(), d);
    assert_eq!(x.len(), obj.layout.coords());
    let n = obj.n();
    if n == 0 {
        return SolverStop::Converged;
    }
    let inv_n = 1.0 / n as f64;
    let labels = &obj.data.labels[..];
    let reg = obj.reg;
    let h1 = |v: f64| reg.value(&[v]);
    let prox1 = |eta: f64, v: f64| {
        let mut v = v;
        reg.prox(eta, std::slice::from_mut(&mut v));
        v
    };
    let mut st = State {
        z: obj.margins(x),
        dv: vec![0.0; n],
        hv: vec![0.0; n],
        r: vec![0.0; n],
        f: 0.0,
    };
    let mut g = vec![0.0; x.len()];
    let mut hd = vec![0.0; d];
    let mut score = vec![0.0; d];
    let mut dir = vec![0.0; d];
    let mut ws: Vec<usize> = Vec::new();
    let mut ws_size = WS_MIN.min(d);
    let mut rng = Rng(stop.seed ^ 0x9e37_79b9_7f4a_7c15);
    // The passes over all rows and all columns run on `obj.threads` where they are long
    // enough to pay for the threads; the coordinate passes run on one.
    let parts = par::threads_for(cols.rows.len() + n, obj.threads);
    for iter in 1..=stop.max_iters {
        // 1. Derivatives, gradient, curvatures.
        derivatives(obj, labels, &mut st, parts);
        let col_parts = cols.parts(parts);
        let (dv, hv) = (&st.dv, &st.hv);
        par::each(
            col_parts.iter().cloned().zip(
                split_by(&mut g[..d], &col_parts)
                    .into_iter()
                    .zip(split_by(&mut hd, &col_parts)),
            ),
            |(r, (g, hd))| {
                for ((j, g), hd) in r.zip(g.iter_mut()).zip(hd.iter_mut()) {
                    let (s, q) = cols.dot2(j, dv, hv);
                    *g = s * inv_n;
                    *hd = q * inv_n + NU;
                }
            },
        );
        g[b] = if bias {
            st.dv.iter().sum::<f64>() * inv_n
        } else {
            0.0
        };
        let h_b = st.hv.iter().sum::<f64>() * inv_n + NU;
        // 2. The stop.
        if let Some(t) = stop.pgm_sq {
            if obj.pgm_sq_norm(x, &g, stop.eta) <= t {
                return SolverStop::Converged;
            }
        }
        // 3. The working set.
        let mut violation = (g[b] * g[b] / h_b).sqrt();
        let mut support = 0;
        for j in 0..d {
            let p = prox1(1.0 / hd[j], x[j] - g[j] / hd[j]);
            score[j] = ((p - x[j]) * hd[j]).abs() / hd[j].sqrt();
            violation = violation.max(score[j]);
            support += usize::from(x[j] != 0.0);
        }
        if violation == 0.0 {
            return SolverStop::Converged;
        }
        ws_size = ws_size.max(2 * support).min(d);
        ws.clear();
        ws.extend((0..d).filter(|&j| x[j] != 0.0 || score[j] > 0.0));
        if ws.len() > ws_size {
            let key = |j: usize| if x[j] != 0.0 { f64::INFINITY } else { score[j] };
            ws.select_nth_unstable_by(ws_size - 1, |&a, &c| key(c).total_cmp(&key(a)));
            ws.truncate(ws_size);
        }
        // 4. Coordinate descent on the quadratic model.
        st.r.fill(0.0);
        for &j in &ws {
            dir[j] = 0.0;
        }
        let mut dir_b = 0.0;
        let inner_tol = INNER_FRACTION * violation;
        for _ in 0..MAX_INNER {
            rng.shuffle(&mut ws);
            let mut moved: f64 = 0.0;
            for &j in &ws {
                let hj = hd[j];
                let gj = g[j] + cols.dot_prod(j, &st.hv, &st.r) * inv_n;
                let cur = x[j] + dir[j];
                let step = prox1(1.0 / hj, cur - gj / hj) - cur;
                if step != 0.0 {
                    dir[j] += step;
                    cols.axpy(j, step, &mut st.r);
                    moved = moved.max(step.abs() * hj.sqrt());
                }
            }
            if bias {
                let gb = g[b] + st.hv.iter().zip(&st.r).map(|(h, r)| h * r).sum::<f64>() * inv_n;
                let step = -gb / h_b;
                dir_b += step;
                for r in st.r.iter_mut() {
                    *r += step;
                }
                moved = moved.max(step.abs() * h_b.sqrt());
            }
            if moved <= inner_tol {
                break;
            }
        }
        // 5. The line search.
        let h_ws: f64 = ws.iter().map(|&j| h1(x[j])).sum();
        let h_at = |beta: f64| -> f64 { ws.iter().map(|&j| h1(x[j] + beta * dir[j])).sum() };
        let lin = ws.iter().map(|&j| g[j] * dir[j]).sum::<f64>() + g[b] * dir_b;
        let decrease = lin + h_at(1.0) - h_ws;
        if decrease >= 0.0 {
            // No direction of descent on this working set: grow it.
            if ws_size == d {
                return SolverStop::Stalled;
            }
            ws_size = (2 * ws_size).min(d);
            continue;
        }
        let mut beta = 1.0;
        let mut accepted = false;
        for _ in 0..MAX_HALVINGS {
            let f_new = st
                .z
                .iter()
                .zip(&st.r)
                .zip(labels)
                .enumerate()
                .map(|(i, ((&z, &r), &y))| obj.data.weight(i) * obj.loss.value(&[z + beta * r], y))
                .sum::<f64>()
                * inv_n;
            let h_new = h_at(beta);
            if f_new + h_new - st.f - h_ws <= SIGMA * beta * decrease {
                accepted = true;
                break;
            }
            beta *= 0.5;
        }
        if !accepted {
            return SolverStop::Stalled;
        }
        for &j in &ws {
            x[j] += beta * dir[j];
        }
        x[b] += beta * dir_b;
        for (z, r) in st.z.iter_mut().zip(&st.r) {
            *z += beta * r;
        }
        // An accepted step has a finite objective (the test fails on NaN and infinity),
        // but a margin may still overflow where the loss flattens out.
        if !st.z.iter().all(|z| z.is_finite()) {
            return SolverStop::Diverged;
        }
        if !observe(iter, x) {
            return SolverStop::Interrupted;
        }
    }
    SolverStop::MaxIters
}

/// The loss, its derivatives and curvatures at the margins `st.z` (each times the
/// row's weight), over `parts` ranges of the rows.
fn derivatives<L: Loss>(obj: &Objective<L>, labels: &[f32], st: &mut State, parts: usize) {
    let n = labels.len();
    let rs = par::ranges(n, parts);
    let z = &st.z;
    let sums = par::each(
        rs.iter().cloned().zip(
            split_by(&mut st.dv, &rs)
                .into_iter()
                .zip(split_by(&mut st.hv, &rs)),
        ),
        |(r, (dv, hv))| {
            let mut sum = 0.0;
            let mut dz = [0.0];
            for ((((&z, &y), dv), hv), i) in z[r.clone()]
                .iter()
                .zip(&labels[r.clone()])
                .zip(dv.iter_mut())
                .zip(hv.iter_mut())
                .zip(r)
            {
                let s = obj.data.weight(i);
                sum += s * obj.loss.grad(&[z], y, &mut dz);
                *dv = s * dz[0];
                *hv = s * obj.loss.curvature_at(z, y, dz[0]);
            }
            sum
        },
    );
    st.f = sums.iter().sum::<f64>() / n.max(1) as f64;
}

/// `v` cut into the consecutive pieces of `ranges` (which cover `0..v.len()` in order).
fn split_by<'v, T>(v: &'v mut [T], ranges: &[Range<usize>]) -> Vec<&'v mut [T]> {
    let mut rest = v;
    ranges
        .iter()
        .map(|r| {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(r.len());
            rest = tail;
            mine
        })
        .collect()
}

/// xorshift64*: the coordinate order (the same on every machine for a seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fista;
    use crate::model::loss::{Huber, Logistic, Squared, SquaredHinge};
    use crate::model::reg::{RegKind, RegSpec};
    use crate::testing::{orthogonal_lasso, spec};
    use rand::{Rng as _, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn objective<L: Loss>(ds: &Dataset, bias: bool, loss: L, reg: RegSpec) -> Objective<'_, L> {
        crate::testing::objective(ds, bias, loss, reg, 1)
    }

    /// Random sparse rows: labels -1/+1 for `binary`, else real; with values, or all 1
    /// (`ones`: the column store keeps no values then).
    fn data(seed: u64, rows: usize, d: usize, binary: bool, ones: bool) -> Dataset {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let truth: Vec<f32> = (0..d).map(|j| if j % 4 == 0 { 1.0 } else { 0.0 }).collect();
        let rows: Vec<(f32, Vec<(u32, f32)>)> = (0..rows)
            .map(|_| {
                let mut fs: Vec<u32> = (0..6).map(|_| rng.random_range(0..d as u32)).collect();
                fs.sort();
                fs.dedup();
                let row: Vec<(u32, f32)> = fs
                    .into_iter()
                    .map(|f| {
                        (
                            f,
                            if ones {
                                1.0
                            } else {
                                rng.random_range(-1.0..1.5f32)
                            },
                        )
                    })
                    .collect();
                let m: f32 = row.iter().map(|&(f, v)| truth[f as usize] * v).sum::<f32>()
                    + rng.random_range(-0.8..0.8f32);
                let y = if binary {
                    if m > 0.2 {
                        1.0
                    } else {
                        -1.0
                    }
                } else {
                    m + 0.5
                };
                (y, row)
            })
            .collect();
        Dataset::from_rows(d, &rows)
    }

    fn tight(max_iters: usize) -> CdStop {
        CdStop {
            pgm_sq: Some(1e-26),
            eta: 1.0,
            max_iters,
            seed: 7,
        }
    }

    /// The column store holds exactly the matrix's entries: brute force over the dense
    /// matrix, with values and with implicit ones.
    #[test]
    fn columns_are_the_transpose() {
        for ones in [false, true] {
            let ds = data(3, 40, 9, true, ones);
            let cols = Columns::of(&ds, 7);
            assert_eq!(cols.len(), 7);
            assert_eq!(cols.vals.is_none(), ds.values.is_none());
            for j in 0..7 {
                let mut want = Vec::new();
                for i in 0..ds.rows() {
                    for (f, v) in ds.row(i).iter() {
                        if f as usize == j {
                            want.push((i as u32, v));
                        }
                    }
                }
                let (lo, hi) = (cols.ptr[j], cols.ptr[j + 1]);
                let got: Vec<(u32, f32)> = (lo..hi)
                    .map(|p| (cols.rows[p], cols.vals.as_ref().map_or(1.0, |v| v[p])))
                    .collect();
                assert_eq!(got, want, "column {j}");
            }
            // Columns 7 and 8 are left out.
            let kept: usize = (0..ds.rows())
                .map(|i| ds.row(i).indices.iter().filter(|&&f| f < 7).count())
                .sum();
            assert_eq!(cols.rows.len(), kept);
        }
    }

    /// The lasso with an orthogonal design has a closed form
    /// ([`crate::testing::orthogonal_lasso`]), here to 1e-12.
    #[test]
    fn lasso_orthonormal_closed_form() {
        let ys = [3.0f32, -2.0, 0.1, -0.05, 1.0, 0.0];
        let (ds, want) = orthogonal_lasso(&ys, 0.1);
        let obj = objective(&ds, false, Squared, spec(RegKind::L1, 0.1));
        let cols = Columns::of(&ds, ds.features);
        let mut x = vec![0.0; obj.layout.coords()];
        let stop = solve(&obj, &cols, &mut x, &tight(100), |_, _| true);
        assert_eq!(stop, SolverStop::Converged);
        for (i, w) in want.iter().enumerate() {
            assert!((x[i] - w).abs() < 1e-12, "x[{i}] = {} want {w}", x[i]);
        }
    }

    /// `cd` and FISTA (an independent solver) reach the same Psi* for every one-output
    /// loss, the separable regularizers, with and without an intercept; `cd` gets
    /// there in few outer iterations, and its iterates never increase Psi.
    #[test]
    fn reaches_fistas_optimum_for_every_loss_and_regularizer() {
        fn check<L: Loss>(loss: L, binary: bool) {
            let regs = [
                spec(RegKind::L1, 0.02),
                spec(RegKind::ElasticNet, 0.03),
                spec(RegKind::L2, 0.05),
                spec(RegKind::Box, 0.0),
                spec(RegKind::Nonneg, 0.0),
            ];
            for (k, reg) in regs.into_iter().enumerate() {
                for bias in [false, true] {
                    let ds = data(11 + k as u64, 300, 25, binary, k % 2 == 1);
                    let obj = objective(&ds, bias, loss, reg);
                    let mut xf = vec![0.0; obj.layout.coords()];
                    let fs = fista::solve(&obj, &mut xf, 1.0, 1e-22, 20_000, None, |_, _| true);
                    assert_ne!(fs, SolverStop::Diverged);
                    let cols = Columns::of(&ds, ds.features);
                    let mut x = vec![0.0; obj.layout.coords()];
                    let mut psis = vec![obj.psi(&x)];
                    let stop = solve(&obj, &cols, &mut x, &tight(200), |_, x| {
                        psis.push(obj.psi(x));
                        true
                    });
                    let what = format!("{} + {:?}, bias {bias}", L::INFO.name, reg.kind);
                    assert!(
                        matches!(stop, SolverStop::Converged | SolverStop::Stalled),
                        "{what}: {stop:?} after {} iterations",
                        psis.len() - 1
                    );
                    let (pc, pf) = (obj.psi(&x), obj.psi(&xf));
                    assert!(
                        (pc - pf).abs() <= 1e-9 * pf.abs().max(1e-3),
                        "{what}: cd {pc} fista {pf}"
                    );
                    assert!(
                        psis.windows(2).all(|w| w[1] <= w[0] + 1e-15 * w[0].abs()),
                        "{what}: not monotone {psis:?}"
                    );
                    assert!(psis.len() <= 60, "{what}: {} iterations", psis.len() - 1);
                }
            }
        }
        check(Logistic, true);
        check(SquaredHinge, true);
        check(Squared, false);
        check(Huber::with_param(0.5), false);
    }

    /// The stops: a model at the optimum is converged before any step; the budget ends
    /// a run with `MaxIters`; the observer ends it with `Interrupted`.
    #[test]
    fn stops_at_the_optimum_the_budget_and_the_observer() {
        let ds = data(5, 200, 30, true, false);
        let obj = objective(&ds, true, Logistic, spec(RegKind::L1, 0.01));
        let cols = Columns::of(&ds, ds.features);
        let mut x = vec![0.0; obj.layout.coords()];
        let stop = CdStop {
            pgm_sq: Some(1e-20),
            ..tight(100)
        };
        assert_eq!(
            solve(&obj, &cols, &mut x, &stop, |_, _| true),
            SolverStop::Converged
        );
        let mut calls = 0;
        let again = solve(&obj, &cols, &mut x, &stop, |_, _| {
            calls += 1;
            true
        });
        assert_eq!((again, calls), (SolverStop::Converged, 0));
        let mut y = vec![0.0; obj.layout.coords()];
        let one = CdStop {
            max_iters: 1,
            ..stop
        };
        assert_eq!(
            solve(&obj, &cols, &mut y, &one, |_, _| true),
            SolverStop::MaxIters
        );
        assert!(obj.psi(&y) < obj.psi(&vec![0.0; y.len()]));
        let mut z = vec![0.0; obj.layout.coords()];
        assert_eq!(
            solve(&obj, &cols, &mut z, &stop, |it, _| it < 2),
            SolverStop::Interrupted
        );
    }

    /// The passes over every row and column split over threads where the data is
    /// large enough give the same iterates as one thread, to rounding: every column's
    /// sums are the same, only the loss's sum is added in pieces.
    #[test]
    fn threads_change_nothing_but_rounding() {
        let ds = data(21, 20_000, 400, true, false);
        let cols = Columns::of(&ds, ds.features);
        assert_eq!(cols.parts(3).len(), 3);
        let run = |threads: usize| {
            let obj = Objective {
                threads,
                ..objective(&ds, true, Logistic, spec(RegKind::L1, 1e-3))
            };
            let mut x = vec![0.0; obj.layout.coords()];
            let stop = solve(&obj, &cols, &mut x, &tight(100), |_, _| true);
            assert!(matches!(stop, SolverStop::Converged | SolverStop::Stalled));
            (obj.psi(&x), x)
        };
        let (p1, x1) = run(1);
        let (p3, x3) = run(3);
        assert!((p1 - p3).abs() <= 1e-12 * p1, "{p1} vs {p3}");
        let dx = x1
            .iter()
            .zip(&x3)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(dx < 1e-6, "{dx}");
    }

    /// The curvatures the quadratic model uses: the logistic loss's exact second
    /// derivative (finite differences of its derivative), the squared hinge's generalized
    /// one, and none above the loss's bound.
    #[test]
    fn curvatures_are_the_second_derivatives() {
        fn deriv<L: Loss>(l: &L, z: f64, y: f32) -> f64 {
            let mut g = [0.0];
            l.grad(&[z], y, &mut g);
            g[0]
        }
        fn check<L: Loss>(l: L) {
            for y in [-1.0f32, 1.0] {
                for k in -40..=40 {
                    let z = f64::from(k) * 0.173 + 0.01;
                    let h = 1e-6;
                    let fd = (deriv(&l, z + h, y) - deriv(&l, z - h, y)) / (2.0 * h);
                    let c = l.curvature_at(z, y, deriv(&l, z, y));
                    assert!(
                        (c - fd).abs() < 1e-6,
                        "{} z {z} y {y}: {c} vs {fd}",
                        L::INFO.name
                    );
                    assert!((0.0..=L::INFO.curvature).contains(&c));
                }
            }
        }
        check(Logistic);
        check(SquaredHinge);
        check(Squared);
    }
}
