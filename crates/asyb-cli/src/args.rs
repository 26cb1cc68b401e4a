//! The command line: a plain mirror of the flags (clap), turned into the library's
//! `TrainConfig` by [`TrainArgs::apply`]. Flags that are not given leave the config
//! (defaults, or the `--config` TOML file) as it is, so flags override the file.

use std::path::PathBuf;

use asyb::config::{
    Algorithm, Backend, CompactFeatures, IndexBaseSetting, Sampling, StepScaling, StepSetting,
    TrainConfig, VarianceReduction,
};
use asyb::model::loss::LossKind;
use asyb::model::reg::RegKind;
use asyb::ps::blocks::PartitionKind;
use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  asyb demo
  asyb gen ctr --rows 1000000 --seed 1 --out train.svm
  asyb gen ctr --rows 100000 --seed 2 --out test.svm
  asyb train --train train.svm --test test.svm --loss logistic --reg l1 --lambda 1e-6 \\
      --model model.safetensors --log run.jsonl --plot run.svg
  asyb train --config run.toml --workers 4
  asyb predict --model model.safetensors --data test.svm --out scores.txt
  asyb eval --model model.safetensors --data test.svm
  asyb convert train.svm --out train.cache
  asyb bench perf --workdir asyb-bench
  asyb bench speedup --train train.svm --loss logistic --reg l1 --lambda 1e-6 \
      --workers 1,2,4 --json speedup.json --plot speedup-runs.svg --speedup-plot speedup.svg
  asyb bench rate --train small.svm --workers 1,2 --json rate.json --plot rate.svg
  asyb convert --from idx train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz \
      --out fashion-train.cache";

/// Train sparse models with AsyB-ProxSGD: asynchronous block-wise proximal SGD on a
/// sharded parameter server.
#[derive(Parser, Debug)]
#[command(name = "asyb", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train on built-in generated click-through-rate data with the default settings
    /// (`auto` picks the algorithm): progress, summary, plot.
    Demo(DemoArgs),
    /// Generate synthetic data in LIBSVM format.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Train a model.
    Train(Box<TrainArgs>),
    /// Score rows with a trained model.
    Predict(PredictArgs),
    /// Evaluate a trained model on labelled data.
    Eval(EvalArgs),
    /// Convert LIBSVM text to the binary cache, which is memory-mapped on load;
    /// `--train` and `--test` accept either form.
    Convert(ConvertArgs),
    /// What a model file holds: its problem, its nonzeros and its largest weights.
    Inspect(InspectArgs),
    /// Benchmarks that check the project's claims on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Simulate W workers (up to hundreds) in virtual time: the real algorithm on the
    /// real data, with modelled compute, server and network times; time to a target
    /// and speedup per worker count.
    Sim(Box<SimArgs>),
}

