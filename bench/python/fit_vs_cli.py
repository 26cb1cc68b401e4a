"""The Python package against the command line and scikit-learn on one LIBSVM file.

    python3 bench/python/fit_vs_cli.py --data train.svm --asyb target/release/asyb

1. Reading: ``asyb.load_svmlight_file`` against ``sklearn.datasets.load_svmlight_file``
   (the same matrix is checked), each timed ``--repeat`` times (scikit-learn once:
   it is slow).
2. Training: ``asyb train`` on the file and ``SparseLogisticRegression.fit`` on the
   matrix already in memory, in alternated rounds, with the same settings (lambda
   ``--lambda``, no intercept, ``--epochs`` epochs, defaults otherwise): the same work.
   Reported per side: the run's wall time as the library measures it (training plus
   evaluations, from the end of setup), the whole ``fit`` call for Python (validation
   and conversion of X included), and the final objective.

The reference click-through workload is the file ``asyb bench perf --workdir D`` leaves
in D (``train.svm``, 2M rows).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import warnings

import numpy as np


def cli_run(asyb_bin, data, lam, epochs, workdir):
    log = os.path.join(workdir, "run.jsonl")
    t = time.perf_counter()
    subprocess.run(
        [asyb_bin, "train", "--train", data, "--lambda", str(lam), "--no-bias",
         "--epochs", str(epochs), "--tol", "0", "--log", log, "--quiet"],
        check=True,
        capture_output=True,
    )
    whole = time.perf_counter() - t
    records = [json.loads(line) for line in open(log)]
    summary = next(r for r in records if r["type"] == "summary")
    evals = [r for r in records if r["type"] == "eval"]
    return {
        "run_wall": evals[-1]["wall_secs"],
        "train": evals[-1]["train_secs"],
        "process": whole,
        "psi": evals[-1]["psi"],
        "stop": summary["summary"]["stop_reason"],
    }


def py_run(X, y, lam, epochs):
    from asyb import SparseLogisticRegression

    t = time.perf_counter()
    clf = SparseLogisticRegression(alpha=lam, fit_intercept=False, max_iter=epochs, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the budget is the stop here
        clf.fit(X, y)
    whole = time.perf_counter() - t
    last = clf.history_[-1]
    return {
        "run_wall": last["wall_secs"],
        "train": last["train_secs"],
        "process": whole,
        "psi": last["psi"],
        "stop": clf.stop_reason_,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--asyb", required=True, help="the asyb binary")
    ap.add_argument("--lambda", dest="lam", type=float, default=1e-6)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-sklearn", action="store_true")
    a = ap.parse_args()

    import asyb

    times = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        X, y = asyb.load_svmlight_file(a.data)
        times.append(time.perf_counter() - t)
    print(f"asyb.load_svmlight_file: median {statistics.median(times):.2f} s "
          f"({', '.join(f'{x:.2f}' for x in times)}); {X.shape[0]} rows, {X.nnz} nonzeros")
    times32 = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        asyb.load_svmlight_file(a.data, dtype=np.float32)
        times32.append(time.perf_counter() - t)
    print(f"  with dtype=float32: median {statistics.median(times32):.2f} s")
    if not a.skip_sklearn:
        from sklearn.datasets import load_svmlight_file

        t = time.perf_counter()
        Xs, ys = load_svmlight_file(a.data)
        sk = time.perf_counter() - t
        same = Xs.shape == X.shape and (Xs != X).nnz == 0 and np.array_equal(ys, y)
        print(f"sklearn load_svmlight_file: {sk:.2f} s; "
              f"{sk / statistics.median(times):.1f}x asyb's; same matrix: {same}")
        del Xs, ys

    rows = {"cli": [], "python": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeat):
            order = ["cli", "python"] if r % 2 == 0 else ["python", "cli"]
            for side in order:
                res = (cli_run(a.asyb, a.data, a.lam, a.epochs, tmp) if side == "cli"
                       else py_run(X, y, a.lam, a.epochs))
                rows[side].append(res)
                print(f"round {r + 1} {side:6s}: run wall {res['run_wall']:.2f} s, "
                      f"training {res['train']:.2f} s, whole {res['process']:.2f} s, "
                      f"objective {res['psi']:.10f} ({res['stop']})")
    med = {s: {k: statistics.median(x[k] for x in v) for k in ("run_wall", "train", "process")}
           for s, v in rows.items()}
    for k in ("run_wall", "train", "process"):
        print(f"median {k}: python {med['python'][k]:.2f} s, cli {med['cli'][k]:.2f} s, "
              f"ratio {med['python'][k] / med['cli'][k]:.2f}")


if __name__ == "__main__":
    main()
