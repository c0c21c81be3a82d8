# amaranth: UnusedElaboratable=no
"""SkidBuffer in pysim: every word once, in order, under random stalls, and
full throughput when nobody stalls."""

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data

from fecaffe_hw.cores.skid_buffer import SkidBuffer

from support import Stalls, simulate, stream_get, stream_put


@pytest.mark.parametrize("gate_payload", [True, False])
@pytest.mark.parametrize("p_in, p_out", [(0.0, 0.5), (0.5, 0.0), (0.3, 0.3), (0.7, 0.2)])
def test_skid_buffer_random_stalls(p_in, p_out, gate_payload):
    dut = SkidBuffer(signed(12), gate_payload=gate_payload)
    rng = np.random.default_rng(int(p_in * 10 + p_out * 100))
    words = rng.integers(-2**11, 2**11, 400).tolist()

    async def feed(ctx):
        stalls = Stalls(rng, p_in)
        for word in words:
            await stream_put(ctx, dut.i, word, stalls=stalls)

    async def drain(ctx):
        stalls = Stalls(np.random.default_rng(7), p_out)
        got = [await stream_get(ctx, dut.o, stalls=stalls) for _ in words]
        assert got == words
        for _ in range(5):
            await ctx.tick()
            assert not ctx.get(dut.o.valid), "word duplicated"

    simulate(dut, feed, drain, name=f"skid_buffer_{p_in}_{p_out}_{gate_payload}")


@pytest.mark.parametrize("gate_payload", [True, False])
def test_skid_buffer_full_throughput_and_registered_ready(gate_payload):
    layout = data.StructLayout({"a": 8, "b": signed(4)})
    dut = SkidBuffer(layout, gate_payload=gate_payload)
    n = 50

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        received, cycles = [], 0
        sent = 0
        while len(received) < n:
            ctx.set(dut.i.payload, {"a": sent % 256, "b": (sent % 16) - 8})
            ctx.set(dut.i.valid, int(sent < n))
            # in.ready must not follow out.ready within the cycle.
            ready = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, 0)
            assert ctx.get(dut.i.ready) == ready
            ctx.set(dut.o.ready, 1)
            assert ready, "in.ready dropped with the output never stalled"
            *_, o_valid, o_payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            sent += sent < n
            if o_valid:
                received.append((o_payload.a, o_payload.b))
            cycles += 1
        assert received == [(k % 256, (k % 16) - 8) for k in range(n)]
        assert cycles == n + 1  # one transfer per cycle, one cycle latency

    simulate(dut, bench, name=f"skid_buffer_throughput_{gate_payload}")


def test_skid_buffer_parameters():
    with pytest.raises(TypeError, match="'wide'"):
        SkidBuffer("wide")
    with pytest.raises(TypeError, match="gate_payload must be a bool, not 1"):
        SkidBuffer(signed(3), gate_payload=1)
    assert SkidBuffer(signed(3)).payload_shape == signed(3)
