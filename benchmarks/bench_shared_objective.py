"""SharedObjectiveRegressor against MLPRegressor and the same model in PyTorch.

Two data sets, in one run:

- ``school``: the School data (139 schools, 15,362 students, exam scores),
  split 75/25 within each school. SharedObjectiveRegressor takes the long
  layout (school column); MLPRegressor cannot take a task column or missing
  labels, so it gets the features plus a one-hot school indicator and one
  output. Score: R^2 over all test students (explained variance).
- ``hetero``: synthetic wide data, tasks sharing a nonlinear representation,
  task noise spanning 10x in standard deviation. MLPRegressor gets the wide
  ``y`` (one output per task). Score: mean over tasks of the test R^2.

Every contender uses the same hidden size and activation. The L2 penalty is
not on the same scale across them (MLPRegressor divides it by the number of
rows, and its one-hot input gives it other weights to penalize), so each
contender picks its own ``alpha`` from its grid on a validation split of the
training data (80/20, per task in the long layout); only the refit on the
whole training set with that ``alpha`` is timed and scored. The PyTorch
column is the same model (shared layer, one linear head per task) with
Kendall et al.'s uncertainty weighting as usually written in PyTorch:
learned log-variances, Adam on mini-batches. It is read five ways (the
rules are in benchmarks/README.md): the time until its test score first
reaches skmtl's (within ``--torch-budget`` epochs, the test evaluations off
the clock), the time with early stopping on a 10% validation split, and the
time of ``--torch-epochs`` epochs (its ``alpha`` is picked with fits of
that many epochs); and, against skmtl with ``early_stopping=True``
(``--validation-fraction``, ``--patience`` rounds), the time until its test
score first reaches that fit's, and the time with skmtl's early-stopping
rule (same validation fraction, score, ``tol`` and count, in epochs). BLAS (threadpoolctl) and torch are held to the same
number of threads (``--threads``, default 1) for every contender. Fit times
are medians over ``--repeats`` runs, in which the contenders take turns;
scores are the median over the same runs.

Usage::

    python benchmarks/bench_shared_objective.py --out bench_shared_objective.json
"""

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.io
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skmtl import SharedObjectiveRegressor

DEFAULT_SCHOOL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "school.mat"
# The improvement of the validation score that early stopping counts.
SKMTL_TOL = SharedObjectiveRegressor().tol


def load_school(path, seed):
    """Long layout: column 0 is the school, then the standardized features."""
    mat = scipy.io.loadmat(path)
    Xs, ys = mat["X"][0], mat["Y"][0]
    rng = np.random.RandomState(seed)
    parts = {"train": [], "test": []}
    for school, (Xt, yt) in enumerate(zip(Xs, ys)):
        Xt = np.asarray(Xt, dtype=float)
        yt = np.asarray(yt, dtype=float).ravel()
        order = rng.permutation(len(yt))
        n_train = int(round(0.75 * len(yt)))
        for name, rows in (("train", order[:n_train]), ("test", order[n_train:])):
            parts[name].append(np.column_stack([np.full(len(rows), school), Xt[rows], yt[rows]]))
    train, test = (np.vstack(parts[name]) for name in ("train", "test"))
    # Drop constant columns (the data ships a column of ones).
    keep = np.flatnonzero(train[:, 1:-1].std(axis=0) > 0) + 1
    scaler = StandardScaler().fit(train[:, keep])
    return (
        np.column_stack([train[:, 0], scaler.transform(train[:, keep])]), train[:, -1],
        np.column_stack([test[:, 0], scaler.transform(test[:, keep])]), test[:, -1],
    )


def make_hetero(seed, n_train=2000, n_test=2000, n_features=20, n_tasks=8, rank=4):
    """Wide layout, tasks sharing a tanh representation, noise sd 0.1 .. 1."""
    rng = np.random.RandomState(seed)
    B = rng.normal(size=(n_features, rank))
    C = rng.normal(size=(rank, n_tasks))
    noise = np.geomspace(0.1, 1.0, n_tasks)
    X = rng.normal(size=(n_train + n_test, n_features))
    Y = np.tanh(X @ B / np.sqrt(n_features)) @ C + rng.normal(size=(len(X), n_tasks)) * noise
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def one_hot_tasks(X, n_tasks):
    """MLPRegressor's input for the long layout: features plus task indicator."""
    return np.column_stack([X[:, 1:], np.eye(n_tasks)[X[:, 0].astype(int)]])


