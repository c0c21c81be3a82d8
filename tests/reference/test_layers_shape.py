import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from fecaffe_hw.reference.blob import Blob
from reference.gradient_checker import blob, check_gradient, make_layer


def run(layer, bottom, top):
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)


@pytest.mark.parametrize("params,want", [
    ("", (2, 60)),
    ("axis: 2", (2, 3, 20)),
    ("axis: 1 end_axis: 2", (2, 12, 5)),
    ("axis: -2", (2, 3, 20)),
    ("axis: 0 end_axis: -2", (24, 5)),
])
def test_flatten(params, want):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    text = f'type: "Flatten" flatten_param {{ {params} }}'
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    run(make_layer(text), bottom, top)
    assert top[0].shape == want
    np.testing.assert_array_equal(top[0].data.ravel(), x.ravel())
    check_gradient(make_layer(text), [blob(x)], [blob(np.zeros(1))], threshold=1e-9)


def test_flatten_bad_axes():
    layer = make_layer('name: "flat" type: "Flatten" flatten_param { axis: 2 end_axis: 1 }')
    with pytest.raises(NetError, match="end_axis 1 comes before axis 2"):
        run(layer, [blob(np.zeros((2, 3, 4)))], [blob(np.zeros(1))])
    layer = make_layer('name: "flat" type: "Flatten" flatten_param { axis: 5 }')
    with pytest.raises(NetError, match="axis 5 out of range"):
        run(layer, [blob(np.zeros((2, 3, 4)))], [blob(np.zeros(1))])


@pytest.mark.parametrize("params,axis", [("", 1), ("axis: 0", 0), ("axis: -1", 2),
                                         ("concat_dim: 0", 0)])
def test_concat(params, axis):
    rng = np.random.default_rng(axis)
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for i, s in enumerate(shapes):
        s[axis] = i + 1
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    text = f'type: "Concat" concat_param {{ {params} }}'
    bottom, top = [blob(x) for x in xs], [blob(np.zeros(1))]
    run(make_layer(text), bottom, top)
    np.testing.assert_array_equal(top[0].data, np.concatenate(xs, axis=axis))
    check_gradient(make_layer(text), [blob(x) for x in xs], [blob(np.zeros(1))],
                   threshold=1e-9, check_bottom=[0, 2])


def test_concat_shape_mismatch():
    layer = make_layer('name: "cat" type: "Concat"')
    with pytest.raises(NetError, match='layer "cat": bottom shapes .* differ off the concat'):
        run(layer, [blob(np.zeros((2, 3, 4))), blob(np.zeros((2, 3, 5)))], [blob(np.zeros(1))])


def test_split():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    bottom, top = [blob(x)], [blob(np.zeros(1)) for _ in range(3)]
    layer = make_layer('type: "Split"')
    run(layer, bottom, top)
    for t in top:
        np.testing.assert_array_equal(t.data, x)
    diffs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in top]
    for t, d in zip(top, diffs):
        t.diff[...] = d
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, sum(diffs), rtol=1e-6)
    check_gradient(make_layer('type: "Split"'), [blob(x)], [blob(np.zeros(1)) for _ in range(3)],
                   threshold=1e-9)


def test_input_shapes():
    layer = make_layer('type: "Input" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } '
                       'shape { dim: 64 } }')
    top = [Blob(), Blob()]
    run(layer, [], top)
    assert [t.shape for t in top] == [(64, 1, 28, 28), (64,)]
    layer = make_layer('type: "Input" input_param { shape { dim: 2 dim: 3 } }')
    top = [Blob(), Blob()]
    run(layer, [], top)
    assert [t.shape for t in top] == [(2, 3), (2, 3)]
    layer = make_layer('name: "data" type: "Input" input_param { shape { dim: 2 } '
                       'shape { dim: 3 } }')
    with pytest.raises(NetError, match='layer "data": input_param gives 2 shapes for 3 tops'):
        run(layer, [], [Blob(), Blob(), Blob()])
