"""scikit-learn estimators over asyb's trainer.

Both estimators minimize ``mean(loss) + alpha * penalty(w)`` over the weights and an
unpenalized intercept. ``fit`` hands the CSR arrays to the library, which reads them in
place where their types allow (int32 indices, float32 values, int64 row pointers) and
trains with the GIL released. Ctrl-C during ``fit`` stops training and raises
``KeyboardInterrupt``; the estimator keeps its previous state (unfitted if it was).
"""

import json
import logging
import math
import numbers
import os
import warnings

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model._base import LinearClassifierMixin, LinearModel, SparseCoefMixin
from sklearn.utils import check_random_state
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _asyb

logger = logging.getLogger("asyb")

# scikit-learn's penalty names that differ from asyb's.
_PENALTIES = {"elasticnet": "elastic-net", None: "none"}
_LOSSES = {"squared_error": "squared", "huber": "huber"}
_I32_MAX = np.iinfo(np.int32).max
# asyb's config keys of the estimators' parameters whose names differ.
_PARAM_NAMES = {
    "reg": "penalty",
    "lambda": "alpha",
    "l1-ratio": "l1_ratio",
    "bias": "fit_intercept",
    "epochs": "max_iter",
    "workers": "n_jobs",
    "seed": "random_state",
    "batch": "batch_size",
    "variance-reduction": "variance_reduction",
    "huber-delta": "epsilon",
}
# Stops at a budget rather than at convergence (asyb's stop reasons).
_BUDGETS = ("epochs", "max-iters", "max-updates", "max-seconds")


def _csr_arrays(X):
    """The CSR arrays the library reads: int64 row pointers, int32 indices, float32
    values (``None`` when every value is 1), canonical (sorted, no duplicates). Arrays
    already of those types are passed as they are."""
    X = sp.csr_matrix(X) if not sp.issparse(X) or X.format != "csr" else X
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    if X.shape[1] > _I32_MAX:
        raise ValueError(f"X has {X.shape[1]} features: at most {_I32_MAX} are supported")
    indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(X.indices, dtype=np.int32)
    with np.errstate(over="ignore"):
        data = np.ascontiguousarray(X.data, dtype=np.float32)
    if data.size and not np.all(np.isfinite(data)):
        raise ValueError("X holds a value that is not finite in float32")
    if np.all(data == 1.0):
        data = None
    return indptr, indices, data


def _weighted_rows(X, y, sample_weight):
    """The rows with a positive weight, and their weights (``None`` when unweighted):
    a row of weight 0 is a row left out, exactly."""
    if sample_weight is None:
        return X, y, None
    sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if not np.all(np.isfinite(sw.astype(np.float32))):
        raise ValueError("sample_weight holds a value that is not finite in float32")
    keep = sw > 0
    if not keep.all():
        X, y, sw = X[keep], y[keep], sw[keep]
    return X, y, sw


def _seed(random_state):
    if random_state is None:
        return 1
    if isinstance(random_state, numbers.Integral):
        return int(random_state) % (2**63)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


