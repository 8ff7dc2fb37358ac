"""Strads benchmark: Lasso (working sets, SchMP and Shotgun-style random) against
scikit-learn and celer; matrix factorisation (CCD++ and SGD) against LIBMF.
All in one run on this machine; prints Markdown tables for
docs/benchmarks.md.

petuum runs through `algorithms/examples/run_spec.rs` (the embedded
in-process run of `petuumd run`, without RocksDB checkpoints), 2 workers.

Run from the repository root, with a Python that has scikit-learn 1.9.1 and
celer (e.g. a venv: pip install scikit-learn==1.9.1 celer):

    CARGO_TARGET_DIR=... python bench/strads.py [DATASETS_DIR] [lasso|mf|all]
"""
import csv, json, os, subprocess, sys, tempfile, time
import numpy as np
import scipy.sparse as sp

D = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets"
D = os.path.abspath(D)
PARTS = sys.argv[2] if len(sys.argv) > 2 else "all"
TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
TMP = tempfile.mkdtemp(prefix="strads-bench-")
# LIBMF (C++) is compiled once into its own target dir.
LIBMF_TARGET = os.environ.get("LIBMF_TARGET_DIR", os.path.join(TARGET, "libmf_ref"))


def cargo(*args):
    subprocess.run(["cargo", *args], check=True, stdout=subprocess.DEVNULL)


cargo("build", "--release", "-p", "petuum-algorithms", "--example", "run_spec",
      "--example", "lasso_synthetic", "--example", "mf_synthetic")
subprocess.run(["cargo", "build", "--release"], cwd="bench/strads/libmf_ref", check=True,
               stdout=subprocess.DEVNULL, env={**os.environ, "CARGO_TARGET_DIR": LIBMF_TARGET})
RUN_SPEC = os.path.join(TARGET, "release/examples/run_spec")
LIBMF = os.path.join(LIBMF_TARGET, "release/libmf_ref")


