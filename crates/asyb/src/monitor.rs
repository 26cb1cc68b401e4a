//! Monitoring: evaluation records taken at intervals off the workers' path, the
//! [`Observe`] trait through which sinks (log file, progress bar, plots) receive them,
//! and the JSON-lines sink.

use serde::{Deserialize, Serialize};

/// Test-set metrics of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    /// Mean loss on the test set (logloss for logistic and softmax).
    pub loss: f64,
    /// Binary or multiclass accuracy; `None` for regression.
    pub accuracy: Option<f64>,
    /// Area under the ROC curve (binary only).
    pub auc: Option<f64>,
    /// Root mean squared error (regression only).
    pub rmse: Option<f64>,
}

/// One evaluation of the model during a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Block updates applied so far (global step k).
    pub updates: u64,
    /// Passes over the data so far (see the trainer's definition of an epoch).
    pub epochs: f64,
    /// Samples whose gradient was pushed so far.
    pub samples: u64,
    /// Training time: wall time minus time spent evaluating.
    pub train_secs: f64,
    /// Wall time since the start of training.
    pub wall_secs: f64,
    /// Train objective Psi = f + h.
    pub psi: f64,
    /// Squared norm of the prox-gradient mapping ||P(x)||^2.
    pub pgm_sq_norm: f64,
    /// The duality gap, an upper bound on Psi - Psi* (`model::dual`); `None` where the
    /// problem has none in closed form or the backend does not compute it.
    #[serde(default)]
    pub gap: Option<f64>,
    /// Nonzero coordinates (intercept excluded).
    pub nnz: u64,
    /// Test metrics when a test set was given.
    pub test: Option<TestMetrics>,
    /// Pushes rejected for exceeding the delay bound, so far.
    pub rejected: u64,
    /// Throughput since the start of training (training time).
    pub samples_per_sec: f64,
    pub updates_per_sec: f64,
}

/// A run as planned, once the data is known: what observers see first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub algorithm: String,
    /// Why `algorithm = "auto"` chose the algorithm; empty when it was given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm_note: String,
    pub loss: String,
    pub reg: String,
    pub lambda: f64,
    /// The smallest lambda at which every weight is zero (on the monitored rows), where
    /// the regularizer has one ([`crate::model::objective::Objective::lambda_max`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_max: Option<f64>,
    pub workers: usize,
    pub blocks: usize,
    pub batch: usize,
    pub rows: usize,
    /// Number of features d of the data (before any compaction).
    pub features: usize,
    /// Features held by the shards when the ids were compacted (`--compact-features`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_features: Option<usize>,
    pub classes: usize,
    pub nnz: usize,
    /// Initial step size eta0.
    pub eta0: f64,
    /// How eta0 was chosen, in words.
    pub step_note: String,
    /// Block updates in one epoch: every block has received, in expectation, the gradient
    /// of every row once.
    pub updates_per_epoch: f64,
    pub max_updates: Option<u64>,
    pub max_seconds: Option<f64>,
    pub target_objective: Option<f64>,
    /// Rows the monitored objective is computed on (all, or a fixed subsample).
    pub eval_rows: usize,
    /// The process layout of a multi-process run (roles and rows per rank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A cheap progress report between evaluations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    pub updates: u64,
    pub epochs: f64,
    pub train_secs: f64,
    /// Psi at the last evaluation.
    pub psi: f64,
}

/// A sink for a run's events: log files, progress bars, plots. Every method has a
/// default that ignores the event.
pub trait Observe {
    fn on_start(&mut self, _info: &RunInfo) -> crate::Result<()> {
        Ok(())
    }
    fn on_progress(&mut self, _p: &Progress) {}
    fn on_eval(&mut self, _rec: &EvalRecord) -> crate::Result<()> {
        Ok(())
    }
    /// Called once, after the last evaluation, with the final record; a sink that
    /// writes a file commits it here.
    fn on_finish(&mut self, _last: &EvalRecord) -> crate::Result<()> {
        Ok(())
    }
}

/// The run's log as a stream of JSON lines, each written whole and at once, so that
/// `tail -f` and dashboards follow a run as it goes and a run that dies leaves every line
/// up to that point. Every record has a `type` and a `time` (UTC, RFC 3339):
/// - `start`, first: the asyb version, what the caller describes of the run (`run`: the
///   command line, every setting, the data's fingerprint) and the run as planned
///   (`info`, a [`RunInfo`]);
/// - `eval`: one per evaluation, the [`EvalRecord`]'s fields;
/// - `summary`, last when the run ends: what the caller reports ([`JsonLinesSink::summary`]).
///
/// The log is written in place, created (or emptied) when the run starts, so that a run
/// refused before it starts leaves no log; the model and the plot, by contrast, appear
/// whole or not at all.
pub struct JsonLinesSink {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    run: serde_json::Value,
}

impl JsonLinesSink {
    /// The log at `path`, whose directory must exist (checked here, before any work);
    /// `run` describes the run in the first record.
    pub fn create(path: &std::path::Path, run: serde_json::Value) -> crate::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        std::fs::metadata(dir).map_err(|e| crate::Error::io(path, e))?;
        Ok(JsonLinesSink {
            path: path.to_path_buf(),
            file: None,
            run,
        })
    }

    /// Writes `fields` as one line, with the record's `type` and `time` first.
    fn line(&mut self, kind: &str, fields: &impl Serialize) -> crate::Result<()> {
        use std::io::Write;
        #[derive(Serialize)]
        struct Record<'a, T: Serialize> {
            #[serde(rename = "type")]
            kind: &'a str,
            time: String,
            #[serde(flatten)]
            fields: &'a T,
        }
        let record = Record {
            kind,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            fields,
        };
        let mut s =
            serde_json::to_string(&record).map_err(|e| crate::Error::io(&self.path, e.into()))?;
        s.push('\n');
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                std::fs::File::create(&self.path).map_err(|e| crate::Error::io(&self.path, e))?,
            ),
        };
        // One write per line: a reader sees whole lines.
        file.write_all(s.as_bytes())
            .map_err(|e| crate::Error::io(&self.path, e))
    }

    /// The last record: `summary` (stop reason, times, delays, ...) as the caller has it.
    pub fn summary(&mut self, summary: &impl Serialize) -> crate::Result<()> {
        #[derive(Serialize)]
        struct Summary<'a, T: Serialize> {
            summary: &'a T,
        }
        self.line("summary", &Summary { summary })
    }
}

impl Observe for JsonLinesSink {
    fn on_start(&mut self, info: &RunInfo) -> crate::Result<()> {
        #[derive(Serialize)]
        struct Start<'a> {
            version: &'a str,
            run: &'a serde_json::Value,
            info: &'a RunInfo,
        }
        let run = std::mem::take(&mut self.run);
        self.line(
            "start",
            &Start {
                version: env!("CARGO_PKG_VERSION"),
                run: &run,
                info,
            },
        )
    }
    fn on_eval(&mut self, rec: &EvalRecord) -> crate::Result<()> {
        self.line("eval", rec)
    }
}
