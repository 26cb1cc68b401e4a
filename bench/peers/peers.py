#!/usr/bin/env python3
"""asyb against LIBLINEAR, Snap ML, skglm and Vowpal Wabbit on the same data and the
same objective: mean logistic loss + lambda ||w||_1, no intercept.

  python3 bench/peers/peers.py --list
  python3 bench/peers/peers.py --sets heart_scale,reuters-grain,rcv1-like
  python3 bench/peers/peers.py --train my.svm [--test my-test.svm] --lambda 1e-5
  python3 bench/peers/peers.py --install          # pip peers + Debian data packages

For each set it prints the time to 1e-3 and 1e-4 relative suboptimality,
(Psi - Psi*) / Psi*, fit-only and end to end, and writes results.json and one SVG
plot per set into the work directory (default /tmp/asyb-peers). See README.md here.
"""

import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SOLVERS = ["asyb", "asyb-py", "liblinear", "snapml", "skglm", "vw", "vw-sgd"]
PIP_PACKAGES = ["liblinear-multicore", "snapml", "skglm", "vowpalwabbit", "scikit-learn", "scipy", "numpy"]
DEBIAN_PACKAGES = ["liblinear-tools", "dataset-fashion-mnist", "weka", "r-cran-tm"]
CHECK_REL = 1e-6  # the tightest fit of an exact solver lands this close to Psi*, relative


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the data sets and exit")
    p.add_argument("--sets", default=None, help="comma-separated data sets, or 'all' (default: all, "
                                                "unless --train is given)")
    p.add_argument("--train", help="your own LIBSVM file (labels +1/-1 or 1/0)")
    p.add_argument("--test", help="held-out LIBSVM file for --train (test loss and accuracy of each solver)")
    p.add_argument("--lambda", dest="lam", type=float, help="lambda (default: lambda_max / --lambda-ratio)")
    p.add_argument("--lambda-ratio", type=float, default=None,
                   help="lambda = lambda_max / this, lambda_max = ||X^T y||_inf / (2n) (default: per set, see --list; 20 for --train)")
    p.add_argument("--install", action="store_true",
                   help="pip-install the peers and apt-install the data packages first (and stop there "
                        "unless --list, --sets or --train is given)")
    p.add_argument("--asyb", default=None,
                   help="asyb binary (default: asyb on PATH, else target/release/asyb in the repo)")
    p.add_argument("--asyb-args", default="", help="extra flags for every asyb training run (quoted)")
    p.add_argument("--asyb-eval-every-epochs", type=float, default=0.1,
                   help="asyb evaluation interval in epochs, for the curve's resolution; evaluations are "
                        "not counted in its times (0: asyb's own default)")
    p.add_argument("--peer-columns", choices=["used", "all"], default="used",
                   help="give LIBLINEAR, Snap ML and skglm only the columns that occur (used, default: "
                        "their time grows with empty columns of hashed data) or all of them")
    p.add_argument("--vw-args", default="", help="extra flags for every Vowpal Wabbit run (quoted)")
    p.add_argument("--workdir", default="/tmp/asyb-peers", help="data, runs and results (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads / workers for every solver that has them")
    p.add_argument("--solvers", default=",".join(SOLVERS), help="comma-separated, from " + ",".join(SOLVERS))
    p.add_argument("--url-share", type=float, default=0.1,
                   help="share of url's 2.4M x 3.2M shape that url-like has (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated sets")
    p.add_argument("--repeat", type=int, default=1, help="time every fit this many times (medians)")
    p.add_argument("--budget", type=float, default=120.0,
                   help="seconds of fits per peer and set before its sweep stops (default %(default)s)")
    p.add_argument("--stop-at", type=float, default=1e-7,
                   help="a peer's sweep stops at a fit this close (relative) to the best objective known before it")
    p.add_argument("--fista-secs", type=float, default=120.0, help="time limit of asyb's FISTA reference run")
    p.add_argument("--fista-iters", type=int, default=100000, help="iteration limit of asyb's FISTA run")
    p.add_argument("--no-fista", action="store_true", help="skip asyb's FISTA reference run")
    p.add_argument("--timeout", type=float, default=3600.0, help="limit of one asyb process, seconds")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    # OpenMP threads that spin at barriers (the default) lose whole time slices to any
    # other busy process, which turns LIBLINEAR's 0.2 ms fits into 300 ms ones on a
    # shared machine: they sleep instead, unless the environment says otherwise.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.install:
        install()
        if not (args.list or args.sets or args.train):
            return 0
    sys.dont_write_bytecode = True  # no __pycache__ beside the sources
    sys.path.insert(0, HERE)
    import peer_data
    import peer_solvers

    if args.list:
        print("data sets (--sets NAME,...):")
        for name, (_, ratio, desc) in peer_data.SETS.items():
            print(f"  {name:<15} {desc}; lambda = lambda_max/{ratio}")
        print("  or --train FILE [--test FILE] --lambda L for your own LIBSVM file")
        return 0

    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    bad = [s for s in solvers if s not in SOLVERS]
    if bad:
        print(f"error: unknown solver(s) {', '.join(bad)} (known: {', '.join(SOLVERS)})", file=sys.stderr)
        return 1
    jobs = []
    if args.train:
        jobs.append(("own", os.path.basename(args.train)))
    if args.sets or not args.train:
        names = list(peer_data.SETS) if args.sets in (None, "all") else \
            [s.strip() for s in args.sets.split(",") if s.strip()]
        bad = [s for s in names if s not in peer_data.SETS]
        if bad:
            print(f"error: unknown data set(s) {', '.join(bad)}; peers.py --list shows them", file=sys.stderr)
            return 1
        jobs += [("set", name) for name in names]

    os.makedirs(os.path.join(args.workdir, "results"), exist_ok=True)
    asyb = peer_solvers.find_asyb(args.asyb, REPO)
    env = environment(args, asyb)
    print_environment(env)
    all_results = {"environment": env, "sets": []}
    for kind, name in jobs:
        try:
            if kind == "own":
                prepared = {"train": os.path.abspath(args.train),
                            "test": os.path.abspath(args.test) if args.test else None,
                            "info": {"source": "user file"}}
                ratio = args.lambda_ratio or 20
            else:
                prep, ratio, _ = peer_data.SETS[name]
                ratio = args.lambda_ratio or ratio
                t0 = time.perf_counter()
                prepared = prep(args.workdir, {"url_share": args.url_share, "seed": args.seed})
                took = time.perf_counter() - t0
                if took > 1:
                    print(f"[{name}] prepared in {took:.1f} s", flush=True)
        except peer_data.MissingData as exc:
            print(f"\n## {name}: skipped, {exc}\n", flush=True)
            all_results["sets"].append({"name": name, "skipped": str(exc)})
            continue
        out = run_set(args, name, prepared, ratio, asyb, solvers)
        all_results["sets"].append(out)
        write_json(os.path.join(args.workdir, "results", f"{name}.json"), {"environment": env, "set": out})
        write_json(os.path.join(args.workdir, "results", "results.json"), all_results)
    env["load_average_end"] = list(os.getloadavg())
    path = os.path.join(args.workdir, "results", "results.json")
    write_json(path, all_results)
    print(f"results: {path}; load average at the end {env['load_average_end'][0]:.2f}")
    return 0


