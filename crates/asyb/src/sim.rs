//! A discrete-event simulator of AsyB-ProxSGD on a cluster larger than the machine at
//! hand. It runs the REAL algorithm (the same shards, the same minibatch gradients, the
//! same SVRG snapshots, real data) on one thread, and only the clock is virtual: W
//! workers take a compute time per minibatch drawn from a distribution, S servers
//! (`--servers`; block j on server j mod S, as in process) take a service time per
//! request, and every message takes a latency plus its bytes over a bandwidth.
//! Deterministic for a seed.
//!
//! The life of an update, in virtual time: a worker's pull request travels to every
//! server (each holds part of the weights the minibatch reads: 1/S of the bytes each)
//! and waits its turn there (a server serves one request at a time, first come first
//! served); the model is read when the last server serves it, so the worker sees
//! exactly the pushes applied before that instant; the replies travel back, the worker
//! computes for its drawn time and sends the push to the server of its block, where it
//! waits its turn and is applied (or rejected as too stale) when served; the worker
//! pulls again once the acknowledgement is back (with `asy-full`, once every server
//! has applied its blocks). The delay of a push is the number of updates applied
//! between its pull and its own. Events are processed in virtual-time order, so the
//! model each gradient is computed on is the one the timeline says.
//!
//! SVRG holds as in process: once the step counter reaches the next snapshot, no new
//! pull starts; when the pushes in flight are applied, the snapshot is taken (a full
//! pass, which costs `snapshot_secs` of virtual time) and every worker starts again.
//!
//! Evaluations (Psi over the monitored rows) cost no virtual time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, ValidConfig};
use crate::driver::{Backend, Counts, Driver, Evaluator, SnapshotSchedule, StopRules, Stopped};
use crate::model::loss::Loss;
use crate::model::objective::{AnyReg, Objective};
use crate::monitor::EvalRecord;
use crate::problem::Problem;
use crate::ps::blocks::BlockId;
use crate::ps::shard::{Clock, DelayStats, DelaySummary, PushOutcome};
use crate::ps::transport::local::LocalTransport;
use crate::ps::worker::{BlockMode, Control, Counters, MinibatchGradient, Sampler, WorkerContext};
use crate::train::{LocalModel, Monitor, StopReason, Svrg, Trainer};
use crate::{with_loss, Error, Result};

/// A worker's compute time per minibatch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeTime {
    /// Median seconds per minibatch gradient (pull included on the worker's side).
    pub median_secs: f64,
    /// Log-normal spread (sigma of the log); 0 for a constant time.
    pub sigma: f64,
    /// Probability that a minibatch is a straggler's ...
    pub straggler_prob: f64,
    /// ... which takes this many times longer.
    pub straggler_slowdown: f64,
}

/// The simulated machine.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub compute: ComputeTime,
    /// Server seconds to serve one pull.
    pub pull_service_secs: f64,
    /// Server seconds to apply one push.
    pub push_service_secs: f64,
    /// One-way message latency, seconds.
    pub latency_secs: f64,
    /// Bytes per second of every link (infinite: no transfer time).
    pub bandwidth_bytes_per_sec: f64,
    /// Virtual seconds of an SVRG snapshot (a full pass over the data).
    pub snapshot_secs: f64,
}

/// What a simulated run did.
#[derive(Clone, Debug, Serialize)]
pub struct SimRun {
    pub workers: usize,
    /// Virtual seconds to the goal, if reached.
    pub time_to_target_secs: Option<f64>,
    pub updates_to_target: Option<u64>,
    pub records: Vec<EvalRecord>,
    pub delays: DelaySummary,
    /// Real seconds the simulation took.
    pub wall_secs: f64,
}

/// Timings measured on this machine by [`calibrate`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub updates: u64,
    pub compute: ComputeTime,
    pub push_service_secs: f64,
    pub pull_service_secs: f64,
    pub snapshot_secs: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The server serves worker w's pull (the model is read now).
    ServePull,
    /// The server applies worker w's push.
    ApplyPush,
    /// Worker w's pull request reaches the server.
    PullArrives,
    /// Worker w's push reaches the server.
    PushArrives,
}

