import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from reference.gradient_checker import blob, check_gradient, make_layer


def ip_text(n, axis=1, transpose=False, bias=True):
    return (f'type: "InnerProduct" inner_product_param {{ num_output: {n} axis: {axis} '
            f'transpose: {str(transpose).lower()} bias_term: {str(bias).lower()} '
            'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } }')


@pytest.mark.parametrize("axis,transpose,bias", [
    (1, False, True), (1, True, True), (2, False, False), (-1, True, False), (0, False, True),
])
def test_forward_and_gradients(axis, transpose, bias):
    rng = np.random.default_rng(abs(axis) * 7 + transpose)
    shape = (3, 4, 2, 3)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = make_layer(ip_text(5, axis, transpose, bias))
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    a = axis % 4
    m, k = int(np.prod(shape[:a])), int(np.prod(shape[a:]))
    w = layer.blobs[0].data.astype(np.float64)
    w_nk = w.T if transpose else w
    assert w.shape == ((k, 5) if transpose else (5, k))
    want = np.einsum("mk,nk->mn", x.reshape(m, k).astype(np.float64), w_nk)
    if bias:
        want += layer.blobs[1].data
    assert top[0].shape == shape[:a] + (5,)
    np.testing.assert_allclose(top[0].data.reshape(m, 5), want, rtol=1e-5, atol=1e-5)
    assert layer.macs == m * k * 5
    check_gradient(make_layer(ip_text(5, axis, transpose, bias)), [blob(x)],
                   [blob(np.zeros(1))], threshold=1e-6)


def test_parameter_gradients_accumulate():
    rng = np.random.default_rng(1)
    layer = make_layer(ip_text(3))
    bottom, top = [blob(rng.standard_normal((4, 6)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    layer.backward(top, [True], bottom)
    once = [p.diff.copy() for p in layer.blobs]
    layer.backward(top, [True], bottom)
    for p, d in zip(layer.blobs, once):
        np.testing.assert_allclose(p.diff, 2 * d, rtol=1e-6)
    np.testing.assert_allclose(once[1], top[0].diff.sum(axis=0), rtol=1e-5)


def test_input_size_change_is_an_error():
    layer = make_layer('name: "ip1" ' + ip_text(3))
    bottom, top = [blob(np.zeros((2, 6)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    bottom[0].reshape(2, 7)
    with pytest.raises(NetError, match='layer "ip1": .*7 features.*expect 6'):
        layer.reshape(bottom, top)


def test_zero_outputs_is_an_error():
    layer = make_layer('name: "ip2" type: "InnerProduct" inner_product_param { num_output: 0 }')
    with pytest.raises(NetError, match="num_output 0"):
        layer.setup([blob(np.zeros((2, 6)))], [blob(np.zeros(1))])


def test_param_propagate_down_off_leaves_param_diffs():
    rng = np.random.default_rng(2)
    layer = make_layer(ip_text(3))
    bottom, top = [blob(rng.standard_normal((4, 6)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    layer.param_propagate_down = [False, True]
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    layer.backward(top, [True], bottom)
    assert not layer.blobs[0].diff.any()
    assert layer.blobs[1].diff.any()