class Ctx:
    """What a solver runner needs: the data in memory, the problem, the budgets."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.best = float("inf")

    def expand(self, wp):
        """Weights over the peers' columns (self.Xp) as weights over all columns."""
        import numpy as np
        wp = np.asarray(wp, dtype=np.float64).reshape(-1)[:self.Xp.shape[1]]
        if self.cols is None:
            w = np.zeros(self.d)
            w[:len(wp)] = wp
            return w
        w = np.zeros(self.d)
        w[self.cols[:len(wp)]] = wp
        return w

    def objective(self, w):
        import numpy as np
        m = self.X @ w
        return float(np.mean(np.logaddexp(0.0, -self.y * m)) + self.lam * np.abs(w).sum())

    def note_psi(self, psi):
        self.best = min(self.best, psi)

    def rel(self, psi):
        return (psi - self.best) / abs(self.best) if self.best < float("inf") else float("inf")


def load(path, n_features=None):
    """CSR (float64, int32 indices), labels +1/-1, the index base, seconds."""
    import numpy as np
    from sklearn.datasets import load_svmlight_file
    t0 = time.perf_counter()
    try:
        X, y = load_svmlight_file(path, zero_based=False, n_features=n_features)
        base = 1
    except ValueError:
        X, y = load_svmlight_file(path, zero_based=True, n_features=n_features)
        base = 0
    X = X.tocsr()
    if X.indices.dtype != np.int32:
        X.indices = X.indices.astype(np.int32)
        X.indptr = X.indptr.astype(np.int32) if X.nnz < 2 ** 31 else X.indptr
    secs = time.perf_counter() - t0
    labels = np.unique(y)
    if len(labels) > 2:
        raise ValueError(f"{path}: {len(labels)} classes; the benchmark is binary")
    y = np.where(y == labels.max(), 1.0, -1.0) if len(labels) == 2 else np.where(y > 0, 1.0, -1.0)
    return X, y, base, secs


