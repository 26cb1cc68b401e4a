"""Reading LIBSVM/SVMlight files at asyb's parse speed."""

import os

import numpy as np
import scipy.sparse as sp

from . import _asyb

_BASES = {"auto": "auto", True: "zero", False: "one"}


def load_svmlight_file(f, *, n_features=None, dtype=np.float64, zero_based="auto"):
    """Read a LIBSVM/SVMlight file into ``(X, y)``, as
    ``sklearn.datasets.load_svmlight_file`` does.

    ``f`` is a path to a text file (plain, ``.gz``, ``.bz2``, ``.xz`` or ``.zst``) or to
    an asyb cache (``asyb cache``). The file is parsed on every core.

    Returns ``X``, a ``scipy.sparse.csr_matrix`` of shape ``(n_samples, n_features)``
    with sorted indices, and ``y``, a float64 array. Values are parsed at float32
    precision (asyb's own), then cast to ``dtype``; with ``dtype=np.float32`` nothing is
    copied. ``zero_based`` is ``"auto"`` (0-based when any row holds index 0, as
    scikit-learn decides), ``True`` or ``False``. Errors name the file, the line and the
    field; a missing file raises ``OSError``, a malformed one ``ValueError``.
    """
    if isinstance(f, (bytes, bytearray)):
        f = os.fsdecode(f)
    if not isinstance(f, (str, os.PathLike)):
        raise TypeError("load_svmlight_file reads a path (str or os.PathLike)")
    if zero_based not in _BASES:
        raise ValueError(f"zero_based must be 'auto', True or False, got {zero_based!r}")
    if n_features is not None:
        n_features = int(n_features)
        if n_features < 1:
            raise ValueError(f"n_features must be positive, got {n_features}")
    indptr, indices, data, y, d, _one_based = _asyb.load_svmlight(
        os.fspath(f), n_features, _BASES[zero_based]
    )
    data = data if np.dtype(dtype) == np.float32 else data.astype(dtype)
    X = sp.csr_matrix((data, indices, indptr), shape=(len(y), d), copy=False)
    X.has_sorted_indices = True
    return X, y.astype(np.float64)
