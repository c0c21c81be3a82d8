import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from reference.gradient_checker import blob, check_gradient, make_layer


def lrn_reference(x, size, alpha, beta, k):
    x = x.astype(np.float64)
    c = x.shape[1]
    half = (size - 1) // 2
    out = np.empty_like(x)
    for ch in range(c):
        window = x[:, max(0, ch - half):min(c, ch + half + 1)]
        scale = k + alpha / size * (window ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] * scale ** -beta
    return out


@pytest.mark.parametrize("size,alpha,beta,k,channels", [
    (5, 1.0, 0.75, 1.0, 7),      # Caffe's defaults
    (3, 2.0, 0.5, 2.0, 4),
    (1, 0.5, 1.5, 1.0, 3),
    (5, 1e-4, 0.75, 1.0, 3),     # AlexNet's, window wider than the channels
])
def test_forward_and_gradients(size, alpha, beta, k, channels):
    rng = np.random.default_rng(size + channels)
    x = rng.standard_normal((2, channels, 3, 2)).astype(np.float32)
    text = (f'type: "LRN" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} '
            f'k: {k} }}')
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    layer = make_layer(text)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, lrn_reference(x, size, alpha, beta, k),
                               rtol=2e-5, atol=1e-6)
    check_gradient(make_layer(text), [blob(x)], [blob(np.zeros(1))], threshold=1e-6)


def test_default_parameters_match_caffe():
    layer = make_layer('type: "LRN"')
    layer.setup([blob(np.zeros((1, 2, 1, 1)))], [blob(np.zeros(1))])
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, 1.0, 0.75, 1.0)


@pytest.mark.parametrize("text,message", [
    ("norm_region: WITHIN_CHANNEL", "norm_region WITHIN_CHANNEL is not supported"),
    ("local_size: 4", "local_size 4 must be odd"),
])
def test_unsupported(text, message):
    layer = make_layer(f'name: "norm1" type: "LRN" lrn_param {{ {text} }}')
    with pytest.raises(NetError, match=f'layer "norm1": LRN {message}'):
        layer.setup([blob(np.zeros((1, 2, 3, 3)))], [blob(np.zeros(1))])
