"""What every loader returns: a scikit-learn style Bunch in the long layout."""

import numpy as np
from sklearn.utils import Bunch


def _require_pandas(what):
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is in every extra
        raise ImportError(f"{what} needs pandas: pip install pandas") from exc
    return pd


def make_bunch(task, X, y, *, task_name, feature_names, target_name, descr, as_frame, return_X_y):
    """Long-layout Bunch: the task column first, then the features.

    ``task`` holds one label per row, ``X`` the numeric features. With
    ``as_frame`` the task column keeps its labels' dtype; without it ``data``
    is one float array, the task column included.
    """
    names = [task_name, *feature_names]
    if as_frame:
        pd = _require_pandas("as_frame=True")
        data = pd.DataFrame(np.asarray(X, dtype=np.float64), columns=list(feature_names))
        data.insert(0, task_name, np.asarray(task))
        target = pd.Series(np.asarray(y, dtype=np.float64), name=target_name)
        frame = pd.concat([data, target], axis=1)
        task_column = task_name
    else:
        data = np.column_stack([np.asarray(task, dtype=np.float64), np.asarray(X, dtype=np.float64)])
        target = np.asarray(y, dtype=np.float64)
        frame = None
        task_column = 0
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        frame=frame,
        feature_names=names,
        target_names=[target_name],
        task_column=task_column,
        DESCR=descr,
    )
