//! The run driver: what every backend's run does the same way. A [`Driver`] owns the
//! evaluation schedule ([`Monitor`]), the stop criteria and the [`StopReason`], the SVRG
//! snapshot schedule, the checkpoints, the interrupt flag, the rollback to the last
//! finite model and the observers; a [`Backend`] holds only what backends differ in:
//! starting, pausing, resuming and stopping the workers, how long to wait between looks,
//! reading the model (in place or gathered), the loss and gradient sums over its rows,
//! installing the SVRG drift, and the delay statistics.
//!
//! A run is [`Driver::run`]: the initial snapshot (when the warm-up is 0) and the
//! initial evaluation, the workers started, [`Driver::watch`] until a stop criterion
//! holds, the workers stopped, the final evaluation and checkpoint, the summary.
//! [`crate::fista`] is no backend (it has no workers), but its run uses the same
//! [`StopRules`] and [`Monitor`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint;
use crate::model::loss::Loss;
use crate::model::objective::{Objective, Weights};
use crate::model::reg::RegSpec;
use crate::model::Layout;
use crate::monitor::{EvalRecord, Observe, Progress, RunInfo};
use crate::ps::shard::DelaySummary;
use crate::train::{KeptModel, Monitor, RunSummary, StopReason, Traffic, WorkerFailure};
use crate::{Error, Result};

/// The workers' progress as a backend counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Block updates applied: the global step k.
    pub(crate) updates: u64,
    /// Minibatch rows whose pushes were applied (as of the last pause where a backend
    /// learns it only then).
    pub(crate) samples: u64,
    /// Pushes rejected as too stale.
    pub(crate) rejected: u64,
}

/// What a backend reports once its workers have stopped.
#[derive(Debug, Default)]
pub(crate) struct Stopped {
    /// Workers that failed while the others went on.
    pub(crate) failures: Vec<WorkerFailure>,
    /// Worker <-> server messages, where they cross processes.
    pub(crate) traffic: Option<Traffic>,
}

/// What backends differ in. The driver calls these from one thread, in the order
/// [`Driver::run`] describes; `pause` may be called when already paused.
pub(crate) trait Backend {
    type Model: ModelAccess;
    /// Lets the workers train for a moment (wall-clock backends sleep); true once every
    /// worker has stopped on its own (the update budget is used, or none is left).
    fn wait(&mut self) -> Result<bool>;
    /// The training time on a virtual clock (the simulator); `None`: the wall clock,
    /// less the evaluations.
    fn virtual_secs(&self) -> Option<f64> {
        None
    }
    /// The counts now.
    fn counts(&mut self) -> Result<Counts>;
    /// Starts the workers (before: paused, the model at its start).
    fn start(&mut self) -> Result<()>;
    /// Pauses every worker; returns once none computes.
    fn pause(&mut self) -> Result<()>;
    fn resume(&mut self) -> Result<()>;
    /// Asks the workers to hold at update `k` for the next SVRG snapshot (where they
    /// can: then a one-worker run takes it at that step exactly).
    fn hold_at(&mut self, k: u64);
    /// Whether the snapshot set at [`Backend::hold_at`] `at` is due at update `k`.
    fn snapshot_due(&self, k: u64, at: u64) -> bool;
    /// Stops the workers for good.
    fn stop(&mut self) -> Result<Stopped>;
    /// The model and the rows, as this backend holds them.
    fn model(&mut self) -> &mut Self::Model;
}

