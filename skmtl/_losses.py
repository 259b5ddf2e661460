"""Losses of a residual vector: value and derivative.

The data term of every estimator is ``(1 / S) * sum s_i * loss(r_i)`` over the
observed (row, task) pairs; these functions return ``loss(r)`` and its
derivative with respect to the residual ``r = y - prediction``.
"""

import numpy as np


def squared_loss(r, epsilon=None):
    """``r**2 / 2`` and its derivative ``r``."""
    return 0.5 * r * r, r


def huber_loss(r, epsilon):
    """Huber's loss with threshold ``epsilon`` and its derivative.

    ``r**2 / 2`` for ``|r| <= epsilon``, ``epsilon * |r| - epsilon**2 / 2``
    beyond: quadratic near zero, linear in the tails, continuously
    differentiable.
    """
    abs_r = np.abs(r)
    small = abs_r <= epsilon
    value = np.where(small, 0.5 * r * r, epsilon * abs_r - 0.5 * epsilon**2)
    deriv = np.where(small, r, epsilon * np.sign(r))
    return value, deriv


LOSSES = {"squared": squared_loss, "huber": huber_loss}
