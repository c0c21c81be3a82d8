# amaranth: UnusedElaboratable=no
"""PoolEngine alone against a Python tensor memory (latency, stalls, several
bursts in flight): POOL_BWD (MAX from the indices POOL_FWD wrote, AVE) on
overlapping and tiling windows, padding, channel/image tiles and shifts,
every word of memory compared with ``fixedpoint.pooling.pool_backward``;
the ISA decode's legality rules; and ``pool_backward`` against Caffe's float
Pooling layer."""

import math

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from fecaffe_hw.cores.pool_engine import PoolCommand, PoolEngine, PoolGeometry
from fecaffe_hw.fixedpoint import Format, requantize
from fecaffe_hw.fixedpoint.pooling import (ave_pool_backward, max_pool, max_pool_backward,
                                           pool_backward, pool_sizes)
from fecaffe_hw.runtime.isa import PoolKind
from reference.gradient_checker import blob, make_layer
from support import TensorMemory, simulate, stream_put

MEM_WORDS = 6 * 1024

#: 3x3 stride 2 (overlapping, 3x3 out: odd planes put indices and dy on any
#: byte / half word), 3x3 stride 2 pad 1 (AVE divides by 4, 6 and 9), 2x2
#: stride 2 (LeNet, windows tile the map), 3x3 stride 1 (nine windows meet).
OVERLAP = PoolGeometry(height=6, width=6, kernel=3, stride=2)
PADDED = PoolGeometry(height=6, width=6, kernel=3, stride=2, pad=1)
TILED = PoolGeometry(height=8, width=8, kernel=2, stride=2)
DENSE = PoolGeometry(height=4, width=5, kernel=3, stride=1, kinds=(PoolKind.MAX,))
GEOMETRIES = (OVERLAP, PADDED, TILED, DENSE)


def place(words, addr, values, dtype):
    """Write ``values`` as ``dtype`` elements at byte ``addr`` of ``words``."""
    raw = words.view(np.uint8)
    data = np.asarray(values).astype(dtype).ravel().view(np.uint8)
    raw[addr:addr + len(data)] = data


def fetch(words, addr, count, dtype):
    return words.view(np.uint8)[addr:].view(dtype)[:count].astype(np.int64)


def geometry_index(engine, g):
    return next(i for i, e in enumerate(engine.geometries)
                if (e.height, e.width, e.kernel, e.stride, e.pad)
                == (g.height, g.width, g.kernel, g.stride, g.pad))


def command(engine, g, kind, *, backward, total, c0, channels, n0, images, shift=0,
            src, dst, index_addr=0, write_index=False):
    return {"geometry": geometry_index(engine, g), "kind": int(kind), "backward": int(backward),
            "src": src, "dst": dst, "index_addr": index_addr, "write_index": int(write_index),
            "c0": c0, "channels": channels, "n0": n0, "images": images, "total": total,
            "shift": shift}


def run(engine, words, commands, *, name, seed, stall=0.3, deadline=60_000):
    """Run ``commands`` one after another; returns each one's fault flag."""
    rng = np.random.default_rng(seed)
    memory = TensorMemory(engine.mem, words, rng, stall=stall)
    faults = []

    async def drive(ctx):
        for cmd in commands:
            await stream_put(ctx, engine.cmd, cmd)
            while not ctx.get(engine.done):
                await ctx.tick()
            faults.append(ctx.get(engine.fault))
            await ctx.tick()
            assert not ctx.get(engine.busy)

    simulate(engine, drive, background=memory.processes(), name=name,
             deadline_cycles=deadline)
    return faults, memory


def random_grads(rng, shape, big):
    if big:   # near full scale, one sign per plane: sums leave int16, shifts saturate
        sign = rng.choice([-1, 1], shape[:2] + (1, 1))
        return rng.integers(2**15 - 4000, 2**15, shape) * sign
    return rng.integers(-2**15, 2**15, shape)


def exact_sums(kind, g, dy, index):
    """The un-requantised sums (wide enough for anything)."""
    geometry = (g.height, g.width, g.kernel, g.stride, g.pad)
    if kind == PoolKind.MAX:
        return np.array([max_pool_backward(d, i, *geometry, bits=32) for d, i in zip(dy, index)])
    return np.array([ave_pool_backward(d, *geometry, bits=32) for d in dy])


def expected_dx(kind, g, dy, index, shift):
    return np.array([pool_backward(kind, dy[n], None if index is None else index[n],
                                   g.height, g.width, g.kernel, g.stride, g.pad, shift)
                     for n in range(dy.shape[0])])


