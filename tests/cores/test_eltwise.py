# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from support import Stalls, simulate, stream_get, stream_put


from fecaffe_hw.cores.eltwise import TABLE_OPS, TABLES, Eltwise, derivative_shape
from fecaffe_hw.fixedpoint.activation import EltwiseOp, eltwise
from fecaffe_hw.fixedpoint.format import Format


def _operands(rng, dut, n):
    """Random beats mixing full-range words with values near the interesting range."""
    lanes, fi, fa = dut.lanes, dut.in_fmt, dut.aux_fmt

    def mixed(fmt, near):
        full = rng.integers(fmt.min_int, fmt.max_int + 1, (n, lanes))
        small = rng.integers(-near, near + 1, (n, lanes))
        small = np.clip(small, fmt.min_int, fmt.max_int)
        return np.where(rng.random((n, lanes)) < 0.3, full, small)

    x = mixed(fi, min(20 << max(fi.frac, 0), fi.max_int))
    aux = mixed(fa, min(3 << max(fa.frac, 0) >> 1, fa.max_int))
    index = rng.integers(0, dut.bias_depth, n)
    return x, aux, index


def _run(dut, ops, slopes, x, aux, index, biases, rng, name, stall=0.3):
    n = len(ops)
    expected = np.stack([
        eltwise(ops[k], x[k], in_fmt=dut.in_fmt, out_fmt=dut.out_fmt, aux=aux[k],
                aux_fmt=dut.aux_fmt, bias=biases[index[k]], bias_fmt=dut.bias_fmt,
                slope=slopes[k], slope_fmt=dut.slope_fmt)
        for k in range(n)])

    async def feed(ctx):
        for addr, word in enumerate(biases):
            ctx.set(dut.bias_addr, addr)
            ctx.set(dut.bias_data, [int(v) for v in word])
            ctx.set(dut.bias_we, 1)
            await ctx.tick()
        ctx.set(dut.bias_we, 0)
        stalls = Stalls(rng, stall)
        for k in range(n):
            ctx.set(dut.op, int(ops[k]))
            ctx.set(dut.slope, int(slopes[k]))
            await stream_put(ctx, dut.data_in, {
                "x": [int(v) for v in x[k]], "aux": [int(v) for v in aux[k]],
                "index": int(index[k])}, stalls=stalls)

    async def check(ctx):
        stalls = Stalls(rng, stall)
        for k in range(n):
            got = await stream_get(ctx, dut.data_out, stalls=stalls)
            got = [int(v) for v in got]
            assert got == list(expected[k]), \
                f"beat {k} op {EltwiseOp(ops[k]).name}: x={list(x[k])} aux={list(aux[k])}"

    simulate(dut, feed, check, name=name, deadline_cycles=20 * n + 1000)


@pytest.mark.parametrize("op", list(EltwiseOp))
def test_each_op_matches_model(op):
    rng = np.random.default_rng(100 + op)
    dut = Eltwise(in_fmt=Format(24, 12), out_fmt=Format(12, 8), aux_fmt=Format(12, 10),
                  bias_fmt=Format(10, 6), lanes=2, bias_depth=4)
    n = 48
    x, aux, index = _operands(rng, dut, n)
    biases = rng.integers(-2**9, 2**9, (dut.bias_depth, dut.lanes))
    slopes = np.full(n, int(rng.integers(0, 2**14)))
    _run(dut, [op] * n, slopes, x, aux, index, biases, rng, f"eltwise_{op.name}")


@pytest.mark.parametrize("tables", [(), ("tanh",), ("sigmoid",)])
def test_ops_without_some_tables(tables):
    """A core built with fewer tables (nets without Sigmoid or TanH) runs the
    ops it has bit-exact; it has no ROM at all without tables."""
    rng = np.random.default_rng(7 + len(tables))
    dut = Eltwise(in_fmt=Format(20, 12), out_fmt=Format(14, 9), aux_fmt=Format(12, 10),
                  bias_fmt=Format(10, 6), lanes=2, bias_depth=2, tables=tables)
    assert dut.tables == tables
    missing = {op for name in TABLES if name not in tables for op in TABLE_OPS[name]}
    ops = [op for op in EltwiseOp if op not in missing]
    n = 40
    x, aux, index = _operands(rng, dut, n)
    biases = rng.integers(-2**9, 2**9, (dut.bias_depth, dut.lanes))
    slopes = rng.integers(0, 2**14, n)
    _run(dut, rng.choice(ops, n), slopes, x, aux, index, biases, rng,
         f"eltwise_tables_{'_'.join(tables) or 'none'}", stall=0.3)
    with pytest.raises(ValueError, match="tables must be among sigmoid, tanh, not 'relu'"):
        Eltwise(in_fmt=Format(20, 12), out_fmt=Format(14, 9), tables=("relu",))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lanes=st.integers(1, 3),
       in_bits=st.integers(10, 36), in_frac=st.integers(4, 20),
       out_bits=st.integers(4, 20), out_frac=st.integers(-2, 24),
       aux_bits=st.integers(4, 18), aux_frac=st.integers(2, 16),
       bias_bits=st.integers(2, 16), bias_frac_drop=st.integers(0, 6),
       slope_bits=st.integers(2, 18))
