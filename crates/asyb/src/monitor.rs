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
    pub loss: String,
    pub reg: String,
    pub lambda: f64,
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

/// Writes one JSON object per line: the run info first (`{"info": ...}`), then every
/// evaluation record. Lines go to a temporary file beside the target, renamed over it
/// when the run finishes, so an interrupted or failed run leaves no partial log where
/// the log was asked for.
pub struct JsonLinesSink {
    path: std::path::PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
}

impl JsonLinesSink {
    /// Prepares the log at `path` (its directory must exist).
    pub fn create(path: &std::path::Path) -> crate::Result<Self> {
        let tmp = crate::io::temp_beside(path)?;
        Ok(JsonLinesSink {
            path: path.to_path_buf(),
            tmp: Some(tmp),
        })
    }

    fn line(&mut self, v: &impl Serialize) -> crate::Result<()> {
        use std::io::Write;
        let path = self.path.clone();
        if let Some(tmp) = self.tmp.as_mut() {
            let mut s = serde_json::to_string(v).map_err(|e| crate::Error::io(&path, e.into()))?;
            s.push('\n');
            tmp.write_all(s.as_bytes())
                .map_err(|e| crate::Error::io(&path, e))?;
        }
        Ok(())
    }
}

impl Observe for JsonLinesSink {
    fn on_start(&mut self, info: &RunInfo) -> crate::Result<()> {
        #[derive(Serialize)]
        struct Info<'a> {
            info: &'a RunInfo,
        }
        self.line(&Info { info })
    }
    fn on_eval(&mut self, rec: &EvalRecord) -> crate::Result<()> {
        self.line(rec)
    }
    fn on_finish(&mut self, _last: &EvalRecord) -> crate::Result<()> {
        if let Some(tmp) = self.tmp.take() {
            crate::io::persist(tmp, &self.path)?;
        }
        Ok(())
    }
}
