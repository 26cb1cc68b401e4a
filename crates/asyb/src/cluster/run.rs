//! The MPI run. Rank 0's main thread is the coordinator; every rank (rank 0 in a
//! thread of its own) runs an agent that answers the coordinator's commands, one at a
//! time, in this order:
//!
//! 1. `INFO`: a worker rank reads its part of the training data
//!    ([`crate::data::part`]) and reports rows, nonzeros, features and label form; a
//!    rank that fails reports the error, and the coordinator ends the run on every rank
//!    with that error (one line, on rank 0).
//! 2. `LAYOUT`: the agreed feature count, rows and blocks; with per-column steps each
//!    worker answers its column sums of squares, which the coordinator adds up.
//! 3. `METRIC`: the column metric; with `--step auto` each worker answers the step its
//!    part gives and the coordinator keeps the smallest.
//! 4. `START`: server ranks build their [`Shard`] and serve requests in a thread.
//! 5. `WORK`: worker ranks start the worker loop ([`worker::run_async`]) with an
//!    [`MpiTransport`]. While they train, the coordinator polls the servers' step
//!    counters; to evaluate (or take an SVRG snapshot) it `PAUSE`s the workers,
//!    gathers the model from the servers, sends it to every agent (`EVAL` / `SNAP`),
//!    which compute their rows' loss and gradient (and margins), adds the answers up
//!    weighted by rows, and `RESUME`s.
//! 6. `STOP`, a final evaluation, the servers' delay statistics, `EXIT`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::RoleMap;
use crate::checkpoint;
use crate::config::{Algorithm, IndexBaseSetting, StepSetting, ValidConfig, DEFAULT_BATCH};
use crate::data::libsvm::ReadOptions;
use crate::data::part::{read_part, PartSource};
use crate::data::Dataset;
use crate::driver::{
    Backend, Checkpointing, Counts, Driver, Evaluator, ModelAccess, SnapshotSchedule, StopRules,
    Stopped,
};
use crate::model::loss::Loss;
use crate::model::objective::{AnyReg, Objective};
use crate::model::reg::RegSpec;
use crate::model::Layout;
use crate::monitor::{EvalRecord, Observe, RunInfo};
use crate::problem::read_options;
use crate::ps::blocks::{BlockPartition, ShardId};
use crate::ps::shard::DelaySummary;
use crate::ps::shard::{Clock, DelayStats, Shard, ShardApi, ShardSettings, StepSchedule};
use crate::ps::transport::mpi::{
    recv, send, serve, set_local_server, tag, try_recv, LocalServer, MpiTransport, RemoteShard,
    Wait,
};
use crate::ps::transport::wire::{Dec, Enc};
use crate::ps::worker::{self, Control, Counters, WorkerContext};
use crate::train::{self, KeptModel, Monitor, RunSummary, Traffic, WorkerFailure};
use crate::{with_loss, with_reg, Error, Result};

/// Commands (coordinator to agents) and their answers' kinds.
mod cmd {
    pub const INFO: u8 = 1;
    pub const LAYOUT: u8 = 2;
    pub const METRIC: u8 = 3;
    pub const START: u8 = 4;
    pub const WORK: u8 = 5;
    pub const PAUSE: u8 = 6;
    pub const RESUME: u8 = 7;
    pub const EVAL: u8 = 8;
    pub const SNAP: u8 = 9;
    pub const STOP: u8 = 10;
    pub const EXIT: u8 = 11;
    /// An answer that is an error.
    pub const FAILED: u8 = 255;
    /// A note: the rank's worker exited.
    pub const EXITED: u8 = 20;
}

/// MPI, initialized for threads.
pub struct Cluster {
    _universe: mpi::environment::Universe,
    rank: usize,
    size: usize,
    on_fatal: fn(&str),
}

/// Open MPI sends shared-memory messages above 4 KB by a rendezvous, a handshake that
/// waits for the receiver's next probe: a pull's reply is larger, and the handshake
/// halved the update rate of two colocated ranks here. The `asyb` binary sets this
/// variable to this value before [`Cluster::init`] unless the user set it (the library
/// sets no environment variable).
pub const OMPI_EAGER_LIMIT: (&str, &str) = ("OMPI_MCA_btl_vader_eager_limit", "65536");

/// What rank 0 gets from a run besides the summary.
pub struct ClusterRun {
    pub summary: RunSummary,
    /// The training files' labels for the two classes (`[-1, 1]` or `[0, 1]`).
    pub class_labels: Vec<f32>,
    /// Whether the training text was read as 1-based.
    pub index_base_one: bool,
}

