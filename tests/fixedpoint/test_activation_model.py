import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fecaffe_hw.fixedpoint.activation import (
    SIGMOID_MAX_ERROR, SLOPE_FORMAT, TABLE_FORMAT, TANH_MAX_ERROR, EltwiseOp,
    activation_tables, bias_add, eltwise, relu_backward, relu_forward, sigmoid_backward,
    sigmoid_forward, tanh_backward, tanh_forward,
)
from fecaffe_hw.fixedpoint.format import Format, dequantize, quantize

WIDE_OUT = Format(40, 36)    # output quantisation negligible next to the table error


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("forward, true, bound", [
    (sigmoid_forward, _sigmoid, SIGMOID_MAX_ERROR),
    (tanh_forward, np.tanh, TANH_MAX_ERROR),
])
def test_table_error_within_stated_bound(forward, true, bound):
    in_fmt = Format(32, 20)
    x = np.arange(-(24 << 20), 24 << 20, 997, dtype=np.int64)
    y = dequantize(forward(x, in_fmt, WIDE_OUT), WIDE_OUT)
    error = np.abs(y - true(dequantize(x, in_fmt)))
    assert error.max() <= bound + WIDE_OUT.step
    # The bound is not loose by more than a factor of two either.
    assert error.max() > bound / 2


@pytest.mark.parametrize("forward", [sigmoid_forward, tanh_forward])
def test_table_output_is_monotonic_and_saturates(forward):
    in_fmt, out_fmt = Format(20, 10), Format(12, 10)
    x = np.arange(in_fmt.min_int, in_fmt.max_int + 1, 3, dtype=np.int64)
    y = forward(x, in_fmt, out_fmt)
    assert (np.diff(y) >= 0).all()
    assert y[-1] == 1 << out_fmt.frac and y[0] == (0 if forward is sigmoid_forward
                                                   else -(1 << out_fmt.frac))


def test_tables_are_consistent():
    for table in activation_tables().values():
        assert table.base.dtype == np.int64 and len(table.base) == table.segments
        # Consecutive segments meet: the table is continuous.
        assert (table.base[1:] == table.base[:-1] + table.delta[:-1]).all()
        assert np.abs(table.base).max() <= 1 << TABLE_FORMAT.frac
    with pytest.raises(ValueError, match="segments_log2"):
        activation_tables(0)
    with pytest.raises(ValueError, match="too coarse"):
        sigmoid_forward(np.array([1]), Format(16, 1), Format(8, 6))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), in_bits=st.integers(8, 30), in_frac=st.integers(0, 20),
       out_bits=st.integers(4, 24), out_frac=st.integers(-4, 24), bias_drop=st.integers(0, 8))
def test_bias_relu_requant_equal_rounded_float(seed, in_bits, in_frac, out_bits, out_frac,
                                               bias_drop):
    """Bias, ReLU and requantisation are one exact rounding of Caffe's float
    result (all operands small enough to be exact in float64)."""
    rng = np.random.default_rng(seed)
    in_fmt, out_fmt = Format(in_bits, in_frac), Format(out_bits, out_frac)
    bias_fmt = Format(12, in_frac - bias_drop)
    x = rng.integers(in_fmt.min_int, in_fmt.max_int + 1, 200)
    b = rng.integers(bias_fmt.min_int, bias_fmt.max_int + 1, 200)
    slope = int(rng.integers(0, SLOPE_FORMAT.max_int + 1))
    xf, bf = dequantize(x, in_fmt), dequantize(b, bias_fmt)
    sf = slope * SLOPE_FORMAT.step

    def caffe_relu(v):
        return np.maximum(v, 0) + sf * np.minimum(v, 0)

    assert (eltwise(EltwiseOp.REQUANT, x, in_fmt=in_fmt, out_fmt=out_fmt)
            == quantize(xf, out_fmt)).all()
    assert (eltwise(EltwiseOp.BIAS, x, in_fmt=in_fmt, out_fmt=out_fmt, bias=b, bias_fmt=bias_fmt)
            == quantize(xf + bf, out_fmt)).all()
    assert (eltwise(EltwiseOp.BIAS_RELU, x, in_fmt=in_fmt, out_fmt=out_fmt, bias=b,
                    bias_fmt=bias_fmt, slope=slope) == quantize(caffe_relu(xf + bf), out_fmt)).all()
    assert (relu_forward(x, in_frac, slope, SLOPE_FORMAT, out_fmt)
            == quantize(caffe_relu(xf), out_fmt)).all()
    # Backward: Caffe gates by bottom_data > 0 (zero counts as negative).
    gate = rng.integers(-2, 3, 200)
    want = xf * np.where(gate > 0, 1.0, sf)
    assert (relu_backward(x, gate, in_frac, slope, SLOPE_FORMAT, out_fmt)
            == quantize(want, out_fmt)).all()
    assert (bias_add(x, in_fmt, b, bias_fmt) == x + (b << bias_drop)).all()