/// What a backend's model and rows offer the driver: reading the model (in place or
/// gathered), the loss and gradient sums over the backend's rows, installing the SVRG
/// drift, and the delay statistics of the pushes.
pub(crate) trait ModelAccess {
    /// The workers paused: evaluates the model into `rec` with `ev` (the loss and
    /// gradient sums over this backend's rows; the rest is `ev`'s), and with `keep`
    /// returns the model as kept for a rollback.
    fn evaluate<L: Loss>(
        &mut self,
        ev: &Evaluator<L>,
        rec: &mut EvalRecord,
        keep: bool,
    ) -> Result<Option<KeptModel>>;
    /// The workers paused: the SVRG snapshot's gradient of the loss part at the current
    /// model into `grad` (every row's derivative kept where the workers read it).
    fn snapshot_gradient(&mut self, grad: &mut [f64]) -> Result<()>;
    /// Installs `grad` (in layout order) as every block's SVRG drift.
    fn install_drift(&mut self, grad: &[f64]) -> Result<()>;
    /// The current model as one dense vector (workers paused or stopped).
    fn gather(&mut self) -> Result<Vec<f64>>;
    /// Evaluates the model `w` (in layout order) into `rec` as
    /// [`ModelAccess::evaluate`] evaluates the backend's own model.
    fn evaluate_at<L: Loss>(
        &mut self,
        ev: &Evaluator<L>,
        w: &[f64],
        rec: &mut EvalRecord,
    ) -> Result<()>;
    /// The delay statistics of the pushes (after [`Backend::stop`]).
    fn delays(&mut self) -> Result<DelaySummary>;
}

/// Evaluates models: the monitored objective, the prox-gradient mapping, test metrics.
/// The loss and gradient sums come from the caller (a backend's rows); `obj` gives the
/// regularizer, the layout and, for in-process runs, the monitored rows.
pub(crate) struct Evaluator<'a, L: Loss> {
    pub(crate) obj: Objective<'a, L>,
    pub(crate) test: Option<Objective<'a, L>>,
    pub(crate) eta: f64,
}

impl<'a, L: Loss> Evaluator<'a, L> {
    /// The evaluator of the objective `obj` with step `eta`, and of the `test` data's
    /// metrics under the same loss, regularizer and layout.
    pub(crate) fn new(
        obj: Objective<'a, L>,
        test: Option<&'a crate::data::Dataset>,
        eta: f64,
    ) -> Self {
        Evaluator {
            obj,
            test: test.map(|t| Objective {
                data: t,
                rows: None,
                ..obj
            }),
            eta,
        }
    }

    /// Fills `rec` for model `w` whose loss part is `f` with gradient `grad`.
    pub(crate) fn record<W: Weights + ?Sized>(
        &self,
        w: &W,
        f: f64,
        grad: &[f64],
        rec: &mut EvalRecord,
    ) {
        rec.psi = f + self.obj.h(w);
        rec.pgm_sq_norm = self.obj.pgm_sq_norm(w, grad, self.eta);
        rec.nnz = Objective::<L>::nnz(w, self.obj.layout);
        rec.test = self
            .test
            .as_ref()
            .map(|t| crate::predict::test_metrics(t, w));
    }

    /// Evaluates `w` on `obj`'s own rows, with the duality gap. The gradient is
    /// allocated for each evaluation rather than kept between them: the memory it takes
    /// is needed only here. So are the rows' loss derivatives for the gap, kept from
    /// the gradient's pass only where they are few ([`Objective::keeps_derivs`]): on
    /// more rows the gap recomputes them in a second pass rather than add them to the
    /// run's memory peak, which an evaluation sets.
    pub(crate) fn eval<W: Weights + ?Sized>(&self, w: &W, rec: &mut EvalRecord) {
        let mut grad = vec![0.0; w.len()];
        if !self.obj.gap_defined() {
            let f = self.obj.f_and_grad(w, Some(&mut grad));
            self.record(w, f, &grad, rec);
            return;
        }
        let (f, pass) = self
            .obj
            .f_and_grad_for_gap(w, &mut grad, self.obj.keeps_derivs());
        self.record(w, f, &grad, rec);
        rec.gap = self.obj.gap_after(w, rec.psi, grad, pass);
    }
}

