import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from reference.gradient_checker import blob, check_gradient, make_layer


def run(layer, bottom, top):
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)


def softmax64(x, axis):
    e = np.exp(x.astype(np.float64))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_softmax_forward_and_gradients(axis):
    rng = np.random.default_rng(axis + 5)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32) * 3
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    text = f'type: "Softmax" softmax_param {{ axis: {axis} }}'
    run(make_layer(text), bottom, top)
    np.testing.assert_allclose(top[0].data, softmax64(x, axis), rtol=1e-5, atol=1e-7)
    check_gradient(make_layer(text), [blob(x)], [blob(np.zeros(1))], threshold=1e-6)


def softmax_loss_reference(x, labels, ignore, mode):
    """The loss by its definition, one position at a time."""
    p = softmax64(x, 1)
    n, c = x.shape[:2]
    p = p.reshape(n, c, -1)
    labels = labels.reshape(n, -1)
    total, valid = 0.0, 0
    for i in range(n):
        for j in range(p.shape[2]):
            if labels[i, j] == ignore:
                continue
            total -= np.log(p[i, int(labels[i, j]), j])
            valid += 1
    normaliser = {"FULL": labels.size, "VALID": valid, "BATCH_SIZE": n, "NONE": 1}[mode]
    return total / max(1, normaliser)


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_loss_forward(mode, ignore):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 2, 3)).astype(np.float32)
    labels = rng.integers(0, 5, (4, 1, 2, 3)).astype(np.float32)
    extra = f"ignore_label: {ignore}" if ignore is not None else ""
    layer = make_layer(f'type: "SoftmaxWithLoss" loss_param {{ normalization: {mode} {extra} }}')
    bottom, top = [blob(x), blob(labels)], [blob(np.zeros(1)), blob(np.zeros(1))]
    run(layer, bottom, top)
    assert top[0].shape == ()
    assert layer.is_loss
    want = softmax_loss_reference(x, labels, ignore, mode)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5)
    np.testing.assert_allclose(top[1].data, softmax64(x, 1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("normalize,mode", [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_softmax_loss_legacy_normalize(normalize, mode):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 5)).astype(np.float32)
    layer = make_layer('type: "SoftmaxWithLoss" '
                       f'loss_param {{ normalize: {normalize} ignore_label: 1 }}')
    bottom, top = [blob(x), blob(labels)], [blob(np.zeros(1))]
    run(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, softmax_loss_reference(x, labels, 1, mode), rtol=1e-5)


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_softmax_loss_gradients(mode):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 2, 2))
    labels = rng.integers(0, 4, (3, 2, 2))
    labels[0, 0, 0] = 3  # make sure the ignored label occurs
    layer = make_layer(f'type: "SoftmaxWithLoss" loss_param {{ normalization: {mode} '
                       'ignore_label: 3 }')
    check_gradient(layer, [blob(x), blob(labels)], [blob(np.zeros(1))], check_bottom=[0],
                   threshold=1e-6, max_checks=None)


def test_softmax_loss_other_axis_gradients():
    rng = np.random.default_rng(6)
    layer = make_layer('type: "SoftmaxWithLoss" softmax_param { axis: 2 }')
    check_gradient(layer, [blob(rng.standard_normal((2, 3, 4))), blob(rng.integers(0, 4, (2, 3)))],
                   [blob(np.zeros(1))], check_bottom=[0], threshold=1e-6)


def test_softmax_loss_rejects_bad_labels():
    layer = make_layer('name: "loss" type: "SoftmaxWithLoss"')
    bottom, top = [blob(np.zeros((2, 3))), blob([1, 3])], [blob(np.zeros(1))]
    with pytest.raises(NetError, match='layer "loss": label 3 out of range for 3 classes'):
        run(layer, bottom, top)
    layer = make_layer('name: "loss" type: "SoftmaxWithLoss"')
    with pytest.raises(NetError, match="label count 3 must be 2"):
        run(layer, [blob(np.zeros((2, 3))), blob([1, 2, 0])], top)


def accuracy_reference(x, labels, k, ignore):
    """Caffe's loop: correct when fewer than k other classes score >= the true one."""
    n, c = x.shape[:2]
    x = x.reshape(n, c, -1)
    labels = labels.reshape(n, -1)
    right, count = 0, 0
    per_class_right, per_class_count = np.zeros(c), np.zeros(c)
    for i in range(n):
        for j in range(x.shape[2]):
            label = int(labels[i, j])
            if label == ignore:
                continue
            better = sum(1 for q in range(c) if q != label and x[i, q, j] >= x[i, label, j])
            per_class_count[label] += 1
            if better < k:
                right += 1
                per_class_right[label] += 1
            count += 1
    per_class = np.divide(per_class_right, per_class_count, out=np.zeros(c),
                          where=per_class_count > 0)
    return (right / count if count else 0.0), per_class


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("ignore", [None, 0])
def test_accuracy(k, ignore):
    rng = np.random.default_rng(k)
    # Integer scores: plenty of ties, which Caffe counts against the label.
    x = rng.integers(0, 3, (20, 5, 3)).astype(np.float32)
    labels = rng.integers(0, 5, (20, 3)).astype(np.float32)
    extra = f"ignore_label: {ignore}" if ignore is not None else ""
    layer = make_layer(f'type: "Accuracy" accuracy_param {{ top_k: {k} {extra} }}')
    bottom, top = [blob(x), blob(labels)], [blob(np.zeros(1)), blob(np.zeros(1))]
    run(layer, bottom, top)
    want, per_class = accuracy_reference(x, labels, k, ignore)
    assert top[0].shape == ()
    np.testing.assert_allclose(top[0].data, want, rtol=1e-6)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-6)


def test_accuracy_tie_counts_against_the_label():
    layer = make_layer('type: "Accuracy"')
    bottom, top = [blob([[1, 1, 0], [0, 2, 1]]), blob([0, 1])], [blob(np.zeros(1))]
    run(layer, bottom, top)
    assert top[0].data == 0.5


def test_accuracy_has_no_backward_and_checks_top_k():
    layer = make_layer('name: "acc" type: "Accuracy" accuracy_param { top_k: 4 }')
    with pytest.raises(NetError, match="top_k 4"):
        run(layer, [blob(np.zeros((2, 3))), blob([0, 1])], [blob(np.zeros(1))])
    layer = make_layer('name: "acc" type: "Accuracy"')
    bottom, top = [blob(np.zeros((2, 3))), blob([0, 1])], [blob(np.zeros(1))]
    run(layer, bottom, top)
    with pytest.raises(NetError, match="no backward"):
        layer.backward(top, [True, False], bottom)
