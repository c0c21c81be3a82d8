# amaranth: UnusedElaboratable=no
"""The whole SoC in pysim, driven only through its UART pins: a host model
bit-bangs request frames (built with ``runtime.protocol``) onto ``rx`` and
decodes the responses on ``tx``. Covers identity, tensor memory round trips,
duplicate and corrupted frames, a GEMM command list run by the sequencer
(checked word for word against ``fixedpoint``), the performance counters and
CONTROL's soft_reset and clear_counters.

The plan is a tiny inference-only Input + InnerProduct net on the ULX3S (no
DRAM, so tensor memory is the on-chip AxiRam) with a 2 x 2 array; the UART
runs at 4 cycles per bit to keep the runs short.
"""

import functools
import math
import struct

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from fecaffe_hw.compiler import plan_network
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.fixedpoint import Format, gemm, requantize
from fecaffe_hw.fixedpoint.sgd import norm_multiplier
from fecaffe_hw.runtime import isa, regmap
from fecaffe_hw.runtime.protocol import (
    COUNTER_FORMAT, PING_RESPONSE, READ_CSR_REQUEST, READ_CSR_RESPONSE, READ_MEM_REQUEST,
    RESPONSE_FLAG, WRITE_CSR_REQUEST, WRITE_MEM_HEADER, Frame, FrameDecoder, Opcode, Status,
    encode_request,
)
from fecaffe_hw.soc import COMMAND_FIFO_DEPTH, Soc
from support import simulate, uart_receiver, uart_send

CLK_FREQ = 8e6
BAUD = 2e6              # 4 cycles per bit, the UART's minimum

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 } }
"""


#: The external tensor memory modelled for boards with DRAM: the first
#: 64 KiB of the address space, at the plan's latency, with random stalls.
EXTERNAL_BYTES = 1 << 16


@functools.cache
def plan_for(board, tmp_dir):
    path = tmp_dir / "tiny.prototxt"
    path.write_text(NET)
    return plan_network(str(path), board, rows=2, cols=2, width=16, training=False)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """On-chip tensor memory (the ULX3S has no DRAM)."""
    return plan_for("ulx3s-85f", tmp_path_factory.getbasetemp())


class Host:
    """The host end of the serial line: one request out, its response back
    (stop-and-wait), with helpers named after the protocol's opcodes."""

    def __init__(self, soc):
        self.soc = soc
        self.bit_cycles = soc.clk_freq / soc.baud
        self.events = []
        self.seq = 0
        self._decoder = FrameDecoder()
        self.receiver = uart_receiver(soc.tx, self, bit_cycles=self.bit_cycles)

    def append(self, byte):
        self.events.extend(self._decoder.feed([byte]))

    async def exchange(self, ctx, frame):
        """Send ``frame`` (bytes) and return the one event it is answered with."""
        before = len(self.events)
        await uart_send(ctx, self.soc.rx, frame, bit_cycles=self.bit_cycles)
        while len(self.events) == before:
            await ctx.tick()
        # The response must be complete and alone: nothing follows it.
        for _ in range(round(12 * self.bit_cycles)):
            await ctx.tick()
        assert len(self.events) == before + 1, self.events[before:]
        return self.events[before]

    def frame(self, opcode, payload=b"", *, seq=None):
        if seq is None:
            self.seq = seq = (self.seq + 1) % 256
        return encode_request(opcode, seq, payload)

    async def request(self, ctx, opcode, payload=b"", *, frame=None, status=Status.OK):
        """Send a request (or the given ``frame`` bytes) and check the response's
        opcode, seq and ``status``; returns the data after the status byte."""
        frame = frame if frame is not None else self.frame(opcode, payload)
        response = await self.exchange(ctx, frame)
        assert isinstance(response, Frame), response
        assert (response.opcode, response.seq) == (opcode | RESPONSE_FLAG, frame[3])
        assert response.status == status, response
        return response.data

    async def read_csr(self, ctx, name):
        data = await self.request(ctx, Opcode.READ_CSR,
                                  READ_CSR_REQUEST.pack(regmap.register(name).address))
        return READ_CSR_RESPONSE.unpack(data)[0]

    async def write_csr(self, ctx, name, value):
        await self.request(ctx, Opcode.WRITE_CSR,
                           WRITE_CSR_REQUEST.pack(regmap.register(name).address, value))

    async def write_mem(self, ctx, addr, data):
        await self.request(ctx, Opcode.WRITE_MEM, WRITE_MEM_HEADER.pack(addr) + bytes(data))

    async def read_mem(self, ctx, addr, count):
        data = await self.request(ctx, Opcode.READ_MEM, READ_MEM_REQUEST.pack(addr, count))
        assert len(data) == count
        return data

    async def counters(self, ctx):
        data = await self.request(ctx, Opcode.READ_COUNTERS)
        assert len(data) == COUNTER_FORMAT.size * len(regmap.COUNTERS)
        return {c.name: COUNTER_FORMAT.unpack_from(data, COUNTER_FORMAT.size * c.index)[0]
                for c in regmap.COUNTERS}

    async def wait_idle(self, ctx):
        for _ in range(50):
            if not regmap.register("STATUS").unpack(await self.read_csr(ctx, "STATUS"))["busy"]:
                return
        raise AssertionError("the sequencer stayed busy")


