import gc
import random
import warnings

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.hdl import UnusedElaboratable
from hypothesis import assume, given, settings, strategies as st

from fecaffe_hw.cores.line_buffer import LineBuffer
from fecaffe_hw.fixedpoint import windows as model
from support import Stalls, simulate, stream_get, stream_put


def run_line_buffer(dut, images, *, seed, stall=0.3, name):
    """Feed ``images`` back to back; check every window against the model."""
    rng = random.Random(seed)
    expected = [model.windows(image, dut.kernel, dut.stride, dut.pad, ceil_mode=dut.ceil_mode)
                for image in images]
    got = []

    async def feed(ctx):
        stalls = Stalls(rng, stall)
        for image in images:
            for value in model.pixel_stream(image):
                await stream_put(ctx, dut.pixels, int(value), stalls=stalls)

    async def drain(ctx):
        stalls = Stalls(random.Random(seed + 1), stall)
        for frame in expected:
            for want in frame:
                window = await stream_get(ctx, dut.windows, stalls=stalls)
                got.append([int(v) for v in window])
                assert got[-1] == list(want), f"window {len(got) - 1}"

    simulate(dut, feed, drain, name=name)
    assert len(got) == sum(len(frame) for frame in expected)


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_windows_match_model(data):
    kh = data.draw(st.integers(1, 3), label="kh")
    kw = data.draw(st.integers(1, 3), label="kw")
    sh = data.draw(st.integers(1, 3), label="sh")
    sw = data.draw(st.integers(1, 3), label="sw")
    ph = data.draw(st.integers(0, kh - 1), label="ph")
    pw = data.draw(st.integers(0, kw - 1), label="pw")
    height = data.draw(st.integers(max(1, kh - 2 * ph), 6), label="height")
    width = data.draw(st.integers(max(1, kw - 2 * pw), 6), label="width")
    channels = data.draw(st.integers(1, 3), label="channels")
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    if ceil_mode:
        try:
            model.output_size(height, kh, sh, ph, ceil_mode=True)
            model.output_size(width, kw, sw, pw, ceil_mode=True)
        except ValueError:
            assume(False)       # Caffe's empty last window (stride > kernel, no pad)
    dut = LineBuffer(width=width, height=height, channels=channels, kernel=(kh, kw),
                     stride=(sh, sw), pad=(ph, pw), data_shape=signed(8), ceil_mode=ceil_mode)
    rng = np.random.default_rng(seed)
    images = [rng.integers(-128, 128, (channels, height, width)) for _ in range(2)]
    run_line_buffer(dut, images, seed=seed, name="line_buffer_hypothesis")


def test_lenet_conv_geometry_full_throughput():
    # 5x5 stride 1 on a 12-wide map: after the fill, one window per cycle.
    dut = LineBuffer(width=12, height=7, channels=1, kernel=5, data_shape=unsigned(8))
    image = np.arange(7 * 12).reshape(1, 7, 12) % 256
    expected = model.windows(image, 5)
    cycles = []

    async def feed(ctx):
        for value in model.pixel_stream(image):
            await stream_put(ctx, dut.pixels, int(value))

    async def drain(ctx):
        cycle = 0
        ctx.set(dut.windows.ready, 1)
        for want in expected:
            while not ctx.get(dut.windows.valid):
                await ctx.tick()
                cycle += 1
            assert [int(v) for v in ctx.get(dut.windows.payload)] == list(want)
            cycles.append(cycle)
            await ctx.tick()
            cycle += 1

    simulate(dut, feed, drain, name="line_buffer_throughput")
    # Within each output row the windows come on consecutive cycles.
    for row in range(3):
        span = cycles[row * 8:(row + 1) * 8]
        assert span[-1] - span[0] == 7, span
    # Pixels from cycle 0 on; window 0 needs N = 4 * 12 + 5 of them (docstring).
    assert cycles[0] == 4 * 12 + 5 + 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=4, height=4, kernel=0), "Kernel must be an integer >= 1"),
    (dict(width=4, height=4, kernel=3, pad=3), "Pad 3 must be smaller than the kernel height 3"),
    (dict(width=4, height=2, kernel=5, pad=1), "Kernel height 5 is larger than the padded input"),
    (dict(width=0, height=4, kernel=1), "Width must be a positive integer, not 0"),
    (dict(width=4, height=4, kernel=2, stride=(1, 0)), "Stride must be an integer >= 1"),
    (dict(width=4, height=4, channels=-1, kernel=2), "Channels must be a positive integer"),
    (dict(width=4, height=4, kernel=2, data_shape="x"), "Data shape must be a shape-castable"),
])
def test_rejects_bad_parameters(kwargs, message):
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is the point.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message.replace("+", r"\+")) as info:
            LineBuffer(**(dict(data_shape=signed(8)) | kwargs))
        del info
        gc.collect()