def used_columns(X):
    """X restricted to the columns that occur in it (ids renumbered in order), the
    kept column ids (None when every column occurs) and the seconds it took."""
    import numpy as np
    import scipy.sparse as sp
    t0 = time.perf_counter()
    counts = np.bincount(X.indices, minlength=X.shape[1])
    cols = np.flatnonzero(counts)
    if len(cols) == X.shape[1]:
        return X, None, time.perf_counter() - t0
    remap = np.full(X.shape[1], -1, dtype=np.int32)
    remap[cols] = np.arange(len(cols), dtype=np.int32)
    Xp = sp.csr_matrix((X.data, remap[X.indices], X.indptr), shape=(X.shape[0], len(cols)))
    return Xp, cols, time.perf_counter() - t0


def run_set(args, name, prepared, ratio, asyb, solvers):
    import numpy as np
    import peer_report
    import peer_solvers

    train = prepared["train"]
    X, y, base, load_secs = load(train)
    n, d = X.shape
    lam_max = float(np.abs(X.T @ y).max() / (2 * n))
    lam = args.lam if args.lam is not None else lam_max / ratio
    if args.peer_columns == "used":
        Xp, cols, compact_secs = used_columns(X)
    else:
        Xp, cols, compact_secs = X, None, 0.0
    rundir = os.path.join(args.workdir, "runs", name)
    os.makedirs(rundir, exist_ok=True)
    ctx = Ctx(X=X, y=y, n=n, d=d, lam=lam, train=train, rundir=rundir, threads=args.threads,
              repeat=max(1, args.repeat), asyb=asyb, asyb_args=args.asyb_args.split(), vw_args=args.vw_args.split(),
              asyb_eval_epochs=args.asyb_eval_every_epochs, timeout=args.timeout, fista_iters=args.fista_iters,
              fista_secs=args.fista_secs, stop_at=args.stop_at, budget_secs=args.budget,
              load_secs=load_secs, index_base=base, Xp=Xp, cols=cols,
              compact_secs=compact_secs)
    info = prepared.get("info", {})
    lam_note = f"lambda_max/{ratio:g}" if args.lam is None else "given"
    print(f"\n## {name}\n", flush=True)
    if info.get("source"):
        print(f"{info['source']}")
    print(f"{n} rows x {d} features, {X.nnz} nonzeros ({X.nnz / n:.1f} per row), "
          f"{np.mean(y > 0):.1%} positive; file {train}")
    print(f"lambda = {lam:.6g} ({lam_note}; lambda_max = {lam_max:.6g}); "
          f"sklearn load_svmlight_file {load_secs:.3f} s", flush=True)
    if cols is not None:
        print(f"{len(cols)} of the {d} columns occur: the Python peers get those only "
              f"({compact_secs:.3f} s, counted in their end-to-end times; --peer-columns all to keep them all)")

    results = []
    if "asyb" in solvers and asyb and not args.no_fista:
        r = peer_solvers.run_asyb_fista(ctx)
        results.append(r)
        if r["final_w"] is not None:
            ctx.note_psi(ctx.objective(r["final_w"]))
        print(f"  asyb fista reference: {r['status']} {r['note']}", flush=True)
    for s in solvers:
        t0 = time.perf_counter()
        r = peer_solvers.RUNNERS[s](ctx)
        results.append(r)
        if r.get("psi_script_final") is not None:
            ctx.note_psi(r["psi_script_final"])
        for run in r.get("extra", {}).get("runs", []) if s == "asyb" else []:
            ctx.note_psi(run["psi_script"])
        msg = r["note"] if r["status"] == "ok" else f"{r['status']}: {r['note']}"
        print(f"  {r['label']}: {len(r['fit'])} points, {time.perf_counter() - t0:.1f} s; {msg}",
              flush=True)

    # Psi*: the smallest objective any solver's weights reach, computed here in float64.
    cands = []
    for r in results:
        if r["status"] != "ok":
            continue
        if r["name"] == "asyb":
            cands += [(run["psi_script"], "asyb") for run in r["extra"].get("runs", [])]
        elif r["name"] == "asyb-fista":
            cands.append((ctx.objective(r["final_w"]), "asyb fista"))
        else:
            cands += [(p["psi"], r["label"]) for p in r["fit"]]
    if not cands:
        print("no solver ran; nothing to compare")
        return {"name": name, "skipped": "no solver ran"}
    psi_star, star_from = min(cands)
    best_w = None
    for r in results:
        if r["status"] == "ok" and r["final_w"] is not None and best_w is None:
            if abs(ctx.objective(r["final_w"]) - psi_star) <= 1e-12 * abs(psi_star):
                best_w = r["final_w"]
    nnz_star = int(np.count_nonzero(best_w)) if best_w is not None else None

    print(f"Psi* = {psi_star:.12g} (from {star_from}; optimum nnz {nnz_star})\n")
    print(peer_report.table(results, psi_star))
    # The objective of each solver's tightest fit (its largest budget): the exact
    # solvers should all land on Psi*, within CHECK_REL; one that does not has a wrong
    # mapping (or, for asyb, stopped by its own rule first).
    print("\ntightest fit (largest budget) of each solver, objective computed here (float64):")
    checks = []
    for r in results:
        if r["status"] != "ok" or r["final_w"] is None:
            continue
        psi = ctx.objective(r["final_w"])
        rr = peer_report.rel(psi, psi_star)
        flag = ""
        if rr > CHECK_REL:
            if r["name"].startswith("vw"):
                flag = "   (online: not solved to the optimum)"
            elif r["name"] == "asyb":
                stop = r["extra"]["runs"][-1]["summary"].get("stop_reason", "?")
                flag = f"   (stopped by its own rule first: {stop})"
            elif r["name"] == "asyb-fista":
                flag = f"   (stopped first: {r['extra']['summary'].get('stop_reason', '?')})"
            else:
                flag = f"   <- not within {CHECK_REL:g} of Psi* (sweep ended: {r['extra'].get('sweep_end')})"
        extra = ""
        if r["name"] == "asyb":
            diffs = r["extra"].get("log_vs_script", [])
            if diffs:
                extra = f"; its log's psi differs by {max(x['rel_diff'] for x in diffs):.1e} (relative)"
        print(f"  {r['label']:<48} Psi {psi:.12g}  rel {rr:.2e}  nnz {np.count_nonzero(r['final_w'])}"
              f"{extra}{flag}")
        checks.append({"solver": r["name"], "psi": psi, "rel": rr, "nnz": int(np.count_nonzero(r["final_w"]))})

    test_metrics = []
    if prepared.get("test"):
        try:
            Xt, yt, _, _ = load(prepared["test"])
            if Xt.shape[1] < d:
                Xt.resize((Xt.shape[0], d))
            Xt = Xt[:, :d]
            print(f"\ntest set {prepared['test']} ({Xt.shape[0]} rows), tightest fit of each solver:")
            for r in results:
                if r["status"] == "ok" and r["final_w"] is not None:
                    m = Xt @ r["final_w"]
                    loss = float(np.mean(np.logaddexp(0.0, -yt * m)))
                    acc = float(np.mean(np.where(m > 0, 1.0, -1.0) == yt))
                    test_metrics.append({"solver": r["name"], "logloss": loss, "accuracy": acc})
                    print(f"  {r['label']:<48} logloss {loss:.5f}  accuracy {acc:.4f}")
        except Exception as exc:  # noqa: BLE001
            print(f"test set not evaluated: {exc}")

    svg = os.path.join(args.workdir, "results", f"{name}.svg")
    peer_report.svg_plot(svg, f"{name}: {n} x {d}, lambda {lam:.3g}, Psi* {psi_star:.10g}", results, psi_star)
    print(f"\nplot: {svg}")
    loadavg = os.getloadavg()
    print(f"load average {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f} (1, 5, 15 min) after {name}",
          flush=True)

    times = {}
    for r in results:
        if r["status"] != "ok" or r["name"] == "asyb-fista":
            continue
        times[r["name"]] = {}
        for kind in ("fit", "e2e"):
            runs = r.get("runs", {}).get(kind) or [r[kind]]
            for t in peer_report.TARGETS:
                times[r["name"]][f"{kind}_{t:g}"] = peer_report.time_to_runs(runs, psi_star, t)
    for r in results:
        r.pop("final_w", None)
        for p in r["fit"] + r["e2e"]:
            p["rel"] = peer_report.rel(p["psi"], psi_star)
    return {"name": name, "info": info, "train": train, "test": prepared.get("test"), "rows": n,
            "features": d, "nnz": int(X.nnz), "lambda": lam, "lambda_max": lam_max, "psi_star": psi_star,
            "psi_star_from": star_from, "optimum_nnz": nnz_star, "load_secs": load_secs,
            "times_to_target": times, "tightest": checks, "test_metrics": test_metrics,
            "solvers": results, "plot": svg, "load_average_end": list(loadavg)}


