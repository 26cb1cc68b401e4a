//! The one owner of the run loop. [`Trainer::run`] plans the run from the config and the
//! data (blocks, step size, budget), starts the shards and the workers, evaluates the
//! model at intervals with the workers paused (so training time excludes evaluation
//! time), feeds every event to the observers, decides when to stop, and returns a
//! [`RunSummary`] that says why it stopped.
//!
//! One epoch is `n * M / N` block updates: with M blocks and minibatches of N rows,
//! every block has then received, in expectation, the gradient of every row once. For
//! `asy-full` and `sync`, whose steps update all M blocks, that is `n / N` steps.
//!
//! `step = "auto"` sets `eta = 1 / L(N)`, the expected smoothness of an N-row minibatch
//! gradient (see [`auto_step`]), in the column-scaled metric when steps are scaled.
//!
//! Variance reduction (SVRG, Johnson and Zhang 2013, "Accelerating stochastic gradient
//! descent using predictive variance reduction"; proximal form: Xiao and Zhang 2014,
//! "A proximal stochastic gradient method with progressive variance reduction"). Every
//! `svrg-epochs` the trainer pauses the workers at an exact step, takes the model x~,
//! stores every row's margins and installs `mu = grad f(x~)` in the shards as a
//! drift. A push then carries `G_j(x) - G_j(x~)` (the minibatch rows' derivative
//! differences, as sparse as a plain push) and the shard steps every coordinate with
//! `G_c + mu_c`, lazily and exactly in closed form for the untouched ones
//! (`model::reg`). The estimate is unbiased and its variance vanishes as x and x~
//! approach the optimum, so a constant step converges to the optimum instead of a noise
//! floor, and coordinates whose gradient stays within lambda return to exactly 0.
//!
//! Column scaling (`step-scaling`): coordinate j steps `eta d_j` with `d_j` from its
//! column's frequency (`column_metric`). It fixes the conditioning of hashed one-hot
//! data, where the curvature along a column is proportional to its frequency, and with
//! SVRG it is what makes the run fast. Measured on 200k CTR rows, 2^18 features, L1
//! lambda 1e-5, 2 workers: plain SGD with the auto step stalls near 1e-2 relative gap
//! (55k nonzeros, FISTA's optimum has 5.2k); scaled steps WITHOUT SVRG stall higher
//! (3e-1 at r0 = 16, 1e-1 at r0 = 2048, 4e-2 at r0 = 16384: the rare columns' larger
//! steps raise the noise floor); SVRG without scaling progresses slowly (3e-2 after 8
//! epochs); SVRG with scaling at r0 = 2048 reaches 1e-3 in about 5 epochs and 1e-4 in
//! about 12, with about 5.3k nonzeros (r0 = 1024, the default now, and a warm-up of
//! plain SGD before the first snapshot: 4.4 and 8.6 epochs).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::{auto_batch, Algorithm, StepSetting, TrainConfig, ValidConfig, DEFAULT_BATCH};
use crate::data::Dataset;
use crate::driver::{
    Backend, Checkpointing, Counts, Driver, Evaluator, ModelAccess, SnapshotSchedule, StopRules,
    Stopped,
};
use crate::fista::{self, SolverStop};
use crate::model::loss::{Loss, LossKind};
use crate::model::objective::{AnyReg, Objective, Weights};
use crate::model::reg::{RegKind, RegSpec, Regularizer};
use crate::model::Layout;
use crate::monitor::{EvalRecord, Observe, RunInfo};
use crate::problem::Problem;
use crate::ps::blocks::{BlockId, BlockPartition, ShardId};
use crate::ps::shard::{
    Clock, DelayStats, DelaySummary, Shard, ShardApi, ShardSettings, StepSchedule,
};
use crate::ps::transport::local::LocalTransport;
use crate::ps::worker::{self, Control, Counters, SyncRound, WorkerContext};
use crate::{with_loss, with_reg, Error, Result};

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The epoch budget was used.
    Epochs,
    /// The update budget (`max-updates`) was used.
    MaxUpdates,
    /// The time budget (`max-seconds`) was used.
    MaxSeconds,
    /// The monitored objective reached `target-objective`.
    TargetObjective,
    /// The objective became NaN or infinite; the model is the last finite one.
    Diverged,
    /// A full-data solver met its tolerance (`tol`, or FISTA's own).
    Converged,
    /// A full-data solver found no step that decreases the objective, short of its
    /// tolerance: the model is optimal to rounding.
    Stalled,
    /// FISTA used its iteration budget.
    MaxIters,
    /// The caller's interrupt flag was raised (Ctrl-C in the command).
    Interrupted,
}

impl StopReason {
    /// In words, for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Epochs => "epoch budget reached",
            StopReason::MaxUpdates => "update budget reached",
            StopReason::MaxSeconds => "time budget reached",
            StopReason::TargetObjective => "target objective reached",
            StopReason::Diverged => "diverged (objective not finite); kept the last finite model",
            StopReason::Converged => "converged to tolerance",
            StopReason::Stalled => {
                "no further decrease (optimal to rounding, short of the tolerance)"
            }
            StopReason::MaxIters => "iteration budget reached",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub info: RunInfo,
    pub stop_reason: StopReason,
    pub records: Vec<EvalRecord>,
    pub delays: DelaySummary,
    /// The final model in [`Layout`] order.
    #[serde(skip)]
    pub weights: Vec<f64>,
    pub layout: Layout,
    pub reg: RegSpec,
    pub wall_secs: f64,
    pub train_secs: f64,
    pub eval_secs: f64,
    /// Workers that failed (panicked) while the others went on.
    pub failed_workers: Vec<WorkerFailure>,
    /// Messages between workers and servers (MPI backend).
    pub traffic: Option<Traffic>,
    /// The stop at convergence: `tol` and `||P(0)||^2` (when the run had one).
    pub convergence: Option<Convergence>,
}

/// A run's stop at convergence: converged once `||P(x)|| <= tol ||P(0)||`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub tol: f64,
    /// `||P(0)||^2`, the prox-gradient mapping at the zero model.
    pub pgm_at_zero: f64,
}

impl Convergence {
    /// `||P(x)|| / ||P(0)||` at the evaluation `r`, the measure `tol` bounds.
    pub fn ratio(&self, r: &EvalRecord) -> f64 {
        (r.pgm_sq_norm / self.pgm_at_zero).sqrt()
    }
}

/// Worker <-> server messages of a multi-process run, both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

/// A worker lost during a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerFailure {
    pub worker: usize,
    pub reason: String,
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

impl RunSummary {
    /// The last evaluation (at the final model).
    pub fn last(&self) -> &EvalRecord {
        self.records
            .last()
            .expect("a run records at least its start")
    }

    /// The first evaluation (at the initial model).
    pub fn first(&self) -> &EvalRecord {
        &self.records[0]
    }
}

/// The resolved plan of a run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The algorithm, `auto` resolved ([`Algorithm::resolve`]), and why.
    pub(crate) algorithm: Algorithm,
    pub(crate) algorithm_note: String,
    /// The minibatch, `batch` or the automatic one ([`crate::config::auto_batch`]).
    pub(crate) batch: usize,
    pub(crate) workers: usize,
    pub(crate) blocks: usize,
    pub(crate) group_rows: usize,
    pub(crate) reg: RegSpec,
    pub(crate) eta0: f64,
    pub(crate) step_note: String,
    /// Per-row step factors of the diagonal metric (intercept last), if scaled.
    pub(crate) metric: Option<Vec<f64>>,
    pub(crate) schedule: StepSchedule,
    pub(crate) updates_per_epoch: f64,
    pub(crate) max_updates: Option<u64>,
    pub(crate) max_delay: Option<u64>,
    /// The training rows of the monitored objective when not all of them (a fixed
    /// stride, see [`stride_rows`]).
    pub(crate) eval_rows: Option<Vec<u32>>,
}

impl Plan {
    /// The block partition over `servers` shards and the shards, all coordinates zero.
    pub(crate) fn shards(
        &self,
        cfg: &ValidConfig,
        layout: Layout,
        servers: usize,
        clock: Arc<Clock>,
        stats: Arc<DelayStats>,
    ) -> (BlockPartition, Vec<Arc<dyn ShardApi>>) {
        let raw = &cfg.raw;
        let partition = BlockPartition::new(
            layout,
            self.group_rows,
            self.blocks,
            servers,
            raw.partition,
            raw.seed,
        );
        let settings = ShardSettings {
            max_delay: self.max_delay,
            schedule: self.schedule,
            alpha: raw.alpha,
            drift: cfg.svrg,
        };
        let shards = (0..servers)
            .map(|s| {
                with_reg!(self.reg, |r| Arc::new(Shard::with_metric(
                    ShardId(s as u32),
                    &partition,
                    r,
                    settings,
                    clock.clone(),
                    stats.clone(),
                    self.metric.as_deref(),
                )) as Arc<dyn ShardApi>)
            })
            .collect();
        (partition, shards)
    }
}

