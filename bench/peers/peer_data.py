"""Data sets of the peer benchmark, prepared as LIBSVM files with labels +1/-1.

Real sets come from Debian packages (liblinear-tools, dataset-fashion-mnist, weka,
r-cran-tm); generated sets have the shapes of rcv1, news20, real-sim and url, with
Zipf-skewed feature frequencies and labels drawn from a planted sparse logistic model.
Every set is written once into the work directory and reused while its parameters
(stored beside it as JSON) are unchanged.
"""

import gzip
import json
import math
import os
import re
import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import scipy.sparse as sp

FORMAT_VERSION = 1
HASH_BITS = 20

HEART = "/usr/share/doc/liblinear-tools/examples/heart_scale"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
WEKA_DIR = "/usr/share/doc/weka/examples"
TM_DIR = "/usr/lib/R/site-library/tm/texts"


# --------------------------------------------------------------------------- writing

def write_libsvm(path, X, y, binary=False, chunk=4096):
    """Write CSR rows as 1-based LIBSVM text (values with 6 significant digits),
    atomically (a temporary file renamed into place)."""
    X = X.tocsr()
    X.sort_indices()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for s in range(0, X.shape[0], chunk):
            e = min(s + chunk, X.shape[0])
            ip = X.indptr[s:e + 1]
            a, b = int(ip[0]), int(ip[-1])
            idx = X.indices[a:b].astype(np.int64) + 1
            counts = np.diff(ip)
            labels = ["+1" if v > 0 else "-1" for v in y[s:e]]
            if binary:
                fmt = "".join(lab + " %d:1" * int(c) + "\n" for lab, c in zip(labels, counts))
                f.write(fmt % tuple(idx.tolist()))
            else:
                flat = np.empty(2 * (b - a))
                flat[0::2] = idx
                flat[1::2] = X.data[a:b]
                fmt = "".join(lab + " %d:%.6g" * int(c) + "\n" for lab, c in zip(labels, counts))
                f.write(fmt % tuple(flat.tolist()))
    os.replace(tmp, path)


def _cached(workdir, name, params):
    """Paths of a prepared set, and whether the files there match these parameters."""
    d = os.path.join(workdir, "data")
    os.makedirs(d, exist_ok=True)
    meta_path = os.path.join(d, name + ".json")
    params = dict(params, format_version=FORMAT_VERSION)
    ok = False
    if os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            ok = meta.get("params") == params and all(
                os.path.exists(os.path.join(d, p)) for p in meta.get("files", {}).values() if p)
        except (OSError, ValueError):
            ok = False
    return d, meta_path, params, ok


def _finish(d, meta_path, params, files, info):
    meta = {"params": params, "files": files, "info": info}
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(meta_path + ".tmp", meta_path)
    return _result(d, meta)


def _result(d, meta):
    files = meta["files"]
    return {
        "train": os.path.join(d, files["train"]),
        "test": os.path.join(d, files["test"]) if files.get("test") else None,
        "info": meta["info"],
    }


def _load_meta(meta_path, d):
    with open(meta_path) as f:
        return _result(d, json.load(f))


def _shape_info(X, y):
    n, dim = X.shape
    return {"rows": int(n), "features": int(dim), "nnz": int(X.nnz),
            "nnz_per_row": round(X.nnz / max(n, 1), 1),
            "positives": round(float(np.mean(y > 0)), 4)}