def run(plan, body, *, name, processes=(), soc_processes=(), deadline_cycles=200_000):
    """Simulate a fresh SoC for ``plan`` with ``body(ctx, host)`` as the host
    (and ``processes`` beside it, and ``soc_processes``, functions of the SoC
    returning a process); returns the SoC."""
    soc = top = Soc(plan, clk_freq=CLK_FREQ, baud=BAUD)
    processes = [*processes, *(make(soc) for make in soc_processes)]
    if soc.external_memory:
        top = Module()
        top.submodules.soc = soc
        top.submodules.ram = ram = AxiRam(size=EXTERNAL_BYTES,
                                          addr_width=len(soc.mem.ar.payload.addr),
                                          latency=plan.memory["latency"], stall_rate=0.2)
        wiring.connect(top, soc.mem, ram.axi)
    host = Host(soc)
    done = []

    async def testbench(ctx):
        await body(ctx, host)
        done.append(True)

    simulate(top, testbench, processes=processes, background=[host.receiver], name=name,
             deadline_cycles=deadline_cycles)
    assert done
    return soc


def test_soc_identity(plan):
    async def body(ctx, host):
        soc = host.soc
        ping = PING_RESPONSE.unpack(await host.request(ctx, Opcode.PING))
        assert ping == (regmap.ID_VALUE, regmap.VERSION_VALUE,
                        regmap.register("CAPABILITIES").pack(**soc.capabilities()),
                        plan.hash32)
        array = regmap.register("ARRAY").unpack(await host.read_csr(ctx, "ARRAY"))
        assert array == {"rows": plan.rows, "cols": plan.cols,
                         "data_width": plan.data_width, "acc_width": plan.acc_width}
        assert await host.read_csr(ctx, "MEM_SIZE") == soc.mem_size // 4096
        assert await host.read_csr(ctx, "CMD_SPACE") == COMMAND_FIFO_DEPTH
        assert await host.read_csr(ctx, "ERROR") == 0
        await host.write_csr(ctx, "SCRATCH", 0xC0FFEE42)
        assert await host.read_csr(ctx, "SCRATCH") == 0xC0FFEE42
        # Past the register map: refused, nothing else happens.
        await host.request(ctx, Opcode.READ_CSR, READ_CSR_REQUEST.pack(0x0FFC),
                           status=Status.BAD_ADDRESS)

    soc = run(plan, body, name="soc_identity")
    assert soc.capabilities()["external_memory"] == 0
    assert not soc.external_memory


