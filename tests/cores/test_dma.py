# amaranth: UnusedElaboratable=no
"""Dma against a Python tensor memory: strided 2-D loads into the A, B and C
scratchpads (both orientations, long rows split into bursts), requantising
stores from C, refused commands, under random memory latency and stalls."""

import numpy as np
import pytest

from amaranth.hdl import Module

from fecaffe_hw.cores.dma import BUFFER_A, BUFFER_B, BUFFER_BIAS, BUFFER_C, Dma
from fecaffe_hw.cores.scratchpad import Scratchpad
from fecaffe_hw.fixedpoint import Format, requantize

from support import TensorMemory, simulate, stream_put

ROWS, COLS, DW, AW = 4, 3, 16, 32
DEPTHS = dict(a_depth=600, b_depth=16, c_depth=16)


def make_bench(cols=COLS):
    dma = Dma(rows=ROWS, cols=cols, data_width=DW, acc_width=AW, **DEPTHS)
    top = Module()
    top.submodules.dma = dma
    bufs = {
        BUFFER_A: Scratchpad(lanes=ROWS, lane_width=DW, depth=DEPTHS["a_depth"]),
        BUFFER_B: Scratchpad(lanes=cols, lane_width=DW, depth=DEPTHS["b_depth"]),
        BUFFER_C: Scratchpad(lanes=cols, lane_width=AW, depth=DEPTHS["c_depth"],
                             read_ports=2),
    }
    for code, buf in bufs.items():
        top.submodules[f"buf{code}"] = buf
    for code, port in ((BUFFER_A, dma.a_write), (BUFFER_B, dma.b_write),
                       (BUFFER_C, dma.c_write)):
        top.d.comb += [bufs[code].write.addr.eq(port.addr), bufs[code].write.en.eq(port.en),
                       bufs[code].write.data.eq(port.data)]
    c = bufs[BUFFER_C]
    top.d.comb += [c.read1.addr.eq(dma.c_read.addr), c.read1.en.eq(dma.c_read.en),
                   dma.c_read.data.eq(c.read1.data)]
    return top, dma, bufs


def command(*, store=0, buffer, transpose=0, addr, stride, rows, cols, word=0, shift=0):
    return {"store": store, "buffer": buffer, "transpose": transpose, "addr": addr,
            "stride": stride, "rows": rows, "cols": cols, "word": word, "shift": shift & 0xFF}


async def run_command(ctx, dma, cmd):
    """Issue ``cmd``; return the fault flag of its ``done`` pulse."""
    await stream_put(ctx, dma.cmd, cmd)
    while True:
        if ctx.get(dma.done):
            fault = ctx.get(dma.fault)
            await ctx.tick()
            return fault
        await ctx.tick()


async def read_buffer(ctx, buf, words):
    rows = []
    for w in words:
        ctx.set(buf.read0.addr, w)
        ctx.set(buf.read0.en, 1)
        await ctx.tick()
        rows.append([int(x) for x in ctx.get(buf.read0.data)])
    ctx.set(buf.read0.en, 0)
    return rows


def memory_image(rng, n_words):
    return rng.integers(0, 2**32, n_words, dtype=np.uint64).astype(np.uint32)


