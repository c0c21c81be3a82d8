# amaranth: UnusedElaboratable=no
"""EltwiseEngine alone against a Python tensor memory (latency, stalls, bursts
in flight): every op over several chunks (the last one partial), shifts to
both limits, every word of the destination compared with
``fixedpoint.activation``; and one word per cycle through the requantiser
while the memory keeps up."""

import numpy as np
import pytest

from fecaffe_hw.cores.eltwise import TABLE_OPS
from fecaffe_hw.cores.eltwise_engine import ISA_OPS, EltwiseEngine
from fecaffe_hw.fixedpoint import Format, requantize
from fecaffe_hw.fixedpoint.activation import (relu_backward, relu_forward, sigmoid_backward,
                                              sigmoid_forward, tanh_backward, tanh_forward)
from fecaffe_hw.runtime.isa import ELTWISE_TABLE, EltwiseOp
from support import TensorMemory, simulate, stream_put

IN_FRAC, AUX_FRAC = 12, 14
SLOPE_FMT = Format(25, 16)
MEM_WORDS = 2048


def fmt(frac):
    return Format(16, frac)


def place(words, addr, values):
    words.view(np.int16)[addr // 2:addr // 2 + len(values)] = np.asarray(values, np.int16)


def fetch(words, addr, count):
    return words.view(np.int16)[addr // 2:addr // 2 + count].astype(np.int64)


def command(engine, func, *, src=0, aux=0, dst, count, shift=0, slope=0):
    op, read_src, read_aux, add = ISA_OPS[func]
    return {"op": int(op), "read_src": int(read_src), "read_aux": int(read_aux),
            "add": int(add), "src": src, "aux": aux, "dst": dst, "words": count // 2,
            "shift": shift + engine.base_shift, "slope": slope}


def run(engine, words, commands, *, name, seed, stall, latency=(0, 8), monitor=None):
    rng = np.random.default_rng(seed)
    memory = TensorMemory(engine.mem, words, rng, stall=stall, latency=latency)

    async def drive(ctx):
        for cmd in commands:
            await stream_put(ctx, engine.cmd, cmd)
            while not ctx.get(engine.done):
                await ctx.tick()
            assert not ctx.get(engine.fault)
            await ctx.tick()
            assert not ctx.get(engine.busy)

    background = memory.processes() + ((monitor,) if monitor else ())
    simulate(engine, drive, background=background, name=name, deadline_cycles=60_000)


@pytest.mark.parametrize("chunk,count", [(4, 38), (1, 6)])
def test_eltwise_engine_ops(chunk, count):
    """Every op under random stalls, word for word against the model; shifts
    at 63 (the wide result clamped: everything rounds to 0 or -0) and at the
    left limit."""
    rng = np.random.default_rng(7 + chunk)
    engine = EltwiseEngine(in_frac=IN_FRAC, aux_frac=AUX_FRAC, chunk_words=chunk)
    x = rng.integers(-2**15, 2**15, count)
    dy = rng.integers(-2**15, 2**15, count)
    y_sig = rng.integers(0, (1 << AUX_FRAC) + 1, count)
    y_tanh = rng.integers(-(1 << AUX_FRAC), (1 << AUX_FRAC) + 1, count)
    slope = int(rng.integers(1, 1 << 16))
    f = 9
    words = np.zeros(MEM_WORDS, np.uint32)
    region = 2 * count + 8
    addr = {name: i * region for i, name in enumerate(["x", "dy", "y_sig", "y_tanh"])}
    for name, values in (("x", x), ("dy", dy), ("y_sig", y_sig), ("y_tanh", y_tanh)):
        place(words, addr[name], values)
    far = 63 - engine.base_shift
    near = -engine.base_shift
    E = EltwiseOp
    cases = [
        (E.RELU_FWD, dict(src=addr["x"], shift=2, slope=slope),
         relu_forward(x, f, slope, SLOPE_FMT, fmt(f - 2))),
        (E.RELU_BWD, dict(src=addr["dy"], aux=addr["x"], shift=1),
         relu_backward(dy, x, f, 0, SLOPE_FMT, fmt(f - 1))),
        (E.SIGMOID_FWD, dict(src=addr["x"], shift=IN_FRAC - 15),
         sigmoid_forward(x, fmt(IN_FRAC), fmt(15))),
        (E.TANH_FWD, dict(src=addr["x"], shift=IN_FRAC - 14),
         tanh_forward(x, fmt(IN_FRAC), fmt(14))),
        (E.SIGMOID_BWD, dict(src=addr["dy"], aux=addr["y_sig"], shift=1),
         sigmoid_backward(dy, y_sig, f, fmt(AUX_FRAC), fmt(f - 1))),
        (E.TANH_BWD, dict(src=addr["dy"], aux=addr["y_tanh"], shift=0),
         tanh_backward(dy, y_tanh, f, fmt(AUX_FRAC), fmt(f))),
        (E.ADD, dict(src=addr["dy"], aux=addr["x"], shift=1), requantize(dy + x, 1, fmt(0))),
        (E.REQUANT, dict(src=addr["x"], shift=far), requantize(x, far, fmt(0))),
        (E.REQUANT, dict(src=addr["x"], shift=near), requantize(x, near, fmt(0))),
        (E.ZERO, dict(), np.zeros(count, np.int64)),
    ]
    commands, expected = [], []
    base = 4 * region
    for i, (func, fields, want) in enumerate(cases):
        dst = base + i * region
        commands.append(command(engine, func, dst=dst, count=count, **fields))
        expected.append((dst, want))
    run(engine, words, commands, name=f"eltwise_engine_ops_{chunk}", seed=chunk, stall=0.3)
    for (func, _, _), (dst, want) in zip(cases, expected):
        np.testing.assert_array_equal(fetch(words, dst, count), want, err_msg=func.name)


def test_eltwise_engine_word_per_cycle():
    """With a memory that never stalls, each write burst leaves one word per
    cycle: the requantiser's two stages keep the core's rate."""
    chunk, count = 8, 64
    engine = EltwiseEngine(in_frac=IN_FRAC, aux_frac=AUX_FRAC, chunk_words=chunk)
    rng = np.random.default_rng(3)
    x = rng.integers(-2**15, 2**15, count)
    words = np.zeros(MEM_WORDS, np.uint32)
    place(words, 0, x)
    dst = 4 * count
    cycles = []

    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(engine.mem.w.valid, engine.mem.w.ready):
            cycle += 1
            if valid and ready:
                cycles.append(cycle)

    run(engine, words, [command(engine, EltwiseOp.REQUANT, src=0, dst=dst, count=count,
                                shift=-1)],
        name="eltwise_engine_word_per_cycle", seed=3, stall=0.0, latency=(0, 1),
        monitor=monitor)
    np.testing.assert_array_equal(fetch(words, dst, count), requantize(x, -1, fmt(0)))
    assert len(cycles) == count // 2
    for burst in range(count // 2 // chunk):
        times = cycles[burst * chunk:(burst + 1) * chunk]
        assert times == list(range(times[0], times[0] + chunk)), times


def test_isa_table_functions_are_the_cores_table_ops():
    # The ISA names the table each function needs (the NumPy machine and the
    # engine's legality both read it); the core names the ops each table serves.
    needs = {op: name for op, (core_op, *_) in ISA_OPS.items()
             for name, ops in TABLE_OPS.items() if core_op in ops}
    assert needs == ELTWISE_TABLE
