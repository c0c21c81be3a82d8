"""gemm against Python-integer matrix products wrapped at the accumulator width."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fecaffe_hw.fixedpoint import gemm


def ref_gemm(a, b, acc_bits):
    a, b = a.tolist(), b.tolist()
    out = [[sum(x * y for x, y in zip(row, col)) for col in zip(*b)] for row in a]
    return [[(v + 2**(acc_bits - 1)) % 2**acc_bits - 2**(acc_bits - 1) for v in r] for r in out]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(1, 5), st.integers(2, 64),
       st.sampled_from([32, 40, 48, 64, 17]), st.integers(0, 2**32 - 1))
def test_gemm_matches_reference(m, k, n, operand_bits, acc_bits, seed):
    rng = np.random.default_rng(seed)
    lo, hi = -2**(operand_bits - 1), 2**(operand_bits - 1)
    a = rng.integers(lo, hi, (m, k), dtype=np.int64, endpoint=False)
    b = rng.integers(lo, hi, (k, n), dtype=np.int64, endpoint=False)
    # Extreme values are where exactness and wrapping break first.
    a[0, 0], b[0, 0] = lo, lo
    assert gemm(a, b, acc_bits).tolist() == ref_gemm(a, b, acc_bits)


@pytest.mark.parametrize("acc_bits", [32, 40, 48])
def test_gemm_splits_k_and_wraps(acc_bits):
    # 24-bit operands: 2**46 per product, so BLAS may add only 127 at a time.
    rng = np.random.default_rng(acc_bits)
    a = rng.integers(-2**23, 2**23, (3, 3000))
    b = rng.integers(-2**23, 2**23, (3000, 2))
    a[:, :100] = -2**23
    b[:100, :] = -2**23
    assert gemm(a, b, acc_bits).tolist() == ref_gemm(a, b, acc_bits)


def test_gemm_16bit_long_k():
    # 16-bit operands, K = 2**22 in a cheap 1 x K x 1 shape: the exact sum is
    # about 2**50, far beyond the 32/40/48-bit accumulators.
    k = 2**22
    rng = np.random.default_rng(1)
    a = rng.integers(-2**15, 2**15, (1, k))
    b = (-np.sign(a) * rng.integers(2**14, 2**15, (1, k))).T
    exact = sum(x * y for x, y in zip(a[0].tolist(), b[:, 0].tolist()))
    assert abs(exact) > 2**48
    for acc_bits in (32, 40, 48, 64):
        want = (exact + 2**(acc_bits - 1)) % 2**acc_bits - 2**(acc_bits - 1)
        assert gemm(a, b, acc_bits)[0, 0] == want


def test_gemm_vectors_and_errors():
    a = np.array([3, -4, 5])
    assert gemm(a, a, 8) == (9 + 16 + 25)
    assert gemm(np.array([[2**62, 2**62]]), np.array([[2], [2]]), 64).tolist() == [[0]]
    with pytest.raises(ValueError, match="K"):
        gemm(np.zeros((2, 3), dtype=np.int64), np.zeros((4, 2), dtype=np.int64), 32)
    with pytest.raises(ValueError, match="65"):
        gemm(a, a, 65)
    with pytest.raises(TypeError):
        gemm(a.astype(float), a, 32)
