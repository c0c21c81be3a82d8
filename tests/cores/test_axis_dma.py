# amaranth: UnusedElaboratable=no
"""AxisDma in front of AxiMaster and an AxiRam with latency and random
stalls: H2C words land in memory word for word, C2H reads return them with
TLAST on the last word, refused starts and memory faults behave as documented,
an early TLAST or an abort ends a transfer cleanly. The expected memory is a
NumPy array updated with what each transfer should write."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fecaffe_hw.cores.axi import AxiStreamSignature
from fecaffe_hw.cores.axi_master import AxiMaster
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.cores.axis_dma import AxisDma

from support import Stalls, handshake_monitor, simulate, stream_get, stream_put

BURST = 16


class Bench(wiring.Component):
    """AxisDma -> AxiMaster -> AxiRam of ``ram_bytes`` (random initial words)."""

    def __init__(self, *, mem_size, ram_bytes=None, stall_rate=0.0, latency=6, seed=0):
        ram_bytes = ram_bytes or mem_size
        self.dma = AxisDma(mem_size=mem_size, burst_words=BURST)
        self.init = np.random.default_rng(seed).integers(0, 2**32, ram_bytes // 4,
                                                         dtype=np.uint64)
        self.ram = AxiRam(size=ram_bytes, addr_width=16, latency=latency,
                          stall_rate=stall_rate, init=[int(x) for x in self.init])
        self.master = AxiMaster(addr_width=16)
        super().__init__({
            "h2c": In(AxiStreamSignature(32)), "c2h": Out(AxiStreamSignature(32)),
            **{name: In(1) for name in ("start_h2c", "start_c2h", "abort")},
            "addr": In(32), "length": In(32),
            **{name: Out(1) for name in ("busy", "c2h_mode", "done", "bad_request",
                                         "mem_fault", "stream_fault")},
            "progress": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma, m.submodules.master, m.submodules.ram = self.dma, self.master, self.ram
        wiring.connect(m, wiring.flipped(self.h2c), self.dma.h2c)
        wiring.connect(m, self.dma.c2h, wiring.flipped(self.c2h))
        wiring.connect(m, self.dma.mem, self.master.bus)
        wiring.connect(m, self.master.axi, self.ram.axi)
        for name in ("start_h2c", "start_c2h", "abort", "addr", "length"):
            m.d.comb += getattr(self.dma, name).eq(getattr(self, name))
        for name in ("busy", "c2h_mode", "done", "bad_request", "mem_fault", "stream_fault",
                     "progress"):
            m.d.comb += getattr(self, name).eq(getattr(self.dma, name))
        return m


PULSES = ("done", "bad_request", "mem_fault", "stream_fault")


class Driver:
    """Starts transfers and counts the DMA's status pulses."""

    def __init__(self, dut, rng, stall):
        self.dut, self.stalls = dut, Stalls(rng, stall)
        self.seen = dict.fromkeys(PULSES, 0)

    def monitor(self):
        async def process(ctx):
            signals = [getattr(self.dut, name) for name in PULSES]
            async for _clk, _rst, *values in ctx.tick().sample(*signals):
                for name, value in zip(PULSES, values):
                    self.seen[name] += value
        return process

    def take(self):
        seen, self.seen = self.seen, dict.fromkeys(PULSES, 0)
        return seen

    async def start(self, ctx, direction, addr, length):
        """Pulse a start; returns whether it was refused."""
        ctx.set(self.dut.addr, addr)
        ctx.set(self.dut.length, length)
        pulse = self.dut.start_h2c if direction == "h2c" else self.dut.start_c2h
        ctx.set(pulse, 1)
        refused = ctx.get(self.dut.bad_request)
        await ctx.tick()
        ctx.set(pulse, 0)
        return refused

    async def pulse(self, ctx, signal):
        ctx.set(signal, 1)
        await ctx.tick()
        ctx.set(signal, 0)

    async def write(self, ctx, addr, words, *, last_at=None):
        assert not await self.start(ctx, "h2c", addr, 4 * len(words))
        last_at = len(words) - 1 if last_at is None else last_at
        for i, word in enumerate(words[:last_at + 1]):
            await stream_put(ctx, self.dut.h2c, {"data": int(word), "keep": 0xF,
                                                  "last": i == last_at}, stalls=self.stalls)
        await self.finish(ctx)

    async def read(self, ctx, addr, count):
        assert not await self.start(ctx, "c2h", addr, 4 * count)
        words = []
        for i in range(count):
            beat = await stream_get(ctx, self.dut.c2h, stalls=self.stalls)
            assert beat.last == (i == count - 1), f"TLAST on word {i} of {count}"
            assert beat.keep == 0xF
            words.append(beat.data)
        await self.finish(ctx)
        return words

    async def finish(self, ctx):
        for _ in range(2000):
            if not ctx.get(self.dut.busy):
                break
            await ctx.tick()
        else:
            raise AssertionError("the transfer did not finish")
        await ctx.tick()


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_h2c_lands_word_for_word_and_c2h_reads_it_back(stall):
    mem_size = 0x2000
    rng = np.random.default_rng(int(stall * 10) + 1)
    dut = Bench(mem_size=mem_size, stall_rate=stall, seed=5)
    model = dut.init.copy()
    driver = Driver(dut, rng, stall)
    # Single words, the memory's ends, bursts that straddle the 4 KiB line and
    # lengths that are not a multiple of the burst.
    transfers = [(0x000, 1), (0xFC0, 50), (mem_size - 4 * 37, 37), (0x404, 2 * BURST),
                 (0x800, BURST + 3)]
    transferred = {}

    async def bench(ctx):
        for addr, count in transfers:
            words = rng.integers(0, 2**32, count, dtype=np.uint64)
            await driver.write(ctx, addr, words)
            assert driver.take() == {"done": 1, "bad_request": 0, "mem_fault": 0,
                                     "stream_fault": 0}
            assert ctx.get(dut.progress) == 4 * count and not ctx.get(dut.c2h_mode)
            model[addr // 4:addr // 4 + count] = words
        # Everything, in reads that do not line up with the writes.
        for addr, count in [(0x000, 3), (0xF00, 150), (0x400, 0x200), (mem_size - 400, 100)]:
            got = await driver.read(ctx, addr, count)
            assert got == [int(x) for x in model[addr // 4:addr // 4 + count]], hex(addr)
            assert driver.take() == {"done": 1, "bad_request": 0, "mem_fault": 0,
                                     "stream_fault": 0}
            assert ctx.get(dut.progress) == 4 * count and ctx.get(dut.c2h_mode)

    simulate(dut, bench, name=f"axis_dma_round_trip_{stall}", deadline_cycles=60_000,
             processes=[driver.monitor(),
                        handshake_monitor({"c2h": dut.c2h}, transferred)])


def test_refused_starts_move_nothing():
    mem_size = 0x1000
    rng = np.random.default_rng(7)
    dut = Bench(mem_size=mem_size, seed=6)
    driver = Driver(dut, rng, 0.0)

    async def bench(ctx):
        for direction, addr, length in [
                ("h2c", 0x100, 0), ("h2c", 0x100, 6), ("c2h", 0x102, 8),
                ("h2c", mem_size - 4, 8), ("c2h", mem_size, 4), ("h2c", 0xFFFFFFFC, 8),
                ("c2h", 0, 0xFFFFFFFC)]:
            assert await driver.start(ctx, direction, addr, length), (direction, addr, length)
            for _ in range(8):
                assert not ctx.get(dut.busy)
                assert not ctx.get(dut.h2c.ready) and not ctx.get(dut.c2h.valid)
                await ctx.tick()
            assert driver.take() == {"done": 0, "bad_request": 1, "mem_fault": 0,
                                     "stream_fault": 0}
        # Both directions at once.
        ctx.set(dut.addr, 0)
        ctx.set(dut.length, 4)
        ctx.set(dut.start_h2c, 1)
        ctx.set(dut.start_c2h, 1)
        assert ctx.get(dut.bad_request)
        await ctx.tick()
        ctx.set(dut.start_h2c, 0)
        ctx.set(dut.start_c2h, 0)
        await ctx.tick()
        assert not ctx.get(dut.busy)
        assert driver.take()["bad_request"] == 1
        # A start while a transfer runs is refused and the transfer carries on.
        assert not await driver.start(ctx, "h2c", 0x40, 16)
        assert await driver.start(ctx, "c2h", 0x80, 4)
        words = [0x11111111, 0x22222222, 0x33333333, 0x44444444]
        for i, word in enumerate(words):
            await stream_put(ctx, dut.h2c, {"data": word, "keep": 0xF, "last": i == 3})
        await driver.finish(ctx)
        assert driver.take() == {"done": 1, "bad_request": 1, "mem_fault": 0,
                                 "stream_fault": 0}
        model = dut.init.copy()
        model[0x40 // 4:0x40 // 4 + 4] = words
        assert await driver.read(ctx, 0, mem_size // 4) == [int(x) for x in model]

    simulate(dut, bench, name="axis_dma_refused", processes=[driver.monitor()],
             deadline_cycles=20_000)


def test_memory_fault_completes_the_stream():
    # The DMA believes in 8 KiB, the RAM has 4 KiB: beats past it answer DECERR.
    dut = Bench(mem_size=0x2000, ram_bytes=0x1000, seed=8)
    driver = Driver(dut, np.random.default_rng(8), 0.2)

    async def bench(ctx):
        words = list(range(1, 41))
        await driver.write(ctx, 0x1000 - 64, words)
        seen = driver.take()
        assert seen["done"] == 1 and seen["mem_fault"] >= 1 and seen["stream_fault"] == 0
        got = await driver.read(ctx, 0x1000 - 64, 40)
        assert got[:16] == words[:16]
        assert driver.take()["mem_fault"] >= 1
        assert await driver.read(ctx, 0x1000 - 64, 16) == words[:16]
        assert driver.take() == {"done": 1, "bad_request": 0, "mem_fault": 0,
                                 "stream_fault": 0}

    simulate(dut, bench, name="axis_dma_mem_fault", processes=[driver.monitor()],
             deadline_cycles=20_000)


def test_early_tlast_ends_the_transfer_there():
    dut = Bench(mem_size=0x1000, stall_rate=0.2, seed=9)
    driver = Driver(dut, np.random.default_rng(9), 0.2)

    async def bench(ctx):
        model = dut.init.copy()
        words = list(range(100, 140))
        await driver.write(ctx, 0x200, words, last_at=20)
        assert driver.take() == {"done": 1, "bad_request": 0, "mem_fault": 0,
                                 "stream_fault": 1}
        assert ctx.get(dut.progress) == 4 * 21
        model[0x200 // 4:0x200 // 4 + 21] = words[:21]
        # Words for no transfer wait on the stream, untaken.
        ctx.set(dut.h2c.payload, {"data": 0xDEAD, "keep": 0xF, "last": 0})
        ctx.set(dut.h2c.valid, 1)
        for _ in range(10):
            assert not ctx.get(dut.h2c.ready)
            await ctx.tick()
        ctx.set(dut.h2c.valid, 0)
        assert await driver.read(ctx, 0x200, 40) == [int(x) for x in model[0x80:0x80 + 40]]

    simulate(dut, bench, name="axis_dma_early_tlast", processes=[driver.monitor()],
             deadline_cycles=20_000)


def test_abort_finishes_issued_bursts_and_drops_the_rest():
    dut = Bench(mem_size=0x1000, latency=12, seed=10)
    driver = Driver(dut, np.random.default_rng(10), 0.0)

    async def bench(ctx):
        model = dut.init.copy()
        # H2C: 20 words in, one whole burst (16) was issued; the other 4 are dropped.
        words = list(range(1000, 1100))
        assert not await driver.start(ctx, "h2c", 0x100, 400)
        for word in words[:BURST + 4]:
            await stream_put(ctx, dut.h2c, {"data": word, "keep": 0xF, "last": 0})
        for _ in range(5):
            await ctx.tick()
        await driver.pulse(ctx, dut.abort)
        assert not ctx.get(dut.h2c.ready)
        await driver.finish(ctx)
        assert driver.take() == {"done": 1, "bad_request": 0, "mem_fault": 0,
                                 "stream_fault": 0}
        model[0x40:0x40 + BURST] = words[:BURST]
        # C2H: abort after 5 of 100 words; the next read starts clean.
        assert not await driver.start(ctx, "c2h", 0, 400)
        for _ in range(5):
            await stream_get(ctx, dut.c2h)
        await driver.pulse(ctx, dut.abort)
        await driver.finish(ctx)
        assert not ctx.get(dut.c2h.valid)
        assert driver.take()["done"] == 1
        assert await driver.read(ctx, 0, 0x200 // 4) == [int(x) for x in model[:0x80]]

    simulate(dut, bench, name="axis_dma_abort", processes=[driver.monitor()],
             deadline_cycles=20_000)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="Memory size.*6"):
        AxisDma(mem_size=6)
    with pytest.raises(ValueError, match="Burst length.*257"):
        AxisDma(mem_size=4096, burst_words=257)
    with pytest.raises(ValueError, match="Buffer.*8"):
        AxisDma(mem_size=4096, burst_words=16, buffer_words=8)
    dma = AxisDma(mem_size=4096, burst_words=32)
    assert (dma.mem_size, dma.burst_words, dma.buffer_words) == (4096, 32, 64)
