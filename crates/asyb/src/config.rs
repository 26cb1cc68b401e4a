//! Every tunable of a run has its home here: [`TrainConfig`] (serde, filled from a TOML
//! file and/or command-line flags), validated once by [`TrainConfig::check`] into a
//! [`ValidConfig`], with one clear error per bad field. Choices that need the data
//! (the step size from `step = "auto"`, the default number of blocks) are resolved by
//! the trainer once the data is loaded.
//!
//! Defaults, and why:
//! - `workers`: the machine's cores (async workers are compute bound).
//! - `blocks`: `max(2, workers, servers)`: each push updates one block, so more blocks mean less of
//!   each minibatch's gradient is used; at least one block per worker keeps two workers
//!   from queueing on one block's write lock most of the time.
//! - `algorithm = "auto"`: `fista` on small training sets and where the rows overlap
//!   (`L_row / L_f` small), `asyb` otherwise ([`Algorithm::resolve`]; docs/defaults.md).
//! - `batch`: `L_row / L_f` rows, from 16 to 256 ([`auto_batch`]): up to that size a
//!   larger minibatch takes a proportionally longer step; 256 under MPI.
//! - `step = "auto"`: see the trainer (`train.rs`): 1 / (curvature bound * mean squared
//!   row norm), the step of SGD on the average sample's smoothness constant.
//! - `variance_reduction = "auto"`: SVRG where the lazy prox stays exact with it
//!   (regularizer none or l1). Plain SGD with a constant step stalls at a noise floor,
//!   and a decaying step takes hundreds of epochs on sparse data; SVRG's gradient noise
//!   vanishes at the optimum, so a constant step converges to it. Snapshots every
//!   `svrg_epochs = 1` epoch, or 2^19 rows per block if sooner (a full pass each,
//!   counted as training time); from a zero model the first comes after
//!   `svrg_warmup` = a tenth of that of plain proximal SGD.
//! - `step_scaling = "auto"`: per-column steps (`columns`) together with SVRG, where
//!   the regularizer allows them; none otherwise, because without variance reduction the
//!   larger steps of rare columns raise the noise floor more than they speed them up.
//! - `step_scaling_floor = 1024` rows: measured on 200k hashed CTR rows (2^18
//!   features, lambda 1e-5) and on the 2M-row reference workload against 256 to 8192
//!   (docs/defaults.md); see `train.rs`.
//! - `max_delay`: none; the delay histogram reports what arose.
//! - `tol`: 3e-4 on `||P(x)|| / ||P(0)||`, the scale-free measure of LIBLINEAR's `-e`
//!   (docs/defaults.md measures what suboptimality it gives); the duality gap, printed
//!   beside it, is a certificate but looser by orders of magnitude at a small lambda.
//! - `epochs`: at most 100 unless another budget is given; a run stops sooner at `tol`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::loss::{Labels, LossKind, LossSpec};
use crate::model::reg::{RegKind, RegSpec};
use crate::ps::blocks::PartitionKind;
use crate::{Error, Result};

/// The default `tol`: about 1e-4 relative suboptimality on the data of
/// docs/defaults.md.
pub const DEFAULT_TOL: f64 = 3e-4;

/// The longest interval between automatic evaluations (`eval-every-secs` not given).
pub const AUTO_EVAL_MAX_SECS: f64 = 1.0;

/// The default epoch budget when no other budget is given: a cap for runs that stop at
/// convergence first.
pub const DEFAULT_EPOCHS: f64 = 100.0;

/// The training algorithm (DESIGN.md: one code path, different settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// `asyb`, or `fista` on a problem where a full-gradient method is faster: resolved
    /// by the trainer once the data is loaded ([`Algorithm::resolve`]).
    Auto,
    /// AsyB-ProxSGD: one random block per push (the paper).
    Asyb,
    /// Asynchronous ProxSGD: every block in every push.
    AsyFull,
    /// Synchronous minibatch ProxSGD: a barrier per step, gradients averaged.
    Sync,
    /// Sequential block-coordinate ProxSGD: one worker, delay bound 0.
    Seq,
    /// Deterministic accelerated proximal gradient (FISTA with backtracking) on the full
    /// data: the reference optimum Psi*.
    Fista,
    /// Proximal Newton with coordinate descent on a working set (LIBLINEAR's method for
    /// L1 logistic regression; [`crate::cd`]): the small-data solver, for one-output
    /// losses and separable regularizers.
    Cd,
}

