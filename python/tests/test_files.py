"""Reading LIBSVM files against scikit-learn's reader, and model files both ways."""

import gzip
import os
import shutil
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, make_classification
from sklearn.datasets import load_svmlight_file as sk_load

import asyb
from asyb import SparseLinearRegression, SparseLogisticRegression


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def same(a, b):
    (Xa, ya), (Xb, yb) = a, b
    assert Xa.shape == Xb.shape
    assert (Xa != Xb).nnz == 0
    np.testing.assert_array_equal(ya, yb)
    assert Xa.dtype == Xb.dtype


@pytest.mark.parametrize(
    "text",
    [
        "1 1:0.5 3:2\n-1 2:1.25\n1 1:-4 2:8 4:0.125\n",  # 1-based
        "0 0:0.5 3:2\n2 2:1.25 # a comment\n1 1:-4 2:8\n",  # 0-based (auto), classes
        "3.5 1:1 2:1\n-2.25 7:1\n",  # regression targets, a gap in the ids
    ],
)
@pytest.mark.parametrize("zero_based", ["auto", True, False])
def test_reads_what_scikit_learn_reads(tmp_path, text, zero_based):
    p = write(tmp_path, "d.svm", text)
    if zero_based is False and " 0:" in text:
        with pytest.raises(ValueError, match="d.svm:1"):
            asyb.load_svmlight_file(p, zero_based=False)
        return
    for dtype in (np.float64, np.float32):
        same(
            asyb.load_svmlight_file(p, zero_based=zero_based, dtype=dtype),
            sk_load(str(p), zero_based=zero_based, dtype=dtype),
        )
    same(
        asyb.load_svmlight_file(p, n_features=12, zero_based=zero_based),
        sk_load(str(p), n_features=12, zero_based=zero_based),
    )


def test_reads_a_generated_file_and_its_compressed_copy(tmp_path):
    X, y = make_classification(500, 40, random_state=0)
    X[np.abs(X) < 1] = 0
    X = sp.csr_matrix(X.astype(np.float32))
    p = tmp_path / "g.svm"
    dump_svmlight_file(X, y, str(p), zero_based=False)
    ref = sk_load(str(p), dtype=np.float32)
    same(asyb.load_svmlight_file(p, dtype=np.float32), ref)
    with open(p, "rb") as src, gzip.open(tmp_path / "g.svm.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    same(asyb.load_svmlight_file(tmp_path / "g.svm.gz", dtype=np.float32), ref)


def test_bad_files_name_the_file_line_and_field(tmp_path):
    p = write(tmp_path, "bad.svm", "1 1:0.5\n1 2:x\n")
    with pytest.raises(ValueError, match=r"bad\.svm:2:.*value"):
        asyb.load_svmlight_file(p)
    with pytest.raises(OSError, match="missing.svm"):
        asyb.load_svmlight_file(tmp_path / "missing.svm")
    p = write(tmp_path, "wide.svm", "1 1:0.5 9:1\n")
    with pytest.raises(ValueError, match="wide.svm:1"):
        asyb.load_svmlight_file(p, n_features=4)
    with pytest.raises(ValueError, match="zero_based"):
        asyb.load_svmlight_file(p, zero_based="yes")


def test_model_files_round_trip(tmp_path):
    X, y = make_classification(300, 12, n_informative=6, n_classes=3, random_state=1)
    for est, labels in [
        (SparseLogisticRegression(alpha=1e-3), np.where(y > 0, 5.0, -2.0)),
        (SparseLogisticRegression(alpha=1e-3), y),
        (SparseLogisticRegression(alpha=1e-3), np.array(["a", "b", "c"])[y]),
        (SparseLinearRegression(alpha=1e-3, fit_intercept=False), y * 1.5),
        (SparseLinearRegression(alpha=1e-3, loss="huber", epsilon=0.5), y * 1.5),
    ]:
        est.fit(X, labels)
        path = tmp_path / "m.safetensors"
        est.save(path)
        back = asyb.load_model(path)
        assert type(back) is type(est)
        # Weights are stored in float32.
        np.testing.assert_allclose(back.coef_, est.coef_, rtol=1e-6, atol=1e-7)
        if hasattr(est, "classes_"):
            np.testing.assert_array_equal(back.predict(X), est.predict(X))
        else:
            np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-5, atol=1e-6)
        assert back.alpha == est.alpha and back.fit_intercept == est.fit_intercept
        if hasattr(est, "classes_"):
            np.testing.assert_array_equal(back.classes_, est.classes_)


def test_a_corrupt_model_file_is_refused(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="m.safetensors"):
        asyb.load_model(p)


@pytest.mark.skipif(not os.environ.get("ASYB_BIN"), reason="ASYB_BIN names no asyb binary")
def test_the_command_line_and_python_agree_on_models(tmp_path):
    X, y = make_classification(400, 25, n_informative=8, random_state=4)
    X = sp.csr_matrix(X.astype(np.float32))
    data = tmp_path / "train.svm"
    dump_svmlight_file(X, y, str(data), zero_based=False)
    model = tmp_path / "cli.safetensors"
    bin_ = os.environ["ASYB_BIN"]
    subprocess.run(
        [bin_, "train", "--train", str(data), "--lambda", "0.001", "--model", str(model),
         "--tol", "1e-8", "--quiet"],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [bin_, "predict", "--model", str(model), "--data", str(data), "--raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    cli_scores = np.array([float(s) for s in out])
    clf = asyb.load_model(model)
    np.testing.assert_allclose(clf.decision_function(X), cli_scores, rtol=1e-5, atol=1e-6)
    # The same problem fitted in Python reaches the command's objective.
    ours = SparseLogisticRegression(alpha=0.001, tol=1e-8).fit(X, y)
    np.testing.assert_allclose(ours.decision_function(X), cli_scores, rtol=1e-4, atol=1e-4)