/// The update budget of a run: the epoch budget in updates, `max-updates`, or the
/// smaller of the two.
pub(crate) fn update_budget(cfg: &ValidConfig, updates_per_epoch: f64) -> Option<u64> {
    let by_epochs = cfg
        .epochs
        .map(|e| (e * updates_per_epoch).ceil().max(1.0) as u64);
    match (by_epochs, cfg.raw.max_updates) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How per-column steps scale the step, for the step note.
pub(crate) fn scaling_note(raw: &TrainConfig) -> String {
    format!(
        "; coordinate j steps eta * (n + r0) / (s_j + r0), s_j its column's sum of squares, r0 = {}",
        raw.step_scaling_floor
    )
}

/// The block count of a run of `workers` workers on `servers` servers, the same rule
/// on every backend: `blocks` (the flag), else max(2, workers, servers) but at most the
/// `groups` feature groups; never more blocks than groups (`features` says which in the
/// error) nor fewer than servers.
pub(crate) fn block_count(
    blocks: Option<usize>,
    workers: usize,
    servers: usize,
    groups: usize,
    features: impl FnOnce() -> String,
) -> Result<usize> {
    let m = blocks.unwrap_or_else(|| workers.max(2).max(servers).min(groups));
    if m > groups {
        return Err(Error::config(
            "blocks",
            format!("{m} blocks for {}: at most {groups}", features()),
        ));
    }
    if servers > m {
        return Err(Error::config(
            "servers",
            format!("{servers} servers for {m} blocks"),
        ));
    }
    Ok(m)
}

/// The regularizer as the shards apply it (group lengths in coordinates), and the
/// feature rows per regularizer group.
pub fn reg_spec(cfg: &ValidConfig, classes: usize) -> (RegSpec, usize) {
    let mut reg = cfg.reg;
    if reg.kind == RegKind::GroupLasso {
        let rows = cfg.raw.group_size;
        reg.group_len = rows * classes;
        (reg, rows)
    } else {
        reg.group_len = 1;
        (reg, 1)
    }
}

/// Block updates between SVRG snapshots: `svrg-epochs` epochs, by default one epoch or
/// [`crate::config::SVRG_AUTO_ROWS`] rows per block if sooner (of `rows` rows in all).
pub(crate) fn svrg_every(
    raw: &crate::config::TrainConfig,
    updates_per_epoch: f64,
    rows: usize,
) -> u64 {
    let epochs = raw
        .svrg_epochs
        .unwrap_or_else(|| (crate::config::SVRG_AUTO_ROWS as f64 / rows.max(1) as f64).min(1.0));
    (epochs * updates_per_epoch).ceil().max(1.0) as u64
}

/// The default warm-up is this fraction of the snapshot interval.
const SVRG_WARMUP_DIVISOR: u64 = 10;

/// Block updates of plain proximal SGD before the first SVRG snapshot (0: the first
/// snapshot at the start): `svrg-warmup` epochs, by default a tenth of the snapshot
/// interval `every` when the run starts from the zero model, else none. A snapshot at
/// zero is a poor control variate: its gradient differences grow as the model leaves
/// zero, and on the reference workload (docs/performance.md) the objective rose for
/// the rest of the first interval, while plain SGD got within a few percent of the
/// optimum in a few hundred updates.
pub(crate) fn svrg_warmup(
    raw: &crate::config::TrainConfig,
    every: u64,
    updates_per_epoch: f64,
    from_zero: bool,
) -> u64 {
    match raw.svrg_warmup {
        Some(e) => (e * updates_per_epoch).round() as u64,
        None if from_zero => every / SVRG_WARMUP_DIVISOR,
        None => 0,
    }
}

/// Updates from the start to the first snapshot taken while training: the warm-up, or
/// one interval `every` after a snapshot at the start (`warmup` 0).
pub(crate) fn svrg_first(every: u64, warmup: u64) -> u64 {
    if warmup == 0 {
        every
    } else {
        warmup
    }
}

/// Bytes per coordinate of a shard cell (value, drift, step factor, currency).
pub(crate) const CELL_BYTES: u64 = crate::ps::shard::CELL_BYTES;

/// Bytes of one dense copy of the model, per coordinate.
pub(crate) const COPY_BYTES: u64 = 8;

/// What a run on `pb` holds at least per coordinate, here: the shard cells and one
/// dense copy of the model.
pub fn check_memory(pb: &Problem, raw: &crate::config::TrainConfig) -> Result<()> {
    let hint = pb.columns.is_none() && crate::config::compaction_exact(raw).is_none();
    memory_guard(
        pb.layout,
        CELL_BYTES + COPY_BYTES,
        pb.columns.is_some(),
        hint,
        total_memory(),
    )
}

/// Refuses, in one line, a model whose parameter state (`bytes_per_coord` per
/// coordinate) cannot fit in `total` bytes of memory: allocating it would end the
/// process without a word. `compacted`: the layout counts used features; `hint`: say
/// that compaction would help.
pub(crate) fn memory_guard(
    layout: Layout,
    bytes_per_coord: u64,
    compacted: bool,
    hint: bool,
    total: Option<u64>,
) -> Result<()> {
    let need = (layout.coords() as u64).saturating_mul(bytes_per_coord);
    match total {
        Some(total) if need > total => Err(Error::config(
            "features",
            format!(
                "{} {}features x {} outputs need at least {:.1} GB of parameter state, more \
                 than this machine's {:.1} GB of memory{}",
                layout.features,
                if compacted { "used " } else { "" },
                layout.classes,
                need as f64 / 1e9,
                total as f64 / 1e9,
                if hint {
                    " (--compact-features on holds only the features that occur in the \
                     training data)"
                } else {
                    ""
                }
            ),
        )),
        _ => Ok(()),
    }
}

/// The machine's memory in bytes (`MemTotal` of /proc/meminfo), where it can be read.
pub(crate) fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs one training job.
pub struct Trainer<'a> {
    cfg: &'a ValidConfig,
    problem: &'a Problem,
    init: Option<Vec<f64>>,
    observers: Vec<&'a mut dyn Observe>,
    interrupt: Option<Arc<AtomicBool>>,
}

/// The loss's bound on its second derivative in the margin.
fn curvature(loss: LossKind) -> f64 {
    loss.info().curvature
}

/// Mean over rows of the squared row norm times the row's weight, the intercept's 1
/// included when trained.
fn mean_sq_row_norm(ds: &Dataset, bias: bool) -> f64 {
    let sum: f64 = match (&ds.values, &ds.weights) {
        (Some(v), None) => v.iter().map(|&x| f64::from(x) * f64::from(x)).sum(),
        (None, None) => ds.nnz() as f64,
        (_, Some(_)) => (0..ds.rows())
            .map(|i| {
                let r = ds.row(i);
                let sq: f64 = (0..r.nnz()).map(|k| f64::from(r.value(k)).powi(2)).sum();
                ds.weight(i) * sq
            })
            .sum(),
    };
    sum / ds.rows().max(1) as f64 + if bias { 1.0 } else { 0.0 }
}

/// `fista` chosen by `algorithm = "auto"` stops once its own gradient mapping (in its
/// metric, relative to its start) is at most `tol` times this. The measure is not the
/// one `tol` bounds for the stochastic algorithms; at a third of it the default `tol`
/// left 1.5e-5 to 2e-8 relative suboptimality on the small sets of docs/defaults.md
/// (tm acq/crude, ReutersCorn, heart_scale, rcv1-like, Fashion-MNIST: 2.3e-4 to 1.2e-7
/// at the factor 1), for 0-27% more time.
const AUTO_FISTA_TOL_FACTOR: f64 = 1.0 / 3.0;

/// Rows used to estimate the smoothness of f for the automatic step size.
const AUTO_STEP_ROWS: usize = 100_000;

/// The power iteration of the automatic step stops once its estimate moves by at most
/// this fraction (the step it sets is no more precise than the bound it comes from).
const AUTO_STEP_TOL: f64 = 1e-4;

/// The same for a `cd` run, whose step only scales the prox-gradient mapping that
/// `tol` measures: a step 1% off moves that measure by less.
const CD_STEP_TOL: f64 = 1e-2;

/// The automatic step: `1 / L(N)`, with `L(N)` the expected smoothness constant of an
/// N-row minibatch gradient (Gower et al. 2019, "SGD: general analysis and improved
/// rates", Prop. 3.8): `L(N) = n (N-1) / (N (n-1)) L_f + (n-N) / (N (n-1)) L_row`,
/// where `L_f = c * lambda_max(X^T X / n)` (power iteration on at most 100k rows) is the
/// smoothness of f and `L_row = c * mean ||x_i||^2` that of an average single row (the
/// average rather than the maximum, so that a few long rows do not shrink the step).
/// `c` bounds the loss's second derivative; the nonconvex term adds `2 alpha`. With
/// `metric = Some((d, sums))`, both are taken in the metric `d` (see [`column_metric`]),
/// `sums` the column sums of squares of `data` ([`column_sq_sums`]). The power
/// iteration's products are summed over [`SETUP_PARTS`] fixed parts of the rows, so
/// that the step is the same on any machine.
/// The two smoothness constants of the automatic step (above): `L_f` of the full
/// objective and `L_row` of an average row, in the metric of the steps when scaled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Smoothness {
    pub(crate) l_f: f64,
    pub(crate) l_row: f64,
    scaled: bool,
}

impl Smoothness {
    /// The constants of `data`.
    pub(crate) fn of(
        loss: LossKind,
        data: &Dataset,
        layout: Layout,
        metric: Option<(&[f64], &[f64])>,
    ) -> Self {
        Self::within(loss, data, layout, metric, AUTO_STEP_TOL)
    }

    /// The constants of `data`, the power iteration stopping once its estimate moves by
    /// at most `tol` (relative).
    fn within(
        loss: LossKind,
        data: &Dataset,
        layout: Layout,
        metric: Option<(&[f64], &[f64])>,
        tol: f64,
    ) -> Self {
        let c = curvature(loss);
        // The power iteration reads a fixed stride of rows in place.
        let sample =
            (data.rows() > AUTO_STEP_ROWS).then(|| stride_rows(data.rows(), AUTO_STEP_ROWS));
        let scale: Option<Vec<f64>> = metric.map(|(d, _)| d.iter().map(|x| x.sqrt()).collect());
        let reg = AnyReg(RegSpec::NONE);
        let gram = with_loss!(loss, |l| Objective {
            data,
            rows: sample.as_deref(),
            loss: l,
            reg,
            layout,
            alpha: 0.0,
            threads: SETUP_PARTS,
        }
        .gram_top_eigenvalue(30, tol, scale.as_deref()));
        let l_row = c * match metric {
            Some((d, sums)) => mean_scaled_sq_row_norm(sums, d, data.rows(), layout),
            None => mean_sq_row_norm(data, layout.bias),
        };
        Smoothness {
            l_f: c * gram,
            l_row,
            scaled: metric.is_some(),
        }
    }