# --------------------------------------------------------------------------- text

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def hash_text(docs, bits=HASH_BITS):
    """Word unigrams and bigrams (lower case), hashed with CRC32 into 2^bits columns;
    log-TF values (1 + ln count), rows scaled to unit L2 norm."""
    mask = (1 << bits) - 1
    rows, cols = [], []
    for i, text in enumerate(docs):
        words = TOKEN.findall(text.lower())
        grams = words + [a + " " + b for a, b in zip(words, words[1:])]
        for g in grams:
            rows.append(i)
            cols.append(zlib.crc32(g.encode("utf-8")) & mask)
    data = np.ones(len(rows))
    X = sp.coo_matrix((data, (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
                      shape=(len(docs), 1 << bits)).tocsr()
    X.sum_duplicates()
    X.data = 1.0 + np.log(X.data)
    _normalize_rows(X)
    return X


def _normalize_rows(X):
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    X.data /= np.repeat(norms, np.diff(X.indptr))


def read_arff_text(path):
    """(texts, labels) of a weka ARFF file with one quoted string attribute and a
    {0,1} class, as in weka's ReutersCorn / ReutersGrain examples."""
    texts, labels = [], []
    in_data = False
    with open(path, encoding="latin-1") as f:
        for line in f:
            line = line.rstrip("\n")
            if not in_data:
                if line.strip().lower() == "@data":
                    in_data = True
                continue
            if not line.strip() or line.startswith("%"):
                continue
            body, _, label = line.rpartition(",")
            body = body.strip()
            if body.startswith("'") and body.endswith("'"):
                body = body[1:-1]
            body = body.replace("\\n", " ").replace("\\'", "'").replace('\\"', '"')
            texts.append(body)
            labels.append(1.0 if label.strip() == "1" else -1.0)
    return texts, np.array(labels)


def read_tm_corpus(folder):
    """Title and body of each Reuters XML document of an r-cran-tm corpus folder."""
    texts = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".xml"):
            continue
        root = ET.parse(os.path.join(folder, name)).getroot()
        parts = [el.text or "" for tag in ("TITLE", "BODY") for el in root.iter(tag)]
        texts.append(" ".join(parts))
    return texts


# --------------------------------------------------------------------------- real sets

def prep_heart(workdir, opts):
    d, meta_path, params, ok = _cached(workdir, "heart_scale", {"source": HEART})
    if ok:
        return _load_meta(meta_path, d)
    _need(HEART, "liblinear-tools")
    from sklearn.datasets import load_svmlight_file
    X, y = load_svmlight_file(HEART, zero_based=False)
    y = np.where(y > 0, 1.0, -1.0)
    write_libsvm(os.path.join(d, "heart_scale.svm"), X, y)
    info = dict(_shape_info(X, y), source="liblinear-tools heart_scale")
    return _finish(d, meta_path, params, {"train": "heart_scale.svm", "test": None}, info)


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def prep_fashion(workdir, opts):
    pos, neg = 0, 6
    name = "fashion-mnist"
    d, meta_path, params, ok = _cached(workdir, name, {"source": FASHION_DIR, "classes": [pos, neg]})
    if ok:
        return _load_meta(meta_path, d)
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = os.path.join(FASHION_DIR, prefix + "-images-idx3-ubyte.gz")
        lab = os.path.join(FASHION_DIR, prefix + "-labels-idx1-ubyte.gz")
        _need(img, "dataset-fashion-mnist")
        images = _read_idx(img)
        labels = _read_idx(lab)
        keep = (labels == pos) | (labels == neg)
        X = sp.csr_matrix(images[keep].reshape(int(keep.sum()), -1).astype(np.float64) / 255.0)
        y = np.where(labels[keep] == pos, 1.0, -1.0)
        fname = f"{name}.{split}.svm"
        write_libsvm(os.path.join(d, fname), X, y)
        files[split] = fname
        if split == "train":
            info = dict(_shape_info(X, y),
                        source="dataset-fashion-mnist, class 0 (T-shirt/top) +1 vs class 6 (shirt) -1, pixels/255")
    return _finish(d, meta_path, params, files, info)


def _prep_weka(workdir, opts, which):
    name = "reuters-" + which.lower()
    train = os.path.join(WEKA_DIR, f"Reuters{which}-train.arff")
    test = os.path.join(WEKA_DIR, f"Reuters{which}-test.arff")
    d, meta_path, params, ok = _cached(workdir, name, {"source": train, "bits": HASH_BITS})
    if ok:
        return _load_meta(meta_path, d)
    _need(train, "weka")
    files = {}
    for split, path in (("train", train), ("test", test)):
        texts, y = read_arff_text(path)
        X = hash_text(texts)
        fname = f"{name}.{split}.svm"
        write_libsvm(os.path.join(d, fname), X, y)
        files[split] = fname
        if split == "train":
            info = dict(_shape_info(X, y),
                        source=f"weka Reuters{which}-train.arff: word 1+2-grams hashed into 2^{HASH_BITS}, "
                               "log-TF, unit rows; label = the arff class")
    return _finish(d, meta_path, params, files, info)


def prep_corn(workdir, opts):
    return _prep_weka(workdir, opts, "Corn")


def prep_grain(workdir, opts):
    return _prep_weka(workdir, opts, "Grain")


def prep_acq_crude(workdir, opts):
    name = "tm-acq-crude"
    d, meta_path, params, ok = _cached(workdir, name, {"source": TM_DIR, "bits": HASH_BITS})
    if ok:
        return _load_meta(meta_path, d)
    _need(os.path.join(TM_DIR, "acq"), "r-cran-tm")
    acq = read_tm_corpus(os.path.join(TM_DIR, "acq"))
    crude = read_tm_corpus(os.path.join(TM_DIR, "crude"))
    X = hash_text(acq + crude)
    y = np.array([1.0] * len(acq) + [-1.0] * len(crude))
    write_libsvm(os.path.join(d, name + ".svm"), X, y)
    info = dict(_shape_info(X, y),
                source=f"r-cran-tm corpora acq (+1) vs crude (-1): word 1+2-grams hashed into 2^{HASH_BITS}, "
                       "log-TF, unit rows")
    return _finish(d, meta_path, params, {"train": name + ".svm", "test": None}, info)


def _need(path, package):
    if not os.path.exists(path):
        raise MissingData(f"{path} not found: install the Debian package {package} "
                          f"(apt-get install {package}, or peers.py --install)")


class MissingData(Exception):
    pass


# --------------------------------------------------------------------------- generated sets

def _draws_for_unique(p, target, spread, qs):
    """Mean number of draws per row (lognormal across rows with this spread) for an
    expected `target` distinct features per row, drawn with replacement from p."""
    # Bucket the (sorted, decreasing) probabilities so that each evaluation is cheap.
    edges = np.unique(np.round(np.geomspace(1, len(p), 4000)).astype(np.int64)) - 1
    edges = np.append(edges, len(p))
    sizes = np.diff(edges)
    means = np.add.reduceat(p, edges[:-1]) / sizes

    def expected(m):
        tot = 0.0
        for q in qs:
            tot += float(np.sum(sizes * -np.expm1(m * q * np.log1p(-means))))
        return tot / len(qs)

    lo, hi = float(target), float(target) * 200
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if expected(mid) < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def generate(n, dim, nnz_row, zipf, support, binary, seed, positive_rate=0.5, spread=0.5, margin_std=3.0):
    """A CSR matrix with Zipf(`zipf`) feature frequencies (feature ids shuffled), about
    `nnz_row` distinct features per row (lognormal across rows), values tf-idf-like
    with unit rows (or 1 when binary), and labels +1/-1 drawn from a planted sparse
    logistic model on `support` features (picked in proportion to their frequency),
    its margins shifted so that about `positive_rate` of the labels are +1."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, dim + 1, dtype=np.float64) ** zipf
    p /= p.sum()
    # Row lengths: lognormal with mean 1 times the mean draw count.
    qs = np.exp(spread * _normal_quantiles(16) - spread ** 2 / 2)
    m = _draws_for_unique(p, nnz_row, spread, qs)
    lengths = np.maximum(1, np.round(m * rng.lognormal(-spread ** 2 / 2, spread, size=n))).astype(np.int64)
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    perm = rng.permutation(dim).astype(np.int32)
    total = int(lengths.sum())
    cols = np.empty(total, dtype=np.int32)
    step = 1 << 22
    for s in range(0, total, step):
        e = min(total, s + step)
        cols[s:e] = perm[np.minimum(np.searchsorted(cdf, rng.random(e - s)), dim - 1)]
    rows = np.repeat(np.arange(n, dtype=np.int32), lengths)
    X = sp.csr_matrix((np.ones(total, dtype=np.float64), (rows, cols)), shape=(n, dim))
    del rows, cols
    X.sum_duplicates()
    X.sort_indices()
    df = np.bincount(X.indices, minlength=dim)
    if binary:
        X.data[:] = 1.0
    else:
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        X.data = (1.0 + np.log(X.data)) * idf[X.indices]
        _normalize_rows(X)
    # Planted model: support features drawn in proportion to their document frequency.
    used = np.flatnonzero(df > 0)
    k = min(support, len(used))
    chosen = rng.choice(used, size=k, replace=False, p=df[used] / df[used].sum())
    w = np.zeros(dim)
    w[chosen] = rng.standard_normal(k)
    margin = X @ w
    sd = float(np.std(margin))
    if sd > 0:
        margin *= margin_std / sd
    lo, hi = -50.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(margin - mid)))) > positive_rate:
            lo = mid
        else:
            hi = mid
    prob = 1.0 / (1.0 + np.exp(-(margin - (lo + hi) / 2)))
    y = np.where(rng.random(n) < prob, 1.0, -1.0)
    return X, y


def _normal_quantiles(k):
    from statistics import NormalDist
    nd = NormalDist()
    return np.array([nd.inv_cdf((i + 0.5) / k) for i in range(k)])


# name: (rows, features, nnz per row, zipf exponent, planted support, binary, positive share)
GENERATED = {
    "rcv1-like": (20242, 47236, 75, 1.0, 500, False, 0.52),
    "news20-like": (19996, 1355191, 450, 1.0, 1000, False, 0.5),
    "real-sim-like": (72309, 20958, 50, 1.0, 300, False, 0.31),
    "url-like": (2396130, 3231961, 115, 1.1, 1000, True, 0.33),
}


def prep_generated(name):
    def prep(workdir, opts):
        n, dim, nnz_row, zipf, support, binary, pos = GENERATED[name]
        share = 1.0
        if name == "url-like":
            share = float(opts.get("url_share", 0.1))
            n = max(1000, int(round(n * share)))
            dim = max(1000, int(round(dim * share)))
        seed = int(opts.get("seed", 1))
        params = {"rows": n, "features": dim, "nnz_per_row": nnz_row, "zipf": zipf,
                  "support": support, "binary": binary, "positive_rate": pos, "seed": seed}
        d, meta_path, params, ok = _cached(workdir, name, params)
        if ok:
            return _load_meta(meta_path, d)
        X, y = generate(n, dim, nnz_row, zipf, support, binary, seed, positive_rate=pos)
        write_libsvm(os.path.join(d, name + ".svm"), X, y, binary=binary)
        src = (f"generated (seed {seed}): Zipf({zipf}) feature frequencies, planted logistic model on "
               f"{support} features, " + ("binary values" if binary else "tf-idf-like values, unit rows"))
        if share != 1.0:
            src += f"; {share:g} of url's 2,396,130 x 3,231,961 shape"
        info = dict(_shape_info(X, y), source=src)
        return _finish(d, meta_path, params, {"train": name + ".svm", "test": None}, info)
    return prep


# name: (prepare function, lambda_max / lambda, description)
SETS = {
    "heart_scale": (prep_heart, 20, "real: 270 x 13, dense numeric (liblinear-tools)"),
    "fashion-mnist": (prep_fashion, 20, "real: 12,000 x 784 pixels, T-shirt/top vs shirt (dataset-fashion-mnist)"),
    "reuters-corn": (prep_corn, 50, "real: 1,554 news texts, hashed 1+2-grams in 2^20 (weka ReutersCorn)"),
    "reuters-grain": (prep_grain, 50, "real: 1,554 news texts, hashed 1+2-grams in 2^20 (weka ReutersGrain)"),
    "tm-acq-crude": (prep_acq_crude, 50, "real: 70 news texts, acq vs crude, hashed 1+2-grams in 2^20 (r-cran-tm)"),
    "rcv1-like": (prep_generated("rcv1-like"), 50, "generated: 20,242 x 47,236, ~75 nonzeros/row, tf-idf"),
    "news20-like": (prep_generated("news20-like"), 50, "generated: 19,996 x 1,355,191, ~450 nonzeros/row, tf-idf"),
    "real-sim-like": (prep_generated("real-sim-like"), 50, "generated: 72,309 x 20,958, ~50 nonzeros/row, tf-idf"),
    "url-like": (prep_generated("url-like"), 50,
                 "generated: url's 2,396,130 x 3,231,961, ~115 binary nonzeros/row, times --url-share (0.1)"),
}
