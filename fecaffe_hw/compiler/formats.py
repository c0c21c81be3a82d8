"""Per-blob fixed-point formats, calibrated on the float reference.

A batch (or several) runs through :class:`fecaffe_hw.reference.net.Net`
layer by layer, forward and, for training, backward; the largest magnitude
seen of every blob's data and diff and of every parameter blob's values and
gradients is recorded after each layer (so an in-place blob, such as a ReLU's,
is covered before and after the layer that overwrites it). The format of a
quantity with largest magnitude ``m`` keeps ``ceil(log2(m))`` integer bits,
plus ``margin_bits`` of headroom, in ``width`` bits; a quantity never seen
nonzero gets ``frac = width - 1 - margin_bits`` (it holds values below
``2**margin_bits``). Labels (integer class indices) get ``frac = 0``.

Keys: blob names for activations, ``"<layer>/<i>"`` for parameter ``i`` of a
layer (``conv1/0`` is conv1's weight, ``conv1/1`` its bias).
"""

import math

import numpy as np

from ..fixedpoint import Format

__all__ = ["format_for", "calibrate", "synthetic_batch", "label_blobs", "param_key",
           "formats_to_json", "formats_from_json"]


def param_key(layer, index):
    return f"{layer}/{index}"


def format_for(max_abs, width, margin_bits=1):
    """The :class:`Format` of ``width`` bits with the most fractional bits that
    holds ``max_abs * 2**margin_bits``."""
    if isinstance(width, bool) or not isinstance(width, int) or not 2 <= width <= 64:
        raise ValueError(f"Data width must be an integer in [2, 64], not {width!r}")
    if isinstance(margin_bits, bool) or not isinstance(margin_bits, int) or margin_bits < 0:
        raise ValueError(f"Margin must be a non-negative number of bits, not {margin_bits!r}")
    max_abs = float(max_abs)
    if not math.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"Largest magnitude must be finite and non-negative, not {max_abs!r}")
    if max_abs == 0:
        return Format(width, width - 1 - margin_bits)
    target = max_abs * 2.0 ** margin_bits
    frac = width - 1 - math.floor(math.log2(target)) - 1
    frac = max(-256, min(256, frac))
    # log2 rounding can be off by one at powers of two: settle it exactly.
    while frac > -256 and Format(width, frac).max_value < target:
        frac -= 1
    while frac < 256 and Format(width, frac + 1).max_value >= target:
        frac += 1
    return Format(width, frac)


def label_blobs(net):
    """Names of the input blobs that hold labels: bottom 1 of a loss or Accuracy layer."""
    labels = set()
    for info in net.layer_infos():
        if info.type in ("SoftmaxWithLoss", "Accuracy") and len(info.bottoms) > 1:
            labels.add(_source_blob(net, info.bottoms[1]))
    return labels


def _source_blob(net, name):
    # Follow inserted Split layers back to the blob the input layer wrote.
    for info in net.layer_infos():
        if info.type == "Split" and name in info.tops:
            return _source_blob(net, info.bottoms[0])
    return name


def _classes(net, label):
    for info in net.layer_infos():
        if info.type in ("SoftmaxWithLoss", "Accuracy") and len(info.bottoms) > 1 \
                and _source_blob(net, info.bottoms[1]) == label:
            return net.blobs[info.bottoms[0]].shape[1]
    return 2


def synthetic_batch(net, seed=0):
    """A batch for calibration when no data is given: inputs uniform in
    [0, 1) (MNIST's range after Caffe's 1/256 scale), labels uniform over the
    classes of the layer that reads them."""
    rng = np.random.default_rng(seed)
    labels = label_blobs(net)
    batch = {}
    for name in net.inputs:
        shape = net.blobs[name].shape
        if name in labels:
            batch[name] = rng.integers(0, _classes(net, name), shape).astype(np.float32)
        else:
            batch[name] = rng.random(shape, dtype=np.float32)
    return batch


def _update(ranges, key, array):
    if array is None or array.size == 0:
        return
    peak = float(np.max(np.abs(array)))
    if not math.isfinite(peak):
        raise ValueError(f"calibration saw a non-finite value in {key}")
    ranges[key] = max(ranges.get(key, 0.0), peak)


def observe(net, batches, *, training=True):
    """``(data_ranges, diff_ranges)``: largest magnitudes seen per key."""
    data, diff = {}, {}
    names = net.layer_names
    for batch in batches:
        net.clear_param_diffs()
        for i, name in enumerate(names):
            if i == 0:
                net.forward(end=name, **batch)
            else:
                net.forward(start=name, end=name)
            for blob in net.top_names[name]:
                _update(data, blob, net.blobs[blob].data)
            for blob in net.bottom_names[name]:
                _update(data, blob, net.blobs[blob].data)
        for layer, params in net.params.items():
            for j, p in enumerate(params):
                _update(data, param_key(layer, j), p.data)
        if not training:
            continue
        for name in reversed(names):
            for blob in net.top_names[name]:
                _update(diff, blob, net.blobs[blob].diff)
            net.backward(start=name, end=name)
            for blob in net.bottom_names[name]:
                _update(diff, blob, net.blobs[blob].diff)
        for layer, params in net.params.items():
            for j, p in enumerate(params):
                _update(diff, param_key(layer, j), p.diff)
    return data, diff


def calibrate(net, batches=None, *, width=16, margin_bits=1, training=True, overrides=None):
    """``{key: {"data": Format, "diff": Format or None}}`` for every blob and parameter.

    ``batches``: an iterable of ``{input name: array}`` (default: one
    :func:`synthetic_batch`). ``overrides``: ``{key: Format}`` (sets the data
    format) or ``{key: {"data": Format, "diff": Format}}``; a key the net does
    not have is a ValueError naming it. ``diff`` is None for inference.
    """
    if batches is None:
        batches = [synthetic_batch(net)]
    data, diff = observe(net, batches, training=training)
    labels = label_blobs(net)
    keys = list(net.blobs) + [param_key(layer, j) for layer, params in net.params.items()
                              for j in range(len(params))]
    formats = {}
    for key in keys:
        if key in labels:
            formats[key] = {"data": Format(width, 0), "diff": None}
            continue
        formats[key] = {
            "data": format_for(data.get(key, 0.0), width, margin_bits),
            "diff": format_for(diff.get(key, 0.0), width, margin_bits) if training else None,
        }
    for key, value in (overrides or {}).items():
        if key not in formats:
            raise ValueError(f"Format override for {key!r}: the net has no such blob or "
                             f"parameter (blobs: {', '.join(net.blobs)})")
        if isinstance(value, Format):
            value = {"data": value}
        for part, fmt in value.items():
            if part not in ("data", "diff") or not isinstance(fmt, Format):
                raise ValueError(f"Format override for {key!r}: expected a Format or "
                                 f"{{'data': Format, 'diff': Format}}, not {value!r}")
            formats[key][part] = fmt
    return formats


def formats_to_json(formats):
    return {key: {part: None if fmt is None else [fmt.bits, fmt.frac]
                  for part, fmt in value.items()} for key, value in formats.items()}


def formats_from_json(obj):
    return {key: {part: None if fmt is None else Format(*fmt) for part, fmt in value.items()}
            for key, value in obj.items()}
