"""Bit-exact integer GEMM with a wrapping accumulator (like a DSP48 P register)."""

import numpy as np

from .format import wrap

__all__ = ["gemm"]

# Every partial sum float64 BLAS forms must stay below this to be exact.
_EXACT = 2**53


def _int_operand(x, name):
    array = np.asarray(x)
    if array.dtype.kind not in "iu" or (array.dtype == np.uint64 and array.size
                                         and int(array.max()) >= 2**63):
        raise TypeError(f"gemm operand {name} must be an int64-compatible integer array, "
                        f"not dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(f"gemm operand {name} must be 1-D or 2-D, not shape {array.shape}")
    return array.astype(np.int64, copy=False)


def _magnitude(array):
    if array.size == 0:
        return 0
    return max(abs(int(array.max())), abs(int(array.min())))


def _product_mod64(a, b):
    """Exact ``a @ b`` modulo 2**64, as uint64."""
    mag_a, mag_b = _magnitude(a), _magnitude(b)
    out_shape = np.matmul(np.empty(a.shape[:-1] + (0,)), np.empty((0,) + b.shape[1:])).shape
    if mag_a == 0 or mag_b == 0:
        return np.zeros(out_shape, dtype=np.uint64)
    if mag_a * mag_b >= _EXACT:
        # A single product is not exact in float64: split the wider operand
        # into high and low halves and recombine modulo 2**64.
        if mag_a >= mag_b:
            s = mag_a.bit_length() // 2
            hi, lo = a >> np.int64(s), a & np.int64((1 << s) - 1)
            parts = _product_mod64(hi, b), _product_mod64(lo, b)
        else:
            s = mag_b.bit_length() // 2
            hi, lo = b >> np.int64(s), b & np.int64((1 << s) - 1)
            parts = _product_mod64(a, hi), _product_mod64(a, lo)
        return (parts[0] << np.uint64(s)) + parts[1]
    # Any partial sum of at most `block` terms is below 2**53 in magnitude,
    # whatever order BLAS adds them in.
    block = (_EXACT - 1) // (mag_a * mag_b)
    k = a.shape[-1]
    total = np.zeros(out_shape, dtype=np.uint64)
    for start in range(0, k, block):
        stop = min(start + block, k)
        a_part = a[..., start:stop].astype(np.float64)
        b_part = b[start:stop].astype(np.float64)
        total += np.matmul(a_part, b_part).astype(np.int64).view(np.uint64)
    return total


def gemm(a, b, acc_bits):
    """``wrap(a @ b, acc_bits)`` computed exactly for int64 operands.

    ``a`` is (M, K) or (K,), ``b`` is (K, N) or (K,) (NumPy matmul rules);
    ``acc_bits`` (1..64) is the accumulator width the sum wraps at.
    """
    a = _int_operand(a, "a")
    b = _int_operand(b, "b")
    if isinstance(acc_bits, bool) or not isinstance(acc_bits, (int, np.integer)) \
            or not 1 <= acc_bits <= 64:
        raise ValueError(f"Accumulator width must be an integer in [1, 64], not {acc_bits!r}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"gemm shapes {a.shape} and {b.shape} do not agree on K")
    result = _product_mod64(a, b).view(np.int64)
    return wrap(result, int(acc_bits))