def test_soc_bad_command_sets_error(plan):
    """An illegal command is skipped and flagged in ERROR (write 1 to clear);
    the END after it still runs."""
    error, status = regmap.register("ERROR"), regmap.register("STATUS")
    words = [0x7F] + [0] * 7 + isa.encode(isa.Opcode.END)

    async def body(ctx, host):
        await host.request(ctx, Opcode.RUN, struct.pack(f"<{len(words)}I", *words))
        await host.wait_idle(ctx)
        assert error.unpack(await host.read_csr(ctx, "ERROR")) \
            == {"bad_command": 1, "mem_fault": 0, "overflow": 0}
        assert status.unpack(await host.read_csr(ctx, "STATUS"))["error"] == 1
        assert (await host.counters(ctx))["COMMANDS_DONE"] == 1
        await host.write_csr(ctx, "ERROR", error.pack(mem_fault=1))
        assert await host.read_csr(ctx, "ERROR") == error.pack(bad_command=1)
        await host.write_csr(ctx, "ERROR", error.pack(bad_command=1))
        assert await host.read_csr(ctx, "ERROR") == 0
        assert status.unpack(await host.read_csr(ctx, "STATUS"))["error"] == 0

    run(plan, body, name="soc_bad_command")


def test_soc_memory_duplicates_and_corruption(plan):
    rng = np.random.default_rng(1)

    def random_bytes(n):
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    async def body(ctx, host):
        mem_size = host.soc.mem_size
        blocks = {0x000: random_bytes(64), 0x7F8: random_bytes(12),
                  mem_size - 64: random_bytes(64)}
        for addr, data in blocks.items():
            await host.write_mem(ctx, addr, data)
        for addr, data in blocks.items():
            assert await host.read_mem(ctx, addr, len(data)) == data
        assert await host.read_mem(ctx, 0x7F4, 20) == bytes(4) + blocks[0x7F8] + bytes(4)

        # A frame with the last frame's seq and opcode is a retry: answered
        # with the stored status and not executed, whatever its payload.
        x, first, second = 0x400, random_bytes(8), random_bytes(8)
        original = host.frame(Opcode.WRITE_MEM, WRITE_MEM_HEADER.pack(x) + first)
        await host.request(ctx, Opcode.WRITE_MEM, frame=original)
        retry = encode_request(Opcode.WRITE_MEM, original[3], WRITE_MEM_HEADER.pack(x) + second)
        await host.request(ctx, Opcode.WRITE_MEM, frame=retry)
        await host.request(ctx, Opcode.WRITE_MEM, frame=retry)
        assert await host.read_mem(ctx, x, 8) == first
        # A new seq is a new frame; then an exact replay of it changes nothing
        # either (the failure a lost response causes on a real link).
        await host.write_mem(ctx, x, second)
        assert await host.read_mem(ctx, x, 8) == second
        overwrite = host.frame(Opcode.WRITE_MEM, WRITE_MEM_HEADER.pack(x) + first)
        await host.request(ctx, Opcode.WRITE_MEM, frame=overwrite)
        await host.request(ctx, Opcode.WRITE_MEM, frame=overwrite)
        assert await host.read_mem(ctx, x, 8) == first
        # A read with the last seq is executed again (reads are harmless).
        read = host.frame(Opcode.READ_MEM, READ_MEM_REQUEST.pack(x, 8))
        assert await host.request(ctx, Opcode.READ_MEM, frame=read) == first
        assert await host.request(ctx, Opcode.READ_MEM, frame=read) == first

        # One flipped bit anywhere after the sync: ERROR / BAD_CRC, no write.
        for bit in (8 * 6 + 3, 8 * 12, 8 * (len(overwrite) - 1) + 7):
            frame = bytearray(host.frame(Opcode.WRITE_MEM, WRITE_MEM_HEADER.pack(x) + second))
            seq = frame[3]
            frame[bit // 8] ^= 1 << bit % 8
            assert await host.exchange(ctx, bytes(frame)) \
                == Frame(Opcode.ERROR, seq, bytes([Status.BAD_CRC]))
            assert await host.read_mem(ctx, x, 8) == first
        # Out of range: refused before any access.
        await host.request(ctx, Opcode.WRITE_MEM, WRITE_MEM_HEADER.pack(mem_size - 4) + bytes(8),
                           status=Status.BAD_ADDRESS)
        assert await host.read_mem(ctx, mem_size - 8, 8) == blocks[mem_size - 64][-8:]

    run(plan, body, name="soc_memory")


# -- GEMM through RUN -------------------------------------------------------------

M, N, K, SHIFT = 3, 2, 6, 14
A_ADDR, B_ADDR, C_ADDR = 0x100, 0x200, 0x300


def gemm_program(rows, cols):
    """``C = requant(A @ B)`` tile by tile, A/B and C halves alternating
    between tiles (ping-pong), then END."""
    cmds = []
    tiles = [(i, j) for i in range(0, M, rows) for j in range(0, N, cols)]
    for t, (i0, j0) in enumerate(tiles):
        mt, nt, half = min(rows, M - i0), min(cols, N - j0), t % 2
        a_off, b_off, c_off = half * K * rows, half * K * cols, half * rows * cols
        cmds.append(isa.encode(isa.Opcode.DMA_LOAD, func=isa.Buffer.A, addr=A_ADDR + 2 * i0 * K,
                               stride=2 * K, rows=mt, cols=K, offset=a_off))
        cmds.append(isa.encode(isa.Opcode.DMA_LOAD, func=isa.Buffer.B, addr=B_ADDR + 2 * j0,
                               stride=2 * N, rows=K, cols=nt, offset=b_off))
        cmds.append(isa.encode(isa.Opcode.GEMM, a_offset=a_off, b_offset=b_off,
                               c_offset=c_off, m=mt, n=nt, k=K))
        cmds.append(isa.encode(isa.Opcode.DMA_STORE, func=isa.Buffer.C,
                               addr=C_ADDR + 2 * (i0 * N + j0), stride=2 * N, rows=mt,
                               cols=nt, offset=c_off, shift=SHIFT))
    cmds.append(isa.encode(isa.Opcode.END))
    return [w for cmd in cmds for w in cmd]


def gemm_operands(plan, rng):
    a = rng.integers(-2**15, 2**15, (M, K), dtype=np.int64)
    b = rng.integers(-2**15, 2**15, (K, N), dtype=np.int64)
    expected = requantize(gemm(a, b, plan.acc_width), SHIFT, Format(plan.data_width, 0))
    return a, b, expected


def int16_bytes(values):
    return np.asarray(values, dtype="<i2").tobytes()


@pytest.mark.parametrize("board", ["ulx3s-85f", "arty"])
def test_soc_runs_a_gemm(board, tmp_path_factory):
    """On chip (ULX3S) and through the ``mem`` port to a DDR-like model (Arty)."""
    plan = plan_for(board, tmp_path_factory.getbasetemp())
    rng = np.random.default_rng(2)
    a, b, expected = gemm_operands(plan, rng)
    words = gemm_program(plan.rows, plan.cols)
    junk = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    c_bytes = 2 * M * N
    tiles = [(min(plan.rows, M - i), min(plan.cols, N - j))
             for i in range(0, M, plan.rows) for j in range(0, N, plan.cols)]

    async def body(ctx, host):
        capabilities = regmap.register("CAPABILITIES").unpack(
            await host.read_csr(ctx, "CAPABILITIES"))
        assert capabilities == host.soc.capabilities()
        assert capabilities["external_memory"] == (board == "arty")
        assert await host.read_csr(ctx, "MEM_SIZE") == host.soc.mem_size // 4096
        await host.write_mem(ctx, A_ADDR, int16_bytes(a))
        await host.write_mem(ctx, B_ADDR, int16_bytes(b))
        await host.write_mem(ctx, C_ADDR, junk)
        before = await host.counters(ctx)
        assert before["MACS"] == before["COMMANDS_DONE"] == 0
        run_frame = host.frame(Opcode.RUN, struct.pack(f"<{len(words)}I", *words))
        await host.request(ctx, Opcode.RUN, frame=run_frame)
        # A retried RUN is answered but not pushed again.
        await host.request(ctx, Opcode.RUN, frame=run_frame)
        await host.wait_idle(ctx)

        result = await host.read_mem(ctx, C_ADDR, len(junk))
        got = np.frombuffer(result[:c_bytes], dtype="<i2").reshape(M, N)
        np.testing.assert_array_equal(got, expected)
        assert result[c_bytes:] == junk[c_bytes:]
        assert await host.read_mem(ctx, A_ADDR, 2 * M * K) == int16_bytes(a)

        counters = await host.counters(ctx)
        assert counters["MACS"] == M * N * K
        assert counters["COMMANDS_DONE"] == len(words) // isa.WORDS_PER_COMMAND
        assert counters["MEM_READ_BYTES"] == sum(4 * math.ceil(K / 2) * mt
                                                 + 4 * math.ceil(nt / 2) * K
                                                 for mt, nt in tiles)
        assert counters["MEM_WRITE_BYTES"] == c_bytes
        assert counters["CYCLES"] > counters["BUSY_CYCLES"] > 0
        assert await host.read_csr(ctx, "ERROR") == 0
        status = regmap.register("STATUS").unpack(await host.read_csr(ctx, "STATUS"))
        assert status == {"busy": 0, "error": 0, "host_wait": 0, "cmd_fifo_level": 0}
        assert await host.read_csr(ctx, "CMD_SPACE") == COMMAND_FIFO_DEPTH

    run(plan, body, name=f"soc_gemm_{board}")


def test_soc_soft_reset_and_clear_counters(plan):
    rng = np.random.default_rng(3)
    a, b, expected = gemm_operands(plan, rng)
    words = gemm_program(plan.rows, plan.cols)
    junk = rng.integers(0, 256, 2 * M * N, dtype=np.uint8).tobytes()
    control = regmap.register("CONTROL")
    status_reg = regmap.register("STATUS")
    cycles = [0]

    async def count_cycles(ctx):
        async for _ in ctx.tick():
            cycles[0] += 1

    async def body(ctx, host):
        await host.write_mem(ctx, A_ADDR, int16_bytes(a))
        await host.write_mem(ctx, B_ADDR, int16_bytes(b))
        await host.write_mem(ctx, C_ADDR, junk)

        # Paused, the commands wait in the FIFO; soft_reset drops them.
        await host.write_csr(ctx, "CONTROL", control.pack(enable=0))
        await host.request(ctx, Opcode.RUN, struct.pack(f"<{len(words)}I", *words))
        status = status_reg.unpack(await host.read_csr(ctx, "STATUS"))
        assert status == {"busy": 1, "error": 0, "host_wait": 0,
                          "cmd_fifo_level": min(len(words), 255)}
        assert await host.read_csr(ctx, "CMD_SPACE") == COMMAND_FIFO_DEPTH - len(words)
        await host.write_csr(ctx, "CONTROL", control.pack(soft_reset=1, enable=0))
        assert control.unpack(await host.read_csr(ctx, "CONTROL")) \
            == {"soft_reset": 0, "clear_counters": 0, "enable": 0, "host_resume": 0}
        status = status_reg.unpack(await host.read_csr(ctx, "STATUS"))
        assert status == {"busy": 0, "error": 0, "host_wait": 0, "cmd_fifo_level": 0}
        assert await host.read_csr(ctx, "CMD_SPACE") == COMMAND_FIFO_DEPTH
        await host.write_csr(ctx, "CONTROL", control.pack(enable=1))
        assert await host.read_mem(ctx, C_ADDR, len(junk)) == junk
        assert (await host.counters(ctx))["COMMANDS_DONE"] == 0

        # The sequencer works after the reset.
        await host.request(ctx, Opcode.RUN, struct.pack(f"<{len(words)}I", *words))
        await host.wait_idle(ctx)
        got = np.frombuffer(await host.read_mem(ctx, C_ADDR, len(junk)), dtype="<i2")
        np.testing.assert_array_equal(got.reshape(M, N), expected)
        counters = await host.counters(ctx)
        assert counters["MACS"] == M * N * K and counters["MEM_WRITE_BYTES"] > 0

        # clear_counters zeroes them all; CYCLES restarts from 0 at once.
        start = cycles[0]
        await host.write_csr(ctx, "CONTROL", control.pack(clear_counters=1, enable=1))
        counters = await host.counters(ctx)
        elapsed = cycles[0] - start
        assert 0 < counters.pop("CYCLES") < elapsed
        assert counters == dict.fromkeys(counters, 0)
        assert control.unpack(await host.read_csr(ctx, "CONTROL"))["enable"] == 1

    run(plan, body, name="soc_soft_reset", processes=[count_cycles])


SGD_REGISTERS = {"SGD_RATE": "sgd_rate", "SGD_MOMENTUM": "sgd_momentum",
                 "SGD_DECAY": "sgd_decay", "SGD_NORM": "sgd_norm", "LFSR_SEED": "lfsr_seed"}


def test_soc_sgd_registers(plan):
    """The update engine's CSRs over the link: reset values, read-back of what
    is written (masked to the field), the sequencer's ports follow them, and
    every LFSR_SEED write (also of the value it holds) is one lfsr_load pulse
    with the new seed on lfsr_seed."""
    loads = []

    def watch_loads(soc):
        sequencer = soc.sequencer

        async def process(ctx):
            async for _, _, load, seed in ctx.tick().sample(sequencer.lfsr_load,
                                                             sequencer.lfsr_seed):
                if load:
                    loads.append(int(seed))
        return process

    async def body(ctx, host):
        sequencer = host.soc.sequencer
        for name in SGD_REGISTERS:
            assert await host.read_csr(ctx, name) == regmap.register(name).reset
        assert regmap.register("SGD_NORM").reset == norm_multiplier(1)
        # All ones: each register keeps its field's bits only.
        for name, port in SGD_REGISTERS.items():
            await host.write_csr(ctx, name, 0xFFFFFFFF)
            mask = regmap.register(name).field("value").mask
            assert await host.read_csr(ctx, name) == mask
            assert ctx.get(getattr(sequencer, port)) == mask
        values = {"SGD_RATE": int(0.01 * 2**20), "SGD_MOMENTUM": int(0.9 * 2**17),
                  "SGD_DECAY": int(5e-4 * 2**26), "SGD_NORM": norm_multiplier(3),
                  "LFSR_SEED": 0xCAFEF00D}
        for name, value in values.items():
            await host.write_csr(ctx, name, value)
        for name, value in values.items():
            assert await host.read_csr(ctx, name) == value
            assert ctx.get(getattr(sequencer, SGD_REGISTERS[name])) == value
        await host.write_csr(ctx, "LFSR_SEED", 0xCAFEF00D)        # the same seed again
        # Other writes do not reseed.
        await host.write_csr(ctx, "SCRATCH", 0x12345678)
        assert loads == [0xFFFFFFFF, 0xCAFEF00D, 0xCAFEF00D]

    run(plan, body, name="soc_sgd_registers", soc_processes=[watch_loads])


# Neither SoC is elaborated (only its construction is under test).
@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_soc_training_plan_builds_the_update_engine(plan, tmp_path):
    """A training plan's sequencer has the update engine at the plan's
    gradient width; an inference plan's has none (its opcodes are bad commands)."""
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    training = plan_network(str(path), "ulx3s-85f", rows=2, cols=2, width=16, training=True)
    soc = Soc(training, clk_freq=CLK_FREQ, baud=BAUD)
    assert soc.sequencer.training and soc.sequencer.update.grad_bits == training.grad_bits
    assert soc.sequencer.update.seed == regmap.register("LFSR_SEED").reset
    assert soc.capabilities()["training"] == 1
    assert Soc(plan, clk_freq=CLK_FREQ, baud=BAUD).sequencer.update is None