def test_dma_loads_strided_regions():
    rng = np.random.default_rng(1)
    top, dma, bufs = make_bench()
    words = memory_image(rng, 2048)
    mem = TensorMemory(dma.mem, words, rng, latency=(0, 6), outstanding=1)
    elements = words.view(np.int16)          # little-endian: element 0 in the low half

    # (buffer, transpose, row-major region at element e0 with row pitch, rows, cols, word, shift)
    cases = [
        (BUFFER_A, 1, 10, 20, 4, 7, 3, 0),        # A tile 4 x 7, columns to words
        (BUFFER_B, 0, 100, 12, 5, 3, 2, 0),       # B tile 5 x 3
        (BUFFER_A, 0, 300, 600, 2, 4, 0, 0),      # A loaded as A^T: rows to words
        (BUFFER_A, 1, 2, 1200, 3, 520, 10, 0),    # rows of 260 words: two bursts each
        (BUFFER_C, 0, 40, 6, 4, 3, 5, 9),         # C with a left shift
        (BUFFER_C, 1, 64, 0, 3, 2, 0, 0),         # stride 0: a bias broadcast
    ]
    results = []

    async def bench(ctx):
        for buf, transpose, e0, pitch, rows, cols, word, shift in cases:
            cmd = command(buffer=buf, transpose=transpose, addr=2 * e0, stride=2 * pitch,
                          rows=rows, cols=cols, word=word, shift=shift)
            assert not await run_command(ctx, dma, cmd)
            extent = cols if transpose else rows
            results.append(await read_buffer(ctx, bufs[buf], range(word, word + extent)))

    simulate(top, bench, background=mem.processes(), name="dma_loads", deadline_cycles=60_000)

    for (buf, transpose, e0, pitch, rows, cols, word, shift), got in zip(cases, results):
        region = np.array([[int(elements[e0 + r * pitch + c]) for c in range(cols)]
                           for r in range(rows)], dtype=np.int64) << shift
        got = np.array(got, dtype=np.int64)
        if transpose:
            assert (got[:, :rows] == region.T).all()
        else:
            assert (got[:, :cols] == region).all()
    # Rows of 520 elements are 260 words: a 256-word burst, then 4 words.
    long_rows = [(4 + 2400 * r + 1024 * half, (256, 4)[half], 0)
                 for r in range(3) for half in range(2)]
    start = mem.bursts.index(long_rows[0])
    assert mem.bursts[start:start + 6] == long_rows