impl Algorithm {
    pub const ALL: [(&'static str, Algorithm); 7] = [
        ("auto", Algorithm::Auto),
        ("asyb", Algorithm::Asyb),
        ("asy-full", Algorithm::AsyFull),
        ("sync", Algorithm::Sync),
        ("seq", Algorithm::Seq),
        ("fista", Algorithm::Fista),
        ("cd", Algorithm::Cd),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether this is one of the deterministic full-data solvers (`fista`, `cd`), run
    /// without workers.
    pub fn is_full_data(self) -> bool {
        matches!(self, Algorithm::Fista | Algorithm::Cd)
    }

    /// Whether workers run this algorithm (`auto` where it resolves to `asyb`).
    pub fn is_asynchronous(self) -> bool {
        matches!(self, Algorithm::Auto | Algorithm::Asyb | Algorithm::AsyFull)
    }

    /// `auto` resolved for a problem of `rows` rows whose smoothness constants are
    /// `l_f` (the full objective's) and `l_row` (the average row's), both in the metric
    /// of the steps. Where `cd` applies (`cd_applies`: one output, a separable
    /// regularizer, alpha = 0), `cd` on at most [`AUTO_CD_ROWS`] rows. Elsewhere `fista`
    /// when `rows` is at most [`AUTO_FISTA_ROWS`], or at most [`AUTO_FISTA_GAIN_ROWS`]
    /// with `l_row / l_f` (the minibatch size up to which a larger minibatch still buys
    /// a proportionally larger step) below [`AUTO_FISTA_BATCH_GAIN`]. Else `asyb`. Any
    /// other setting as it is. `stochastic_only`: a run that needs workers (the MPI
    /// backend, the simulator, checkpoints, a given batch, blocks, servers, snapshot
    /// interval or step) resolves to `asyb`.
    /// With the choice, why it was made (empty for a setting other than `auto`).
    pub fn resolve(
        self,
        rows: usize,
        l_f: f64,
        l_row: f64,
        stochastic_only: bool,
        cd_applies: bool,
    ) -> (Algorithm, String) {
        if self != Algorithm::Auto {
            return (self, String::new());
        }
        let gain = l_row / l_f.max(f64::MIN_POSITIVE);
        if stochastic_only {
            (Algorithm::Asyb, "a setting of the workers given".into())
        } else if cd_applies && rows <= AUTO_CD_ROWS {
            (Algorithm::Cd, format!("{rows} rows <= {AUTO_CD_ROWS}"))
        } else if cd_applies {
            (Algorithm::Asyb, format!("{rows} rows > {AUTO_CD_ROWS}"))
        } else if rows <= AUTO_FISTA_ROWS {
            (
                Algorithm::Fista,
                format!("{rows} rows <= {AUTO_FISTA_ROWS}"),
            )
        } else if rows <= AUTO_FISTA_GAIN_ROWS && gain < AUTO_FISTA_BATCH_GAIN {
            (
                Algorithm::Fista,
                format!(
                    "{rows} rows <= {AUTO_FISTA_GAIN_ROWS}, L_row / L_f = {gain:.3} < {AUTO_FISTA_BATCH_GAIN}"
                ),
            )
        } else {
            (
                Algorithm::Asyb,
                format!("{rows} rows, L_row / L_f = {gain:.3}"),
            )
        }
    }
}

/// `algorithm = "auto"` runs `cd`, where it applies, on training sets of at most this
/// many rows (docs/defaults.md): on hashed click-through rows it reached the stop 2.3x
/// sooner than `asyb` with 2 workers at 200k rows, 1.3x at 600k with 1.75x the memory
/// (its copy of the rows by column), and its iterations do not use more cores.
pub const AUTO_CD_ROWS: usize = 200_000;

/// `algorithm = "auto"` runs `fista`, where `cd` does not apply, on training sets of
/// at most this many rows (docs/defaults.md).
pub const AUTO_FISTA_ROWS: usize = 5000;

/// `algorithm = "auto"` runs `fista` where `L_row / L_f` is below this on training sets
/// of at most [`AUTO_FISTA_GAIN_ROWS`] rows (docs/defaults.md).
pub const AUTO_FISTA_BATCH_GAIN: f64 = 48.0;

/// See [`AUTO_FISTA_BATCH_GAIN`]: on more rows than this, the stochastic method's passes
/// fall with the rows while FISTA's do not (72k rows of rcv1-like shape: asyb 4-5x ahead).
pub const AUTO_FISTA_GAIN_ROWS: usize = 50_000;

/// The minibatch of the MPI backend and the largest automatic one.
pub const DEFAULT_BATCH: usize = 256;

/// The smallest automatic minibatch.
pub const AUTO_BATCH_MIN: usize = 16;

/// The automatic minibatch for smoothness constants `l_f` and `l_row` (see
/// [`Algorithm::resolve`]): `l_row / l_f` rounded, from [`AUTO_BATCH_MIN`] to
/// [`DEFAULT_BATCH`]. Up to that size a minibatch twice as large takes a step about
/// twice as long, so rows are not wasted; beyond it the step stops growing.
pub fn auto_batch(l_f: f64, l_row: f64) -> usize {
    let gain = l_row / l_f.max(f64::MIN_POSITIVE);
    (gain.round() as usize).clamp(AUTO_BATCH_MIN, DEFAULT_BATCH)
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::parse_name(&Self::ALL, s, "algorithm")
    }
}

/// Where the shards and workers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Threads of this process, sharing memory.
    Local,
    /// MPI ranks (`mpirun -np N asyb train --backend mpi`; cargo feature `mpi`).
    Mpi,
}

/// How a worker draws its minibatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Shuffled passes over the worker's share of the rows, reshuffled every pass.
    Shuffle,
    /// Independent draws with replacement from all rows (the theory's sampling).
    Iid,
}

/// Base of feature indices in LIBSVM files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndexBaseSetting {
    Auto,
    #[serde(rename = "0")]
    Zero,
    #[serde(rename = "1")]
    One,
}

/// Variance reduction of the stochastic block gradients (see `train.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VarianceReduction {
    /// `svrg` where the shard's lazy prox stays exact with it (regularizer none or l1)
    /// and the algorithm is stochastic; `none` otherwise.
    Auto,
    /// Plain stochastic gradients (the paper's).
    None,
    /// SVRG: every `svrg-epochs` the full gradient is taken at a snapshot; a push
    /// carries the minibatch's gradient minus the snapshot's, and the shard adds the
    /// full gradient to every coordinate's step.
    Svrg,
}

impl std::str::FromStr for VarianceReduction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(VarianceReduction::Auto),
            "none" => Ok(VarianceReduction::None),
            "svrg" => Ok(VarianceReduction::Svrg),
            _ => Err(format!(
                "unknown variance reduction '{s}' (expected one of: auto, none, svrg)"
            )),
        }
    }
}