/// The stop criteria every run shares besides its budget.
pub(crate) struct StopRules {
    pub(crate) max_seconds: Option<f64>,
    pub(crate) target: Option<f64>,
    pub(crate) interrupt: Option<Arc<AtomicBool>>,
    /// `tol`: converged once `||P(x)||^2 <= tol^2 * pgm_ref`.
    pub(crate) tol: Option<f64>,
    /// `||P(0)||^2`, the prox-gradient mapping at the zero model; set by the driver.
    pub(crate) pgm_ref: f64,
}

impl StopRules {
    /// The rules of a run of `raw`.
    pub(crate) fn of(raw: &crate::config::TrainConfig, interrupt: Option<Arc<AtomicBool>>) -> Self {
        StopRules {
            max_seconds: raw.max_seconds,
            target: raw.target_objective,
            interrupt,
            tol: (raw.tol > 0.0).then_some(raw.tol),
            pgm_ref: f64::NAN,
        }
    }

    /// Whether the evaluation `rec` meets `tol`.
    pub(crate) fn converged(&self, rec: &EvalRecord) -> bool {
        self.tol
            .is_some_and(|t| rec.pgm_sq_norm <= t * t * self.pgm_ref)
    }

    /// The time budget or the interrupt flag, checked in this order.
    pub(crate) fn between(&self, train_secs: f64) -> Option<StopReason> {
        if self.max_seconds.is_some_and(|m| train_secs >= m) {
            return Some(StopReason::MaxSeconds);
        }
        if self
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            return Some(StopReason::Interrupted);
        }
        None
    }

    /// What an evaluation at objective `psi` says: diverged, or at the target.
    pub(crate) fn after_eval(&self, psi: f64) -> Option<StopReason> {
        if !psi.is_finite() {
            return Some(StopReason::Diverged);
        }
        if self.target.is_some_and(|t| psi <= t) {
            return Some(StopReason::TargetObjective);
        }
        None
    }

    /// What the evaluation `rec` says: diverged, at the target, or converged.
    pub(crate) fn after_record(&self, rec: &EvalRecord) -> Option<StopReason> {
        self.after_eval(rec.psi)
            .or_else(|| self.converged(rec).then_some(StopReason::Converged))
    }
}

/// Periodic checkpoints of a run (`checkpoint-dir`).
pub(crate) struct Checkpointing {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) every: f64,
    pub(crate) key: String,
    /// Training time of the next checkpoint.
    pub(crate) next: f64,
}

impl Checkpointing {
    pub(crate) fn write(
        &self,
        w: &[f64],
        updates: u64,
        samples: u64,
        train_secs: f64,
    ) -> Result<()> {
        checkpoint::write(
            &self.dir,
            &checkpoint::Checkpoint {
                updates,
                samples,
                train_secs,
                key: self.key.clone(),
                weights: w.to_vec(),
            },
        )?;
        Ok(())
    }
}

/// The SVRG snapshot schedule: every `every` updates, the next at `next`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotSchedule {
    pub(crate) every: u64,
    pub(crate) next: u64,
    /// Whether the run starts with a snapshot (no warm-up).
    pub(crate) at_start: bool,
}

/// Everything of a run that does not depend on the backend.
pub(crate) struct Driver<'r, 'o, L: Loss> {
    pub(crate) mon: Monitor,
    pub(crate) observers: &'r mut [&'o mut dyn Observe],
    pub(crate) ev: Evaluator<'r, L>,
    pub(crate) rules: StopRules,
    /// The update budget ends the run by epochs (else by `max-updates`).
    pub(crate) by_epochs: bool,
    pub(crate) snapshots: Option<SnapshotSchedule>,
    pub(crate) ckpt: Option<Checkpointing>,
    /// Workers in the run and whether it needs every one of them (synchronous rounds).
    pub(crate) workers: usize,
    pub(crate) needs_all: bool,
    pub(crate) info: RunInfo,
    pub(crate) reg: RegSpec,
}

impl<L: Loss> Driver<'_, '_, L> {
    fn layout(&self) -> Layout {
        self.ev.obj.layout
    }