#[derive(Args, Debug)]
pub struct SimArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Target relative suboptimality (Psi - Psi*) / Psi*.
    #[arg(long, default_value_t = 1e-3)]
    pub target: f64,
    /// Where reference optima are cached (shared with bench speedup).
    #[arg(long, value_name = "FILE", default_value = "asyb-optimum.json")]
    pub optimum_cache: PathBuf,
    /// Measure the compute, push and snapshot times of real one-worker updates on this
    /// machine first, and simulate with them (flags given below override them).
    #[arg(long)]
    pub calibrate: bool,
    /// Real updates the calibration times.
    #[arg(long, default_value_t = 500)]
    pub calibrate_updates: u64,
    /// Median seconds per minibatch gradient on a worker (its pull included).
    #[arg(long)]
    pub compute_secs: Option<f64>,
    /// Log-normal spread of the compute time (sigma of its log); 0: constant.
    #[arg(long)]
    pub compute_sigma: Option<f64>,
    /// Probability that a minibatch is slowed down by a straggler.
    #[arg(long, default_value_t = 0.0)]
    pub straggler_prob: f64,
    /// How many times longer a straggler's minibatch takes.
    #[arg(long, default_value_t = 10.0)]
    pub straggler_slowdown: f64,
    /// Server seconds per pull (paid at each of the --servers S servers, each holding
    /// part of the weights a minibatch reads; a push goes to its block's server).
    #[arg(long)]
    pub pull_service_secs: Option<f64>,
    /// Server seconds per push.
    #[arg(long)]
    pub push_service_secs: Option<f64>,
    /// One-way network latency, seconds. [default: 0]
    #[arg(long, default_value_t = 0.0)]
    pub latency_secs: f64,
    /// Link bandwidth in bytes per second. [default: unlimited]
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// Virtual seconds of an SVRG snapshot (a full pass).
    #[arg(long)]
    pub snapshot_secs: Option<f64>,
    /// Write the results as a JSON array, one object per worker count (the form of
    /// bench speedup, times in virtual seconds).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the speedup figure (SVG); `--plot` writes the convergence figure.
    #[arg(long, value_name = "FILE")]
    pub speedup_plot: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The reference click-through workload end to end (docs/performance.md): generate,
    /// read, cache, train to 1e-3 and 1e-4 with 1 and 2 workers, peak memory; prints the
    /// table.
    Perf(BenchPerfArgs),
    /// Time to a target objective for each worker count: the reference optimum (fista,
    /// computed once and cached), several seeds per count, table, JSON and figures.
    Speedup(Box<BenchSpeedupArgs>),
    /// The paper's rate: for each budget K, a run of K block updates with the constant
    /// step c / sqrt(K) on a nonconvex problem, the average of ||P(x^k)||^2 over the run,
    /// and its log-log slope against K (the theorem: -1/2 or steeper).
    Rate(Box<BenchRateArgs>),
}

#[derive(Args, Debug)]
pub struct BenchRateArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Budgets K (block updates), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,3000,10000,30000,100000"
    )]
    pub budgets: Vec<u64>,
    /// The step is c / sqrt(K); default: the automatic step times sqrt(smallest K), so
    /// that the smallest budget runs at the automatic step and larger ones below it.
    #[arg(long)]
    pub c: Option<f64>,
    /// Evenly spaced evaluations of ||P(x^k)||^2 per run (k = K/m, 2K/m, ..., K).
    #[arg(long, default_value_t = 20)]
    pub points: u64,
    /// Write the fits and the points as JSON (`slope`: the first worker count's fit).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchSpeedupArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Target relative suboptimality (Psi - Psi*) / Psi*.
    #[arg(long, default_value_t = 1e-3)]
    pub target: f64,
    /// Runs per worker count, with seeds seed, seed + 1, ...
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Where reference optima are cached, keyed by the data and the problem.
    #[arg(long, value_name = "FILE", default_value = "asyb-optimum.json")]
    pub optimum_cache: PathBuf,
    /// Write the results as a JSON array, one object per worker count.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the speedup figure (SVG); `--plot` writes the convergence figure.
    #[arg(long, value_name = "FILE")]
    pub speedup_plot: Option<PathBuf>,
    /// Algorithms to compare on the same problem and target, comma-separated (asyb,
    /// asy-full, sync, seq; seq runs with one worker only). [default: --algorithm]
    #[arg(long, value_delimiter = ',', value_parser = parse_algorithm)]
    pub compare: Vec<Algorithm>,
}

