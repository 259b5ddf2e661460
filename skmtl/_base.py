"""Base class of the skmtl estimators: validation, tags, fit -> _fit, predict.

This is the only module that imports scikit-learn's private API
(``_fit_context``, ``_param_validation``, ``_check_sample_weight``), so that a
scikit-learn upgrade breaks one file.
"""

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import r2_score
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from . import _dask
from ._parallel import keep_freed_memory
from ._tasks import check_task_labels, make_long_tasks, make_wide_tasks

__all__ = ["Interval", "StrOptions", "MultiTaskRegressorBase"]


def _is_dataframe(X):
    return hasattr(X, "columns") and hasattr(X, "iloc")


class MultiTaskRegressorBase(RegressorMixin, BaseEstimator):
    """Shared machinery of the skmtl regressors.

    Subclasses implement ``_fit(data)``, which receives the task data of
    :mod:`skmtl._tasks` and returns a dict of fitted attributes. ``fit`` sets
    them only once ``_fit`` has returned, so a failed fit leaves the estimator
    as it was.
    """

    # Fitted attributes with one entry per task, squeezed for a 1-D wide y.
    _per_task_attributes = ("coef_", "intercept_")

    # Whether the squared-loss solvers read nothing but per-task sufficient
    # statistics, so that a dask DataFrame can be fitted (skmtl._dask).
    _fits_from_statistics = False

    _parameter_constraints = {
        "fit_intercept": ["boolean"],
        "task_column": [None, Integral, str],
        "handle_unknown": [StrOptions({"warn", "shared", "error"})],
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = self.task_column is None
        tags.target_tags.single_output = True
        return tags

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Training data. In the long layout one column (``task_column``)
            holds each row's task label. A dask DataFrame in the long layout
            is fitted from per-task sufficient statistics computed partition
            by partition, without gathering its rows (estimators whose
            squared-loss solvers need only those: ``SharedParamRegressor``
            and ``SharedFeatureRegressor``); ``y`` and ``sample_weight`` are
            then dask Series partitioned like it.
        y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            Targets. Wide layout: one column per task, NaN for a missing
            label. Long layout: 1-D.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        state = dict(vars(self))
        keep_freed_memory()
        try:
            data, fitted = self._validate_fit_input(X, y, sample_weight)
            fitted.update(self._fit(data))
            if fitted["_single_task"]:
                # A 1-D y is one task, with Ridge's shapes.
                for name in self._per_task_attributes:
                    value = fitted[name]
                    fitted[name] = value[0] if value.ndim == 2 else float(value[0])
        except BaseException:
            vars(self).clear()
            vars(self).update(state)
            raise
        for name, value in fitted.items():
            setattr(self, name, value)
        return self

    def _validate_fit_input(self, X, y, sample_weight):
        """Validate fit's input and lay it out as task data (:mod:`skmtl._tasks`)."""
        if _dask.check_fit_input(self, X, y, sample_weight):
            data, tasks = _dask.long_statistics(self, X, y, sample_weight)
            fitted = {"tasks_": tasks, "_single_task": False}
        elif self.task_column is None:
            data, fitted = self._validate_wide(X, y, sample_weight)
        else:
            data, fitted = self._validate_long(X, y, sample_weight)
        fitted["n_tasks_"] = data.n_tasks
        return data, fitted

    def _validate_wide(self, X, y, sample_weight):
        X, Y = validate_data(
            self,
            X,
            y,
            reset=True,
            validate_separately=(
                {"dtype": np.float64},
                {"dtype": np.float64, "ensure_2d": False, "ensure_all_finite": "allow-nan"},
            ),
        )
        check_consistent_length(X, Y)
        if Y.ndim > 2:
            raise ValueError(f"y must be 1-D or 2-D, got shape {Y.shape}.")
        single = Y.ndim == 1
        Y = Y.reshape(len(Y), -1)
        if Y.shape[1] == 0:
            raise ValueError("y has 0 columns: the wide layout needs one column per task.")
        empty = np.flatnonzero(np.isnan(Y).all(axis=0))
        if len(empty):
            raise ValueError(
                f"y column(s) {empty[:10].tolist()} have no observed label (all "
                "NaN): every task needs at least one label."
            )
        self._check_n_rows(len(X))
        sw = self._check_weights(sample_weight, X)
        data = make_wide_tasks(X, Y, sw)
        return data, {"tasks_": np.arange(Y.shape[1]), "_single_task": single}

    def _check_sufficient_stats(self):
        """Raise unless this configuration fits from per-task sufficient statistics.

        Those are all that a fit on a dask DataFrame computes
        (:mod:`skmtl._dask`); estimators whose solvers need only them override
        this and set ``_fits_from_statistics``.
        """
        if not self._fits_from_statistics:
            raise TypeError(
                f"X is a dask DataFrame, but {type(self).__name__} reads the rows of X "
                "at every iteration: fit it on in-memory data. SharedParamRegressor "
                "and SharedFeatureRegressor with loss='squared' fit a dask DataFrame "
                "from per-task sufficient statistics."
            )
        if self.loss != "squared":
            raise ValueError(
                "X is a dask DataFrame, which is fitted from per-task sufficient "
                f"statistics: that needs loss='squared', got loss={self.loss!r}."
            )

    def _validate_long(self, X, y, sample_weight):
        labels, Xf, y = self._check_long_rows(X, y)
        self._check_n_rows(len(Xf))
        sw = self._check_weights(sample_weight, Xf)
        data, tasks = make_long_tasks(Xf, labels, y, sw)
        return data, {"tasks_": tasks, "_single_task": False}

    def _check_long_rows(self, X, y):
        """Task labels, model features and ``y`` of the long layout, checked row by row.

        Every check here holds for any subset of the rows: a fit on a dask
        DataFrame runs it on each partition.
        """
        labels, Xf = self._validate_long_X(X, y, reset=True)
        y = check_array(y, ensure_2d=False, dtype=np.float64, ensure_all_finite=False, input_name="y")
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. "
                "Please change the shape of y to (n_samples, ), for example "
                "using ravel().",
                DataConversionWarning,
            )
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(
                f"y must be 1-D in the long layout (task_column={self.task_column!r}), "
                f"got shape {y.shape}; for one column per task use task_column=None."
            )
        if np.isnan(y).any():
            raise ValueError(
                f"Input y contains NaN. In the long layout (task_column="
                f"{self.task_column!r}) every row needs a label: drop the unlabelled rows."
            )
        if np.isinf(y).any():
            raise ValueError("Input y contains infinity.")
        check_consistent_length(Xf, y)
        return labels, Xf, y

    @staticmethod
    def _check_n_rows(n_samples):
        if n_samples < 2:
            raise ValueError(
                f"X has {n_samples} sample (n_samples={n_samples}); at least 2 rows "
                "are required to fit."
            )

    @classmethod
    def _check_weights(cls, sample_weight, X, *, all_rows=True):
        """Validated sample weights; ``all_rows=False`` for a part of the rows."""
        if sample_weight is None:
            return None
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if all_rows:
            cls._check_weight_sum(sw.sum())
        return sw

    @staticmethod
    def _check_weight_sum(total):
        if not total > 0:
            raise ValueError("sample_weight sums to zero: at least one row needs a positive weight.")

    def _validate_long_X(self, X, y="no_validation", *, reset):
        """Task labels and model features of a long-layout ``X``.

        ``n_features_in_`` and ``feature_names_in_`` describe ``X`` as passed,
        task column included.
        """
        _dask.check_in_memory(X, "X")
        if not _is_dataframe(X):
            # Labels may be strings: convert without forcing a numeric dtype.
            X = check_array(X, dtype=None, ensure_all_finite=False, input_name="X", estimator=self)
        validate_data(self, X, y, reset=reset, skip_check_array=True)
        tc = self.task_column
        if _is_dataframe(X):
            columns = list(X.columns)
            pos = self._frame_task_position(columns)
            labels = X.iloc[:, pos].to_numpy()
            rest = X.iloc[:, [i for i in range(len(columns)) if i != pos]]
        else:
            if isinstance(tc, str):
                raise ValueError(
                    f"task_column={tc!r} is a column name, but X has no column names: "
                    "pass X as a pandas DataFrame, or task_column as an int position."
                )
            pos = self._column_position(tc, X.shape[1])
            labels = X[:, pos]
            # A view when the task column is first or last (the usual case):
            # the one copy is then made where the rows are laid out by task.
            n_columns = X.shape[1]
            if pos == 0:
                rest = X[:, 1:]
            elif pos == n_columns - 1:
                rest = X[:, :-1]
            else:
                rest = np.delete(X, pos, axis=1)
        labels = check_task_labels(labels, where=f"task_column={tc!r} of X")
        Xf = check_array(
            rest, dtype=np.float64, ensure_min_features=0, input_name="X", estimator=self
        )
        return labels, Xf

    def _frame_task_position(self, columns):
        """Position of the task column among a DataFrame's ``columns``."""
        tc = self.task_column
        if isinstance(tc, str):
            if tc not in columns:
                raise ValueError(
                    f"task_column={tc!r} is not a column of X; X has columns "
                    f"{columns[:20]}."
                )
            return columns.index(tc)
        return self._column_position(tc, len(columns))

    @staticmethod
    def _column_position(tc, n_columns):
        if not -n_columns <= tc < n_columns:
            raise ValueError(
                f"task_column={tc} does not exist: X has {n_columns} column(s)."
            )
        return tc % n_columns

    # -------------------------------------------------------------- predict

    def _shared_model(self):
        """Head and intercept that predict an unknown task: the mean of the tasks'."""
        coef, intercept = self._task_heads()
        return coef.mean(axis=0), float(intercept.mean())

    def _task_codes(self, labels):
        """Index into ``tasks_`` of each label, and the mask of unknown ones."""
        known_str = self.tasks_.dtype.kind == "O"
        new_str = labels.dtype.kind == "O"
        if known_str != new_str:
            raise ValueError(
                f"Task labels in task_column={self.task_column!r} of X are "
                f"{'strings' if new_str else 'numbers'}, but fit saw "
                f"{'strings' if known_str else 'numbers'}."
            )
        codes = np.searchsorted(self.tasks_, labels)
        codes = np.minimum(codes, len(self.tasks_) - 1)
        unknown = self.tasks_[codes] != labels
        if unknown.any():
            names = np.unique(labels[unknown])
            shown = names[:10].tolist()
            if self.handle_unknown == "error":
                raise ValueError(
                    f"Found unknown task label(s) {shown} in task_column="
                    f"{self.task_column!r} of X during predict; fit saw "
                    f"{self.n_tasks_} tasks. Set handle_unknown='shared' to predict "
                    "them with the shared model."
                )
            if self.handle_unknown == "warn":
                warnings.warn(
                    f"Found {len(names)} unknown task label(s) {shown} in "
                    f"task_column={self.task_column!r} of X: they are predicted by the "
                    "shared model. Set handle_unknown='shared' to silence this warning.",
                    UserWarning,
                )
        return codes, unknown

    def predict(self, X):
        """Predict with each task's model.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Samples, with the task column in the long layout.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_tasks)
            Wide layout: one column per task (1-D when ``y`` was 1-D in fit).
            Long layout: each row predicted by its own task's model. For a
            dask DataFrame ``X`` (long layout), a lazy dask Series with
            ``X``'s partitions and index.
        """
        check_is_fitted(self)
        if _dask.is_dask_collection(X):
            return _dask.predict(self, X)
        coef, intercept = self._task_heads()
        if self.task_column is None:
            X = validate_data(self, X, reset=False, dtype=np.float64)
            pred = self._head_inputs(X) @ coef.T + intercept
            return pred[:, 0] if self._single_task else pred
        labels, Xf = self._validate_long_X(X, reset=False)
        codes, unknown = self._task_codes(labels)
        H = self._head_inputs(Xf)
        pred = np.einsum("ij,ij->i", H, coef[codes]) + intercept[codes]
        if unknown.any():
            shared_coef, shared_intercept = self._shared_model()
            pred[unknown] = H[unknown] @ shared_coef + shared_intercept
        return pred

    def _task_heads(self):
        """Per-task linear heads (n_tasks, n_inputs) and intercepts (n_tasks,)."""
        return np.atleast_2d(self.coef_), np.atleast_1d(self.intercept_)

    def _head_inputs(self, X):
        """What the task heads read: the model features, for linear models."""
        return X

    def score(self, X, y, sample_weight=None):
        """R^2 that leaves out missing labels.

        Wide layout: the mean over tasks of each task's R^2 on its observed
        rows (equal to ``r2_score(..., multioutput='uniform_average')`` when
        nothing is missing; tasks with fewer than two observed labels are left
        out). Long layout: R^2 over all rows, the pooled explained variance
        that the multi-task literature reports.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Test samples.
        y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            True values; NaN marks a missing label in the wide layout.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.

        Returns
        -------
        score : float
            R^2 of ``self.predict(X)`` against ``y``.
        """
        _dask.check_in_memory(X, "X")
        y_pred = self.predict(X)
        if self.task_column is not None:
            return r2_score(y, y_pred, sample_weight=sample_weight)
        Y = check_array(y, ensure_2d=False, dtype=np.float64, ensure_all_finite="allow-nan", input_name="y")
        Y = Y.reshape(len(Y), -1)
        P = y_pred.reshape(len(y_pred), -1)
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        scores = []
        for t in range(Y.shape[1]):
            rows = ~np.isnan(Y[:, t])
            if rows.sum() >= 2:
                scores.append(
                    r2_score(Y[rows, t], P[rows, t], sample_weight=None if sw is None else sw[rows])
                )
        return float(np.mean(scores)) if scores else np.nan

