"""The stream helpers themselves: a FIFO under random stalls delivers every word once."""

import numpy as np
from amaranth.lib import fifo
from amaranth.hdl import Module
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out
import pytest

from support import Stalls, simulate, stream_get, stream_put


class _FifoStream(wiring.Component):
    i: In(stream.Signature(16))
    o: Out(stream.Signature(16))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = f = fifo.SyncFIFOBuffered(width=16, depth=4)
        m.d.comb += [f.w_data.eq(self.i.payload), f.w_en.eq(self.i.valid),
                     self.i.ready.eq(f.w_rdy),
                     self.o.payload.eq(f.r_data), self.o.valid.eq(f.r_rdy),
                     f.r_en.eq(self.o.ready)]
        return m


@pytest.mark.parametrize("p_stall", [0.0, 0.5])
def test_stream_helpers_lose_nothing(p_stall):
    rng = np.random.default_rng(1)
    words = [int(w) for w in rng.integers(0, 2**16, 50)]
    dut = _FifoStream()
    got = []

    async def producer(ctx):
        for w in words:
            await stream_put(ctx, dut.i, w, stalls=Stalls(rng, p_stall))

    async def consumer(ctx):
        for _ in words:
            got.append(await stream_get(ctx, dut.o, stalls=Stalls(rng, p_stall)))

    simulate(dut, producer, consumer, name=f"support_fifo_{p_stall}", deadline_cycles=2000)
    assert got == words