def wide_score(Y, P):
    return float(np.mean(r2_score(Y, P, multioutput="raw_values")))


# -------------------------------------------------------------- contenders


def run_skmtl(data, args, seed, alpha, early_stopping=False):
    X, y, Xt, yt, layout = data
    model = SharedObjectiveRegressor(
        n_components=args.hidden, activation=args.activation, task_weights="uncertainty",
        alpha=alpha, task_column=0 if layout == "long" else None, random_state=seed,
        max_iter=args.max_rounds, early_stopping=early_stopping,
        validation_fraction=args.validation_fraction, n_iter_no_change=args.patience,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X, y)
    elapsed = time.perf_counter() - start
    score = model.score(Xt, yt)
    info = {"n_rounds": int(model.n_iter_), "converged": not caught}
    if early_stopping:
        info["best_round"] = int(np.argmax(model.validation_scores_)) + 1
        info["validation_scores"] = model.validation_scores_.tolist()
    return elapsed, score, info


def run_skmtl_early_stopping(data, args, seed, alpha):
    """skmtl with ``early_stopping=True`` (``--validation-fraction``, ``--patience``)."""
    return run_skmtl(data, args, seed, alpha, early_stopping=True)


def run_mlp(data, args, seed, alpha):
    X, y, Xt, yt, layout = data
    if layout == "long":
        n_tasks = int(max(X[:, 0].max(), Xt[:, 0].max())) + 1
        X, Xt = one_hot_tasks(X, n_tasks), one_hot_tasks(Xt, n_tasks)
    model = MLPRegressor(
        hidden_layer_sizes=(args.hidden,), activation=args.activation, alpha=alpha,
        random_state=seed,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X, y)
    elapsed = time.perf_counter() - start
    pred = model.predict(Xt)
    score = r2_score(yt, pred) if layout == "long" else wide_score(yt, pred)
    return elapsed, score, {"n_epochs": int(model.n_iter_), "converged": not caught}


def _torch_model(X, y, layout, args, seed):
    """The PyTorch version: network, Kendall et al.'s loss, and a scorer."""
    import torch

    torch.manual_seed(seed)
    if layout == "long":
        tasks = torch.as_tensor(X[:, 0].astype(np.int64))
        X = X[:, 1:]
        n_tasks = int(tasks.max()) + 1
    else:
        n_tasks = y.shape[1]
    Y, Xtr = torch.as_tensor(y), torch.as_tensor(X)
    act = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z}[args.activation]
    shared = torch.nn.Linear(X.shape[1], args.hidden).double()
    heads = torch.nn.Linear(args.hidden, n_tasks).double()
    log_var = torch.zeros(n_tasks, dtype=torch.float64, requires_grad=True)
    params = list(shared.parameters()) + list(heads.parameters()) + [log_var]

    def task_mse(idx):
        out = heads(act(shared(Xtr[idx])))
        if layout == "long":
            t = tasks[idx]
            r = Y[idx] - out[torch.arange(len(idx)), t]
            sums = torch.zeros(n_tasks, dtype=torch.float64).index_add(0, t, r * r)
            counts = torch.bincount(t, minlength=n_tasks).double()
            return sums / counts.clamp(min=1), counts > 0
        r = Y[idx] - out
        return (r * r).mean(dim=0), torch.ones(n_tasks, dtype=torch.bool)

    def loss(idx, alpha):
        mse, present = task_mse(idx)
        # Kendall, Gal & Cipolla (2018): sum_t mse_t / (2 sigma_t^2) + log sigma_t.
        value = (0.5 * torch.exp(-log_var) * mse + 0.5 * log_var)[present].sum()
        return value + 0.5 * alpha * (shared.weight.pow(2).sum() + heads.weight.pow(2).sum())

    def predict(Xe):
        """Each row's prediction for its task (long), or one column per task (wide)."""
        features = Xe[:, 1:] if layout == "long" else Xe
        with torch.no_grad():
            out = heads(act(shared(torch.as_tensor(features)))).numpy()
        if layout == "long":
            return out[np.arange(len(out)), Xe[:, 0].astype(np.int64)]
        return out

    def score(Xe, ye):
        """The score of the benchmark (see ``wide_score``) on ``Xe, ye``."""
        return r2_score(ye, predict(Xe)) if layout == "long" else wide_score(ye, predict(Xe))

    score.predict = predict
    return params, loss, score, len(Xtr)


def _torch_epoch(optimizer, loss, n, alpha, args):
    import torch

    for idx in torch.randperm(n).split(args.torch_batch):
        optimizer.zero_grad()
        loss(idx, alpha).backward()
        optimizer.step()


