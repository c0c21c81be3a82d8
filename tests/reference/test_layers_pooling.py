import math

import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from fecaffe_hw.reference.layers.pooling import pooled_size
from reference.gradient_checker import blob, check_gradient, make_layer


def caffe_pool(x, method, k, p, s):
    """Caffe's PoolingLayer::Forward_cpu loops, transcribed; returns (top, mask)."""
    n, c, h, w = x.shape
    oh = int(math.ceil((h + 2 * p[0] - k[0]) / s[0])) + 1
    ow = int(math.ceil((w + 2 * p[1] - k[1]) / s[1])) + 1
    if p[0] or p[1]:
        if (oh - 1) * s[0] >= h + p[0]:
            oh -= 1
        if (ow - 1) * s[1] >= w + p[1]:
            ow -= 1
    top = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1)
    for a in range(n):
        for b in range(c):
            for ph in range(oh):
                for pw in range(ow):
                    hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
                    if method == "MAX":
                        he, we = min(hs + k[0], h), min(ws + k[1], w)
                        hs, ws = max(hs, 0), max(ws, 0)
                        best = -np.finfo(np.float32).max
                        for y in range(hs, he):
                            for xx in range(ws, we):
                                if x[a, b, y, xx] > best:
                                    best, mask[a, b, ph, pw] = x[a, b, y, xx], y * w + xx
                        top[a, b, ph, pw] = best
                    else:
                        he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
                        size = (he - hs) * (we - ws)
                        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                        top[a, b, ph, pw] = x[a, b, hs:he, ws:we].sum() / size
    return top, mask


@pytest.mark.parametrize("size,kernel,pad,stride,want", [
    (28, 2, 0, 2, 14),   # LeNet pool1
    (24, 2, 0, 2, 12),
    (5, 3, 1, 2, 3),
    (55, 3, 0, 2, 27),   # AlexNet pool1
    (6, 3, 0, 2, 3),     # ceil: the last window hangs over the edge
    (7, 2, 0, 2, 4),     # ceil((7 - 2) / 2) + 1
    (5, 2, 1, 3, 2),     # ceil(5 / 3) + 1 = 3, but window 3 would start in the padding
    (4, 3, 2, 3, 2),     # ceil(5 / 3) + 1 = 3, (3 - 1) * 3 >= 4 + 2
])
def test_pooled_size(size, kernel, pad, stride, want):
    assert pooled_size(size, kernel, pad, stride) == want
    for pool in ("MAX", "AVE"):
        layer = make_layer(f'type: "Pooling" pooling_param {{ pool: {pool} '
                           f'kernel_size: {kernel} pad: {pad} stride: {stride} }}')
        bottom, top = [blob(np.zeros((1, 1, size, size)))], [blob(np.zeros(1))]
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
        assert top[0].shape == (1, 1, want, want)


def test_floor_round_mode():
    layer = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 '
                       'round_mode: FLOOR }')
    bottom, top = [blob(np.zeros((1, 1, 7, 7)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    assert top[0].shape == (1, 1, 3, 3)


def random_config(rng):
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        ph, pw = (int(rng.integers(0, kh)), int(rng.integers(0, kw)))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        h, w = (int(v) for v in rng.integers(2, 8, 2))
        oh, ow = pooled_size(h, kh, ph, sh), pooled_size(w, kw, pw, sw)
        if (h + 2 * ph >= kh and w + 2 * pw >= kw
                and (oh - 1) * sh - ph < h and (ow - 1) * sw - pw < w):
            return (kh, kw), (ph, pw), (sh, sw), (2, 2, h, w)


def pooling_text(method, k, p, s):
    return (f'type: "Pooling" pooling_param {{ pool: {method} kernel_h: {k[0]} '
            f'kernel_w: {k[1]} pad_h: {p[0]} pad_w: {p[1]} stride_h: {s[0]} stride_w: {s[1]} }}')


def distinct(rng, shape):
    """Inputs whose values differ by at least 0.05: no ties, so max is differentiable."""
    return (rng.permutation(math.prod(shape)).reshape(shape) - 20) * 0.05


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("seed", range(8))
def test_forward_matches_caffe_loops(method, seed):
    rng = np.random.default_rng(seed)
    k, p, s, shape = random_config(rng)
    # Small integers make ties likely, exercising Caffe's first-maximum rule.
    x = rng.integers(-3, 4, shape).astype(np.float32)
    layer = make_layer(pooling_text(method, k, p, s))
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    if method == "MAX":
        top.append(blob(np.zeros(1)))
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    want, mask = caffe_pool(x, method, k, p, s)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-6)
    if method == "MAX":
        np.testing.assert_array_equal(top[1].data, mask)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("seed", range(6))
def test_gradients(method, seed):
    rng = np.random.default_rng(50 + seed)
    k, p, s, shape = random_config(rng)
    layer = make_layer(pooling_text(method, k, p, s))
    check_gradient(layer, [blob(distinct(rng, shape))], [blob(np.zeros(1))],
                   step=1e-3, threshold=1e-6, seed=seed)


def test_max_backward_routes_to_first_maximum():
    layer = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }')
    bottom, top = [blob([[[[1, 3], [3, 0]]]])], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    top[0].diff[...] = 5
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[[[0, 5], [0, 0]]]])


def test_ave_divisor_counts_padding_inside_the_clipped_window():
    # 3x3 input of ones, kernel 3, stride 2, pad 1: 2x2 outputs; every window
    # covers 4 pixels but Caffe divides by 9 (the window fits in H + pad).
    layer = make_layer('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 '
                       'pad: 1 }')
    bottom, top = [blob(np.ones((1, 1, 3, 3)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, np.full((1, 1, 2, 2), 4 / 9), rtol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    rng = np.random.default_rng(4)
    x = distinct(rng, (2, 3, 4, 5))
    layer = make_layer(f'type: "Pooling" pooling_param {{ pool: {method} global_pooling: true }}')
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    want = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], want, rtol=1e-5)
    check_gradient(make_layer(f'type: "Pooling" pooling_param {{ pool: {method} '
                              'global_pooling: true }'),
                   [blob(x)], [blob(np.zeros(1))], threshold=1e-6)


@pytest.mark.parametrize("text,shape,message", [
    ("pool: MAX kernel_size: 7", (1, 1, 5, 5), "kernel 7x7 does not fit input 5x5 (pad 0)"),
    ("pool: MAX kernel_size: 2 pad: 2", (1, 1, 5, 5), "pad 2x2 must be smaller than kernel 2x2"),
    ("pool: MAX", (1, 1, 5, 5), "kernel_size or kernel_h"),
    ("pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2", (1, 1, 5, 5), "exactly one"),
    ("pool: STOCHASTIC kernel_size: 2", (1, 1, 5, 5), "STOCHASTIC"),
    ("pool: AVE global_pooling: true stride: 2", (1, 1, 5, 5), "pad 0 and stride 1"),
    ("pool: MAX kernel_size: 2 stride: 0", (1, 1, 5, 5), "stride 0x0"),
    ("pool: AVE kernel_size: 1 stride: 3", (1, 1, 2, 2), "last pooling window outside"),
])
def test_bad_parameters(text, shape, message):
    layer = make_layer(f'name: "pool9" type: "Pooling" pooling_param {{ {text} }}')
    with pytest.raises(NetError, match="pool9") as info:
        bottom, top = [blob(np.zeros(shape))], [blob(np.zeros(1))]
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
    assert message in str(info.value)