impl Cluster {
    /// Initializes MPI with full thread support (every rank runs several threads that
    /// send and receive). `on_fatal` reports the failure of this rank's server, which
    /// then aborts the whole job (its blocks are gone): the library prints nothing.
    pub fn init(on_fatal: fn(&str)) -> Result<Cluster> {
        use mpi::topology::Communicator;
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| Error::config("backend", "MPI was already initialized"))?;
        if level < mpi::Threading::Multiple {
            return Err(Error::config(
                "backend",
                format!("this MPI library offers thread level {level:?}; asyb needs Multiple"),
            ));
        }
        let world = universe.world();
        Ok(Cluster {
            rank: world.rank() as usize,
            size: world.size() as usize,
            _universe: universe,
            on_fatal,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The roles of this launch; the same answer (and the same error) on every rank.
    pub fn roles(&self, cfg: &ValidConfig) -> Result<RoleMap> {
        RoleMap::new(self.size, cfg.raw.servers, cfg.raw.colocate)
    }

    /// Runs the training job of `cfg` on every rank. Rank 0 returns the run (its
    /// observers see the same events as in process); the other ranks return `None`.
    pub fn train(
        &self,
        cfg: &ValidConfig,
        roles: &RoleMap,
        observers: &mut [&mut dyn Observe],
        interrupt: Option<Arc<AtomicBool>>,
    ) -> Result<Option<ClusterRun>> {
        if self.rank != 0 {
            agent(cfg, roles, self.rank, self.on_fatal)?;
            return Ok(None);
        }
        std::thread::scope(|s| {
            let a = s.spawn(|| agent(cfg, roles, 0, self.on_fatal));
            let r = with_loss!(cfg.loss, |l| Coordinator {
                cfg,
                roles,
                ranks: self.size,
                loss: l,
                interrupt: interrupt.clone(),
                servers_started: false,
                workers_started: false,
            }
            .run(observers));
            let a = a
                .join()
                .unwrap_or_else(|p| Err(runtime(train::panic_message(p.as_ref()))));
            match (r, a) {
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                (Ok(run), Ok(())) => Ok(Some(run)),
            }
        })
    }
}

fn runtime(reason: String) -> Error {
    Error::Runtime {
        role: "rank",
        id: 0,
        reason,
    }
}

/// The layout, the regularizer as the shards apply it, and the block partition of a
/// run: one function, so that the coordinator and every agent build the same.
fn plan_blocks(
    cfg: &ValidConfig,
    roles: &RoleMap,
    features: usize,
    blocks: usize,
) -> (Layout, RegSpec, BlockPartition) {
    let layout = Layout {
        features,
        classes: 1,
        bias: cfg.raw.bias,
    };
    let (reg, group_rows) = train::reg_spec(cfg, 1);
    let partition = BlockPartition::new(
        layout,
        group_rows,
        blocks,
        roles.servers,
        cfg.raw.partition,
        cfg.raw.seed,
    );
    (layout, reg, partition)
}

/// The test data of `cfg`, numbered like the training data (`index_base_one`), with
/// normalized labels.
fn read_test(cfg: &ValidConfig, index_base_one: bool) -> Result<Option<Dataset>> {
    let Some(p) = &cfg.raw.test else {
        return Ok(None);
    };
    let opts = ReadOptions {
        features: None,
        ..read_options(cfg)
    };
    let (mut t, _) = crate::data::read_following(p, &opts, index_base_one)?;
    if cfg.raw.loss.is_binary() {
        crate::problem::normalize_binary(&mut t);
    }
    Ok(Some(t))
}

/// What names an MPI run's problem for its checkpoints: the parts' fingerprints, the
/// rows, the objective.
fn checkpoint_key(
    raw: &crate::config::TrainConfig,
    fingerprints: &[u64],
    n: usize,
    layout: Layout,
) -> String {
    format!(
        "mpi data {:016x} ({n} rows in {} parts) | {}",
        fingerprints
            .iter()
            .fold(0u64, |h, &f| crate::ps::blocks::splitmix64(h ^ f)),
        fingerprints.len(),
        train::objective_key(raw, layout)
    )
}

/// The next command for this rank's agent.
fn next_command() -> Vec<u8> {
    recv(Some(0), tag::COMMAND, Wait::Command).0
}

fn answer(msg: Enc) {
    send(0, tag::ANSWER, &msg.bytes());
}

fn answer_error(e: &Error) {
    answer(
        Enc::new(cmd::FAILED, 0)
            .u8(u8::from(e.is_user_input()))
            .str(&e.to_string()),
    );
}

/// A worker rank's part of the data and what was read.
struct Part {
    data: Dataset,
    /// The rows of its share of the monitored objective, when not all of them.
    eval: Option<Vec<u32>>,
}

/// The next command if it is `want`; `None` for any other (the coordinator ended the
/// run early, as with EXIT).
fn next_of(want: u8) -> Result<Option<Vec<u8>>> {
    let msg = next_command();
    let (kind, _) = Dec::new(&msg)?;
    Ok((kind == want).then_some(msg))
}

/// A rank's answer to INFO: its part of the training data read (a worker rank), its size,
/// index base and fingerprint sent to the coordinator, or the error that kept it from
/// reading it.
fn answer_info(cfg: &ValidConfig, roles: &RoleMap, worker_ix: Option<usize>) -> Option<Part> {
    let raw = &cfg.raw;
    let Some(w) = worker_ix else {
        answer(
            Enc::new(cmd::INFO, 64)
                .u64(0)
                .u64(0)
                .u64(0)
                .u8(1)
                .u8(0)
                .u64(0)
                .str(""),
        );
        return None;
    };
    let path = raw
        .train
        .as_deref()
        .ok_or_else(|| Error::config("train", "no training data given"));
    match path.and_then(|p| read_part(p, w, roles.workers(), &read_options(cfg))) {
        Ok((mut ds, rep, src)) => {
            let has_zero = ds.labels.contains(&0.0);
            if raw.loss.is_binary() {
                crate::problem::normalize_binary(&mut ds);
            }
            let source = match src {
                PartSource::File(p) => p.display().to_string(),
                PartSource::Bytes { start, end } => format!("bytes {start}..{end}"),
                PartSource::Rows { lo, hi } => format!("rows {lo}..{hi}"),
            };
            answer(
                Enc::new(cmd::INFO, 64)
                    .u64(ds.rows() as u64)
                    .u64(ds.nnz() as u64)
                    .u64(ds.features as u64)
                    .u8(u8::from(rep.index_base_one))
                    .u8(u8::from(has_zero))
                    .u64(ds.fingerprint())
                    .str(&source),
            );
            Some(Part {
                data: ds,
                eval: None,
            })
        }
        Err(e) => {
            answer_error(&e);
            None
        }
    }
}

/// What a rank knows of the run after LAYOUT and METRIC.
struct AgentPlan {
    features: usize,
    blocks: usize,
    layout: Layout,
    reg: RegSpec,
    partition: BlockPartition,
    /// The per-column step metric (scaled steps), if any.
    metric: Option<Vec<f64>>,
}

/// A rank's answers to LAYOUT (its column sums of squares, for scaled steps) and
/// METRIC (its automatic step); `None` if the coordinator ended the run first.
fn answer_plan(
    cfg: &ValidConfig,
    roles: &RoleMap,
    part: &mut Option<Part>,
) -> Result<Option<AgentPlan>> {
    let raw = &cfg.raw;
    let Some(msg) = next_of(cmd::LAYOUT)? else {
        return Ok(None);
    };
    let (_, mut d) = Dec::new(&msg)?;
    let features = d.u64()? as usize;
    let _rows_in_all = d.u64()?;
    let blocks = d.u64()? as usize;
    let (layout, reg, partition) = plan_blocks(cfg, roles, features, blocks);
    if let Some(p) = part.as_mut() {
        p.data.features = features;
        if let Some(all) = raw.eval_rows {
            let share = (all / roles.workers()).max(1);
            p.eval = (p.data.rows() > share).then(|| train::stride_rows(p.data.rows(), share));
        }
    }
    let sums = match (&*part, cfg.scaled_steps) {
        (Some(p), true) => train::column_sq_sums(&p.data, layout),
        _ => Vec::new(),
    };
    answer(Enc::new(cmd::LAYOUT, 8 + sums.len() * 8).f64s(&sums));
    let Some(msg) = next_of(cmd::METRIC)? else {
        return Ok(None);
    };
    let (_, mut d) = Dec::new(&msg)?;
    let metric = d.f64s()?;
    let metric = (!metric.is_empty()).then_some(metric);
    let (eta, note) = match (&*part, raw.step) {
        (Some(p), StepSetting::Named(_)) => train::Smoothness::of(
            raw.loss,
            &p.data,
            layout,
            metric.as_deref().map(|d| (d, sums.as_slice())),
        )
        .step(
            raw.loss,
            p.data.rows(),
            raw.alpha,
            raw.batch.unwrap_or(DEFAULT_BATCH),
        ),
        _ => (f64::NAN, String::new()),
    };
    answer(Enc::new(cmd::METRIC, 16 + note.len()).f64(eta).str(&note));
    Ok(Some(AgentPlan {
        features,
        blocks,
        layout,
        reg,
        partition,
        metric,
    }))
}

/// This rank's server for its share of the blocks (a server rank), started at update
/// `start_k` with the step of START.
fn start_shard(
    cfg: &ValidConfig,
    server_ix: Option<usize>,
    plan: &AgentPlan,
    schedule: StepSchedule,
    clock: &Arc<Clock>,
    stats: &Arc<DelayStats>,
) -> Option<Arc<dyn ShardApi>> {
    let settings = ShardSettings {
        max_delay: cfg.raw.max_delay,
        schedule,
        alpha: cfg.raw.alpha,
        drift: cfg.svrg,
    };
    let s = server_ix?;
    let shard = with_reg!(plan.reg, |r| Arc::new(Shard::with_metric(
        ShardId(s as u32),
        &plan.partition,
        r,
        settings,
        clock.clone(),
        stats.clone(),
        plan.metric.as_deref(),
    )) as Arc<dyn ShardApi>);
    set_local_server(Some(LocalServer {
        id: s,
        shard: shard.clone(),
        clock: clock.clone(),
        stats: stats.clone(),
    }));
    Some(shard)
}

/// One rank's agent: see the module doc. Returns when told to exit. `on_fatal` reports
/// a server failure, after which the whole job is aborted.
fn agent(cfg: &ValidConfig, roles: &RoleMap, rank: usize, on_fatal: fn(&str)) -> Result<()> {
    let raw = &cfg.raw;
    let worker_ix = roles.worker_of(rank);
    let server_ix = roles.server_of(rank);
    if next_of(cmd::INFO)?.is_none() {
        return Ok(());
    }
    let mut part = answer_info(cfg, roles, worker_ix);
    let Some(plan) = answer_plan(cfg, roles, &mut part)? else {
        return Ok(());
    };
    let Some(msg) = next_of(cmd::START)? else {
        return Ok(());
    };
    let (_, mut d) = Dec::new(&msg)?;
    let (eta0, t0, start_k) = (d.f64()?, d.f64()?, d.u64()?);
    let schedule = if raw.step_decay {
        StepSchedule::Decay { eta0, t0 }
    } else {
        StepSchedule::Constant { eta: eta0 }
    };
    let clock = Arc::new(Clock::starting_at(start_k));
    let stats = Arc::new(DelayStats::default());
    let shard = start_shard(cfg, server_ix, &plan, schedule, &clock, &stats);
    let transport = MpiTransport::new((0..roles.servers).map(|s| s as i32).collect());
    let control = Control::new(usize::from(worker_ix.is_some()), u64::MAX);
    let counters = Counters::default();
    let derivs = RwLock::new(Vec::new());
    let empty = Dataset::new(plan.features);
    let data = part.as_ref().map_or(&empty, |p| &p.data);
    let eval_rows = part.as_ref().and_then(|p| p.eval.as_deref());
    let ctx = WorkerContext::new(
        raw,
        raw.batch.unwrap_or(DEFAULT_BATCH),
        data,
        &plan.partition,
        &transport,
        &control,
        &counters,
        cfg.svrg.then_some(&derivs),
    );
    answer(Enc::new(cmd::START, 0));
    std::thread::scope(|s| -> Result<()> {
        if let Some(sh) = &shard {
            let (clock, stats, servers, blocks) = (&clock, &stats, roles.servers, plan.blocks);
            s.spawn(move || {
                if let Err(e) = serve(&**sh, clock, stats, blocks, servers, 1) {
                    // A server that cannot go on takes the whole job down: its blocks
                    // are gone, and the workers would wait for it forever.
                    on_fatal(&format!("server on rank {rank}: {e}"));
                    use mpi::topology::Communicator;
                    mpi::topology::SimpleCommunicator::world().abort(2);
                }
            });
        }
        let mut worker_thread = None;
        loop {
            let msg = next_command();
            let (kind, mut d) = Dec::new(&msg)?;
            match kind {
                cmd::WORK => {
                    if let Some(w) = worker_ix {
                        let (ctx, loss) = (&ctx, cfg.loss);
                        let seed = raw.seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        worker_thread = Some(s.spawn(move || {
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                with_loss!(loss, |l| worker::run_async(l, ctx, 0, 1, seed))
                            }))
                            .map_err(|p| train::panic_message(p.as_ref()));
                            let why = r.as_ref().err().cloned().unwrap_or_default();
                            send(0, tag::NOTE, &Enc::new(cmd::EXITED, 8).str(&why).bytes());
                            r
                        }));
                    }
                }
                cmd::PAUSE => {
                    control.pause();
                    answer(Enc::new(cmd::PAUSE, 8).u64(counters.samples.load(Ordering::Relaxed)));
                }
                cmd::RESUME => control.resume(),
                cmd::EVAL | cmd::SNAP => {
                    let w = d.f64s()?;
                    let rows = if kind == cmd::EVAL { eval_rows } else { None };
                    answer(sums_over_part(
                        cfg,
                        kind,
                        &w,
                        data,
                        rows,
                        plan.layout,
                        &derivs,
                    )?);
                }
                cmd::STOP => {
                    control.stop();
                    control.resume();
                    let failure = match worker_thread.take().map(|h| h.join()) {
                        Some(Ok(Err(why))) => why,
                        Some(Err(p)) => train::panic_message(p.as_ref()),
                        _ => String::new(),
                    };
                    let (messages, bytes) = transport.traffic();
                    answer(
                        Enc::new(cmd::STOP, 32)
                            .u64(counters.samples.load(Ordering::Relaxed))
                            .u64(messages)
                            .u64(bytes)
                            .str(&failure),
                    );
                }
                cmd::EXIT => {
                    control.stop();
                    control.resume();
                    set_local_server(None);
                    return Ok(());
                }
                other => return Err(runtime(format!("unknown command {other}"))),
            }
        }
    })
}