#: Engines of two geometries each (the command selects one), and the
#: backward cases each runs back to back in one simulation, which also checks
#: that a command leaves the scratch planes clean for the next.
GROUPS = {
    "overlap_padded": ((OVERLAP, PADDED), [
        # geometry, kind, (total C, N, c0, channels, n0, images), shift, big
        (OVERLAP, PoolKind.MAX, (3, 3, 1, 2, 1, 2), 0, False),
        (PADDED, PoolKind.AVE, (3, 2, 1, 1, 1, 1), -2, True),
        (OVERLAP, PoolKind.AVE, (2, 2, 0, 2, 0, 2), 1, False),
        (PADDED, PoolKind.MAX, (2, 2, 0, 2, 0, 2), 2, True),
        (PADDED, PoolKind.MAX, (1, 1, 0, 1, 0, 1), 0, True),
    ]),
    "tiled_dense": ((TILED, DENSE), [
        (TILED, PoolKind.MAX, (4, 2, 2, 2, 0, 2), -1, True),
        (DENSE, PoolKind.MAX, (2, 2, 1, 1, 0, 2), 1, True),
        (TILED, PoolKind.AVE, (2, 1, 0, 2, 0, 1), 0, False),
        (DENSE, PoolKind.MAX, (3, 2, 0, 3, 1, 1), 0, False),
    ]),
}
#: Per case: dy at +0, indices at +0x400, dx at +0x800.
REGION = 0x1000


