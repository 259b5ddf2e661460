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
    # The derivative is r clipped to [-epsilon, epsilon] and the loss is
    # deriv * r - deriv^2 / 2 in both pieces: half the passes over r of two
    # np.where (the iterative solvers call this at every evaluation), and
    # bit for bit the same values (r * r - (r * r) / 2 is exact), which
    # matters near the optimum, where L-BFGS's line search compares
    # objectives that differ in the last bits.
    deriv = np.clip(r, -epsilon, epsilon)
    value = deriv * r
    square = deriv * deriv
    square *= 0.5
    value -= square
    return value, deriv


def squared_curvature(r, epsilon=None):
    """Where the second derivative of ``r**2 / 2`` is 1: everywhere."""
    return np.ones(r.shape, dtype=bool)


def huber_curvature(r, epsilon):
    """Where the second derivative of Huber's loss is 1 (``|r| <= epsilon``); 0 elsewhere.

    The loss has no second derivative at ``|r| = epsilon``; 1 there is one
    element of its generalized Hessian, which is what a semi-smooth Newton
    method needs.
    """
    return np.abs(r) <= epsilon


LOSSES = {"squared": squared_loss, "huber": huber_loss}
# The second derivative of both losses is 1 or 0: these return boolean masks
# of where it is 1.
CURVATURES = {"squared": squared_curvature, "huber": huber_curvature}