/// Per-coordinate scaling of the step (a fixed diagonal metric; see `train.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepScaling {
    /// `columns` when variance reduction is on (and the regularizer allows it),
    /// `none` otherwise: without it, the scaled steps' noise floor is far higher.
    Auto,
    /// The same step for every coordinate (the paper's step).
    None,
    /// Coordinate j's step is `eta * d_j`, `d_j = (n + r0) / (s_j + r0)`, `s_j` the sum
    /// of squares of column j over the n training rows and `r0 = step-scaling-floor`.
    Columns,
}

impl StepScaling {
    pub const ALL: [(&'static str, StepScaling); 3] = [
        ("auto", StepScaling::Auto),
        ("none", StepScaling::None),
        ("columns", StepScaling::Columns),
    ];
}

impl std::str::FromStr for StepScaling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::parse_name(&Self::ALL, s, "step scaling")
    }
}

/// Feature-id compaction (see `data::columns`): the shards hold only the features that
/// occur in the training data, the most frequent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompactFeatures {
    /// `on` when the run allows it (see [`compaction_exact`]) and either the training
    /// data has at least [`AUTO_ORDER_NNZ`] nonzeros, or the dense model would have more
    /// than [`AUTO_COMPACT_COORDS`] coordinates or more coordinates than the data has
    /// nonzeros, with at most half of the features occurring; `off` otherwise.
    Auto,
    On,
    Off,
}

impl CompactFeatures {
    pub const ALL: [(&'static str, CompactFeatures); 3] = [
        ("auto", CompactFeatures::Auto),
        ("on", CompactFeatures::On),
        ("off", CompactFeatures::Off),
    ];
}

impl std::str::FromStr for CompactFeatures {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        crate::parse_name(&Self::ALL, s, "compact-features setting")
    }
}

/// Coordinates of a dense model above which `--compact-features auto` compacts (2^24:
/// 512 MB of shard cells).
pub const AUTO_COMPACT_COORDS: usize = 1 << 24;

/// Nonzeros of the training data from which `--compact-features auto` renumbers the
/// features in frequency order whatever the model's size (2^22: on the reference
/// workload the renumbering costs a few hundredths of a second per million rows and
/// saves a fifth of the training time; docs/performance.md).
pub const AUTO_ORDER_NNZ: usize = 1 << 22;

/// Why compaction would not be exact for this configuration (a feature absent from the
/// training data must keep weight 0 on every iterate: the prox must map 0 to 0, and
/// group-lasso groups are runs of consecutive original features), or `None` when it is.
pub fn compaction_exact(cfg: &TrainConfig) -> Option<&'static str> {
    match cfg.reg {
        RegKind::GroupLasso => Some("group-lasso groups are runs of consecutive features"),
        RegKind::Box if !(cfg.lower <= 0.0 && 0.0 <= cfg.upper) => {
            Some("the box does not contain 0, so unused features would not stay at 0")
        }
        _ if cfg.backend == Backend::Mpi => {
            Some("the MPI backend does not compact feature ids yet")
        }
        _ => None,
    }
}

/// A step size: a number, or `"auto"` (chosen from the data's smoothness).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a number or \"auto\"")]
pub enum StepSetting {
    Fixed(f64),
    Named(StepName),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    Auto,
}

impl std::str::FromStr for StepSetting {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "auto" {
            return Ok(StepSetting::Named(StepName::Auto));
        }
        s.parse::<f64>()
            .map(StepSetting::Fixed)
            .map_err(|_| format!("'{s}' is neither a number nor 'auto'"))
    }
}

