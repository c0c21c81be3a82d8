# amaranth: UnusedElaboratable=no
import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import ResetInserter, Signal
from hypothesis import given, settings, strategies as st

from fecaffe_hw.cores.attributes import LOCAL_REGISTER
from fecaffe_hw.cores.systolic import SystolicArray
from fecaffe_hw.fixedpoint import gemm
from fecaffe_hw.synthesis import synthesize
from support import Stalls, simulate, stream_get, stream_put


def _random_tiles(rng, rows, cols, data_width, ks):
    lo, hi = -2 ** (data_width - 1), 2 ** (data_width - 1)
    tiles = []
    for k in ks:
        a = rng.integers(lo, hi, (rows, k))
        b = rng.integers(lo, hi, (k, cols))
        # Extreme corners: the most negative value times itself is the largest
        # product and the one most likely to break sign handling.
        extreme = rng.random((rows, k)) < 0.2
        a[extreme] = rng.choice([lo, hi - 1], extreme.sum())
        extreme = rng.random((k, cols)) < 0.2
        b[extreme] = rng.choice([lo, hi - 1], extreme.sum())
        tiles.append((a, b))
    return tiles


def _operand_beats(tiles):
    for a, b in tiles:
        k = a.shape[1]
        for step in range(k):
            yield {"a": [int(v) for v in a[:, step]], "b": [int(v) for v in b[step]],
                   "last": int(step == k - 1)}


def _run(dut, tiles, *, name, rng=None, put_stall=0.0, get_stall=0.0):
    expected = [gemm(a, b, dut.acc_width) for a, b in tiles]
    put_stalls = Stalls(rng, put_stall)
    get_stalls = Stalls(rng, get_stall)

    async def feed(ctx):
        for beat in _operand_beats(tiles):
            await stream_put(ctx, dut.operands, beat, stalls=put_stalls)

    async def check(ctx):
        for t, want in enumerate(expected):
            for i in range(dut.rows):
                got = await stream_get(ctx, dut.results, stalls=get_stalls)
                assert [int(v) for v in got] == [int(v) for v in want[i]], (t, i)

    simulate(dut, feed, check, name=name)


@pytest.mark.parametrize("rows, cols, data_width, acc_width, ks", [
    (2, 3, 8, 16, [5, 1, 2, 7, 1, 1, 3]),
    (4, 4, 8, 18, [4, 9, 1, 6, 2, 4]),
    (3, 2, 6, 12, [1, 1, 1, 8, 3]),
    (1, 1, 4, 8, [1, 3, 1]),
])
@pytest.mark.parametrize("put_stall, get_stall", [(0.0, 0.0), (0.3, 0.0), (0.2, 0.5)])
def test_gemm_tiles(rows, cols, data_width, acc_width, ks, put_stall, get_stall):
    rng = np.random.default_rng([rows, cols, data_width, len(ks), int(10 * get_stall)])
    dut = SystolicArray(rows=rows, cols=cols, data_width=data_width, acc_width=acc_width)
    tiles = _random_tiles(rng, rows, cols, data_width, ks)
    _run(dut, tiles, name=f"systolic_{rows}x{cols}_{put_stall}_{get_stall}", rng=rng,
         put_stall=put_stall, get_stall=get_stall)


@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), data_width=st.integers(2, 10),
       acc_extra=st.integers(0, 6), ks=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       seed=st.integers(0, 2**32 - 1))
def test_gemm_random_shapes(rows, cols, data_width, acc_extra, ks, seed):
    rng = np.random.default_rng(seed)
    acc_width = 2 * data_width + acc_extra
    dut = SystolicArray(rows=rows, cols=cols, data_width=data_width, acc_width=acc_width)
    tiles = _random_tiles(rng, rows, cols, data_width, ks)
    _run(dut, tiles, name="systolic_random", rng=rng, put_stall=0.2, get_stall=0.3)


def test_accumulator_wraps():
    # Every product is (-128)**2 = 2**14 and acc_width is 16, so the exact sum
    # leaves the accumulator range after two steps: only wrapping matches.
    dut = SystolicArray(rows=2, cols=2, data_width=8, acc_width=16)
    a = np.full((2, 11), -128)
    b = np.full((11, 2), -128)
    b[3, 1] = 127
    want = gemm(a, b, 16)
    assert (want != a @ b).any()
    _run(dut, [(a, b), (a, b)], name="systolic_wrap")