class _SparseLinear(BaseEstimator):
    """What both estimators share: the settings, ``fit``'s call into the library, the
    fitted attributes and model files."""

    def _params(self, loss, n_samples):
        penalty = _PENALTIES.get(self.penalty, self.penalty)
        n_jobs = self.n_jobs
        if n_jobs is not None and n_jobs < 0:
            n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        if n_jobs is None and n_samples:
            # The default, one worker per core, as far as there are rows to share.
            n_jobs = max(1, min(os.cpu_count() or 1, n_samples))
        params = {
            "loss": loss,
            "reg": penalty,
            "lambda": float(self.alpha),
            "l1-ratio": float(self.l1_ratio),
            "bias": bool(self.fit_intercept),
            "tol": None if self.tol is None else float(self.tol),
            "epochs": None if self.max_iter is None else float(self.max_iter),
            "workers": n_jobs,
            "seed": _seed(self.random_state),
            "algorithm": self.algorithm,
            "blocks": self.blocks,
            "batch": self.batch_size,
            "step": self.step if self.step is None or isinstance(self.step, str) else float(self.step),
            "variance-reduction": self.variance_reduction,
            "compact-features": "auto",
        }
        params.update(self._loss_params())
        return params

    def _loss_params(self):
        return {}

    def _check_params(self, params):
        """Checks the settings as the library will; its errors name asyb's keys, which
        are given here the names of the estimator's parameters."""
        try:
            _asyb.check_params(params)
        except ValueError as e:
            msg = str(e)
            for key, name in _PARAM_NAMES.items():
                prefix = f"invalid {key}:"
                if msg.startswith(prefix):
                    msg = f"invalid {name} ({key} in asyb):" + msg[len(prefix) :]
                    break
            raise ValueError(msg) from None

    def _train(self, X, y_lib, loss, classes, sample_weight=None):
        """Trains on ``X`` (validated) with labels as the library takes them and the
        rows' weights (positive, or ``None``), then sets the fitted attributes. Returns
        nothing; raises on failure, leaving ``self`` as it was."""
        params = self._params(loss, X.shape[0])
        self._check_params(params)
        d = X.shape[1]
        indptr, indices, data = _csr_arrays(X)
        init = None
        if self.warm_start and getattr(self, "_weights", None) is not None:
            if self._weights.shape == ((d + 1) * classes,):
                init = self._weights
        progress = self._progress if self.verbose else None
        weights, summary = _asyb.train(
            indptr,
            indices,
            data,
            np.ascontiguousarray(y_lib, dtype=np.float32),
            d,
            params,
            init,
            progress,
            None if sample_weight is None else np.ascontiguousarray(sample_weight, np.float32),
        )
        summary = json.loads(summary)
        records = summary["records"]
        self._weights = weights
        self._params_ = params
        self._classes_k = classes
        self.history_ = records
        self.n_iter_ = int(math.ceil(records[-1]["epochs"] - 1e-9)) if records else 0
        self.stop_reason_ = summary["stop_reason"]
        self.algorithm_ = summary["info"]["algorithm"]
        self.objective_ = records[-1]["psi"] if records else float("nan")
        if self.stop_reason_ in _BUDGETS:
            warnings.warn(
                f"asyb stopped at its budget (max_iter={self.max_iter}) before reaching "
                f"tol; raise max_iter or tol",
                ConvergenceWarning,
            )
        self._set_coef(weights, d, classes)

    def _progress(self, record):
        r = json.loads(record)
        if not logger.hasHandlers():
            logging.basicConfig(level=logging.INFO)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.info(
            "epoch %.2f  objective %.6e  ||P||^2 %.3e  nnz %d  %.2fs",
            r["epochs"],
            r["psi"],
            r["pgm_sq_norm"],
            r["nnz"],
            r["train_secs"],
        )

    @property
    def sparse_coef_(self):
        """``coef_`` as a scipy CSR matrix."""
        check_is_fitted(self)
        return sp.csr_matrix(np.atleast_2d(self.coef_))

    def save(self, path):
        """Writes the model as an asyb model file, which ``asyb predict`` and
        ``asyb.load_model`` read."""
        check_is_fitted(self)
        classes = getattr(self, "classes_", None)
        extra = {"trainer": "asyb (Python)"}
        labels = []
        if classes is not None:
            if np.issubdtype(np.asarray(classes).dtype, np.number):
                labels = [float(c) for c in classes]
            else:
                extra["python_classes"] = json.dumps([str(c) for c in classes])
        _asyb.save_model(
            os.fspath(path),
            self._weights_of_coef(),
            self.n_features_in_,
            self._classes_k,
            bool(self.fit_intercept),
            self._params_,
            labels,
            extra,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class SparseLogisticRegression(LinearClassifierMixin, SparseCoefMixin, _SparseLinear):
    """Logistic regression with an L1 (default), elastic-net, L2 or no penalty: binary,
    or multi-class through softmax (multinomial).

    Minimizes ``mean(log loss) + alpha * penalty(w)``, the objective of
    ``SGDClassifier(loss="log_loss")`` and of ``LogisticRegression`` with
    ``C = 1 / (alpha * n_samples)``.

    Parameters
    ----------
    alpha : float, default=1e-4
        Regularization strength (asyb's ``lambda``).
    penalty : {"l1", "elasticnet", "l2", None}, default="l1"
        Also asyb's own names: "nonneg", "box", "group-lasso".
    l1_ratio : float, default=0.5
        Elastic net: ``alpha * (l1_ratio * |w|_1 + (1 - l1_ratio) / 2 * |w|_2^2)``.
    fit_intercept : bool, default=True
    tol : float or None, default=None
        Stop once ``||P(w)|| <= tol * ||P(0)||`` (the prox-gradient mapping, LIBLINEAR's
        ``-e`` measure); None: asyb's default (3e-4).
    max_iter : float or None, default=None
        Budget in epochs (iterations of ``cd``/``fista``); None: asyb's default (100).
    n_jobs : int or None, default=None
        Worker threads; None: the number of cores.
    random_state : int, RandomState or None, default=None
        Seed of the minibatch and block sampling; None: asyb's fixed default seed.
    warm_start : bool, default=False
        Start from the previous fit's weights (same features and classes).
    verbose : int, default=0
        Log each evaluation through the ``asyb`` logger.
    algorithm : str, default="auto"
        "auto", "cd", "fista", "asyb", ... (see ``asyb train --help``).
    blocks, batch_size, step, variance_reduction
        asyb's own settings (None/"auto": automatic).

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Epochs (iterations) run.
    history_ : list of dict
        Every evaluation: epochs, updates, train_secs, psi (objective), pgm_sq_norm,
        gap, nnz, ...
    stop_reason_, algorithm_, objective_
    """

    def __init__(
        self,
        alpha=1e-4,
        *,
        penalty="l1",
        l1_ratio=0.5,
        fit_intercept=True,
        tol=None,
        max_iter=None,
        n_jobs=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        algorithm="auto",
        blocks=None,
        batch_size=None,
        step="auto",
        variance_reduction="auto",
    ):
        self.alpha = alpha
        self.penalty = penalty
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.algorithm = algorithm
        self.blocks = blocks
        self.batch_size = batch_size
        self.step = step
        self.variance_reduction = variance_reduction

    def fit(self, X, y, sample_weight=None):
        """Fits on ``X`` (scipy.sparse CSR or CSC, or a numpy array) and labels ``y``,
        each row's loss weighted by ``sample_weight`` where given (a row of weight 2
        counts as two copies of it)."""
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=("csr", "csc"),
            dtype=(np.float32, np.float64),
            accept_large_sparse=True,
        )
        check_classification_targets(y)
        X, y, sw = _weighted_rows(X, y, sample_weight)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                "SparseLogisticRegression needs samples of at least 2 classes in the "
                f"data, but the data contains only one class: {classes[0]!r}"
            )
        if len(classes) == 2:
            loss, k = "logistic", 1
        else:
            loss, k = "softmax", len(classes)
        self._train(X, y_idx, loss, k, sw)
        self.classes_ = classes
        return self

    def _set_coef(self, w, d, k):
        self.coef_ = np.ascontiguousarray(w[: d * k].reshape(d, k).T)
        self.intercept_ = w[d * k :].copy()

    def _weights_of_coef(self):
        return np.concatenate([self.coef_.T.ravel(), np.asarray(self.intercept_, float)])

    def predict_proba(self, X):
        """Class probabilities, in the order of ``classes_``."""
        check_is_fitted(self)
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        return softmax(scores, copy=False)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))