/// The answer to EVAL (the loss and its gradient over `rows` of this rank's part, with
/// the nonconvex term) or SNAP (the gradient of the loss over every row, the rows'
/// derivatives kept in `derivs` for the workers' SVRG corrections).
fn sums_over_part(
    cfg: &ValidConfig,
    kind: u8,
    w: &[f64],
    data: &Dataset,
    rows: Option<&[u32]>,
    layout: Layout,
    derivs: &RwLock<Vec<f32>>,
) -> Result<Enc> {
    if w.len() != layout.coords() {
        return Err(runtime("model of the wrong length".into()));
    }
    let mut grad = vec![0.0; layout.coords()];
    let (n, f) = with_loss!(cfg.loss, |l| {
        let obj = Objective {
            data,
            rows,
            loss: l,
            reg: AnyReg(RegSpec::NONE),
            layout,
            alpha: if kind == cmd::EVAL {
                cfg.raw.alpha
            } else {
                0.0
            },
            threads: cfg.eval_threads,
        };
        let n = obj.n();
        if n == 0 {
            (0, 0.0)
        } else if kind == cmd::EVAL {
            (n, obj.f_and_grad(w, Some(&mut grad)))
        } else {
            // The loss is not needed: the coordinator uses the gradient only.
            let mut m = derivs.write();
            m.clear();
            m.resize(n * layout.classes, 0.0);
            obj.gradient_pass(w, &mut grad, &mut m);
            (n, 0.0)
        }
    });
    if n == 0 {
        grad.clear();
    }
    Ok(Enc::new(kind, 24 + grad.len() * 8)
        .u64(n as u64)
        .f64(f)
        .f64s(&grad))
}