@pytest.mark.parametrize("group", GROUPS)
def test_pool_backward_matches_model(group):
    """POOL_BWD of channel/image tiles: dx equals ``pool_backward`` word for
    word; every other word of memory (dy, indices, dx outside the tiles) is
    untouched."""
    geometries, cases = GROUPS[group]
    engine = PoolEngine(geometries=geometries, chunk_words=8)
    seed = sum(map(ord, group))
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**32, MEM_WORDS, dtype=np.uint64).astype(np.uint32)
    commands, checks = [], []
    for k, (g, kind, tile, shift, big) in enumerate(cases):
        total, batch, c0, channels, n0, images = tile
        src, idx, dst = k * REGION, k * REGION + 0x400, k * REGION + 0x800
        x = rng.integers(-50, 50, (batch, total, g.height, g.width))
        dy = random_grads(rng, (batch, total, *g.out_size), big)
        index = np.array([max_pool(image, g.kernel, g.stride, g.pad)[1] for image in x])
        place(words, src, dy, np.int16)
        place(words, idx, index, np.uint8)
        commands.append(command(engine, g, kind, backward=True, total=total, c0=c0,
                                channels=channels, n0=n0, images=images, shift=shift,
                                src=src, dst=dst, index_addr=idx))
        tile_dy = dy[n0:n0 + images, c0:c0 + channels]
        tile_index = index[n0:n0 + images, c0:c0 + channels] if kind == PoolKind.MAX else None
        dx = expected_dx(kind, g, tile_dy, tile_index, shift)
        if big:
            # The case is meant to leave int16: in the sums, or in the shifted result.
            sums = exact_sums(kind, g, tile_dy, tile_index)
            assert (np.abs(sums) > 2**15).any() or (np.abs(dx) >= 2**15 - 1).any()
        checks.append((g, dst, tile, dx))
    want = words.copy()
    for g, dst, (total, _, c0, _, n0, _), dx in checks:
        for i, image in enumerate(dx):
            place(want, dst + 2 * ((n0 + i) * total + c0) * g.plane, image, np.int16)

    faults, memory = run(engine, words, commands, name=f"pool_engine_bwd_{group}", seed=seed)
    assert faults == [0] * len(cases)
    for k, (g, dst, (total, batch, *_), _) in enumerate(checks):
        got = fetch(words, dst, batch * total * g.plane, np.int16).reshape(batch, total, -1)
        expect = fetch(want, dst, batch * total * g.plane, np.int16).reshape(batch, total, -1)
        for n in range(batch):
            for c in range(total):
                assert (got[n, c] == expect[n, c]).all(), f"case {k}: image {n} channel {c}"
    assert (words == want).all(), "memory outside the dx tiles changed"
    # No byte enables: dx is written once, whole words, nothing else.
    written = sum(n for _, n, write in memory.bursts if write)
    assert written == sum(t[3] * t[5] * g.plane // 2 for g, _, t, _ in checks)


def test_pool_forward_then_backward():
    """POOL_FWD with indices, then POOL_BWD reading a tile of them back."""
    g, total, batch = OVERLAP, 4, 2
    engine = PoolEngine(geometries=(g,), chunk_words=8)
    rng = np.random.default_rng(7)
    x = rng.integers(-2**15, 2**15, (batch, total, g.height, g.width))
    oh, ow = g.out_size
    dy = rng.integers(-2**15, 2**15, (batch, total, oh, ow))
    words = rng.integers(0, 2**32, MEM_WORDS, dtype=np.uint64).astype(np.uint32)
    src, idx, dst, top = 0x0, 0x400, 0x800, 0xC00
    place(words, 0x1000, x, np.int16)
    place(words, src, dy, np.int16)
    # 9 index bytes per plane, 36 per image: whole words.
    fwd = command(engine, g, PoolKind.MAX, backward=False, total=total, c0=0, channels=total,
                  n0=0, images=batch, src=0x1000, dst=top, index_addr=idx, write_index=True)
    bwd = command(engine, g, PoolKind.MAX, backward=True, total=total, c0=1, channels=3,
                  n0=0, images=batch, shift=1, src=src, dst=dst, index_addr=idx)
    faults, _ = run(engine, words, [fwd, bwd], name="pool_engine_fwd_bwd", seed=7)
    assert faults == [0, 0]
    values, index = (np.array(v) for v in zip(*(max_pool(image, g.kernel, g.stride, g.pad)
                                                for image in x)))
    assert (fetch(words, top, values.size, np.int16) == values.ravel()).all()
    assert (fetch(words, idx, index.size, np.uint8) == index.ravel()).all()
    dx = expected_dx(PoolKind.MAX, g, dy[:, 1:], index[:, 1:], 1)
    got = fetch(words, dst, batch * total * g.plane, np.int16).reshape(batch, total, -1)
    assert (got[:, 1:] == dx.reshape(batch, 3, -1)).all()


def test_pool_backward_fault_completes():
    """A dx tile past the end of memory: the command still ends, with fault."""
    g = PoolGeometry(height=4, width=4, kernel=2, stride=2, kinds=(PoolKind.AVE,))
    engine = PoolEngine(geometries=(g,), chunk_words=4)
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**32, MEM_WORDS, dtype=np.uint64).astype(np.uint32)
    cmd = command(engine, g, PoolKind.AVE, backward=True, total=2, c0=0, channels=2,
                  n0=0, images=1, src=0, dst=4 * MEM_WORDS - 16)
    ok = command(engine, g, PoolKind.AVE, backward=True, total=2, c0=0, channels=2,
                 n0=0, images=1, src=0, dst=0x100)
    faults, _ = run(engine, words, [cmd, ok], name="pool_engine_bwd_fault", seed=3)
    assert faults == [1, 0]


# ---- ISA decode --------------------------------------------------------------