class SparseLinearRegression(RegressorMixin, LinearModel, _SparseLinear):
    """Linear regression with the squared (default) or Huber loss and an L1 (default),
    elastic-net, L2 or no penalty.

    Minimizes ``mean(loss) + alpha * penalty(w)`` with the squared loss
    ``(y - x.w)^2 / 2``: with ``penalty="l1"`` the objective of ``Lasso(alpha)``, with
    ``"elasticnet"`` that of ``ElasticNet(alpha, l1_ratio)``. ``loss="huber"`` is
    quadratic within ``epsilon`` of the target and linear beyond.

    Parameters are those of ``SparseLogisticRegression`` plus ``loss``
    ("squared_error" or "huber") and ``epsilon`` (Huber's threshold, default 1.0).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    n_iter_, history_, stop_reason_, algorithm_, objective_
    """

    def __init__(
        self,
        alpha=1e-4,
        *,
        loss="squared_error",
        epsilon=1.0,
        penalty="l1",
        l1_ratio=0.5,
        fit_intercept=True,
        tol=None,
        max_iter=None,
        n_jobs=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        algorithm="auto",
        blocks=None,
        batch_size=None,
        step="auto",
        variance_reduction="auto",
    ):
        self.alpha = alpha
        self.loss = loss
        self.epsilon = epsilon
        self.penalty = penalty
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.algorithm = algorithm
        self.blocks = blocks
        self.batch_size = batch_size
        self.step = step
        self.variance_reduction = variance_reduction

    def _loss_params(self):
        return {"huber-delta": float(self.epsilon)} if self.loss == "huber" else {}

    def fit(self, X, y, sample_weight=None):
        """Fits on ``X`` (scipy.sparse CSR or CSC, or a numpy array) and targets ``y``,
        each row's loss weighted by ``sample_weight`` where given."""
        if self.loss not in _LOSSES:
            raise ValueError(
                f"loss must be one of {sorted(_LOSSES)}, got {self.loss!r}"
            )
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=("csr", "csc"),
            dtype=(np.float32, np.float64),
            y_numeric=True,
            accept_large_sparse=True,
        )
        if not np.all(np.isfinite(y.astype(np.float32))):
            raise ValueError("y holds a value that is not finite in float32")
        X, y, sw = _weighted_rows(X, y, sample_weight)
        self._train(X, y, _LOSSES[self.loss], 1, sw)
        return self

    def _set_coef(self, w, d, k):
        self.coef_ = w[:d].copy()
        self.intercept_ = float(w[d])

    def _weights_of_coef(self):
        return np.concatenate([np.ravel(self.coef_), [float(self.intercept_)]])


