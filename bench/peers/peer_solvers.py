"""The solvers of the peer benchmark: asyb (a subprocess) and the Python peers.

Every runner returns a dict:
  name, label, threads (a string), status ("ok", "skipped" or "failed"), note,
  fit: [points], e2e: [points], final_w (the weights of its tightest fit, float64),
  extra (anything worth keeping in the JSON).
A point is {"secs", "psi", "budget", "nnz"}; "psi" is filled in by the caller from the
weights (the same float64 objective for every solver), except for asyb's curves,
which come from its log (see run_asyb).
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import time
import traceback

import numpy as np


def _result(name, label, threads):
    return {"name": name, "label": label, "threads": threads, "status": "ok", "note": "",
            "fit": [], "e2e": [], "final_w": None, "extra": {}}


def _failed(res, exc):
    res["status"] = "failed"
    res["note"] = f"{type(exc).__name__}: {exc}".strip()
    res["extra"]["traceback"] = traceback.format_exc()
    return res


def _skipped(res, note):
    """The result of a solver that cannot run here, with why."""
    res["status"] = "skipped"
    res["note"] = note
    return res


# --------------------------------------------------------------------------- asyb

def find_asyb(path, repo_root):
    if path:
        return path if (os.path.exists(path) or shutil.which(path)) else None
    p = shutil.which("asyb")
    if p:
        return p
    p = os.path.join(repo_root, "target", "release", "asyb")
    return p if os.path.exists(p) else None


def read_safetensors(path):
    """(tensors as numpy arrays, metadata) of a safetensors file, without the package."""
    with open(path, "rb") as f:
        raw = f.read()
    hlen = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + hlen])
    base = 8 + hlen
    meta = header.pop("__metadata__", {}) or {}
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
              "U32": np.uint32, "U64": np.uint64}
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=dtypes[t["dtype"]])
        out[name] = arr.reshape(t["shape"]) if t["shape"] else arr
    return out, meta


def asyb_weights(path, dim):
    """The model's weights as a float64 vector of length dim (column j = feature j of
    the data as loaded by sklearn with the same index base)."""
    t, meta = read_safetensors(path)
    w = np.asarray(t["weights"], dtype=np.float64).reshape(-1)
    if "feature_ids" in t:
        full = np.zeros(int(meta.get("features", dim)))
        full[np.asarray(t["feature_ids"], dtype=np.int64)] = w
        w = full
    out = np.zeros(dim)
    k = min(dim, len(w))
    out[:k] = w[:k]
    if len(w) > dim and np.any(w[dim:]):
        raise ValueError(f"{path}: weights beyond the data's {dim} features")
    return out


def _utc(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def asyb_run(exe, args, log, timeout):
    """Run `asyb train` with a JSON-lines log; returns (records, process wall secs,
    t_spawn, stdout, stderr)."""
    if os.path.exists(log):
        os.remove(log)
    t_spawn = time.time()
    t0 = time.perf_counter()
    p = subprocess.run([exe, "train"] + args + ["--log", log], capture_output=True, text=True,
                       timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"asyb exited {p.returncode}: {p.stderr.strip()[-500:]}")
    with open(log) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return records, wall, t_spawn, p.stdout, p.stderr


def asyb_curve(records, t_spawn):
    """Points (secs, psi) of an asyb log: secs = the time before training (process
    start, read, preparation, setup: the first evaluation's record time minus its
    wall_secs) plus train_secs (evaluations excluded)."""
    evals = [r for r in records if r.get("type") == "eval"]
    summary = next((r["summary"] for r in records if r.get("type") == "summary"), {})
    if not evals:
        return [], None, summary
    e0 = evals[0]
    before = _utc(e0["time"]) - t_spawn - float(e0["wall_secs"])
    before = max(before, 0.0)
    pts = [{"secs": before + float(e["train_secs"]), "psi": float(e["psi"]),
            "budget": f"{e.get('epochs', 0):.2f} ep", "nnz": e.get("nnz"),
            "train_secs": float(e["train_secs"])} for e in evals if e.get("psi") is not None]
    return pts, before, summary


def run_asyb(ctx):
    res = _result("asyb", "asyb", f"{ctx.threads} workers")
    exe = ctx.asyb
    if not exe:
        return _skipped(res, "no asyb binary (give --asyb PATH, or build with cargo build --release)")
    try:
        rundir = ctx.rundir
        cache = os.path.join(rundir, "train.cache")
        p = subprocess.run([exe, "convert", ctx.train, "--out", cache], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"asyb convert: {p.stderr.strip()[-300:]}")
        common = ["--lambda", repr(ctx.lam), "--no-bias", "--workers", str(ctx.threads), "--quiet",
                  "--eval-rows", str(max(ctx.n, 1000000))]
        if ctx.asyb_eval_epochs > 0:
            common += ["--eval-every-epochs", repr(ctx.asyb_eval_epochs)]
        common += ctx.asyb_args
        runs = []
        for rep in range(ctx.repeat):
            for kind, src in (("fit", cache), ("e2e", ctx.train)):
                model = os.path.join(rundir, f"asyb-{kind}-{rep}.safetensors")
                log = os.path.join(rundir, f"asyb-{kind}-{rep}.jsonl")
                records, wall, t_spawn, _, _ = asyb_run(exe, ["--train", src, "--model", model] + common,
                                                        log, ctx.timeout)
                pts, before, summary = asyb_curve(records, t_spawn)
                w = asyb_weights(model, ctx.d)
                runs.append({"kind": kind, "rep": rep, "points": pts, "before_train_secs": before,
                             "process_wall_secs": wall, "summary": summary, "w": w,
                             "psi_script": ctx.objective(w)})
        # The curves of the first repetition are drawn; times to targets use every
        # repetition (the caller takes their median).
        res["fit"] = next(r["points"] for r in runs if r["kind"] == "fit")
        res["e2e"] = next(r["points"] for r in runs if r["kind"] == "e2e")
        res["runs"] = {k: [r["points"] for r in runs if r["kind"] == k] for k in ("fit", "e2e")}
        last = [r for r in runs if r["kind"] == "e2e"][-1]
        res["final_w"] = last["w"]
        res["psi_script_final"] = last["psi_script"]
        res["psi_log_final"] = last["points"][-1]["psi"] if last["points"] else None
        s = last["summary"]
        res["note"] = (f"stopped: {s.get('stop_reason', '?')} after {s.get('epochs', 0):.1f} epochs; "
                       f"process wall {last['process_wall_secs']:.2f} s with evaluations")
        res["extra"] = {
            "runs": [{k: v for k, v in r.items() if k not in ("w", "points")} for r in runs],
            "args": common,
        }
        for r in runs:
            if r["points"]:
                gap = abs(r["points"][-1]["psi"] - r["psi_script"]) / max(abs(r["psi_script"]), 1e-300)
                r_extra = res["extra"].setdefault("log_vs_script", [])
                r_extra.append({"kind": r["kind"], "psi_log": r["points"][-1]["psi"],
                                "psi_script": r["psi_script"], "rel_diff": gap})
        return res
    except Exception as exc:  # noqa: BLE001 - a failing solver is reported, not fatal
        return _failed(res, exc)


def run_asyb_fista(ctx):
    """A tight optimum from asyb's deterministic FISTA solver (a Psi* candidate)."""
    res = _result("asyb-fista", "asyb fista (reference)", "not timed")
    if not ctx.asyb:
        return _skipped(res, "no asyb binary")
    try:
        model = os.path.join(ctx.rundir, "fista.safetensors")
        args = ["--train", ctx.train, "--algorithm", "fista", "--fista-tol", "1e-16",
                "--fista-max-iters", str(ctx.fista_iters), "--max-seconds", repr(ctx.fista_secs),
                "--lambda", repr(ctx.lam), "--no-bias", "--quiet", "--model", model,
                "--eval-rows", str(max(ctx.n, 1000000))]
        records, wall, _, out, err = asyb_run(ctx.asyb, args, os.path.join(ctx.rundir, "fista.jsonl"),
                                             ctx.timeout)
        w = asyb_weights(model, ctx.d)
        m = re.search(r"Psi\*\s*=?\s*([0-9.eE+-]+)", out + err)
        summary = next((r["summary"] for r in records if r.get("type") == "summary"), {})
        res["final_w"] = w
        res["note"] = f"{summary.get('stop_reason', '?')}, {wall:.1f} s"
        res["extra"] = {"printed_psi_star": float(m.group(1)) if m else None, "wall_secs": wall,
                        "summary": summary}
        return res
    except Exception as exc:  # noqa: BLE001
        return _failed(res, exc)


