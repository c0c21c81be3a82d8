# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from support import Stalls, simulate, stream_get, stream_put

from fecaffe_hw.cores.grad_accumulator import AccumulatorCommand, GradientAccumulator
from fecaffe_hw.fixedpoint.format import Format
from fecaffe_hw.fixedpoint.lfsr import Lfsr
from fecaffe_hw.fixedpoint.sgd import SgdConstants, SgdFormats, accumulate, sgd_update

FORMATS = SgdFormats(grad=Format(20, 16), acc_bits=26, weight=Format(16, 14),
                     history=Format(20, 22), diff=Format(22, 20))


def _constants(rng, f):
    return SgdConstants(rate=int(rng.integers(0, f.rate.max_int + 1)),
                        momentum=int(rng.integers(0, f.momentum.max_int + 1)),
                        decay=int(rng.integers(0, f.decay.max_int + 1)),
                        norm_mul=int(rng.integers(1, 2**24 + 1)))


def _scenario(rng, dut, rounds):
    """Random rounds of (gradient beats, command), and what the model expects."""
    f, words, lanes = dut.formats, dut.words, dut.lanes
    acc = np.zeros((words, lanes), dtype=np.int64)
    w = rng.integers(f.weight.min_int, f.weight.max_int + 1, (words, lanes))
    h = rng.integers(f.history.min_int, f.history.max_int + 1, (words, lanes))
    lfsr = Lfsr(dut.seed)
    plan = []
    for _ in range(rounds):
        beats = int(rng.integers(1, 3 * words))
        addr = rng.integers(0, words, beats)
        # Mostly small gradients; some full-scale ones make the accumulators wrap.
        grads = np.where(rng.random((beats, lanes)) < 0.2,
                         rng.integers(f.grad.min_int, f.grad.max_int + 1, (beats, lanes)),
                         rng.integers(-2**12, 2**12, (beats, lanes)) >> max(0, 13 - f.grad.bits))
        acc = accumulate(acc, addr, grads, acc_bits=f.acc_bits)
        base = int(rng.integers(0, words))
        count = int(rng.integers(1, words - base + 1))
        span = slice(base, base + count)
        op = AccumulatorCommand.CLEAR if rng.random() < 0.25 else AccumulatorCommand.UPDATE
        consts = _constants(rng, f)
        expect = None
        if op is AccumulatorCommand.UPDATE:
            w_in, h_in = w[span].copy(), h[span].copy()
            w[span], h[span] = sgd_update(w_in, h_in, acc[span], consts, f, lfsr)
            expect = (w_in, h_in, w[span].copy(), h[span].copy())
        acc[span] = 0
        plan.append((addr, grads, op, base, count, consts, expect))
    return plan


def _run(dut, plan, rng, name, stall=0.3, out_stall=None):
    async def control(ctx):
        stalls = Stalls(rng, stall)
        for addr, grads, op, base, count, consts, _ in plan:
            for a, g in zip(addr, grads):
                await stream_put(ctx, dut.grad, {"addr": int(a), "data": [int(v) for v in g]},
                                 stalls=stalls)
            for port, value in (("rate", consts.rate), ("momentum", consts.momentum),
                                ("decay", consts.decay), ("norm_mul", consts.norm_mul)):
                ctx.set(getattr(dut, port), value)
            await stream_put(ctx, dut.cmd, {"op": int(op), "base": base, "count": count},
                             stalls=stalls)
            await ctx.tick().until(~dut.busy)

    async def params(ctx):
        stalls = Stalls(rng, stall)
        for *_, expect in plan:
            if expect is not None:
                for w, h in zip(expect[0], expect[1]):
                    await stream_put(ctx, dut.params_in, {"w": [int(v) for v in w],
                                                          "h": [int(v) for v in h]},
                                     stalls=stalls)

    async def check(ctx):
        stalls = Stalls(rng, stall if out_stall is None else out_stall)
        for k, (*_, expect) in enumerate(plan):
            if expect is None:
                continue
            for i, (w, h) in enumerate(zip(expect[2], expect[3])):
                got = await stream_get(ctx, dut.params_out, stalls=stalls)
                assert [int(v) for v in got.w] == list(w), f"round {k} word {i}: w"
                assert [int(v) for v in got.h] == list(h), f"round {k} word {i}: h"

    simulate(dut, control, params, check, name=name, deadline_cycles=50_000)


def test_update_matches_model():
    rng = np.random.default_rng(7)
    dut = GradientAccumulator(words=6, lanes=2, formats=FORMATS, seed=0x1234_5678)
    _run(dut, _scenario(rng, dut, rounds=6), rng, "grad_accumulator")


def test_output_backpressure():
    """A slow consumer stalls the full pipeline (LFSR included) without loss."""
    rng = np.random.default_rng(8)
    dut = GradientAccumulator(words=12, lanes=1, formats=FORMATS, seed=99)
    _run(dut, _scenario(rng, dut, rounds=3), rng, "grad_accumulator_backpressure",
         stall=0.0, out_stall=0.7)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lanes=st.integers(1, 3), words=st.integers(1, 5),
       grad_bits=st.integers(8, 24), grad_frac=st.integers(0, 24), acc_extra=st.integers(0, 8),
       w_bits=st.integers(6, 18), w_frac=st.integers(0, 16), h_extra_frac=st.integers(0, 10),
       h_bits=st.integers(6, 24), diff_bits=st.integers(8, 24), diff_frac=st.integers(8, 24))
def test_random_formats(seed, lanes, words, grad_bits, grad_frac, acc_extra, w_bits, w_frac,
                        h_extra_frac, h_bits, diff_bits, diff_frac):
    try:
        formats = SgdFormats(grad=Format(grad_bits, grad_frac), acc_bits=grad_bits + acc_extra,
                             weight=Format(w_bits, w_frac),
                             history=Format(h_bits, w_frac + h_extra_frac),
                             diff=Format(diff_bits, diff_frac))
    except ValueError:
        assume(False)     # formats the model rejects (checked in test_sgd_model)
    rng = np.random.default_rng(seed)
    dut = GradientAccumulator(words=words, lanes=lanes, formats=formats,
                              seed=int(rng.integers(1, 2**32)))
    _run(dut, _scenario(rng, dut, rounds=3), rng, "grad_accumulator_random", stall=0.4)


def test_update_streams_one_word_per_cycle():
    """Without stalls the update takes ``count + latency`` cycles from command
    acceptance to the last output."""
    dut = GradientAccumulator(words=16, formats=FORMATS)
    cycles = []

    async def control(ctx):
        await stream_put(ctx, dut.cmd, {"op": AccumulatorCommand.UPDATE, "base": 0,
                                        "count": 16})
        ctx.set(dut.params_in.valid, 1)
        ctx.set(dut.params_out.ready, 1)
        n = 0
        while ctx.get(dut.busy):
            await ctx.tick()
            n += 1
        cycles.append(n)

    simulate(dut, control, name="grad_accumulator_rate")
    assert cycles == [16 + dut.latency]


@pytest.mark.parametrize("kwargs, match", [
    ({"words": 0}, "Word count"),
    ({"lanes": 0}, "Lane count"),
    ({"seed": 0}, "seed"),
])
def test_parameter_validation(kwargs, match):
    args = {"words": 4, "formats": FORMATS} | kwargs
    with pytest.raises(ValueError, match=match):
        GradientAccumulator(**args)
