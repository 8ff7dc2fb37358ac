"""Reference objectives for petuum's Lasso (algorithms/tests/lasso_quality.rs).

scikit-learn's Lasso on what petuum solves: features read as f32 (as
petuum's readers do) then widened to f64; with --standardize, each column
centred and divided by its population standard deviation (a constant
column keeps scale 1, as StandardScaler does); with --log, the target
replaced by its natural log; with --one-hot, text columns one-hot encoded
as petuum's CSV reader does (pandas get_dummies: numeric columns first,
then each text column's levels in order, named column=level; only an empty
field is missing, so a literal "None" is a level). Prints the objective
1/(2n)||y - X b - b0||^2 + alpha ||b||_1 and the number of non-zeros.

    python3 bench/reference/lasso_refs.py FILE.csv LABEL ALPHA [--standardize] [--log] [--no-intercept]
    python3 bench/reference/lasso_refs.py FILE.libsvm - ALPHA [--no-intercept]
    python3 bench/reference/lasso_refs.py ../shared/datasets/regression/diabetes.csv target 1.0
    python3 bench/reference/lasso_refs.py ../shared/datasets/regression/ames_onehot.csv Sale_Price 0.003 --standardize --log
    python3 bench/reference/lasso_refs.py ../shared/datasets/regression/ames_raw.csv Sale_Price 0.003 --standardize --log --one-hot
    python3 bench/reference/lasso_refs.py ../shared/datasets/regression/diamonds.csv price 0.001 --standardize --log --one-hot
    cargo run --release -p petuum-algorithms --example lasso_synthetic /tmp/s.libsvm /tmp/t.txt 5000 10000 0.01 100 1.0 7
    python3 bench/reference/lasso_refs.py /tmp/s.libsvm - 0.005 --no-intercept

(scikit-learn 1.9.1, numpy, pandas.)
"""
import sys

import numpy as np
import pandas as pd
from sklearn.datasets import load_svmlight_file
from sklearn.linear_model import Lasso

path, label, alpha = sys.argv[1], sys.argv[2], float(sys.argv[3])
flags = set(sys.argv[4:])
if path.endswith(".libsvm"):
    X, y = load_svmlight_file(path, dtype=np.float32)
    X, y = X.astype(np.float64), y.astype(np.float64)
else:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    y = df.pop(label).to_numpy(dtype=np.float64)
    if "--one-hot" in flags:
        df = pd.get_dummies(df, prefix_sep="=", dtype=np.float32)
    X = df.to_numpy(dtype=np.float32).astype(np.float64)
if "--log" in flags:
    y = np.log(y)
if "--standardize" in flags:
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    X = (X - X.mean(axis=0)) / sd

fit_intercept = "--no-intercept" not in flags
m = Lasso(alpha=alpha, tol=1e-12, max_iter=10**6, fit_intercept=fit_intercept).fit(X, y)
r = y - X @ m.coef_ - m.intercept_
obj = 0.5 * np.mean(r**2) + alpha * np.abs(m.coef_).sum()
print(f"objective {float(obj)!r} nnz {int(np.count_nonzero(m.coef_))}")
