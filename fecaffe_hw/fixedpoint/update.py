"""Bit-exact model of the update engine's commands (``cores/update_engine.py``):
``ACC_ADD``, ``ACC_BIAS`` and ``SGD_UPDATE`` of ``runtime.isa``.

Gradients are ``grad_bits``-bit integers that WRAP (stored one per 32-bit
word, sign-extended); what is added into them is first rounded half to even
and saturated to ``grad_bits`` (:func:`grad_term`).

``SGD_UPDATE`` is exactly :func:`fecaffe_hw.fixedpoint.sgd.sgd_update` with
the formats of :func:`sgd_formats` (``diff`` is ``Format(DIFF_BITS,
diff_frac)``; ``acc_bits = grad_bits``) and the per-command constants of
:func:`sgd_constants`, one element per beat (``lanes = 1``): element ``i``
draws one random word for its history rounding and then, if
``history_frac != weight_frac``, one for its weight rounding, before element
``i + 1`` draws. One LFSR state runs on across commands (ACC_* commands
draw nothing). The gradient words are zeroed afterwards.

Legal fracs (:func:`sgd_fracs_legal`, the conditions under which
``SgdFormats`` validates, in closed form), with ``a = grad_frac -
weight_frac - 2`` and ``b = history_frac - diff_frac - 3``:
``grad_bits - 36 <= a <= 28`` (diff sum within 63 bits),
``-15 <= b <= 44 - DIFF_BITS`` (history rounding drops 1..32 bits, history
sum within 63 bits), ``0 <= history_frac - weight_frac <= 32``.
"""

import numpy as np

from ..errors import SolverError
from .format import Format, requantize, shift_round, wrap
from .sgd import NORM_FRAC, SgdConstants, SgdFormats, sgd_update

__all__ = ["DIFF_BITS", "SGD_LANES", "MULT_FRAC", "CONSTANT_MAX", "NORM_MUL_MAX",
           "BIAS_SUM_BITS", "grad_term", "acc_add", "acc_bias", "sgd_fracs_legal",
           "sgd_formats", "sgd_constants", "sgd_update_command"]

#: Width of the normalised, decayed gradient: one 18 x 18 DSP multiply by the rate.
DIFF_BITS = 18
#: Elements per update beat (fixes the LFSR draw order, see the module docstring).
SGD_LANES = 1
#: ``lr_mult`` and ``decay_mult`` are unsigned Q8.8.
MULT_FRAC = 8
#: Largest rate, momentum and decay (the 18-bit signed formats' maximum); larger
#: CSR values saturate to it.
CONSTANT_MAX = (1 << 17) - 1
#: Largest ``norm_mul`` (``norm_multiplier(1)``); larger CSR values saturate to it.
NORM_MUL_MAX = 1 << NORM_FRAC
#: ACC_BIAS sums need ``16 + bitlen(images) + bitlen(positions)`` bits; the
#: engine holds 48, so ``bitlen(images) + bitlen(positions) <= 32``.
BIAS_SUM_BITS = 48


def _check_grad_bits(grad_bits):
    if isinstance(grad_bits, bool) or not isinstance(grad_bits, (int, np.integer)) \
            or not 2 <= grad_bits <= 32:
        raise ValueError(f"Gradient width must be an integer in [2, 32], not {grad_bits!r}")
    return int(grad_bits)


def grad_term(value, shift, grad_bits):
    """``saturate(shift_round(value, shift), grad_bits)``: RNE right shift for
    ``shift >= 0``, saturating left shift otherwise."""
    return requantize(value, int(shift), Format(_check_grad_bits(grad_bits), 0))


def acc_add(grad, acc, shift, grad_bits):
    """ACC_ADD: the ``rows x cols`` gradient tile after adding the C buffer
    accumulators ``acc`` (same shape) scaled by ``2**-shift``."""
    grad, acc = np.asarray(grad, dtype=np.int64), np.asarray(acc, dtype=np.int64)
    if grad.shape != acc.shape:
        raise ValueError(f"Gradient tile {grad.shape} and accumulators {acc.shape} differ")
    return wrap(grad + grad_term(acc, shift, grad_bits), grad_bits)