class Decode(wiring.Component):
    """``PoolEngine.from_isa`` on free inputs, for checking legality."""

    def __init__(self, engine):
        self._engine = engine
        super().__init__({
            "geometry": In(range(len(engine.geometries))), "total": In(16), "batch": In(16),
            "func": In(8), "flags": In(12), "src": In(32), "dst": In(32),
            "index_addr": In(32), "c0": In(16), "channels": In(16), "n0": In(16),
            "images": In(16), "shift": In(signed(8)), "backward": In(1),
            "cmd": Out(PoolCommand(engine.geometries)), "legal": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        names = ("geometry", "total", "batch", "func", "flags", "src", "dst", "index_addr",
                 "c0", "channels", "n0", "images", "shift", "backward")
        cmd, legal = self._engine.from_isa(m, **{n: getattr(self, n) for n in names})
        m.d.comb += [self.cmd.eq(cmd), self.legal.eq(legal)]
        return m


def comb_simulate(dut, bench):
    sim = Simulator(dut)          # combinational: no clock
    sim.add_testbench(bench)
    sim.run()


def decode_cases():
    g = OVERLAP   # 6x6 -> 3x3: planes of 36 dx, 9 dy / index bytes
    ok = dict(geometry=g, total=4, batch=3, func=PoolKind.MAX, flags=0, src=0x100, dst=0x800,
              index_addr=0x400, c0=0, channels=2, n0=0, images=2, shift=0, backward=1)
    cases = [
        (dict(), True),
        (dict(func=PoolKind.AVE, index_addr=0), True),      # AVE reads no indices
        (dict(c0=1, channels=3, n0=1), True),                # odd dy/index offsets are fine
        (dict(channels=1, images=1, c0=3), True),
        (dict(shift=-15), True), (dict(shift=15), True),
        (dict(index_addr=0), False),                         # MAX backward needs indices
        (dict(shift=16), False), (dict(shift=-16), False),
        (dict(channels=0), False), (dict(images=0), False),
        (dict(c0=3), False),                                 # channels past total
        (dict(n0=2), False),                                 # images past the batch
        (dict(src=0x102), False), (dict(dst=0x802), False),
        (dict(index_addr=0x401), False),
        (dict(func=2), False),
        (dict(geometry=DENSE, func=PoolKind.AVE), False),    # a kind it was not built with
    ]
    # dx runs must be whole words: a 4x5 plane with one channel is 20 elements
    # (fine); an odd plane would not be, but every geometry here has even
    # planes, so check the forward rule on the odd 3x3 outputs instead.
    cases += [
        (dict(backward=0, channels=1, images=1, c0=0), False),   # 9 outputs: half a word
        (dict(backward=0, channels=2, images=1, c0=0), True),
        (dict(backward=0, channels=2, images=1, c0=1), False),   # starts on a half word
    ]
    return [({**ok, **change}, legal) for change, legal in cases]


def test_from_isa_legality():
    engine = PoolEngine(geometries=GEOMETRIES)
    dut = Decode(engine)
    cases = decode_cases()

    async def bench(ctx):
        for fields, legal in cases:
            for name, value in fields.items():
                if isinstance(value, PoolGeometry):
                    value = geometry_index(engine, value)
                ctx.set(getattr(dut, name), int(value))
            await ctx.delay(1e-9)
            assert ctx.get(dut.legal) == legal, fields
            if legal:
                assert ctx.get(dut.cmd.backward) == fields["backward"]
                assert ctx.get(dut.cmd.write_index) == 0

    comb_simulate(dut, bench)


def test_from_isa_without_backward():
    engine = PoolEngine(geometries=(TILED,), backward=False)
    dut = Decode(engine)

    async def bench(ctx):
        for name, value in dict(total=2, batch=1, func=PoolKind.AVE, src=0x100, dst=0x800,
                                channels=2, images=1, backward=1).items():
            ctx.set(getattr(dut, name), int(value))
        await ctx.delay(1e-9)
        assert not ctx.get(dut.legal)
        ctx.set(dut.backward, 0)
        await ctx.delay(1e-9)
        assert ctx.get(dut.legal)

    comb_simulate(dut, bench)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="backward must be a bool"):
        PoolEngine(geometries=(TILED,), backward=1)
    with pytest.raises(ValueError, match="chunk length"):
        PoolEngine(geometries=(TILED,), chunk_words=0)
    with pytest.raises(ValueError, match="shift"):
        pool_backward("max", np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), 4, 4, 2, 2, 0, 16)
    with pytest.raises(ValueError, match="kind"):
        pool_backward("min", np.zeros((1, 2, 2)), None, 4, 4, 2, 2, 0, 0)
    with pytest.raises(ValueError, match="int16"):
        pool_backward("ave", np.full((1, 2, 2), 2**15), None, 4, 4, 2, 2, 0, 0)


# ---- the model function -------------------------------------------------------

def test_pool_backward_is_exact_sum_then_one_requantize():
    """Sums that leave int16 are kept and rounded once (not saturated first)."""
    g = DENSE   # nine windows meet at the centre pixels
    dy = np.full((1, *g.out_size), 30000)
    index = np.full((1, *g.out_size), 4)      # every argmax at its window's centre
    index[0, 0, 0] = 8
    sums = max_pool_backward(dy, index, g.height, g.width, g.kernel, g.stride, g.pad, bits=32)
    assert sums.max() > 2**15                   # the case needs wide sums
    got = pool_backward("max", dy, index, g.height, g.width, g.kernel, g.stride, g.pad, 3)
    assert (got == requantize(sums, 3, Format(16, 0))).all()
    assert (got == np.clip(np.round(sums / 8), -2**15, 2**15 - 1)).all()   # RNE == np.round
    assert (pool_backward("max", dy, index, g.height, g.width, g.kernel, g.stride, g.pad, 0)
            == np.clip(sums, -2**15, 2**15 - 1)).all()
    ave = pool_backward(PoolKind.AVE, dy, None, g.height, g.width, g.kernel, g.stride, g.pad, -1)
    wide = ave_pool_backward(dy, g.height, g.width, g.kernel, g.stride, g.pad, bits=32)
    assert (ave == np.clip(2 * wide, -2**15, 2**15 - 1)).all()