def test_random_formats_and_ops(seed, lanes, in_bits, in_frac, out_bits, out_frac, aux_bits,
                                aux_frac, bias_bits, bias_frac_drop, slope_bits):
    rng = np.random.default_rng(seed)
    slope_fmt = Format(slope_bits, slope_bits - 1)
    dut = Eltwise(in_fmt=Format(in_bits, in_frac), out_fmt=Format(out_bits, out_frac),
                  aux_fmt=Format(aux_bits, aux_frac),
                  bias_fmt=Format(bias_bits, in_frac - bias_frac_drop),
                  slope_fmt=slope_fmt, lanes=lanes, bias_depth=3)
    n = 40
    x, aux, index = _operands(rng, dut, n)
    biases = rng.integers(dut.bias_fmt.min_int, dut.bias_fmt.max_int + 1, (3, lanes))
    # Op and slope change from beat to beat: both must travel with their beat.
    ops = rng.choice(list(EltwiseOp), n)
    slopes = rng.integers(slope_fmt.min_int, slope_fmt.max_int + 1, n)
    _run(dut, ops, slopes, x, aux, index, biases, rng, "eltwise_random", stall=0.4)


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12])
def test_derivative_shape_holds_every_derivative_and_no_more(bits):
    """Every aux of the format, every frac: the rounded derivatives fit the
    shape, and at least one needs its top bit (the bound is tight)."""
    for frac in range(bits + 3):
        fmt = Format(bits, frac)
        aux = np.arange(fmt.min_int, fmt.max_int + 1, dtype=np.int64)
        one = 1 << frac
        derivs = np.concatenate([aux * (one - aux), one * one - aux * aux])
        # Round half to even by ``frac``, as the core does.
        rounded = [(int(v) + (one >> 1) - 1 + ((int(v) >> frac) & 1)) >> frac if frac else int(v)
                   for v in derivs]
        width = derivative_shape(fmt).width
        assert -(1 << (width - 1)) <= min(rounded) and max(rounded) < 1 << (width - 1), fmt
        assert max(max(rounded), -min(rounded) - 1) >= 1 << (width - 2), fmt


def test_full_throughput():
    """Without stalls one beat leaves per cycle after the core's latency."""
    dut = Eltwise(in_fmt=Format(16, 8), out_fmt=Format(8, 4))
    n = 20
    times = []

    async def feed(ctx):
        ctx.set(dut.op, EltwiseOp.RELU)
        ctx.set(dut.data_in.valid, 1)
        for k in range(n):
            ctx.set(dut.data_in.payload, {"x": [k * 16], "aux": [0], "index": 0})
            await ctx.tick()
            assert ctx.get(dut.data_in.ready)
        ctx.set(dut.data_in.valid, 0)

    async def drain(ctx):
        ctx.set(dut.data_out.ready, 1)
        cycle = 0
        while len(times) < n:
            if ctx.get(dut.data_out.valid):
                assert int(ctx.get(dut.data_out.payload)[0]) == min(len(times), 127)
                times.append(cycle)
            await ctx.tick()
            cycle += 1

    simulate(dut, feed, drain, name="eltwise_throughput")
    assert times == list(range(dut.latency, dut.latency + n))


@pytest.mark.parametrize("kwargs, match", [
    ({"lanes": 0}, "Lane count"),
    ({"bias_depth": 0}, "Bias depth"),
    ({"bias_fmt": Format(8, 20)}, "Bias frac 20"),
    ({"in_fmt": Format(16, 0)}, "too coarse"),
    ({"slope_fmt": Format(30, 20)}, "slope_fmt"),
    ({"aux_fmt": Format(8, -1)}, "aux_fmt frac"),
])
def test_parameter_validation(kwargs, match):
    args = {"in_fmt": Format(16, 8), "out_fmt": Format(8, 4)} | kwargs
    with pytest.raises(ValueError, match=match):
        Eltwise(**args)



@pytest.mark.parametrize("value_bits, bits, shift_bits", [(50, 16, 6), (20, 8, 4), (9, 8, 3)])
def test_shift_saturate_matches_numpy(value_bits, bits, shift_bits):
    """The narrow shifter with a mask-checked overflow equals saturating the
    whole shifted value, for every shift and values near each boundary."""
    from amaranth.hdl import Module, Signal, signed
    from amaranth.sim import Simulator

    from fecaffe_hw.cores.eltwise import shift_saturate, shift_saturate_mask

    value, shift = Signal(signed(value_bits)), Signal(shift_bits)
    out = Signal(signed(bits))
    m = Module()
    m.d.comb += out.eq(shift_saturate(value, shift, shift_saturate_mask(shift, value_bits, bits),
                                      bits))
    rng = np.random.default_rng(value_bits)
    lo, hi = -(1 << (value_bits - 1)), (1 << (value_bits - 1)) - 1
    cases = []
    for s in range(1 << shift_bits):
        edges = [(1 << (bits - 1 + s)) + d for d in (-1, 0, 1)]
        for v in [0, lo, hi, *edges, *(-e for e in edges), *rng.integers(lo, hi + 1, 8)]:
            cases.append((int(np.clip(v, lo, hi)), s))

    async def bench(ctx):
        for v, s in cases:
            ctx.set(value, v)
            ctx.set(shift, s)
            want = int(np.clip(v >> s, -(1 << (bits - 1)), (1 << (bits - 1)) - 1))
            assert ctx.get(out) == want, (v, s)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
