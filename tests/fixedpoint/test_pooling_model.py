import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from fecaffe_hw.fixedpoint import pooling as model
from fecaffe_hw.fixedpoint.format import Format, dequantize, quantize, shift_round
from fecaffe_hw.fixedpoint.windows import output_size

FMT = Format(8, 4)


def caffe_pool(x, kernel, stride, pad, method):
    """Caffe's pooling_layer.cpp loops in float64: (top, mask), plus AVE pool sizes."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    channels, height, width = x.shape
    oh = output_size(height, kh, sh, ph, ceil_mode=True)
    ow = output_size(width, kw, sw, pw, ceil_mode=True)
    top = np.zeros((channels, oh, ow))
    mask = np.full((channels, oh, ow), -1)
    sizes = np.zeros((oh, ow), dtype=np.int64)
    for c in range(channels):
        for py in range(oh):
            for px in range(ow):
                hstart, wstart = py * sh - ph, px * sw - pw
                if method == "max":
                    hend, wend = min(hstart + kh, height), min(wstart + kw, width)
                    hstart, wstart = max(hstart, 0), max(wstart, 0)
                    best = -np.inf
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            if x[c, h, w] > best:
                                best, mask[c, py, px] = x[c, h, w], h * width + w
                    top[c, py, px] = best
                else:
                    hend, wend = min(hstart + kh, height + ph), min(wstart + kw, width + pw)
                    size = (hend - hstart) * (wend - wstart)
                    hstart, wstart = max(hstart, 0), max(wstart, 0)
                    hend, wend = min(hend, height), min(wend, width)
                    top[c, py, px] = x[c, hstart:hend, wstart:wend].sum() / size
                    sizes[py, px] = size
    return top, mask, sizes


def caffe_pool_backward(top_diff, mask, sizes, shape, kernel, stride, pad, method):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    channels, height, width = shape
    bottom = np.zeros((channels, height * width))
    _, oh, ow = top_diff.shape
    for c in range(channels):
        for py in range(oh):
            for px in range(ow):
                if method == "max":
                    bottom[c, mask[c, py, px]] += top_diff[c, py, px]
                    continue
                hstart, wstart = py * sh - ph, px * sw - pw
                hend, wend = min(hstart + kh, height + ph), min(wstart + kw, width + pw)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                hend, wend = min(hend, height), min(wend, width)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        bottom[c, h * width + w] += top_diff[c, py, px] / sizes[py, px]
    return bottom.reshape(shape)


def rne_divide(sums, n):
    """Exact round-half-even of sums / n by integer division."""
    q, r = np.divmod(np.asarray(sums, dtype=np.int64), n)
    return q + (2 * r > n) + ((2 * r == n) & (q % 2 == 1))


@st.composite
def cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    height = draw(st.integers(max(1, kh - 2 * ph), 9))
    width = draw(st.integers(max(1, kw - 2 * pw), 9))
    try:
        output_size(height, kh, sh, ph, ceil_mode=True)
        output_size(width, kw, sw, pw, ceil_mode=True)
    except ValueError:
        assume(False)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    channels = draw(st.integers(1, 3))
    # Few distinct values half the time: ties everywhere.
    scale = draw(st.sampled_from([0.25, FMT.max_value]))
    x = rng.uniform(-scale, scale, (channels, height, width))
    return x, (kh, kw), (sh, sw), (ph, pw)


@settings(max_examples=40, deadline=None)
@given(cases())
def test_max_forward_matches_caffe(case):
    x, kernel, stride, pad = case
    q = quantize(x, FMT)
    values, index = model.max_pool(q, kernel, stride, pad)
    top, mask, _ = caffe_pool(dequantize(q, FMT), kernel, stride, pad, "max")
    assert np.array_equal(dequantize(values, FMT), top)
    assert np.array_equal(model.caffe_mask(index, *x.shape[1:], kernel, stride, pad), mask)


@settings(max_examples=40, deadline=None)
@given(cases())
def test_ave_forward_within_half_lsb_of_caffe(case):
    x, kernel, stride, pad = case
    q = quantize(x, FMT)
    got = model.ave_pool(q, kernel, stride, pad, bits=FMT.bits)
    top, _, sizes = caffe_pool(dequantize(q, FMT), kernel, stride, pad, "ave")
    # Caffe's float average, re-quantised with RNE: at most half an lsb away,
    # and exactly the round-half-even of the integer sum over the pool size.
    assert np.all(np.abs(dequantize(got, FMT) - top) <= FMT.step / 2)
    sums = np.rint(top * sizes * 2 ** FMT.frac).astype(np.int64)
    assert np.array_equal(got, rne_divide(sums, np.broadcast_to(sizes, sums.shape)))


@settings(max_examples=30, deadline=None)
@given(cases())
def test_backward_matches_caffe(case):
    x, kernel, stride, pad = case
    q = quantize(x, FMT)
    rng = np.random.default_rng(q.size)
    channels, height, width = x.shape
    _, index = model.max_pool(q, kernel, stride, pad)
    grad = rng.integers(FMT.min_int, FMT.max_int + 1, index.shape)
    top, mask, sizes = caffe_pool(dequantize(q, FMT), kernel, stride, pad, "max")
    want = caffe_pool_backward(grad.astype(float), mask, sizes, x.shape, kernel, stride, pad,
                               "max")
    got = model.max_pool_backward(grad, index, height, width, kernel, stride, pad, bits=FMT.bits)
    # Integer gradients: the float sum is exact; the model saturates it once.
    assert np.array_equal(got, np.clip(want, FMT.min_int, FMT.max_int))

    _, _, sizes = caffe_pool(dequantize(q, FMT), kernel, stride, pad, "ave")
    want = caffe_pool_backward(grad.astype(float), mask, sizes, x.shape, kernel, stride, pad,
                               "ave")
    got = model.ave_pool_backward(grad, height, width, kernel, stride, pad, bits=FMT.bits)
    # Each share is rounded once (<= 1/2 lsb); at most ceil(k/s)^2 shares per input.
    bound = model.overlap_count(kernel, stride) / 2
    clipped = np.clip(want, FMT.min_int, FMT.max_int)
    assert np.all(np.abs(got - clipped) <= bound)


@pytest.mark.parametrize("area, bits", [(9, 16), (25, 12), (6, 10), (4, 10), (2, 8), (1, 8)])
def test_average_divider_is_exact_rne(area, bits):
    divider = model.AverageDivider(area, bits)
    sums = np.arange(-2 ** (divider.sum_bits - 1), 2 ** (divider.sum_bits - 1))
    for n in range(1, area + 1):
        assert np.array_equal(divider(sums, n), rne_divide(sums, n)), n


def test_average_divider_wide_data_sampled():
    # 24-bit data takes the exact Python-integer path; sample it, ties included.
    divider = model.AverageDivider(9, 24)
    rng = np.random.default_rng(1)
    limit = 2 ** (divider.sum_bits - 1)
    for n in range(1, 10):
        ties = (np.arange(-50, 50) * 2 + 1) * n // 2 if n % 2 == 0 else np.arange(0)
        sums = np.concatenate([rng.integers(-limit, limit, 20000), ties,
                               [-limit, limit - 1]])
        assert np.array_equal(divider(sums, n), rne_divide(sums, n)), n


def test_average_divider_constants():
    divider = model.AverageDivider(9, 16)
    assert (divider.sum_bits, divider.shift) == (20, 26)
    assert divider.reciprocals[4] == 2 ** 24 and divider.reciprocals[3] == round(2 ** 26 / 3)
    sums = np.arange(-2 ** 19, 2 ** 19, 37)
    # Powers of two: the reciprocal is exact and the rule is shift_round.
    for shift, n in enumerate([1, 2, 4, 8]):
        assert np.array_equal(divider(sums, n), shift_round(sums, shift))


def test_max_first_maximum_wins_and_padding_never_wins():
    image = np.array([[[-3, -1], [-1, -2]]])
    values, index = model.max_pool(image, 3, 1, 1)
    # Window (0, 0) covers rows/cols -1..1; the first -1 is at (0, 1): tap 1*3+2.
    assert values[0, 0, 0] == -1 and index[0, 0, 0] == 5
    assert (values < 0).all()


def test_pool_sizes_count_padding_inside_h_plus_pad():
    # 5 wide, kernel 3, stride 2, pad 1: windows start -1, 1, 3; the last one
    # is clipped at 5 + 1 = 6, so it counts 3 columns (one of them padding).
    assert model.pool_sizes(5, 5, 3, 2, 1)[0].tolist() == [9, 9, 9]
    assert model.pool_sizes(6, 6, 3, 2, 1)[0].tolist() == [9, 9, 9, 6]


def test_backward_saturates_once():
    grad = np.full((1, 2, 2), FMT.max_int)
    got = model.ave_pool_backward(grad, 3, 3, 2, 1, 0, bits=FMT.bits)
    assert got[0, 1, 1] == FMT.max_int          # four shares of 32 (127 / 4 -> 32)
    assert got[0, 0, 0] == 32


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="Window area must be a positive integer, not 0"):
        model.AverageDivider(0, 8)
    with pytest.raises(ValueError, match="Pad 2 must be smaller than the kernel height 2"):
        model.max_pool(np.zeros((1, 4, 4), dtype=np.int64), 2, 1, 2)
    with pytest.raises(ValueError, match="Sum does not fit 12 bits"):
        model.AverageDivider(9, 8)(np.array([2 ** 11]), 3)
