"""Signed fixed-point formats and the deterministic rounding every core uses.

Integer tensors are NumPy ``int64`` arrays; a value is ``integer * 2**-frac``.
The RTL implements :func:`shift_round` as "add ``half - 1`` plus the lsb of the
kept part, arithmetic shift right, saturate", which is round-half-to-even.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["Format", "quantize", "dequantize", "saturate", "wrap", "shift_round", "requantize"]

# 2**frac must stay a normal float64 with room for the integer part.
_FRAC_LIMIT = 256


def _check_bits(bits, what="bits"):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 64:
        raise ValueError(f"{what} must be an integer in [1, 64], not {bits!r}")
    return int(bits)


def _as_int64(q):
    array = np.asarray(q)
    if array.dtype.kind not in "iub":
        if array.dtype == object:
            return np.asarray(q, dtype=np.int64)
        raise TypeError(f"Expected an integer array, not dtype {array.dtype}")
    if array.dtype == np.uint64 and array.size and int(array.max()) >= 2**63:
        raise OverflowError("uint64 values >= 2**63 do not fit int64")
    return array.astype(np.int64, copy=False)


def _result(array, like):
    # Scalars in, NumPy scalars out; arrays stay arrays.
    return array[()] if np.ndim(like) == 0 else array


@dataclass(frozen=True)
class Format:
    """Signed two's complement fixed point: ``bits`` wide, ``frac`` fractional bits.

    ``bits`` is 2..64; ``frac`` is any integer in [-256, 256] (negative or
    ``>= bits`` put the binary point outside the word).
    """

    bits: int
    frac: int

    def __post_init__(self):
        if (isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer))
                or not 2 <= self.bits <= 64):
            raise ValueError(f"Format bits must be an integer in [2, 64], not {self.bits!r}")
        if (isinstance(self.frac, bool) or not isinstance(self.frac, (int, np.integer))
                or not -_FRAC_LIMIT <= self.frac <= _FRAC_LIMIT):
            raise ValueError(f"Format frac must be an integer in [{-_FRAC_LIMIT}, "
                             f"{_FRAC_LIMIT}], not {self.frac!r}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "frac", int(self.frac))

    @property
    def min_int(self):
        return -(1 << (self.bits - 1))

    @property
    def max_int(self):
        return (1 << (self.bits - 1)) - 1

    @property
    def step(self):
        """Value of one lsb."""
        return 2.0 ** -self.frac

    @property
    def min_value(self):
        return self.min_int * self.step

    @property
    def max_value(self):
        return self.max_int * self.step

    def __str__(self):
        return f"Q{self.bits - self.frac}.{self.frac} ({self.bits} bits)"


def saturate(q, bits):
    """Clamp integers ``q`` to the signed ``bits``-bit range."""
    bits = _check_bits(bits)
    array = _as_int64(q)
    return _result(np.clip(array, -(1 << (bits - 1)), (1 << (bits - 1)) - 1), q)


def wrap(q, bits):
    """Two's complement wrap of integers ``q`` to ``bits`` bits (keep the low bits,
    sign-extend)."""
    bits = _check_bits(bits)
    array = _as_int64(q)
    unused = np.uint64(64 - bits)
    # Shift in uint64 so discarding the high bits is defined, then sign-extend.
    wrapped = (array.view(np.uint64) << unused).view(np.int64) >> np.int64(64 - bits)
    return _result(wrapped, q)


def quantize(x, fmt):
    """Floats -> int64: ``x * 2**frac`` rounded to nearest, ties to even, saturated."""
    if not isinstance(fmt, Format):
        raise TypeError(f"Expected a Format, not {fmt!r}")
    values = np.asarray(x, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("Cannot quantize NaN")
    with np.errstate(over="ignore"):  # inf saturates like any large value
        scaled = np.rint(values * 2.0 ** fmt.frac)
    # Compare in float before converting: 2**(bits-1) is exact in float64, the
    # int64 limits are not.
    over = scaled >= 2.0 ** (fmt.bits - 1)
    under = scaled < -(2.0 ** (fmt.bits - 1))
    result = np.where(over | under, 0.0, scaled).astype(np.int64)
    result[over] = fmt.max_int
    result[under] = fmt.min_int
    return _result(result, x)


def dequantize(q, fmt):
    """int -> float64 ``q * 2**-frac`` (exact while ``|q| < 2**53``)."""
    if not isinstance(fmt, Format):
        raise TypeError(f"Expected a Format, not {fmt!r}")
    return _result(_as_int64(q).astype(np.float64) * 2.0 ** -fmt.frac, q)


def _check_shift(shift):
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)):
        raise TypeError(f"Shift must be an integer, not {shift!r}")
    return int(shift)


def shift_round(q, shift):
    """Arithmetic right shift by ``shift`` with round-half-to-even; a negative
    ``shift`` shifts left (OverflowError if the result leaves int64)."""
    shift = _check_shift(shift)
    array = _as_int64(q)
    if shift == 0:
        return _result(array.copy(), q)
    if shift < 0:
        n = -shift
        limit_hi, limit_lo = (2**63 - 1) >> n, -(2**63) >> n
        if ((array > limit_hi) | (array < limit_lo)).any():
            raise OverflowError(f"Left shift by {n} overflows int64")
        return _result(array << np.int64(n) if n < 64 else array * 0, q)
    if shift >= 64:
        # |q| <= 2**63 <= half: everything rounds to zero (the one tie, -2**63
        # with shift 64, rounds to the even neighbour 0).
        return _result(np.zeros_like(array), q)
    kept = array >> np.int64(shift)
    dropped = array & np.int64((1 << shift) - 1)
    half = np.int64(1 << (shift - 1))
    round_up = (dropped > half) | ((dropped == half) & ((kept & 1) == 1))
    return _result(kept + round_up.astype(np.int64), q)


def requantize(acc, acc_frac, fmt):
    """``saturate(shift_round(acc, acc_frac - fmt.frac), fmt.bits)``: the one
    deterministic rounding used wherever a wide value narrows."""
    if not isinstance(fmt, Format):
        raise TypeError(f"Expected a Format, not {fmt!r}")
    shift = _check_shift(acc_frac) - fmt.frac
    if shift >= 0:
        return saturate(shift_round(acc, shift), fmt.bits)
    # Left shift: saturate without ever forming an out-of-range int64.
    n = -shift
    array = _as_int64(acc)
    over = array > (fmt.max_int >> n)
    # a * 2**n >= min  <=>  a >= ceil(min / 2**n)
    under = array < -((-fmt.min_int) >> n)
    safe = np.where(over | under, 0, array)
    shifted = safe << np.int64(n) if n < 64 else safe * 0
    result = np.where(over, fmt.max_int, np.where(under, fmt.min_int, shifted))
    return _result(result.astype(np.int64), acc)
