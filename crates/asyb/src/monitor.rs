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