    /// `1 / L(N)` for minibatches of `batch` of `rows` rows, and how it was computed.
    pub(crate) fn step(
        &self,
        loss: LossKind,
        rows: usize,
        alpha: f64,
        batch: usize,
    ) -> (f64, String) {
        let (l_f, l_row) = (self.l_f, self.l_row);
        let (n, b) = (rows.max(2) as f64, batch.min(rows).max(1) as f64);
        let l_batch =
            n * (b - 1.0) / (b * (n - 1.0)) * l_f + (n - b) / (b * (n - 1.0)) * l_row + 2.0 * alpha;
        let eta = 1.0 / l_batch.max(1e-12);
        let note = format!(
            "auto: 1/L(N) = {eta:.4e}, L(N) = {l_batch:.4e} for N = {batch} from L_f = {l_f:.4e} (curvature {} x top eigenvalue of X'X/n) and L_row = {l_row:.4e} (curvature x mean squared row norm){}{}",
            curvature(loss),
            if alpha > 0.0 { format!(" + 2 x {alpha} (nonconvex term)") } else { String::new() },
            if self.scaled { ", both in the column-scaled metric" } else { "" }
        );
        (eta, note)
    }
}

/// The diagonal metric of `step-scaling = "columns"`: one factor per parameter row,
/// `d_j = (n + r0) / (s_j + r0)` with `s_j = sum_i x_ij^2`, and 1 for the intercept
/// (whose column is all ones, `s = n`).
///
/// Why: on sparse data the curvature of f along coordinate j is about
/// `c * s_j / n`, so a common step is limited by the frequent columns and moves a
/// column seen in a handful of rows by only `eta * s_j / N` per epoch, while its noise
/// floor falls no faster: plain SGD needs hundreds of epochs on hashed one-hot data.
/// Jacobi scaling `d_j ~ n / s_j` gives every coordinate about the same progress per
/// epoch. The floor r0 caps the factor of the rarest columns, whose few rows each
/// move them by `eta d_j / N` per push; the automatic step measures both smoothness
/// constants in this metric (`auto_step`), so a small r0 costs a smaller common step.
/// With a separable h the fixed points, hence the optimum, do not depend on the metric
/// (`model::reg`), and the lazy prox stays exact for the regularizers that allow it.
/// Here from the column sums of squares `sums` of `n` rows ([`column_sq_sums`]).
pub(crate) fn column_metric(sums: &[f64], n: usize, floor: f64) -> Vec<f64> {
    let n = n as f64;
    let mut d: Vec<f64> = sums.iter().map(|&sj| (n + floor) / (sj + floor)).collect();
    d.push(1.0);
    d
}

/// Setup passes over the rows run as this many fixed halves, summed in order: on two
/// cores at once, and with the same result on any machine.
const SETUP_PARTS: usize = 2;

/// The rows of `data` in at most [`SETUP_PARTS`] contiguous ranges, `f` on each, the
/// results in order: each in its own thread where the data's nonzeros pay for the
/// threads ([`crate::par::threads_for`]), else one after the other (the same ranges,
/// so the same sums).
fn setup_parts<T: Send>(data: &Dataset, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    if crate::par::threads_for(data.nnz() + data.rows(), SETUP_PARTS) < SETUP_PARTS {
        crate::par::ranges(data.rows(), SETUP_PARTS)
            .into_iter()
            .map(f)
            .collect()
    } else {
        crate::par::map_ranges(data.rows(), SETUP_PARTS, f)
    }
}

/// `sum_i s_i x_ij^2` (`s_i` the row weights, 1 without) of every feature column j. Binary rows are counted in integers: on
/// data whose frequent features recur in nearly every row, floating-point sums into
/// the same few counters wait on each other (about 3x slower on the reference data).
pub(crate) fn column_sq_sums(data: &Dataset, layout: Layout) -> Vec<f64> {
    let d = layout.features;
    if data.values.is_none() && data.weights.is_none() && data.nnz() < u32::MAX as usize {
        // No count can overflow: each part has fewer entries than u32::MAX.
        let parts = setup_parts(data, |rows| {
            let mut count = vec![0u32; d];
            for &f in &data.indices[data.indptr[rows.start]..data.indptr[rows.end]] {
                if let Some(c) = count.get_mut(f as usize) {
                    *c += 1;
                }
            }
            count
        });
        let mut s = vec![0.0f64; d];
        for p in parts {
            for (a, c) in s.iter_mut().zip(p) {
                *a += f64::from(c);
            }
        }
        return s;
    }
    let values = data.values.as_deref();
    let parts = setup_parts(data, |rows| {
        let mut s = vec![0.0f64; d];
        for i in rows {
            let c = data.weight(i);
            let (a, b) = (data.indptr[i], data.indptr[i + 1]);
            for (k, &f) in (a..b).zip(&data.indices[a..b]) {
                let x = values.map_or(1.0, |v| f64::from(v[k]));
                if let Some(v) = s.get_mut(f as usize) {
                    *v += c * x * x;
                }
            }
        }
        s
    });
    let mut parts = parts.into_iter();
    let mut s = parts.next().unwrap_or_default();
    for p in parts {
        for (a, b) in s.iter_mut().zip(p) {
            *a += b;
        }
    }
    s
}

/// Mean over `n` rows of `sum_j d_j x_ij^2`, the intercept's `d = 1` included when
/// trained, from the column sums of squares `sums` of those rows: the double sum is
/// `sum_j d_j sums_j`, no pass over the rows.
fn mean_scaled_sq_row_norm(sums: &[f64], d: &[f64], n: usize, layout: Layout) -> f64 {
    let sum: f64 = sums.iter().zip(d).map(|(s, d)| s * d).sum();
    sum / n.max(1) as f64 + if layout.bias { d[layout.features] } else { 0.0 }
}

/// Every `stride`-th row number of `n`, so that the monitored objective costs at most
/// `max_rows` rows.
pub(crate) fn stride_rows(n: usize, max_rows: usize) -> Vec<u32> {
    let stride = n.div_ceil(max_rows.max(1)).max(1);
    (0..n).step_by(stride).map(|i| i as u32).collect()
}

/// The last model whose objective was finite, kept to be returned if training diverges:
/// its nonzero coordinates (a 4-byte index and the value) when that is smaller than the
/// dense vector, as an L1 model's usually is; a copy alive at the memory peak of every
/// evaluation then takes a fraction of a dense vector's memory.
pub(crate) enum KeptModel {
    Dense(Vec<f64>),
    Sparse {
        len: usize,
        index: Vec<u32>,
        value: Vec<f64>,
    },
}

impl KeptModel {
    pub(crate) fn of<W: Weights + ?Sized>(w: &W) -> KeptModel {
        let n = w.len();
        let nnz = (0..n).filter(|&j| w.at(j) != 0.0).count();
        if nnz * 12 >= n * 8 || n > u32::MAX as usize {
            return KeptModel::Dense((0..n).map(|j| w.at(j)).collect());
        }
        let (mut index, mut value) = (Vec::with_capacity(nnz), Vec::with_capacity(nnz));
        for j in 0..n {
            let v = w.at(j);
            if v != 0.0 {
                index.push(j as u32);
                value.push(v);
            }
        }
        KeptModel::Sparse {
            len: n,
            index,
            value,
        }
    }

    /// Whether every coordinate is 0.
    pub(crate) fn is_zero(&self) -> bool {
        match self {
            KeptModel::Dense(w) => w.iter().all(|&v| v == 0.0),
            KeptModel::Sparse { index, .. } => index.is_empty(),
        }
    }

    /// The model as a dense vector.
    pub(crate) fn into_dense(self) -> Vec<f64> {
        match self {
            KeptModel::Dense(w) => w,
            KeptModel::Sparse { len, index, value } => {
                let mut w = vec![0.0; len];
                for (i, v) in index.into_iter().zip(value) {
                    w[i as usize] = v;
                }
                w
            }
        }
    }
}

impl<'a> Trainer<'a> {
    pub fn new(cfg: &'a ValidConfig, problem: &'a Problem) -> Self {
        Trainer {
            cfg,
            problem,
            init: None,
            observers: Vec::new(),
            interrupt: None,
        }
    }