def float_reference(method, g, x, dy):
    """Caffe's Pooling layer (fecaffe_hw.reference) forward then backward."""
    (kh, kw), (sh, sw), (ph, pw) = g.kernel, g.stride, g.pad
    layer = make_layer(f'type: "Pooling" pooling_param {{ pool: {method} kernel_h: {kh} '
                       f'kernel_w: {kw} stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} }}')
    bottom, top = [blob(x)], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    return bottom[0].diff


@pytest.mark.parametrize("g", GEOMETRIES, ids=lambda g: f"{g.height}x{g.width}k{g.kernel[0]}"
                         f"s{g.stride[0]}p{g.pad[0]}")
def test_pool_backward_agrees_with_float_reference(g):
    """Integer gradients, shift 0, no saturation: MAX equals Caffe's float
    backward exactly; AVE too when every gradient divides by its pool size."""
    rng = np.random.default_rng(g.height * 31 + g.kernel[0])
    channels, (oh, ow) = 3, g.out_size
    # Distinct inputs: no ties, so the float and integer argmax agree trivially.
    x = rng.permutation(channels * g.plane).reshape(1, channels, g.height, g.width) - 40
    dy = rng.integers(-300, 300, (1, channels, oh, ow))
    _, index = max_pool(x[0], g.kernel, g.stride, g.pad)
    want = float_reference("MAX", g, x.astype(np.float32), dy.astype(np.float32))
    got = pool_backward("max", dy[0], index, g.height, g.width, g.kernel, g.stride, g.pad, 0)
    assert (got == want[0]).all()

    sizes = pool_sizes(g.height, g.width, g.kernel, g.stride, g.pad)
    dy = rng.integers(-30, 30, (1, channels, oh, ow)) * math.lcm(*np.unique(sizes).tolist())
    want = float_reference("AVE", g, x.astype(np.float32), dy.astype(np.float32))
    got = pool_backward("ave", dy[0], None, g.height, g.width, g.kernel, g.stride, g.pad, 0)
    assert (got == want[0]).all()


# ---- the requantiser ----------------------------------------------------------

@pytest.mark.parametrize("width", [16, 20])
def test_requantise_matches_model(width):
    """Every shift the ISA allows, on edges (ties, saturation bounds, extremes)
    and random values of the widest backward sums: the engine's
    multiply-by-a-power-of-two requantiser equals ``fixedpoint.requantize``."""
    from fecaffe_hw.cores.pool_engine import (_product_shape, _requantise_product,
                                               _requantise_scale)

    value, shift = Signal(signed(width)), Signal(signed(8))
    m = Module()
    scale, left = _requantise_scale(shift)
    product = Signal(_product_shape(value))
    m.d.comb += product.eq(value * scale)
    out = _requantise_product(product, left)
    probe = Signal(signed(16))
    m.d.comb += probe.eq(out)
    rng = np.random.default_rng(width)
    lo, hi = -2**(width - 1), 2**(width - 1) - 1
    edges = [lo, lo + 1, -1, 0, 1, hi - 1, hi, 2**15 - 1, 2**15, -2**15, -2**15 - 1]
    checked = []

    async def bench(ctx):
        for s in range(-15, 16):
            ties = [k * 2**abs(s) + d for k in (-3, -2, -1, 0, 1, 2, 3)
                    for d in ((2**(s - 1), -2**(s - 1)) if s > 0 else (0,))]
            ups = [(2**15 - 1) >> -s, ((2**15 - 1) >> -s) + 1, -(2**15 >> -s),
                   -(2**15 >> -s) - 1] if s < 0 else []
            values = [v for v in edges + ties + ups if lo <= v <= hi]
            values += rng.integers(lo, hi + 1, 40).tolist()
            ctx.set(shift, s)
            for v in values:
                ctx.set(value, v)
                checked.append((v, s, ctx.get(probe)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    got = np.array([c[2] for c in checked])
    want = np.array([requantize(np.int64(v), s, Format(16, 0)) for v, s, _ in checked])
    assert (got == want).all(), [c for c, w in zip(checked, want) if c[2] != w][:5]