#[derive(Args, Debug)]
pub struct BenchPerfArgs {
    /// Folder for the generated data, its cache and the cached optimum (kept, so a second
    /// run skips the generation and the reference solver).
    #[arg(long, value_name = "DIR", default_value = "asyb-bench")]
    pub workdir: PathBuf,
    /// Rows of generated training data.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: usize,
    /// Worker counts to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Vec<u32>,
    /// The algorithm of the training runs (the project's targets are for asyb; on one
    /// machine asy-full, every block per pull, needs half the margins per epoch).
    #[arg(long, value_parser = parse_algorithm, default_value = "asyb")]
    pub algorithm: Algorithm,
    /// The optimum Psi* if known (skips the reference solver).
    #[arg(long)]
    pub psi_star: Option<f64>,
    /// Tolerance of the reference solver (fista).
    #[arg(long, default_value_t = 1e-12)]
    pub fista_tol: f64,
    /// Epochs of training between evaluations (each evaluates every row; a time to a
    /// target is that of the first evaluation at or below it, so it is late by up to
    /// this much, the same share of every run whatever its worker count).
    #[arg(long, default_value_t = 0.025, value_parser = parse_positive)]
    pub eval_every_epochs: f64,
    /// Times each worker count this many times, the counts alternated; the table shows
    /// the median and the range.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Epoch budget of each training run.
    #[arg(long, default_value_t = 30.0)]
    pub max_epochs: f64,
    /// Seed of the training runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip the peak-memory run (a child `asyb train` from the text).
    #[arg(long)]
    pub no_rss: bool,
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// LIBSVM text (plain or compressed), or with `--from idx` the IDX images file.
    pub input: PathBuf,
    /// The file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Input format: libsvm, or idx (MNIST / Fashion-MNIST images with `--labels`).
    #[arg(long, value_parser = ["libsvm", "idx"], default_value = "libsvm")]
    pub from: String,
    /// Output format: cache (binary) or libsvm (text).
    #[arg(long, value_parser = ["cache", "libsvm"], default_value = "cache")]
    pub to: String,
    /// With `--from idx`: the IDX labels file.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Label rows of this class 1 and all others 0 (a binary task from a multi-class
    /// file, e.g. one Fashion-MNIST class against the rest).
    #[arg(long, value_name = "LABEL")]
    pub positive_class: Option<f32>,
    /// Feature index base of the text: auto, 0 or 1.
    #[arg(long, value_parser = parse_index_base, default_value = "auto")]
    pub index_base: IndexBaseSetting,
    /// Number of features (default: from the data).
    #[arg(long)]
    pub features: Option<usize>,
    /// Skip malformed lines (counted and reported) instead of failing.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Store the rows with their features renumbered most frequent first, and the map
    /// to the original ids, so that a training run that compacts features (`train
    /// --compact-features`, whose default applies from 2^22 nonzeros or more than 2^24
    /// features) uses the mapped rows without a copy: auto (where that default
    /// applies), on, off. Readers that want the original ids get them back.
    #[arg(long, value_parser = parse_compact_features, default_value = "auto")]
    pub compact_features: CompactFeatures,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Training rows to generate.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The algorithm, as `train --algorithm` (`asyb` shows the paper's asynchronous
    /// workers on these rows, where `auto` picks `cd`).
    #[arg(long, value_parser = parse_algorithm, default_value = "auto")]
    pub algorithm: Algorithm,
    /// Where to write the convergence plot.
    #[arg(long, default_value = "asyb-demo.svg")]
    pub plot: PathBuf,
    /// Seed of the generated data and of the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum GenCommand {
    /// Click-through-rate-like data: categorical fields hashed into d columns, labels from
    /// a planted sparse logistic model.
    Ctr(GenCtrArgs),
    /// Sparse linear regression: a planted sparse model plus Gaussian noise.
    Regression(GenRegressionArgs),
}

#[derive(Args, Debug)]
pub struct GenCtrArgs {
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Hashed columns d.
    #[arg(long, default_value_t = 1 << 20)]
    pub features: usize,
    /// Categorical fields (one active feature each).
    #[arg(long, default_value_t = 15)]
    pub fields: usize,
    /// Distinct values of each field.
    #[arg(long, default_value_t = 100_000)]
    pub values_per_field: usize,
    /// Zipf exponent of the value frequencies.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Expected fraction of positive rows.
    #[arg(long, default_value_t = 0.17)]
    pub positive_rate: f64,
    /// Seed of the rows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seed of the planted model and the hashing (shared by train and test files).
    #[arg(long, default_value_t = 42)]
    pub model_seed: u64,
    /// Output file (LIBSVM text, 1-based indices, labels 0/1).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct GenRegressionArgs {
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 1 << 16)]
    pub features: usize,
    /// Nonzeros per row.
    #[arg(long, default_value_t = 20)]
    pub nnz_per_row: usize,
    /// Nonzero coefficients of the planted model.
    #[arg(long, default_value_t = 100)]
    pub support: usize,
    /// Standard deviation of the Gaussian noise.
    #[arg(long, default_value_t = 0.1)]
    pub noise: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 42)]
    pub model_seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err(format!("{s} is not a positive number")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_loss(s: &str) -> Result<LossKind, String> {
    s.parse()
}
fn parse_reg(s: &str) -> Result<RegKind, String> {
    s.parse()
}
fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse()
}
fn parse_variance_reduction(s: &str) -> Result<VarianceReduction, String> {
    s.parse()
}
fn parse_step_scaling(s: &str) -> Result<StepScaling, String> {
    s.parse()
}
fn parse_compact_features(s: &str) -> Result<CompactFeatures, String> {
    s.parse()
}
fn parse_step(s: &str) -> Result<StepSetting, String> {
    s.parse()
}
fn parse_partition(s: &str) -> Result<PartitionKind, String> {
    match s {
        "interleaved" => Ok(PartitionKind::Interleaved),
        "contiguous" => Ok(PartitionKind::Contiguous),
        "hashed" => Ok(PartitionKind::Hashed),
        _ => Err(format!(
            "unknown partition '{s}' (expected one of: interleaved, contiguous, hashed)"
        )),
    }
}
fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "local" => Ok(Backend::Local),
        "mpi" => Ok(Backend::Mpi),
        _ => Err(format!(
            "unknown backend '{s}' (expected one of: local, mpi)"
        )),
    }
}
fn parse_sampling(s: &str) -> Result<Sampling, String> {
    match s {
        "shuffle" => Ok(Sampling::Shuffle),
        "iid" => Ok(Sampling::Iid),
        _ => Err(format!(
            "unknown sampling '{s}' (expected one of: shuffle, iid)"
        )),
    }
}
/// The losses, from the library's list.
fn loss_help() -> String {
    let names: Vec<&str> = LossKind::ALL.iter().map(|(n, _)| *n).collect();
    names.join(", ")
}

