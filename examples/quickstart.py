"""Quick start: exam scores of 15,362 students in 139 London schools.

Run with ``python examples/quickstart.py``. Each school ("task") gets its own
linear model of the exam score; the script compares, on held-out students of
every school (a random quarter of each school), the pooled test R^2 of:

- one Ridge per school (wastes data: small schools overfit),
- one pooled Ridge (ignores real differences between schools),
- skmtl's SharedParamRegressor: each school is a shared model plus its own
  deviation, with ``alpha_task`` chosen by GridSearchCV, or learned from the
  data as a mixed model (``alpha_task='auto'``, no grid search).
"""

import time

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from skmtl import SharedParamRegressor
from skmtl.datasets import load_school

school = load_school()  # long layout: column 0 holds the school
X, y = school.data.astype(float), school.target
task = X[:, 0]

# A random quarter of every school's students is held out.
rng = np.random.default_rng(0)
test = np.zeros(len(y), dtype=bool)
for s in np.unique(task):
    rows = np.flatnonzero(task == s)
    test[rng.choice(rows, size=len(rows) // 4, replace=False)] = True
scaler = StandardScaler().fit(X[~test, 1:])
X[:, 1:] = scaler.transform(X[:, 1:])
X_train, X_test, y_train, y_test = X[~test], X[test], y[~test], y[test]

scores, times = {}, {}


def record(name, fit, predict):
    start = time.perf_counter()
    model = fit()
    times[name] = time.perf_counter() - start
    scores[name] = r2_score(y_test, predict(model))


folds = StratifiedKFold(3, shuffle=True, random_state=0).split(X_train, X_train[:, 0])
record(
    "SharedParamRegressor, grid",
    lambda: GridSearchCV(
        SharedParamRegressor(alpha_shared=0, task_column=0, handle_unknown="shared"),
        {"alpha_task": np.logspace(-4, 0, 9)},
        cv=list(folds),
    ).fit(X_train, y_train),
    lambda m: m.predict(X_test),
)
record(
    "SharedParamRegressor, 'auto'",
    lambda: SharedParamRegressor(alpha_shared=0, alpha_task="auto", task_column=0).fit(
        X_train, y_train
    ),
    lambda m: m.predict(X_test),
)
record(
    "pooled Ridge",
    lambda: RidgeCV(np.logspace(-3, 3, 7)).fit(X_train[:, 1:], y_train),
    lambda m: m.predict(X_test[:, 1:]),
)


def per_school():
    return {
        s: RidgeCV(np.logspace(-3, 3, 7)).fit(X_train[X_train[:, 0] == s, 1:], y_train[X_train[:, 0] == s])
        for s in np.unique(task)
    }


def predict_per_school(models):
    return np.array([models[row[0]].predict(row[None, 1:])[0] for row in X_test])


record("one Ridge per school", per_school, predict_per_school)

print(f"held-out R^2 over {len(y_test)} students of {len(np.unique(task))} schools")
for name in scores:
    print(f"  {name:<30s} {scores[name]:.3f}   fit {times[name]:6.2f} s")