def run_torch(data, args, seed, alpha, epochs=None):
    """``epochs`` epochs of Adam (``--torch-epochs`` by default).

    The info holds ``curve``: after each epoch, the training time so far
    (the test evaluation is not on the clock) and the test score.
    """
    import torch

    X, y, Xt, yt, layout = data
    params, loss, score, n = _torch_model(X, y, layout, args, seed)
    optimizer = torch.optim.Adam(params, lr=args.torch_lr)
    epochs = args.torch_epochs if epochs is None else epochs
    elapsed, curve = 0.0, []
    for _ in range(epochs):
        start = time.perf_counter()
        _torch_epoch(optimizer, loss, n, alpha, args)
        elapsed += time.perf_counter() - start
        curve.append((elapsed, score(Xt, yt)))
    return elapsed, curve[-1][1], {"n_epochs": epochs, "curve": curve}


def run_torch_early_stopping(data, args, seed, alpha):
    """Adam with early stopping on a 10% validation split of the training rows.

    MLPRegressor's ``early_stopping`` rule: stop after 10 epochs without a
    better validation score, keep the best epoch's weights. The validation
    passes are on the clock.
    """
    import torch

    _, _, Xt, yt, layout = data
    X, y, Xv, yv, _ = validation_split(data, seed=seed, fraction=0.1)
    params, loss, score, n = _torch_model(X, y, layout, args, seed)
    optimizer = torch.optim.Adam(params, lr=args.torch_lr)
    best, best_params, best_epoch, epoch = -np.inf, None, 0, 0
    start = time.perf_counter()
    while epoch < args.torch_budget and epoch - best_epoch < 10:
        epoch += 1
        _torch_epoch(optimizer, loss, n, alpha, args)
        current = score(Xv, yv)
        if current > best:
            best, best_epoch = current, epoch
            best_params = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, saved in zip(params, best_params):
            p.copy_(saved)
    elapsed = time.perf_counter() - start
    return elapsed, score(Xt, yt), {"n_epochs": epoch, "best_epoch": best_epoch}


def skmtl_validation_score(X, y, Xv, yv, layout):
    """SharedObjectiveRegressor's validation score, as a function of the predictions
    of ``Xv``: the mean over tasks of ``1 - MSE_t / Var_t``, with ``MSE_t`` on
    the task's held-out rows and ``Var_t`` the variance of its training labels."""
    if layout == "wide":
        variance = y.var(axis=0)
        return lambda pred: float(np.mean(1 - ((yv - pred) ** 2).mean(axis=0) / variance))
    train, held = X[:, 0].astype(np.int64), Xv[:, 0].astype(np.int64)
    n_tasks = int(max(train.max(), held.max())) + 1
    count = np.maximum(np.bincount(train, minlength=n_tasks), 1)
    mean = np.bincount(train, y, n_tasks) / count
    variance = np.bincount(train, (y - mean[train]) ** 2, n_tasks) / count
    n_held = np.bincount(held, minlength=n_tasks)
    scored = (n_held > 0) & (variance > 0)

    def score(pred):
        mse = np.bincount(held, (yv - pred) ** 2, n_tasks) / np.maximum(n_held, 1)
        return float(np.mean(1 - mse[scored] / variance[scored]))

    return score


def run_torch_early_stopping_same_rule(data, args, seed, alpha):
    """Adam with SharedObjectiveRegressor's early-stopping rule, epochs for rounds.

    The same validation fraction, validation score (:func:`skmtl_validation_score`),
    ``tol`` (1e-4) and count: stop once more than ``--patience`` epochs in a
    row did not beat the best validation score by ``tol``; keep the best
    epoch's weights. The validation passes are on the clock.
    """
    import torch

    _, _, Xt, yt, layout = data
    X, y, Xv, yv, _ = validation_split(data, seed=seed, fraction=args.validation_fraction)
    params, loss, score, n = _torch_model(X, y, layout, args, seed)
    validation_score = skmtl_validation_score(X, y, Xv, yv, layout)
    optimizer = torch.optim.Adam(params, lr=args.torch_lr)
    best, best_params, best_epoch, epoch, no_improvement = -np.inf, None, 0, 0, 0
    start = time.perf_counter()
    while epoch < args.torch_budget and no_improvement <= args.patience:
        epoch += 1
        _torch_epoch(optimizer, loss, n, alpha, args)
        current = validation_score(score.predict(Xv))
        no_improvement = no_improvement + 1 if current < best + SKMTL_TOL else 0
        if current > best:
            best, best_epoch = current, epoch
            best_params = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, saved in zip(params, best_params):
            p.copy_(saved)
    elapsed = time.perf_counter() - start
    return elapsed, score(Xt, yt), {"n_epochs": epoch, "best_epoch": best_epoch}


