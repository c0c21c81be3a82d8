"""Bit-exact model of the elementwise unit (``cores/eltwise.py``).

Every operation forms an exact wide integer and narrows it once with
:func:`requantize` (round half to even, saturate), except the Sigmoid/TanH
backward pass, which first rounds the local derivative ``y(1-y)`` or ``1-y^2``
to the forward output's format (RNE, as a DSP-sized multiplier would) and then
multiplies by the top gradient.

Sigmoid and TanH forward use a table of ``2**segments_log2`` uniform segments
over ``[-2**range_log2, 2**range_log2)`` with linear interpolation between the
quantised endpoints (``TABLE_FORMAT``); outside the range the output is the
end value. With the default 256 segments the approximation, before output
quantisation, is within ``SIGMOID_MAX_ERROR`` / ``TANH_MAX_ERROR`` of the true
function (checked by the tests). The RTL initialises its table memory from
:func:`activation_tables`, so table and model cannot drift apart.
"""

import enum
import functools
from dataclasses import dataclass

import numpy as np

from .format import Format, requantize, shift_round

__all__ = [
    "EltwiseOp", "TABLE_FORMAT", "SLOPE_FORMAT", "SIGMOID_MAX_ERROR", "TANH_MAX_ERROR",
    "ActivationTable", "activation_tables", "bias_add", "relu_forward", "relu_backward",
    "table_forward", "sigmoid_forward", "tanh_forward", "sigmoid_backward", "tanh_backward",
    "eltwise",
]


class EltwiseOp(enum.IntEnum):
    """Operation codes of the elementwise unit (shared by RTL, model and host)."""
    REQUANT = 0       # y = x
    BIAS = 1          # y = x + b
    RELU = 2          # y = x > 0 ? x : slope * x
    BIAS_RELU = 3     # relu(x + b)
    RELU_BWD = 4      # dx = aux > 0 ? dy : slope * dy   (aux = forward input)
    SIGMOID = 5
    TANH = 6
    SIGMOID_BWD = 7   # dx = dy * y * (1 - y)            (aux = forward output y)
    TANH_BWD = 8      # dx = dy * (1 - y * y)


#: Format of the table entries (values of sigmoid/tanh in [-1, 1]).
TABLE_FORMAT = Format(18, 16)
#: Default format of ReLU's ``negative_slope``: [-1, 1) in steps of 2**-15.
SLOPE_FORMAT = Format(16, 15)
#: Max |table approximation - true function| with the default 256 segments.
SIGMOID_MAX_ERROR = 2.5e-4
TANH_MAX_ERROR = 4.5e-4

_FUNCTIONS = {
    "sigmoid": (lambda x: 1.0 / (1.0 + np.exp(-x)), 4),   # range [-16, 16)
    "tanh": (np.tanh, 3),                                 # range [-8, 8)
}


@dataclass(frozen=True, eq=False)
class ActivationTable:
    """Piecewise-linear table: segment ``k`` starts at ``-2**range_log2 + k * step``;
    ``base[k]`` is the function there and ``delta[k]`` the rise to the next point,
    both integers in ``TABLE_FORMAT``."""
    name: str
    range_log2: int
    segments_log2: int
    base: np.ndarray
    delta: np.ndarray

    @property
    def segments(self):
        return 1 << self.segments_log2

    def offset_bits(self, in_frac):
        """Bits of the input below the segment index (the interpolation fraction)."""
        bits = in_frac + self.range_log2 + 1 - self.segments_log2
        if bits < 0:
            raise ValueError(f"Input frac {in_frac} is too coarse for the {self.name} table "
                             f"(needs frac >= {self.segments_log2 - self.range_log2 - 1})")
        return bits


@functools.cache
def activation_tables(segments_log2=8):
    """``{"sigmoid": ActivationTable, "tanh": ActivationTable}``."""
    if not isinstance(segments_log2, int) or not 1 <= segments_log2 <= 12:
        raise ValueError(f"segments_log2 must be an integer in [1, 12], not {segments_log2!r}")
    tables = {}
    for name, (function, range_log2) in _FUNCTIONS.items():
        n = 1 << segments_log2
        points = -2.0 ** range_log2 + np.arange(n + 1) * 2.0 ** (range_log2 + 1 - segments_log2)
        q = np.rint(function(points) * 2.0 ** TABLE_FORMAT.frac).astype(np.int64)
        base, delta = q[:-1].copy(), np.diff(q)
        base.flags.writeable = delta.flags.writeable = False
        tables[name] = ActivationTable(name, range_log2, segments_log2, base, delta)
    return tables


def _ints(x):
    return np.asarray(x, dtype=np.int64)


