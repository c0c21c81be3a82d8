"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``).

``learning_rate(param, iteration, current_step)`` returns ``(rate,
current_step)``. The step counter is state because ``multistep`` advances it
by at most one per call, exactly as Caffe does; that is why a solverstate
stores ``current_step``. Arithmetic follows Caffe's float/double mix: the
proto fields are float32, ``pow`` and ``exp`` run in double, and the rate is
rounded to float32 (Caffe's ``Dtype rate``).
"""

import math

import numpy as np

from ..errors import SolverError

__all__ = ["POLICIES", "learning_rate"]

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

_f32 = np.float32


def learning_rate(param, iteration, current_step=0):
    """The rate for ``iteration`` under ``param.lr_policy``, and the new step counter.

    ``param`` is a ``caffe_pb2.SolverParameter`` (or any object with its
    fields: ``lr_policy, base_lr, gamma, power, stepsize, stepvalue,
    max_iter``).
    """
    policy = param.lr_policy
    base_lr = float(param.base_lr)
    it = int(iteration)
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        if param.stepsize <= 0:
            raise SolverError(f"lr_policy \"step\" needs stepsize > 0, got {param.stepsize}")
        _check_gamma(param)
        current_step = it // int(param.stepsize)
        rate = base_lr * math.pow(float(param.gamma), current_step)
    elif policy == "exp":
        _check_gamma(param)
        rate = base_lr * math.pow(float(param.gamma), it)
    elif policy == "inv":
        _check_gamma(param)
        # Dtype(1) + gamma * iter_ is float arithmetic in Caffe.
        base = _f32(1) + _f32(param.gamma) * _f32(it)
        rate = base_lr * _pow(float(base), -float(param.power))
    elif policy == "multistep":
        stepvalue = list(param.stepvalue)
        if current_step < len(stepvalue) and it >= stepvalue[current_step]:
            current_step += 1
        rate = base_lr * math.pow(float(param.gamma), current_step)
    elif policy == "poly":
        if param.max_iter <= 0:
            raise SolverError(f"lr_policy \"poly\" needs max_iter > 0, got {param.max_iter}")
        frac = _f32(1) - _f32(it) / _f32(param.max_iter)
        rate = base_lr * _pow(float(frac), float(param.power))
    elif policy == "sigmoid":
        x = -_f32(param.gamma) * (_f32(it) - _f32(param.stepsize))
        rate = base_lr * (1.0 / (1.0 + math.exp(float(x))))
    else:
        raise SolverError(f"unknown lr_policy {policy!r} (supported: {', '.join(POLICIES)})")
    return float(_f32(rate)), current_step


def _check_gamma(param):
    if param.gamma < 0:
        raise SolverError(f"lr_policy \"{param.lr_policy}\" needs gamma >= 0, got {param.gamma}")


def _pow(base, exponent):
    try:
        return math.pow(base, exponent)
    except (ValueError, OverflowError):
        # C's pow gives nan/inf where Python raises; Caffe then trains on nan.
        return float(np.power(np.float64(base), np.float64(exponent)))