    /// Stops the run (as a stop criterion: the model so far is kept and the summary says
    /// "interrupted") once `flag` becomes true, checked every few milliseconds.
    pub fn interrupt_on(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// Starts from `w` (in [`Layout`] order) instead of zero.
    pub fn init_weights(&mut self, w: Vec<f64>) -> Result<()> {
        if w.len() != self.problem.layout.coords() {
            return Err(Error::config(
                "init-model",
                format!(
                    "{} weights for a model of {}",
                    w.len(),
                    self.problem.layout.coords()
                ),
            ));
        }
        self.init = Some(w);
        Ok(())
    }

    /// Adds an observer of the run's events.
    pub fn observe(&mut self, o: &'a mut dyn Observe) {
        self.observers.push(o);
    }

    /// The regularizer as the shards apply it: group lengths in coordinates.
    fn reg_spec(&self) -> (RegSpec, usize) {
        reg_spec(self.cfg, self.problem.layout.classes)
    }

    pub(crate) fn plan(&self) -> Result<Plan> {
        let raw = &self.cfg.raw;
        let layout = self.problem.layout;
        check_memory(self.problem, raw)?;
        let data = &self.problem.train;
        let (reg, group_rows) = self.reg_spec();
        let feature_groups = layout.features.div_ceil(group_rows);
        let workers = self.cfg.workers;
        let sums = self.cfg.scaled_steps.then(|| column_sq_sums(data, layout));
        let metric = sums
            .as_deref()
            .map(|s| column_metric(s, data.rows(), raw.step_scaling_floor));
        let auto_step = matches!(raw.step, StepSetting::Named(_));
        // A setting of the stochastic algorithms asks for them.
        let stochastic_only = raw.batch.is_some()
            || raw.blocks.is_some()
            || raw.servers > 1
            || raw.svrg_epochs.is_some()
            || !auto_step
            || raw.step_decay
            || raw.max_delay.is_some()
            || raw.checkpoint_dir.is_some()
            || raw.resume.is_some();
        // `cd` runs on one output, a separable regularizer and a convex objective.
        let cd_applies = layout.classes == 1 && AnyReg(reg).group_len() == 1 && raw.alpha == 0.0;
        // Where `cd` will run (as [`Algorithm::resolve`] decides), the step only scales
        // the measure of `tol`, so a rough one does.
        let cd_ahead = raw.algorithm == Algorithm::Cd
            || (raw.algorithm == Algorithm::Auto
                && cd_applies
                && !stochastic_only
                && data.rows() <= crate::config::AUTO_CD_ROWS);
        // The smoothness constants, where a choice needs them.
        let smooth =
            (auto_step || raw.batch.is_none() || raw.algorithm == Algorithm::Auto).then(|| {
                Smoothness::within(
                    raw.loss,
                    data,
                    layout,
                    metric.as_deref().zip(sums.as_deref()),
                    if cd_ahead { CD_STEP_TOL } else { AUTO_STEP_TOL },
                )
            });
        drop(sums);
        let (algorithm, algorithm_note) = match smooth {
            Some(sm) => {
                raw.algorithm
                    .resolve(data.rows(), sm.l_f, sm.l_row, stochastic_only, cd_applies)
            }
            None => (raw.algorithm, String::new()),
        };
        debug_assert!(!cd_ahead || algorithm == Algorithm::Cd);
        let batch = raw
            .batch
            .unwrap_or_else(|| smooth.map_or(DEFAULT_BATCH, |sm| auto_batch(sm.l_f, sm.l_row)));
        let blocks = if algorithm.is_full_data() {
            1
        } else {
            block_count(raw.blocks, workers, raw.servers, feature_groups, || {
                format!(
                    "{} {}features{}",
                    layout.features,
                    if self.problem.columns.is_some() {
                        "used "
                    } else {
                        ""
                    },
                    if group_rows > 1 {
                        format!(" in groups of {group_rows}")
                    } else {
                        String::new()
                    }
                )
            })?
        };
        let (eta0, mut step_note) = match (raw.step, smooth) {
            (StepSetting::Fixed(eta), _) => (eta, "given".to_string()),
            (StepSetting::Named(_), sm) => sm
                .unwrap_or_else(|| Smoothness::of(raw.loss, data, layout, None))
                .step(raw.loss, data.rows(), raw.alpha, batch),
        };
        if metric.is_some() {
            step_note.push_str(&scaling_note(raw));
        }
        // An iteration of a full-data solver is a pass over the data (at least): its
        // epoch.
        let updates_per_epoch = if algorithm.is_full_data() {
            1.0
        } else {
            data.rows() as f64 * blocks as f64 / batch as f64
        };
        let schedule = if raw.step_decay {
            StepSchedule::Decay {
                eta0,
                t0: raw.step_t0.unwrap_or(updates_per_epoch),
            }
        } else {
            StepSchedule::Constant { eta: eta0 }
        };
        let max_updates = update_budget(self.cfg, updates_per_epoch);
        let max_delay = if raw.algorithm == Algorithm::Seq {
            Some(0)
        } else {
            raw.max_delay
        };
        let eval_rows = raw
            .eval_rows
            .filter(|&m| data.rows() > m)
            .map(|m| stride_rows(data.rows(), m));
        Ok(Plan {
            algorithm,
            algorithm_note,
            batch,
            workers,
            blocks,
            group_rows,
            reg,
            eta0,
            step_note,
            metric,
            schedule,
            updates_per_epoch,
            max_updates,
            max_delay,
            eval_rows,
        })
    }

    /// Runs to a stop criterion.
    pub fn run(self) -> Result<RunSummary> {
        let plan = self.plan()?;
        with_loss!(self.cfg.loss, |loss| self.run_with(loss, plan))
    }

    fn run_with<L: Loss>(mut self, loss: L, mut plan: Plan) -> Result<RunSummary> {
        let raw = &self.cfg.raw;
        let pb = self.problem;
        let layout = pb.layout;
        let threads = self.cfg.eval_threads;
        let obj = Objective {
            data: &pb.train,
            rows: plan.eval_rows.as_deref(),
            loss,
            reg: AnyReg(plan.reg),
            layout,
            alpha: raw.alpha,
            threads,
        };
        let ev = Evaluator::new(obj, pb.test.as_ref(), plan.eta0);
        let mut info = run_info(self.cfg, pb, &plan, obj.n());
        info.lambda_max = obj.lambda_max();
        // A checkpoint to resume from is checked before anything is reported.
        let ckpt_key =
            (raw.checkpoint_dir.is_some() || raw.resume.is_some()).then(|| problem_key(raw, pb));
        let resumed = match &raw.resume {
            Some(dir) => Some(checkpoint::resume(
                dir,
                ckpt_key.as_deref().unwrap_or_default(),
                layout.coords(),
            )?),
            None => None,
        };
        for o in self.observers.iter_mut() {
            o.on_start(&info)?;
        }
        let mut rules = StopRules::of(raw, self.interrupt.clone());
        if plan.algorithm.is_full_data() {
            // `fista` asked for by name is the reference solver and stops at its own
            // `fista-tol`; chosen by `auto` it stops at `tol` as the others do.
            if raw.algorithm == Algorithm::Fista {
                rules.tol = None;
            }
            return self.run_full(&plan, info, &ev, rules);
        }

        let start_k = resumed.as_ref().map_or(0, |c| c.updates);
        let clock = Arc::new(Clock::starting_at(start_k));
        let stats = Arc::new(DelayStats::default());
        let (partition, shards) =
            plan.shards(self.cfg, layout, raw.servers, clock.clone(), stats.clone());
        // The shards hold each coordinate's step factor; the vector is not needed again.
        plan.metric = None;
        let start_samples = resumed.as_ref().map_or(0, |c| c.samples);
        let start_secs = resumed.as_ref().map_or(0.0, |c| c.train_secs);
        let mut w0 = match resumed {
            Some(c) => c.weights,
            None => self
                .init
                .take()
                .unwrap_or_else(|| vec![0.0; layout.coords()]),
        };
        if !layout.bias {
            let b = layout.bias_row() * layout.classes;
            w0[b..b + layout.classes].fill(0.0);
        }
        crate::ps::scatter(&partition, &shards, &w0);
        let from_zero = w0.iter().all(|&v| v == 0.0);
        drop(w0);
        let transport = LocalTransport::new(shards.clone(), clock.clone());
        let control = Control::new(plan.workers, plan.max_updates.unwrap_or(u64::MAX));
        // The snapshot pass takes the place of the workers' own passes (an MPI worker
        // rank computes its rows' part): it runs on as many threads as there are
        // workers, so that a run of W workers computes on W cores while it trains.
        let svrg = Svrg::of(
            self.cfg,
            plan.updates_per_epoch,
            pb.train.rows(),
            from_zero,
            plan.workers.min(threads),
        );
        // Training time starts here: the first snapshot is part of the algorithm.
        let mut mon = Monitor::new(plan.updates_per_epoch, raw);
        mon.resume_at(start_secs, start_k);
        let counters = Counters::default();
        counters
            .samples
            .store(start_samples, std::sync::atomic::Ordering::Relaxed);
        let ctx = WorkerContext::new(
            raw,
            plan.batch,
            &pb.train,
            &partition,
            &transport,
            &control,
            &counters,
            svrg.as_ref().map(|sv| &sv.derivs),
        );
        let round = SyncRound::new(plan.workers, plan.blocks);
        let ckpt = match (&raw.checkpoint_dir, &ckpt_key) {
            (Some(dir), Some(key)) => Some(Checkpointing {
                dir: dir.clone(),
                every: raw.checkpoint_every_secs,
                key: key.clone(),
                next: mon.train_secs() + raw.checkpoint_every_secs,
            }),
            _ => None,
        };
        let driver = Driver {
            mon,
            observers: &mut self.observers,
            ev,
            rules,
            by_epochs: plan.max_updates.is_some() && self.cfg.epochs.is_some(),
            snapshots: svrg.as_ref().map(|sv| SnapshotSchedule {
                every: sv.every,
                next: start_k + sv.first(),
                at_start: sv.warmup == 0,
            }),
            ckpt,
            workers: plan.workers,
            needs_all: raw.algorithm == Algorithm::Sync,
            info,
            reg: plan.reg,
        };
        std::thread::scope(|scope| {
            driver.run(&mut Threads {
                scope,
                loss,
                algorithm: plan.algorithm,
                seed: raw.seed,
                workers: plan.workers,
                ctx: &ctx,
                round: &round,
                model: LocalModel::new(loss, &pb.train, &partition, &shards, &stats, svrg.as_ref()),
                handles: Vec::new(),
            })
        })
    }

    /// The run of a full-data solver (`fista`, `cd`): no workers, so no backend, but the
    /// same monitor, observers and stop rules as [`Driver::run`].
    fn run_full<L: Loss>(
        mut self,
        plan: &Plan,
        info: RunInfo,
        ev: &Evaluator<L>,
        mut rules: StopRules,
    ) -> Result<RunSummary> {
        let raw = &self.cfg.raw;
        let layout = self.problem.layout;
        let full = Objective {
            data: &self.problem.train,
            rows: None,
            ..ev.obj
        };
        let mut x = self
            .init
            .take()
            .unwrap_or_else(|| vec![0.0; layout.coords()]);
        let mut mon = Monitor::new(plan.updates_per_epoch, raw);
        let mut rec = mon.record(0, 0, 0, 0.0);
        let t = Instant::now();
        ev.eval(&x, &mut rec);
        mon.push(rec, &mut self.observers)?;
        mon.evaluated(t.elapsed().as_secs_f64());
        if rules.tol.is_some() {
            rules.pgm_ref = if x.iter().all(|&v| v == 0.0) {
                mon.last().map_or(f64::NAN, |r| r.pgm_sq_norm)
            } else {
                let mut at_zero = EvalRecord::default();
                ev.eval(&vec![0.0; x.len()], &mut at_zero);
                at_zero.pgm_sq_norm
            };
        }
        let mut early: Option<StopReason> = mon.last().and_then(|r| rules.after_record(r));
        let mut obs_err: Option<Error> = None;
        let mut iters = 0u64;
        let rows = self.problem.train.rows() as u64;
        let observers = &mut self.observers;
        // A budget of epochs or updates counts iterations, each at least a pass over the
        // data; `fista` by name has its own (`fista-max-iters`).
        let by_name_fista = raw.algorithm == Algorithm::Fista;
        let budget = (!by_name_fista)
            .then(|| {
                raw.epochs
                    .map(|e| e.ceil().max(1.0) as u64)
                    .or(raw.max_updates)
            })
            .flatten();
        let already_stopped = early.is_some();
        let observe = |it: usize, x: &[f64]| -> bool {
            let secs = mon.train_secs();
            iters = it as u64;
            if mon.due(iters, secs) {
                let t = Instant::now();
                let mut rec = mon.record(iters, iters * rows, 0, secs);
                ev.eval(x, &mut rec);
                if let Err(e) = mon.push(rec, observers) {
                    obs_err = Some(e);
                    return false;
                }
                mon.evaluated(t.elapsed().as_secs_f64());
                mon.schedule_next(iters, secs);
                // A non-finite objective is the solver's to judge (it keeps the last
                // finite iterate).
                if let Some(r @ StopReason::TargetObjective) =
                    mon.last().and_then(|r| rules.after_eval(r.psi))
                {
                    early = Some(r);
                    return false;
                }
            }
            if let Some(r) = rules.between(secs) {
                early = Some(r);
                return false;
            }
            true
        };
        let stop = if already_stopped {
            SolverStop::Interrupted
        } else if plan.algorithm == Algorithm::Cd {
            let cols = crate::cd::Columns::of(&self.problem.train, layout.features);
            let stop = crate::cd::CdStop {
                pgm_sq: rules.tol.map(|t| t * t * rules.pgm_ref),
                eta: ev.eta,
                max_iters: budget.map_or(CD_MAX_ITERS, |b| b.min(CD_MAX_ITERS as u64) as usize),
                seed: raw.seed,
            };
            crate::cd::solve(&full, &cols, &mut x, &stop, observe)
        } else {
            solve_fista(plan, raw, &full, &rules, budget, &mut x, observe)
        };
        if let Some(e) = obs_err {
            return Err(e);
        }
        let reason = match stop {
            SolverStop::Converged => StopReason::Converged,
            SolverStop::Stalled => StopReason::Stalled,
            SolverStop::MaxIters => match budget {
                Some(b) if iters >= b && raw.epochs.is_some() => StopReason::Epochs,
                Some(b) if iters >= b => StopReason::MaxUpdates,
                _ => StopReason::MaxIters,
            },
            SolverStop::Diverged => StopReason::Diverged,
            SolverStop::Interrupted => early.unwrap_or(StopReason::MaxIters),
        };
        if mon.last_updates() != iters {
            let secs = mon.train_secs();
            let mut rec = mon.record(iters, iters * rows, 0, secs);
            ev.eval(&x, &mut rec);
            mon.push(rec, &mut self.observers)?;
        }
        let mut summary = mon.finish(
            info,
            reason,
            x,
            layout,
            plan.reg,
            DelaySummary::default(),
            &mut self.observers,
        )?;
        summary.convergence = rules.tol.map(|tol| Convergence {
            tol,
            pgm_at_zero: rules.pgm_ref,
        });
        Ok(summary)
    }
}

/// Outer iterations of `cd` at most when no budget is given (it converges in tens).
const CD_MAX_ITERS: usize = 10_000;

/// FISTA from `x` on `full`, with its Jacobi metric where the regularizer is separable.
/// Chosen by `auto`, it stops at `tol` times [`AUTO_FISTA_TOL_FACTOR`] on its own
/// prox-gradient mapping (in its metric, relative to its start), checked at every
/// iteration so that the stop does not depend on when evaluations fall, within `budget`
/// iterations. By name it is the reference solver: `fista-tol` and `fista-max-iters`.
fn solve_fista<L: Loss>(
    plan: &Plan,
    raw: &crate::config::TrainConfig,
    full: &Objective<L>,
    rules: &StopRules,
    budget: Option<u64>,
    x: &mut Vec<f64>,
    mut observe: impl FnMut(usize, &[f64]) -> bool,
) -> SolverStop {
    let layout = full.layout;
    let n = full.data.rows();
    // Jacobi factors for the full-gradient method (see `fista`): every column is seen in
    // full at each iteration, so the floor only guards empty columns. The nonconvex
    // term's curvature is the same on every coordinate, so it runs plain.
    let sums = (full.separable() && full.alpha == 0.0).then(|| column_sq_sums(full.data, layout));
    let rows_metric = sums.as_deref().map(|s| column_metric(s, n, 1.0));
    let metric: Option<Vec<f64>> = rows_metric.as_ref().map(|d| {
        d.iter()
            .flat_map(|&d| std::iter::repeat(d).take(layout.classes))
            .collect()
    });
    // The mean squared row norm in the metric bounds its top eigenvalue from above, so
    // the line search only ever shrinks this first estimate.
    let l0 = match (&rows_metric, &sums) {
        (Some(d), Some(s)) => curvature(raw.loss) * mean_scaled_sq_row_norm(s, d, n, layout),
        _ => 1.0 / plan.eta0,
    };
    let fista_tol = rules
        .tol
        .map_or(raw.fista_tol, |t| (t * AUTO_FISTA_TOL_FACTOR).powi(2));
    let max_iters = budget.map_or(raw.fista_max_iters, |b| {
        (b.min(raw.fista_max_iters as u64)) as usize
    });
    fista::solve(
        full,
        x,
        l0,
        fista_tol,
        max_iters,
        metric.as_deref(),
        |it, x| observe(it.iter, x),
    )
}

/// What a run of `plan` on `pb` reports at its start (`eval_rows`: the rows of the
/// monitored objective).
pub(crate) fn run_info(cfg: &ValidConfig, pb: &Problem, plan: &Plan, eval_rows: usize) -> RunInfo {
    let raw = &cfg.raw;
    let layout = pb.layout;
    RunInfo {
        algorithm: plan.algorithm.name().into(),
        algorithm_note: plan.algorithm_note.clone(),
        loss: raw.loss.name().into(),
        reg: raw.reg.name().into(),
        lambda: raw.lambda,
        lambda_max: None,
        workers: plan.workers,
        blocks: plan.blocks,
        batch: plan.batch,
        rows: pb.train.rows(),
        features: pb.columns.as_ref().map_or(layout.features, |c| c.features),
        used_features: pb.columns.as_ref().map(|c| c.used()),
        classes: layout.classes,
        nnz: pb.train.nnz(),
        eta0: plan.eta0,
        step_note: plan.step_note.clone(),
        updates_per_epoch: plan.updates_per_epoch,
        max_updates: plan.max_updates,
        max_seconds: raw.max_seconds,
        target_objective: raw.target_objective,
        eval_rows,
        cluster: None,
    }
}

/// The model of shards in this process and the rows beside it: what the in-process
/// backends (threads, the simulator) give the driver.
pub(crate) struct LocalModel<'e, L: Loss> {
    pub(crate) loss: L,
    pub(crate) data: &'e Dataset,
    pub(crate) partition: &'e BlockPartition,
    pub(crate) shards: &'e [Arc<dyn ShardApi>],
    pub(crate) stats: &'e DelayStats,
    pub(crate) svrg: Option<&'e Svrg>,
    /// Real seconds of each snapshot (the pass and the drift), for the simulator's
    /// calibration.
    pub(crate) snapshot_secs: Vec<f64>,
    snapshot_started: Option<Instant>,
}

