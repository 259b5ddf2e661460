"""Build ``data/school.csv.gz`` from the MALSAR ``school.mat`` (run once, by hand).

Provenance: the Inner London Education Authority (ILEA) exam scores of
15,362 students in 139 secondary schools, years 1985-1987, as distributed
with the MALSAR toolbox (Zhou, Chen & Ye, 2011, ``data/school.mat``) and used
by Evgeniou & Pontil (2004) and Argyriou, Evgeniou & Pontil (2008).
``school.mat`` holds MATLAB cell arrays ``X{t}`` (28 columns: 27 one-hot or
integer attributes and a constant bias) and ``Y{t}`` (the exam score) for
each school ``t``. Every value is an integer, so a gzip'd CSV of integers
keeps the data exact in about 55 kB; the constant bias column is dropped
and the school number (1 to 139, in the order of the cell array) is added.

Run from the repository root::

    python -m skmtl.datasets._make_school /path/to/school.mat
"""

import gzip
import sys
from pathlib import Path

import numpy as np
import scipy.io

from ._school import FEATURE_NAMES, SCHOOL_FILE


def convert(mat_path, out_path=SCHOOL_FILE):
    """Write the CSV of ``mat_path`` to ``out_path``; return the number of rows."""
    mat = scipy.io.loadmat(mat_path)
    Xs = [np.asarray(x, dtype=np.float64) for x in mat["X"].ravel()]
    ys = [np.asarray(v, dtype=np.float64).ravel() for v in mat["Y"].ravel()]
    X = np.vstack(Xs)
    y = np.concatenate(ys)
    if X.shape[1] != len(FEATURE_NAMES) + 1 or not np.all(X[:, -1] == 1):
        raise ValueError(f"{mat_path}: expected 27 attributes and a constant bias column")
    table = np.column_stack([np.repeat(np.arange(1, len(Xs) + 1), [len(x) for x in Xs]), X[:, :-1], y])
    if not np.array_equal(table, np.round(table)):
        raise ValueError(f"{mat_path}: expected integer values only")
    lines = [",".join(["school", *FEATURE_NAMES, "score"])]
    lines += [",".join(str(v) for v in row) for row in table.astype(np.int64)]
    # mtime=0 so that converting the same file twice gives the same bytes.
    with gzip.GzipFile(out_path, "wb", compresslevel=9, mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode("ascii"))
    return len(table)


if __name__ == "__main__":
    n = convert(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/school.mat")
    print(f"wrote {n} rows to {Path(SCHOOL_FILE)}")
