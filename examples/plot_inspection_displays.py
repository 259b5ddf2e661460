"""
==========================================================
Which schools are alike, and which gain from sharing
==========================================================

:mod:`skmtl.inspection` draws what a fitted multi-task model learned about its
tasks, following scikit-learn's Display pattern (``from_estimator`` /
``from_predictions``, then ``plot``):

- :class:`~skmtl.inspection.TaskSimilarityDisplay`: how alike the tasks'
  own models are, as a clustered heat map;
- :class:`~skmtl.inspection.PerTaskScoreDisplay`: each task's held-out score
  under two models, here sharing against one Ridge per school;
- :class:`~skmtl.inspection.TaskWeightsDisplay`: how
  :class:`~skmtl.SharedObjectiveRegressor`'s task weights and per-task losses
  moved during training.

All three on the School data (139 London schools, shipped with skmtl).
"""

# %%
# Data: a quarter of every school's students held out
# ----------------------------------------------------
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler

from skmtl import SharedObjectiveRegressor, SharedParamRegressor
from skmtl.datasets import load_school
from skmtl.inspection import PerTaskScoreDisplay, TaskSimilarityDisplay, TaskWeightsDisplay

X, y = load_school(return_X_y=True)
X = X.copy()
task = X[:, 0]
rng = np.random.default_rng(0)
test = np.zeros(len(y), dtype=bool)
for s in np.unique(task):
    rows = np.flatnonzero(task == s)
    test[rng.choice(rows, size=len(rows) // 4, replace=False)] = True
X[:, 1:] = StandardScaler().fit(X[~test, 1:]).transform(X[:, 1:])
X_train, X_test, y_train, y_test = X[~test], X[test], y[~test], y[test]

# %%
# Which schools are alike
# -----------------------
# ``alpha_task='auto'`` learns by REML how much the schools differ; each
# school's deviation from the shared model is what sets it apart. The heat
# map shows the cosine similarity of those deviations, with the schools
# ordered by hierarchical clustering so that alike schools sit together.
shared = SharedParamRegressor(alpha_shared=0, alpha_task="auto", task_column=0)
shared.fit(X_train, y_train)
fig, ax = plt.subplots(figsize=(7, 6))
similarity = TaskSimilarityDisplay.from_estimator(shared, ax=ax, max_tick_labels=20)
ax.set_title("Deviations from the shared model")
plt.show()

# %%
# ``similarity.order_`` is the clustered order of the schools; the first
# ones in it:
print(similarity.ordered_task_labels_[:10])

# %%
# Who gains from sharing
# ----------------------
# One :class:`~sklearn.linear_model.RidgeCV` per school is the usual
# alternative. Each point is a school: above the diagonal, sharing predicts
# its held-out students better; the point size is the school's number of
# held-out students.
alphas = np.logspace(-2, 3, 11)
per_school = np.empty_like(y_test)
for s in np.unique(task):
    train_rows, test_rows = X_train[:, 0] == s, X_test[:, 0] == s
    ridge = RidgeCV(alphas=alphas).fit(X_train[train_rows, 1:], y_train[train_rows])
    per_school[test_rows] = ridge.predict(X_test[test_rows, 1:])

scores = PerTaskScoreDisplay.from_predictions(
    y_test, shared.predict(X_test), per_school, task=X_test[:, 0],
    name_a="SharedParamRegressor('auto')", name_b="one RidgeCV per school",
)
gain = scores.gain_
print(f"sharing is better on {np.sum(gain > 0)} of {np.sum(np.isfinite(gain))} schools; "
      f"median gain in R^2 {np.nanmedian(gain):.3f}")
plt.show()

# %%
# How the task weights moved
# --------------------------
# :class:`~skmtl.SharedObjectiveRegressor` learns one representation for
# all schools and weights each school's loss by its current noise level
# (``task_weights='uncertainty'``): noisy schools count less. The left panel
# is the weights per round, the right one each school's loss.
objective = SharedObjectiveRegressor(
    n_components=5, activation="relu", task_weights="uncertainty", alpha=0.1,
    max_iter=15, task_column=0, random_state=0,
)
with warnings.catch_warnings():
    # 15 rounds keep the example short; the weights have settled by then.
    warnings.simplefilter("ignore", ConvergenceWarning)
    objective.fit(X_train, y_train)
TaskWeightsDisplay.from_estimator(objective, line_kwargs={"alpha": 0.4, "linewidth": 0.8})
plt.show()