def test_operand_layout_and_result_shape():
    dut = SystolicArray(rows=3, cols=5, data_width=12, acc_width=30)
    assert dut.operand_layout.size == 3 * 12 + 5 * 12 + 1
    assert dut.result_layout.size == 5 * 30
    assert (dut.rows, dut.cols, dut.data_width, dut.acc_width) == (3, 5, 12, 30)


@pytest.mark.parametrize("kwargs, match", [
    ({"rows": 0}, "rows must be a positive integer, not 0"),
    ({"cols": 2.0}, "cols must be a positive integer, not 2.0"),
    ({"data_width": 1, "acc_width": 8}, "Data width .* not 1"),
    ({"data_width": 26, "acc_width": 48}, "Data width .* not 26"),
    ({"acc_width": 31}, r"Accumulator width must be an integer in 32\.\.48 .* not 31"),
    ({"acc_width": 49}, "not 49"),
    ({"data_width": 25, "acc_width": 48}, "Data width 25 needs an accumulator of at least 50"),
])
def test_parameter_validation(kwargs, match):
    params = {"rows": 2, "cols": 2, "data_width": 16, "acc_width": 40} | kwargs
    with pytest.raises(ValueError, match=match):
        SystolicArray(**params)


def test_fill_latency():
    # Docstring: row i is offered cols + 4 + i cycles after the last beat is taken.
    dut = SystolicArray(rows=3, cols=2, data_width=8, acc_width=16)
    rng = np.random.default_rng(11)
    (a, b), = _random_tiles(rng, 3, 2, 8, [3])
    want = gemm(a, b, 16)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.results.ready, 1)
        ctx.set(dut.operands.valid, 1)
        cycle = 0
        for beat in _operand_beats([(a, b)]):
            ctx.set(dut.operands.payload, beat)
            assert ctx.get(dut.operands.ready)
            await ctx.tick()
            cycle += 1
        last_taken = cycle - 1
        ctx.set(dut.operands.valid, 0)
        while len(seen) < 3:
            if ctx.get(dut.results.valid):
                seen[cycle - last_taken] = [int(v) for v in ctx.get(dut.results.payload)]
            await ctx.tick()
            cycle += 1

    simulate(dut, bench, name="systolic_latency", deadline_cycles=100)
    assert seen == {2 + 4 + i: [int(v) for v in want[i]] for i in range(3)}


def measure_utilization(dut, tiles):
    """Run ``tiles`` with no stalls and return (MACs / (PEs * cycles), cycles).

    Cycles run from the first operand beat offered to the last result row
    taken, so fill and drain are charged to the array.
    """
    expected = [gemm(a, b, dut.acc_width) for a, b in tiles]
    cycle = [0]
    span = {}

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def feed(ctx):
        span["start"] = cycle[0]
        for beat in _operand_beats(tiles):
            await stream_put(ctx, dut.operands, beat)

    async def check(ctx):
        for want in expected:
            for i in range(dut.rows):
                got = await stream_get(ctx, dut.results)
                assert [int(v) for v in got] == [int(v) for v in want[i]]
        span["end"] = cycle[0]

    simulate(dut, feed, check, processes=[clock], name="systolic_utilization")
    cycles = span["end"] - span["start"]
    macs = sum(a.shape[1] for a, _ in tiles) * dut.rows * dut.cols
    return macs / (dut.rows * dut.cols * cycles), cycles


def test_utilization_back_to_back():
    rows = cols = 4
    k, n_tiles = 64, 4
    dut = SystolicArray(rows=rows, cols=cols, data_width=8, acc_width=24)
    rng = np.random.default_rng(7)
    tiles = _random_tiles(rng, rows, cols, 8, [k] * n_tiles)
    utilization, cycles = measure_utilization(dut, tiles)
    # The docstring's bound: one beat per cycle for all n*K beats plus one
    # fill and drain of rows + cols + 4 cycles. A bubble per beat gives ~0.5.
    bound = n_tiles * k / (n_tiles * k + rows + cols + 4)
    assert utilization >= bound, (utilization, cycles)


def test_short_tiles_are_paced_not_lost():
    # K < rows: results leave one row per cycle, so the array must hold the
    # next `last` beat, but no longer than one tile per `rows` cycles.
    dut = SystolicArray(rows=4, cols=2, data_width=8, acc_width=16)
    rng = np.random.default_rng(3)
    tiles = _random_tiles(rng, 4, 2, 8, [1] * 12)
    utilization, cycles = measure_utilization(dut, tiles)
    # 11 pacing gaps of `rows`, the last beat, then fill and drain.
    assert cycles <= 11 * 4 + 1 + 4 + 2 + 4, cycles