@pytest.mark.parametrize("shift", [0, 4, 12])
def test_dma_store_requantises(shift):
    rng = np.random.default_rng(2 + shift)
    top, dma, bufs = make_bench()
    words = memory_image(rng, 512)
    # Ties at shift 4 that round-half-up would get wrong, and the extremes.
    words.view(np.int16)[[0, 1, 4, 5, 8, 9]] = [2, -2, 10, -6, 32767, -32768]
    mem = TensorMemory(dma.mem, words, rng, latency=(0, 6), outstanding=1)
    source = words.view(np.int16).astype(np.int64)
    load_shift = 2                           # shift 0 saturates, 4 meets ties often
    rows, cols = 14, 2                       # 2 x 16 bits: one memory word per row

    async def bench(ctx):
        # Into C scaled by 4, out again shifted right: saturates and rounds.
        assert not await run_command(ctx, dma, command(
            buffer=BUFFER_C, addr=0, stride=8, rows=rows, cols=cols, word=0, shift=load_shift))
        assert not await run_command(ctx, dma, command(
            store=1, buffer=BUFFER_C, addr=1024, stride=12, rows=rows, cols=cols, word=0,
            shift=shift))
        # Transposed store: C words become memory columns.
        assert not await run_command(ctx, dma, command(
            store=1, buffer=BUFFER_C, transpose=1, addr=1536, stride=2 * (rows - 2), rows=cols,
            cols=rows - 2, word=0, shift=shift))

    before = words.copy()
    simulate(top, bench, background=mem.processes(), name=f"dma_store_{shift}", deadline_cycles=20_000)

    c = np.array([[source[4 * r + j] for j in range(cols)] for r in range(rows)]) << load_shift
    expected = requantize(c, shift, Format(DW, 0)).astype(np.int16)
    got = words[256:256 + 3 * rows].view(np.int16).reshape(rows, 6)[:, :cols]
    assert (got == expected).all()
    transposed = words[384:384 + cols * (rows - 2) // 2].view(np.int16).reshape(cols, rows - 2)
    assert (transposed == expected[:rows - 2].T).all()
    # Untouched words between the strided rows.
    assert (words[256:256 + 3 * rows].reshape(rows, 3)[:, 1:]
            == before[256:256 + 3 * rows].reshape(rows, 3)[:, 1:]).all()


def test_dma_store_offers_a_word_per_cycle_within_a_burst():
    """Untransposed, the store pipeline keeps up with a memory that takes a
    word every cycle: no idle cycle inside a burst (16 lanes: 8 words a row)."""
    rng = np.random.default_rng(7)
    top, dma, bufs = make_bench(cols=16)
    words = memory_image(rng, 1024)
    mem = TensorMemory(dma.mem, words, rng, stall=0.0, latency=0, outstanding=4)
    rows, cols = 6, 16
    taken = []

    async def bench(ctx):
        assert not await run_command(ctx, dma, command(
            buffer=BUFFER_C, addr=0, stride=2 * cols, rows=rows, cols=cols, word=0))
        assert not await run_command(ctx, dma, command(
            store=1, buffer=BUFFER_C, addr=2048, stride=2 * cols, rows=rows, cols=cols,
            word=0, shift=0))
        mem.stop = True

    async def watch(ctx):
        async for _ in ctx.tick():
            if ctx.get(dma.mem.w.valid) and ctx.get(dma.mem.w.ready):
                taken.append(mem.cycle)

    simulate(top, bench, background=(*mem.processes(), watch), name="dma_store_rate",
             deadline_cycles=5_000)
    per_row = cols // 2
    assert len(taken) == rows * per_row
    for r in range(rows):
        burst = taken[r * per_row:(r + 1) * per_row]
        assert burst == list(range(burst[0], burst[0] + per_row)), (r, taken)
    assert (words[512:512 + rows * per_row] == words[:rows * per_row]).all()


def test_dma_refuses_bad_commands():
    rng = np.random.default_rng(3)
    top, dma, bufs = make_bench()
    mem = TensorMemory(dma.mem, memory_image(rng, 64), rng, latency=(0, 6), outstanding=1)
    bad = [
        command(buffer=BUFFER_A, transpose=1, addr=0, stride=8, rows=ROWS + 1, cols=2),
        command(buffer=BUFFER_B, addr=2, stride=8, rows=2, cols=2),          # misaligned
        command(buffer=BUFFER_B, addr=0, stride=6, rows=2, cols=2),          # stride
        command(buffer=BUFFER_B, addr=0, stride=8, rows=2, cols=2, word=15),  # past depth
        command(store=1, buffer=BUFFER_A, addr=0, stride=8, rows=1, cols=2),  # store from A
        command(store=1, buffer=BUFFER_C, addr=0, stride=8, rows=1, cols=3),  # half word
        command(buffer=BUFFER_A, addr=0, stride=8, rows=0, cols=2),
        command(buffer=BUFFER_A, addr=0, stride=8, rows=1, cols=2, shift=1),
        command(buffer=BUFFER_BIAS, addr=0, stride=8, rows=1, cols=2),   # BIAS: one lane
    ]
    faults = []

    async def bench(ctx):
        for cmd in bad:
            faults.append(await run_command(ctx, dma, cmd))
        faults.append(await run_command(ctx, dma, command(
            store=0, buffer=BUFFER_C, addr=256, stride=4, rows=1, cols=2)))   # past memory

    simulate(top, bench, background=mem.processes(), name="dma_refuses", deadline_cycles=5_000)
    assert faults == [1] * (len(bad) + 1)
    assert len(mem.bursts) == 1


def test_dma_rejects_bad_parameters():
    with pytest.raises(ValueError, match="12"):
        Dma(rows=4, cols=4, data_width=12, acc_width=32, a_depth=4, b_depth=4, c_depth=4)
    with pytest.raises(ValueError, match="8"):
        Dma(rows=4, cols=4, data_width=16, acc_width=8, a_depth=4, b_depth=4, c_depth=4)
    with pytest.raises(ValueError, match="0"):
        Dma(rows=0, cols=4, data_width=16, acc_width=32, a_depth=4, b_depth=4, c_depth=4)


def test_scratchpad_rejects_bad_parameters():
    with pytest.raises(ValueError, match="lanes"):
        Scratchpad(lanes=0, lane_width=16, depth=4)
    with pytest.raises(ValueError, match="depth"):
        Scratchpad(lanes=2, lane_width=16, depth=1)
    with pytest.raises(ValueError, match="Transparent read port 2"):
        Scratchpad(lanes=2, lane_width=16, depth=4, read_ports=2, transparent=(2,))
