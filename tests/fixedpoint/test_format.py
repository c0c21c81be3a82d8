"""Format, quantize, saturate, wrap, shift_round, requantize against slow
pure-Python integer references (Fraction arithmetic, Python's round-half-even)."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fecaffe_hw.fixedpoint import (Format, quantize, dequantize, saturate, wrap, shift_round,
                                   requantize)

FAST = settings(max_examples=200, deadline=None)

int64s = st.integers(-2**63, 2**63 - 1)
formats = st.builds(Format, bits=st.integers(2, 64), frac=st.integers(-20, 80))


def ref_clamp(v, bits):
    return max(-2**(bits - 1), min(2**(bits - 1) - 1, v))


def ref_quantize(x, fmt):
    if math.isinf(x):
        return fmt.max_int if x > 0 else fmt.min_int
    # Fraction.__round__ rounds half to even.
    return ref_clamp(round(Fraction(x) * Fraction(2) ** fmt.frac), fmt.bits)


def ref_wrap(v, bits):
    return (v + 2**(bits - 1)) % 2**bits - 2**(bits - 1)


def ref_shift_round(v, shift):
    return v * 2**-shift if shift <= 0 else round(Fraction(v, 2**shift))


def ref_requantize(v, acc_frac, fmt):
    return ref_clamp(ref_shift_round(v, acc_frac - fmt.frac), fmt.bits)


def test_format_validation():
    assert Format(16, 8).min_int == -32768 and Format(16, 8).max_int == 32767
    assert Format(16, 8).step == 2**-8
    for bad in (1, 65, 0, 8.0, True):
        with pytest.raises(ValueError, match=repr(bad)):
            Format(bad, 0)
    with pytest.raises(ValueError, match="1000"):
        Format(16, 1000)
    with pytest.raises(Exception):
        Format(16, 8).bits = 4  # frozen
    assert Format(8, -3) == Format(8, -3) and hash(Format(8, 12)) == hash(Format(8, 12))


@FAST
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=20), formats)
def test_quantize_matches_reference(xs, fmt):
    got = quantize(np.array(xs), fmt)
    assert got.dtype == np.int64
    assert got.tolist() == [ref_quantize(x, fmt) for x in xs]


@FAST
@given(st.integers(-2**20, 2**20), st.integers(-8, 30), st.integers(2, 64))
def test_quantize_ties_go_to_even(k, frac, bits):
    fmt = Format(bits, frac)
    x = (k + 0.5) * 2.0 ** -frac
    want = k if k % 2 == 0 else k + 1
    assert quantize(x, fmt) == ref_clamp(want, bits)
    assert quantize(-x, fmt) == ref_clamp(-want, bits)


def test_quantize_examples():
    fmt = Format(8, 4)
    # 0.5 lsb -> 0, 1.5 lsb -> 2, -2.5 lsb -> -2, saturation both ways.
    lsb = 1 / 16
    x = np.array([0.5 * lsb, 1.5 * lsb, -2.5 * lsb, -0.5 * lsb, 7.96875, 1e300, -1e300,
                  np.inf, -np.inf])
    assert quantize(x, fmt).tolist() == [0, 2, -2, 0, 127, 127, -128, 127, -128]
    assert quantize(2.0**70, Format(64, 0)) == 2**63 - 1
    assert quantize(-2.0**63, Format(64, 0)) == -2**63
    with pytest.raises(ValueError, match="NaN"):
        quantize([1.0, np.nan], fmt)


@FAST
@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=10), formats)
def test_dequantize_round_trips(qs, fmt):
    q = saturate(np.array(qs), fmt.bits)
    assert quantize(dequantize(q, fmt), fmt).tolist() == q.tolist()
    assert dequantize(q, fmt).tolist() == [float(Fraction(v) / Fraction(2) ** fmt.frac)
                                           for v in q.tolist()]


@FAST
@given(st.lists(int64s, min_size=1, max_size=20), st.integers(1, 64))
def test_saturate_and_wrap(qs, bits):
    q = np.array(qs, dtype=np.int64)
    assert saturate(q, bits).tolist() == [ref_clamp(v, bits) for v in qs]
    assert wrap(q, bits).tolist() == [ref_wrap(v, bits) for v in qs]


def test_wrap_and_saturate_reject_bad_widths():
    for bad in (0, 65):
        with pytest.raises(ValueError, match=str(bad)):
            wrap(np.array([1]), bad)
        with pytest.raises(ValueError, match=str(bad)):
            saturate(np.array([1]), bad)
    with pytest.raises(TypeError):
        wrap(np.array([1.5]), 8)


@FAST
@given(st.lists(int64s, min_size=1, max_size=20), st.integers(0, 70))
def test_shift_round_right(qs, shift):
    got = shift_round(np.array(qs, dtype=np.int64), shift)
    assert got.tolist() == [ref_shift_round(v, shift) for v in qs]


@FAST
@given(st.integers(-2**40, 2**40), st.integers(1, 20))
def test_shift_round_ties_and_hardware_formula(k, shift):
    # Exact ties k + 1/2 go to the even neighbour.
    tie = (2 * k + 1) << (shift - 1)
    assert shift_round(tie, shift) == (k if k % 2 == 0 else k + 1)
    # The RTL's formula: add half-1 plus the lsb of the kept part, then shift.
    for v in (tie - 1, tie, tie + 1, -tie):
        rtl = (v + (1 << (shift - 1)) - 1 + ((v >> shift) & 1)) >> shift
        assert shift_round(v, shift) == rtl


@FAST
@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=10), st.integers(-22, 0))
def test_shift_round_left(qs, shift):
    assert shift_round(np.array(qs), shift).tolist() == [v << -shift for v in qs]


def test_shift_round_left_overflow_is_an_error():
    with pytest.raises(OverflowError):
        shift_round(np.array([2**62]), -1)
    assert shift_round(np.array([-2**62]), -1).tolist() == [-2**63]


@FAST
@given(st.lists(int64s, min_size=1, max_size=20), st.integers(-80, 80), formats)
def test_requantize_matches_reference(qs, acc_frac, fmt):
    got = requantize(np.array(qs, dtype=np.int64), acc_frac, fmt)
    assert got.tolist() == [ref_requantize(v, acc_frac, fmt) for v in qs]


def test_requantize_examples():
    fmt = Format(8, 2)
    # acc in Q.6: 0x60 / 16 = 6 exactly; 0x68 / 16 = 6.5 -> 6; 0x78/16 = 7.5 -> 8.
    assert requantize(np.array([0x60, 0x68, 0x78, -0x68, 10**6, -10**6]), 6, fmt).tolist() \
        == [6, 6, 8, -6, 127, -128]
    # Widening the binary point shifts left and saturates without overflow.
    assert requantize(np.array([3, -3, 2**62, -2**62]), 0, Format(16, 12)).tolist() \
        == [3 << 12, -3 << 12, 32767, -32768]
