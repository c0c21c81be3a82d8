"""Caffe's GradientChecker redone in NumPy, plus helpers to build test layers.

:func:`check_gradient` compares a layer's backward pass with central finite
differences of the scalar objective ``sum_k <w_k, top_k>`` (fixed random
``w_k``), for every (or a random subset of) bottom and parameter elements.
By default every blob is cast to float64 first, so the differences are
accurate and the threshold can be tight; Caffe's own float32 setting is
``float64=False, step=1e-2, threshold=1e-2``.
"""

import numpy as np
from google.protobuf import text_format

from fecaffe_hw.caffe import caffe_pb2
from fecaffe_hw.reference.blob import Blob
from fecaffe_hw.reference.layer import TRAIN, layer_class

__all__ = ["make_layer", "blob", "check_gradient"]


def make_layer(text, *, phase=TRAIN, seed=0):
    """A layer built from ``LayerParameter`` text, e.g. ``'type: "ReLU"'``."""
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    if not param.name:
        param.name = param.type.lower()
    return layer_class(param.type)(param, phase, np.random.default_rng(seed))


def blob(array):
    """A :class:`Blob` holding ``array`` (as float32)."""
    array = np.asarray(array, np.float32)
    b = Blob(array.shape)
    b.data[...] = array
    return b


def _unique(blobs):
    seen, out = set(), []
    for b in blobs:
        if id(b) not in seen:
            seen.add(id(b))
            out.append(b)
    return out


def check_gradient(layer, bottom, top, *, check_bottom=None, check_params=True,
                   step=1e-3, threshold=1e-3, seed=0, max_checks=60, kink=0.0,
                   kink_range=-1.0, before_forward=None, float64=True):
    """Set up ``layer`` on ``bottom``/``top`` and check its gradients numerically.

    ``check_bottom``: indices of bottoms to check (default all). An element
    fails when ``|analytic - numeric| > threshold * max(|analytic|, |numeric|, 1)``
    (Caffe's rule). Inputs within ``kink_range`` of ``kink`` are skipped, as in
    Caffe, for non-differentiable points. ``before_forward()`` runs before every
    forward pass (e.g. to reseed a dropout mask). Raises ``AssertionError``
    listing the worst mismatches. Returns the number of elements compared.
    """
    rng = np.random.default_rng(seed)
    if check_bottom is None:
        check_bottom = range(len(bottom))
    check_bottom = set(check_bottom)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    everything = _unique(list(bottom) + list(top) + list(layer.blobs))
    if float64:
        for b in everything:
            b.data = b.data.astype(np.float64)
            b.diff = b.diff.astype(np.float64)
    saved = [b.data.copy() for b in bottom]
    weights = [rng.standard_normal(t.shape) for t in top]

    def forward():
        for b, x in zip(bottom, saved):
            b.data[...] = x
        if before_forward is not None:
            before_forward()
        layer.forward(bottom, top)
        return sum(float((w * t.data).sum()) for w, t in zip(weights, top))

    forward()
    for p in layer.blobs:
        p.diff[...] = 0
    for w, t in zip(weights, top):
        t.diff[...] = w
    layer.backward(top, [i in check_bottom for i in range(len(bottom))], bottom)

    targets = []  # (label, array perturbed before each forward, analytic gradient)
    for i in sorted(check_bottom):
        targets.append((f"bottom[{i}]", saved[i], bottom[i].diff.copy()))
    if check_params:
        for j, p in enumerate(layer.blobs):
            targets.append((f"blobs[{j}]", p.data, p.diff.copy()))

    failures, compared = [], 0
    for label, array, analytic in targets:
        flat = array.reshape(-1)
        indices = np.arange(flat.size)
        if max_checks is not None and flat.size > max_checks:
            indices = rng.choice(flat.size, max_checks, replace=False)
        for k in indices:
            original = flat[k]
            if abs(original - kink) < kink_range:
                continue
            flat[k] = original + step
            plus = forward()
            flat[k] = original - step
            minus = forward()
            flat[k] = original
            numeric = (plus - minus) / (2 * step)
            got = float(analytic.reshape(-1)[k])
            scale = max(abs(got), abs(numeric), 1.0)
            compared += 1
            if abs(got - numeric) > threshold * scale:
                failures.append((abs(got - numeric) / scale, label, int(k), got, numeric))
    forward()
    if failures:
        failures.sort(reverse=True)
        lines = [f"{label}[{k}]: analytic {got:.6g} vs numeric {num:.6g}"
                 for _, label, k, got, num in failures[:8]]
        raise AssertionError(f"{layer.type} {layer.name!r}: {len(failures)} of {compared} "
                             "gradients disagree:\n  " + "\n  ".join(lines))
    assert compared > 0, "no element was compared"
    return compared