impl<'e, L: Loss> LocalModel<'e, L> {
    pub(crate) fn new(
        loss: L,
        data: &'e Dataset,
        partition: &'e BlockPartition,
        shards: &'e [Arc<dyn ShardApi>],
        stats: &'e DelayStats,
        svrg: Option<&'e Svrg>,
    ) -> Self {
        LocalModel {
            loss,
            data,
            partition,
            shards,
            stats,
            svrg,
            snapshot_secs: Vec::new(),
            snapshot_started: None,
        }
    }
}

impl<L: Loss> ModelAccess for LocalModel<'_, L> {
    /// Reads the model in place where the shards allow it ([`crate::ps::ModelView`]),
    /// else from a dense copy.
    fn evaluate<M: Loss>(
        &mut self,
        ev: &Evaluator<M>,
        rec: &mut EvalRecord,
        keep: bool,
    ) -> Result<Option<KeptModel>> {
        Ok(
            match crate::ps::ModelView::of(self.partition, self.shards) {
                Some(view) => {
                    ev.eval(&view, rec);
                    keep.then(|| KeptModel::of(&view))
                }
                None => {
                    let w = crate::ps::gather(self.partition, self.shards);
                    ev.eval(&w, rec);
                    keep.then(|| KeptModel::of(&w))
                }
            },
        )
    }

    fn snapshot_gradient(&mut self, grad: &mut [f64]) -> Result<()> {
        self.snapshot_started = Some(Instant::now());
        let sv = self.svrg.expect("snapshots only with SVRG");
        sv.gradient(self.loss, self.data, self.partition, self.shards, grad);
        Ok(())
    }

    fn install_drift(&mut self, grad: &[f64]) -> Result<()> {
        let threads = self.svrg.map_or(1, |sv| sv.threads);
        install_drift(self.partition, self.shards, grad, threads);
        if let Some(t) = self.snapshot_started.take() {
            self.snapshot_secs.push(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn gather(&mut self) -> Result<Vec<f64>> {
        Ok(crate::ps::gather(self.partition, self.shards))
    }

    fn evaluate_at<M: Loss>(
        &mut self,
        ev: &Evaluator<M>,
        w: &[f64],
        rec: &mut EvalRecord,
    ) -> Result<()> {
        ev.eval(w, rec);
        Ok(())
    }

    fn delays(&mut self) -> Result<DelaySummary> {
        Ok(self.stats.summary())
    }
}

/// The in-process backend: worker threads, started in `scope`, on shards in this
/// process.
struct Threads<'s, 'e, L: Loss> {
    scope: &'s std::thread::Scope<'s, 'e>,
    loss: L,
    algorithm: Algorithm,
    seed: u64,
    workers: usize,
    ctx: &'e WorkerContext<'e>,
    round: &'e SyncRound,
    model: LocalModel<'e, L>,
    handles: Vec<std::thread::ScopedJoinHandle<'s, std::result::Result<(), String>>>,
}

impl<'s, 'e, L: Loss> Backend for Threads<'s, 'e, L> {
    type Model = LocalModel<'e, L>;

    fn model(&mut self) -> &mut LocalModel<'e, L> {
        &mut self.model
    }

    fn wait(&mut self) -> Result<bool> {
        std::thread::sleep(Duration::from_millis(2));
        let control = self.ctx.control;
        Ok(control.stopped() || control.running() == 0)
    }

    fn counts(&mut self) -> Result<Counts> {
        Ok(Counts {
            updates: self.ctx.transport.now(),
            samples: self
                .ctx
                .counters
                .samples
                .load(std::sync::atomic::Ordering::Relaxed),
            rejected: self.model.stats.rejected(),
        })
    }

    fn start(&mut self) -> Result<()> {
        for w in 0..self.workers {
            let (ctx, round, loss) = (self.ctx, self.round, self.loss);
            let (sync, workers, seed) =
                (self.algorithm == Algorithm::Sync, self.workers, self.seed);
            self.handles.push(self.scope.spawn(move || {
                // An asynchronous worker that fails is reported and the others go on
                // (asynchronous training needs no particular worker).
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if sync {
                        worker::run_sync(loss, ctx, round, w, workers, seed)
                    } else {
                        worker::run_async(loss, ctx, w, workers, seed)
                    }
                }))
                .map_err(|p| panic_message(p.as_ref()))
            }));
        }
        Ok(())
    }

    fn pause(&mut self) -> Result<()> {
        self.ctx.control.pause();
        Ok(())
    }

    fn resume(&mut self) -> Result<()> {
        self.ctx.control.resume();
        Ok(())
    }

    fn hold_at(&mut self, k: u64) {
        self.ctx
            .control
            .hold_at
            .store(k, std::sync::atomic::Ordering::Release);
    }

    fn snapshot_due(&self, k: u64, at: u64) -> bool {
        // A worker that reached the snapshot step asked for the pause.
        self.ctx.control.pause_requested() && k >= at
    }

    fn stop(&mut self) -> Result<Stopped> {
        let control = self.ctx.control;
        control.stop();
        control.resume();
        let mut failures = Vec::new();
        for (w, h) in self.handles.drain(..).enumerate() {
            let failure = match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(msg)) => Some(msg),
                Err(p) => Some(panic_message(p.as_ref())),
            };
            if let Some(reason) = failure {
                failures.push(WorkerFailure { worker: w, reason });
            }
        }
        Ok(Stopped {
            failures,
            traffic: None,
        })
    }
}