# --------------------------------------------------------------------------- sweeps

def _sweep(ctx, res, budgets, fit_one, prep_secs):
    """Fit once per budget (loosest first), time each fit, stop when a fit lands
    within ctx.stop_at of the best objective known before it (above or below: a fit
    well below it improves on it, and the sweep goes on), or the time is spent."""
    fit_one(budgets[0])  # once untimed: first-call costs (libraries, threads, page faults)
    spent = 0.0
    for b in budgets:
        times = []
        w = None
        for _ in range(ctx.repeat):
            t0 = time.perf_counter()
            w = fit_one(b)
            times.append(time.perf_counter() - t0)
        secs = float(np.median(times))
        psi = ctx.objective(w)
        pt = {"secs": secs, "psi": psi, "budget": b, "nnz": int(np.count_nonzero(w))}
        res["fit"].append(pt)
        res["e2e"].append(dict(pt, secs=secs + prep_secs))
        res["final_w"] = w
        spent += sum(times)
        settled = abs(ctx.rel(psi)) <= ctx.stop_at
        ctx.note_psi(psi)
        if settled:
            res["extra"]["sweep_end"] = "settled at the best objective"
            break
        if spent > ctx.budget_secs:
            res["extra"]["sweep_end"] = "--budget spent"
            break
    else:
        res["extra"]["sweep_end"] = "its budgets done"
    return res


