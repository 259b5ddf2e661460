"""
=====================================================================
Cold start: predicting new classes with GroupKFold (nlschools)
=====================================================================

MASS's ``nlschools``: language test scores of 2,287 Dutch pupils in 133
classes, with the pupil's verbal IQ and family social-economic status (SES)
and the class's size and whether it combines two grades. Each class is a
task.

Two questions need two cross-validations:

- *new pupils of known classes*: every class in every training fold,
  :class:`~sklearn.model_selection.StratifiedKFold` on the class labels;
- *pupils of a new class* (cold start): whole classes held out,
  :class:`~sklearn.model_selection.GroupKFold` with the class as group. A
  class the model never saw is predicted by the shared model
  (``handle_unknown='shared'``).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skmtl import SharedParamRegressor
from skmtl.datasets import load_nlschools

nl = load_nlschools(as_frame=True)
X, y = nl.data, nl.target
features = ["IQ", "GS", "SES", "COMB"]
print(X.head(3))

# %%
# Models
# ------
# ``alpha_shared=0`` leaves the shared part unpenalized, as the fixed effects
# of a mixed model are (the default ``alpha_shared=1.0`` is a strong ridge
# on standardized features). The features are standardized and the class
# label passed through
# untouched (it comes out last, under its own name). The pooled Ridge
# drops the class; the Ridge with one-hot class intercepts is the usual
# "fixed effects" model, which knows nothing about a class it has not seen
# (``handle_unknown='ignore'`` gives it no class offset).
def scaled(task="passthrough"):
    return ColumnTransformer([("scale", StandardScaler(), features)], remainder=task,
                             verbose_feature_names_out=False).set_output(transform="pandas")


alphas = np.logspace(-3, 3, 13)
models = {
    "SharedParamRegressor('auto')": make_pipeline(
        scaled(),
        SharedParamRegressor(alpha_shared=0, alpha_task="auto", task_column="class",
                             handle_unknown="shared"),
    ),
    "Ridge + one-hot class": make_pipeline(
        ColumnTransformer([("scale", StandardScaler(), features),
                           ("class", OneHotEncoder(handle_unknown="ignore"), ["class"])]),
        RidgeCV(alphas=alphas),
    ),
    "pooled Ridge": make_pipeline(scaled(task="drop"), RidgeCV(alphas=alphas)),
}

# %%
# The two cross-validations
# -------------------------
seen = list(StratifiedKFold(4, shuffle=True, random_state=0).split(X, X["class"]))
unseen = list(GroupKFold(4).split(X, y, groups=X["class"]))
scores = {
    (name, protocol): cross_val_score(model, X, y, cv=cv)
    for name, model in models.items()
    for protocol, cv in (("known classes", seen), ("new classes", unseen))
}
for (name, protocol), s in scores.items():
    print(f"{name:30s} {protocol:14s} R^2 {s.mean():.3f} +- {s.std():.3f}")

# %%
# On known classes, knowing the class helps: both class-aware models beat the
# pooled Ridge by about 0.07. The classes differ mostly in their level, which
# both capture; the class-specific slopes that ``'auto'`` adds change little
# here. On new classes nothing is known about the class: the shared model
# predicts as well as a pooled Ridge (it *is* one, fitted with the classes'
# differences taken out). Both class-aware models fall to the pooled Ridge's
# score: what they lose is the share of the variance that the class a pupil
# sits in explains, which no model of the pupil's features can recover.
fig, ax = plt.subplots(figsize=(7, 3.8))
names = list(models)
width = 0.38
for i, (protocol, color) in enumerate((("known classes", "tab:blue"), ("new classes", "tab:orange"))):
    pos = np.arange(len(names)) + (i - 0.5) * width
    means = [scores[n, protocol].mean() for n in names]
    ax.bar(pos, means, width, color=color, label=protocol)
    for p, n in zip(pos, names):
        ax.plot(np.full(4, p), scores[n, protocol], "k.", ms=4)
ax.set_xticks(np.arange(len(names)), names)
ax.set_ylabel("test $R^2$ (bars: mean, dots: folds)")
ax.set_title("nlschools: 4-fold cross-validation")
ax.set_ylim(0, 0.65)
ax.legend(loc="upper right", ncols=2)
fig.tight_layout()
plt.show()

# %%
# ``handle_unknown``
# ------------------
# With the default ``'warn'`` every fold of the cold-start cross-validation
# would warn about the classes it has not seen; ``'error'`` refuses them,
# which is what a production model that must never guess wants.
train, test = unseen[0]
strict = make_pipeline(scaled(), SharedParamRegressor(alpha_shared=0, alpha_task="auto", task_column="class",
                                                      handle_unknown="error"))
strict.fit(X.iloc[train], y.iloc[train])
try:
    strict.predict(X.iloc[test])
except ValueError as exc:
    print(str(exc)[:150], "...")
