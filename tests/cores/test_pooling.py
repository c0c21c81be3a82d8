import gc
import random
import warnings

import numpy as np
import pytest
from amaranth import ClockDomain, Module, signed
from amaranth.hdl import UnusedElaboratable
from amaranth.lib import stream, wiring
from hypothesis import assume, given, settings, strategies as st

from fecaffe_hw.cores.line_buffer import LineBuffer
from fecaffe_hw.cores.pooling import AverageDivide, PoolKind, Pooling, PoolingBackward
from fecaffe_hw.fixedpoint import pooling as model
from fecaffe_hw.fixedpoint.windows import output_size, pixel_stream, windows
from support import Stalls, simulate, stream_get, stream_put

BITS = 8


@st.composite
def geometries(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    geometry = dict(
        kernel=(kh, kw), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pad=(ph, pw),
        height=draw(st.integers(max(1, kh - 2 * ph), 6)),
        width=draw(st.integers(max(1, kw - 2 * pw), 6)),
        channels=draw(st.integers(1, 2)))
    for axis, size in ((0, geometry["height"]), (1, geometry["width"])):
        try:
            output_size(size, geometry["kernel"][axis], geometry["stride"][axis],
                        geometry["pad"][axis], ceil_mode=True)
        except ValueError:
            assume(False)       # Caffe's empty last window (stride > kernel, no pad)
    return geometry


def random_maps(rng, count, shape):
    # A narrow range half the time makes ties (MAX) and exact halves (AVE) common.
    spread = int(rng.choice([4, 2 ** (BITS - 1)]))
    return [rng.integers(-spread, spread, shape) for _ in range(count)]


def as_stream(tensor):
    """(C, OH, OW) -> the cores' (oy, ox, c) order."""
    return pixel_stream(tensor)


def run_forward(dut, images, seed, name):
    rng = random.Random(seed)
    geometry = dict(kernel=dut.kernel, stride=dut.stride, pad=dut.pad)
    expected = []
    for image in images:
        if dut.kind is PoolKind.MAX:
            values, index = model.max_pool(image, **geometry)
            expected += list(zip(as_stream(values), as_stream(index)))
        else:
            values = model.ave_pool(image, **geometry, bits=BITS)
            expected += [(v, None) for v in as_stream(values)]

    async def feed(ctx):
        stalls = Stalls(rng, 0.3)
        for image in images:
            for window in windows(image, ceil_mode=True, **geometry):
                await stream_put(ctx, dut.windows, [int(v) for v in window], stalls=stalls)

    async def drain(ctx):
        stalls = Stalls(random.Random(seed + 1), 0.3)
        for n, (value, index) in enumerate(expected):
            got = await stream_get(ctx, dut.pooled, stalls=stalls)
            assert int(got.value) == value, f"output {n}"
            if index is not None:
                assert int(got.index) == index, f"argmax {n}"

    simulate(dut, feed, drain, name=name)


@settings(max_examples=12, deadline=None)
@given(geometries(), st.sampled_from(list(PoolKind)), st.integers(0, 2**16))
def test_forward_matches_model(geometry, kind, seed):
    dut = Pooling(kind=kind, data_shape=signed(BITS), **geometry)
    rng = np.random.default_rng(seed)
    images = random_maps(rng, 2, (geometry["channels"], geometry["height"], geometry["width"]))
    run_forward(dut, images, seed, f"pooling_forward_{kind.value}")


def test_max_first_maximum_wins_and_padding_never_wins():
    # All-negative map with pad: the zero padding must not win; equal maxima
    # must report the first in raster order.
    image = np.full((1, 4, 4), -5)
    image[0, 0, 1] = image[0, 1, 0] = -1
    dut = Pooling(kind="max", width=4, height=4, kernel=3, stride=2, pad=1,
                  data_shape=signed(BITS))
    values, index = model.max_pool(image, 3, 2, 1)
    # Window (0, 0) spans rows/cols -1..1: (0, 1) is index 1*3+2, (1, 0) is 2*3+1.
    assert values[0, 0, 0] == -1 and index[0, 0, 0] == 5
    assert model.caffe_mask(index, 4, 4, 3, 2, 1)[0, 0, 0] == 1
    assert values.max() < 0
    run_forward(dut, [image], 0, "pooling_max_ties")


@pytest.mark.parametrize("kind", list(PoolKind))
def test_forward_one_window_per_cycle(kind):
    dut = Pooling(kind=kind, width=6, height=6, kernel=3, stride=1, pad=1,
                  data_shape=signed(BITS))
    image = np.random.default_rng(5).integers(-128, 128, (1, 6, 6))
    wins = windows(image, 3, 1, 1, ceil_mode=True)
    if kind is PoolKind.MAX:
        expected = as_stream(model.max_pool(image, 3, 1, 1)[0])
    else:
        expected = as_stream(model.ave_pool(image, 3, 1, 1, bits=BITS))
    arrivals = []

    async def feed(ctx):
        for window in wins:
            await stream_put(ctx, dut.windows, [int(v) for v in window])

    async def drain(ctx):
        ctx.set(dut.pooled.ready, 1)
        cycle = 0
        while len(arrivals) < len(expected):
            if ctx.get(dut.pooled.valid):
                assert ctx.get(dut.pooled.payload).value == expected[len(arrivals)]
                arrivals.append(cycle)
            await ctx.tick()
            cycle += 1

    simulate(dut, feed, drain, name=f"pooling_throughput_{kind.value}")
    # Window 0 enters in cycle 0, leaves in cycle 2 (MAX) or 6 (AVE); then
    # one per cycle.
    latency = 2 if kind is PoolKind.MAX else 6
    assert dut.latency == latency
    assert arrivals == list(range(latency, latency + len(expected)))


@st.composite
def backward_cases(draw):
    geometry = draw(geometries())
    return geometry, draw(st.sampled_from(list(PoolKind))), draw(st.integers(0, 2**16))


@settings(max_examples=10, deadline=None)
@given(backward_cases())
def test_backward_matches_model(case):
    geometry, kind, seed = case
    dut = PoolingBackward(kind=kind, data_shape=signed(BITS), **geometry)
    rng = np.random.default_rng(seed)
    c, h, w = geometry["channels"], geometry["height"], geometry["width"]
    shape = dict(kernel=geometry["kernel"], stride=geometry["stride"], pad=geometry["pad"])
    oh = output_size(h, geometry["kernel"][0], geometry["stride"][0], geometry["pad"][0],
                     ceil_mode=True)
    ow = output_size(w, geometry["kernel"][1], geometry["stride"][1], geometry["pad"][1],
                     ceil_mode=True)
    frames = []
    for _ in range(2):
        # Full-range gradients so overlapping sums exercise saturation.
        grad = rng.integers(-2 ** (BITS - 1), 2 ** (BITS - 1), (c, oh, ow))
        if kind is PoolKind.MAX:
            _, index = model.max_pool(random_maps(rng, 1, (c, h, w))[0], **shape)
            bottom = model.max_pool_backward(grad, index, h, w, **shape, bits=BITS)
            beats = [{"grad": int(g), "index": int(i)}
                     for g, i in zip(as_stream(grad), as_stream(index))]
        else:
            bottom = model.ave_pool_backward(grad, h, w, **shape, bits=BITS)
            beats = [{"grad": int(g)} for g in as_stream(grad)]
        frames.append((beats, pixel_stream(bottom)))

    async def feed(ctx):
        stalls = Stalls(random.Random(seed), 0.2)
        for beats, _ in frames:
            for beat in beats:
                await stream_put(ctx, dut.grads, beat, stalls=stalls)

    async def drain(ctx):
        stalls = Stalls(random.Random(seed + 1), 0.3)
        for f, (_, expected) in enumerate(frames):
            for n, want in enumerate(expected):
                got = await stream_get(ctx, dut.bottom, stalls=stalls)
                assert got == want, f"frame {f}, input gradient {n}"

    simulate(dut, feed, drain, name=f"pooling_backward_{kind.value}")


class _LinePool(wiring.Component):
    """LineBuffer feeding Pooling, as the SoC composes them."""

    def __init__(self, kind, **geometry):
        self.lines = LineBuffer(ceil_mode=True, data_shape=signed(BITS), **geometry)
        self.pool = Pooling(kind=kind, data_shape=signed(BITS), **geometry)
        super().__init__({"pixels": wiring.In(stream.Signature(signed(BITS))),
                          "pooled": wiring.Out(self.pool.pooled.signature)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.lines, m.submodules.pool = self.lines, self.pool
        wiring.connect(m, wiring.flipped(self.pixels), self.lines.pixels)
        wiring.connect(m, self.lines.windows, self.pool.windows)
        wiring.connect(m, self.pool.pooled, wiring.flipped(self.pooled))
        return m


@pytest.mark.parametrize("kind", list(PoolKind))
@pytest.mark.parametrize("geometry", [
    dict(width=8, height=8, channels=2, kernel=2, stride=2),            # LeNet
    dict(width=7, height=6, channels=1, kernel=3, stride=2),            # AlexNet, ceil mode
    dict(width=5, height=5, channels=2, kernel=3, stride=2, pad=1),     # clipped AVE windows
])
def test_line_buffer_into_pooling(kind, geometry):
    dut = _LinePool(kind, **geometry)
    rng = np.random.default_rng(3)
    image = rng.integers(-128, 128, (geometry["channels"], geometry["height"], geometry["width"]))
    shape = dict(kernel=geometry["kernel"], stride=geometry["stride"], pad=geometry.get("pad", 0))
    if kind is PoolKind.MAX:
        values, index = (as_stream(t) for t in model.max_pool(image, **shape))
    else:
        values = as_stream(model.ave_pool(image, **shape, bits=BITS))
        index = [None] * len(values)

    async def feed(ctx):
        stalls = Stalls(random.Random(1), 0.2)
        for value in pixel_stream(image):
            await stream_put(ctx, dut.pixels, int(value), stalls=stalls)

    async def drain(ctx):
        stalls = Stalls(random.Random(2), 0.2)
        for n, (value, idx) in enumerate(zip(values, index)):
            got = await stream_get(ctx, dut.pooled, stalls=stalls)
            assert int(got.value) == value, f"output {n}"
            if idx is not None:
                assert int(got.index) == idx, f"argmax {n}"

    simulate(dut, feed, drain, name=f"line_buffer_{kind.value}_pooling")


def test_average_divide_rtl_exhaustive():
    # Every 8-bit sum of a 3x3 window of 4-bit data, every divisor 1..9.
    divider = model.AverageDivider(9, 4)
    dut = AverageDivide(divider)
    sums = np.arange(-2 ** (divider.sum_bits - 1), 2 ** (divider.sum_bits - 1))

    async def check(ctx):
        for n in range(1, 10):
            expected = divider(sums, n)
            ctx.set(dut.divisor, n)
            for total, want in zip(sums, expected):
                ctx.set(dut.dividend, int(total))
                assert ctx.get(dut.quotient) == want, (int(total), n)

    # A purely combinational core: give simulate() the clock domain it drives.
    top = Module()
    top.submodules.divide = dut
    top.domains.sync = ClockDomain()
    simulate(top, check, name="average_divide")


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="min"), "Pooling kind must be PoolKind.MAX or PoolKind.AVE, not 'min'"),
    (dict(kind="max", data_shape=8), "Pooling data shape must be signed"),
    (dict(kind="ave", kernel=3, pad=3), "Pad 3 must be smaller than the kernel height 3"),
    (dict(kind="ave", kernel=9), "Kernel height 9 is larger than the padded input height 4"),
    (dict(kind="ave", width=5, kernel=1, stride=2),
     "Stride 2 > kernel 1 leaves the last pooling window outside input 4"),
])
@pytest.mark.parametrize("core", [Pooling, PoolingBackward])
def test_rejects_bad_parameters(core, kwargs, message):
    arguments = dict(width=4, height=4, kernel=2, data_shape=signed(8)) | kwargs
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is the point.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message) as info:
            core(**arguments)
        del info
        gc.collect()
