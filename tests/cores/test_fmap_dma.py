# amaranth: UnusedElaboratable=no
"""FmapDma against a pipelined Python tensor memory and real scratchpads:
IM2COL and FMAP loads (both placements), FMAP and COL2IM stores (rounding,
saturation, partial words, overlapping rows), refused commands, random
geometries; every word checked against ``fixedpoint.tiles``."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amaranth.hdl import Module, Signal

from fecaffe_hw.cores.dma import BUFFER_A, BUFFER_B, BUFFER_C
from fecaffe_hw.cores.fmap_dma import FmapCommand, FmapDma, FmapMode
from fecaffe_hw.cores.scratchpad import Scratchpad
from fecaffe_hw.fixedpoint.tiles import (ConvGeometry, col2im_add, fmap_store, fmap_tile,
                                         im2col_tile)

from support import TensorMemory, simulate, stream_put

AW = 32


class Bench:
    """An FmapDma with A, B and C scratchpads and a tensor memory (by default
    1 to 8 cycles of latency, 6 commands in flight)."""

    def __init__(self, words, rng, *, rows=8, cols=8, a_depth=64, b_depth=64, c_depth=32,
                 latency=(1, 9), outstanding=6, **memory):
        self.dut = dut = FmapDma(rows=rows, cols=cols, acc_width=AW, a_depth=a_depth,
                                 b_depth=b_depth, c_depth=c_depth)
        self.top = top = Module()
        top.submodules.dut = dut
        self.bufs = {
            BUFFER_A: Scratchpad(lanes=rows, lane_width=16, depth=a_depth),
            BUFFER_B: Scratchpad(lanes=cols, lane_width=16, depth=b_depth),
            BUFFER_C: Scratchpad(lanes=cols, lane_width=AW, depth=c_depth, read_ports=2),
        }
        for code, buf in self.bufs.items():
            top.submodules[f"buf{code}"] = buf
        for code, port in ((BUFFER_A, dut.a_write), (BUFFER_B, dut.b_write)):
            buf = self.bufs[code]
            top.d.comb += [buf.write.addr.eq(port.addr), buf.write.en.eq(port.en),
                           buf.write.data.eq(port.data)]
        c = self.bufs[BUFFER_C]
        top.d.comb += [c.read1.addr.eq(dut.c_read.addr), c.read1.en.eq(dut.c_read.en),
                       dut.c_read.data.eq(c.read1.data)]
        self.mem = TensorMemory(dut.mem, words, rng, latency=latency,
                                outstanding=outstanding, **memory)
        self.buffer_writes = 0

    async def count_writes(self, ctx):
        async for _, _, a_en, b_en in ctx.tick().sample(self.dut.a_write.en,
                                                        self.dut.b_write.en):
            self.buffer_writes += bool(a_en) + bool(b_en)

    async def run(self, ctx, cmd):
        """Issue ``cmd``; return (fault, cycles from issue to ``done``)."""
        await stream_put(ctx, self.dut.cmd, cmd)
        cycles = 1
        while not ctx.get(self.dut.done):
            await ctx.tick()
            cycles += 1
        fault = ctx.get(self.dut.fault)
        await ctx.tick()
        return fault, cycles

    async def read(self, ctx, code, words):
        port = self.bufs[code].read0
        rows = []
        for w in words:
            ctx.set(port.addr, w)
            ctx.set(port.en, 1)
            await ctx.tick()
            rows.append([int(v) for v in ctx.get(port.data)])
        ctx.set(port.en, 0)
        return np.array(rows, dtype=np.int64)

    async def fill_c(self, ctx, word, tile):
        port = self.bufs[BUFFER_C].write
        for r, row in enumerate(tile):
            ctx.set(port.addr, word + r)
            ctx.set(port.data, [int(v) for v in row] + [0] * (self.dut.cols - len(row)))
            ctx.set(port.en, (1 << self.dut.cols) - 1)
            await ctx.tick()
        ctx.set(port.en, 0)

    def simulate(self, bench, name, deadline_cycles=200_000):
        mem = self.mem

        async def main(ctx):
            await bench(ctx)
            mem.stop = True

        simulate(self.top, main, mem.accept, mem.serve, name=name,
                 processes=(mem.count, self.count_writes), deadline_cycles=deadline_cycles)


def command(mode, g, *, addr, k0, col0, rows, cols, buffer=BUFFER_C, transpose=0, word=0,
            shift=0):
    return {"mode": int(mode), "buffer": buffer, "transpose": transpose, "addr": addr,
            "k0": k0, "col0": col0, "rows": rows, "cols": cols, "word": word,
            "shift": shift & 0xFF,
            "geometry": {name: getattr(g, name) for name in ConvGeometry.__dataclass_fields__}}


def map_view(words, addr, shape):
    size = int(np.prod(shape))
    return words.view(np.int16)[addr // 2:addr // 2 + size].reshape(shape)


def out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def geometry(c, h, w, kh, kw, sh, sw, ph, pw, n, oc):
    return ConvGeometry(channels=c, height=h, width=w, kernel_h=kh, kernel_w=kw,
                        stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                        out_h=out_size(h, kh, sh, ph), out_w=out_size(w, kw, sw, pw),
                        images=n, out_channels=oc)


def random_words(rng, n):
    return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)


# 2 images of 2 x 7 x 6 (odd width), 3x2 kernel, stride 2 x 1, pad 2 x 1:
# out 5 x 7 (35 positions, odd), im2col rows 12.
ODD = geometry(2, 7, 6, 3, 2, 2, 1, 2, 1, 2, 3)
X_ADDR, Y_ADDR = 64, 1024


def load_cases():
    g = ODD
    assert (g.out_h, g.out_w) == (5, 7)
    # (mode, buffer, transpose, k0, col0, rows, cols, word)
    return [
        (FmapMode.LOAD_IM2COL, BUFFER_B, 0, 0, 0, 12, 8, 0),      # padding corner
        (FmapMode.LOAD_IM2COL, BUFFER_A, 1, 3, 31, 8, 9, 5),      # crosses channel, image
        (FmapMode.LOAD_IM2COL, BUFFER_B, 0, 5, 63, 7, 7, 20),     # ends at the last position
        (FmapMode.LOAD_IM2COL, BUFFER_A, 1, 11, 17, 1, 40, 0),    # one row, odd start
        (FmapMode.LOAD_FMAP, BUFFER_B, 0, 0, 33, 3, 5, 1),        # crosses image, odd start
        (FmapMode.LOAD_FMAP, BUFFER_A, 1, 1, 2, 2, 60, 3),        # odd plane (35)
    ]


def test_fmap_dma_loads():
    rng = np.random.default_rng(1)
    words = random_words(rng, 1024)
    bench = Bench(words, rng)
    g = ODD
    x = map_view(words, X_ADDR, (g.images, g.channels, g.height, g.width)).copy()
    y = map_view(words, Y_ADDR, (g.images, g.out_channels, g.out_h, g.out_w)).copy()
    before = words.copy()

    async def run(ctx):
        for mode, buf, transpose, k0, col0, rows, cols, word in load_cases():
            im2col = mode == FmapMode.LOAD_IM2COL
            cmd = command(mode, g, addr=X_ADDR if im2col else Y_ADDR, k0=k0, col0=col0,
                          rows=rows, cols=cols, buffer=buf, transpose=transpose, word=word)
            fault, _ = await bench.run(ctx, cmd)
            assert not fault
            want = (im2col_tile(x, g, k0, col0, rows, cols) if im2col
                    else fmap_tile(y, g, k0, col0, rows, cols))
            if transpose:
                want = want.T
            got = await bench.read(ctx, buf, range(word, word + want.shape[0]))
            assert (got[:, :want.shape[1]] == want).all(), (mode, k0, col0)

    bench.simulate(run, "fmap_dma_loads")
    assert (words == before).all()
    assert not any(write for _, _, write in bench.mem.bursts)


def test_fmap_dma_large_coordinates():
    """Set-up divisions whose quotients use all 16 bits (image 65534) and a
    high channel; the map reaches far into memory."""
    rng = np.random.default_rng(11)
    words = random_words(rng, 40 * 1024)
    bench = Bench(words, rng)
    cases = [  # (geometry, mode, k0, col0, rows, cols)
        (geometry(1, 1, 1, 1, 1, 1, 1, 0, 0, 65535, 1), FmapMode.LOAD_IM2COL, 0, 65528, 1, 7),
        (geometry(5, 2, 2, 1, 2, 1, 1, 0, 0, 4000, 3), FmapMode.LOAD_IM2COL, 7, 7993, 3, 7),
        (geometry(1, 1, 1, 1, 1, 1, 1, 0, 0, 20, 3000), FmapMode.LOAD_FMAP, 2993, 13, 7, 7),
    ]

    async def run(ctx):
        for g, mode, k0, col0, rows, cols in cases:
            im2col = mode == FmapMode.LOAD_IM2COL
            fault, _ = await bench.run(ctx, command(mode, g, addr=X_ADDR, k0=k0, col0=col0,
                                                    rows=rows, cols=cols, buffer=BUFFER_A,
                                                    transpose=1))
            assert not fault
            shape = ((g.images, g.channels, g.height, g.width) if im2col
                     else (g.images, g.out_channels, g.out_h, g.out_w))
            x = map_view(words, X_ADDR, shape)
            want = (im2col_tile(x, g, k0, col0, rows, cols) if im2col
                    else fmap_tile(x, g, k0, col0, rows, cols)).T
            got = await bench.read(ctx, BUFFER_A, range(cols))
            assert (got[:, :rows] == want).all(), (mode, k0, col0)

    bench.simulate(run, "fmap_dma_large_coordinates")


def test_fmap_dma_stores():
    rng = np.random.default_rng(2)
    words = random_words(rng, 1024)
    # Small values in the maps so COL2IM adds meet both saturation and
    # ordinary sums.
    g = ODD
    x = map_view(words, X_ADDR, (g.images, g.channels, g.height, g.width))
    x[...] = rng.integers(-3000, 3000, x.shape)
    x.flat[::7] = 32000
    bench = Bench(words, rng)
    expected = words.copy()
    x_model = map_view(expected, X_ADDR, x.shape)
    y_model = map_view(expected, Y_ADDR, (g.images, g.out_channels, g.out_h, g.out_w))
    # (mode, k0, col0, rows, cols, shift): FMAP tiles starting/ending mid-word
    # and crossing images; COL2IM tiles whose rows overlap (stride 1 in x,
    # kernel 3 x 2) and repeat over the same pixels.
    cases = [
        (FmapMode.STORE_FMAP, 0, 1, 3, 8, 4),
        (FmapMode.STORE_FMAP, 1, 30, 2, 8, 0),
        (FmapMode.STORE_FMAP, 0, 62, 3, 8, 12),
        (FmapMode.STORE_COL2IM, 0, 0, 12, 8, 3),
        (FmapMode.STORE_COL2IM, 2, 31, 9, 7, 0),
        (FmapMode.STORE_COL2IM, 0, 5, 6, 1, 6),
        (FmapMode.STORE_COL2IM, 4, 40, 8, 8, 20),
    ]
    tiles = []
    for mode, k0, col0, rows, cols, shift in cases:
        acc = rng.integers(-2**31, 2**31, (rows, cols))
        bound = 2**min(shift + 14, AW - 1)
        acc[0, :] = rng.integers(-bound, bound, cols)       # mostly without saturation
        if shift > 1:
            acc[-1, ::2] = (2 * rng.integers(-50, 50, (cols + 1) // 2) + 1) << (shift - 1)  # ties
        tiles.append(acc)

    async def run(ctx):
        for (mode, k0, col0, rows, cols, shift), acc in zip(cases, tiles):
            word = int(rng.integers(0, 32 - rows + 1))
            await bench.fill_c(ctx, word, acc)
            addr = X_ADDR if mode == FmapMode.STORE_COL2IM else Y_ADDR
            fault, _ = await bench.run(ctx, command(mode, g, addr=addr, k0=k0, col0=col0,
                                                    rows=rows, cols=cols, word=word,
                                                    shift=shift))
            assert not fault
            if mode == FmapMode.STORE_FMAP:
                fmap_store(y_model, g, acc, shift, k0, col0)
            else:
                col2im_add(x_model, g, acc, shift, k0, col0)
            assert (bench.mem.words == expected).all(), (mode, k0, col0)

    bench.simulate(run, "fmap_dma_stores")
    assert bench.buffer_writes == 0
    # Saturation happened in COL2IM (the model's map holds both extremes).
    assert (x_model == 32767).any() and (x_model == -32768).any()


def test_fmap_dma_refuses_bad_commands():
    rng = np.random.default_rng(3)
    words = random_words(rng, 1024)
    bench = Bench(words, rng)
    dut = bench.dut
    g = ODD                                   # im2col 12 x 70, feature map 3 x 70
    ok = dict(addr=X_ADDR, k0=0, col0=0, rows=4, cols=4)
    im2col, load_fmap = FmapMode.LOAD_IM2COL, FmapMode.LOAD_FMAP
    store, col2im = FmapMode.STORE_FMAP, FmapMode.STORE_COL2IM
    bad = [
        command(im2col, g, **{**ok, "rows": 0}, buffer=BUFFER_B),
        command(im2col, g, **{**ok, "cols": 0}, buffer=BUFFER_B),
        command(im2col, g, **{**ok, "k0": 5, "rows": 8}, buffer=BUFFER_B),    # past row 12
        command(im2col, g, **{**ok, "col0": 65, "cols": 6}, buffer=BUFFER_B),  # past column 70
        command(load_fmap, g, **{**ok, "k0": 2, "rows": 2}, buffer=BUFFER_B),  # 3 channels
        command(store, g, **{**ok, "k0": 1, "rows": 3}),
        command(im2col, g, **{**ok, "cols": 9}, buffer=BUFFER_B),              # 8 lanes
        command(im2col, g, **{**ok, "rows": 9}, buffer=BUFFER_A, transpose=1),
        command(im2col, g, **ok, buffer=BUFFER_B, word=61),                     # 64 words
        command(col2im, g, **{**ok, "rows": 3}, word=30),                       # 32 words
        command(im2col, g, **{**ok, "addr": X_ADDR + 2}, buffer=BUFFER_B),      # unaligned
        command(im2col, g, **ok, buffer=BUFFER_B, shift=1),
        command(store, g, **ok, shift=AW),
        command(col2im, g, **ok, shift=-1),
        command(store, g, **ok, buffer=BUFFER_A),
        command(col2im, g, **ok, buffer=BUFFER_B),
        command(im2col, g, **ok, buffer=BUFFER_C),
        command(load_fmap, g, **ok, buffer=3),
        command(store, g, **ok, transpose=1),
    ]
    for name in ("kernel_w", "stride_h", "images", "channels", "out_w"):
        cmd = command(im2col, g, **ok, buffer=BUFFER_B)
        cmd["geometry"][name] = 0
        bad.append(cmd)
    good = [command(im2col, g, **{**ok, "col0": 14}, buffer=BUFFER_B),   # inside the map
            command(load_fmap, g, **{**ok, "k0": 1, "rows": 2, "col0": 66}, buffer=BUFFER_A,
                    transpose=1, word=60),
            command(col2im, g, **{**ok, "k0": 8, "cols": 8}, word=28, shift=AW - 1)]

    probe = bench.top
    probe_cmd, probe_legal = Signal(FmapCommand), Signal()
    probe.d.comb += probe_legal.eq(dut.legal(probe_cmd))
    before = words.copy()

    async def run(ctx):
        for cmd in bad + good:
            ctx.set(probe_cmd, cmd)
            await ctx.delay(0)
            assert ctx.get(probe_legal) == (cmd in good), cmd
        for cmd in bad:
            fault, cycles = await bench.run(ctx, cmd)
            assert fault and cycles <= 16, cmd
        assert bench.mem.bursts == [] and bench.buffer_writes == 0
        assert not (await bench.run(ctx, good[0]))[0]
        assert bench.mem.bursts and bench.buffer_writes == 16

    bench.simulate(run, "fmap_dma_refused")
    assert (words == before).all()


@st.composite
def scenarios(draw):
    while True:
        c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 3))
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        if h + 2 * ph >= kh and w + 2 * pw >= kw:
            break
    g = geometry(c, h, w, kh, kw, sh, sw, ph, pw, draw(st.integers(1, 2)),
                 draw(st.integers(1, 3)))
    commands = []
    for _ in range(3):
        mode = draw(st.sampled_from(list(FmapMode)))
        limit = g.out_channels if mode in (FmapMode.LOAD_FMAP, FmapMode.STORE_FMAP) else g.rows
        store = mode in (FmapMode.STORE_FMAP, FmapMode.STORE_COL2IM)
        transpose = 0 if store else draw(st.integers(0, 1))
        row_cap, col_cap = (8, 64) if transpose else ((32, 8) if store else (64, 8))
        k0 = draw(st.integers(0, limit - 1))
        rows = draw(st.integers(1, min(limit - k0, row_cap)))
        col0 = draw(st.integers(0, g.positions - 1))
        cols = draw(st.integers(1, min(g.positions - col0, col_cap)))
        extent = cols if transpose else rows
        word = draw(st.integers(0, (32 if store else 64) - extent))
        shift = draw(st.integers(0, AW - 1)) if store else 0
        buffer = BUFFER_C if store else draw(st.sampled_from([BUFFER_A, BUFFER_B]))
        if buffer == BUFFER_B and transpose and rows > 8:
            buffer = BUFFER_A
        commands.append((mode, buffer, transpose, k0, col0, rows, cols, word, shift))
    return g, commands, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=8, deadline=None)
@given(scenarios())
def test_fmap_dma_random_geometries(scenario):
    g, commands, seed = scenario
    rng = np.random.default_rng(seed)
    words = random_words(rng, 1024)
    bench = Bench(words, rng, stall=0.2, latency=(0, 11))
    expected = words.copy()
    x_shape = (g.images, g.channels, g.height, g.width)
    y_shape = (g.images, g.out_channels, g.out_h, g.out_w)

    async def run(ctx):
        for mode, buffer, transpose, k0, col0, rows, cols, word, shift in commands:
            addr = X_ADDR if mode in (FmapMode.LOAD_IM2COL, FmapMode.STORE_COL2IM) else Y_ADDR
            cmd = command(mode, g, addr=addr, k0=k0, col0=col0, rows=rows, cols=cols,
                          buffer=buffer, transpose=transpose, word=word, shift=shift)
            if mode in (FmapMode.STORE_FMAP, FmapMode.STORE_COL2IM):
                acc = rng.integers(-2**(AW - 1), 2**(AW - 1), (rows, cols)) \
                    >> int(rng.integers(0, AW))
                await bench.fill_c(ctx, word, acc)
                assert not (await bench.run(ctx, cmd))[0]
                if mode == FmapMode.STORE_FMAP:
                    fmap_store(map_view(expected, Y_ADDR, y_shape), g, acc, shift, k0, col0)
                else:
                    col2im_add(map_view(expected, X_ADDR, x_shape), g, acc, shift, k0, col0)
                assert (bench.mem.words == expected).all()
            else:
                assert not (await bench.run(ctx, cmd))[0]
                want = (im2col_tile(map_view(expected, X_ADDR, x_shape), g, k0, col0, rows, cols)
                        if mode == FmapMode.LOAD_IM2COL else
                        fmap_tile(map_view(expected, Y_ADDR, y_shape), g, k0, col0, rows, cols))
                if transpose:
                    want = want.T
                got = await bench.read(ctx, buffer, range(word, word + want.shape[0]))
                assert (got[:, :want.shape[1]] == want).all()

    bench.simulate(run, "fmap_dma_random")


def test_fmap_dma_throughput():
    """LeNet conv1 moves with memory latency 8 and no stalls: an IM2COL load
    of 25 x 64 (1 x 1 x 28 x 28, 5x5 kernel), an FMAP store of 20 x 8 and a
    COL2IM store of 25 x 8 (the 24 x 24 output). Cycles from issue to done."""
    rng = np.random.default_rng(5)
    words = random_words(rng, 8192)
    bench = Bench(words, rng, rows=32, cols=8, a_depth=64, b_depth=32, c_depth=32,
                  stall=0.0, latency=8, outstanding=16)
    g = geometry(1, 28, 28, 5, 5, 1, 1, 0, 0, 1, 20)
    x_addr, y_addr = 0, 2048
    x = map_view(words, x_addr, (1, 1, 28, 28))
    x[...] = rng.integers(-100, 100, x.shape)
    expected = words.copy()
    cycles = {}

    async def run(ctx):
        fault, cycles["im2col"] = await bench.run(ctx, command(
            FmapMode.LOAD_IM2COL, g, addr=x_addr, k0=0, col0=100, rows=25, cols=64,
            buffer=BUFFER_A, transpose=1))
        assert not fault
        got = await bench.read(ctx, BUFFER_A, range(64))
        assert (got[:, :25] == im2col_tile(x, g, 0, 100, 25, 64).T).all()
        for name, mode, rows, addr in (("fmap", FmapMode.STORE_FMAP, 20, y_addr),
                                       ("col2im", FmapMode.STORE_COL2IM, 25, x_addr)):
            acc = rng.integers(-2**12, 2**12, (rows, 8))
            await bench.fill_c(ctx, 0, acc)
            fault, cycles[name] = await bench.run(ctx, command(
                mode, g, addr=addr, k0=0, col0=100, rows=rows, cols=8, shift=2))
            assert not fault
            if mode == FmapMode.STORE_FMAP:
                fmap_store(map_view(expected, y_addr, (1, 20, 24, 24)), g, acc, 2, 0, 100)
            else:
                col2im_add(map_view(expected, x_addr, (1, 1, 28, 28)), g, acc, 2, 0, 100)
            assert (bench.mem.words == expected).all()

    bench.simulate(run, "fmap_dma_throughput")
    print(f"\nFmapDma cycles (latency 8): {cycles}")
    # About one element per cycle after a set-up of about 60 cycles; COL2IM
    # rows of 8 re-read the previous row's words, so they wait for its writes.
    assert cycles["im2col"] < 1.1 * 25 * 64 + 70
    assert cycles["fmap"] < 1.2 * 20 * 8 + 70
    assert cycles["col2im"] < 3 * 25 * 8 + 70


@pytest.mark.parametrize("kwargs, message", [
    (dict(acc_width=8), "Accumulator width"),
    (dict(rows=0), "rows"),
    (dict(c_depth=True), "C depth"),
    (dict(depth=12), "in-flight depth"),
])
def test_fmap_dma_parameters(kwargs, message):
    params = dict(rows=4, cols=4, acc_width=32, a_depth=8, b_depth=8, c_depth=8)
    params.update(kwargs)
    with pytest.raises(ValueError, match=message):
        FmapDma(**params)


def test_geometry_products_settle_after_their_latency():
    # C * KH * KW and N * OH * OW at the fields' extremes (N * OH * OW needs
    # 48 bits), valid GEOMETRY_PRODUCTS_LATENCY cycles after the geometry
    # changes and not before.
    from fecaffe_hw.cores.fmap_dma import ConvGeometryLayout
    geometry = Signal(ConvGeometryLayout)
    m = Module()
    products = FmapDma.geometry_products(m, geometry)
    latency = FmapDma.GEOMETRY_PRODUCTS_LATENCY
    cases = [dict(channels=65535, kernel_h=255, kernel_w=255, images=65535, out_h=65535,
                  out_w=65535),
             dict(channels=3, kernel_h=5, kernel_w=5, images=2, out_h=24, out_w=24),
             dict(channels=1, kernel_h=1, kernel_w=1, images=1, out_h=1, out_w=65535)]

    async def check(ctx):
        for i, case in enumerate(cases):
            for name, value in case.items():
                ctx.set(getattr(geometry, name), value)
            want = (case["channels"] * case["kernel_h"] * case["kernel_w"],
                    case["images"] * case["out_h"] * case["out_w"])
            await ctx.tick().repeat(latency - 1)
            if i:
                # A cycle early C * KH * KW still has the old kernel area.
                assert ctx.get(products[0]) != want[0], case
            await ctx.tick()
            assert (ctx.get(products[0]), ctx.get(products[1])) == want, case

    simulate(m, check, name="fmap_geometry_products")
