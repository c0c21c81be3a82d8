# amaranth: UnusedElaboratable=no
"""MemoryArbiter in front of AxiMaster and AxiRam: each initiator's reads and
writes match its own bytearray, bursts never interleave on the shared port,
grants rotate round-robin, a read is answered after its last word,
stream rules hold on every channel."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from fecaffe_hw.cores.axi_master import AxiMaster
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.cores.memory_arbiter import MemoryArbiter
from fecaffe_hw.cores.memory_port import MemoryPort

from support import Stalls, handshake_monitor, simulate, stream_get, stream_put

REGION = 5120                    # bytes per initiator; regions straddle 4 KB pages


class SharedMemory(wiring.Component):
    def __init__(self, ports, **ram_options):
        self.arbiter = MemoryArbiter(ports=ports)
        self.master = AxiMaster()
        self.ram = AxiRam(size=ports * REGION, **ram_options)
        super().__init__({"initiators": wiring.In(MemoryPort()).array(ports)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.arbiter = self.arbiter
        m.submodules.master = self.master
        m.submodules.ram = self.ram
        for outer, inner in zip(self.initiators, self.arbiter.initiators):
            wiring.connect(m, wiring.flipped(outer), inner)
        wiring.connect(m, self.arbiter.target, self.master.bus)
        wiring.connect(m, self.master.axi, self.ram.axi)
        return m


class Initiator:
    """One port's random traffic inside its own region, checked against its
    own bytearray. Data words carry the port number in their top 4 bits."""

    def __init__(self, port, index, rng, n_commands, stall):
        self.port, self.index, self.rng, self.stall = port, index, rng, stall
        self.base = index * REGION
        self.model = bytearray(REGION)
        self.commands = []
        for _ in range(n_commands):
            write = bool(rng.random() < 0.5)
            words = int(rng.integers(1, 129)) if rng.random() < 0.5 else int(rng.integers(1, 5))
            addr = int(rng.integers(0, REGION - 4 * words + 1)) & ~3
            data = [index << 28 | int(x) for x in rng.integers(0, 2**28, words)]
            self.commands.append((write, addr, words, data))
        self.pending, self.expected = {}, []
        self.reads_received = 0

    async def issue(self, ctx):
        stalls = Stalls(np.random.default_rng(self.index), self.stall)
        for i, (write, addr, words, data) in enumerate(self.commands):
            span = set(range(addr, addr + 4 * words))
            # Reads and writes are not ordered against each other: wait for
            # an overlapping command of the other kind to be answered.
            while any(w != write and span & r for w, r in self.pending.values()):
                await ctx.tick()
            self.pending[i] = (write, span)
            if write:
                for k, word in enumerate(data):
                    self.model[addr + 4 * k:addr + 4 * k + 4] = word.to_bytes(4, "little")
            else:
                self.expected.append([int.from_bytes(self.model[a:a + 4], "little")
                                      for a in range(addr, addr + 4 * words, 4)])
            await stream_put(ctx, self.port.cmd, {"addr": self.base + addr, "words": words,
                                                  "write": write}, stalls=stalls)

    async def write_data(self, ctx):
        stalls = Stalls(np.random.default_rng(10 + self.index), self.stall)
        for write, _, _, data in self.commands:
            if write:
                for word in data:
                    await stream_put(ctx, self.port.w, word, stalls=stalls)

    async def read_data(self, ctx):
        stalls = Stalls(np.random.default_rng(20 + self.index), self.stall)
        n_reads = sum(1 for c in self.commands if not c[0])
        for n in range(n_reads):
            while len(self.expected) <= n:
                await ctx.tick()
            got = [await stream_get(ctx, self.port.r, stalls=stalls) for _ in self.expected[n]]
            assert got == self.expected[n], f"port {self.index} read {n}"
            self.reads_received += 1

    async def responses(self, ctx):
        stalls = Stalls(np.random.default_rng(30 + self.index), self.stall)
        reads = 0
        for i, (write, *_) in enumerate(self.commands):
            got = await stream_get(ctx, self.port.resp, stalls=stalls)
            assert not got.fault, f"port {self.index} command {i}"
            if not write:
                # The memory port's rule: a read's response follows its last word.
                assert self.reads_received > reads, f"port {self.index} read {reads} answered early"
                reads += 1
            self.pending.pop(i)


@pytest.mark.parametrize("ports, stall, ram_stall", [(3, 0.2, 0.0), (2, 0.5, 0.3), (4, 0.0, 0.2)])
def test_initiators_share_memory_without_interleaving(ports, stall, ram_stall):
    dut = SharedMemory(ports, latency=8, stall_rate=ram_stall)
    rng = np.random.default_rng(ports)
    initiators = [Initiator(dut.initiators[i], i, rng, 16, stall) for i in range(ports)]
    benches = [b for it in initiators
               for b in (it.issue, it.write_data, it.read_data, it.responses)]
    transfers = {}
    channels = {f"{i}.{c}": getattr(dut.initiators[i], c)
                for i in range(ports) for c in ("cmd", "w", "r", "resp")}
    channels.update({f"target.{c}": getattr(dut.arbiter.target, c)
                     for c in ("cmd", "w", "r", "resp")})
    simulate(dut, *benches, name=f"memory_arbiter_{ports}_{stall}_{ram_stall}",
             deadline_cycles=100_000, processes=[handshake_monitor(channels, transfers)])

    # The shared port carries each write's words together, from its issuer.
    words = list(transfers["target.w"])
    for cmd in transfers["target.cmd"]:
        if cmd.write:
            port = cmd.addr // REGION
            chunk, words = words[:cmd.words], words[cmd.words:]
            assert all(w >> 28 == port for w in chunk), "write bursts interleaved"
    assert words == []
    assert len(transfers["target.cmd"]) == len(transfers["target.resp"]) == 16 * ports


def test_grants_rotate_round_robin():
    ports, per_port = 3, 12
    dut = SharedMemory(ports, latency=2)
    transfers = {}

    def reader(i):
        async def issue(ctx):
            for k in range(per_port):
                await stream_put(ctx, dut.initiators[i].cmd,
                                 {"addr": i * REGION + 4 * k, "words": 1, "write": 0})

        async def drain(ctx):
            for _ in range(per_port):
                await stream_get(ctx, dut.initiators[i].r)
                await stream_get(ctx, dut.initiators[i].resp)
        return issue, drain

    benches = [b for i in range(ports) for b in reader(i)]
    simulate(dut, *benches, name="memory_arbiter_round_robin",
             processes=[handshake_monitor({"cmd": dut.arbiter.target.cmd}, transfers)])
    order = [cmd.addr // REGION for cmd in transfers["cmd"]]
    assert order == [0, 1, 2] * per_port


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="Port count"):
        MemoryArbiter(ports=0)
    with pytest.raises(ValueError, match="Depth"):
        MemoryArbiter(ports=2, depth=0)
