"""asyb: sparse linear models (L1-regularized logistic regression and its relatives)
trained with asyb's solvers, as scikit-learn estimators.

    >>> from asyb import SparseLogisticRegression
    >>> clf = SparseLogisticRegression(alpha=1e-4).fit(X, y)   # X: scipy.sparse or numpy

The objective is the mean loss plus ``alpha`` times the penalty, as in scikit-learn's
``SGDClassifier``: ``C = 1 / (alpha * n_samples)`` in ``LogisticRegression`` terms.
"""

from ._asyb import __version__
from ._estimators import SparseLinearRegression, SparseLogisticRegression, load_model
from ._io import load_svmlight_file

__all__ = [
    "SparseLogisticRegression",
    "SparseLinearRegression",
    "load_model",
    "load_svmlight_file",
    "__version__",
]