def test_multipliers_map_to_dsp48e1():
    dut = SystolicArray(rows=2, cols=2, data_width=8, acc_width=20)
    used = synthesize(dut, family="xc7")
    assert used.dsp == dut.rows * dut.cols, used.cells
    assert used.bram36 == 0


@pytest.mark.parametrize("rows, cols", [(4, 4), (2, 5), (5, 2), (1, 3)])
def test_reservations_never_hold_back_a_prompt_consumer(rows, cols):
    # Back-to-back tiles of the shortest unpaced depth K = rows: the output
    # FIFO's reservations must not add a cycle to the docstring's count.
    dut = SystolicArray(rows=rows, cols=cols, data_width=8, acc_width=16)
    rng = np.random.default_rng(rows * 10 + cols)
    n_tiles = 8
    tiles = _random_tiles(rng, rows, cols, 8, [rows] * n_tiles)
    _, cycles = measure_utilization(dut, tiles)
    assert cycles <= n_tiles * rows + rows + cols + 4, cycles


def test_stalled_consumer_holds_last_beats_and_loses_nothing():
    # The grid never stops, so with results.ready low the array may only take
    # as many tiles as the output FIFO has rows for; then `last` waits.
    rows, cols = 3, 2
    dut = SystolicArray(rows=rows, cols=cols, data_width=8, acc_width=16)
    rng = np.random.default_rng(5)
    tiles = _random_tiles(rng, rows, cols, 8, [4, 1, 3, 5, 2, 4, 1, 6])
    expected = [gemm(a, b, 16) for a, b in tiles]
    STALL = 300             # cycles before the consumer takes its first row
    cycle = [0]
    lasts_taken = []        # the cycle each `last` beat was taken

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def feed(ctx):
        for beat in _operand_beats(tiles):
            await stream_put(ctx, dut.operands, beat)
            if beat["last"]:
                lasts_taken.append(cycle[0])

    async def check(ctx):
        await ctx.tick().repeat(STALL)
        for t, want in enumerate(expected):
            for i in range(rows):
                got = await stream_get(ctx, dut.results)
                assert [int(v) for v in got] == [int(v) for v in want[i]], (t, i)

    simulate(dut, feed, check, processes=[clock], name="systolic_stalled_consumer")
    assert len(lasts_taken) == len(tiles)
    assert sum(c < STALL for c in lasts_taken) == dut.result_depth // rows


def test_reset_mid_tile_loses_nothing_after_it():
    # Only the step flags are reset (operands, accumulators and the drain are
    # not): a reset while one tile drains and the next is half fed must leave
    # no stale row and no stale partial sum in the tiles after it.
    rows, cols = 3, 4
    dut = SystolicArray(rows=rows, cols=cols, data_width=8, acc_width=20)
    reset = Signal()
    top = ResetInserter(reset)(dut)
    rng = np.random.default_rng(11)
    before = _random_tiles(rng, rows, cols, 8, [5, 6])
    after = _random_tiles(rng, rows, cols, 8, [4, 1, 7])
    reset_done = [False]

    async def feed(ctx):
        beats = list(_operand_beats(before))
        for beat in beats[:-3]:              # the second tile stops 3 beats short of `last`
            await stream_put(ctx, dut.operands, beat)
        await ctx.tick().repeat(2)
        ctx.set(reset, 1)
        await ctx.tick()
        ctx.set(reset, 0)
        reset_done[0] = True
        for beat in _operand_beats(after):
            await stream_put(ctx, dut.operands, beat)

    async def check(ctx):
        while not reset_done[0]:
            await ctx.tick()
        for t, (a, b) in enumerate(after):
            want = gemm(a, b, dut.acc_width)
            for i in range(rows):
                got = await stream_get(ctx, dut.results)
                assert [int(v) for v in got] == [int(v) for v in want[i]], (t, i)
        await ctx.tick().repeat(2 * (rows + cols))
        assert not ctx.get(dut.results.valid), "a row came out that no tile made"

    simulate(top, feed, check, name="systolic_reset_mid_tile")


def test_step_flags_are_local_registers():
    # One copy of a PE's step flags per PE (cores.attributes.LOCAL_REGISTER):
    # unmarked, synthesis shares one register across each anti-diagonal.
    dut = SystolicArray(rows=3, cols=4, data_width=8, acc_width=20)
    text = rtlil.convert(dut)
    assert text.count(f"attribute \\{LOCAL_REGISTER} 1") == 2 * dut.rows * dut.cols
