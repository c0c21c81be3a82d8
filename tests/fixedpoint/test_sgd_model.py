import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from fecaffe_hw.errors import SolverError
from fecaffe_hw.fixedpoint.format import Format, dequantize, quantize
from fecaffe_hw.fixedpoint.lfsr import Lfsr
from fecaffe_hw.fixedpoint.sgd import (
    NORM_FRAC, SgdConstants, SgdFormats, accumulate, float_sgd_update, norm_multiplier,
    sgd_update, words_per_beat,
)

FORMATS = SgdFormats(grad=Format(20, 16), acc_bits=26, weight=Format(16, 14),
                     history=Format(20, 22), diff=Format(22, 20))


def test_norm_multiplier():
    for k in range(13):
        assert norm_multiplier(1 << k) == 1 << (NORM_FRAC - k)
    for n in (3, 5, 7, 100, 4095):
        mul = norm_multiplier(n)
        assert abs(Fraction(mul) - Fraction(1 << NORM_FRAC, n)) <= Fraction(1, 2)
    for bad in (0, -1, 4097, 2.0):
        with pytest.raises(SolverError, match="iter_size"):
            norm_multiplier(bad)


def test_accumulate_wraps():
    rng = np.random.default_rng(0)
    addr = rng.integers(0, 5, 400)
    grads = rng.integers(-2**19, 2**19, (400, 3))
    got = accumulate(np.zeros((5, 3), dtype=np.int64), addr, grads, acc_bits=22)
    for word in range(5):
        for lane in range(3):
            total = sum(int(g) for a, g in zip(addr, grads[:, lane]) if a == word)
            wrapped = (total + 2**21) % 2**22 - 2**21
            assert got[word, lane] == wrapped


_TWO = Fraction(2)


def _value(q, frac):
    return Fraction(int(q)) / _TWO**frac


def _reference_update(w, h, g, c, f, lfsr):
    """Element-by-element Caffe SGD with Python fractions: an independent
    reading of the documented arithmetic."""
    words, lanes = w.shape
    w_out, h_out = np.zeros_like(w), np.zeros_like(h)

    def rne(value, fmt):
        scaled = value * _TWO**fmt.frac
        q = round(scaled)                      # Python rounds half to even
        return min(max(q, fmt.min_int), fmt.max_int)

    def sr(value, frac, word, bits, fmt):
        # floor(value * 2**frac + noise * 2**-bits) with noise the low bits of word
        noise = Fraction(word & ((1 << bits) - 1), 1 << bits)
        q = math.floor(value * _TWO**frac + noise)
        return min(max(q, fmt.min_int), fmt.max_int)

    for i in range(words):
        noise = [lfsr.next_word() for _ in range(words_per_beat(f, lanes))]
        for j in range(lanes):
            wv = _value(int(w[i, j]), f.weight.frac)
            hv = _value(int(h[i, j]), f.history.frac)
            gv = _value(int(g[i, j]), f.grad.frac)
            diff = gv * Fraction(c.norm_mul, 2**NORM_FRAC) \
                + _value(c.decay, f.decay.frac) * wv
            diff_q = _value(rne(diff, f.diff), f.diff.frac)
            h_new = _value(c.momentum, f.momentum.frac) * hv \
                + _value(c.rate, f.rate.frac) * diff_q
            h_q = sr(h_new, f.history.frac, noise[j], f.history_shift, f.history)
            w_new = wv - _value(h_q, f.history.frac)
            shift = f.weight_shift
            w_q = sr(w_new, f.weight.frac, noise[lanes + j] if shift else 0, shift, f.weight)
            w_out[i, j], h_out[i, j] = w_q, h_q
    return w_out, h_out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lanes=st.integers(1, 3),
       grad=st.tuples(st.integers(8, 24), st.integers(-4, 24)), acc_extra=st.integers(0, 10),
       weight=st.tuples(st.integers(4, 18), st.integers(0, 16)), h_extra=st.integers(0, 12),
       h_bits=st.integers(4, 24), diff=st.tuples(st.integers(6, 24), st.integers(0, 26)))
def test_update_matches_fraction_reference(seed, lanes, grad, acc_extra, weight, h_extra, h_bits,
                                           diff):
    try:
        f = SgdFormats(grad=Format(*grad), acc_bits=grad[0] + acc_extra, weight=Format(*weight),
                       history=Format(h_bits, weight[1] + h_extra), diff=Format(*diff))
    except ValueError:
        assume(False)     # rejected formats are covered by the validation test
    rng = np.random.default_rng(seed)
    shape = (4, lanes)
    w = rng.integers(f.weight.min_int, f.weight.max_int + 1, shape)
    h = rng.integers(f.history.min_int, f.history.max_int + 1, shape)
    g = rng.integers(-(1 << (f.acc_bits - 1)), 1 << (f.acc_bits - 1), shape)
    c = SgdConstants(rate=int(rng.integers(0, f.rate.max_int + 1)),
                     momentum=int(rng.integers(0, f.momentum.max_int + 1)),
                     decay=int(rng.integers(0, f.decay.max_int + 1)),
                     norm_mul=norm_multiplier(int(rng.integers(1, 9))))
    lfsr_seed = int(rng.integers(1, 2**32))
    got = sgd_update(w, h, g, c, f, Lfsr(lfsr_seed))
    want = _reference_update(w, h, g, c, f, Lfsr(lfsr_seed))
    assert (got[0] == want[0]).all() and (got[1] == want[1]).all()


