"""The update engine's model (``fixedpoint.update``) against plain Python
integer arithmetic, ``fixedpoint.sgd.sgd_update`` and Caffe's float SGD."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fecaffe_hw.errors import SolverError
from fecaffe_hw.fixedpoint.format import Format
from fecaffe_hw.fixedpoint.lfsr import Lfsr
from fecaffe_hw.fixedpoint.sgd import SgdConstants, SgdFormats, float_sgd_update, sgd_update
from fecaffe_hw.fixedpoint.update import (CONSTANT_MAX, DIFF_BITS, acc_add, acc_bias,
                                          sgd_constants, sgd_formats, sgd_fracs_legal,
                                          sgd_update_command)

FRACS = st.integers(-20, 60)


def python_term(value, shift, bits):
    """RNE by Python's round() on an exact Fraction, then clamp."""
    q = round(Fraction(int(value), 2**shift)) if shift >= 0 else int(value) << -shift
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, q))


def python_wrap(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 32), st.integers(-70, 70), st.integers(0, 2**32 - 1))
def test_acc_add_is_python_arithmetic(grad_bits, shift, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2**47, 2**47, (3, 4)) >> rng.integers(0, 47, (3, 4))
    grad = rng.integers(-(1 << (grad_bits - 1)), 1 << (grad_bits - 1), (3, 4))
    got = acc_add(grad, acc, shift, grad_bits)
    want = [[python_wrap(int(g) + python_term(a, shift, grad_bits), grad_bits)
             for g, a in zip(gr, ar)] for gr, ar in zip(grad, acc)]
    assert got.tolist() == want


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 32), st.integers(-20, 40), st.integers(0, 2**32 - 1))
def test_acc_bias_is_python_arithmetic(grad_bits, shift, seed):
    rng = np.random.default_rng(seed)
    images, channels, positions = rng.integers(1, 5, 3)
    dy = rng.integers(-2**15, 2**15, (images, channels, positions))
    grad = rng.integers(-(1 << (grad_bits - 1)), 1 << (grad_bits - 1), channels)
    got = acc_bias(grad, dy, shift, grad_bits)
    sums = [sum(int(v) for v in dy[:, c, :].ravel()) for c in range(channels)]
    assert got.tolist() == [python_wrap(int(g) + python_term(s, shift, grad_bits), grad_bits)
                            for g, s in zip(grad, sums)]


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 32), FRACS, FRACS, FRACS, FRACS)
def test_legal_fracs_are_what_sgd_formats_accepts(grad_bits, wf, hf, gf, df):
    fracs = dict(weight_frac=wf, history_frac=hf, grad_frac=gf, diff_frac=df,
                 grad_bits=grad_bits)
    try:
        sgd_formats(**fracs)
        accepted = True
    except SolverError:
        accepted = False
    assert sgd_fracs_legal(**fracs) == accepted


def test_constants_round_half_even_and_saturate():
    c = sgd_constants(rate=3, momentum=2**18 - 1, decay=1, norm_mul=2**25 - 1,
                      lr_mult=128, decay_mult=384)
    # 3 * 128 / 256 = 1.5 -> 2; 1 * 384 / 256 = 1.5 -> 2; momentum and norm_mul saturate.
    assert (c.rate, c.decay, c.momentum, c.norm_mul) == (2, 2, CONSTANT_MAX, 2**24)
    c = sgd_constants(rate=5, momentum=7, decay=2**17 - 1, norm_mul=3, lr_mult=128,
                      decay_mult=2**16 - 1)
    assert (c.rate, c.decay, c.momentum, c.norm_mul) == (2, CONSTANT_MAX, 7, 3)
    with pytest.raises(ValueError, match="lr_mult"):
        sgd_constants(rate=1, momentum=1, decay=1, norm_mul=1, lr_mult=1 << 16, decay_mult=0)


def test_illegal_fracs_raise_solver_error():
    with pytest.raises(SolverError, match="SGD_UPDATE fracs"):
        sgd_update_command([0, 0], [0, 0], [0, 0], weight_frac=12, history_frac=10,
                           grad_frac=20, diff_frac=22, grad_bits=24, rate=1, momentum=1,
                           decay=1, norm_mul=1, lr_mult=256, decay_mult=256, lfsr=Lfsr(1))