    /// A record at the backend's counts now.
    fn record_now<B: Backend>(&mut self, b: &mut B) -> Result<EvalRecord> {
        self.mon.set_virtual(b.virtual_secs());
        let c = b.counts()?;
        let secs = self.mon.train_secs();
        Ok(self.mon.record(c.updates, c.samples, c.rejected, secs))
    }

    /// Evaluates the backend's model (workers paused), counted as evaluation time, and
    /// hands the record to the observers. Returns the record's Psi and, with `keep`,
    /// the model as kept.
    fn evaluate<B: Backend>(&mut self, b: &mut B, keep: bool) -> Result<(f64, Option<KeptModel>)> {
        let t = Instant::now();
        let mut rec = self.record_now(b)?;
        let kept = b.model().evaluate(&self.ev, &mut rec, keep)?;
        let psi = rec.psi;
        self.mon.push(rec, self.observers)?;
        self.mon.evaluated(t.elapsed().as_secs_f64());
        Ok((psi, kept))
    }

    /// The snapshot (workers paused): the gradient at the current model, less the
    /// intercept's when there is none, installed as the drift. Training time.
    fn snapshot<B: Backend>(&mut self, b: &mut B) -> Result<()> {
        let layout = self.layout();
        let mut grad = vec![0.0; layout.coords()];
        b.model().snapshot_gradient(&mut grad)?;
        if !layout.bias {
            let at = layout.bias_row() * layout.classes;
            grad[at..at + layout.classes].fill(0.0);
        }
        b.model().install_drift(&grad)
    }

    /// `||P(0)||^2` on the backend's rows, counted as evaluation time.
    fn pgm_at_zero<B: Backend>(&mut self, b: &mut B) -> Result<f64> {
        let t = Instant::now();
        let zero = vec![0.0; self.layout().coords()];
        let mut rec = EvalRecord::default();
        b.model().evaluate_at(&self.ev, &zero, &mut rec)?;
        self.mon.eval_secs += t.elapsed().as_secs_f64();
        Ok(rec.pgm_sq_norm)
    }

    /// The whole run on `b`: see the module doc.
    pub(crate) fn run<B: Backend>(mut self, b: &mut B) -> Result<RunSummary> {
        if let Some(s) = self.snapshots {
            if s.at_start {
                self.snapshot(b)?;
            }
            b.hold_at(s.next);
        }
        let (psi, kept) = self.evaluate(b, true)?;
        if !psi.is_finite() {
            return Err(Error::config(
                "init-model",
                "the objective at the initial model is not finite",
            ));
        }
        let mut last_good = kept.expect("kept on request");
        if self.rules.tol.is_some() {
            self.rules.pgm_ref = if last_good.is_zero() {
                self.mon.last().map_or(f64::NAN, |r| r.pgm_sq_norm)
            } else {
                self.pgm_at_zero(b)?
            };
        }
        b.start()?;
        let watched = self.watch(b, &mut last_good);
        // The workers are stopped whatever the outcome.
        let stopped = b.stop();
        let reason = watched?;
        let stopped = stopped?;
        let failures = stopped.failures;
        if !failures.is_empty() && (self.needs_all || failures.len() == self.workers) {
            return Err(Error::Runtime {
                role: "worker",
                id: failures[0].worker,
                reason: format!(
                    "{} ({} of {} workers failed)",
                    failures[0].reason,
                    failures.len(),
                    self.workers
                ),
            });
        }
        let c = b.counts()?;
        let weights = if reason == StopReason::Diverged {
            last_good.into_dense()
        } else {
            // Not needed any more: its memory is free for the final evaluation.
            drop(last_good);
            if self.mon.last_updates() != c.updates {
                self.evaluate(b, false)?;
            }
            b.model().gather()?
        };
        if let Some(ck) = &self.ckpt {
            if reason != StopReason::Diverged {
                ck.write(&weights, c.updates, c.samples, self.mon.train_secs())?;
            }
        }
        let delays = b.model().delays()?;
        let layout = self.layout();
        let mut summary = self.mon.finish(
            self.info,
            reason,
            weights,
            layout,
            self.reg,
            delays,
            self.observers,
        )?;
        summary.failed_workers = failures;
        summary.traffic = stopped.traffic;
        summary.convergence = self.rules.tol.map(|tol| crate::train::Convergence {
            tol,
            pgm_at_zero: self.rules.pgm_ref,
        });
        Ok(summary)
    }

