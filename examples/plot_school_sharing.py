"""
==========================================================
Who gains from sharing: 139 London schools
==========================================================

The School data (shipped with skmtl) hold the exam scores of 15,362
students in 139 London schools. Each school is a task. We compare, on
held-out students of every school:

- one :class:`~sklearn.linear_model.RidgeCV` per school (small schools overfit),
- one pooled :class:`~sklearn.linear_model.RidgeCV` (ignores the schools),
- :class:`~skmtl.SharedParamRegressor`, every school a shared model plus its
  own deviation, with the amount of sharing learned by REML
  (``alpha_task='auto'``).

and then look at which schools gain from sharing.
"""

# %%
# The data: long layout, the school in column 0
# ---------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter
from sklearn.linear_model import RidgeCV
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.preprocessing import StandardScaler

from skmtl import SharedParamRegressor
from skmtl.datasets import load_school

school = load_school()
X, y = school.data.copy(), school.target
task = X[:, 0]
print(X.shape, "schools:", len(np.unique(task)))

# %%
# A random quarter of every school's students is held out, so that every
# school has students in both parts. The features are standardized on the
# training rows; the task column is left alone.
rng = np.random.default_rng(0)
test = np.zeros(len(y), dtype=bool)
for s in np.unique(task):
    rows = np.flatnonzero(task == s)
    test[rng.choice(rows, size=len(rows) // 4, replace=False)] = True
X[:, 1:] = StandardScaler().fit(X[~test, 1:]).transform(X[:, 1:])
X_train, X_test, y_train, y_test = X[~test], X[test], y[~test], y[test]

# %%
# Three models
# ------------
alphas = np.logspace(-2, 3, 11)
shared = SharedParamRegressor(alpha_shared=0, alpha_task="auto", task_column=0)
shared.fit(X_train, y_train)
pooled = RidgeCV(alphas=alphas).fit(X_train[:, 1:], y_train)
per_school = {
    s: RidgeCV(alphas=alphas).fit(X_train[X_train[:, 0] == s, 1:], y_train[X_train[:, 0] == s])
    for s in np.unique(task)
}

pred = {
    "SharedParamRegressor('auto')": shared.predict(X_test),
    "pooled Ridge": pooled.predict(X_test[:, 1:]),
    "one Ridge per school": np.empty(len(y_test)),
}
for s, model in per_school.items():
    rows = X_test[:, 0] == s
    pred["one Ridge per school"][rows] = model.predict(X_test[rows, 1:])
scores = {name: r2_score(y_test, p) for name, p in pred.items()}
for name, score in scores.items():
    print(f"{name:30s} held-out R^2 {score:.3f}")

# %%
# Which schools gain?
# -------------------
# For every school, the change in held-out mean squared error when its own
# Ridge is replaced by the shared model, against the school's number of
# training students. Small schools gain the most: their own data are too few
# to fit 27 coefficients, and sharing lends them the other schools' slopes.
test_task = X_test[:, 0]
labels = np.unique(task)
n_train = np.array([np.sum(X_train[:, 0] == s) for s in labels])
gain = np.array([
    mean_squared_error(y_test[test_task == s], pred["one Ridge per school"][test_task == s])
    - mean_squared_error(y_test[test_task == s], pred["SharedParamRegressor('auto')"][test_task == s])
    for s in labels
])
print(f"shared model better on {np.sum(gain > 0)} of {len(labels)} schools")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=[1, 1.4])
names = list(scores)
ax0.barh(names, [scores[n] for n in names], color=["tab:blue", "tab:gray", "tab:gray"])
ax0.set_xlim(0.25, max(scores.values()) + 0.03)
ax0.invert_yaxis()
ax0.set_xlabel("held-out $R^2$ over all test students")
ax0.set_title("Pooled test score")
ax1.scatter(n_train, gain, s=14, c=np.where(gain > 0, "tab:blue", "tab:red"))
ax1.axhline(0, color="k", lw=0.8)
ax1.set_xscale("log")
ax1.set_xticks([20, 50, 100, 200], ["20", "50", "100", "200"])
ax1.xaxis.set_minor_formatter(NullFormatter())
ax1.set_xlabel("training students in the school")
ax1.set_ylabel("test MSE: own Ridge minus shared")
ax1.set_title("Gain per school (above 0: sharing helps)")
fig.tight_layout()
plt.show()

# %%
# The shared part and the learned spread
# --------------------------------------
# ``alpha_task='auto'`` estimated how much each coefficient varies between
# schools: the square roots of the diagonal of ``task_covariance_`` (the
# intercept last). Coefficients with a small spread are effectively shared.
# The one-hot blocks (exam year, gender, ethnic group) sum to one on every
# row, so together with the intercept they carry each school's level: the
# spread of a school's level is split between them and the intercept.
spread = np.sqrt(np.diag(shared.task_covariance_))
names = school.feature_names[1:] + ["intercept"]
for i in np.argsort(spread)[::-1][:5]:
    print(f"{names[i]:20s} sd between schools {spread[i]:.2f}")