def validation_split(data, seed=0, fraction=0.2):
    """Hold out ``fraction`` of the training part (within each task in the long layout)."""
    X, y, _, _, layout = data
    rng = np.random.RandomState(seed)
    if layout == "long":
        val = np.zeros(len(y), dtype=bool)
        for task in np.unique(X[:, 0]):
            rows = np.flatnonzero(X[:, 0] == task)
            val[rng.choice(rows, int(round(fraction * len(rows))), replace=False)] = True
    else:
        val = rng.rand(len(y)) < fraction
    return X[~val], y[~val], X[val], y[val], layout


def pick_alpha(run, data, args, grid):
    """The grid value with the best validation score (one fit each)."""
    inner = validation_split(data)
    scores = {}
    with threadpool_limits(limits=args.threads, user_api="blas"):
        for alpha in grid:
            scores[alpha] = run(inner, args, seed=0, alpha=alpha)[1]
    return max(scores, key=scores.get), scores


def summarize(alpha, validation, runs):
    times = [r[0] for r in runs]
    scores = [r[1] for r in runs]
    return {
        "alpha": alpha,
        "validation_scores": {str(a): v for a, v in validation.items()},
        "fit_time_median": float(np.median(times)),
        "fit_times": times,
        "score_median": float(np.median(scores)),
        "scores": scores,
        "info": [r[2] for r in runs],
    }


def run_torch_budget(data, args, seed, alpha):
    """One run of ``--torch-budget`` epochs, with the test score after each."""
    return run_torch(data, args, seed, alpha, epochs=args.torch_budget)


def equal_quality(alpha, validation, budget_runs, target):
    """The training time until the test score first reaches ``target``, per budgeted run."""
    equal = []
    for _, _, info in budget_runs:
        curve = info["curve"]
        hits = [e for e, (_, score) in enumerate(curve) if score >= target]
        best = max(range(len(curve)), key=lambda e: curve[e][1])
        e = hits[0] if hits else best
        equal.append((*curve[e], {
            "n_epochs": e + 1, "reached": bool(hits), "target": target,
            "budget_time": curve[-1][0],
        }))
    row = summarize(alpha, validation, equal)
    row["reached"] = all(r[2]["reached"] for r in equal)
    row["budget_time_median"] = float(np.median([r[2]["budget_time"] for r in equal]))
    return row


def torch_rows(alpha, validation, budget_runs, early_runs, same_rule_runs, targets, args):
    """The readings of the PyTorch version (see the README).

    Each budgeted run gives the fixed-epoch reading and the training time
    until the test score first reaches each of ``targets`` (skmtl's median
    test score, without and with early stopping); the early-stopping runs
    are separate fits.
    """
    fixed = []
    for _, _, info in budget_runs:
        curve = info["curve"]
        epoch = min(args.torch_epochs, len(curve)) - 1
        fixed.append((*curve[epoch], {"n_epochs": epoch + 1}))
    rows = {
        f"torch {args.torch_epochs} epochs": summarize(alpha, validation, fixed),
        "torch equal quality": equal_quality(alpha, validation, budget_runs, targets[0]),
        "torch early stopping": summarize(alpha, validation, early_runs),
        "torch equal quality to skmtl ES": equal_quality(
            alpha, validation, budget_runs, targets[1]
        ),
        "torch ES, skmtl's rule": summarize(alpha, validation, same_rule_runs),
    }
    # The per-epoch curves, once.
    rows["torch equal quality"]["curves"] = [info["curve"] for _, _, info in budget_runs]
    return rows


# Each row's time is also divided by that of the skmtl row it is compared with.
REFERENCE = {
    "torch early stopping": "skmtl ES",
    "torch equal quality to skmtl ES": "skmtl ES",
    "torch ES, skmtl's rule": "skmtl ES",
}


