"""Reference figures for the algorithm tests, from scikit-learn on the same
data and the same split as petuum's tests.

Split rule (petuum's `data.test_fraction = 0.2`): row i (0-based, file
order) is a test row iff floor((i+1)*0.2) > floor(i*0.2), i.e. every 5th
row (i % 5 == 4). MNIST uses its official 60k/10k split.

Run: python3 bench/reference/sklearn_refs.py [name ...]
"""
import gzip, sys, time
import numpy as np
import sklearn
from sklearn.datasets import load_svmlight_file
from sklearn.preprocessing import StandardScaler

D = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith("/") else "../shared/datasets"
names = [a for a in sys.argv[1:] if not a.startswith("/")]

def split(X, y):
    n = X.shape[0]
    i = np.arange(n)
    test = np.floor((i + 1) * 0.2) > np.floor(i * 0.2)
    return X[~test], y[~test], X[test], y[test]

def svm(name):
    X, y = load_svmlight_file(f"{D}/{name}")
    return X, y

def csv(path, label="label"):
    import csv as c
    with open(path) as f:
        r = c.reader(f)
        head = next(r)
        rows = np.array([[float(v) for v in row] for row in r])
    li = head.index(label)
    return np.delete(rows, li, axis=1), rows[:, li]

def mnist():
    d = f"{D}/mnist/"
    def imgs(f):
        return np.frombuffer(gzip.open(d + f).read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255
    def labs(f):
        return np.frombuffer(gzip.open(d + f).read(), np.uint8, offset=8)
    return imgs("train-images-idx3-ubyte.gz"), labs("train-labels-idx1-ubyte.gz"), imgs("t10k-images-idx3-ubyte.gz"), labs("t10k-labels-idx1-ubyte.gz")

def ames_binary():
    """The 33 numeric columns of regression/ames_raw.csv but Sale_Price;
    label 1 when Sale_Price is above its median, else -1 (as
    algorithms/tests/defaults_quality.rs derives it)."""
    import csv as c
    with open(f"{D}/regression/ames_raw.csv") as f:
        rows = list(c.reader(f))
    head, rows = rows[0], rows[1:]
    price = head.index("Sale_Price")
    def numeric(j):
        try:
            [float(r[j]) for r in rows]
            return True
        except ValueError:
            return False
    cols = [j for j in range(len(head)) if j != price and numeric(j)]
    p = np.array([float(r[price]) for r in rows])
    X = np.array([[float(r[j]) for j in cols] for r in rows])
    return X, np.where(p > np.median(p), 1.0, -1.0), [head[j] for j in cols]

# The data sets of the defaults tests: (name, loader, sparse).
DEFAULT_SETS = [
    ("breast_cancer_wdbc", lambda: csv(f"{D}/classification/breast_cancer_wdbc.csv"), False),
    ("ames_binary", lambda: ames_binary()[:2], False),
    ("spamassassin", lambda: svm("spamassassin/spam.libsvm"), True),
    ("ionosphere", lambda: csv(f"{D}/classification/ionosphere.csv"), False),
    ("heart_scale", lambda: svm("classification/heart_scale.libsvm"), True),
    ("satimage", lambda: csv(f"{D}/classification/satimage.csv"), False),
    ("dna", lambda: svm("classification/dna.libsvm"), True),
    ("shuttle", lambda: csv(f"{D}/classification/shuttle.csv"), False),
    ("digits", lambda: csv(f"{D}/digits_8x8/digits.csv"), False),
]

def default_pipeline(model, sparse):
    """scikit-learn's default pipeline: StandardScaler for dense data,
    MaxAbsScaler (the scaler its user guide recommends for sparse data)
    for sparse data, then the model with default parameters."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler
    return make_pipeline(MaxAbsScaler() if sparse else StandardScaler(), model)

def report(what, **kw):
    print(what, " ".join(f"{k}={v}" for k, v in kw.items()), flush=True)

def run(name):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC
    from sklearn.cluster import KMeans
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    t = time.time()
    if name == "lr_spam":
        Xtr, ytr, Xte, yte = split(*svm("spamassassin/spam.libsvm"))
        m = LogisticRegression(max_iter=1000).fit(Xtr, ytr)
        report(name, sklearn=sklearn.__version__, model="LogisticRegression(C=1.0,lbfgs)", test_acc=round(m.score(Xte, yte), 4), secs=round(time.time() - t, 2))
    elif name == "svm_spam":
        Xtr, ytr, Xte, yte = split(*svm("spamassassin/spam.libsvm"))
        m = LinearSVC(C=1.0).fit(Xtr, ytr)
        report(name, model="LinearSVC(C=1.0)", test_acc=round(m.score(Xte, yte), 4), secs=round(time.time() - t, 2))
    elif name == "svm_heart":
        Xtr, ytr, Xte, yte = split(*svm("classification/heart_scale.libsvm"))
        m = LinearSVC(C=1.0).fit(Xtr, ytr)
        report(name, model="LinearSVC(C=1.0)", test_acc=round(m.score(Xte, yte), 4), secs=round(time.time() - t, 2))
    elif name in ("mlr_satimage", "mlr_dna"):
        X, y = csv(f"{D}/classification/{name[4:]}.csv")
        Xtr, ytr, Xte, yte = split(X, y)
        s = StandardScaler().fit(Xtr)
        m = LogisticRegression(max_iter=2000).fit(s.transform(Xtr), ytr)
        report(name, model="StandardScaler+LogisticRegression(C=1.0,lbfgs,multinomial)", test_acc=round(m.score(s.transform(Xte), yte), 4), secs=round(time.time() - t, 2))
    elif name == "kmeans_mnist":
        Xtr, _, _, _ = mnist()
        for seed in range(3):
            m = KMeans(10, n_init=1, random_state=seed).fit(Xtr)
            report(name, model=f"KMeans(10,n_init=1,k-means++,random_state={seed})", inertia=round(m.inertia_, 1), secs=round(time.time() - t, 2))
    elif name == "kmeans_digits":
        X, _ = csv(f"{D}/digits_8x8/digits.csv")
        for seed in range(5):
            m = KMeans(10, n_init=1, random_state=seed).fit(X)
            report(name, model=f"KMeans(10,n_init=1,random_state={seed})", inertia=round(m.inertia_, 1))
    elif name in ("rf_satimage", "rf_shuttle", "rf_dna", "rf_digits"):
        X, y = csv(f"{D}/digits_8x8/digits.csv" if name == "rf_digits" else f"{D}/classification/{name[3:]}.csv")
        Xtr, ytr, Xte, yte = split(X, y)
        for seed in range(3):
            m = RandomForestClassifier(n_estimators=50, max_depth=16, random_state=seed, n_jobs=2).fit(Xtr, ytr)
            report(name, model=f"RandomForestClassifier(50 trees,max_depth=16,sqrt features,random_state={seed})", test_acc=round(m.score(Xte, yte), 4), secs=round(time.time() - t, 2))
    elif name == "defaults":
        # Figures of algorithms/tests/defaults_quality.rs: default pipelines;
        # lbfgs at max_iter=100 and, where that stops unconverged, 5000.
        import warnings
        from sklearn.exceptions import ConvergenceWarning
        for set_name, load, sparse in DEFAULT_SETS:
            X, y = load()
            Xtr, ytr, Xte, yte = split(X, y)
            models = [("LogisticRegression()", LogisticRegression()), ("LogisticRegression(max_iter=5000)", LogisticRegression(max_iter=5000))]
            if len(np.unique(y)) == 2:
                models.append(("LinearSVC()", LinearSVC()))
            for label, m in models:
                t = time.time()
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    p = default_pipeline(m, sparse).fit(Xtr, ytr)
                conv = not any(issubclass(x.category, ConvergenceWarning) for x in w)
                report(name, data=set_name, model=("MaxAbsScaler+" if sparse else "StandardScaler+") + label,
                       test_acc=round(p.score(Xte, yte), 4), converged=conv, secs=round(time.time() - t, 2))
    elif name == "knn_digits":
        X, y = csv(f"{D}/digits_8x8/digits.csv")
        Xtr, ytr, Xte, yte = split(X, y)
        for k in (1, 3, 5):
            m = KNeighborsClassifier(k).fit(Xtr, ytr)
            report(name, model=f"KNeighborsClassifier({k}) euclidean", test_acc=round(m.score(Xte, yte), 4))

for n in names or ["lr_spam", "svm_spam", "svm_heart", "mlr_satimage", "mlr_dna", "kmeans_digits", "knn_digits", "rf_satimage", "rf_shuttle", "rf_dna", "rf_digits", "kmeans_mnist"]:
    run(n)
