"""Format calibration covers what the float reference produces."""

from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st

from fecaffe_hw.compiler.formats import calibrate, format_for, param_key
from fecaffe_hw.fixedpoint import Format
from fecaffe_hw.reference.layer import TRAIN
from fecaffe_hw.reference.net import Net

NETS = Path(__file__).parent / "nets"


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-30, 1e30), st.integers(4, 32), st.integers(0, 3))
def test_format_for_is_the_tightest_that_holds(max_abs, width, margin):
    fmt = format_for(max_abs, width, margin)
    target = max_abs * 2.0 ** margin
    assert fmt.bits == width and fmt.max_value >= target
    if fmt.frac < 256:
        assert Format(width, fmt.frac + 1).max_value < target


def test_zero_range_gets_default():
    assert format_for(0.0, 16, 1) == Format(16, 14)


def _batch(net, rng):
    return {"data": rng.normal(0, 2, net.blobs["data"].shape).astype(np.float32),
            "label": rng.integers(0, 7, net.blobs["label"].shape).astype(np.float32)}


def test_calibration_covers_observed_ranges():
    rng = np.random.default_rng(5)
    net = Net(NETS / "odd_conv.prototxt", TRAIN, seed=3)
    batches = [_batch(net, rng) for _ in range(2)]
    formats = calibrate(net, batches, width=16, margin_bits=1)
    # An independent run of each batch: every final blob value and gradient,
    # and the pre-activation values of the in-place TanH, must be in range.
    check = Net(NETS / "odd_conv.prototxt", TRAIN, seed=3)
    for batch in batches:
        check.clear_param_diffs()
        check.forward(end="pool", **batch)
        pre_tanh = np.abs(check.blobs["pool"].data).max()
        assert pre_tanh <= formats["pool"]["data"].max_value
        check.forward(start="tanh")
        check.backward()
        for name, blob in check.blobs.items():
            if name == "label":
                continue
            assert np.abs(blob.data).max() <= formats[name]["data"].max_value, name
            assert np.abs(blob.diff).max() <= formats[name]["diff"].max_value, name
        for layer, params in check.params.items():
            for j, p in enumerate(params):
                key = param_key(layer, j)
                assert np.abs(p.data).max() <= formats[key]["data"].max_value, key
                assert np.abs(p.diff).max() <= formats[key]["diff"].max_value, key
    assert formats["label"]["data"].frac == 0
    # The margin is the only headroom: one more fractional bit would not hold
    # twice the largest input.
    peak = max(np.abs(b["data"]).max() for b in batches)
    assert Format(16, formats["data"]["data"].frac + 1).max_value < 2 * peak


def test_inference_has_no_diff_formats():
    net = Net(NETS / "odd_ip.prototxt", 1, seed=0)
    formats = calibrate(net, training=False, width=12)
    assert all(v["diff"] is None for v in formats.values())
    assert formats["rows"]["data"].bits == 12
