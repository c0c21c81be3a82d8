import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from reference.gradient_checker import blob, check_gradient, make_layer


def run(layer, bottom, top):
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)


def inputs(rng, n, shape=(2, 3, 4)):
    # Values apart from each other, so MAX has no ties within a step.
    values = (rng.permutation(n * np.prod(shape)) - 30) * 0.05 + 0.01
    return [values[i::n].reshape(shape) for i in range(n)]


@pytest.mark.parametrize("text,n,fn", [
    ('operation: SUM', 3, lambda xs: xs[0] + xs[1] + xs[2]),
    ('operation: SUM coeff: 1 coeff: -0.5', 2, lambda xs: xs[0] - 0.5 * xs[1]),
    ('operation: PROD', 3, lambda xs: xs[0] * xs[1] * xs[2]),
    ('operation: PROD stable_prod_grad: false', 2, lambda xs: xs[0] * xs[1]),
    ('operation: MAX', 3, lambda xs: np.maximum(np.maximum(xs[0], xs[1]), xs[2])),
])
def test_forward_and_gradients(text, n, fn):
    rng = np.random.default_rng(n)
    xs = inputs(rng, n)
    layer_text = f'type: "Eltwise" eltwise_param {{ {text} }}'
    bottom, top = [blob(x) for x in xs], [blob(np.zeros(1))]
    run(make_layer(layer_text), bottom, top)
    np.testing.assert_allclose(top[0].data, fn([x.astype(np.float32) for x in xs]), rtol=1e-6)
    check_gradient(make_layer(layer_text), [blob(x) for x in xs], [blob(np.zeros(1))],
                   threshold=1e-6, max_checks=None)


def test_max_ties_follow_caffe():
    # Between bottoms 0 and 1 a tie goes to 1; a later bottom must be strictly greater.
    layer = make_layer('type: "Eltwise" eltwise_param { operation: MAX }')
    bottom = [blob([1.0, 2.0, 5.0]), blob([1.0, 3.0, 4.0]), blob([1.0, 3.0, 5.0])]
    top = [blob(np.zeros(1))]
    run(layer, bottom, top)
    np.testing.assert_array_equal(layer.mask, [1, 1, 0])
    top[0].diff[...] = [10, 20, 30]
    layer.backward(top, [True] * 3, bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 0, 30])
    np.testing.assert_array_equal(bottom[1].diff, [10, 20, 0])
    np.testing.assert_array_equal(bottom[2].diff, [0, 0, 0])


@pytest.mark.parametrize("text,shapes,message", [
    ("operation: PROD coeff: 1 coeff: 2", [(2,), (2,)], "only to SUM"),
    ("coeff: 1", [(2,), (2,)], "1 coefficients for 2 bottoms"),
    ("", [(2,), (3,)], "share a shape"),
])
def test_bad_parameters(text, shapes, message):
    layer = make_layer(f'name: "sum" type: "Eltwise" eltwise_param {{ {text} }}')
    with pytest.raises(NetError, match=message):
        run(layer, [blob(np.zeros(s)) for s in shapes], [blob(np.zeros(1))])
