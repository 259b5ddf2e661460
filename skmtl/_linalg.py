"""Many small symmetric positive definite solves: one per task."""

import numpy as np
from scipy.linalg import lapack

# numpy's stacked solve pays a copy and an LU with pivoting per matrix, which
# dominates from about this size on; below it, LAPACK called once per matrix
# from Python costs more in call overhead than it saves (measured on a
# 2-core machine with one BLAS thread).
_LOOP_FROM = 16


def spd_solve_stacked(A, B):
    """Solve ``A_k X_k = B_k`` for a stack of SPD matrices, with ``log det A_k``.

    Parameters
    ----------
    A : ndarray of shape (k, p, p)
        Symmetric positive definite matrices.
    B : ndarray of shape (k, p, q)
        Right-hand sides.

    Returns
    -------
    X : ndarray of shape (k, p, q)
    logdet : ndarray of shape (k,)

    Raises
    ------
    numpy.linalg.LinAlgError
        If a matrix is not numerically positive definite.
    """
    k, p, _ = A.shape
    if p < _LOOP_FROM:
        chol = np.linalg.cholesky(A)
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        return np.linalg.solve(A, B), logdet
    X = np.empty_like(B)
    logdet = np.empty(k)
    for i in range(k):
        c, info = lapack.dpotrf(A[i], lower=1, clean=0)
        if info != 0:
            raise np.linalg.LinAlgError("a task matrix is not positive definite")
        X[i], info = lapack.dpotrs(c, B[i], lower=1)
        logdet[i] = 2.0 * np.log(np.diag(c)).sum()
    return X, logdet