def petuum(spec, every=0):
    """Runs a job; None when it fails (e.g. diverges). With `every`, the
    result's "progress" lists (clock, seconds since training started,
    metrics) every `every` clocks."""
    path = os.path.join(TMP, "job.toml")
    with open(path, "w") as f:
        f.write(spec.replace("{model}", os.path.join(TMP, "model.safetensors")))
    out = subprocess.run([RUN_SPEC, path, str(every)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"petuum failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    progress = []
    for line in out.stderr.splitlines():
        if not line.startswith("clock "):
            continue
        f = line.split()
        metrics = dict(kv.split("=") for kv in f[6:])
        progress.append((int(f[1]), float(f[5].rstrip("s")), {k: float(v) for k, v in metrics.items()}))
    result["progress"] = progress
    return result


# ---------------------------------------------------------------- Lasso
if PARTS in ("lasso", "all"):
    from sklearn.linear_model import Lasso
    from sklearn.datasets import load_svmlight_file
    import celer

    TOL = 1e-6  # every solver: duality gap <= TOL * ||y - mean(y)||^2 (sklearn's rule)
    REPS = 5  # every solver runs 5 times; the median seconds are reported

    synth = os.path.join(TMP, "synthetic.libsvm")
    subprocess.run([os.path.join(TARGET, "release/examples/lasso_synthetic"), synth], check=True,
                   stderr=subprocess.DEVNULL)


    def load_csv(path, label):
        with open(path) as f:
            r = csv.reader(f)
            head = next(r)
            rows = np.array([[float(v) for v in row] for row in r])
        li = head.index(label)
        return np.delete(rows, li, axis=1).astype(np.float32).astype(np.float64), rows[:, li]


    X, y = load_svmlight_file(synth, n_features=10000)
    X = sp.csc_matrix(X)
    X.indices = X.indices.astype(np.int32)
    X.indptr = X.indptr.astype(np.int32)
    Xa, ya = load_csv(f"{D}/regression/ames_onehot.csv", "Sale_Price")
    ya = np.log(ya)
    sd = Xa.std(0)
    sd[sd < 1e-6] = 1
    Xa = (Xa - Xa.mean(0)) / sd
    problems = [
        ("synthetic 5000 x 10000, 1% dense", X, y, 0.005, False,
         f'format = "libsvm"\ntrain = "{synth}"', "fit_intercept = false"),
        ("ames (log price, standardised)", Xa, ya, 0.003, True,
         f'format = "csv"\ntrain = "{D}/regression/ames_onehot.csv"\nlabel_column = "Sale_Price"',
         'standardize = true\ntarget_transform = "log"'),
    ]
    lasso_rows = []
    for name, X_, y_, alpha, icpt, data, extra in problems:
        def objective(coef, b):
            r = y_ - X_ @ coef - b
            return 0.5 * np.mean(r ** 2) + alpha * np.abs(coef).sum()
        for solver, make in [
            ("scikit-learn Lasso", lambda: Lasso(alpha=alpha, fit_intercept=icpt, tol=TOL, max_iter=10**6)),
            ("celer Lasso", lambda: celer.Lasso(alpha=alpha, fit_intercept=icpt, tol=TOL, max_iter=10**4)),
        ]:
            times = []
            for _ in range(REPS):
                m = make()
                t = time.perf_counter()
                m.fit(X_, y_)
                times.append(time.perf_counter() - t)
            lasso_rows.append((name, solver, float(np.median(times)), float(np.median(times)),
                               objective(m.coef_, m.intercept_), np.count_nonzero(m.coef_), ""))
        for sched in ["working_set", "schmp", "random"]:
            # Progress every clock: the last one is the clock whose gap met
            # the tolerance; after it the job only exports (final metrics,
            # the model written and fsynced).
            every = 1 if sched == "working_set" else 0
            outs = [petuum(f'name = "b"\nalgorithm = "lasso"\n[data]\n{data}\n[run]\nworkers = 2\nconsistency = "bsp"\n'
                           f'clocks = 2000000\nseed = 1\n[model]\npath = "{{model}}"\n[params]\nlambda = {alpha}\n'
                           f'tol = {TOL}\nscheduler = "{sched}"\n{extra}\n', every)
                    for _ in range(REPS)]
            if any(o is None for o in outs):
                lasso_rows.append((name, f"petuum {sched} (2 workers)", float("nan"), float("nan"), float("nan"), 0,
                                   "failed"))
                continue
            job_s = float(np.median([o["train_s"] for o in outs]))
            gap_s = float(np.median([o["progress"][-1][1] for o in outs])) if every else float("nan")
            mt = outs[-1]["metrics"]
            lasso_rows.append((name, f"petuum {sched} (2 workers)", gap_s, job_s, mt["objective"], int(mt["nnz"]),
                               f'{int(outs[-1]["clocks"])} rounds'))

    print("\n### Lasso to a relative duality gap of 1e-6\n")
    print("| problem | solver | seconds to the gap | seconds with the model saved | objective | non-zeros | rounds |")
    print("|---|---|---|---|---|---|---|")
    for r in lasso_rows:
        to_gap = "" if r[2] != r[2] else f"{r[2]:.4f}"
        print(f"| {r[0]} | {r[1]} | {to_gap} | {r[3]:.4f} | {r[4]:.10g} | {r[5]} | {r[6]} |")

# ---------------------------------------------------------------- MF
if PARTS in ("mf", "all"):
    ml = f"{D}/movielens_dslabs/ratings.csv"
    syn = os.path.join(TMP, "mf_synthetic.csv")
    subprocess.run([os.path.join(TARGET, "release/examples/mf_synthetic"), syn, "2000", "2500", "10", "0.2", "0.5", "11"],
                   check=True)
    mf_rows = []
    # petuum: CCD++ (2 x (rank + 2) clocks an epoch: the factors and the two
    # bias ranks), SGD merging once an epoch and SGD merging four times
    # (mf_quality.rs's setting).
    # CCD++ without biases (LIBMF's model, 2 x rank clocks an epoch) too.
    SOLVERS = [("ccd", 480, 20, ""), ("ccd", 400, 20, "biases = false"), ("sgd", 20, 20, ""),
               ("sgd", 80, 20, "batches = 4")]
    for name, path, cols, lam in [
        ("MovieLens 100k (every 5th rating held out)", ml, ("userId", "movieId", "rating"), [0.02, 0.05, 0.1, 0.2]),
        ("synthetic 2000 x 2500, rank 10, 1M ratings, sigma 0.5", syn, ("user", "item", "rating"), [0.02, 0.05, 0.1, 0.2]),
    ]:
        out = subprocess.run([LIBMF, path, *cols, "10", "2", "20", *map(str, lam)], check=True, capture_output=True,
                             text=True).stdout
        libmf = [json.loads(line) for line in out.strip().splitlines()]
        best = min(libmf, key=lambda r: r["test_rmse"])
        # LIBMF's own time to its best: the shortest fit (1 to 20 iterations,
        # each fitted afresh) whose test RMSE is already that good.
        libmf_reached = best["seconds"]
        for its in range(1, 20):
            r = json.loads(subprocess.run([LIBMF, path, *cols, "10", "2", str(its), str(best["lambda"])], check=True,
                                          capture_output=True, text=True).stdout.strip())
            if r["test_rmse"] <= best["test_rmse"]:
                libmf_reached = min(libmf_reached, r["seconds"])
                break
        for r in libmf:
            mark = " (best)" if r is best else ""
            mf_rows.append((name, "LIBMF (libmf crate), 2 threads" + mark, r["lambda"], r["seconds"], r["seconds"] / 20,
                            r["test_rmse"], libmf_reached if r is best else None))
        for solver, clocks, epochs, extra in SOLVERS:
            label = f"petuum {solver}" + (f" ({extra})" if extra else "") + " (2 workers)"
            for l in lam:
                out = petuum(f'name = "b"\nalgorithm = "mf"\n[data]\nformat = "csv"\ntrain = "{path}"\ntest_fraction = 0.2\n'
                             f'[run]\nworkers = 2\nconsistency = "bsp"\nclocks = {clocks}\nseed = 1\n[model]\npath = "{{model}}"\n'
                             f'[params]\nrank = 10\nlambda = {l}\nsolver = "{solver}"\n{extra}\nuser_column = "{cols[0]}"\n'
                             f'item_column = "{cols[1]}"\nrating_column = "{cols[2]}"\n', every=1)
                if out is None:
                    mf_rows.append((name, label, l, float("nan"), float("nan"), float("nan"), None))
                    continue
                # Seconds of training until the test RMSE first reached LIBMF's best.
                reached = next((t for _, t, m in out["progress"] if m.get("test_rmse", 9e9) <= best["test_rmse"]), None)
                mf_rows.append((name, label, l, out["train_s"], out["train_s"] / epochs, out["metrics"]["test_rmse"],
                                reached))

    print("\n### Matrix factorisation, rank 10, 20 epochs\n")
    print("| data | solver | λ | seconds | s/epoch | test RMSE | s to LIBMF's best |")
    print("|---|---|---|---|---|---|---|")
    for r in mf_rows:
        reached = "—" if r[6] is None else f"{r[6]:.3f}"
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]:.4f} | {r[5]:.4f} | {reached} |")
