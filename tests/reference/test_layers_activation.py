import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from fecaffe_hw.reference.layer import TEST, TRAIN
from reference.gradient_checker import blob, check_gradient, make_layer

NEURONS = {
    'type: "ReLU"': lambda x: np.maximum(x, 0),
    'type: "ReLU" relu_param { negative_slope: 0.2 }': lambda x: np.where(x > 0, x, 0.2 * x),
    'type: "Sigmoid"': lambda x: 1 / (1 + np.exp(-x)),
    'type: "TanH"': np.tanh,
}


def away_from_zero(rng, shape):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.5, x)


def run(layer, bottom, top):
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)


@pytest.mark.parametrize("text", NEURONS)
def test_forward(text):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 4, 5)) * 4).astype(np.float32)
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    run(make_layer(text), bottom, top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, NEURONS[text](x.astype(np.float64)),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("text", NEURONS)
@pytest.mark.parametrize("in_place", [False, True])
def test_gradients(text, in_place):
    rng = np.random.default_rng(1)
    bottom = [blob(away_from_zero(rng, (2, 3, 3)))]
    top = bottom if in_place else [blob(np.zeros(1))]
    check_gradient(make_layer(text), bottom, top, threshold=1e-6, max_checks=None,
                   kink=0.0, kink_range=0.01)


@pytest.mark.parametrize("text", NEURONS)
def test_in_place_matches_out_of_place(text):
    rng = np.random.default_rng(2)
    x = away_from_zero(rng, (3, 7)).astype(np.float32)
    dy = rng.standard_normal((3, 7)).astype(np.float32)
    results = []
    for in_place in (False, True):
        bottom = [blob(x)]
        top = bottom if in_place else [blob(np.zeros(1))]
        layer = make_layer(text)
        run(layer, bottom, top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        results.append((y, bottom[0].diff.copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def dropout(ratio, phase=TRAIN, seed=0):
    return make_layer(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}',
                      phase=phase, seed=seed)


def test_dropout_train_mask_statistics_and_scale():
    x = np.ones((100, 1000), np.float32)
    layer = dropout(0.3)
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    run(layer, bottom, top)
    kept = top[0].data != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(top[0].data[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(kept, layer.mask)
    # A fresh mask every forward pass.
    first = layer.mask.copy()
    layer.forward(bottom, top)
    assert (first != layer.mask).any()


def test_dropout_seeded_masks_reproduce():
    masks = []
    for _ in range(2):
        layer = dropout(0.5, seed=7)
        run(layer, [blob(np.ones((10, 10)))], [blob(np.zeros(1))])
        masks.append(layer.mask)
    np.testing.assert_array_equal(*masks)


def test_dropout_test_phase_is_identity():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    layer = dropout(0.5, phase=TEST)
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    run(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, x)
    top[0].diff[...] = x
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, x)


@pytest.mark.parametrize("in_place", [False, True])
def test_dropout_gradients_with_fixed_mask(in_place):
    rng = np.random.default_rng(4)
    layer = dropout(0.4)
    bottom = [blob(rng.standard_normal((3, 8)))]
    top = bottom if in_place else [blob(np.zeros(1))]

    def same_mask():
        layer.rng = np.random.default_rng(11)

    check_gradient(layer, bottom, top, before_forward=same_mask, threshold=1e-6, max_checks=None)
    assert 0 < layer.mask.sum() < layer.mask.size


def test_dropout_bad_ratio():
    with pytest.raises(NetError, match="dropout_ratio 1"):
        dropout(1.0).setup([blob(np.zeros(3))], [blob(np.zeros(1))])