def _track(grad_mean, grad_std, steps, *, n=4096, seed=1, iter_size=2):
    """Run the fixed-point and Caffe float updates side by side on the same
    (quantised) gradients; return (fixed - float) in weight lsbs and how far the
    float weights moved."""
    f = FORMATS
    rng = np.random.default_rng(seed)
    lr, momentum, wd = 0.01, 0.9, 5e-4
    c = SgdConstants.from_solver(f, lr=lr, momentum=momentum, weight_decay=wd,
                                 iter_size=iter_size)
    wq = quantize(rng.normal(0, 0.1, n), f.weight).reshape(-1, 4)
    hq = np.zeros_like(wq)
    wf, hf = dequantize(wq, f.weight), np.zeros(wq.shape)
    start = wf.copy()
    mean = grad_mean + np.zeros(wq.shape)
    lfsr = Lfsr(0xACE1)
    rows = np.arange(wq.shape[0])
    for _ in range(steps):
        acc, gsum = np.zeros_like(wq), np.zeros(wq.shape)
        for _ in range(iter_size):
            part = quantize(mean + rng.normal(0, grad_std, wq.shape), f.grad)
            acc = accumulate(acc, rows, part, acc_bits=f.acc_bits)
            gsum += dequantize(part, f.grad)
        wq, hq = sgd_update(wq, hq, acc, c, f, lfsr)
        wf, hf = float_sgd_update(wf, hf, gsum, lr=lr, momentum=momentum, weight_decay=wd,
                                  iter_size=iter_size)
    step = f.weight.step
    return (dequantize(wq, f.weight) - wf) / step, np.abs(wf - start).mean() / step


def test_trajectory_tracks_caffe_float():
    """300 steps of lr 0.01, momentum 0.9, weight decay 5e-4, iter_size 2 on
    4096 weights: the stochastic rounding error is a random walk of about
    sqrt(steps / 4) lsb (measured rms 7), with no bias."""
    rng = np.random.default_rng(9)
    error, moved = _track(rng.normal(0, 0.005, 4096).reshape(-1, 4), 0.05, 300)
    assert moved > 1000                       # the weights really trained
    assert abs(error.mean()) < 0.75           # unbiased: mean error under 1 lsb
    assert np.sqrt((error ** 2).mean()) < 12
    assert np.abs(error).max() < 60


def test_updates_below_one_lsb_are_not_lost():
    """A steady gradient that moves w by ~0.3 lsb per step: round-to-nearest
    would never move w; stochastic rounding follows the float trajectory."""
    f = FORMATS
    # lr * g / (1 - momentum) = 0.3 lsb per step at steady state.
    g = 0.3 * f.weight.step * (1 - 0.9) / 0.01
    error, moved = _track(g, 0.0, 200, iter_size=1)
    assert moved > 40
    assert abs(error.mean()) < 0.5


def test_formats_and_constants_validation():
    with pytest.raises(ValueError, match="Accumulator width"):
        SgdFormats(grad=Format(20, 16), acc_bits=18, weight=Format(16, 14),
                   history=Format(20, 22), diff=Format(22, 20))
    with pytest.raises(ValueError, match="History frac 10"):
        SgdFormats(grad=Format(20, 16), acc_bits=26, weight=Format(16, 14),
                   history=Format(20, 10), diff=Format(22, 20))
    with pytest.raises(ValueError, match=r"diff sum needs \d+ bits"):
        SgdFormats(grad=Format(24, 0), acc_bits=40, weight=Format(16, 40),
                   history=Format(20, 42), diff=Format(22, 20))
    with pytest.raises(SolverError, match="rate 0.5"):
        SgdConstants.from_solver(FORMATS, lr=0.5, momentum=0.9, weight_decay=0)
    c = SgdConstants.from_solver(FORMATS, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                 lr_mult=2, decay_mult=0, iter_size=3)
    assert c.rate == round(0.02 * 2**20) and c.decay == 0
    assert c.norm_mul == norm_multiplier(3)
    with pytest.raises(ValueError, match="equal"):
        sgd_update(np.zeros((2, 1)), np.zeros((2, 2)), np.zeros((2, 1)), c, FORMATS, Lfsr(1))