    /// Watches the workers until a stop criterion holds: takes the snapshots, writes the
    /// checkpoints and evaluates when due, reports progress. The workers may be paused
    /// or running on return.
    fn watch<B: Backend>(&mut self, b: &mut B, last_good: &mut KeptModel) -> Result<StopReason> {
        // A model that starts at the target or converged (a resumed run, a warm start)
        // is done.
        if let Some(r) = self.mon.last().and_then(|r| self.rules.after_record(r)) {
            return Ok(r);
        }
        let mut last_progress = Instant::now();
        loop {
            let done = b.wait()?;
            self.mon.set_virtual(b.virtual_secs());
            let k = b.counts()?.updates;
            let secs = self.mon.train_secs();
            if done {
                return Ok(if self.by_epochs {
                    StopReason::Epochs
                } else {
                    StopReason::MaxUpdates
                });
            }
            if let Some(r) = self.rules.between(secs) {
                return Ok(r);
            }
            if let Some(s) = self.snapshots.as_mut() {
                if b.snapshot_due(k, s.next) {
                    b.pause()?;
                    // Part of the algorithm: counted as training time.
                    s.next += s.every;
                    let next = s.next;
                    self.snapshot(b)?;
                    b.hold_at(next);
                    // Resumed here unless an evaluation is due: a snapshot must not
                    // starve the evaluations when snapshots come faster than looks.
                    if !self.due(b)? {
                        b.resume()?;
                        continue;
                    }
                }
            }
            if last_progress.elapsed() >= Duration::from_millis(100) {
                last_progress = Instant::now();
                let p = Progress {
                    updates: k,
                    epochs: k as f64 / self.mon.updates_per_epoch(),
                    train_secs: secs,
                    psi: self.mon.last_psi(),
                };
                for o in self.observers.iter_mut() {
                    o.on_progress(&p);
                }
            }
            if self
                .ckpt
                .as_ref()
                .is_some_and(|c| self.mon.train_secs() >= c.next)
            {
                // Not training: counted with the evaluations.
                b.pause()?;
                let t = Instant::now();
                let secs = self.mon.train_secs();
                let w = b.model().gather()?;
                let c = b.counts()?;
                let ck = self.ckpt.as_mut().expect("checked");
                ck.write(&w, c.updates, c.samples, secs)?;
                ck.next = secs + ck.every;
                self.mon.eval_secs += t.elapsed().as_secs_f64();
                if !self.due(b)? {
                    b.resume()?;
                    continue;
                }
            }
            // The step read at the top of this look: under MPI each read is a round
            // trip to every server.
            if !self.mon.due(k, self.mon.train_secs()) {
                continue;
            }
            b.pause()?;
            let (_, kept) = self.evaluate(b, true)?;
            let stop = self.mon.last().and_then(|r| self.rules.after_record(r));
            // A diverged model is not kept: the run ends with the last finite one.
            if stop != Some(StopReason::Diverged) {
                if let Some(kept) = kept {
                    *last_good = kept;
                }
            }
            if let Some(r) = stop {
                return Ok(r);
            }
            let last = self.mon.last_updates();
            let secs = self.mon.last_train_secs();
            self.mon.schedule_next(last, secs);
            b.resume()?;
        }
    }

    fn due<B: Backend>(&mut self, b: &mut B) -> Result<bool> {
        let k = b.counts()?.updates;
        Ok(self.mon.due(k, self.mon.train_secs()))
    }
}