def _legal_fracs(draw):
    grad_bits = draw(st.integers(8, 32))
    wf = draw(st.integers(8, 15))
    hf = wf + draw(st.integers(0, 8))
    gf = wf + 2 + draw(st.integers(grad_bits - 36, 28))
    df = hf - 3 - draw(st.integers(-15, 44 - DIFF_BITS))
    return grad_bits, wf, hf, gf, df


@settings(max_examples=30, deadline=None)
@given(st.data(), st.sampled_from([1, 2]))
def test_command_is_sgd_update_where_formats_coincide(data, lanes):
    """With unit multipliers the command is ``sgd_update`` on its formats,
    drawing the same random words for any lane count."""
    grad_bits, wf, hf, gf, df = _legal_fracs(data.draw)
    seed = data.draw(st.integers(1, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = 2 * int(rng.integers(1, 20))
    w, h = rng.integers(-2**15, 2**15, (2, n))
    g = rng.integers(-(1 << (grad_bits - 1)), 1 << (grad_bits - 1), n)
    rate, momentum, decay = (int(x) for x in rng.integers(0, CONSTANT_MAX, 3))
    norm_mul = int(rng.integers(1, 2**24 + 1))
    got_w, got_h, got_g = sgd_update_command(
        w, h, g, weight_frac=wf, history_frac=hf, grad_frac=gf, diff_frac=df,
        grad_bits=grad_bits, rate=rate, momentum=momentum, decay=decay, norm_mul=norm_mul,
        lr_mult=256, decay_mult=256, lfsr=Lfsr(seed), lanes=lanes)
    formats = SgdFormats(grad=Format(grad_bits, gf), acc_bits=grad_bits, weight=Format(16, wf),
                         history=Format(16, hf), diff=Format(DIFF_BITS, df))
    want_w, want_h = sgd_update(w.reshape(-1, lanes), h.reshape(-1, lanes),
                                g.reshape(-1, lanes),
                                SgdConstants(rate=rate, momentum=momentum, decay=decay,
                                             norm_mul=norm_mul), formats, Lfsr(seed))
    assert got_w.tolist() == want_w.ravel().tolist()
    assert got_h.tolist() == want_h.ravel().tolist()
    assert not got_g.any()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2**32 - 1))
def test_command_agrees_with_float_sgd(seed):
    """Away from saturation, against Caffe's float step with the same
    (quantised) constants: |h' - h| <= rate * 2**-(diff_frac + 1) +
    2**-history_frac (diff rounded to nearest, h' stochastically), and w'
    within that plus 2**-weight_frac."""
    rng = np.random.default_rng(seed)
    wf, hf, gf, df, grad_bits = 12, 16, 20, 18, 24
    n = 64
    w, h = rng.integers(-2**13, 2**13, (2, n))
    g = rng.integers(-2**16, 2**16, n)       # diff stays inside Format(18, 18)
    rate, momentum = int(0.01 * 2**20), int(0.9 * 2**17)
    decay, lr_mult, decay_mult = int(5e-4 * 2**26), int(rng.integers(64, 512)), 256
    iter_size = int(rng.choice([1, 2, 4]))
    got_w, got_h, _ = sgd_update_command(
        w, h, g, weight_frac=wf, history_frac=hf, grad_frac=gf, diff_frac=df,
        grad_bits=grad_bits, rate=rate, momentum=momentum, decay=decay,
        norm_mul=2**24 // iter_size, lr_mult=lr_mult, decay_mult=decay_mult, lfsr=Lfsr(seed))
    c = sgd_constants(rate=rate, momentum=momentum, decay=decay, norm_mul=1,
                      lr_mult=lr_mult, decay_mult=decay_mult)
    lr = c.rate * 2.0**-20
    want_w, want_h = float_sgd_update(w * 2.0**-wf, h * 2.0**-hf, g * 2.0**-gf, lr=lr,
                                      momentum=c.momentum * 2.0**-17,
                                      weight_decay=c.decay * 2.0**-26, iter_size=iter_size)
    h_bound = lr * 2.0**-(df + 1) + 2.0**-hf
    assert np.abs(got_h * 2.0**-hf - want_h).max() <= h_bound
    assert np.abs(got_w * 2.0**-wf - want_w).max() <= h_bound + 2.0**-wf