def run_liblinear(ctx):
    res = _result("liblinear", "LIBLINEAR -s 6", f"{ctx.threads} threads (-m)")
    try:
        from liblinear.liblinearutil import train, problem, parameter
    except ImportError as exc:
        return _skipped(res, f"not installed ({exc}); pip install liblinear-multicore")
    try:
        # The conversion may compile a numba kernel on first use: do that on a tiny problem.
        import scipy.sparse as sp
        problem(np.array([1.0, -1.0]), sp.csr_matrix(np.eye(2)))
        t0 = time.perf_counter()
        prob = problem(ctx.y, ctx.Xp)
        conv = time.perf_counter() - t0
        C = 1.0 / (ctx.lam * ctx.n)

        def fit_one(eps):
            param = parameter(f"-s 6 -c {C!r} -B -1 -e {eps!r} -m {ctx.threads} -q")
            m = train(prob, param)
            w = np.ctypeslib.as_array(m.w, shape=(m.nr_feature,)).astype(np.float64)
            if m.get_labels()[0] != 1:
                w = -w
            return ctx.expand(w)

        budgets = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
        res["extra"] = {"C": C, "convert_secs": conv, "budget": "-e"}
        res["note"] = f"C = 1/(lambda n) = {C:.6g}; -e swept"
        return _sweep(ctx, res, budgets, fit_one, ctx.load_secs + ctx.compact_secs + conv)
    except Exception as exc:  # noqa: BLE001
        return _failed(res, exc)


def run_snapml(ctx):
    res = _result("snapml", "Snap ML (L1, primal)", f"{ctx.threads} threads")
    try:
        import snapml
    except ImportError as exc:
        return _skipped(res, f"not installed ({exc}); pip install snapml")
    try:
        import scipy.sparse as sp
        t0 = time.perf_counter()
        Xc = sp.csc_matrix(ctx.Xp)
        conv = time.perf_counter() - t0
        reg = ctx.lam * ctx.n

        def fit_one(iters):
            m = snapml.LogisticRegression(penalty="l1", regularizer=reg, fit_intercept=False,
                                          n_jobs=ctx.threads, dual=False, max_iter=int(iters), tol=1e-12)
            m.fit(Xc, ctx.y)
            w = np.asarray(m.coef_, dtype=np.float64).reshape(-1)
            classes = list(getattr(m, "classes_", [-1, 1]))
            if len(classes) == 2 and classes[1] != 1:
                w = -w
            return ctx.expand(w)

        budgets = [1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 130, 200, 300, 500, 1000, 2000]
        res["extra"] = {"regularizer": reg, "convert_secs": conv, "budget": "max_iter (tol 1e-12)"}
        res["note"] = f"regularizer = lambda n = {reg:.6g}; max_iter swept"
        return _sweep(ctx, res, budgets, fit_one, ctx.load_secs + ctx.compact_secs + conv)
    except Exception as exc:  # noqa: BLE001
        return _failed(res, exc)