/// One worker count, or a list of them for `bench speedup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCounts(pub Vec<usize>);

fn parse_workers(s: &str) -> Result<WorkerCounts, String> {
    let counts: Result<Vec<usize>, _> = s.split(',').map(|p| p.trim().parse::<usize>()).collect();
    match counts {
        Ok(v) if !v.is_empty() => Ok(WorkerCounts(v)),
        _ => Err(format!(
            "'{s}': expected a worker count or a comma-separated list of counts"
        )),
    }
}

fn parse_index_base(s: &str) -> Result<IndexBaseSetting, String> {
    match s {
        "auto" => Ok(IndexBaseSetting::Auto),
        "0" => Ok(IndexBaseSetting::Zero),
        "1" => Ok(IndexBaseSetting::One),
        _ => Err(format!(
            "unknown index base '{s}' (expected one of: auto, 0, 1)"
        )),
    }
}

/// Flags of `asyb train`; each mirrors the `TrainConfig` field of the same name (see
/// `docs/defaults.md` for the defaults and why).
#[derive(Args, Debug, Default)]
#[command(after_help = EXAMPLES)]
pub struct TrainArgs {
    /// TOML file with any of the settings below (kebab-case keys); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Training data: LIBSVM text (plain or .gz/.bz2/.xz/.zst) or a cache from `asyb convert`.
    #[arg(long, value_name = "FILE")]
    pub train: Option<PathBuf>,
    /// Held-out data for test metrics at every evaluation.
    #[arg(long, value_name = "FILE")]
    pub test: Option<PathBuf>,
    /// Weights of the training rows: one number (>= 0) per line, in the training file's
    /// order; a row of weight 2 counts as two copies of it.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    #[arg(long, value_parser = parse_loss, help = loss_help())]
    pub loss: Option<LossKind>,
    /// Huber loss: where it turns from quadratic to linear, in units of the target.
    #[arg(long)]
    pub huber_delta: Option<f64>,
    /// none, l1, l2, elastic-net, nonneg, box or group-lasso.
    #[arg(long, value_parser = parse_reg)]
    pub reg: Option<RegKind>,
    /// Regularization weight: Psi = mean loss + lambda * h(x).
    #[arg(long, allow_hyphen_values = true)]
    pub lambda: Option<f64>,
    /// Elastic net: weight of the L1 part in [0, 1].
    #[arg(long, allow_hyphen_values = true)]
    pub l1_ratio: Option<f64>,
    /// Box constraint: lower bound.
    #[arg(long, allow_hyphen_values = true)]
    pub lower: Option<f64>,
    /// Box constraint: upper bound.
    #[arg(long, allow_hyphen_values = true)]
    pub upper: Option<f64>,
    /// Group lasso: consecutive features per group.
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Weight of the smooth nonconvex term alpha * sum x^2/(1+x^2).
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    /// No intercept.
    #[arg(long)]
    pub no_bias: bool,
    /// Number of features (default: from the data).
    #[arg(long)]
    pub features: Option<usize>,
    /// Hold only the features that occur in the training data, numbered most frequent
    /// first (exact: the others stay at 0): auto (on from 2^22 nonzeros, or for more
    /// than 2^24 coordinates with at most half of the features used), on, off.
    #[arg(long, value_parser = parse_compact_features)]
    pub compact_features: Option<CompactFeatures>,
    /// Feature index base of the files: auto, 0 or 1.
    #[arg(long, value_parser = parse_index_base)]
    pub index_base: Option<IndexBaseSetting>,
    /// Skip malformed lines (counted and reported) instead of failing.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// auto (asyb, or on problems where a full-data method is faster cd, else fista),
    /// asyb, asy-full, sync, seq, fista or cd.
    #[arg(long, value_parser = parse_algorithm)]
    pub algorithm: Option<Algorithm>,
    /// Worker threads (`asyb bench speedup`: a comma-separated list). [default: the
    /// number of cores]
    #[arg(long, value_parser = parse_workers)]
    pub workers: Option<WorkerCounts>,
    /// Parameter blocks M. [default: max(2, workers, servers)]
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Block partition: interleaved (feature g in block g mod M), contiguous or hashed.
    #[arg(long, value_parser = parse_partition)]
    pub partition: Option<PartitionKind>,
    /// Shards the blocks are spread over; with --backend mpi, ranks 0..S-1 serve them
    /// and the other ranks are workers; in asyb sim, the simulated servers.
    #[arg(long)]
    pub servers: Option<usize>,
    /// local (threads) or mpi (launched by mpirun or srun; needs an asyb built with
    /// --features mpi).
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<Backend>,
    /// With --backend mpi: every rank serves its share of the blocks and runs a worker.
    #[arg(long)]
    pub colocate: bool,
    /// Minibatch size N. [default: automatic, L_row / L_f rounded, from 16 to 256; 256
    /// under MPI]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Step size eta, or 'auto' (from the data's smoothness).
    #[arg(long, value_parser = parse_step, allow_hyphen_values = true)]
    pub step: Option<StepSetting>,
    /// Decay the step as eta0 / sqrt(1 + k / t0).
    #[arg(long)]
    pub step_decay: bool,
    /// t0 of the decaying step, in block updates. [default: one epoch]
    #[arg(long, allow_hyphen_values = true)]
    pub step_t0: Option<f64>,
    /// Variance reduction: auto (svrg for reg none or l1), none (plain SGD, the paper's),
    /// svrg.
    #[arg(long, value_parser = parse_variance_reduction)]
    pub variance_reduction: Option<VarianceReduction>,
    /// SVRG: epochs between full-gradient snapshots. [default: 1, or 2^19 rows per
    /// block when that comes sooner]
    #[arg(long, allow_hyphen_values = true)]
    pub svrg_epochs: Option<f64>,
    /// SVRG: epochs of plain proximal SGD before the first snapshot (0: the first
    /// snapshot at the start). [default: a tenth of svrg-epochs when starting from the
    /// zero model, else 0]
    #[arg(long, allow_hyphen_values = true)]
    pub svrg_warmup: Option<f64>,
    /// Per-coordinate steps: auto (columns with svrg), none, columns (eta scaled by
    /// (n + r0) / (column sum of squares + r0)).
    #[arg(long, value_parser = parse_step_scaling)]
    pub step_scaling: Option<StepScaling>,
    /// r0 of column step scaling, in rows.
    #[arg(long, allow_hyphen_values = true)]
    pub step_scaling_floor: Option<f64>,
    /// Minibatch sampling: shuffle (passes) or iid (with replacement).
    #[arg(long, value_parser = parse_sampling)]
    pub sampling: Option<Sampling>,
    /// Reject pushes computed on a model more than this many updates old.
    #[arg(long)]
    pub max_delay: Option<u64>,
    /// Passes over the data. [default: at most 100 when no other budget is given; the run
    /// stops sooner at --tol]
    #[arg(long, allow_hyphen_values = true)]
    pub epochs: Option<f64>,
    /// Stop after this many block updates.
    #[arg(long)]
    pub max_updates: Option<u64>,
    /// Stop after this many seconds of training.
    #[arg(long, allow_hyphen_values = true)]
    pub max_seconds: Option<f64>,
    /// Stop once the monitored training objective is at or below this.
    #[arg(long, allow_hyphen_values = true)]
    pub target_objective: Option<f64>,
    /// Stop at convergence: once ||P(x)|| <= tol ||P(0)|| at an evaluation (P: the
    /// prox-gradient mapping; LIBLINEAR's -e measure); 0 turns it off.
    #[arg(long, allow_hyphen_values = true)]
    pub tol: Option<f64>,
    /// Seconds of training between evaluations. [default: automatic, ten times the last
    /// evaluation's time, from 0.001 to 1]
    #[arg(long, allow_hyphen_values = true)]
    pub eval_every: Option<f64>,
    /// Also evaluate every this many updates.
    #[arg(long)]
    pub eval_every_updates: Option<u64>,
    /// Also evaluate every this many epochs (e.g. 0.05).
    #[arg(long)]
    pub eval_every_epochs: Option<f64>,
    /// Rows of the training set the monitored objective uses (a fixed stride subsample
    /// beyond; `tol` then measures the subsample's objective, which may never meet it).
    /// [default: every row]
    #[arg(long)]
    pub eval_rows: Option<usize>,
    /// Threads for evaluation. [default: the number of cores]
    #[arg(long)]
    pub eval_threads: Option<usize>,
    /// Seed of every random choice.
    #[arg(long)]
    pub seed: Option<u64>,
    /// FISTA: stop when ||P||^2 falls below this times its start value.
    #[arg(long, allow_hyphen_values = true)]
    pub fista_tol: Option<f64>,
    /// FISTA: iteration budget.
    #[arg(long)]
    pub fista_max_iters: Option<usize>,
    /// Write the final model (safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Write the run info and every evaluation as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Write convergence curves (SVG).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Start from this model file instead of zero.
    #[arg(long, value_name = "FILE")]
    pub init_model: Option<PathBuf>,
    /// Write checkpoints (model, step, samples, training time; atomic, checksummed, the
    /// newest two kept) into this directory, every `--checkpoint-every` seconds of
    /// training and at the end.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Seconds of training between checkpoints.
    #[arg(long, value_name = "SECONDS")]
    pub checkpoint_every: Option<f64>,
    /// Resume from the newest checkpoint in this directory (same data and problem; the
    /// budgets count from the start of the first part).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Reference optimum Psi*: the summary and plot show Psi - Psi*.
    #[arg(long, allow_hyphen_values = true)]
    pub psi_star: Option<f64>,
    /// No progress output; the summary only.
    #[arg(long, short)]
    pub quiet: bool,
}

