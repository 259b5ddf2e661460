"""What the Displays share: the lazy matplotlib import and the task labels."""

import numpy as np


def check_matplotlib_support(caller_name):
    """Raise an ImportError that says how to install matplotlib.

    matplotlib is an optional dependency (the ``[plot]`` extra); every
    Display calls this before importing it, so that skmtl imports without it.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f'{caller_name} requires matplotlib: pip install "skmtl[plot]"'
        ) from exc


def task_labels_or_range(task_labels, n_tasks, name="task_labels"):
    """``task_labels`` as an array of length ``n_tasks``; None means ``0 .. n_tasks - 1``."""
    if task_labels is None:
        return np.arange(n_tasks)
    task_labels = np.asarray(task_labels)
    if task_labels.shape != (n_tasks,):
        raise ValueError(
            f"{name} must have one label per task ({n_tasks}); got shape "
            f"{task_labels.shape}."
        )
    return task_labels


def label_text(labels):
    """Task labels as tick or legend text; a float label that is a whole number as an int.

    Numeric task columns are read as floats, and "3" reads better than "3.0".
    """
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    return [str(label) for label in labels]