/// Rank 0's side of the run.
struct Coordinator<'a, L: Loss> {
    cfg: &'a ValidConfig,
    roles: &'a RoleMap,
    ranks: usize,
    loss: L,
    interrupt: Option<Arc<AtomicBool>>,
    servers_started: bool,
    workers_started: bool,
}

/// What the worker ranks read, added up.
struct Survey {
    n: usize,
    nnz: usize,
    features: usize,
    /// Some label is 0 (binary labels 0/1 rather than -1/+1).
    has_zero: bool,
    index_base_one: bool,
    fingerprints: Vec<u64>,
    /// Each worker rank's rows and where they came from, for the summary.
    rows_of: Vec<String>,
}

/// One evaluation's answers added up.
struct Reduced {
    rows: u64,
    f: f64,
    grad: Vec<f64>,
}

impl<L: Loss> Coordinator<'_, L> {
    fn command_all(&self, msg: Enc) {
        let bytes = msg.bytes();
        for r in 0..self.ranks {
            send(r as i32, tag::COMMAND, &bytes);
        }
    }

    /// Every rank's answer to the last command, by rank; the first error (by rank)
    /// if any rank failed.
    fn answers(&self, kind: u8) -> Result<Vec<Vec<u8>>> {
        let mut got: Vec<Option<Vec<u8>>> = vec![None; self.ranks];
        for _ in 0..self.ranks {
            let (msg, src) = recv(None, tag::ANSWER, Wait::Reply);
            got[src as usize] = Some(msg);
        }
        let got: Vec<Vec<u8>> = got.into_iter().map(|m| m.unwrap_or_default()).collect();
        for (rank, m) in got.iter().enumerate() {
            let (k, mut d) = Dec::new(m)?;
            if k == cmd::FAILED {
                let user_input = d.u8()? == 1;
                return Err(Error::Remote {
                    rank,
                    user_input,
                    message: d.str()?,
                });
            }
            if k != kind {
                return Err(runtime(format!(
                    "rank {rank} answered {k} to command {kind}"
                )));
            }
        }
        Ok(got)
    }

    fn shards(&self) -> Vec<Arc<dyn ShardApi>> {
        (0..self.roles.servers)
            .map(|s| {
                Arc::new(RemoteShard::new(
                    ShardId(s as u32),
                    self.roles.servers,
                    s as i32,
                )) as Arc<dyn ShardApi>
            })
            .collect()
    }

    /// Step counter (the sum of the servers') and rejected pushes.
    fn status(&self) -> (u64, u64) {
        (0..self.roles.servers)
            .map(|s| RemoteShard::new(ShardId(s as u32), self.roles.servers, s as i32).status())
            .fold((0, 0), |(k, r), (a, b)| (k + a, r + b))
    }

    /// Pauses every worker; returns the rows pushed so far.
    fn pause(&self) -> Result<u64> {
        self.command_all(Enc::new(cmd::PAUSE, 0));
        let mut samples = 0;
        for m in self.answers(cmd::PAUSE)? {
            samples += Dec::new(&m)?.1.u64()?;
        }
        Ok(samples)
    }

    fn resume(&self) {
        self.command_all(Enc::new(cmd::RESUME, 0));
    }

    /// Sends `w` with `kind` (EVAL or SNAP) and adds the answers up, weighted by rows.
    fn reduce(&self, kind: u8, w: &[f64]) -> Result<Reduced> {
        self.command_all(Enc::new(kind, 8 + w.len() * 8).f64s(w));
        let mut out = Reduced {
            rows: 0,
            f: 0.0,
            grad: vec![0.0; w.len()],
        };
        for m in self.answers(kind)? {
            let mut d = Dec::new(&m)?.1;
            let rows = d.u64()?;
            let f = d.f64()?;
            let g = d.f64s()?;
            if rows == 0 {
                continue;
            }
            out.rows += rows;
            out.f += rows as f64 * f;
            for (a, b) in out.grad.iter_mut().zip(&g) {
                *a += rows as f64 * b;
            }
        }
        let n = out.rows.max(1) as f64;
        out.f /= n;
        for g in &mut out.grad {
            *g /= n;
        }
        Ok(out)
    }

    /// Ends the run on every rank, whatever state it is in: stops the servers if they
    /// run, then tells every agent to exit.
    fn exit_all(&self) {
        if self.workers_started {
            // Workers first: one may be waiting for a server's reply.
            self.command_all(Enc::new(cmd::RESUME, 0));
            self.command_all(Enc::new(cmd::STOP, 0));
            let _ = self.answers(cmd::STOP);
        }
        if self.servers_started {
            for s in 0..self.roles.servers {
                RemoteShard::new(ShardId(s as u32), self.roles.servers, s as i32).stop();
            }
        }
        self.command_all(Enc::new(cmd::EXIT, 0));
    }

    fn run(mut self, observers: &mut [&mut dyn Observe]) -> Result<ClusterRun> {
        let r = self.run_inner(observers);
        if r.is_err() {
            self.exit_all();
        }
        r
    }

    /// Asks every rank what it read (`INFO`): the worker ranks' rows added up, and the
    /// checks that they agree.
    fn survey(&self) -> Result<Survey> {
        let raw = &self.cfg.raw;
        let roles = self.roles;
        self.command_all(Enc::new(cmd::INFO, 0));
        let mut rows_of = Vec::new();
        let (mut n, mut nnz, mut features, mut has_zero) = (0usize, 0usize, 0usize, false);
        let mut bases = Vec::new();
        let mut fingerprints = Vec::new();
        for (rank, m) in self.answers(cmd::INFO)?.iter().enumerate() {
            let mut d = Dec::new(m)?.1;
            let (r, z, f) = (d.u64()? as usize, d.u64()? as usize, d.u64()? as usize);
            let one = d.u8()? == 1;
            let zero = d.u8()? == 1;
            let fp = d.u64()?;
            let source = d.str()?;
            if roles.worker_of(rank).is_some() {
                if r == 0 {
                    return Err(Error::Data {
                        path: raw.train.clone().unwrap_or_default(),
                        reason: format!(
                            "worker rank {rank} got no rows ({source}): fewer rows than workers?"
                        ),
                    });
                }
                rows_of.push(format!("rank {rank} {r} rows ({source})"));
                n += r;
                nnz += z;
                features = features.max(f);
                has_zero |= zero;
                bases.push(one);
                fingerprints.push(fp);
            }
        }
        if raw.index_base == IndexBaseSetting::Auto && bases.iter().any(|&b| b != bases[0]) {
            return Err(Error::config(
                "index-base",
                "the ranks' parts of the data read as differently based (some hold feature index 0, some do not): pass --index-base 0 or 1",
            ));
        }
        Ok(Survey {
            n,
            nnz,
            features,
            has_zero,
            index_base_one: bases[0],
            fingerprints,
            rows_of,
        })
    }

    /// The column sums (`LAYOUT`) and the step (`METRIC`) agreed with the worker ranks:
    /// the smallest automatic step over their parts, or the one given.
    fn agree_step(&self, features: usize, n: usize, blocks: usize) -> Result<(f64, String)> {
        let (cfg, raw) = (self.cfg, &self.cfg.raw);
        self.command_all(
            Enc::new(cmd::LAYOUT, 24)
                .u64(features as u64)
                .u64(n as u64)
                .u64(blocks as u64),
        );
        let mut sums = vec![0.0; if cfg.scaled_steps { features } else { 0 }];
        for m in self.answers(cmd::LAYOUT)? {
            let s = Dec::new(&m)?.1.f64s()?;
            if s.len() == sums.len() {
                for (a, b) in sums.iter_mut().zip(&s) {
                    *a += b;
                }
            }
        }
        // The metric, then the step.
        let metric = if cfg.scaled_steps {
            train::column_metric(&sums, n, raw.step_scaling_floor)
        } else {
            Vec::new()
        };
        drop(sums);
        self.command_all(Enc::new(cmd::METRIC, 8 + metric.len() * 8).f64s(&metric));
        drop(metric);
        let mut eta0 = f64::INFINITY;
        let mut step_note = String::new();
        for m in self.answers(cmd::METRIC)? {
            let mut d = Dec::new(&m)?.1;
            let eta = d.f64()?;
            let note = d.str()?;
            if eta < eta0 {
                eta0 = eta;
                step_note = note;
            }
        }
        match raw.step {
            StepSetting::Fixed(eta) => {
                eta0 = eta;
                step_note = "given".into();
            }
            StepSetting::Named(_) => {
                step_note = format!("{step_note} (the smallest over the workers' parts)")
            }
        }
        if cfg.scaled_steps {
            step_note.push_str(&train::scaling_note(raw));
        }
        Ok((eta0, step_note))
    }

    /// Starts the servers (`START`) at step `eta0`, resuming at update `start_k`. Each
    /// counts its own updates (about k / S).
    fn start_servers(&mut self, eta0: f64, updates_per_epoch: f64, start_k: u64) -> Result<()> {
        let servers = self.roles.servers;
        let t0 = self.cfg.raw.step_t0.unwrap_or(updates_per_epoch) / servers as f64;
        self.command_all(
            Enc::new(cmd::START, 24)
                .f64(eta0)
                .f64(t0)
                .u64(start_k / servers as u64),
        );
        self.answers(cmd::START)?;
        self.servers_started = true;
        Ok(())
    }

    fn run_inner(&mut self, observers: &mut [&mut dyn Observe]) -> Result<ClusterRun> {
        let cfg = self.cfg;
        let raw = &cfg.raw;
        let roles = self.roles;
        // 1. What every worker read.
        let Survey {
            n,
            nnz,
            features,
            has_zero,
            index_base_one,
            fingerprints,
            rows_of,
        } = self.survey()?;
        let features = raw.features.unwrap_or(features);
        // 2. Layout and blocks.
        let group_rows = train::reg_spec(cfg, 1).1;
        let blocks = train::block_count(
            raw.blocks,
            roles.workers(),
            roles.servers,
            features.div_ceil(group_rows),
            || format!("{features} features"),
        )?;
        let (layout, reg, partition) = plan_blocks(cfg, roles, features, blocks);
        // Rank 0 holds a dense model and at most its share of the cells.
        let per_coord = train::COPY_BYTES + train::CELL_BYTES.div_ceil(roles.servers as u64);
        train::memory_guard(layout, per_coord, false, false, train::total_memory())?;
        let (eta0, step_note) = self.agree_step(features, n, blocks)?;
        let updates_per_epoch =
            n as f64 * blocks as f64 / raw.batch.unwrap_or(DEFAULT_BATCH) as f64;
        let max_updates = train::update_budget(cfg, updates_per_epoch);
        // Checkpoint to resume from.
        let key = checkpoint_key(raw, &fingerprints, n, layout);
        let resumed = match &raw.resume {
            Some(dir) => Some(checkpoint::resume(dir, &key, layout.coords())?),
            None => None,
        };
        let start_k = resumed.as_ref().map_or(0, |c| c.updates);
        // 4. Servers.
        self.start_servers(eta0, updates_per_epoch, start_k)?;
        let info = RunInfo {
            // `auto` is asyb under MPI.
            algorithm: match raw.algorithm {
                Algorithm::Auto => Algorithm::Asyb,
                a => a,
            }
            .name()
            .into(),
            algorithm_note: if raw.algorithm == Algorithm::Auto {
                "the MPI backend runs workers".into()
            } else {
                String::new()
            },
            loss: raw.loss.name().into(),
            reg: raw.reg.name().into(),
            lambda: raw.lambda,
            lambda_max: None,
            workers: roles.workers(),
            blocks,
            batch: raw.batch.unwrap_or(DEFAULT_BATCH),
            rows: n,
            features,
            used_features: None,
            classes: 1,
            nnz,
            eta0,
            step_note,
            updates_per_epoch,
            max_updates,
            max_seconds: raw.max_seconds,
            target_objective: raw.target_objective,
            eval_rows: raw.eval_rows.map_or(n, |m| n.min(m)),
            cluster: Some(format!("mpi, {}; {}", roles.describe(), rows_of.join(", "))),
        };
        for o in observers.iter_mut() {
            o.on_start(&info)?;
        }
        // Test data, read here only.
        let test = read_test(cfg, index_base_one)?;
        let empty = Dataset::new(features);
        let obj = Objective {
            data: &empty,
            rows: None,
            loss: self.loss,
            reg: AnyReg(reg),
            layout,
            alpha: raw.alpha,
            threads: cfg.eval_threads,
        };
        let ev = Evaluator::new(obj, test.as_ref(), eta0);
        let shards = self.shards();
        let start_samples = resumed.as_ref().map_or(0, |c| c.samples);
        let start_secs = resumed.as_ref().map_or(0.0, |c| c.train_secs);
        if let Some(c) = &resumed {
            crate::ps::scatter(&partition, &shards, &c.weights);
        }
        let from_zero = resumed
            .as_ref()
            .map_or(true, |c| c.weights.iter().all(|&v| v == 0.0));
        drop(resumed);
        let mut mon = Monitor::new(updates_per_epoch, raw);
        mon.resume_at(start_secs, start_k);
        let svrg_every = train::svrg_every(raw, updates_per_epoch, n);
        let warmup = train::svrg_warmup(raw, svrg_every, updates_per_epoch, from_zero);
        let ckpt = raw.checkpoint_dir.as_ref().map(|dir| Checkpointing {
            dir: dir.clone(),
            every: raw.checkpoint_every_secs,
            key: key.clone(),
            next: mon.train_secs() + raw.checkpoint_every_secs,
        });
        let driver = Driver {
            mon,
            observers,
            ev,
            rules: StopRules::of(raw, self.interrupt.clone()),
            by_epochs: cfg.epochs.is_some(),
            snapshots: cfg.svrg.then(|| SnapshotSchedule {
                every: svrg_every,
                next: start_k + train::svrg_first(svrg_every, warmup),
                at_start: warmup == 0,
            }),
            ckpt,
            workers: roles.workers(),
            needs_all: false,
            info,
            reg,
        };
        let summary = driver.run(&mut Ranks {
            co: self,
            partition: &partition,
            shards: &shards,
            max_updates,
            exited: 0,
            start_samples,
            samples: start_samples,
        })?;
        self.command_all(Enc::new(cmd::EXIT, 0));
        while try_recv(None, tag::NOTE).is_some() {}
        Ok(ClusterRun {
            summary,
            class_labels: if raw.loss.is_binary() {
                if has_zero {
                    vec![0.0, 1.0]
                } else {
                    vec![-1.0, 1.0]
                }
            } else {
                Vec::new()
            },
            index_base_one,
        })
    }
}

