"""The LFSR model and stochastic rounding."""

import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fecaffe_hw.fixedpoint import LFSR_MASK, Lfsr, lfsr_step, stochastic_round

PERIOD = 2**32 - 1
PERIOD_PRIMES = (3, 5, 17, 257, 65537)


def test_first_words_hand_stepped():
    # Seed 1, stepped by hand: lsb=1 -> 0 ^ mask; 0x80200003 -> 0x40100001 ^ mask;
    # 0xC0300002 -> 0x60180001 (lsb 0); 0x60180001 -> 0x300C0000 ^ mask.
    assert LFSR_MASK == 0x80200003
    assert Lfsr(1).next_words(4).tolist() == [0x80200003, 0xC0300002, 0x60180001, 0xB02C0003]
    lfsr = Lfsr(0xFFFFFFFF)
    assert lfsr.next_word() == 0x7FFFFFFF ^ 0x80200003
    assert lfsr.state == 0xFFDFFFFC


def test_seed_validation():
    for bad in (0, 2**32, -1):
        with pytest.raises(ValueError, match=repr(bad)):
            Lfsr(bad)
    with pytest.raises(TypeError):
        Lfsr(1.0)


def _gf2_mul(x, y):
    """Matrices over GF(2) as 32 column words: (x @ y) column j = x applied to y_j."""
    return [_gf2_apply(x, col) for col in y]


def _gf2_apply(m, v):
    out = 0
    for j in range(32):
        if v >> j & 1:
            out ^= m[j]
    return out


def _gf2_pow(m, e):
    result = [1 << j for j in range(32)]
    while e:
        if e & 1:
            result = _gf2_mul(m, result)
        m = _gf2_mul(m, m)
        e >>= 1
    return result


def test_polynomial_is_maximal_length():
    # The step is linear over GF(2); its matrix has order exactly 2**32 - 1 iff
    # the sequence from any nonzero state runs through all 2**32 - 1 of them.
    step = [(1 << j) >> 1 ^ (LFSR_MASK if j == 0 else 0) for j in range(32)]
    identity = [1 << j for j in range(32)]
    assert _gf2_pow(step, PERIOD) == identity
    for p in PERIOD_PRIMES:
        assert _gf2_pow(step, PERIOD // p) != identity


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2**32 - 1))
def test_no_zero_state_and_state_is_last_word(seed):
    lfsr = Lfsr(seed)
    words = lfsr.next_words(300)
    assert (words != 0).all()
    assert lfsr.state == int(words[-1])


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 2**32 - 1), st.lists(st.integers(0, 9000), min_size=1, max_size=4))
def test_vectorised_matches_scalar(seed, counts):
    state, scalar = seed, []
    for _ in range(sum(counts)):
        state = lfsr_step(state)
        scalar.append(state)
    lfsr = Lfsr(seed)
    vector = np.concatenate([lfsr.next_words(n) for n in counts])
    assert vector.dtype == np.uint32
    assert vector.tolist() == scalar
    assert lfsr.state == (scalar[-1] if scalar else seed)


def test_generation_rate():
    # The contract asks for about a million words per second (nominally
    # ~0.07 s here; the bound leaves room for a loaded machine).
    Lfsr(1).next_words(5000)  # builds the cached jump tables
    start = time.perf_counter()
    Lfsr(12345).next_words(10**6)
    assert time.perf_counter() - start < 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-2**62, 2**62), min_size=1, max_size=30), st.integers(1, 32),
       st.integers(1, 2**32 - 1))
def test_stochastic_round_matches_loop(qs, shift, seed):
    q = np.array(qs, dtype=np.int64)
    words = Lfsr(seed).next_words(len(qs))
    want = [(v + (int(w) & (2**shift - 1))) // 2**shift for v, w in zip(qs, words)]
    assert stochastic_round(q, shift, words).tolist() == want
    # Passing the LFSR draws the same words in C order.
    assert stochastic_round(q.reshape(1, -1), shift, Lfsr(seed)).ravel().tolist() == want


def test_stochastic_round_is_unbiased():
    # 77/256 of an lsb rounds up with probability 77/256; the mean of 200k
    # draws is within a few standard deviations (deterministic seed).
    n, shift = 200_000, 8
    lfsr = Lfsr(0xACE1)
    for q in (77, -77, 1000 * 256 + 200, -3):
        values = np.full(n, q, dtype=np.int64)
        mean = stochastic_round(values, shift, lfsr).mean()
        p = (q % 256) / 256
        sigma = np.sqrt(p * (1 - p) / n)
        assert abs(mean - q / 256) < 5 * sigma + 1e-12


def test_stochastic_round_validation():
    with pytest.raises(ValueError, match="33"):
        stochastic_round(np.array([1]), 33, np.array([1], dtype=np.uint32))
    with pytest.raises(ValueError, match="shape"):
        stochastic_round(np.array([1, 2]), 4, np.array([1], dtype=np.uint32))
