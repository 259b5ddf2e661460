"""Quick start: students in schools, one model per school that borrows strength.

Run with ``python examples/quickstart.py``. Each of 100 schools has its own
intercept and slopes, scattered around common values; most schools have few
students. The script compares, on held-out students of every school:

- one Ridge per school (wastes data: small schools overfit),
- one pooled Ridge (ignores real differences between schools),
- skmtl's SharedParamRegressor (each school = shared part + its own part).
"""

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, train_test_split

from skmtl import SharedParamRegressor

rng = np.random.default_rng(0)
n_schools, n_features = 100, 5
sizes = rng.integers(5, 60, size=n_schools)
school = np.repeat(np.arange(n_schools), sizes)
X = rng.normal(size=(len(school), n_features))
shared = rng.normal(size=n_features)
own = shared + 0.5 * rng.normal(size=(n_schools, n_features))
level = 0.8 * rng.normal(size=n_schools)
y = np.einsum("ij,ij->i", X, own[school]) + level[school] + rng.normal(size=len(school))

data = pd.DataFrame(X, columns=[f"x{j}" for j in range(n_features)]).assign(school=school)
train, test, y_train, y_test = train_test_split(
    data, y, test_size=0.25, stratify=school, random_state=0
)
features = [c for c in data.columns if c != "school"]

# alpha_task sets how far a school may move away from the shared model.
model = GridSearchCV(
    SharedParamRegressor(alpha_shared=1e-4, task_column="school"),
    {"alpha_task": np.logspace(-4, -1, 7)},
)
model.fit(train, y_train)
scores = {"SharedParamRegressor": model.score(test, y_test)}

pooled = Ridge(alpha=1.0).fit(train[features], y_train)
scores["pooled Ridge"] = pooled.score(test[features], y_test)

pred = np.empty(len(test))
for s in np.unique(school):
    tr, te = train["school"] == s, (test["school"] == s).to_numpy()
    pred[te] = Ridge(alpha=1.0).fit(train.loc[tr, features], y_train[tr]).predict(
        test.loc[te, features]
    )
scores["one Ridge per school"] = r2_score(y_test, pred)

print("held-out R^2 (pooled over all test students)")
for name, value in scores.items():
    print(f"  {name:<22s} {value:.3f}")
