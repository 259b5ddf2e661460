"""
================================================================
Shrinkage of per-subject slopes: sleepstudy and the mixed model
================================================================

lme4's ``sleepstudy``: the reaction time of 18 subjects on each of 10 days
of sleep deprivation. Every subject (task) has an intercept (reaction time
when rested) and a slope (ms lost per day). Fitting each subject alone (one
least-squares line per subject) gives noisy slopes; one pooled line ignores
real differences between subjects.

``SharedParamRegressor(alpha_task='auto')`` is the linear mixed model with a
random intercept and a random slope: it estimates how much subjects differ
(by REML) and pulls each subject's line towards the shared one by as much as
its own data leave uncertain. We compare it with statsmodels' ``MixedLM``
fitting the same model.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
import statsmodels.api as sm

from skmtl import SharedParamRegressor
from skmtl.datasets import load_sleepstudy

sleep = load_sleepstudy(as_frame=True)
X, y = sleep.data, sleep.target          # columns: Subject, Days
print(X.head(3))

# %%
# Per-subject least squares and the mixed model
# ---------------------------------------------
subjects = np.unique(X["Subject"])
ols = np.array([
    np.polyfit(X.loc[X["Subject"] == s, "Days"], y[X["Subject"] == s], 1) for s in subjects
])  # rows: (slope, intercept)

model = SharedParamRegressor(alpha_shared=0, alpha_task="auto", task_column="Subject")
model.fit(X, y)
print("shared (fixed) slope and intercept:", model.shared_coef_.round(2), round(model.shared_intercept_, 2))
sd_slope, sd_intercept = np.sqrt(np.diag(model.task_covariance_))
print(f"between-subject sd: slope {sd_slope:.2f} ms/day, intercept {sd_intercept:.2f} ms;"
      f" residual sd {np.sqrt(model.noise_variance_):.2f} ms")

# %%
# The same model in statsmodels: random intercept and random slope on Days,
# fitted by REML. Its fixed effects plus each subject's predicted random
# effects are the subject's coefficients.
mixed = sm.MixedLM(y.to_numpy(), sm.add_constant(X[["Days"]]).to_numpy(), groups=X["Subject"],
                   exog_re=sm.add_constant(X[["Days"]]).to_numpy()).fit(reml=True)
fixed = mixed.fe_params
random_effects = {s: np.asarray(re) for s, re in mixed.random_effects.items()}
mixed_slopes = np.array([fixed[1] + random_effects[s][1] for s in subjects])
mixed_intercepts = np.array([fixed[0] + random_effects[s][0] for s in subjects])
print("largest difference to MixedLM: slope "
      f"{np.abs(model.coef_[:, 0] - mixed_slopes).max():.1e}, intercept "
      f"{np.abs(model.intercept_ - mixed_intercepts).max():.1e}")

# %%
# Shrinkage
# ---------
# Left: each subject's least-squares line (open circle) moves to its
# posterior line (filled), towards the shared line (star). Subjects whose
# own slope is far from the others move most. Right: skmtl's and MixedLM's
# per-subject slopes agree.
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.2))
for (s_ols, b_ols), s_post, b_post in zip(ols, model.coef_[:, 0], model.intercept_):
    ax0.annotate("", xy=(b_post, s_post), xytext=(b_ols, s_ols),
                 arrowprops=dict(arrowstyle="->", color="0.6", lw=0.8))
ax0.scatter(ols[:, 1], ols[:, 0], facecolors="none", edgecolors="tab:gray", label="each subject alone")
ax0.scatter(model.intercept_, model.coef_[:, 0], color="tab:blue", label="alpha_task='auto'")
ax0.scatter(model.shared_intercept_, model.shared_coef_[0], marker="*", s=200, color="tab:orange",
            label="shared (fixed effects)")
ax0.set_xlabel("intercept: reaction time on day 0 (ms)")
ax0.set_ylabel("slope (ms per day)")
ax0.legend(fontsize=8)
ax0.set_title("Per-subject lines, before and after shrinkage")

lim = [min(mixed_slopes.min(), ols[:, 0].min()) - 2, max(mixed_slopes.max(), ols[:, 0].max()) + 2]
ax1.plot(lim, lim, color="k", lw=0.8)
ax1.scatter(mixed_slopes, model.coef_[:, 0], color="tab:blue", label="alpha_task='auto'")
ax1.scatter(mixed_slopes, ols[:, 0], facecolors="none", edgecolors="tab:gray", label="each subject alone")
ax1.set_xlabel("statsmodels MixedLM slope (ms per day)")
ax1.set_ylabel("slope (ms per day)")
ax1.legend(fontsize=8)
ax1.set_title("Same model, same estimates")
fig.tight_layout()
plt.show()