def run_skglm(ctx):
    res = _result("skglm", "skglm SparseLogisticRegression", "1 thread (numba)")
    try:
        from skglm import SparseLogisticRegression
    except ImportError as exc:
        return _skipped(res, f"not installed ({exc}); pip install skglm")
    try:
        import scipy.sparse as sp
        # Compile its numba kernels on a small problem first (not timed).
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        Xw = sp.random(200, 50, density=0.1, format="csc", random_state=0)
        Xw.indices = Xw.indices.astype(np.int32)
        Xw.indptr = Xw.indptr.astype(np.int32)
        SparseLogisticRegression(alpha=1e-3, fit_intercept=False).fit(Xw, np.where(rng.random(200) < 0.5, -1.0, 1.0))
        jit = time.perf_counter() - t0
        t0 = time.perf_counter()
        Xc = sp.csc_matrix(ctx.Xp)
        Xc.indices = Xc.indices.astype(np.int32)
        Xc.indptr = Xc.indptr.astype(np.int32)
        conv = time.perf_counter() - t0

        def fit_one(tol):
            m = SparseLogisticRegression(alpha=ctx.lam, fit_intercept=False, tol=tol,
                                         max_iter=1000, max_epochs=100000)
            m.fit(Xc, ctx.y)
            w = np.asarray(m.coef_, dtype=np.float64).reshape(-1)
            if list(m.classes_)[-1] != 1:
                w = -w
            return ctx.expand(w)

        budgets = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10, 1e-12]
        res["extra"] = {"alpha": ctx.lam, "convert_secs": conv, "jit_secs": jit, "budget": "tol"}
        res["note"] = "alpha = lambda; tol swept"
        return _sweep(ctx, res, budgets, fit_one, ctx.load_secs + ctx.compact_secs + conv)
    except Exception as exc:  # noqa: BLE001
        return _failed(res, exc)


def libsvm_to_vw(src, dst):
    """LIBSVM text to Vowpal Wabbit text: 'label | id:value ...' (the ids are VW's
    feature names; an integer name maps to that weight index)."""
    with open(src) as f, open(dst + ".tmp", "w") as g:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            lab, _, rest = line.partition(" ")
            g.write(("1" if float(lab) > 0 else "-1") + " | " + rest + "\n")
    os.replace(dst + ".tmp", dst)


