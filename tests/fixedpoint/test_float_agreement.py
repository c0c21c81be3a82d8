"""The fixed-point model against the float reference, for the GEMM layers.

Convolution and InnerProduct run on the systolic array as quantise -> exact
integer GEMM -> add bias -> requantise. With formats calibrated the way the
compiler does (16 bits, the fewest integer bits that hold the blob's largest
magnitude, so nothing saturates), each output differs from Caffe's float
result by at most

    sum_k (|w_k| e_x + |x_k| e_w + e_x e_w) + e_b + e_y + float32 slack

where e_f = 2**-frac / 2 is half an lsb of format f (round-half-to-even
quantisation) and the sum runs over the output's K products. The test
asserts that bound element by element, so it fails on any rounding or
alignment mistake bigger than half an lsb. Pooling, the activations and the
SGD update are compared with the float semantics in their own model tests
(test_pooling_model.py, test_activation_model.py, test_sgd_model.py).
"""

import math

import numpy as np
import pytest
from google.protobuf import text_format

from fecaffe_hw.caffe import caffe_pb2
from fecaffe_hw.fixedpoint import Format, dequantize, gemm, quantize, requantize
from fecaffe_hw.reference.blob import Blob
from fecaffe_hw.reference.im2col import im2col
from fecaffe_hw.reference.layer import TEST, layer_class

BITS = 16
ACC_BITS = 48


def calibrated(values, bits=BITS):
    """The format the compiler picks: the most fraction bits that still hold max |x|."""
    peak = float(np.max(np.abs(values)))
    integer_bits = max(0, math.floor(math.log2(peak)) + 1) if peak > 0 else 0
    return Format(bits, bits - 1 - integer_bits)


def half_lsb(fmt):
    return 2.0 ** -fmt.frac / 2


def _layer(text, bottom_shape, rng):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = layer_class(param.type)(param, TEST, rng)
    bottom, top = [Blob(bottom_shape)], [Blob()]
    bottom[0].data[...] = rng.normal(0, 1, bottom_shape).astype(np.float32)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    for b in layer.blobs:          # non-zero biases, so bias alignment is exercised
        b.data[...] = rng.normal(0, 0.3, b.shape).astype(np.float32)
    layer.forward(bottom, top)
    return layer, bottom[0].data, top[0].data


def _fixed_gemm(w, cols, bias, y_float):
    """W (M, K) @ cols (K, N) + bias, the array's way. Returns (y_fixed, bound)."""
    fx, fw, fb, fy = calibrated(cols), calibrated(w), calibrated(bias), calibrated(y_float)
    xq, wq, bq = quantize(cols, fx), quantize(w, fw), quantize(bias, fb)
    acc_frac = fx.frac + fw.frac
    assert fb.frac <= acc_frac        # the bias is aligned by a left shift, exactly
    acc = gemm(wq, xq, ACC_BITS) + (bq << (acc_frac - fb.frac))[:, None]
    y = dequantize(requantize(acc, acc_frac, fy), fy)
    ex, ew = half_lsb(fx), half_lsb(fw)
    bound = (np.abs(w) @ np.full(cols.shape, ex) + np.full(w.shape, ew) @ np.abs(cols)
             + w.shape[1] * ex * ew + half_lsb(fb) + half_lsb(fy))
    # float32 accumulation in the reference itself
    bound += 1e-5 * (np.abs(w) @ np.abs(cols) + np.abs(bias)[:, None])
    return y, bound


@pytest.mark.parametrize("seed", range(4))
def test_convolution_within_quantisation_bound(seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = 2, int(rng.integers(1, 4)), int(rng.integers(6, 11)), int(rng.integers(6, 11))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    out, pad, stride = int(rng.integers(2, 6)), int(rng.integers(0, 2)), int(rng.integers(1, 3))
    layer, x, y_float = _layer(f"""
        name: "conv" type: "Convolution"
        convolution_param {{ num_output: {out} kernel_h: {kh} kernel_w: {kw}
                             pad: {pad} stride: {stride}
                             weight_filler {{ type: "gaussian" std: 0.3 }} }}""",
                               (n, c, h, w), rng)
    weights, bias = layer.blobs[0].data, layer.blobs[1].data
    cols = im2col(x.astype(np.float64), (kh, kw), (pad, pad), (stride, stride))
    y, bound = _fixed_gemm(weights.reshape(out, -1).astype(np.float64), cols,
                           bias.astype(np.float64),
                           y_float.transpose(1, 0, 2, 3).reshape(out, -1))
    oh, ow = y_float.shape[2:]
    # im2col's column order is (oh, ow, n): bring the float result into it
    want = y_float.transpose(1, 2, 3, 0).reshape(out, -1)
    err = np.abs(y - want)
    assert np.all(err <= bound), f"max excess {np.max(err - bound):.3g}"
    # and the bound is not vacuous: a one-lsb shift of the output exceeds it
    assert np.any(np.abs(y + 2.0 ** -calibrated(want).frac * 2 - want) > bound)


@pytest.mark.parametrize("seed", range(4))
def test_inner_product_within_quantisation_bound(seed):
    rng = np.random.default_rng(100 + seed)
    n, k, out = int(rng.integers(1, 5)), int(rng.integers(10, 300)), int(rng.integers(2, 20))
    layer, x, y_float = _layer(f"""
        name: "ip" type: "InnerProduct"
        inner_product_param {{ num_output: {out}
                               weight_filler {{ type: "xavier" }} }}""", (n, k), rng)
    weights, bias = layer.blobs[0].data, layer.blobs[1].data
    y, bound = _fixed_gemm(weights.astype(np.float64), x.T.astype(np.float64),
                           bias.astype(np.float64), y_float.T)
    err = np.abs(y - y_float.T)
    assert np.all(err <= bound), f"max excess {np.max(err - bound):.3g}"