/// The MPI backend, on rank 0: the worker ranks are driven by commands, the model lives
/// on the server ranks (gathered for every evaluation), and the loss and gradient sums
/// are every worker rank's over its own rows, added up weighted by rows.
struct Ranks<'c, 'a, 'p, L: Loss> {
    co: &'c mut Coordinator<'a, L>,
    partition: &'p BlockPartition,
    shards: &'p [Arc<dyn ShardApi>],
    max_updates: Option<u64>,
    /// Worker ranks whose worker has exited.
    exited: usize,
    start_samples: u64,
    /// Rows pushed, as of the last pause.
    samples: u64,
}

impl<L: Loss> Backend for Ranks<'_, '_, '_, L> {
    type Model = Self;

    fn wait(&mut self) -> Result<bool> {
        std::thread::sleep(Duration::from_millis(5));
        while try_recv(None, tag::NOTE).is_some() {
            self.exited += 1;
        }
        let k = self.co.status().0;
        Ok(self.exited == self.co.roles.workers() || self.max_updates.is_some_and(|m| k >= m))
    }

    fn counts(&mut self) -> Result<Counts> {
        let (updates, rejected) = self.co.status();
        Ok(Counts {
            updates,
            samples: self.samples,
            rejected,
        })
    }

    fn start(&mut self) -> Result<()> {
        self.co.command_all(Enc::new(cmd::WORK, 0));
        self.co.workers_started = true;
        Ok(())
    }

    fn pause(&mut self) -> Result<()> {
        self.samples = self.start_samples + self.co.pause()?;
        Ok(())
    }

    fn resume(&mut self) -> Result<()> {
        self.co.resume();
        Ok(())
    }

    /// The workers cannot hold at an exact step: the coordinator pauses them once it
    /// sees the step passed.
    fn hold_at(&mut self, _k: u64) {}

    fn snapshot_due(&self, k: u64, at: u64) -> bool {
        k >= at
    }

    fn stop(&mut self) -> Result<Stopped> {
        let co = &mut *self.co;
        co.resume();
        co.command_all(Enc::new(cmd::STOP, 0));
        let mut failures = Vec::new();
        let mut samples = self.start_samples;
        let mut traffic = Traffic::default();
        for (rank, m) in co.answers(cmd::STOP)?.iter().enumerate() {
            let mut d = Dec::new(m)?.1;
            samples += d.u64()?;
            traffic.messages += d.u64()?;
            traffic.bytes += d.u64()?;
            let why = d.str()?;
            if !why.is_empty() {
                failures.push(WorkerFailure {
                    worker: co.roles.worker_of(rank).unwrap_or(rank),
                    reason: why,
                });
            }
        }
        co.workers_started = false;
        self.samples = samples;
        Ok(Stopped {
            failures,
            traffic: Some(traffic),
        })
    }

    fn model(&mut self) -> &mut Self {
        self
    }
}