/// An event: virtual time (as ordered bits of a non-negative f64), then a sequence
/// number, so that ties keep their order of creation; the kind, the worker, the server.
type Event = Reverse<(u64, u64, Kind, usize, usize)>;

struct Sched {
    heap: BinaryHeap<Event>,
    seq: u64,
}

impl Sched {
    fn at(&mut self, t: f64, kind: Kind, w: usize, server: usize) {
        debug_assert!(t >= 0.0 && t.is_finite());
        self.seq += 1;
        self.heap
            .push(Reverse((t.to_bits(), self.seq, kind, w, server)));
    }

    /// Worker w's pull requests, sent at `t`, reach every server.
    fn pull_requests(&mut self, t: f64, m: &Machine, w: &mut SimWorker, w_id: usize) {
        let servers = w.server_pushes.len();
        w.waiting = servers;
        let arrive = t + transfer(m, w.pull_bytes / servers as f64);
        for s in 0..servers {
            self.at(arrive, Kind::PullArrives, w_id, s);
        }
    }
}

/// A worker's state between events.
struct SimWorker {
    rng: Xoshiro256PlusPlus,
    sampler: Sampler,
    batch: Vec<u32>,
    grad: MinibatchGradient,
    pulled_at: u64,
    /// Bytes of its pull request, and of the reply: 8 per parameter row read.
    pull_bytes: f64,
    /// Held by an SVRG snapshot: its next pull waits.
    held: bool,
    /// Servers whose reply (to a pull) or acknowledgement (of a push) is still due.
    waiting: usize,
    /// Per server: the blocks of the current push it applies.
    server_pushes: Vec<Vec<u32>>,
}

fn transfer(m: &Machine, bytes: f64) -> f64 {
    m.latency_secs
        + if m.bandwidth_bytes_per_sec.is_finite() {
            bytes / m.bandwidth_bytes_per_sec
        } else {
            0.0
        }
}

/// 8 bytes per parameter row a minibatch reads (its rows' entries and the intercept).
fn pull_bytes(data: &crate::data::Dataset, batch: &[u32]) -> f64 {
    8.0 * (batch
        .iter()
        .map(|&i| data.row(i as usize).nnz())
        .sum::<usize>()
        + 1) as f64
}

/// How long a simulation goes and how often it evaluates, in epochs (the run's
/// updates per epoch depend on its blocks, which default to the worker count).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub eval_every_epochs: f64,
    pub max_epochs: f64,
    pub max_virtual_secs: f64,
}

/// Simulates `cfg` (an asynchronous algorithm: asyb or asy-full) with `workers`
/// workers on `machine` until Psi reaches `goal` or the budget is used.
pub fn simulate(
    cfg: &ValidConfig,
    pb: &Problem,
    machine: &Machine,
    workers: usize,
    goal: f64,
    budget: Budget,
) -> Result<SimRun> {
    if !cfg.raw.algorithm.is_asynchronous() {
        return Err(Error::config(
            "algorithm",
            "the simulator runs the asynchronous algorithms asyb and asy-full",
        ));
    }
    with_loss!(cfg.loss, |l| run(
        l, cfg, pb, machine, workers, goal, budget, None
    ))
}

/// Measures on this machine, with one worker and no network, the times [`Machine`]
/// needs: each minibatch gradient (its pull included), each push's application, each
/// SVRG snapshot, over `updates` real updates.
pub fn calibrate(cfg: &ValidConfig, pb: &Problem, updates: u64) -> Result<Calibration> {
    let mut cal = Calibration {
        updates: 0,
        compute: ComputeTime {
            median_secs: 0.0,
            sigma: 0.0,
            straggler_prob: 0.0,
            straggler_slowdown: 1.0,
        },
        push_service_secs: 0.0,
        pull_service_secs: 0.0,
        snapshot_secs: 0.0,
    };
    let m = Machine {
        compute: cal.compute,
        pull_service_secs: 0.0,
        push_service_secs: 0.0,
        latency_secs: 0.0,
        bandwidth_bytes_per_sec: f64::INFINITY,
        snapshot_secs: 0.0,
    };
    let budget = Budget {
        eval_every_epochs: f64::INFINITY,
        max_epochs: f64::INFINITY,
        max_virtual_secs: f64::INFINITY,
    };
    with_loss!(cfg.loss, |l| run(
        l,
        cfg,
        pb,
        &m,
        1,
        f64::NEG_INFINITY,
        budget,
        Some((updates, &mut cal))
    ))?;
    Ok(cal)
}