def bias_add(x, in_fmt, bias, bias_fmt):
    """Exact ``x + bias`` at ``in_fmt.frac`` (bias frac must not exceed it)."""
    if bias_fmt.frac > in_fmt.frac:
        raise ValueError(f"Bias frac {bias_fmt.frac} exceeds input frac {in_fmt.frac}")
    return _ints(x) + (_ints(bias) << (in_fmt.frac - bias_fmt.frac))


def relu_forward(x, in_frac, slope, slope_fmt, out_fmt):
    """Caffe ReLU: ``max(x, 0) + slope * min(x, 0)``, requantised to ``out_fmt``."""
    x = _ints(x)
    wide = np.where(x > 0, x << slope_fmt.frac, x * int(slope))
    return requantize(wide, in_frac + slope_fmt.frac, out_fmt)


def relu_backward(dy, x, dy_frac, slope, slope_fmt, out_fmt):
    """Caffe ReLU backward: ``dy * ((x > 0) + slope * (x <= 0))``."""
    dy, x = _ints(dy), _ints(x)
    wide = np.where(x > 0, dy << slope_fmt.frac, dy * int(slope))
    return requantize(wide, dy_frac + slope_fmt.frac, out_fmt)


def table_forward(x, in_fmt, out_fmt, table):
    """Interpolate ``table`` at inputs ``x`` (integers in ``in_fmt``)."""
    x = _ints(x)
    t_bits = table.offset_bits(in_fmt.frac)
    position = x + (1 << (table.range_log2 + in_fmt.frac))
    index = position >> t_bits
    offset = position & ((1 << t_bits) - 1)
    low, high = position < 0, index >= table.segments
    index = np.where(low, 0, np.where(high, table.segments - 1, index))
    offset = np.where(low, 0, np.where(high, 1 << t_bits, offset))
    wide = (table.base[index] << t_bits) + table.delta[index] * offset
    return requantize(wide, TABLE_FORMAT.frac + t_bits, out_fmt)


def sigmoid_forward(x, in_fmt, out_fmt, segments_log2=8):
    return table_forward(x, in_fmt, out_fmt, activation_tables(segments_log2)["sigmoid"])


def tanh_forward(x, in_fmt, out_fmt, segments_log2=8):
    return table_forward(x, in_fmt, out_fmt, activation_tables(segments_log2)["tanh"])


def _local_gradient(dy, dy_frac, derivative, y_frac, out_fmt):
    # The derivative is rounded (RNE) to the forward output's frac, then
    # multiplied exactly by dy; one more rounding gives the output.
    d = shift_round(derivative, y_frac)
    return requantize(_ints(dy) * d, dy_frac + y_frac, out_fmt)


def sigmoid_backward(dy, y, dy_frac, y_fmt, out_fmt):
    """Caffe SigmoidLayer backward from the stored output: ``dy * y * (1 - y)``."""
    y = _ints(y)
    return _local_gradient(dy, dy_frac, y * ((1 << y_fmt.frac) - y), y_fmt.frac, out_fmt)


def tanh_backward(dy, y, dy_frac, y_fmt, out_fmt):
    """Caffe TanHLayer backward from the stored output: ``dy * (1 - y^2)``."""
    y = _ints(y)
    return _local_gradient(dy, dy_frac, (1 << 2 * y_fmt.frac) - y * y, y_fmt.frac, out_fmt)


def eltwise(op, x, *, in_fmt, out_fmt, aux=None, aux_fmt=None, bias=None, bias_fmt=None,
            slope=0, slope_fmt=SLOPE_FORMAT, segments_log2=8):
    """What the elementwise unit outputs for operation ``op`` on integers ``x``.

    ``aux`` (in ``aux_fmt``) is the second operand of the backward operations;
    ``bias`` (in ``bias_fmt``) is broadcast against ``x``.
    """
    op = EltwiseOp(op)
    x = _ints(x)
    if op in (EltwiseOp.BIAS, EltwiseOp.BIAS_RELU):
        x = bias_add(x, in_fmt, bias, bias_fmt)
    if op in (EltwiseOp.REQUANT, EltwiseOp.BIAS):
        return requantize(x, in_fmt.frac, out_fmt)
    if op in (EltwiseOp.RELU, EltwiseOp.BIAS_RELU):
        return relu_forward(x, in_fmt.frac, slope, slope_fmt, out_fmt)
    if op is EltwiseOp.RELU_BWD:
        return relu_backward(x, aux, in_fmt.frac, slope, slope_fmt, out_fmt)
    if op is EltwiseOp.SIGMOID:
        return sigmoid_forward(x, in_fmt, out_fmt, segments_log2)
    if op is EltwiseOp.TANH:
        return tanh_forward(x, in_fmt, out_fmt, segments_log2)
    if op is EltwiseOp.SIGMOID_BWD:
        return sigmoid_backward(x, aux, in_fmt.frac, aux_fmt, out_fmt)
    return tanh_backward(x, aux, in_fmt.frac, aux_fmt, out_fmt)