impl TrainArgs {
    /// Overrides the fields of `cfg` that were given as flags.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        macro_rules! set {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f {
                    cfg.$f = v.clone();
                }
            )*};
        }
        macro_rules! set_some {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f {
                    cfg.$f = Some(v.clone());
                }
            )*};
        }
        set!(
            loss,
            reg,
            lambda,
            l1_ratio,
            lower,
            upper,
            group_size,
            alpha,
            compact_features,
            index_base,
            algorithm,
            partition,
            servers,
            backend,
            step,
            variance_reduction,
            step_scaling,
            step_scaling_floor,
            sampling,
            seed,
            fista_tol,
            fista_max_iters,
            tol
        );
        set_some!(
            huber_delta,
            svrg_epochs,
            svrg_warmup,
            train,
            test,
            weights,
            features,
            blocks,
            batch,
            step_t0,
            max_delay,
            epochs,
            max_updates,
            max_seconds,
            target_objective,
            eval_every_updates,
            eval_every_epochs,
            eval_rows,
            eval_threads,
            model,
            log,
            plot,
            init_model,
            checkpoint_dir,
            resume
        );
        if let Some(v) = self.checkpoint_every {
            cfg.checkpoint_every_secs = v;
        }
        if let Some(WorkerCounts(w)) = &self.workers {
            // A list is for `bench speedup`, which sets each count itself.
            if let [one] = w[..] {
                cfg.workers = Some(one);
            }
        }
        if let Some(v) = self.eval_every {
            cfg.eval_every_secs = Some(v);
        }
        if self.no_bias {
            cfg.bias = false;
        }
        if self.skip_bad_lines {
            cfg.skip_bad_lines = true;
        }
        if self.step_decay {
            cfg.step_decay = true;
        }
        if self.colocate {
            cfg.colocate = true;
        }
    }
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Model file written by `asyb train --model`.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Rows to score (LIBSVM; labels are read and ignored).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Output file, one line per row (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print margins instead of probabilities or labels (softmax: K per line).
    #[arg(long, conflicts_with = "proba")]
    pub raw: bool,
    /// Print class probabilities (softmax: K per line, in the order of the class
    /// labels, ascending; logistic: P(y = +1), as by default).
    #[arg(long)]
    pub proba: bool,
    /// Feature index base of the file: 0 or 1 (default: the training file's).
    #[arg(long, value_parser = parse_index_base)]
    pub index_base: Option<IndexBaseSetting>,
    /// Skip malformed lines (counted and reported) instead of failing.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model file written by `asyb train --model`.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// How many of the largest weights (by magnitude) to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file written by `asyb train --model`.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Labelled rows (LIBSVM).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Feature index base of the file: 0 or 1 (default: the training file's).
    #[arg(long, value_parser = parse_index_base)]
    pub index_base: Option<IndexBaseSetting>,
    /// Skip malformed lines (counted and reported) instead of failing.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

/// Flags whose config key has another name (the key says its unit).
const KEY_OF_FLAG: [(&str, &str); 2] = [
    ("eval-every", "eval-every-secs"),
    ("checkpoint-every", "checkpoint-every-secs"),
];

/// A default as `--help` shows it: integers without a decimal point, small numbers in
/// exponent form.
fn shown_number(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() < 1e-3 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// The defaults of the flags that mirror a config key, by flag name: the values of
/// `TrainConfig::default()` (numbers and names; an unset option has a default that
/// depends on the run, described in the flag's own text) and the losses' parameters.
pub fn config_defaults() -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let value = serde_json::to_value(TrainConfig::default()).expect("the config serializes");
    for (key, v) in value.as_object().expect("the config is a table") {
        let shown = match v {
            serde_json::Value::Number(n) => shown_number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => s.clone(),
            _ => continue,
        };
        let flag = KEY_OF_FLAG
            .iter()
            .find(|(_, k)| k == key)
            .map_or(key.as_str(), |(f, _)| f);
        out.insert(flag.to_string(), shown);
    }
    for (_, kind) in LossKind::ALL {
        if let Some(p) = kind.info().param {
            out.insert(p.name.to_string(), shown_number(p.default));
        }
    }
    out
}

/// `cmd` and its subcommands with `[default: ...]` from [`config_defaults`] appended to
/// the help of each flag that mirrors a config key, in the commands that take the train
/// flags (those with `--config`; elsewhere a flag of the same name means something of its
/// own, as `predict --index-base`).
fn with_config_defaults(
    mut cmd: clap::Command,
    defaults: &std::collections::BTreeMap<String, String>,
) -> clap::Command {
    let takes_train_flags = cmd.get_arguments().any(|a| a.get_long() == Some("config"));
    let ids: Vec<(clap::Id, String)> = cmd
        .get_arguments()
        .filter(|a| takes_train_flags && a.get_default_values().is_empty())
        .filter_map(|a| Some((a.get_id().clone(), defaults.get(a.get_long()?)?.clone())))
        .collect();
    for (id, value) in ids {
        cmd = cmd.mut_arg(id, |a| {
            let suffix = format!("[default: {value}]");
            let help = a.get_help().map(|h| format!("{h} {suffix}"));
            let long = a.get_long_help().map(|h| format!("{h} {suffix}"));
            let a = a.help(help.unwrap_or(suffix));
            match long {
                Some(l) => a.long_help(l),
                None => a,
            }
        });
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for s in subs {
        cmd = cmd.mut_subcommand(s, |c| with_config_defaults(c, defaults));
    }
    cmd
}

/// The command line, its defaults in `--help` taken from the library's config (they
/// cannot drift from it).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    with_config_defaults(Cli::command(), &config_defaults())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every subcommand says its default at most once, and a flag that
    /// mirrors a config key says the config's default; the train flags cover every key
    /// that has a value by default.
    #[test]
    fn help_defaults_are_the_configs() {
        let defaults = config_defaults();
        assert_eq!(defaults["lambda"], "1e-6");
        assert_eq!(defaults["tol"], "3e-4");
        // Automatic: no number to show, and the help says what it does instead.
        assert_eq!(defaults.get("eval-every"), None);
        assert_eq!(defaults["huber-delta"], "1");
        assert_eq!(defaults["loss"], "logistic");
        fn walk(cmd: &clap::Command, defaults: &std::collections::BTreeMap<String, String>) {
            for a in cmd.get_arguments() {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                let said = help.matches("[default:").count();
                assert!(said <= 1, "{} --{:?}: {help}", cmd.get_name(), a.get_long());
                let takes = cmd.get_arguments().any(|a| a.get_long() == Some("config"));
                if let Some(v) = a.get_long().and_then(|l| defaults.get(l)) {
                    if takes && a.get_default_values().is_empty() {
                        assert!(
                            help.ends_with(&format!("[default: {v}]")),
                            "{} --{:?}: {help}",
                            cmd.get_name(),
                            a.get_long()
                        );
                    }
                }
            }
            for s in cmd.get_subcommands() {
                walk(s, defaults);
            }
        }
        let cmd = command();
        walk(&cmd, &defaults);
        let predict = cmd.find_subcommand("predict").expect("predict");
        let base = predict
            .get_arguments()
            .find(|a| a.get_long() == Some("index-base"));
        let help = base.and_then(|a| a.get_help()).map(|h| h.to_string());
        assert!(!help.unwrap_or_default().contains("[default: auto]"));
        let train = cmd.find_subcommand("train").expect("train");
        for flag in defaults.keys() {
            assert!(
                train.get_arguments().any(|a| a.get_long() == Some(flag)),
                "config key {flag} has no train flag"
            );
        }
    }

    #[test]
    fn defaults_are_shown_as_written() {
        assert_eq!(shown_number(1e-6), "1e-6");
        assert_eq!(shown_number(1e-10), "1e-10");
        assert_eq!(shown_number(0.5), "0.5");
        assert_eq!(shown_number(-1.0), "-1");
        assert_eq!(shown_number(1_000_000.0), "1000000");
    }
}
