# amaranth: UnusedElaboratable=no
"""AxiMaster driving an AxiRam: random reads and writes compared with a
bytearray, bursts split at 4 KB boundaries, faults outside memory and for
invalid lengths, AXI handshake rules under random stalls on both sides."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from fecaffe_hw.cores.axi_master import AxiMaster
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.cores.memory_port import MemoryPort

from support import Stalls, handshake_monitor, simulate, stream_get, stream_put

SIZE = 16384


class MasterOnRam(wiring.Component):
    def __init__(self, data_width=32, addr_width=32, **ram_options):
        self.master = AxiMaster(addr_width=addr_width, data_width=data_width)
        self.ram = AxiRam(size=SIZE, addr_width=addr_width, data_width=data_width,
                          **ram_options)
        super().__init__({"bus": wiring.In(MemoryPort())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.master, m.submodules.ram = self.master, self.ram
        wiring.connect(m, self.master.axi, self.ram.axi)
        wiring.connect(m, wiring.flipped(self.bus), self.master.bus)
        return m


def expected_bursts(addr, words, beat_bytes):
    """(aligned address, beats) of each burst a command becomes: split at
    4 KB boundaries, each piece widened to whole beats."""
    bursts, end = [], addr + 4 * words
    while addr < end:
        stop = min(end, (addr // 4096 + 1) * 4096)
        low = addr - addr % beat_bytes
        high = -(-stop // beat_bytes) * beat_bytes
        bursts.append((low, (high - low) // beat_bytes))
        addr = stop
    return bursts


def random_commands(rng, n):
    commands = []
    for _ in range(n):
        write = bool(rng.random() < 0.5)
        kind = rng.random()
        if kind < 0.05:
            words = [0, 257, 300, 511][rng.integers(4)]
        else:
            words = int(rng.integers(1, 257)) if rng.random() < 0.6 else int(rng.integers(1, 9))
        if kind > 0.93:
            addr = int(rng.integers(SIZE - 64, SIZE + 256)) & ~3        # runs off the end
        elif kind > 0.4:
            boundary = 4096 * int(rng.integers(1, SIZE // 4096))       # straddles 4 KB
            addr = boundary - 4 * int(rng.integers(1, max(2, words)))
        else:
            addr = int(rng.integers(0, SIZE - 4 * 256)) & ~3
        data = rng.integers(0, 2**32, words if 1 <= words <= 256 else 0).tolist()
        commands.append((write, addr, words, data))
    return commands


@pytest.mark.parametrize("data_width, latency, stall, port_stall", [
    (32, 1, 0.0, 0.0), (32, 24, 0.3, 0.3), (32, 5, 0.5, 0.1), (64, 3, 0.3, 0.2),
    (128, 24, 0.2, 0.3),
])
def test_random_commands_match_a_bytearray(data_width, latency, stall, port_stall):
    dut = MasterOnRam(data_width, latency=latency, stall_rate=stall)
    rng = np.random.default_rng(latency + data_width)
    commands = random_commands(rng, 50)
    model = bytearray(SIZE)
    pending = {}                 # command index -> (write, byte range), until its response
    expected_reads = []          # words each valid read returns, in order
    transfers = {}
    bus = dut.bus

    def valid(words):
        return 1 <= words <= 256

    async def issue(ctx):
        stalls = Stalls(np.random.default_rng(1), port_stall)
        for i, (write, addr, words, data) in enumerate(commands):
            span = range(addr, addr + 4 * words)
            # AXI orders nothing between reads and writes: a command touching
            # bytes that an unanswered command of the other kind touches waits.
            while any(w != write and set(span) & set(r) for w, r in pending.values()):
                await ctx.tick()
            if valid(words):
                pending[i] = (write, span)
                if write:
                    for k, word in enumerate(data):
                        a = addr + 4 * k
                        if a < SIZE:
                            model[a:a + 4] = word.to_bytes(4, "little")
                else:
                    expected_reads.append([
                        int.from_bytes(model[a:a + 4], "little") if a < SIZE else 0
                        for a in range(addr, addr + 4 * words, 4)])
            await stream_put(ctx, bus.cmd, {"addr": addr, "words": words, "write": write},
                             stalls=stalls)

    async def write_data(ctx):
        stalls = Stalls(np.random.default_rng(2), port_stall)
        for write, _, words, data in commands:
            if write and valid(words):
                for word in data:
                    await stream_put(ctx, bus.w, word, stalls=stalls)

    async def read_data(ctx):
        stalls = Stalls(np.random.default_rng(3), port_stall)
        n_reads = sum(1 for write, _, words, _ in commands if not write and valid(words))
        for n in range(n_reads):
            while len(expected_reads) <= n:
                await ctx.tick()
            got = [await stream_get(ctx, bus.r, stalls=stalls) for _ in expected_reads[n]]
            assert got == expected_reads[n], f"read {n}"

    async def responses(ctx):
        stalls = Stalls(np.random.default_rng(4), port_stall)
        for i, (write, addr, words, _) in enumerate(commands):
            got = await stream_get(ctx, bus.resp, stalls=stalls)
            fault = not valid(words) or addr + 4 * words > SIZE
            assert got.fault == fault, f"command {i}: {write=} {addr=:#x} {words=}"
            pending.pop(i, None)

    axi = dut.master.axi
    simulate(dut, issue, write_data, read_data, responses, deadline_cycles=200_000,
             name=f"axi_master_{data_width}_{latency}_{stall}_{port_stall}",
             processes=[handshake_monitor({c: getattr(axi, c) for c in
                                           ("aw", "w", "b", "ar", "r")}, transfers)])

    # Every command becomes the bursts the split model says, inside 4 KB pages.
    beat_bytes = data_width // 8
    for channel, write in (("aw", True), ("ar", False)):
        got = [(p.addr, p.len + 1) for p in transfers.get(channel, [])]
        want = [b for wr, a, w, _ in commands if wr == write and valid(w)
                for b in expected_bursts(a, w, beat_bytes)]
        assert got == want, channel
        for addr, beats in got:
            assert addr % 4096 + beats * beat_bytes <= 4096, f"{channel} burst crosses 4 KB"
        assert all(p.size == beat_bytes.bit_length() - 1 for p in transfers.get(channel, []))
    written = [w for wr, _, n, d in commands if wr and valid(n) for w in d]
    strobes = sum(bin(p.strb).count("1") for p in transfers["w"])
    assert strobes == 4 * len(written)
    assert sum(p.last for p in transfers["w"]) == len(transfers["aw"])


def test_commands_past_the_address_space_fault_without_a_burst():
    # SIZE is the whole 14-bit space: a burst reaching past it must not wrap
    # to address 0 (which a truncated AXI address would do) but fault.
    dut = MasterOnRam(addr_width=14, latency=2)
    commands = [(False, SIZE - 8, 2), (False, SIZE - 4, 2), (True, SIZE, 1),
                (False, 1 << 20, 1)]
    faults, transfers = [], {}

    async def issue(ctx):
        for write, addr, words in commands:
            await stream_put(ctx, dut.bus.cmd, {"addr": addr, "words": words, "write": write})

    async def drain(ctx):
        for _ in range(2):                       # the one good read returns two words
            await stream_get(ctx, dut.bus.r)
        for _ in commands:
            faults.append(int((await stream_get(ctx, dut.bus.resp)).fault))

    axi = dut.master.axi
    simulate(dut, issue, drain, name="axi_master_address_space", deadline_cycles=2000,
             processes=[handshake_monitor({c: getattr(axi, c) for c in
                                           ("aw", "w", "b", "ar", "r")}, transfers)])
    assert faults == [0, 1, 1, 1]
    assert [(p.addr, p.len + 1) for p in transfers.get("ar", [])] == [(SIZE - 8, 2)]
    assert not transfers.get("aw")


def test_full_rate_streaming():
    dut = MasterOnRam(latency=1)
    bus = dut.bus
    n = 4

    async def bench(ctx):
        ctx.set(bus.r.ready, 1)
        ctx.set(bus.resp.ready, 1)
        for k in range(n):
            await stream_put(ctx, bus.cmd, {"addr": 1024 * k, "words": 256, "write": 0})
        ctx.set(bus.r.ready, 1)

    async def count(ctx):
        cycles = words = 0
        while words < 256 * n:
            _, _, valid, ready = await ctx.tick().sample(bus.r.valid, bus.r.ready)
            cycles += 1
            words += valid and ready
        # Reading 4 KB takes at most 8 cycles more than one word per cycle per burst.
        assert cycles <= 256 * n + 8 * n, cycles

    simulate(dut, bench, count, name="axi_master_full_rate")


def test_command_pipeline_timing():
    """Registered take, check and burst sizing: a command's first AR rises on
    the third clock edge after the command is taken, a 4 KB split's second
    burst two edges after the first is taken."""
    dut = MasterOnRam(latency=1)
    bus, ar = dut.bus, dut.master.axi.ar

    async def bench(ctx):
        ctx.set(bus.r.ready, 1)
        ctx.set(bus.resp.ready, 1)
        await stream_put(ctx, bus.cmd, {"addr": 4096 - 8, "words": 4, "write": 0})
        seen = []
        for edge in range(1, 12):
            # Values sampled just before clock edge ``edge`` after the take.
            _, _, valid, ready, addr, length = await ctx.tick().sample(
                ar.valid, ar.ready, ar.payload.addr, ar.payload.len)
            if valid:
                seen.append((edge, addr, length + 1, ready))
        first, second = [s for s in seen if s[3]][:2]
        assert seen[0][0] == 4 and first[1:3] == (4088, 2)
        assert second[0] == first[0] + 2 and second[1:3] == (4096, 2)

    simulate(dut, bench, name="axi_master_command_timing", deadline_cycles=100)


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="Outstanding"):
        AxiMaster(max_outstanding=0)
    with pytest.raises(ValueError, match="address width"):
        AxiMaster(addr_width=0)
    with pytest.raises(ValueError, match="data width"):
        AxiMaster(data_width=48)