#[allow(clippy::too_many_arguments)]
fn run<L: Loss>(
    loss: L,
    cfg: &ValidConfig,
    pb: &Problem,
    machine: &Machine,
    workers: usize,
    goal: f64,
    budget: Budget,
    cal: Option<(u64, &mut Calibration)>,
) -> Result<SimRun> {
    let wall = Instant::now();
    let raw = &cfg.raw;
    let layout = pb.layout;
    let mut vc = cfg.clone();
    vc.workers = workers;
    // The simulator plays workers: `auto` is asyb here.
    if vc.raw.algorithm == Algorithm::Auto {
        vc.raw.algorithm = Algorithm::Asyb;
    }
    let plan = Trainer::new(&vc, pb).plan()?;
    let in_updates = |epochs: f64| -> Option<u64> {
        epochs
            .is_finite()
            .then(|| (epochs * plan.updates_per_epoch).ceil().max(1.0) as u64)
    };
    let (max_updates, eval_every) = match &cal {
        // Calibration times the updates, not the evaluations.
        Some((n, _)) => (Some(*n), None),
        None => (
            in_updates(budget.max_epochs),
            in_updates(budget.eval_every_epochs),
        ),
    };
    let clock = Arc::new(Clock::default());
    let stats = Arc::new(DelayStats::default());
    let servers = raw.servers;
    let (partition, shards) = plan.shards(cfg, layout, servers, clock.clone(), stats.clone());
    let transport = LocalTransport::new(shards.clone(), clock.clone());
    let control = Control::new(0, u64::MAX);
    let counters = Counters::default();
    let svrg = Svrg::of(
        cfg,
        plan.updates_per_epoch,
        pb.train.rows(),
        true,
        cfg.eval_threads,
    );
    let ctx = WorkerContext::new(
        raw,
        plan.batch,
        &pb.train,
        &partition,
        &transport,
        &control,
        &counters,
        svrg.as_ref().map(|s| &s.derivs),
    );
    let obj = Objective {
        data: &pb.train,
        rows: plan.eval_rows.as_deref(),
        loss,
        reg: AnyReg(plan.reg),
        layout,
        alpha: raw.alpha,
        threads: cfg.eval_threads,
    };
    let lognormal = (machine.compute.sigma > 0.0)
        .then(|| LogNormal::new(machine.compute.median_secs.ln(), machine.compute.sigma))
        .transpose()
        .map_err(|e| Error::config("compute-sigma", e.to_string()))?;
    let blocks = partition.blocks();
    let ws: Vec<SimWorker> = (0..workers)
        .map(|w| SimWorker {
            rng: Xoshiro256PlusPlus::seed_from_u64(
                raw.seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            sampler: Sampler::new(pb.train.rows(), w, workers, raw.sampling),
            batch: Vec::new(),
            grad: MinibatchGradient::new(blocks),
            pulled_at: 0,
            pull_bytes: 0.0,
            held: false,
            waiting: 0,
            server_pushes: vec![Vec::new(); servers],
        })
        .collect();
    let info = crate::train::run_info(&vc, pb, &plan, obj.n());
    let driver = Driver {
        mon: Monitor::with_intervals(plan.updates_per_epoch, Some(f64::INFINITY), eval_every),
        observers: &mut [],
        ev: Evaluator::new(obj, None, plan.eta0),
        rules: StopRules {
            max_seconds: budget
                .max_virtual_secs
                .is_finite()
                .then_some(budget.max_virtual_secs),
            target: goal.is_finite().then_some(goal),
            interrupt: None,
            tol: None,
            pgm_ref: f64::NAN,
        },
        by_epochs: true,
        snapshots: svrg.as_ref().map(|sv| SnapshotSchedule {
            every: sv.every,
            next: sv.first(),
            at_start: sv.warmup == 0,
        }),
        ckpt: None,
        workers,
        needs_all: false,
        info,
        reg: plan.reg,
    };
    let mut sim = Sim {
        loss,
        machine,
        ctx: &ctx,
        model: LocalModel::new(loss, &pb.train, &partition, &shards, &stats, svrg.as_ref()),
        lognormal,
        ws,
        sched: Sched {
            heap: BinaryHeap::new(),
            seq: 0,
        },
        server_free: vec![0.0; servers],
        in_flight: 0,
        samples: 0,
        now: 0.0,
        hold_at: u64::MAX,
        holding: false,
        max_updates: max_updates.unwrap_or(u64::MAX),
        max_virtual_secs: budget.max_virtual_secs,
        times: Times::default(),
    };
    let summary = driver.run(&mut sim)?;
    if let Some((_, c)) = cal {
        sim.times.snapshot = std::mem::take(&mut sim.model.snapshot_secs);
        sim.times.calibrate(c, summary.last().updates);
    }
    let reached = summary.stop_reason == StopReason::TargetObjective;
    let last = summary.last();
    Ok(SimRun {
        workers,
        time_to_target_secs: reached.then_some(last.train_secs),
        updates_to_target: reached.then_some(last.updates),
        delays: summary.delays,
        records: summary.records,
        wall_secs: wall.elapsed().as_secs_f64(),
    })
}

/// Real times of the parts of a simulated run, for [`calibrate`].
#[derive(Default)]
struct Times {
    compute: Vec<f64>,
    push: Vec<f64>,
    snapshot: Vec<f64>,
}

impl Times {
    /// Medians (and the log-normal spread of the compute times) into `c`.
    fn calibrate(&mut self, c: &mut Calibration, updates: u64) {
        let med = |v: &mut Vec<f64>| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let logs: Vec<f64> = self
            .compute
            .iter()
            .filter(|&&x| x > 0.0)
            .map(|x| x.ln())
            .collect();
        let mean = logs.iter().sum::<f64>() / logs.len().max(1) as f64;
        let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / logs.len().max(1) as f64;
        c.updates = updates;
        c.compute.median_secs = med(&mut self.compute);
        c.compute.sigma = var.sqrt();
        c.push_service_secs = med(&mut self.push);
        c.snapshot_secs = med(&mut self.snapshot);
    }
}

/// The simulator as a backend of the run driver: the workers are event sequences on
/// this thread, the clock is virtual, and the model is the real shards'.
struct Sim<'a, L: Loss> {
    loss: L,
    machine: &'a Machine,
    ctx: &'a WorkerContext<'a>,
    model: LocalModel<'a, L>,
    lognormal: Option<LogNormal<f64>>,
    ws: Vec<SimWorker>,
    sched: Sched,
    /// When each server is next free.
    server_free: Vec<f64>,
    /// Workers with an update under way.
    in_flight: usize,
    samples: u64,
    now: f64,
    /// Updates at which the workers hold for the next snapshot.
    hold_at: u64,
    /// Every worker holds and no push is in flight: the snapshot is due.
    holding: bool,
    max_updates: u64,
    max_virtual_secs: f64,
    times: Times,
}