# -------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--school", type=Path, default=DEFAULT_SCHOOL.resolve())
    parser.add_argument("--datasets", nargs="+", default=["school", "hetero"])
    parser.add_argument("--hidden", type=int, default=10)
    parser.add_argument("--activation", default="relu", choices=["identity", "relu", "tanh"])
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1],
        help="alpha grid of SharedObjectiveRegressor and of the PyTorch model",
    )
    parser.add_argument(
        "--mlp-alphas", type=float, nargs="+", default=[1e-4, 1e-2, 1.0, 10.0, 100.0],
        help="alpha grid of MLPRegressor (its penalty is divided by the number of rows)",
    )
    parser.add_argument(
        "--max-rounds", type=int, default=50, help="SharedObjectiveRegressor max_iter"
    )
    parser.add_argument(
        "--validation-fraction", type=float, default=0.1,
        help="held out by the early-stopping readings of skmtl and PyTorch",
    )
    parser.add_argument(
        "--patience", type=int, default=10,
        help="n_iter_no_change of skmtl (rounds) and of the same rule in PyTorch (epochs)",
    )
    parser.add_argument("--torch-epochs", type=int, default=100)
    parser.add_argument(
        "--torch-budget", type=int, default=300,
        help="epochs of the PyTorch runs that measure the time to skmtl's test score",
    )
    parser.add_argument("--torch-batch", type=int, default=256)
    parser.add_argument("--torch-lr", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench_shared_objective.json"))
    args = parser.parse_args()

    # Each contender's alpha is picked by its first run function; the timed
    # runs are the others (the PyTorch version gives two: a budgeted run read
    # two ways, and the early-stopping run).
    contenders = {
        "skmtl": [run_skmtl], "skmtl ES": [run_skmtl_early_stopping], "mlp": [run_mlp],
    }
    torch_note = None
    try:
        import torch
    except ImportError as exc:
        torch_note = f"PyTorch column skipped: torch is not installed ({exc})."
        print(torch_note)
    else:
        torch.set_num_threads(args.threads)
        contenders["torch"] = [
            run_torch, run_torch_budget, run_torch_early_stopping,
            run_torch_early_stopping_same_rule,
        ]

    results = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "platform": platform.platform(),
        "threads": args.threads,
        "torch": torch_note or f"torch {torch.__version__}",
        "datasets": {},
    }
    for name in args.datasets:
        if name == "school":
            X, y, Xt, yt = load_school(args.school, seed=0)
            data = (X, y, Xt, yt, "long")
        else:
            X, y, Xt, yt = make_hetero(seed=0)
            data = (X, y, Xt, yt, "wide")
        load_before = os.getloadavg()
        alphas, runs = {}, {}
        for label, (picker, *timed) in contenders.items():
            grid = args.mlp_alphas if label == "mlp" else args.alphas
            alphas[label] = pick_alpha(picker, data, args, grid)
            runs[label] = [[] for _ in (timed or [picker])]
        # The contenders take turns within each repeat, so that a change in
        # the load of the (shared) machine hits them all alike.
        with threadpool_limits(limits=args.threads, user_api="blas"):
            for repeat in range(args.repeats):
                for label, (picker, *timed) in contenders.items():
                    for run, store in zip(timed or [picker], runs[label]):
                        store.append(run(data, args, seed=repeat, alpha=alphas[label][0]))
        rows = {
            label: summarize(*alphas[label], runs[label][0])
            for label in ("skmtl", "skmtl ES", "mlp")
        }
        if "torch" in runs:
            targets = (rows["skmtl"]["score_median"], rows["skmtl ES"]["score_median"])
            rows.update(torch_rows(*alphas["torch"], *runs["torch"], targets, args))
        for label, row in rows.items():
            row["reference"] = REFERENCE.get(label, "skmtl")
            for key, base in (("skmtl", "skmtl"), ("reference", row["reference"])):
                row[f"fit_time_ratio_vs_{key}"] = (
                    row["fit_time_median"] / rows[base]["fit_time_median"]
                )
        results["datasets"][name] = {
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "contenders": rows,
        }
        print(f"\n{name} ({data[4]} layout, {len(y)} training rows), load average "
              f"{load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
        print(
            f"{'contender':<32} {'alpha':>8} {'test R^2':>9} {'fit time (s)':>13} "
            f"{'time / skmtl':>13} {'time / reference':>17}"
        )
        for label, row in rows.items():
            note = "" if row.get("reached", True) else "  (not reached: best epoch)"
            print(
                f"{label:<32} {row['alpha']:>8g} {row['score_median']:>9.4f} "
                f"{row['fit_time_median']:>13.3f} {row['fit_time_ratio_vs_skmtl']:>13.2f} "
                f"{row['fit_time_ratio_vs_reference']:>10.2f} ({row['reference']}){note}"
            )
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