/// A run's settings as given: every field has a default (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainConfig {
    /// Training data (LIBSVM text, plain or compressed).
    pub train: Option<PathBuf>,
    /// Test data for held-out metrics.
    pub test: Option<PathBuf>,
    /// Weights of the training rows' losses: a text file with one number (>= 0) per
    /// line, in the training file's row order; a row of weight 2 counts as two copies.
    pub weights: Option<PathBuf>,
    pub loss: LossKind,
    /// Huber loss: where it turns from quadratic to linear; default 1.
    pub huber_delta: Option<f64>,
    pub reg: RegKind,
    pub lambda: f64,
    /// Elastic net: weight of the L1 part in [0, 1].
    pub l1_ratio: f64,
    /// Box constraint bounds.
    pub lower: f64,
    pub upper: f64,
    /// Group lasso: consecutive features per group.
    pub group_size: usize,
    /// Weight of the smooth nonconvex term alpha * sum x^2/(1+x^2) added to f.
    pub alpha: f64,
    /// Train an unregularized intercept.
    pub bias: bool,
    /// Number of features; default: from the data.
    pub features: Option<usize>,
    /// Feature-id compaction.
    pub compact_features: CompactFeatures,
    pub index_base: IndexBaseSetting,
    /// Count and skip malformed lines instead of failing.
    pub skip_bad_lines: bool,
    pub algorithm: Algorithm,
    /// Worker threads; default: the number of cores.
    pub workers: Option<usize>,
    /// Number of blocks M; default: max(2, workers, servers), at most the number of features.
    pub blocks: Option<usize>,
    pub partition: PartitionKind,
    /// Shards the blocks are spread over: threads in process; with the MPI backend,
    /// server ranks 0..S-1.
    pub servers: usize,
    /// Local threads or MPI ranks.
    pub backend: Backend,
    /// MPI backend: every rank hosts a server for its share of the blocks and a worker.
    pub colocate: bool,
    /// Minibatch size N; `None`: automatic ([`auto_batch`]; [`DEFAULT_BATCH`] under MPI).
    pub batch: Option<usize>,
    pub step: StepSetting,
    /// Decaying step eta0 / sqrt(1 + k / t0) instead of a constant one.
    pub step_decay: bool,
    /// t0 of the decaying step, in block updates; default: one epoch.
    pub step_t0: Option<f64>,
    /// Per-coordinate step scaling (a fixed diagonal metric).
    pub step_scaling: StepScaling,
    /// r0 of `columns` scaling, in rows: a column seen in r0 rows gets about half the
    /// factor of a never-seen one, which caps the step of the rarest columns.
    pub step_scaling_floor: f64,
    pub variance_reduction: VarianceReduction,
    /// SVRG: epochs between snapshots (full gradients); `None`: one epoch, or
    /// [`SVRG_AUTO_ROWS`] rows per block when that comes sooner.
    pub svrg_epochs: Option<f64>,
    /// SVRG: epochs of plain proximal SGD before the first snapshot; `None`: a tenth of
    /// the snapshot interval when the run starts from the zero model, else none (the
    /// first snapshot at the start).
    pub svrg_warmup: Option<f64>,
    pub sampling: Sampling,
    /// tau: reject pushes computed at a model more than this many updates old.
    pub max_delay: Option<u64>,
    pub epochs: Option<f64>,
    pub max_updates: Option<u64>,
    pub max_seconds: Option<f64>,
    /// Stop once the monitored train objective is at or below this value.
    pub target_objective: Option<f64>,
    /// Stop at convergence: once the prox-gradient mapping's norm at an evaluation is at
    /// most `tol` times its norm at the zero model (`||P(x)|| <= tol ||P(0)||`, the
    /// measure of LIBLINEAR's `-e`); 0 turns it off.
    pub tol: f64,
    /// Evaluate every this many seconds of training time; `None`: automatic, ten times
    /// the last evaluation's time (evaluations take about a tenth of the run), at most
    /// [`AUTO_EVAL_MAX_SECS`].
    pub eval_every_secs: Option<f64>,
    /// Evaluate every this many updates (in addition to the time interval).
    pub eval_every_updates: Option<u64>,
    /// Evaluate every this many epochs (in addition to the time interval): runs with
    /// different worker counts are then evaluated at the same points of their progress.
    pub eval_every_epochs: Option<f64>,
    /// Rows of the training set used for the monitored objective; a larger training set
    /// is subsampled by a fixed stride (same rows at every evaluation). `None`: every
    /// row. A subsample's objective is not the one training minimizes, so `tol`, which
    /// measures the monitored objective, may then never be met: its optimum differs.
    pub eval_rows: Option<usize>,
    /// Threads for evaluation; default: the number of cores.
    pub eval_threads: Option<usize>,
    pub seed: u64,
    /// FISTA: stop when ||P||^2 falls below this times its value at the start.
    pub fista_tol: f64,
    pub fista_max_iters: usize,
    /// Outputs.
    pub model: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    /// Warm start from a model file.
    pub init_model: Option<PathBuf>,
    /// Write checkpoints (model, step, samples, training time) into this directory.
    pub checkpoint_dir: Option<PathBuf>,
    /// Seconds of training between checkpoints.
    pub checkpoint_every_secs: f64,
    /// Resume from the newest checkpoint in this directory.
    pub resume: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            train: None,
            test: None,
            weights: None,
            loss: LossKind::Logistic,
            huber_delta: None,
            reg: RegKind::L1,
            lambda: 1e-6,
            l1_ratio: 0.5,
            lower: -1.0,
            upper: 1.0,
            group_size: 1,
            alpha: 0.0,
            bias: true,
            features: None,
            compact_features: CompactFeatures::Auto,
            index_base: IndexBaseSetting::Auto,
            skip_bad_lines: false,
            algorithm: Algorithm::Auto,
            workers: None,
            blocks: None,
            partition: PartitionKind::Interleaved,
            servers: 1,
            backend: Backend::Local,
            colocate: false,
            batch: None,
            step: StepSetting::Named(StepName::Auto),
            step_decay: false,
            step_t0: None,
            step_scaling: StepScaling::Auto,
            step_scaling_floor: DEFAULT_SCALING_FLOOR,
            variance_reduction: VarianceReduction::Auto,
            svrg_epochs: None,
            svrg_warmup: None,
            sampling: Sampling::Shuffle,
            max_delay: None,
            epochs: None,
            max_updates: None,
            max_seconds: None,
            target_objective: None,
            tol: DEFAULT_TOL,
            eval_every_secs: None,
            eval_every_updates: None,
            eval_every_epochs: None,
            eval_rows: None,
            eval_threads: None,
            seed: 1,
            fista_tol: 1e-10,
            fista_max_iters: 5000,
            model: None,
            log: None,
            plot: None,
            init_model: None,
            checkpoint_dir: None,
            checkpoint_every_secs: 60.0,
            resume: None,
        }
    }
}

/// With the default `svrg-epochs`, a snapshot comes after at most this many rows'
/// gradients per block (about half a million), even within an epoch: SVRG's inner loop
/// must be long against the problem's conditioning, not against the data set, and on
/// millions of rows a snapshot per epoch leaves the control variate stale (see
/// docs/defaults.md).
pub const SVRG_AUTO_ROWS: usize = 1 << 19;

/// Default `step-scaling-floor` (rows).
pub const DEFAULT_SCALING_FLOOR: f64 = 1024.0;

/// A configuration that passed [`TrainConfig::check`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidConfig {
    pub raw: TrainConfig,
    /// The loss with its parameter.
    pub loss: LossSpec,
    pub workers: usize,
    pub eval_threads: usize,
    pub reg: RegSpec,
    /// Epoch budget after defaults (None when another criterion bounds the run).
    pub epochs: Option<f64>,
    /// `step-scaling` resolved: whether steps are scaled per column.
    pub scaled_steps: bool,
    /// `variance-reduction` resolved: whether the run uses SVRG.
    pub svrg: bool,
}

fn cores() -> usize {
    crate::par::cores()
}