impl<L: Loss> Sim<'_, L> {
    /// Worker `w` draws its next minibatch and sends its pull requests at `t`.
    fn next_pull(&mut self, w: usize, t: f64) {
        let sw = &mut self.ws[w];
        sw.sampler.fill(&mut sw.rng, &mut sw.batch, self.ctx.batch);
        sw.pull_bytes = pull_bytes(self.ctx.data, &sw.batch);
        self.sched.pull_requests(t, self.machine, sw, w);
    }

    /// The last server has served worker `w`'s pull: the gradient on the model of now,
    /// the compute time, the pushes sent.
    fn serve_pull(&mut self, w: usize) {
        let (ctx, machine) = (self.ctx, self.machine);
        let blocks = ctx.partition.blocks();
        let servers = self.server_free.len();
        let sw = &mut self.ws[w];
        let block = match ctx.mode {
            BlockMode::OneRandom => Some(sw.rng.random_range(0..blocks) as u32),
            BlockMode::All => None,
        };
        let t = Instant::now();
        sw.pulled_at = sw
            .grad
            .compute(self.loss, ctx, &sw.batch, block.map(BlockId));
        self.times.compute.push(t.elapsed().as_secs_f64());
        let mut c = match &self.lognormal {
            Some(d) => d.sample(&mut sw.rng),
            None => machine.compute.median_secs,
        };
        if machine.compute.straggler_prob > 0.0
            && sw.rng.random::<f64>() < machine.compute.straggler_prob
        {
            c *= machine.compute.straggler_slowdown;
        }
        for p in sw.server_pushes.iter_mut() {
            p.clear();
        }
        match block {
            Some(j) => sw.server_pushes[ctx.partition.shard_of(BlockId(j)).0 as usize].push(j),
            None => {
                for j in 0..blocks as u32 {
                    sw.server_pushes[ctx.partition.shard_of(BlockId(j)).0 as usize].push(j);
                }
            }
        }
        let reply = self.now + transfer(machine, sw.pull_bytes / servers as f64) + c;
        sw.waiting = 0;
        for (v, p) in sw.server_pushes.iter().enumerate() {
            if !p.is_empty() {
                sw.waiting += 1;
                let entries: usize = p.iter().map(|&j| sw.grad.block(BlockId(j)).len()).sum();
                self.sched.at(
                    reply + transfer(machine, 12.0 * entries as f64),
                    Kind::PushArrives,
                    w,
                    v,
                );
            }
        }
    }

    /// Server `s` applies its part of worker `w`'s push; true when that completes the
    /// worker's update.
    fn apply_push(&mut self, w: usize, s: usize) -> bool {
        let sw = &mut self.ws[w];
        let t = Instant::now();
        for &j in &sw.server_pushes[s] {
            let out = self
                .ctx
                .transport
                .push(BlockId(j), sw.pulled_at, sw.grad.block(BlockId(j)));
            if matches!(out, PushOutcome::Applied { .. }) {
                self.samples += sw.batch.len() as u64;
            }
        }
        self.times.push.push(t.elapsed().as_secs_f64());
        sw.waiting -= 1;
        sw.waiting == 0
    }
}