def load_model(path):
    """A fitted estimator from an asyb model file (written by ``asyb train --model`` or
    by ``save``): ``SparseLogisticRegression`` for logistic and softmax models,
    ``SparseLinearRegression`` for squared and Huber ones."""
    m = _asyb.load_model(os.fspath(path))
    d, k, w = m["n_features"], m["classes"], m["weights"]
    penalty = {"elastic-net": "elasticnet", "none": None}.get(m["reg"], m["reg"])
    common = dict(
        alpha=m["lambda"],
        penalty=penalty,
        l1_ratio=m["l1_ratio"],
        fit_intercept=m["bias"],
    )
    if m["loss"] in ("logistic", "softmax"):
        est = SparseLogisticRegression(**common)
        labels = m["class_labels"]
        if "python_classes" in m["extra"]:
            classes = np.array(json.loads(m["extra"]["python_classes"]))
        elif labels:
            classes = np.array(labels, dtype=np.float64)
        else:
            classes = np.arange(max(k, 2), dtype=np.float64)
        if k == 1 and len(classes) != 2:
            classes = np.array([-1.0, 1.0])
        est.classes_ = classes
    elif m["loss"] in ("squared", "huber"):
        loss = "huber" if m["loss"] == "huber" else "squared_error"
        est = SparseLinearRegression(loss=loss, epsilon=m.get("huber-delta", 1.0), **common)
    else:
        raise ValueError(
            f"{os.fspath(path)}: a {m['loss']} model has no estimator here "
            "(logistic, softmax, squared and huber do)"
        )
    est.n_features_in_ = d
    est._weights = w
    est._classes_k = k
    est._params_ = est._params(
        "huber" if m["loss"] == "huber" else m["loss"], 0
    )
    est._set_coef(w, d, k)
    return est