fn positive_finite(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("{v} must be a positive number"),
        ))
    }
}

fn nonneg_finite(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("{v} must be a finite number >= 0"),
        ))
    }
}

/// Whether the shard's lazy prox of `reg` stays exact with per-coordinate step factors
/// (`Regularizer::DIAGONAL_METRIC` of the concrete regularizer).
pub fn exact_with_scaled_steps(reg: RegKind) -> bool {
    matches!(
        reg,
        RegKind::None | RegKind::L1 | RegKind::Nonneg | RegKind::Box
    )
}

/// Whether the shard's lazy prox of `reg` stays exact with a constant drift
/// (`Regularizer::DRIFT` of the concrete regularizer).
pub fn exact_with_drift(reg: RegKind) -> bool {
    matches!(reg, RegKind::None | RegKind::L1)
}

impl TrainConfig {
    /// Parses a TOML config file's text; `path` names it in errors, and relative paths in
    /// it (data, outputs, checkpoints) are taken relative to its directory, as a file
    /// that names its neighbours means them wherever it is run from.
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self> {
        let mut cfg = Self::parse_toml(text, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            for p in [
                &mut cfg.train,
                &mut cfg.test,
                &mut cfg.weights,
                &mut cfg.model,
                &mut cfg.log,
                &mut cfg.plot,
                &mut cfg.init_model,
                &mut cfg.checkpoint_dir,
                &mut cfg.resume,
            ]
            .into_iter()
            .flatten()
            {
                // `-` is standard input, not a file beside the config.
                if p.is_relative() && p.as_os_str() != "-" {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    fn parse_toml(text: &str, path: &std::path::Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() as u64 + 1;
                    let col = (before.len() - before.rfind('\n').map_or(0, |p| p + 1)) as u64 + 1;
                    (line, col)
                })
                .unwrap_or((1, 1));
            Error::Parse {
                path: path.to_path_buf(),
                line,
                col,
                reason: e.message().to_string(),
            }
        })
    }

    /// The loss with its parameter: a given parameter must be the loss's, finite and > 0.
    fn loss_spec(&self) -> Result<LossSpec> {
        let given = [("huber-delta", self.huber_delta)];
        let takes = self.loss.info().param.map(|p| p.name);
        for (name, value) in given {
            let Some(v) = value else { continue };
            if takes != Some(name) {
                return Err(Error::config(
                    name,
                    format!("applies to another loss than '{}'", self.loss.name()),
                ));
            }
            positive_finite(name, v)?;
        }
        let param = given
            .iter()
            .find(|(n, _)| takes == Some(*n))
            .and_then(|g| g.1);
        Ok(LossSpec::new(self.loss, param))
    }