@pytest.mark.parametrize("backward, local", [
    (sigmoid_backward, lambda y: y * (1 - y)),
    (tanh_backward, lambda y: 1 - y * y),
])
def test_activation_backward_tracks_float(backward, local):
    """Error <= |dy| * half an lsb of y's format (rounded derivative) + half an
    output lsb (final rounding)."""
    rng = np.random.default_rng(3)
    dy_fmt, y_fmt, out_fmt = Format(16, 12), Format(16, 14), Format(16, 12)
    dy = rng.integers(dy_fmt.min_int, dy_fmt.max_int + 1, 5000)
    lo = 0 if backward is sigmoid_backward else -(1 << y_fmt.frac)
    y = rng.integers(lo, (1 << y_fmt.frac) + 1, 5000)
    got = dequantize(backward(dy, y, dy_fmt.frac, y_fmt, out_fmt), out_fmt)
    dyf = dequantize(dy, dy_fmt)
    want = dyf * local(dequantize(y, y_fmt))
    bound = np.abs(dyf) * y_fmt.step / 2 + out_fmt.step / 2
    assert (np.abs(got - want) <= bound + 1e-12).all()


def test_eltwise_dispatch_and_saturation():
    in_fmt, out_fmt, y_fmt = Format(24, 8), Format(8, 4), Format(12, 10)
    x = np.array([-(1 << 20), -300, -1, 0, 1, 300, 1 << 20])
    aux = np.array([-5, 700, 0, 1, 1024, 3, -1])
    assert list(eltwise(EltwiseOp.REQUANT, x, in_fmt=in_fmt, out_fmt=out_fmt)) == \
        [-128, -19, 0, 0, 0, 19, 127]     # 300 / 2**8 = 18.75 / 2**4
    assert (eltwise(EltwiseOp.SIGMOID, x, in_fmt=in_fmt, out_fmt=out_fmt)
            == sigmoid_forward(x, in_fmt, out_fmt)).all()
    assert (eltwise(EltwiseOp.TANH, x, in_fmt=in_fmt, out_fmt=out_fmt)
            == tanh_forward(x, in_fmt, out_fmt)).all()
    assert (eltwise(EltwiseOp.SIGMOID_BWD, x, in_fmt=in_fmt, out_fmt=out_fmt, aux=aux,
                    aux_fmt=y_fmt) == sigmoid_backward(x, aux, 8, y_fmt, out_fmt)).all()
    assert (eltwise(EltwiseOp.TANH_BWD, x, in_fmt=in_fmt, out_fmt=out_fmt, aux=aux,
                    aux_fmt=y_fmt) == tanh_backward(x, aux, 8, y_fmt, out_fmt)).all()
    with pytest.raises(ValueError, match="Bias frac"):
        bias_add(x, in_fmt, x, Format(8, 9))