/// What names a problem: the data (its fingerprint) and every setting that changes the
/// objective or the model's layout, so that a checkpoint or a cached optimum is only
/// used for the problem it belongs to. Workers, blocks, steps and the stop criteria are
/// not part of it.
pub fn problem_key(raw: &crate::config::TrainConfig, pb: &Problem) -> String {
    format!(
        "data {:016x} ({} rows) | {}",
        pb.train.fingerprint(),
        pb.train.rows(),
        objective_key(raw, pb.layout)
    )
}

/// The settings part of [`problem_key`]: the layout and the objective.
pub(crate) fn objective_key(raw: &crate::config::TrainConfig, l: Layout) -> String {
    format!(
        "{} features x {} classes, intercept {} | {} + {} lambda {} l1-ratio {} box [{}, {}] group {} alpha {}",
        l.features,
        l.classes,
        l.bias,
        raw.loss.name(),
        raw.reg.name(),
        raw.lambda,
        raw.l1_ratio,
        raw.lower,
        raw.upper,
        raw.group_size,
        raw.alpha
    )
}

/// SVRG state of a run: the snapshot interval and the loss derivatives of every row at
/// the last snapshot, which the workers read (none yet: plain SGD).
pub(crate) struct Svrg {
    /// Block updates between snapshots.
    pub(crate) every: u64,
    /// Block updates of plain SGD before the first snapshot ([`svrg_warmup`]).
    pub(crate) warmup: u64,
    /// Threads of the snapshot pass.
    pub(crate) threads: usize,
    pub(crate) derivs: RwLock<Vec<f32>>,
}

impl Svrg {
    /// The run's SVRG state when `cfg` uses it: snapshots every [`svrg_every`] updates
    /// after a warm-up of [`svrg_warmup`] (`from_zero`: the run starts from the zero
    /// model), each a pass on `threads` threads, no derivatives yet.
    pub(crate) fn of(
        cfg: &ValidConfig,
        updates_per_epoch: f64,
        rows: usize,
        from_zero: bool,
        threads: usize,
    ) -> Option<Svrg> {
        cfg.svrg.then(|| {
            let every = svrg_every(&cfg.raw, updates_per_epoch, rows);
            Svrg {
                every,
                warmup: svrg_warmup(&cfg.raw, every, updates_per_epoch, from_zero),
                threads: threads.max(1),
                derivs: RwLock::new(Vec::new()),
            }
        })
    }

    /// Updates from the start to the first snapshot taken while training (the warm-up,
    /// or one interval after a snapshot at the start).
    pub(crate) fn first(&self) -> u64 {
        svrg_first(self.every, self.warmup)
    }

    /// The pass of a snapshot at the shards' current model x~ (workers paused): the loss
    /// derivatives `l'(z~_i)` of every row at its margins (as f32), kept for the
    /// workers, and the full gradient `grad f(x~)` of the loss part (the nonconvex term
    /// is applied exactly by the shards) into `grad`, which the driver installs as every
    /// block's drift ([`install_drift`]): one pass over the data, counted as training
    /// time.
    pub(crate) fn gradient<L: Loss>(
        &self,
        loss: L,
        data: &Dataset,
        partition: &BlockPartition,
        shards: &[Arc<dyn ShardApi>],
        grad: &mut [f64],
    ) {
        let threads = self.threads;
        let layout = partition.layout();
        let obj = Objective {
            data,
            rows: None,
            loss,
            reg: AnyReg(RegSpec::NONE),
            layout,
            alpha: 0.0,
            threads,
        };
        let mut derivs = self.derivs.write();
        derivs.clear();
        derivs.resize(data.rows() * layout.classes, 0.0f32);
        // The model read in place where the shards allow it, else a dense copy.
        match crate::ps::ModelView::on(partition, shards, threads) {
            Some(view) => obj.gradient_pass(&view, grad, &mut derivs),
            None => obj.gradient_pass(&crate::ps::gather(partition, shards), grad, &mut derivs),
        }
    }
}

/// Installs `grad` (in [`Layout`] order) as every block's SVRG drift, the blocks dealt
/// to at most `threads` threads. Each block's copy takes the place of the snapshot
/// pass's second gradient, freed by then, at the memory peak; each thread scans the
/// rows for its blocks' (a shift and a mask where the partition allows).
pub(crate) fn install_drift(
    partition: &BlockPartition,
    shards: &[Arc<dyn ShardApi>],
    grad: &[f64],
    threads: usize,
) {
    let k = partition.layout().classes;
    let pow2 = partition.interleaved_pow2();
    crate::ps::on_threads(partition.blocks(), threads, |j| {
        let mut b = vec![0.0; partition.block_coords(j)];
        match pow2 {
            // Block j holds rows j, j + 2^m, ... at offsets 0, 1, ... (one class).
            Some(m) => {
                for (o, x) in b.iter_mut().enumerate() {
                    *x = grad[(o << m) | j];
                }
            }
            None => partition.for_each_row(|row, loc| {
                if loc.block as usize == j {
                    let at = loc.offset as usize;
                    b[at..at + k].copy_from_slice(&grad[row * k..(row + 1) * k]);
                }
            }),
        }
        shards[j % shards.len()].set_drift(BlockId(j as u32), &b);
    });
}

/// Evaluation timing and the record list of a run.
pub(crate) struct Monitor {
    start: Instant,
    /// Training time before this process's part of the run (resumed runs).
    offset: f64,
    pub(crate) eval_secs: f64,
    /// The interval in training seconds; `None`: automatic (see [`Monitor::interval`]).
    every_secs: Option<f64>,
    /// Seconds the last evaluation took.
    last_cost: f64,
    every_updates: Option<u64>,
    next_secs: f64,
    next_updates: Option<u64>,
    updates_per_epoch: f64,
    records: Vec<EvalRecord>,
    /// The time of a virtual clock, which replaces the wall clock's training time.
    virtual_secs: Option<f64>,
}