def run_vw(ctx, sgd=False):
    if sgd:
        res = _result("vw-sgd", "Vowpal Wabbit --sgd", "1 thread")
    else:
        res = _result("vw", "Vowpal Wabbit (defaults)", "1 thread")
    try:
        import vowpalwabbit
    except ImportError as exc:
        return _skipped(res, f"not installed ({exc}); pip install vowpalwabbit")
    try:
        vwfile = os.path.join(ctx.rundir, "train.vw")
        if not os.path.exists(vwfile) or os.path.getmtime(vwfile) < os.path.getmtime(ctx.train):
            libsvm_to_vw(ctx.train, vwfile)
        bits = max(18, int(np.ceil(np.log2(ctx.d + 2))))
        base = ctx.index_base
        tag = res["name"]
        cache = os.path.join(ctx.rundir, f"{tag}.cache")
        model_txt = os.path.join(ctx.rundir, f"{tag}.readable.txt")
        common = (f"--quiet --loss_function logistic --l1 {ctx.lam!r} --noconstant -b {bits} --holdout_off"
                  + (" --sgd" if sgd else "") + (" " + " ".join(ctx.vw_args) if ctx.vw_args else ""))

        def learn(args):
            ws = vowpalwabbit.Workspace(args)
            ws.finish()

        # The binary cache for the fit-only runs (not timed).
        if os.path.exists(cache):
            os.remove(cache)
        learn(f"{common} -d {vwfile} --cache_file {cache} --passes 1")

        def weights():
            # The readable model holds the weights before VW's pending L1 truncation
            # (l1_state, the accumulated "gravity") and L2 contraction (l2_state):
            # its predictions use sign(w) max(|w| - l1_state, 0) * l2_state.
            w = np.zeros(ctx.d)
            gravity, contraction = 0.0, 1.0
            with open(model_txt) as f:
                for line in f:
                    m = re.match(r"^(\d+):(\S+)", line)
                    if m:
                        j = int(m.group(1)) - base
                        if 0 <= j < ctx.d:
                            w[j] = float(m.group(2))
                    elif line.startswith("l1_state"):
                        gravity = float(line.split()[1])
                    elif line.startswith("l2_state"):
                        contraction = float(line.split()[1])
            return np.sign(w) * np.maximum(np.abs(w) - gravity, 0.0) * contraction

        spent = 0.0
        for passes in [1, 2, 4, 8, 16, 32]:
            cmd = f"{common} --passes {passes} --readable_model {model_txt}"
            fits, e2es = [], []
            for _ in range(ctx.repeat):
                t0 = time.perf_counter()
                learn(f"{cmd} --cache_file {cache}")
                fits.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                learn(f"{cmd} -d {vwfile} --cache_file {cache}.e2e -k")
                e2es.append(time.perf_counter() - t0)
            fit, e2e = float(np.median(fits)), float(np.median(e2es))
            w = weights()
            psi = ctx.objective(w)
            pt = {"psi": psi, "budget": passes, "nnz": int(np.count_nonzero(w))}
            res["fit"].append(dict(pt, secs=fit))
            res["e2e"].append(dict(pt, secs=e2e))
            res["final_w"] = w
            spent += sum(fits) + sum(e2es)
            if spent > ctx.budget_secs:
                break
        res["extra"] = {"bits": bits, "budget": "--passes", "args": common}
        res["note"] = "online, --l1 lambda truncates each example's step: not solved to the optimum"
        if not sgd:
            res["note"] += " (its default steps)"

        return res
    except Exception as exc:  # noqa: BLE001
        return _failed(res, exc)


def run_vw_sgd(ctx):
    return run_vw(ctx, sgd=True)


def run_asyb_python(ctx):
    """asyb's Python package (python/, `pip install ./python`): the same trainer in
    process on the matrix in memory, as the Python peers run, its `tol` swept."""
    res = _result("asyb-py", "asyb (Python, in process)", f"{ctx.threads} workers")
    try:
        from asyb import SparseLogisticRegression
    except ImportError as exc:
        return _skipped(res, f"not installed ({exc}); pip install ./python")
    try:
        import warnings

        def fit_one(tol):
            m = SparseLogisticRegression(alpha=ctx.lam, fit_intercept=False, tol=tol,
                                         n_jobs=ctx.threads, max_iter=1e6)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.fit(ctx.Xp, ctx.y)
            w = np.asarray(m.coef_, dtype=np.float64).reshape(-1)
            if list(m.classes_)[-1] != 1:
                w = -w
            return ctx.expand(w)

        budgets = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6, 1e-7, 1e-8]
        res["extra"] = {"alpha": ctx.lam, "budget": "tol"}
        res["note"] = "alpha = lambda; tol swept; fit on the peers' float64 CSR"
        return _sweep(ctx, res, budgets, fit_one, ctx.load_secs + ctx.compact_secs)
    except Exception as exc:  # noqa: BLE001
        return _failed(res, exc)


RUNNERS = {
    "asyb": run_asyb,
    "asyb-py": run_asyb_python,
    "liblinear": run_liblinear,
    "snapml": run_snapml,
    "skglm": run_skglm,
    "vw": run_vw,
    "vw-sgd": run_vw_sgd,
}
