# amaranth: UnusedElaboratable=no
"""The whole SoC with ``link="pcie"`` in pysim, driven only through its
XDMA-facing ports: AXI4-Lite register accesses (BAR0) and the H2C / C2H
AXI-Streams, with random stalls on the host side and a DDR-like AxiRam (the
plan's latency, random stalls) on ``mem``. Covers identity, tensor memory
round trips and refused DMA requests, CMD_PUSH against a full command FIFO,
and a GEMM command list pushed through CMD_PUSH whose result, read back over
C2H, is checked against ``fixedpoint``.

The plan is test_soc.py's tiny Input + InnerProduct net with a 2 x 2 array,
on the Nitefury II (the board with a PCIe link; 512 MiB DDR3).
"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from fecaffe_hw.cores.axi import Resp
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.errors import PlanError
from fecaffe_hw.runtime import isa, regmap
from fecaffe_hw.soc import COMMAND_FIFO_DEPTH, Soc
from support import Stalls, handshake_monitor, simulate, stream_get, stream_put
import test_soc as uart_soc

A_ADDR, B_ADDR, C_ADDR = uart_soc.A_ADDR, uart_soc.B_ADDR, uart_soc.C_ADDR
M, N, K = uart_soc.M, uart_soc.N, uart_soc.K
EXTERNAL_BYTES = uart_soc.EXTERNAL_BYTES

DMA_STATUS = regmap.register("DMA_STATUS")
DMA_CONTROL = regmap.register("DMA_CONTROL")
CONTROL = regmap.register("CONTROL")
STATUS = regmap.register("STATUS")


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return uart_soc.plan_for("nitefury", tmp_path_factory.getbasetemp())


class PcieHost:
    """What the XDMA driver does: BAR0 register accesses and stream transfers."""

    def __init__(self, soc, rng, stall=0.2):
        self.soc, self.stalls = soc, Stalls(rng, stall)

    async def read(self, ctx, name_or_address, *, resp=Resp.OKAY):
        address = _address(name_or_address)
        await stream_put(ctx, self.soc.axil.ar, {"addr": address}, stalls=self.stalls)
        got = await stream_get(ctx, self.soc.axil.r, stalls=self.stalls)
        assert got.resp == resp, f"read {address:#x}: {got.resp}"
        return got.data

    async def write(self, ctx, name_or_address, value, *, resp=Resp.OKAY):
        address = _address(name_or_address)
        await stream_put(ctx, self.soc.axil.aw, {"addr": address}, stalls=self.stalls)
        await stream_put(ctx, self.soc.axil.w, {"data": value, "strb": 0xF}, stalls=self.stalls)
        got = await stream_get(ctx, self.soc.axil.b, stalls=self.stalls)
        assert got.resp == resp, f"write {address:#x} = {value:#x}: {got.resp}"

    async def dma_status(self, ctx):
        return DMA_STATUS.unpack(await self.read(ctx, "DMA_STATUS"))

    async def start(self, ctx, direction, addr, length):
        await self.write(ctx, "DMA_ADDR", addr)
        await self.write(ctx, "DMA_LEN", length)
        await self.write(ctx, "DMA_CONTROL", DMA_CONTROL.pack(**{f"start_{direction}": 1}))

    async def finish(self, ctx):
        """Wait for the transfer to end; check it ended cleanly; clear ``done``."""
        for _ in range(100):
            status = await self.dma_status(ctx)
            if not status["busy"]:
                break
        else:
            raise AssertionError("the DMA stayed busy")
        assert status["done"] == 1 and status["bad_request"] == status["mem_fault"] \
            == status["stream_fault"] == 0, status
        await self.write(ctx, "DMA_STATUS", DMA_STATUS.pack(done=1))

    async def write_mem(self, ctx, addr, data):
        words = np.frombuffer(bytes(data), dtype="<u4")
        await self.start(ctx, "h2c", addr, len(data))
        for i, word in enumerate(words):
            await stream_put(ctx, self.soc.h2c, {"data": int(word), "keep": 0xF,
                                                  "last": i == len(words) - 1},
                             stalls=self.stalls)
        await self.finish(ctx)

    async def read_mem(self, ctx, addr, count):
        await self.start(ctx, "c2h", addr, count)
        words = []
        for i in range(count // 4):
            beat = await stream_get(ctx, self.soc.c2h, stalls=self.stalls)
            assert beat.last == (i == count // 4 - 1)
            words.append(beat.data)
        await self.finish(ctx)
        return np.asarray(words, dtype="<u4").tobytes()

    async def push(self, ctx, words, *, resp=Resp.OKAY):
        for word in words:
            await self.write(ctx, "CMD_PUSH", word, resp=resp)

    async def wait_idle(self, ctx):
        for _ in range(200):
            if not STATUS.unpack(await self.read(ctx, "STATUS"))["busy"]:
                return
        raise AssertionError("the sequencer stayed busy")


def _address(name_or_address):
    if isinstance(name_or_address, str):
        return regmap.register(name_or_address).address
    return name_or_address


def run(plan, body, *, name, seed, deadline_cycles=150_000):
    soc = Soc(plan, link="pcie")
    top = Module()
    top.submodules.soc = soc
    top.submodules.ram = ram = AxiRam(size=EXTERNAL_BYTES,
                                      addr_width=len(soc.mem.ar.payload.addr),
                                      latency=plan.memory["latency"], stall_rate=0.2)
    wiring.connect(top, soc.mem, ram.axi)
    host = PcieHost(soc, np.random.default_rng(seed))
    done, transfers = [], {}

    async def testbench(ctx):
        await body(ctx, host)
        done.append(True)

    monitor = handshake_monitor({"c2h": soc.c2h, **{c: getattr(soc.axil, c)
                                                    for c in ("b", "r")}}, transfers)
    simulate(top, testbench, processes=[monitor], name=name,
             deadline_cycles=deadline_cycles)
    assert done
    return soc


def test_soc_pcie_identity_memory_and_refusals(plan):
    rng = np.random.default_rng(11)

    async def body(ctx, host):
        soc = host.soc
        assert await host.read(ctx, "ID") == regmap.ID_VALUE
        assert await host.read(ctx, "VERSION") == regmap.VERSION_VALUE
        capabilities = regmap.register("CAPABILITIES").unpack(
            await host.read(ctx, "CAPABILITIES"))
        assert capabilities == soc.capabilities()
        assert capabilities["link_pcie"] == 1 and capabilities["external_memory"] == 1
        assert regmap.register("ARRAY").unpack(await host.read(ctx, "ARRAY")) \
            == {"rows": plan.rows, "cols": plan.cols, "data_width": plan.data_width,
                "acc_width": plan.acc_width}
        assert await host.read(ctx, "PLAN_HASH") == plan.hash32
        assert await host.read(ctx, "MEM_SIZE") == plan.board["memory"]["bytes"] // 4096
        assert await host.read(ctx, "CMD_SPACE") == COMMAND_FIFO_DEPTH
        await host.write(ctx, "SCRATCH", 0x5EC0DE42)
        assert await host.read(ctx, "SCRATCH") == 0x5EC0DE42
        assert await host.read(ctx, 0x0FFC, resp=Resp.SLVERR) == 0
        await host.write(ctx, "ID", 1, resp=Resp.SLVERR)

        # Tensor memory round trip, then a read that overlaps untouched words.
        data = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
        await host.write_mem(ctx, 0x1F00, data)       # crosses a 4 KiB line
        assert await host.read_mem(ctx, 0x1F00, len(data)) == data
        assert await host.read_mem(ctx, 0x1EF8, len(data) + 16) \
            == bytes(8) + data + bytes(8)
        assert await host.read(ctx, "DMA_PROGRESS") == len(data) + 16

        # Refused requests: flagged, nothing taken from the stream.
        for addr, length in [(0x100, 6), (0x102, 8), (0x100, 0),
                             (soc.mem_size - 4, 8)]:
            await host.start(ctx, "h2c", addr, length)
            status = await host.dma_status(ctx)
            assert status["bad_request"] == 1 and status["busy"] == 0, (addr, length)
            assert not ctx.get(soc.h2c.ready)
            await host.write(ctx, "DMA_STATUS", DMA_STATUS.pack(bad_request=1))
        # All clear; ``c2h`` still names the last transfer that ran (a read).
        assert await host.dma_status(ctx) == {**DMA_STATUS.unpack(0), "c2h": 1}
        assert await host.read_mem(ctx, 0x1F00, 16) == data[:16]

        # CMD_PUSH against a full FIFO: refused with SLVERR, nothing pushed.
        await host.write(ctx, "CONTROL", CONTROL.pack(enable=0))
        await host.push(ctx, [0] * COMMAND_FIFO_DEPTH)
        assert await host.read(ctx, "CMD_SPACE") == 0
        await host.push(ctx, [0xFFFFFFFF], resp=Resp.SLVERR)
        assert (await host.dma_status(ctx))["cmd_refused"] == 1
        assert await host.read(ctx, "CMD_PUSH") == 0
        assert await host.read(ctx, "ERROR") == 0
        # Enabled, the NOPs run (none was the refused word: it would be a bad command).
        await host.write(ctx, "CONTROL", CONTROL.pack(enable=1))
        await host.wait_idle(ctx)
        assert await host.read(ctx, "ERROR") == 0
        assert await host.read(ctx, "COMMANDS_DONE_LO") \
            == COMMAND_FIFO_DEPTH // isa.WORDS_PER_COMMAND
        assert await host.read(ctx, "CMD_SPACE") == COMMAND_FIFO_DEPTH

    run(plan, body, name="soc_pcie_identity", seed=12)


def test_soc_pcie_runs_a_gemm(plan):
    rng = np.random.default_rng(13)
    a, b, expected = uart_soc.gemm_operands(plan, rng)
    words = uart_soc.gemm_program(plan.rows, plan.cols)
    junk = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    c_bytes = 2 * M * N

    async def body(ctx, host):
        await host.write_mem(ctx, A_ADDR, uart_soc.int16_bytes(a))
        await host.write_mem(ctx, B_ADDR, uart_soc.int16_bytes(b))
        await host.write_mem(ctx, C_ADDR, junk)
        await host.push(ctx, words)
        await host.wait_idle(ctx)
        assert await host.read(ctx, "CMD_PUSH") == words[-1]

        result = await host.read_mem(ctx, C_ADDR, len(junk))
        got = np.frombuffer(result[:c_bytes], dtype="<i2").reshape(M, N)
        np.testing.assert_array_equal(got, expected)
        assert result[c_bytes:] == junk[c_bytes:]
        assert await host.read(ctx, "ERROR") == 0
        assert await host.read(ctx, "MACS_LO") == M * N * K
        assert await host.read(ctx, "COMMANDS_DONE_LO") == len(words) // isa.WORDS_PER_COMMAND

    run(plan, body, name="soc_pcie_gemm", seed=14)


def test_soc_pcie_needs_a_pcie_board(tmp_path_factory):
    arty = uart_soc.plan_for("arty", tmp_path_factory.getbasetemp())
    with pytest.raises(PlanError, match="arty has no PCIe link"):
        Soc(arty, link="pcie")
    with pytest.raises(PlanError, match="'usb'"):
        Soc(arty, link="usb")
