"""
=================================================================
Shared features on the Exam data: l2,1 path and trace-norm rank
=================================================================

mlmRev's ``Exam`` data: normalized exam scores of 4,059 students in 65
London schools, with 15 features (intake reading score, the school's average
intake, one-hot gender, intake band, school gender, verbal-reasoning band
and school type). Each school is a task.

:class:`~skmtl.SharedFeatureRegressor` lets the schools share features:

- ``penalty='l21'`` zeroes whole rows of the coefficient matrix ``W``
  (features x schools): every school uses the same few features;
- ``penalty='trace'`` (nuclear norm) makes ``W`` low rank: every school's
  coefficients are combinations of a few shared directions.

:func:`~skmtl.shared_feature_path` fits a whole path of ``alpha`` with warm
starts. We follow both paths and score them on held-out students.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.preprocessing import StandardScaler

from skmtl import SharedFeatureRegressor, shared_feature_path
from skmtl.datasets import load_exam

exam = load_exam()
X, y = exam.data.copy(), exam.target
features = exam.feature_names[1:]
print(X.shape, "schools:", len(np.unique(X[:, 0])))

# %%
# A random quarter of every school's students is held out; the features are
# standardized on the training rows.
rng = np.random.default_rng(0)
test = np.zeros(len(y), dtype=bool)
for s in np.unique(X[:, 0]):
    rows = np.flatnonzero(X[:, 0] == s)
    test[rng.choice(rows, size=len(rows) // 4, replace=False)] = True
X[:, 1:] = StandardScaler().fit(X[~test, 1:]).transform(X[:, 1:])
X_train, X_test, y_train, y_test = X[~test], X[test], y[~test], y[test]

# %%
# Both regularization paths
# -------------------------
# Each path starts at ``alpha_max``, the smallest ``alpha`` whose solution is
# ``W = 0``, and goes down to ``1e-3 * alpha_max``. The held-out score of
# every point on the path is computed from the path's coefficients: each
# test row is predicted by its school's column of ``W`` (tasks in sorted
# order, as in ``tasks_``).
from sklearn.metrics import r2_score

tasks = np.unique(X_train[:, 0])
row_task = np.searchsorted(tasks, X_test[:, 0])
paths = {}
for penalty in ("l21", "trace"):
    alphas, coefs, intercepts = shared_feature_path(
        X_train, y_train, n_alphas=30, eps=1e-3, penalty=penalty, task_column=0
    )
    pred = np.einsum("ij,ijk->ik", X_test[:, 1:], coefs[row_task]) + intercepts[row_task]
    scores = np.array([r2_score(y_test, pred[:, k]) for k in range(len(alphas))])
    paths[penalty] = alphas, coefs, scores
    best = int(np.argmax(scores))
    print(f"{penalty:5s}: best held-out R^2 {scores[best]:.3f} at alpha = "
          f"{alphas[best] / alphas[0]:.3g} alpha_max")

# %%
# Left: along the ``l21`` path, the norm over schools of each feature's row
# of ``W``. Features enter one at a time, each for every school at once; the
# intake reading score (``standLRT``) enters first. Only four features ever
# enter: the school-level ones (``schavg``, school gender and type, VR band)
# are constant within each school, so each school's unpenalized intercept
# already accounts for them, and of a pair of one-hot columns that sums to
# one (``sex_F``, ``sex_M``) one suffices next to the intercept. Middle: the held-out
# score along both paths. Right: the six largest singular values of ``W``
# at the best ``alpha`` of the trace-norm path, against those of the least
# penalized fit. Since only a handful of features vary within schools, even
# that fit has few directions; the trace norm shrinks the small singular
# values most and keeps fewer.
alphas, coefs, scores = paths["l21"]
ratio = alphas / alphas[0]
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
norms = np.linalg.norm(coefs, axis=0)          # (n_features, n_alphas)
order = np.argsort(norms[:, -1])[::-1]
for j in order:
    axes[0].plot(ratio, norms[j], label=features[j] if norms[j, -1] > 1e-8 else None)
axes[0].set_xscale("log")
axes[0].invert_xaxis()
axes[0].set_xlabel("alpha / alpha_max")
axes[0].set_ylabel("norm of the feature's row of W")
axes[0].set_title("l21 path: features enter for all schools")
axes[0].legend(fontsize=7)

for penalty, color in (("l21", "tab:green"), ("trace", "tab:blue")):
    a, _, s = paths[penalty]
    axes[1].plot(a / a[0], s, color=color, label=penalty)
axes[1].set_xscale("log")
axes[1].invert_xaxis()
axes[1].set_ylim(0, None)
axes[1].set_xlabel("alpha / alpha_max")
axes[1].set_ylabel("held-out $R^2$")
axes[1].set_title("Score along the paths")
axes[1].legend()

alphas_t, coefs_t, scores_t = paths["trace"]
best = int(np.argmax(scores_t))
sv_best = np.linalg.svd(coefs_t[:, :, best], compute_uv=False)[:6]
sv_last = np.linalg.svd(coefs_t[:, :, -1], compute_uv=False)[:6]
k = np.arange(1, len(sv_best) + 1)
axes[2].bar(k - 0.2, sv_last, 0.4, color="tab:gray",
            label=f"alpha = {alphas_t[-1] / alphas_t[0]:.0e} alpha_max")
axes[2].bar(k + 0.2, sv_best, 0.4, color="tab:blue",
            label=f"best, alpha = {alphas_t[best] / alphas_t[0]:.2g} alpha_max")
axes[2].set_xlabel("singular value index")
axes[2].set_ylabel("singular value of W")
axes[2].set_title("Trace norm: a few shared directions")
axes[2].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %%
# The fitted trace-norm model is also a transformer: its ``components_`` are
# the shared directions, and ``transform`` projects the features on them.
model = SharedFeatureRegressor(penalty="trace", alpha=alphas_t[best], task_column=0).fit(X_train, y_train)
print("shared directions:", model.n_components_, "->", model.transform(X_test).shape)