impl<L: Loss> ModelAccess for Ranks<'_, '_, '_, L> {
    fn evaluate<M: Loss>(
        &mut self,
        ev: &Evaluator<M>,
        rec: &mut EvalRecord,
        keep: bool,
    ) -> Result<Option<KeptModel>> {
        let w = crate::ps::gather(self.partition, self.shards);
        self.evaluate_at(ev, &w, rec)?;
        Ok(keep.then(|| KeptModel::of(&w)))
    }

    /// The loss and gradient sums reduced over the worker ranks; no duality gap (the
    /// ranks would need a second round for it).
    fn evaluate_at<M: Loss>(
        &mut self,
        ev: &Evaluator<M>,
        w: &[f64],
        rec: &mut EvalRecord,
    ) -> Result<()> {
        let r = self.co.reduce(cmd::EVAL, w)?;
        ev.record(w, r.f, &r.grad, rec);
        Ok(())
    }

    fn snapshot_gradient(&mut self, grad: &mut [f64]) -> Result<()> {
        let w = crate::ps::gather(self.partition, self.shards);
        let r = self.co.reduce(cmd::SNAP, &w)?;
        grad.copy_from_slice(&r.grad);
        Ok(())
    }

    fn install_drift(&mut self, grad: &[f64]) -> Result<()> {
        // One call at a time to the remote servers.
        train::install_drift(self.partition, self.shards, grad, 1);
        Ok(())
    }

    fn gather(&mut self) -> Result<Vec<f64>> {
        Ok(crate::ps::gather(self.partition, self.shards))
    }

    /// Stops the servers, which answer with their statistics.
    fn delays(&mut self) -> Result<DelaySummary> {
        let stats = DelayStats::default();
        let servers = self.co.roles.servers;
        for s in 0..servers {
            let raw_stats = RemoteShard::new(ShardId(s as u32), servers, s as i32).stop();
            if !stats.add_raw(&raw_stats) {
                return Err(runtime("malformed delay statistics".into()));
            }
        }
        self.co.servers_started = false;
        Ok(stats.summary())
    }
}
