"""Bosen's NMF update (projected SGD over the rows, the baseline of issue 20)
against HALS and multiplicative updates, in numpy, same start (NNDSVDa),
same number of passes over the data. Used to choose petuum's default NMF
solver (docs/algorithms.md).

    ~/.cache/petuum/venv/bin/python bench/reference/nmf_sgd.py [DATASETS] [epochs]

Projected SGD as Bosen's NMF app: every step takes a mini-batch of 32 rows,
steps their coefficients and the dictionary along the gradient of
||X_b - W_b H||^2 (the dictionary's scaled by n / 32), clips both at 0;
step size eta0 / sqrt(1 + epoch), eta0 from a grid (the best is reported:
tuned per data set, which favours SGD), from NNDSVDa (the solvers' start)
and from NNDSVD (no mean fill, a better start for small steps).
"""
import sys, time, warnings
import numpy as np
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _initialize_nmf

warnings.simplefilter("ignore")
D = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith("/") else "../shared/datasets"
epochs = int(sys.argv[-1]) if sys.argv[-1].isdigit() else 200


def rel(X, W, H):
    return np.linalg.norm(X - W @ H) / np.linalg.norm(X)


def sgd(X, k, eta0, epochs, init, seed=0):
    W, H = _initialize_nmf(X, k, init=init, random_state=0)
    n = X.shape[0]
    b = 32
    for e in range(epochs):
        eta = eta0 / np.sqrt(1 + e)
        for s in range(0, n, b):
            idx = np.arange(s, min(s + b, n))
            Xb, Wb = X[idx], W[idx]
            R = Wb @ H - Xb
            gW = R @ H.T
            gH = (n / len(idx)) * (Wb.T @ R)
            W[idx] = np.maximum(Wb - eta * gW, 0)
            H = np.maximum(H - eta * gH / n, 0)
        if not np.isfinite(H).all():
            return np.inf
    return rel(X, W, H)


X = np.loadtxt(f"{D}/digits_8x8/digits.csv", delimiter=",", skiprows=1)[:, :64]
k = 16
L = np.linalg.norm(X, 2) ** 2  # scale of the curvature
for solver in () if "--sgd-only" in sys.argv else ("cd", "mu"):
    t = time.time()
    m = NMF(k, solver=solver, init="nndsvda", random_state=0, max_iter=epochs, tol=0)
    W = m.fit_transform(X)
    print(f"digits k={k} {solver} {epochs} iterations: relative error {rel(X, W, m.components_):.6f} ({time.time() - t:.1f}s)")
for init in ("nndsvda", "nndsvd"):
    best = None
    for c in (3000, 1000, 300, 100, 30, 10, 3, 1, 0.3, 0.1, 0.03, 0.01):
        t = time.time()
        with np.errstate(all="ignore"):
            r = sgd(X, k, c * X.shape[0] / L, epochs, init)
        print(f"digits k={k} projected SGD from {init}, eta0={c:g} n/||X||_2^2, {epochs} epochs: relative error {r:.6f} ({time.time() - t:.1f}s)")
        best = r if best is None else min(best, r)
    print(f"digits best projected SGD from {init}: {best:.6f}")
