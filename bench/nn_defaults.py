#!/usr/bin/env python3
"""DNN and DML with no [params] against scikit-learn's default pipelines,
same data, same split (every 5th row a test row), in one run (issue 18).

    CARGO_TARGET_DIR=... python3 bench/nn_defaults.py

petuum: `petuumd run`, 2 workers, deterministic (BSP), seeds 1 and 2 (DNN:
500 clocks of the automatic configuration; DML: 200 clocks). scikit-learn
1.9.1 from the venv of bench/classical.py: StandardScaler + MLPClassifier()
(random_state 0-2) and StandardScaler + NCA(random_state=0) + 5-NN. Prints
a Markdown table; the figures are the ones written beside the tests
(tests/tests/poseidon.rs, algorithms/tests/dml_quality.rs).
"""
import json, os, subprocess, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classical as C

SETS = [
    ("wdbc", "classification/breast_cancer_wdbc.csv"),
    ("ionosphere", "classification/ionosphere.csv"),
    ("sonar", "classification/sonar.csv"),
    ("digits", "digits_8x8/digits.csv"),
    ("satimage", "classification/satimage.csv"),
    ("ames_binary", None),
]

def petuum(algorithm, path, clocks, seed, d):
    spec = os.path.join(d, "job.toml")
    with open(spec, "w") as f:
        f.write(f'name = "d"\nalgorithm = "{algorithm}"\n[data]\nformat = "csv"\ntrain = "{path}"\ntest_fraction = 0.2\n'
                f'[run]\nworkers = 2\nclocks = {clocks}\ndeterministic = true\nseed = {seed}\n[model]\npath = "{d}/m.safetensors"\n')
    out = subprocess.run([C.PETUUMD, "run", spec, "--json", "--data-dir", os.path.join(d, "pd")], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

SK = """
import numpy as np, warnings; warnings.filterwarnings("ignore")
from sklearn.neural_network import MLPClassifier as M
from sklearn.neighbors import NeighborhoodComponentsAnalysis as N, KNeighborsClassifier as K
from sklearn.preprocessing import StandardScaler as S
from sklearn.pipeline import make_pipeline as P
Xtr, ytr, Xte, yte = split(*csv(PATH))
mlp = np.mean([P(S(), M(random_state=s)).fit(Xtr, ytr).score(Xte, yte) for s in range(3)])
nca = P(S(), N(random_state=0), K(5)).fit(Xtr, ytr).score(Xte, yte) if len(ytr) < 3000 else float('nan')
print(mlp, nca)
"""

def main():
    py = C.venv_python()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, f in SETS:
            path = C.ames_binary(d) if f is None else os.path.join(C.DATA, f)
            dnn = [petuum("dnn", path, 500, s, d)["test_accuracy"] for s in (1, 2)]
            dml = [petuum("dml", path, 200, s, d)["test_knn_accuracy"] for s in (1, 2)]
            out, _, _ = C.measure_rss([py, "-c", C.SPLIT + f"PATH = {path!r}\n" + SK], env=C.sklearn_env())
            mlp, nca = (float(v) for v in out.split())
            rows.append((name, sum(dnn) / 2, mlp, sum(dml) / 2, nca))
            print(name, dnn, mlp, dml, nca, flush=True)
    print("| data | petuum dnn (mean of 2 seeds) | MLPClassifier (mean of 3) | petuum dml 5-NN | NCA + 5-NN |")
    print("|---|---|---|---|---|")
    for name, dnn, mlp, dml, nca in rows:
        print(f"| {name} | {dnn:.4f} | {mlp:.4f} | {dml:.4f} | {'–' if nca != nca else f'{nca:.4f}'} |")

if __name__ == "__main__":
    main()