impl<'a, L: Loss> Backend for Sim<'a, L> {
    type Model = LocalModel<'a, L>;

    /// Runs the events up to the next completed update (or the time limit).
    fn wait(&mut self) -> Result<bool> {
        while let Some(Reverse((tb, _, kind, w, s))) = self.sched.heap.pop() {
            self.now = f64::from_bits(tb);
            if self.now > self.max_virtual_secs {
                return Ok(false);
            }
            match kind {
                Kind::PullArrives => {
                    let start = self.server_free[s].max(self.now);
                    self.server_free[s] = start + self.machine.pull_service_secs;
                    self.sched.at(self.server_free[s], Kind::ServePull, w, s);
                }
                Kind::ServePull => {
                    self.ws[w].waiting -= 1;
                    if self.ws[w].waiting == 0 {
                        self.serve_pull(w);
                    }
                }
                Kind::PushArrives => {
                    let start = self.server_free[s].max(self.now);
                    self.server_free[s] = start + self.machine.push_service_secs;
                    self.sched.at(self.server_free[s], Kind::ApplyPush, w, s);
                }
                Kind::ApplyPush => {
                    if !self.apply_push(w, s) {
                        continue;
                    }
                    self.in_flight -= 1;
                    let k = self.ctx.transport.now();
                    if k >= self.max_updates {
                        return Ok(true);
                    }
                    // The acknowledgement returns; the worker draws its next minibatch.
                    if k >= self.hold_at {
                        let sw = &mut self.ws[w];
                        sw.sampler.fill(&mut sw.rng, &mut sw.batch, self.ctx.batch);
                        sw.pull_bytes = pull_bytes(self.ctx.data, &sw.batch);
                        sw.held = true;
                        self.holding = self.in_flight == 0;
                    } else {
                        self.in_flight += 1;
                        self.next_pull(w, self.now + self.machine.latency_secs);
                    }
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn virtual_secs(&self) -> Option<f64> {
        Some(self.now)
    }

    fn counts(&mut self) -> Result<Counts> {
        Ok(Counts {
            updates: self.ctx.transport.now(),
            samples: self.samples,
            rejected: self.model.stats.rejected(),
        })
    }

    /// Each worker's first pull request leaves at time 0.
    fn start(&mut self) -> Result<()> {
        for w in 0..self.ws.len() {
            self.in_flight += 1;
            self.next_pull(w, 0.0);
        }
        Ok(())
    }

    /// The workers compute only within [`Backend::wait`].
    fn pause(&mut self) -> Result<()> {
        Ok(())
    }

    /// After a snapshot the held workers pull again once it is taken (its virtual
    /// time, during which the servers are busy too).
    fn resume(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.holding) {
            return Ok(());
        }
        let resume = self.now + self.machine.snapshot_secs;
        for f in self.server_free.iter_mut() {
            *f = f.max(resume);
        }
        for w in 0..self.ws.len() {
            if std::mem::take(&mut self.ws[w].held) {
                self.in_flight += 1;
                let sw = &mut self.ws[w];
                self.sched.pull_requests(resume, self.machine, sw, w);
            }
        }
        Ok(())
    }

    fn hold_at(&mut self, k: u64) {
        self.hold_at = k;
    }

    fn snapshot_due(&self, _k: u64, _at: u64) -> bool {
        self.holding
    }

    fn stop(&mut self) -> Result<Stopped> {
        Ok(Stopped::default())
    }

    fn model(&mut self) -> &mut LocalModel<'a, L> {
        &mut self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use crate::data::gen::{ctr, CtrSpec};

    fn problem() -> (ValidConfig, Problem) {
        let ds = ctr(&CtrSpec {
            rows: 4000,
            features: 1024,
            seed: 2,
            ..CtrSpec::default()
        })
        .unwrap();
        let cfg = TrainConfig {
            lambda: 1e-4,
            workers: Some(1),
            algorithm: Algorithm::Asyb,
            ..TrainConfig::default()
        }
        .check()
        .unwrap();
        let pb = Problem::from_datasets(&cfg, ds, std::path::Path::new("gen"), None, None).unwrap();
        (cfg, pb)
    }

    /// A budget of exactly `k` updates, evaluated at the end.
    fn updates(cfg: &ValidConfig, pb: &Problem, workers: usize, k: u64) -> Budget {
        let mut vc = cfg.clone();
        vc.workers = workers;
        let per_epoch = Trainer::new(&vc, pb).plan().unwrap().updates_per_epoch;
        let e = (k as f64 - 0.5) / per_epoch;
        Budget {
            eval_every_epochs: e,
            max_epochs: e,
            max_virtual_secs: f64::INFINITY,
        }
    }

    fn machine(compute: f64) -> Machine {
        Machine {
            compute: ComputeTime {
                median_secs: compute,
                sigma: 0.0,
                straggler_prob: 0.0,
                straggler_slowdown: 1.0,
            },
            pull_service_secs: 0.0,
            push_service_secs: 0.0,
            latency_secs: 0.0,
            bandwidth_bytes_per_sec: f64::INFINITY,
            snapshot_secs: 0.0,
        }
    }

    /// Closed forms of the timeline: with constant compute c, no service time and no
    /// network, W workers apply W updates every c seconds, in rounds: all pull the same
    /// model, and the i-th push of a round has delay i (mean (W-1)/2, max W-1).
    #[test]
    fn the_timeline_matches_closed_forms() {
        let (mut cfg, pb) = problem();
        cfg.svrg = false;
        for w in [1usize, 4] {
            let r = simulate(
                &cfg,
                &pb,
                &machine(1e-3),
                w,
                f64::NEG_INFINITY,
                updates(&cfg, &pb, w, 400),
            )
            .unwrap();
            let last = r.records.last().unwrap();
            assert_eq!(last.updates, 400);
            let expect = 400.0 / w as f64 * 1e-3;
            assert!(
                (last.train_secs - expect).abs() < 1e-9,
                "{w}: {}",
                last.train_secs
            );
            assert_eq!(r.delays.max, w as u64 - 1);
            assert!(
                (r.delays.mean - (w - 1) as f64 / 2.0).abs() < 1e-9,
                "{}",
                r.delays.mean
            );
        }
        // One worker, a server and a network: each update is one cycle of compute,
        // pull and push service and four one-way latencies (request, reply, push,
        // acknowledgement); the first apply comes one latency early.
        let mut m = machine(1e-3);
        m.pull_service_secs = 2e-4;
        m.push_service_secs = 3e-4;
        m.latency_secs = 5e-5;
        let r = simulate(
            &cfg,
            &pb,
            &m,
            1,
            f64::NEG_INFINITY,
            updates(&cfg, &pb, 1, 400),
        )
        .unwrap();
        let cycle = 1e-3 + 2e-4 + 3e-4 + 4.0 * 5e-5;
        let t = r.records.last().unwrap().train_secs;
        assert!((t - (400.0 * cycle - 5e-5)).abs() < 1e-9, "{t}");
        // A server slower than the workers' combined rate is the bottleneck: 8 workers
        // go no faster than one push per service time.
        let mut m = machine(1e-3);
        m.push_service_secs = 1e-3;
        let r = simulate(
            &cfg,
            &pb,
            &m,
            8,
            f64::NEG_INFINITY,
            updates(&cfg, &pb, 8, 400),
        )
        .unwrap();
        let t = r.records.last().unwrap().train_secs;
        assert!((0.4..0.5).contains(&t), "{t}");
    }

    /// S servers share the pushes (block j on server j mod S) but every one of them
    /// serves every pull (each holds part of the weights a minibatch reads).
    #[test]
    fn several_servers_share_pushes_but_each_serves_every_pull() {
        let (mut cfg, pb) = problem();
        cfg.svrg = false;
        cfg.raw.blocks = Some(4);
        let time = |cfg: &ValidConfig, m: &Machine| {
            let r = simulate(cfg, &pb, m, 8, f64::NEG_INFINITY, updates(cfg, &pb, 8, 400)).unwrap();
            assert_eq!(r.records.last().unwrap().updates, 400);
            r.records.last().unwrap().train_secs
        };
        let mut push_bound = machine(1e-3);
        push_bound.push_service_secs = 1e-3;
        let mut pull_bound = machine(1e-3);
        pull_bound.pull_service_secs = 1e-3;
        cfg.raw.servers = 1;
        let one = time(&cfg, &push_bound);
        assert!((0.4..0.5).contains(&one), "{one}");
        cfg.raw.servers = 4;
        // 400 pushes over 4 servers of one push per ms: at least 0.1 s, more by the
        // imbalance of random blocks and by pulls, which wait at every server (first
        // come, first served) behind its pushes.
        let four = time(&cfg, &push_bound);
        assert!(four >= 0.1 && four < 0.6 * one, "{four} against {one}");
        // Pulls: 400 at every server, one per ms.
        let pulls = time(&cfg, &pull_bound);
        assert!((0.4..0.5).contains(&pulls), "{pulls}");
    }

    /// The simulated run is the real algorithm: with one worker and the same seed it
    /// applies the same updates as a real single-worker run, so the objective after N
    /// updates matches; and it is deterministic.
    #[test]
    fn one_worker_follows_the_real_run() {
        let (mut cfg, pb) = problem();
        cfg.raw.max_updates = Some(300);
        cfg.epochs = None;
        cfg.raw.eval_every_secs = Some(1e9);
        let real = Trainer::new(&cfg, &pb).run().unwrap();
        let sim = simulate(
            &cfg,
            &pb,
            &machine(1e-3),
            1,
            f64::NEG_INFINITY,
            updates(&cfg, &pb, 1, 300),
        )
        .unwrap();
        let (a, b) = (real.last().psi, sim.records.last().unwrap().psi);
        assert_eq!(sim.records.last().unwrap().updates, 300);
        assert!((a - b).abs() <= 1e-12 * a.abs(), "{a} vs {b}");
        let again = simulate(
            &cfg,
            &pb,
            &machine(1e-3),
            1,
            f64::NEG_INFINITY,
            updates(&cfg, &pb, 1, 300),
        )
        .unwrap();
        assert_eq!(again.records.last().unwrap().psi, b);
    }
}