def install():
    """pip-install the peers (and numpy, scipy, scikit-learn, which the script itself
    needs) and apt-install the data packages (root)."""
    import shutil
    import subprocess
    print("pip install " + " ".join(PIP_PACKAGES), flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q"] + PIP_PACKAGES, check=False)
    if not shutil.which("apt-get"):
        print("no apt-get here: install " + " ".join(DEBIAN_PACKAGES) + " by other means", flush=True)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "install", "-y", "--no-install-recommends"] + DEBIAN_PACKAGES
    print(" ".join(apt), flush=True)
    if subprocess.run(apt, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(apt, env=env, check=False)


def environment(args, asyb):
    import subprocess
    from importlib import metadata
    versions = {}
    for pkg in ("liblinear-multicore", "snapml", "skglm", "vowpalwabbit", "scikit-learn", "scipy", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    asyb_version = None
    if asyb:
        try:
            asyb_version = subprocess.run([asyb, "--version"], capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"asyb": asyb, "asyb_version": asyb_version, "versions": versions, "cpu": cpu,
            "cores": os.cpu_count(), "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "python": platform.python_version(),
            "load_average_start": list(os.getloadavg()), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "argv": sys.argv}


def print_environment(env):
    v = env["versions"]
    print(f"asyb peer benchmark, {time.strftime('%Y-%m-%d %H:%M')}; {env['cpu']}, {env['cores']} cores, "
          f"load average {env['load_average_start'][0]:.2f}; {env['threads']} threads per solver, "
          f"OMP_WAIT_POLICY={env['omp_wait_policy']}")
    print(f"asyb: {env['asyb'] or 'not found'} ({env['asyb_version'] or '-'}); "
          + ", ".join(f"{k} {v[k] or 'missing'}" for k in ("liblinear-multicore", "snapml", "skglm",
                                                            "vowpalwabbit")))
    print("objective: mean logistic loss + lambda ||w||_1, no intercept, labels +1/-1; "
          "times to (Psi - Psi*)/Psi* <= 1e-3 and 1e-4.")
    print("fit-only: data in memory (peers: the fit call on data already converted to the format it takes; "
          "asyb: a run from its binary cache, process start + setup + training);")
    print("end to end: from the LIBSVM file (peers: sklearn load_svmlight_file + conversion + fit; asyb: "
          "process start + read + setup + training). Evaluations are not counted.", flush=True)


def write_json(path, obj):
    import json

    def default(o):
        import numpy as np
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=default)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
