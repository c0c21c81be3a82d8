import numpy as np
import pytest
from google.protobuf import text_format

from fecaffe_hw.caffe import caffe_pb2
from fecaffe_hw.errors import NetError
from fecaffe_hw.reference.fillers import fill

SHAPE = (64, 32, 5, 5)   # fan_in 800, fan_out 1600


def filler(text):
    return text_format.Parse(text, caffe_pb2.FillerParameter())


def draw(text, shape=SHAPE, seed=0):
    return fill(filler(text), shape, np.random.default_rng(seed))


def test_default_is_constant_zero():
    data = draw("")
    assert data.dtype == np.float32 and data.shape == SHAPE
    assert not data.any()


def test_constant():
    np.testing.assert_array_equal(draw('type: "constant" value: 0.25'), np.full(SHAPE, 0.25))


def test_uniform():
    data = draw('type: "uniform" min: -2 max: 3')
    assert data.min() >= -2 and data.max() <= 3
    assert abs(data.mean() - 0.5) < 0.05
    assert abs(data.std() - 5 / np.sqrt(12)) < 0.03


def test_gaussian():
    data = draw('type: "gaussian" mean: 1.5 std: 0.2')
    assert abs(data.mean() - 1.5) < 0.005
    assert abs(data.std() - 0.2) < 0.005


def test_sparse_gaussian_keeps_sparse_over_num_outputs():
    data = draw('type: "gaussian" std: 1 sparse: 16')
    assert abs((data != 0).mean() - 16 / 64) < 0.01


@pytest.mark.parametrize("norm,n", [("FAN_IN", 800), ("FAN_OUT", 1600), ("AVERAGE", 1200)])
def test_xavier(norm, n):
    data = draw(f'type: "xavier" variance_norm: {norm}')
    limit = np.sqrt(3 / n)
    assert np.abs(data).max() <= limit
    assert abs(data.std() - limit / np.sqrt(3)) < 0.01 * limit


@pytest.mark.parametrize("norm,n", [("FAN_IN", 800), ("FAN_OUT", 1600), ("AVERAGE", 1200)])
def test_msra(norm, n):
    data = draw(f'type: "msra" variance_norm: {norm}')
    assert abs(data.mean()) < 0.01 * np.sqrt(2 / n)
    assert abs(data.std() - np.sqrt(2 / n)) < 0.01 * np.sqrt(2 / n)


def test_xavier_default_is_fan_in_for_inner_product_weights():
    data = draw('type: "xavier"', shape=(500, 800))
    assert abs(data.std() - np.sqrt(1 / 800)) < 0.01 * np.sqrt(1 / 800)


def test_positive_unitball():
    data = draw('type: "positive_unitball"', shape=(10, 3, 4))
    assert (data >= 0).all()
    np.testing.assert_allclose(data.reshape(10, -1).sum(axis=1), 1, rtol=1e-5)


def test_bilinear_is_the_upsampling_kernel():
    data = draw('type: "bilinear"', shape=(2, 1, 4, 4))
    axis = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(data[1, 0], np.outer(axis, axis))


@pytest.mark.parametrize("text", ['type: "uniform"', 'type: "gaussian"', 'type: "xavier"',
                                  'type: "msra"', 'type: "gaussian" sparse: 3'])
def test_seeded_reproducibility(text):
    np.testing.assert_array_equal(draw(text, seed=3), draw(text, seed=3))
    assert (draw(text, seed=3) != draw(text, seed=4)).any()


@pytest.mark.parametrize("text,message", [
    ('type: "orthogonal"', "unknown filler type 'orthogonal'"),
    ('type: "uniform" min: 2 max: 1', "min 2.0 exceeds max 1.0"),
])
def test_errors_name_the_layer(text, message):
    with pytest.raises(NetError, match=f'layer "conv1": .*{message}'):
        fill(filler(text), (2, 2), np.random.default_rng(0), layer="conv1")
