"""Bit-exact model of the gradient accumulator and its SGD update
(``cores/grad_accumulator.py``).

Parameters live as words of ``lanes`` elements; element ``e`` of a blob is lane
``e % lanes`` of word ``e // lanes``. Gradient contributions are added into
``acc_bits``-wide accumulators that WRAP (two's complement, like a DSP P
register); the accumulator frac is the gradient frac.

The update, for each element with weight ``w``, history ``h`` and accumulated
gradient ``g`` (Caffe's Normalize, Regularize, ComputeUpdateValue, Update)::

    diff = requantize(g * norm_mul / 2**NORM_FRAC + decay * w, diff)   # RNE, saturate
    h'   = saturate(stochastic_round(momentum * h + rate * diff), history)
    w'   = saturate(stochastic_round(w - h'), weight)   # exact if same frac

``norm_mul = round(2**NORM_FRAC / iter_size)`` (half to even): exact for a
power-of-two ``iter_size``, else a relative error below ``iter_size * 2**-25``.
Every product is exact before the single rounding of each quantity.

Random words come from one LFSR, :func:`words_per_beat` per word in word
order: first one per lane (lane 0 first) for ``h'``, then one per lane for
``w'``; ``w'`` draws none when the history and weight fracs are equal.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import SolverError
from .format import Format, quantize, requantize, saturate, wrap
from .lfsr import LFSR_BITS, stochastic_round

__all__ = [
    "NORM_FRAC", "MAX_ITER_SIZE", "SgdFormats", "SgdConstants", "norm_multiplier",
    "words_per_beat", "accumulate", "sgd_update", "float_sgd_update",
]

#: Fractional bits of the reciprocal ``1 / iter_size``.
NORM_FRAC = 24
MAX_ITER_SIZE = 1 << 12


def norm_multiplier(iter_size):
    """``round(2**NORM_FRAC / iter_size)``, ties to even."""
    if isinstance(iter_size, bool) or not isinstance(iter_size, (int, np.integer)) \
            or not 1 <= iter_size <= MAX_ITER_SIZE:
        raise SolverError(f"iter_size must be an integer in [1, {MAX_ITER_SIZE}], "
                          f"not {iter_size!r}")
    quotient, remainder = divmod(1 << NORM_FRAC, int(iter_size))
    if 2 * remainder > iter_size or (2 * remainder == iter_size and quotient & 1):
        quotient += 1
    return quotient


def _width(bits, shift):
    return bits + max(shift, 0)


@dataclass(frozen=True)
class SgdFormats:
    """Fixed-point formats of the update. ``acc_bits`` is the accumulator width
    (frac = ``grad.frac``); ``diff`` holds the normalised, decayed gradient;
    ``rate``/``momentum``/``decay`` are the constant formats (unsigned values
    in signed formats)."""
    grad: Format
    acc_bits: int
    weight: Format
    history: Format
    diff: Format
    rate: Format = Format(18, 20)
    momentum: Format = Format(18, 17)
    decay: Format = Format(18, 26)

    def __post_init__(self):
        for name in ("grad", "weight", "history", "diff", "rate", "momentum", "decay"):
            if not isinstance(getattr(self, name), Format):
                raise TypeError(f"SGD format {name} must be a Format, not "
                                f"{getattr(self, name)!r}")
        if not isinstance(self.acc_bits, int) or not self.grad.bits <= self.acc_bits <= 48:
            raise ValueError(f"Accumulator width must be an integer in [{self.grad.bits}, 48], "
                             f"not {self.acc_bits!r}")
        if not 1 <= self.history_shift <= LFSR_BITS:
            raise ValueError(f"History rounding drops {self.history_shift} bits; the formats "
                             f"must make it 1..{LFSR_BITS}")
        if not 0 <= self.weight_shift <= LFSR_BITS:
            raise ValueError(f"History frac {self.history.frac} must be at least the weight frac "
                             f"{self.weight.frac} and at most {LFSR_BITS} above it")
        widths = {"diff sum": self.diff_sum_bits, "history sum": self.history_sum_bits}
        for what, bits in widths.items():
            if bits > 63:
                raise ValueError(f"The {what} needs {bits} bits; narrow the formats to fit 63")

    # Derived fracs and exact widths, shared with the RTL.
    @property
    def diff_sum_frac(self):
        return max(self.grad.frac + NORM_FRAC, self.decay.frac + self.weight.frac)

    @property
    def diff_sum_bits(self):
        f = self.diff_sum_frac
        return 1 + max(_width(self.acc_bits + NORM_FRAC + 2, f - self.grad.frac - NORM_FRAC),
                       _width(self.decay.bits + self.weight.bits, f - self.decay.frac
                              - self.weight.frac))

    @property
    def history_sum_frac(self):
        return max(self.momentum.frac + self.history.frac, self.rate.frac + self.diff.frac)

    @property
    def history_sum_bits(self):
        f = self.history_sum_frac
        return 1 + max(_width(self.momentum.bits + self.history.bits,
                              f - self.momentum.frac - self.history.frac),
                       _width(self.rate.bits + self.diff.bits, f - self.rate.frac - self.diff.frac))

    @property
    def history_shift(self):
        return self.history_sum_frac - self.history.frac

    @property
    def weight_shift(self):
        return self.history.frac - self.weight.frac


@dataclass(frozen=True)
class SgdConstants:
    """Integer constants of one update: ``rate`` = lr * lr_mult, ``decay`` =
    weight_decay * decay_mult, ``momentum``, in their formats; ``norm_mul``."""
    rate: int
    momentum: int
    decay: int
    norm_mul: int

    @classmethod
    def from_solver(cls, formats, *, lr, momentum, weight_decay, iter_size=1,
                    lr_mult=1.0, decay_mult=1.0):
        values = {"rate": lr * lr_mult, "momentum": momentum, "decay": weight_decay * decay_mult}
        ints = {}
        for name, value in values.items():
            fmt = getattr(formats, name)
            q = int(quantize(value, fmt))
            if value < 0 or q == fmt.max_int:
                raise SolverError(f"{name} {value!r} does not fit its format {fmt}")
            ints[name] = q
        return cls(norm_mul=norm_multiplier(iter_size), **ints)


def accumulate(acc, addr, grads, *, acc_bits):
    """``acc`` (words, lanes) after adding each beat ``grads[k]`` at word
    ``addr[k]``, wrapping at ``acc_bits``."""
    acc = np.array(acc, dtype=np.int64)
    grads = np.asarray(grads, dtype=np.int64).reshape(len(addr), acc.shape[1])
    # int64 overflow wraps modulo 2**64, which agrees modulo 2**acc_bits.
    np.add.at(acc, np.asarray(addr, dtype=np.intp), grads)
    return wrap(acc, acc_bits)


def words_per_beat(formats, lanes):
    """Random words one update beat (word of ``lanes`` elements) draws."""
    return lanes * (2 if formats.weight_shift else 1)


def sgd_update(w, h, g, constants, formats, lfsr):
    """One update of words ``w``, ``h``, ``g`` (arrays (words, lanes)) -> ``(w', h')``,
    drawing random words from the :class:`Lfsr` ``lfsr``."""
    f = formats
    w, h, g = (np.asarray(a, dtype=np.int64) for a in (w, h, g))
    if w.ndim != 2 or w.shape != h.shape or w.shape != g.shape:
        raise ValueError(f"w, h, g must be equal (words, lanes) arrays, not shapes "
                         f"{w.shape}, {h.shape}, {g.shape}")
    words, lanes = w.shape
    noise = lfsr.next_words(words * words_per_beat(f, lanes)).reshape(words, -1)
    shift = f.diff_sum_frac
    diff_sum = ((g * constants.norm_mul) << (shift - f.grad.frac - NORM_FRAC)) \
        + ((w * constants.decay) << (shift - f.decay.frac - f.weight.frac))
    diff = requantize(diff_sum, shift, f.diff)

    shift = f.history_sum_frac
    h_sum = ((h * constants.momentum) << (shift - f.momentum.frac - f.history.frac)) \
        + ((diff * constants.rate) << (shift - f.rate.frac - f.diff.frac))
    h_new = saturate(stochastic_round(h_sum, f.history_shift, noise[:, :lanes]), f.history.bits)

    w_sum = (w << f.weight_shift) - h_new
    if f.weight_shift:
        w_sum = stochastic_round(w_sum, f.weight_shift, noise[:, lanes:])
    return saturate(w_sum, f.weight.bits), h_new


def float_sgd_update(w, h, g_sum, *, lr, momentum, weight_decay, iter_size=1):
    """Caffe's SGD step in float (``g_sum`` summed over ``iter_size`` passes)."""
    diff = g_sum / iter_size + weight_decay * w
    h = momentum * h + lr * diff
    return w - h, h