def acc_bias(grad, dy, shift, grad_bits):
    """ACC_BIAS: ``channels`` bias gradients after adding the sums of ``dy``
    (``images x channels x positions`` int16) over images and positions."""
    dy = np.asarray(dy, dtype=np.int64)
    grad = np.asarray(grad, dtype=np.int64)
    if dy.ndim != 3 or grad.shape != (dy.shape[1],):
        raise ValueError(f"dy must be (images, channels, positions) and grad (channels,), "
                         f"not {dy.shape} and {grad.shape}")
    return wrap(grad + grad_term(dy.sum(axis=(0, 2)), shift, grad_bits), grad_bits)


def sgd_fracs_legal(*, weight_frac, history_frac, grad_frac, diff_frac, grad_bits):
    """True if :func:`sgd_formats` accepts these fracs (closed form of its checks)."""
    a = grad_frac - weight_frac - 2
    b = history_frac - diff_frac - 3
    return (grad_bits - 36 <= a <= 28 and -15 <= b <= 44 - DIFF_BITS
            and 0 <= history_frac - weight_frac <= 32)


def sgd_formats(*, weight_frac, history_frac, grad_frac, diff_frac, grad_bits):
    """The :class:`SgdFormats` of one SGD_UPDATE; SolverError if illegal."""
    grad_bits = _check_grad_bits(grad_bits)
    try:
        return SgdFormats(grad=Format(grad_bits, grad_frac), acc_bits=grad_bits,
                          weight=Format(16, weight_frac), history=Format(16, history_frac),
                          diff=Format(DIFF_BITS, diff_frac))
    except ValueError as error:
        raise SolverError(f"SGD_UPDATE fracs (weight {weight_frac}, history {history_frac}, "
                          f"grad {grad_frac}, diff {diff_frac}): {error}") from None


def _scaled(value, mult):
    return min(int(shift_round(int(value) * int(mult), MULT_FRAC)), CONSTANT_MAX)


def sgd_constants(*, rate, momentum, decay, norm_mul, lr_mult, decay_mult):
    """Per-command constants from the CSR values (18, 18, 18, 25-bit unsigned)
    and the command's Q8.8 multipliers: ``rate * lr_mult`` and ``decay *
    decay_mult`` rounded half to even and saturated, ``momentum`` and
    ``norm_mul`` saturated."""
    for name, value, bits in (("rate", rate, 18), ("momentum", momentum, 18),
                              ("decay", decay, 18), ("norm_mul", norm_mul, NORM_FRAC + 1),
                              ("lr_mult", lr_mult, 16), ("decay_mult", decay_mult, 16)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not 0 <= value < 1 << bits:
            raise ValueError(f"{name} must be an unsigned {bits}-bit integer, not {value!r}")
    return SgdConstants(rate=_scaled(rate, lr_mult), momentum=min(int(momentum), CONSTANT_MAX),
                        decay=_scaled(decay, decay_mult),
                        norm_mul=min(int(norm_mul), NORM_MUL_MAX))


def sgd_update_command(w, h, g, *, weight_frac, history_frac, grad_frac, diff_frac, grad_bits,
                       rate, momentum, decay, norm_mul, lr_mult, decay_mult, lfsr,
                       lanes=SGD_LANES):
    """SGD_UPDATE of ``count`` elements (1-D ``w``, ``h`` int16, ``g``
    gradients): ``(w', h', g')`` with ``g'`` zero. ``lfsr`` (an
    :class:`~fecaffe_hw.fixedpoint.Lfsr`) advances; ``lanes`` must divide
    ``count`` (the engine uses :data:`SGD_LANES`)."""
    formats = sgd_formats(weight_frac=weight_frac, history_frac=history_frac,
                          grad_frac=grad_frac, diff_frac=diff_frac, grad_bits=grad_bits)
    constants = sgd_constants(rate=rate, momentum=momentum, decay=decay, norm_mul=norm_mul,
                              lr_mult=lr_mult, decay_mult=decay_mult)
    w, h, g = (np.asarray(a, dtype=np.int64).ravel() for a in (w, h, g))
    if not w.size == h.size == g.size or w.size % lanes:
        raise ValueError(f"w, h, g must have one equal element count, a multiple of "
                         f"{lanes} lanes, not {w.size}, {h.size}, {g.size}")
    g = wrap(g, formats.grad.bits)
    w_new, h_new = sgd_update(w.reshape(-1, lanes), h.reshape(-1, lanes),
                              g.reshape(-1, lanes), constants, formats, lfsr)
    return w_new.ravel(), h_new.ravel(), np.zeros_like(g)