impl Monitor {
    /// The monitor of a run with `updates_per_epoch`, evaluating at the intervals of
    /// `raw` (`eval-every` seconds, and the smaller of `eval-every-updates` and
    /// `eval-every-epochs` in updates).
    pub(crate) fn new(updates_per_epoch: f64, raw: &TrainConfig) -> Self {
        let by_epochs = raw
            .eval_every_epochs
            .map(|e| ((e * updates_per_epoch).round() as u64).max(1));
        let every_updates = match (raw.eval_every_updates, by_epochs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Monitor::with_intervals(updates_per_epoch, raw.eval_every_secs, every_updates)
    }

    /// The monitor of a run that evaluates every `every_secs` of training time
    /// (`None`: automatic) and every `every_updates` updates.
    pub(crate) fn with_intervals(
        updates_per_epoch: f64,
        every_secs: Option<f64>,
        every_updates: Option<u64>,
    ) -> Self {
        Monitor {
            start: Instant::now(),
            offset: 0.0,
            eval_secs: 0.0,
            every_secs,
            last_cost: 0.0,
            every_updates,
            next_secs: every_secs.unwrap_or(0.0),
            next_updates: every_updates,
            updates_per_epoch,
            records: Vec::new(),
            virtual_secs: None,
        }
    }

    /// Training time from a virtual clock (`None`: the wall clock, less evaluations).
    pub(crate) fn set_virtual(&mut self, secs: Option<f64>) {
        self.virtual_secs = secs;
    }

    /// The training time between evaluations: `eval-every-secs`, or ten times the last
    /// evaluation's time (so that evaluations take about a tenth of the run, and a run of
    /// a few milliseconds is still evaluated), from 1 ms to
    /// [`crate::config::AUTO_EVAL_MAX_SECS`].
    fn interval(&self) -> f64 {
        self.every_secs.unwrap_or_else(|| {
            (10.0 * self.last_cost).clamp(1e-3, crate::config::AUTO_EVAL_MAX_SECS)
        })
    }

    /// Counts an evaluation of `secs` seconds (not training time); with automatic
    /// intervals, the next one is due an interval after the last record.
    pub(crate) fn evaluated(&mut self, secs: f64) {
        self.eval_secs += secs;
        self.last_cost = secs;
        if self.every_secs.is_none() {
            self.next_secs = self.last_train_secs() + self.interval();
        }
    }

    /// Continues a run that had trained `secs` seconds and `k` updates.
    pub(crate) fn resume_at(&mut self, secs: f64, k: u64) {
        self.offset = secs;
        self.next_secs = secs + self.interval();
        self.next_updates = self.every_updates.map(|u| (k / u + 1) * u);
    }

    pub(crate) fn train_secs(&self) -> f64 {
        if let Some(t) = self.virtual_secs {
            return t;
        }
        self.offset + (self.start.elapsed().as_secs_f64() - self.eval_secs).max(0.0)
    }

    pub(crate) fn due(&self, k: u64, secs: f64) -> bool {
        secs >= self.next_secs || self.next_updates.is_some_and(|u| k >= u)
    }

    pub(crate) fn schedule_next(&mut self, k: u64, secs: f64) {
        self.next_secs = secs + self.interval();
        self.next_updates = self.every_updates.map(|u| (k / u + 1) * u);
    }

    pub(crate) fn record(&self, k: u64, samples: u64, rejected: u64, secs: f64) -> EvalRecord {
        let per = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        EvalRecord {
            updates: k,
            epochs: k as f64 / self.updates_per_epoch,
            samples,
            train_secs: secs,
            wall_secs: self.start.elapsed().as_secs_f64(),
            rejected,
            samples_per_sec: per(samples as f64),
            updates_per_sec: per(k as f64),
            ..Default::default()
        }
    }

    /// Hands `rec` to the observers and keeps it. Its duality gap is taken against the
    /// best dual value of the run so far: every evaluation's dual point bounds Psi* of
    /// the same rows from below, so the largest one is the tightest.
    pub(crate) fn push(
        &mut self,
        mut rec: EvalRecord,
        observers: &mut [&mut dyn Observe],
    ) -> Result<()> {
        if let Some(g) = rec.gap {
            let best = self
                .records
                .iter()
                .filter_map(|r| r.gap.map(|g| r.psi - g))
                .fold(rec.psi - g, f64::max);
            rec.gap = Some((rec.psi - best).max(0.0));
        }
        for o in observers.iter_mut() {
            o.on_eval(&rec)?;
        }
        self.records.push(rec);
        Ok(())
    }

    /// The last evaluation.
    pub(crate) fn last(&self) -> Option<&EvalRecord> {
        self.records.last()
    }

    pub(crate) fn last_psi(&self) -> f64 {
        self.records.last().map_or(f64::NAN, |r| r.psi)
    }

    pub(crate) fn last_updates(&self) -> u64 {
        self.records.last().map_or(0, |r| r.updates)
    }

    /// Training time at the last evaluation.
    pub(crate) fn last_train_secs(&self) -> f64 {
        self.records.last().map_or(0.0, |r| r.train_secs)
    }

    pub(crate) fn updates_per_epoch(&self) -> f64 {
        self.updates_per_epoch
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        self,
        info: RunInfo,
        stop_reason: StopReason,
        weights: Vec<f64>,
        layout: Layout,
        reg: RegSpec,
        delays: DelaySummary,
        observers: &mut [&mut dyn Observe],
    ) -> Result<RunSummary> {
        let summary = RunSummary {
            info,
            stop_reason,
            wall_secs: self.start.elapsed().as_secs_f64(),
            train_secs: self.train_secs(),
            eval_secs: self.eval_secs,
            records: self.records,
            delays,
            weights,
            layout,
            reg,
            failed_workers: Vec::new(),
            traffic: None,
            convergence: None,
        };
        for o in observers.iter_mut() {
            o.on_finish(summary.last())?;
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use crate::data::gen::{ctr, CtrSpec};

    /// The drift installed block by block on threads (rows located with a shift and a
    /// mask where the partition allows) is the one the blocks' dense copies give
    /// (`ps::to_blocks`): the same models, bit for bit, after the same pushes.
    #[test]
    fn drift_installed_on_threads_equals_the_blocks_copies() {
        use crate::model::reg::L1;
        use crate::ps::blocks::{PartitionKind, ShardId};
        use crate::ps::shard::{Clock, Shard, ShardSettings, StepSchedule};
        use rand::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro256PlusPlus;
        let cases = [
            (1, 4, PartitionKind::Interleaved, 1),
            (1, 4, PartitionKind::Interleaved, 2),
            (1, 3, PartitionKind::Interleaved, 2),
            (1, 3, PartitionKind::Contiguous, 3),
            (2, 4, PartitionKind::Interleaved, 2),
            (1, 5, PartitionKind::Hashed, 2),
        ];
        for (classes, blocks, kind, threads) in cases {
            let layout = Layout {
                features: 41,
                classes,
                bias: true,
            };
            let part = BlockPartition::new(layout, 1, blocks, 2, kind, 7);
            assert_eq!(
                part.interleaved_pow2().is_some(),
                classes == 1 && blocks == 4 && kind == PartitionKind::Interleaved
            );
            let settings = ShardSettings {
                max_delay: None,
                schedule: StepSchedule::Constant { eta: 0.1 },
                alpha: 0.0,
                drift: true,
            };
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(blocks as u64);
            let grad: Vec<f64> = (0..layout.coords())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let pushes: Vec<(usize, Vec<(u32, f64)>)> = (0..60)
                .map(|_| {
                    let j = rng.random_range(0..blocks);
                    let c = rng.random_range(0..part.block_coords(j)) as u32;
                    (j, vec![(c, rng.random_range(-1.0..1.0))])
                })
                .collect();
            let model = |threaded: bool| {
                let clock = Arc::new(Clock::default());
                let shards: Vec<Arc<dyn ShardApi>> = (0..2)
                    .map(|s| {
                        Arc::new(Shard::new(
                            ShardId(s),
                            &part,
                            L1 { lambda: 0.01 },
                            settings,
                            clock.clone(),
                            Default::default(),
                        )) as Arc<dyn ShardApi>
                    })
                    .collect();
                if threaded {
                    install_drift(&part, &shards, &grad, threads);
                } else {
                    for (j, b) in crate::ps::to_blocks(&part, &grad).iter().enumerate() {
                        shards[j % 2].set_drift(BlockId(j as u32), b);
                    }
                }
                for (k, (j, g)) in pushes.iter().enumerate() {
                    shards[j % 2].apply(BlockId(*j as u32), k as u64, g);
                }
                crate::ps::gather(&part, &shards)
            };
            let (a, b) = (model(false), model(true));
            let what = format!("{classes} classes, {blocks} blocks, {kind:?}, {threads} threads");
            assert!(a.iter().any(|&x| x != 0.0), "{what}");
            assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{what}"
            );
        }
    }

    /// A kept model gives back the model it was made of, sparse or dense.
    #[test]
    fn kept_models_round_trip() {
        let sparse = vec![0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0, 0.0];
        let k = KeptModel::of(&sparse);
        assert!(matches!(&k, KeptModel::Sparse { index, .. } if index == &[1, 7]));
        assert_eq!(k.into_dense(), sparse);
        // Two nonzeros in three: 24 bytes sparse against 24 dense.
        let dense = vec![0.5, 0.0, -1.0];
        let k = KeptModel::of(&dense);
        assert!(matches!(k, KeptModel::Dense(_)));
        assert_eq!(k.into_dense(), dense);
        assert_eq!(KeptModel::of(&Vec::new()).into_dense(), Vec::<f64>::new());
    }

    /// The setup's column sums of squares and mean scaled row norm (computed in halves
    /// on two threads) equal the sums written out over every entry, for row counts that
    /// split evenly, unevenly, or not at all.
    #[test]
    fn setup_sums_equal_the_sums_by_hand() {
        let layout = Layout {
            features: 5,
            classes: 1,
            bias: true,
        };
        let rows: Vec<(f32, Vec<(u32, f32)>)> = vec![
            (1.0, vec![(0, 0.5), (3, -2.0)]),
            (0.0, vec![(1, 1.5), (3, 0.25), (4, 3.0)]),
            (1.0, vec![]),
            (0.0, vec![(0, -1.0), (2, 2.0), (6, 9.0)]),
            (1.0, vec![(4, 0.125)]),
        ];
        for n in [0, 1, 4, 5] {
            let ds = Dataset::from_rows(7, &rows[..n]);
            let mut want = vec![0.0; 5];
            let d = [0.5, 2.0, 1.0, 4.0, 0.25, 1.0];
            let mut norm = 0.0;
            for (_, entries) in &rows[..n] {
                for &(f, x) in entries {
                    if (f as usize) < 5 {
                        want[f as usize] += f64::from(x) * f64::from(x);
                        norm += d[f as usize] * f64::from(x) * f64::from(x);
                    }
                }
            }
            let sums = column_sq_sums(&ds, layout);
            assert_eq!(sums, want, "{n} rows");
            let got = mean_scaled_sq_row_norm(&sums, &d, n, layout);
            assert!(
                (got - (norm / n.max(1) as f64 + 1.0)).abs() < 1e-12,
                "{n} rows: {got}"
            );
        }
        // Binary rows (no values) are counted: each entry adds 1.
        let binary: Vec<(f32, Vec<(u32, f32)>)> = rows
            .iter()
            .map(|(y, e)| (*y, e.iter().map(|&(f, _)| (f, 1.0)).collect()))
            .collect();
        let mut ds = Dataset::from_rows(7, &binary);
        ds.compact_binary();
        assert!(ds.values.is_none());
        assert_eq!(column_sq_sums(&ds, layout), vec![2.0, 1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn evaluations_come_at_the_nearest_interval_in_updates_or_epochs() {
        let mut raw = crate::config::TrainConfig {
            eval_every_secs: Some(1e9),
            ..Default::default()
        };
        let due_at = |raw: &crate::config::TrainConfig, upe: f64| {
            let m = Monitor::new(upe, raw);
            (1..100_000).find(|&k| m.due(k, 0.0))
        };
        assert_eq!(due_at(&raw, 1000.0), None);
        raw.eval_every_epochs = Some(0.25);
        assert_eq!(due_at(&raw, 1000.0), Some(250));
        // 0.25 of 15625 updates is 3906.25: rounded.
        assert_eq!(due_at(&raw, 15625.0), Some(3906));
        raw.eval_every_updates = Some(300);
        assert_eq!(due_at(&raw, 1000.0), Some(250));
        raw.eval_every_updates = Some(200);
        assert_eq!(due_at(&raw, 1000.0), Some(200));
        // At least one update apart.
        raw.eval_every_updates = None;
        raw.eval_every_epochs = Some(1e-9);
        assert_eq!(due_at(&raw, 1000.0), Some(1));
        // The seconds still count.
        raw.eval_every_secs = Some(2.0);
        raw.eval_every_epochs = Some(1.0);
        assert!(Monitor::new(1000.0, &raw).due(10, 2.0));
        assert!(!Monitor::new(1000.0, &raw).due(10, 1.9));
    }

    /// Automatic intervals: ten times the last evaluation's cost after the last record,
    /// from 1 ms to `AUTO_EVAL_MAX_SECS`; a given interval is kept whatever the cost.
    /// The gap pushed is tightened by the best dual value of the run so far.
    #[test]
    fn automatic_evaluations_follow_their_cost_and_gaps_keep_the_best_dual() {
        let mut m = Monitor::with_intervals(100.0, None, None);
        assert!(m.due(0, 0.0));
        let at = |m: &mut Monitor, secs: f64, psi: f64, gap: Option<f64>, cost: f64| {
            let mut r = m.record(1, 1, 0, secs);
            r.psi = psi;
            r.gap = gap;
            m.push(r, &mut []).unwrap();
            m.evaluated(cost);
            m.last().unwrap().gap
        };
        assert_eq!(at(&mut m, 1.0, 2.0, Some(1.0), 0.02), Some(1.0));
        assert!(!m.due(5, 1.199) && m.due(5, 1.201));
        // The dual value 1.0 of the first record beats this one's 1.5 - 0.9 = 0.6.
        assert_eq!(at(&mut m, 1.5, 1.5, Some(0.9), 0.0), Some(0.5));
        assert!(!m.due(5, 1.5009) && m.due(5, 1.5011));
        assert_eq!(at(&mut m, 2.0, 1.25, Some(0.125), 60.0), Some(0.125));
        assert!(!m.due(5, 2.99) && m.due(5, 3.01));
        assert_eq!(at(&mut m, 4.0, 1.2, None, 0.5), None);
        assert!((m.eval_secs - 60.52).abs() < 1e-12);
        let mut fixed = Monitor::with_intervals(100.0, Some(2.0), None);
        at(&mut fixed, 1.0, 1.0, None, 5.0);
        fixed.schedule_next(1, 1.0);
        assert!(!fixed.due(5, 2.99) && fixed.due(5, 3.0));
    }

    #[test]
    fn snapshots_come_every_epoch_or_every_half_million_rows_per_block() {
        let mut raw = crate::config::TrainConfig::default();
        // 200k rows, 2 blocks, batch 256: an epoch is 1562.5 updates.
        assert_eq!(svrg_every(&raw, 1562.5, 200_000), 1563);
        // 2M rows: an epoch is 15625 updates; 2^19 rows per block is 0.262 of it.
        let upe = 2_000_000.0 * 2.0 / 256.0;
        assert_eq!(svrg_every(&raw, upe, 2_000_000), 4096);
        raw.svrg_epochs = Some(1.0);
        assert_eq!(svrg_every(&raw, upe, 2_000_000), 15625);
        raw.svrg_epochs = Some(1e-9);
        assert_eq!(svrg_every(&raw, upe, 2_000_000), 1);
    }

    #[test]
    fn the_first_snapshot_waits_a_tenth_interval_from_the_zero_model_only() {
        let mut raw = crate::config::TrainConfig::default();
        assert_eq!(svrg_warmup(&raw, 4096, 15625.0, true), 409);
        assert_eq!(svrg_warmup(&raw, 4096, 15625.0, false), 0);
        assert_eq!(svrg_warmup(&raw, 9, 9.0, true), 0);
        raw.svrg_warmup = Some(0.5);
        assert_eq!(svrg_warmup(&raw, 4096, 15625.0, false), 7813);
        raw.svrg_warmup = Some(0.0);
        assert_eq!(svrg_warmup(&raw, 4096, 15625.0, true), 0);
    }

    #[test]
    fn a_model_larger_than_memory_is_refused_in_one_line() {
        let l = |features| Layout {
            features,
            classes: 1,
            bias: true,
        };
        // 2^30 + 1 coordinates at 40 bytes: 42.9 GB.
        let e = memory_guard(l(1 << 30), 40, false, true, Some(24 << 30))
            .unwrap_err()
            .to_string();
        assert!(e.contains("42.9 GB") && e.contains("25.8 GB"), "{e}");
        assert!(
            e.contains("--compact-features on") && !e.contains('\n'),
            "{e}"
        );
        assert!(memory_guard(l(1 << 20), 40, false, true, Some(24 << 30)).is_ok());
        assert!(memory_guard(l(1 << 30), 40, false, true, None).is_ok());
        let e = memory_guard(l(1 << 30), 40, true, false, Some(24 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1073741824 used features") && !e.contains("--compact"),
            "{e}"
        );
        assert!(total_memory().map_or(true, |b| b > 1 << 20));
    }

    /// A worker that panics is reported and the other one finishes the run: every
    /// update of the budget is applied and the objective reaches that of a run that
    /// kept both workers.
    #[test]
    fn a_failed_worker_is_reported_and_the_run_goes_on() {
        let data = ctr(&CtrSpec {
            rows: 2000,
            features: 1024,
            seed: 3,
            ..CtrSpec::default()
        })
        .unwrap();
        let cfg = TrainConfig {
            algorithm: Algorithm::Asyb,
            workers: Some(2),
            epochs: Some(20.0),
            lambda: 1e-3,
            seed: crate::ps::worker::FAIL_SEED,
            eval_every_secs: Some(0.05),
            eval_threads: Some(1),
            ..TrainConfig::default()
        };
        let vc = cfg.check().unwrap();
        let pb = Problem::from_datasets(&vc, data, "d.svm".as_ref(), None, None).unwrap();
        let s = Trainer::new(&vc, &pb).run().unwrap();
        let whole = TrainConfig { seed: 1, ..cfg }.check().unwrap();
        let reference = Trainer::new(&whole, &pb).run().unwrap();
        assert!(reference.failed_workers.is_empty());
        assert_eq!(s.failed_workers.len(), 1);
        assert_eq!(s.failed_workers[0].worker, 1);
        assert!(s.failed_workers[0].reason.contains("injected"));
        assert_eq!(s.stop_reason, StopReason::Epochs);
        let budget = (20.0 * s.info.updates_per_epoch).ceil() as u64;
        assert!(
            s.last().updates >= budget,
            "{} < {budget}",
            s.last().updates
        );
        // The surviving worker reaches what two workers reach.
        let (a, b) = (s.last().psi, reference.last().psi);
        assert!((a - b).abs() <= 1e-2 * b, "{a} vs {b}");
        assert!(a < 0.9 * s.first().psi);
    }
}