    /// The problem (regularizer, features, compaction) and the outputs (checkpoints, warm start).
    fn check_problem_and_outputs(&self) -> Result<()> {
        nonneg_finite("lambda", self.lambda)?;
        if self.weights.is_some() {
            // A weight belongs to a line of the training file.
            let why = if self.skip_bad_lines {
                Some("skip-bad-lines (a skipped line would shift every later weight)")
            } else if self.backend == Backend::Mpi {
                Some("the MPI backend (not yet)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::config(
                    "weights",
                    format!("row weights cannot be used with {why}"),
                ));
            }
        }
        positive_finite("checkpoint-every", self.checkpoint_every_secs)?;
        if self.resume.is_some() && self.init_model.is_some() {
            return Err(Error::config(
                "resume",
                "give either --resume or --init-model, not both",
            ));
        }
        if self.algorithm.is_full_data() && (self.resume.is_some() || self.checkpoint_dir.is_some())
        {
            return Err(Error::config(
                "checkpoint-dir",
                format!(
                    "checkpoints are for the stochastic algorithms, not {}",
                    self.algorithm.name()
                ),
            ));
        }
        if self.algorithm == Algorithm::Cd {
            let why = if self.loss.info().labels == Labels::Classes {
                Some(format!("one output per row, not {}", self.loss.name()))
            } else if self.reg == RegKind::GroupLasso {
                Some("a separable regularizer, not group-lasso".to_string())
            } else if self.alpha > 0.0 {
                Some("a convex objective (alpha = 0)".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::config(
                    "algorithm",
                    format!("cd needs {why}; use fista"),
                ));
            }
        }
        nonneg_finite("alpha", self.alpha)?;
        if !(0.0..=1.0).contains(&self.l1_ratio) {
            return Err(Error::config(
                "l1-ratio",
                format!("{} must be in [0, 1]", self.l1_ratio),
            ));
        }
        if self.reg == RegKind::Box
            && !matches!(
                self.lower.partial_cmp(&self.upper),
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            )
        {
            return Err(Error::config(
                "lower",
                format!(
                    "box lower bound {} is above upper bound {}",
                    self.lower, self.upper
                ),
            ));
        }
        if self.group_size == 0 {
            return Err(Error::config("group-size", "must be at least 1"));
        }
        if let Some(0) = self.features {
            return Err(Error::config("features", "must be at least 1"));
        }
        if self.features.is_some_and(|d| d >= u32::MAX as usize) {
            return Err(Error::config(
                "features",
                format!("must be below {} (feature ids are 32-bit)", u32::MAX),
            ));
        }
        if self.compact_features == CompactFeatures::On {
            if let Some(why) = compaction_exact(self) {
                return Err(Error::config("compact-features", why));
            }
        }
        Ok(())
    }

    /// Workers, blocks, servers and the backend.
    fn check_parallelism(&self) -> Result<()> {
        if self.workers == Some(0) {
            return Err(Error::config("workers", "must be at least 1"));
        }
        if self.blocks == Some(0) {
            return Err(Error::config("blocks", "must be at least 1"));
        }
        if self.servers == 0 {
            return Err(Error::config("servers", "must be at least 1"));
        }
        if self.backend == Backend::Mpi {
            if !self.algorithm.is_asynchronous() {
                return Err(Error::config(
                    "backend",
                    format!(
                        "the MPI backend runs asyb and asy-full, not {}",
                        self.algorithm.name()
                    ),
                ));
            }
            if self.loss.info().labels == Labels::Classes {
                return Err(Error::config(
                    "backend",
                    "the MPI backend does not train softmax yet (its class list would have to be agreed across ranks); use the local backend",
                ));
            }
            if self.workers.is_some() {
                return Err(Error::config(
                    "workers",
                    "with the MPI backend the workers are the ranks (see --servers and --colocate)",
                ));
            }
        } else if self.colocate {
            return Err(Error::config("colocate", "applies to the MPI backend only"));
        }
        if let Some(b) = self.blocks {
            if self.servers > b {
                return Err(Error::config(
                    "servers",
                    format!(
                        "{} servers for {b} blocks: at most one server per block",
                        self.servers
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The minibatch, the step, variance reduction and step scaling.
    fn check_steps(&self) -> Result<()> {
        if self.batch == Some(0) {
            return Err(Error::config("batch", "must be at least 1"));
        }
        if let StepSetting::Fixed(eta) = self.step {
            positive_finite("step", eta)?;
        }
        if let Some(t0) = self.step_t0 {
            positive_finite("step-t0", t0)?;
        }
        positive_finite("step-scaling-floor", self.step_scaling_floor)?;
        if let Some(e) = self.svrg_epochs {
            positive_finite("svrg-epochs", e)?;
        }
        if let Some(e) = self.svrg_warmup {
            nonneg_finite("svrg-warmup", e)?;
        }
        if self.variance_reduction == VarianceReduction::Svrg {
            if !exact_with_drift(self.reg) {
                return Err(Error::config(
                    "variance-reduction",
                    format!(
                        "'svrg' needs a regularizer whose lazy prox stays exact with a \
                         constant drift (none, l1), not {}; use 'none'",
                        self.reg.name()
                    ),
                ));
            }
            if self.algorithm.is_full_data() {
                return Err(Error::config(
                    "variance-reduction",
                    format!(
                        "'svrg' applies to the stochastic algorithms, not {}; use 'none'",
                        self.algorithm.name()
                    ),
                ));
            }
        }
        if self.step_scaling == StepScaling::Columns {
            if !exact_with_scaled_steps(self.reg) {
                return Err(Error::config(
                    "step-scaling",
                    format!(
                        "'columns' needs a regularizer whose lazy prox stays exact with \
                         per-coordinate steps (none, l1, nonneg, box), not {}; use 'none'",
                        self.reg.name()
                    ),
                ));
            }
            if self.algorithm.is_full_data() {
                return Err(Error::config(
                    "step-scaling",
                    format!(
                        "'columns' applies to the stochastic algorithms, not {}; use 'none'",
                        self.algorithm.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The stop criteria, the evaluation schedule and FISTA's tolerance.
    fn check_budget(&self) -> Result<()> {
        if let Some(e) = self.epochs {
            positive_finite("epochs", e)?;
        }
        if let Some(s) = self.max_seconds {
            positive_finite("max-seconds", s)?;
        }
        if self.max_updates == Some(0) {
            return Err(Error::config("max-updates", "must be at least 1"));
        }
        nonneg_finite("tol", self.tol)?;
        if let Some(t) = self.target_objective {
            if !t.is_finite() {
                return Err(Error::config(
                    "target-objective",
                    format!("{t} is not a finite number"),
                ));
            }
        }
        if let Some(e) = self.eval_every_secs {
            positive_finite("eval-every-secs", e)?;
        }
        if self.eval_every_updates == Some(0) {
            return Err(Error::config("eval-every-updates", "must be at least 1"));
        }
        if let Some(e) = self.eval_every_epochs {
            positive_finite("eval-every-epochs", e)?;
        }
        if self.eval_rows == Some(0) {
            return Err(Error::config("eval-rows", "must be at least 1"));
        }
        if self.eval_threads == Some(0) {
            return Err(Error::config("eval-threads", "must be at least 1"));
        }
        positive_finite("fista-tol", self.fista_tol)?;
        if self.algorithm == Algorithm::Seq && self.workers.is_some_and(|w| w > 1) {
            return Err(Error::config(
                "workers",
                "the seq algorithm runs one worker",
            ));
        }
        Ok(())
    }

    /// Validates every field, one error for the first bad one.
    pub fn check(&self) -> Result<ValidConfig> {
        self.check_problem_and_outputs()?;
        self.check_parallelism()?;
        self.check_steps()?;
        self.check_budget()?;
        let loss = self.loss_spec()?;
        let workers = match self.algorithm {
            Algorithm::Seq | Algorithm::Fista | Algorithm::Cd => 1,
            _ => self.workers.unwrap_or_else(cores),
        };
        let bounded = self.max_updates.is_some()
            || self.max_seconds.is_some()
            || self.target_objective.is_some();
        let epochs = self
            .epochs
            .or(if bounded { None } else { Some(DEFAULT_EPOCHS) });
        let svrg = match self.variance_reduction {
            VarianceReduction::None => false,
            VarianceReduction::Svrg => true,
            VarianceReduction::Auto => exact_with_drift(self.reg) && !self.algorithm.is_full_data(),
        };
        let scaled_steps = match self.step_scaling {
            StepScaling::None => false,
            StepScaling::Columns => true,
            StepScaling::Auto => svrg && exact_with_scaled_steps(self.reg),
        };
        Ok(ValidConfig {
            raw: self.clone(),
            loss,
            workers,
            eval_threads: self.eval_threads.unwrap_or_else(cores),
            reg: RegSpec {
                kind: self.reg,
                lambda: self.lambda,
                l1_ratio: self.l1_ratio,
                lower: self.lower,
                upper: self.upper,
                // In features here; the trainer multiplies by the number of classes.
                group_len: self.group_size,
            },
            epochs,
            scaled_steps,
            svrg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let v = TrainConfig::default().check().unwrap();
        assert_eq!(v.epochs, Some(DEFAULT_EPOCHS));
        // Another budget replaces the epoch cap.
        let c = TrainConfig {
            max_seconds: Some(5.0),
            ..Default::default()
        };
        assert_eq!(c.check().unwrap().epochs, None);
        assert!(v.workers >= 1);
    }

    /// `auto` at each side of its two thresholds, the batch at its clamps, and every
    /// other setting as given.
    #[test]
    fn auto_algorithm_and_batch_follow_rows_and_smoothness() {
        // Where cd applies: cd up to its row cap whatever the smoothness, then asyb.
        let cd = |rows, l_row| Algorithm::Auto.resolve(rows, 1.0, l_row, false, true).0;
        assert_eq!(cd(10, 1.0), Algorithm::Cd);
        assert_eq!(cd(AUTO_CD_ROWS, 1e3), Algorithm::Cd);
        assert_eq!(cd(AUTO_CD_ROWS + 1, 1.0), Algorithm::Asyb);
        assert_eq!(
            Algorithm::Auto.resolve(10, 1.0, 1.0, true, true).0,
            Algorithm::Asyb
        );
        // Elsewhere fista, by rows and smoothness.
        let pick = |rows, l_row, only| Algorithm::Auto.resolve(rows, 1.0, l_row, only, false).0;
        assert_eq!(pick(AUTO_FISTA_ROWS, 1e3, false), Algorithm::Fista);
        assert_eq!(pick(AUTO_FISTA_ROWS + 1, 1e3, false), Algorithm::Asyb);
        let rows = AUTO_FISTA_GAIN_ROWS;
        assert_eq!(
            pick(rows, AUTO_FISTA_BATCH_GAIN * 0.99, false),
            Algorithm::Fista
        );
        assert_eq!(pick(rows, AUTO_FISTA_BATCH_GAIN, false), Algorithm::Asyb);
        assert_eq!(pick(rows + 1, 1.0, false), Algorithm::Asyb);
        assert_eq!(pick(10, 1.0, true), Algorithm::Asyb);
        for a in [
            Algorithm::Seq,
            Algorithm::Fista,
            Algorithm::AsyFull,
            Algorithm::Cd,
        ] {
            assert_eq!(a.resolve(10, 1.0, 1e3, true, true), (a, String::new()));
        }
        assert_eq!(auto_batch(2.0, 1.0), AUTO_BATCH_MIN);
        assert_eq!(auto_batch(1.0, 99.4), 99);
        assert_eq!(auto_batch(0.0, 1e9), DEFAULT_BATCH);
    }

    #[test]
    fn the_loss_parameter_reaches_the_valid_config() {
        let mut c = TrainConfig {
            loss: LossKind::Huber,
            ..Default::default()
        };
        assert_eq!(
            c.check().unwrap().loss,
            LossSpec::new(LossKind::Huber, Some(1.0))
        );
        c.huber_delta = Some(0.25);
        assert_eq!(c.check().unwrap().loss.param, 0.25);
        let t = TrainConfig::from_toml("loss = \"huber\"\nhuber-delta = 2.5\n", "r.toml".as_ref())
            .unwrap();
        assert_eq!(t.check().unwrap().loss.param, 2.5);
    }

    #[test]
    fn each_bad_field_is_named() {
        type Edit = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("lambda", Box::new(|c| c.lambda = -1.0)),
            ("lambda", Box::new(|c| c.lambda = f64::NAN)),
            ("step", Box::new(|c| c.step = StepSetting::Fixed(-0.1))),
            ("step", Box::new(|c| c.step = StepSetting::Fixed(0.0))),
            ("workers", Box::new(|c| c.workers = Some(0))),
            ("blocks", Box::new(|c| c.blocks = Some(0))),
            ("batch", Box::new(|c| c.batch = Some(0))),
            ("l1-ratio", Box::new(|c| c.l1_ratio = 1.5)),
            ("huber-delta", Box::new(|c| c.huber_delta = Some(1.0))),
            (
                "huber-delta",
                Box::new(|c| {
                    c.loss = LossKind::Huber;
                    c.huber_delta = Some(0.0)
                }),
            ),
            (
                "huber-delta",
                Box::new(|c| {
                    c.loss = LossKind::Huber;
                    c.huber_delta = Some(f64::INFINITY)
                }),
            ),
            ("epochs", Box::new(|c| c.epochs = Some(0.0))),
            (
                "servers",
                Box::new(|c| {
                    c.blocks = Some(2);
                    c.servers = 3
                }),
            ),
            (
                "workers",
                Box::new(|c| {
                    c.algorithm = Algorithm::Seq;
                    c.workers = Some(2)
                }),
            ),
            (
                "step-scaling",
                Box::new(|c| {
                    c.reg = RegKind::L2;
                    c.step_scaling = StepScaling::Columns
                }),
            ),
            (
                "step-scaling",
                Box::new(|c| {
                    c.algorithm = Algorithm::Fista;
                    c.step_scaling = StepScaling::Columns
                }),
            ),
            (
                "step-scaling-floor",
                Box::new(|c| c.step_scaling_floor = 0.0),
            ),
            (
                "algorithm",
                Box::new(|c| {
                    c.algorithm = Algorithm::Cd;
                    c.loss = LossKind::Softmax
                }),
            ),
            (
                "algorithm",
                Box::new(|c| {
                    c.algorithm = Algorithm::Cd;
                    c.reg = RegKind::GroupLasso
                }),
            ),
            (
                "algorithm",
                Box::new(|c| {
                    c.algorithm = Algorithm::Cd;
                    c.alpha = 0.1
                }),
            ),
            (
                "checkpoint-dir",
                Box::new(|c| {
                    c.algorithm = Algorithm::Cd;
                    c.checkpoint_dir = Some("ck".into())
                }),
            ),
            (
                "variance-reduction",
                Box::new(|c| {
                    c.reg = RegKind::GroupLasso;
                    c.variance_reduction = VarianceReduction::Svrg
                }),
            ),
            (
                "variance-reduction",
                Box::new(|c| {
                    c.reg = RegKind::Box;
                    c.variance_reduction = VarianceReduction::Svrg
                }),
            ),
            ("svrg-epochs", Box::new(|c| c.svrg_epochs = Some(-1.0))),
            ("svrg-warmup", Box::new(|c| c.svrg_warmup = Some(f64::NAN))),
            (
                "eval-every-updates",
                Box::new(|c| c.eval_every_updates = Some(0)),
            ),
            (
                "eval-every-epochs",
                Box::new(|c| c.eval_every_epochs = Some(0.0)),
            ),
            (
                "eval-every-epochs",
                Box::new(|c| c.eval_every_epochs = Some(f64::INFINITY)),
            ),
            ("tol", Box::new(|c| c.tol = -1e-3)),
            ("tol", Box::new(|c| c.tol = f64::NAN)),
            (
                "eval-every-secs",
                Box::new(|c| c.eval_every_secs = Some(0.0)),
            ),
        ];
        for (field, set) in cases {
            let mut c = TrainConfig::default();
            set(&mut c);
            let e = c.check().unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid {field}:")), "{e}");
        }
    }

    /// The config's tables of what stays exact agree with the regularizers' own flags,
    /// and `auto` picks SVRG with scaled steps exactly where both are exact.
    #[test]
    fn auto_variance_reduction_and_scaling_follow_the_regularizer() {
        use crate::model::reg::Regularizer;
        fn flags<R: Regularizer>(_: &R) -> (bool, bool) {
            (R::DRIFT, R::DIAGONAL_METRIC)
        }
        for (name, kind) in RegKind::ALL {
            let spec = RegSpec {
                kind,
                lambda: 0.1,
                l1_ratio: 0.5,
                lower: -1.0,
                upper: 1.0,
                group_len: 1,
            };
            let (drift, metric) = crate::with_reg!(spec, |r| flags(&r));
            assert_eq!(exact_with_drift(kind), drift, "{name}");
            assert_eq!(exact_with_scaled_steps(kind), metric, "{name}");
            let c = TrainConfig {
                reg: kind,
                ..Default::default()
            };
            let v = c.check().unwrap();
            assert_eq!((v.svrg, v.scaled_steps), (drift, drift && metric), "{name}");
            let f = TrainConfig {
                reg: kind,
                algorithm: Algorithm::Fista,
                ..Default::default()
            };
            let v = f.check().unwrap();
            assert!(!v.svrg && !v.scaled_steps, "{name}");
        }
        let v = TrainConfig::from_toml(
            "variance-reduction = \"none\"\nstep-scaling = \"columns\"\nsvrg-epochs = 2.5\n",
            "a.toml".as_ref(),
        )
        .unwrap()
        .check()
        .unwrap();
        assert!(!v.svrg && v.scaled_steps);
    }

    #[test]
    fn paths_in_a_config_file_are_relative_to_it() {
        let text = "train = \"a.svm\"\ntest = \"/abs/t.svm\"\nmodel = \"out/m.st\"\nlog = \"-\"\n";
        let c = TrainConfig::from_toml(text, "runs/exp1/run.toml".as_ref()).unwrap();
        assert_eq!(c.train.as_deref(), Some("runs/exp1/a.svm".as_ref()));
        assert_eq!(c.test.as_deref(), Some("/abs/t.svm".as_ref()));
        assert_eq!(c.model.as_deref(), Some("runs/exp1/out/m.st".as_ref()));
        assert_eq!(c.log.as_deref(), Some("-".as_ref()));
        let here = TrainConfig::from_toml(text, "run.toml".as_ref()).unwrap();
        assert_eq!(here.train.as_deref(), Some("a.svm".as_ref()));
    }

    #[test]
    fn toml_round_trip_and_errors_with_position() {
        let text =
            "loss = \"squared\"\nreg = \"elastic-net\"\nlambda = 0.01\nstep = 0.5\nworkers = 3\n";
        let c = TrainConfig::from_toml(text, "run.toml".as_ref()).unwrap();
        assert_eq!(c.loss, LossKind::Squared);
        assert_eq!(c.step, StepSetting::Fixed(0.5));
        assert_eq!(c.workers, Some(3));
        let auto = TrainConfig::from_toml("step = \"auto\"", "a.toml".as_ref()).unwrap();
        assert_eq!(auto.step, StepSetting::Named(StepName::Auto));
        let e = TrainConfig::from_toml("lambda = 1\nloss = \"hinge\"\n", "run.toml".as_ref())
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("run.toml:2:"), "{msg}");
        assert!(msg.contains("hinge"), "{msg}");
        let e = TrainConfig::from_toml("lamda = 1\n", "run.toml".as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("run.toml:1:1:") && e.contains("lamda"), "{e}");
        let e = TrainConfig::from_toml("step = \"fast\"\n", "run.toml".as_ref())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "run.toml:1:8: expected a number or \"auto\"");
    }
}
