# amaranth: UnusedElaboratable=no
"""FrameEngine against the protocol's Python device model.

The engine sits in a small SoC (the real CsrBank from the register map,
AxiMaster + AxiRam as tensor memory, a command FIFO stand-in); request frames
come from runtime/protocol.py's encoder, responses are parsed with its
decoder, and the expected responses come from tests/fake_device.py's
FakeDevice fed the same bytes. Scripts mix good frames with corrupted,
truncated, duplicated and garbage bytes.
"""

import random
import struct

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import wiring

from fecaffe_hw.cores.axi_master import AxiMaster
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.cores.csr_bank import CsrBank
from fecaffe_hw.cores.frame_engine import FrameEngine
from fecaffe_hw.runtime import regmap
from fecaffe_hw.runtime.protocol import (
    COUNTER_FORMAT, MAX_MEM_DATA, PING_RESPONSE, READ_CSR_REQUEST, READ_MEM_REQUEST,
    WRITE_CSR_REQUEST, WRITE_MEM_HEADER, Frame, FrameDecoder, Opcode, Status,
    encode_frame, encode_request,
)
from fake_device import FakeDevice
from support import Stalls, handshake_monitor, simulate, stream_get, stream_put



MEM_SIZE = 4096
PLAN_HASH = 0x5EED1234
TIMEOUT = 40


class Soc(Elaboratable):
    """The engine with a CSR bank, tensor memory and a command FIFO stand-in
    that takes every word and reports ``fifo_depth - pushed`` free words."""

    def __init__(self, *, fifo_depth=16, mem_size=MEM_SIZE, engine_mem_size=MEM_SIZE,
                 latency=3, stall_rate=0.0, cmd_stall=False):
        self.engine = FrameEngine(clk_freq=1e6, timeout=TIMEOUT, mem_size=engine_mem_size)
        self.bank = CsrBank(regmap.REGISTERS)
        self.master = AxiMaster()
        self.ram = AxiRam(size=mem_size, latency=latency, stall_rate=stall_rate)
        self.fifo_depth = fifo_depth
        self.cmd_stall = cmd_stall
        self.pushed = Signal(16)
        self.cmd_ready = Signal(init=0 if cmd_stall else 1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.bank = bank = self.bank
        m.submodules.master = self.master
        m.submodules.ram = self.ram
        wiring.connect(m, engine.csr, bank.bus)
        wiring.connect(m, engine.mem, self.master.bus)
        wiring.connect(m, self.master.axi, self.ram.axi)

        pushed = self.pushed
        m.d.comb += engine.cmd.ready.eq(self.cmd_ready)
        with m.If(engine.cmd.valid & engine.cmd.ready):
            m.d.sync += pushed.eq(pushed + 1)
        m.d.comb += [
            engine.cmd_space.eq(self.fifo_depth - pushed),
            bank.field("CMD_SPACE", "value").eq(self.fifo_depth - pushed),
            bank.field("STATUS", "busy").eq(pushed != 0),
            bank.field("STATUS", "cmd_fifo_level").eq(pushed),
            bank.field("PLAN_HASH", "value").eq(PLAN_HASH),
            bank.field("MEM_SIZE", "value").eq(MEM_SIZE // 4096),
            bank.counter("COMMANDS_DONE").eq(engine.cmd.valid & engine.cmd.ready),
            bank.counter("CYCLES").eq(1),
        ]
        return m


def run_script(soc, steps, *, name, rng=None, stall_probability=0.0, extra=None):
    """Send each step's bytes (``(data, truncated)``), wait for the responses
    the model gives for it, and return (responses, model, pushed words).

    ``truncated`` steps end mid-frame: the engine must time out."""
    device = FakeDevice(mem_size=MEM_SIZE, cmd_fifo_depth=soc.fifo_depth, plan_hash=PLAN_HASH,
                        inter_byte_timeout=0.5)
    expected, counts = [], []
    for t, (data, truncated) in enumerate(steps):
        out = device.receive(data, float(t))
        if truncated:
            assert device.decoder.in_frame
            out += device.expire(t + 0.9)
        events = FrameDecoder().feed(out)
        expected += events
        counts.append(len(expected))

    engine = soc.engine
    got, words = [], []
    stalls = Stalls(rng, stall_probability) if rng is not None else None

    async def send(ctx):
        for (data, truncated), count in zip(steps, counts):
            for byte in data:
                await stream_put(ctx, engine.rx, {"data": byte, "framing_error": 0},
                                 stalls=stalls)
            while len(got) < count:
                await ctx.tick()
        if extra is not None:
            await extra(ctx, got)

    async def receive(ctx):
        decoder = FrameDecoder()
        while len(got) < len(expected):
            byte = await stream_get(ctx, engine.tx, stalls=stalls)
            got.extend(decoder.feed([byte]))

    async def cmd_sink(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(
                engine.cmd.valid, engine.cmd.ready, engine.cmd.payload):
            if valid and ready:
                words.append(payload)

    simulate(soc, send, receive, processes=[cmd_sink], name=name, deadline_cycles=200_000)
    assert got == expected
    return got, device, words


def request_each(soc, requests, *, name):
    """Send each request and wait for its one response; return the responses.

    For scripts whose answers differ from FakeDevice's on purpose (read-only
    registers, memory faults, counters), so each test checks its own."""
    engine = soc.engine
    got = []

    async def send(ctx):
        for data in requests:
            for byte in data:
                await stream_put(ctx, engine.rx, {"data": byte, "framing_error": 0})
            n = len(got) + 1
            while len(got) < n:
                await ctx.tick()

    async def receive(ctx):
        decoder = FrameDecoder()
        while len(got) < len(requests):
            got.extend(decoder.feed([await stream_get(ctx, engine.tx)]))

    simulate(soc, send, receive, name=name)
    return got


# ---- frame builders ---------------------------------------------------------

def ping(seq):
    return encode_request(Opcode.PING, seq)


def read_csr(seq, address):
    return encode_request(Opcode.READ_CSR, seq, READ_CSR_REQUEST.pack(address))


def write_csr(seq, address, value):
    return encode_request(Opcode.WRITE_CSR, seq, WRITE_CSR_REQUEST.pack(address, value))


def write_mem(seq, address, data):
    return encode_request(Opcode.WRITE_MEM, seq, WRITE_MEM_HEADER.pack(address) + bytes(data))


def read_mem(seq, address, count):
    return encode_request(Opcode.READ_MEM, seq, READ_MEM_REQUEST.pack(address, count))


def run(seq, words):
    return encode_request(Opcode.RUN, seq, struct.pack(f"<{len(words)}I", *words))


R = regmap.Reg


def random_request(rng, seq):
    kind = rng.choice(["ping", "read_csr", "write_csr", "write_mem", "write_mem", "read_mem",
                       "read_mem", "run", "run", "bad_opcode", "bad_length"])
    if kind == "ping":
        return ping(seq)
    if kind == "read_csr":
        address = rng.choice([R.ID, R.VERSION, R.CAPABILITIES, R.ARRAY, R.CONTROL, R.STATUS,
                              R.ERROR, R.SCRATCH, R.PLAN_HASH, R.CMD_SPACE, R.MEM_SIZE,
                              0x02C, 0x0FC, 0x180, 0xFFFC, 0x01E, 0x001])
        return read_csr(seq, address)
    if kind == "write_csr":
        address, value = rng.choice([
            (R.SCRATCH, rng.getrandbits(32)), (R.SCRATCH, rng.getrandbits(32)),
            (R.CONTROL, rng.choice([0, 4])), (R.ERROR, rng.getrandbits(32)),
            (0x030, 1), (0x01D, 5), (0x402, 7)])
        return write_csr(seq, address, value)
    if kind == "write_mem":
        words = rng.choice([1, 2, 5, 16, 33, 255])
        address = rng.choice([rng.randrange(0, MEM_SIZE - 4 * words + 1, 4),
                              rng.randrange(0, MEM_SIZE - 4 * words + 1, 4),
                              MEM_SIZE - 4 * words + 4, MEM_SIZE, 2**32 - 4,
                              rng.randrange(0, MEM_SIZE - 4 * words) | 2])
        return write_mem(seq, address, rng.randbytes(4 * words))
    if kind == "read_mem":
        count = rng.choice([4, 8, 64, 132, MAX_MEM_DATA, 0, 6, 1024])
        address = rng.choice([rng.randrange(0, MEM_SIZE - max(count, 4) + 1, 4),
                              rng.randrange(0, MEM_SIZE - max(count, 4) + 1, 4),
                              MEM_SIZE - count + 4, 2**32 - 4, 1])
        return read_mem(seq, address, count)
    if kind == "run":
        return run(seq, [rng.getrandbits(32) for _ in range(rng.choice([1, 2, 3, 7, 12]))])
    if kind == "bad_opcode":
        return encode_frame(rng.choice([0x00, 0x08, 0x42, 0x81, 0xFF]), seq,
                            rng.randbytes(rng.randrange(0, 6)))
    opcode, size = rng.choice([(Opcode.PING, 1), (Opcode.READ_CSR, 3), (Opcode.WRITE_CSR, 4),
                               (Opcode.WRITE_MEM, 4), (Opcode.WRITE_MEM, 9),
                               (Opcode.READ_MEM, 4), (Opcode.RUN, 0), (Opcode.RUN, 6),
                               (Opcode.READ_COUNTERS, 2)])
    return encode_request(opcode, seq, rng.randbytes(size))


def garbage(rng):
    # Never SYNC bytes: a stray A5 5A would start a frame, as it should, but
    # this script wants garbage that is only garbage.
    return bytes(rng.choice([b for b in range(256) if b not in (0xA5, 0x5A)])
                 for _ in range(rng.randrange(1, 6)))


def random_script(rng, n):
    steps, seq, previous = [], 0, None
    for _ in range(n):
        fault = rng.choices(["none", "flip", "truncate", "garbage", "repeat"],
                            weights=[10, 2, 1, 1, 3])[0]
        if fault == "repeat" and previous is not None:
            steps.append((previous, False))
            continue
        seq = (seq + 1) % 256
        frame = random_request(rng, seq)
        if fault == "flip":
            i = rng.randrange(len(frame))
            frame = frame[:i] + bytes([frame[i] ^ (1 << rng.randrange(8))]) + frame[i + 1:]
            steps.append((frame, False))
            continue        # the model decides what a corrupted frame becomes
        if fault == "truncate":
            steps.append((frame[:rng.randrange(3, len(frame))], True))
            continue
        if fault == "garbage":
            frame = garbage(rng) + frame
        steps.append((frame, False))
        previous = frame
    # A flipped frame can leave the decoder mid-frame (a longer length):
    # mark those steps truncated so both sides time out there.
    fixed, device = [], FrameDecoder()
    for data, truncated in steps:
        device.feed(data)
        fixed.append((data, truncated or device.in_frame))
        if device.in_frame:
            device.expire()
    return fixed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_script_matches_device_model(seed):
    rng = random.Random(seed)
    steps = random_script(rng, 45)
    # End with a read-back of all of memory so every write is checked.
    seq = 200
    for address in range(0, MEM_SIZE, MAX_MEM_DATA):
        seq += 1
        steps.append((read_mem(seq, address, min(MAX_MEM_DATA, MEM_SIZE - address)), False))
    soc = Soc(fifo_depth=24, stall_rate=0.2 if seed == 2 else 0.0)
    got, device, words = run_script(soc, steps, name=f"frame_engine_random_{seed}", rng=rng,
                                    stall_probability=0.3 if seed == 3 else 0.0)
    assert words == list(device.commands)
    statuses = {e.status for e in got if isinstance(e, Frame)}
    assert {Status.OK, Status.BAD_ADDRESS, Status.BAD_LENGTH} <= statuses


def test_identity_scratch_and_read_only_registers():
    version = regmap.VERSION_VALUE
    requests = [ping(1), write_csr(2, R.SCRATCH, 0xCAFEF00D), read_csr(3, R.SCRATCH),
                write_csr(4, R.ID, 0), read_csr(5, R.ID)]
    got = request_each(Soc(), requests, name="frame_engine_identity")
    assert got[0] == Frame(Opcode.PING | 0x80, 1, bytes([Status.OK]) + PING_RESPONSE.pack(
        regmap.ID_VALUE, version, 0, PLAN_HASH))
    assert got[1] == Frame(Opcode.WRITE_CSR | 0x80, 2, bytes([Status.OK]))
    assert got[2].data == struct.pack("<I", 0xCAFEF00D)
    # CsrBank refuses writes to registers with nothing writable; the
    # Python model accepts and ignores them.
    assert got[3] == Frame(Opcode.WRITE_CSR | 0x80, 4, bytes([Status.BAD_ADDRESS]))
    assert got[4].data == struct.pack("<I", regmap.ID_VALUE)


def test_run_busy_and_duplicates_execute_once():
    words_a = [0x11111111, 0x22222222, 0x33333333]
    words_b = [0xAAAA0000 + i for i in range(5)]
    steps = [
        (run(1, words_a), False),
        (run(1, words_a), False),            # a retry: not pushed again
        (run(2, words_b), False),            # 5 > 4 free: BUSY, nothing pushed
        (run(3, [7]), False),
        (write_mem(4, 0x40, bytes(range(16))), False),
        (write_mem(4, 0x40, bytes(range(16))), False),
        (write_mem(5, 0x40, bytes(16)), False),
        (write_mem(4, 0x40, bytes(range(16))), False),   # seq 4 again, but not the last: runs
        (read_mem(6, 0x40, 16), False),
        (read_mem(6, 0x40, 16), False),      # reads are re-executed
    ]
    soc = Soc(fifo_depth=7)
    got, device, words = run_script(soc, steps, name="frame_engine_run_busy")
    assert words == words_a + [7]
    assert [e.status for e in got] == [Status.OK, Status.OK, Status.BUSY, Status.OK] + \
        [Status.OK] * 6
    assert got[-1].data == bytes(range(16))


def test_corrupt_truncated_and_garbage_frames_have_no_effect():
    good = write_csr(9, R.SCRATCH, 0x12345678)
    steps = []
    for i in range(len(good)):
        flipped = good[:i] + bytes([good[i] ^ 0x10]) + good[i + 1:]
        steps.append((flipped, FrameDecoder().feed(flipped) == [] and i >= 2))
    steps += [(good[:5], True), (good[:11], True), (b"\x00\xA5\x13", False),
              (read_csr(10, R.SCRATCH), False), (good, False), (read_csr(11, R.SCRATCH), False)]
    soc = Soc()
    got, device, _ = run_script(soc, steps, name="frame_engine_corrupt")
    # Only the last write landed: every earlier read saw the reset value.
    reads = [e for e in got if isinstance(e, Frame) and e.opcode == Opcode.READ_CSR | 0x80]
    assert [r.data for r in reads] == [struct.pack("<I", 0), struct.pack("<I", 0x12345678)]
    errors = [e for e in got if isinstance(e, Frame) and e.opcode == Opcode.ERROR]
    assert {e.status for e in errors} == {Status.BAD_CRC, Status.TIMEOUT, Status.BAD_LENGTH}


def test_framing_error_rejects_frame():
    frame = write_csr(3, R.SCRATCH, 0xDEADBEEF)
    soc = Soc()
    engine = soc.engine
    got = []

    async def send(ctx):
        for i, byte in enumerate(frame):
            await stream_put(ctx, engine.rx, {"data": byte, "framing_error": int(i == 9)})
        while len(got) < 1:
            await ctx.tick()
        for byte in read_csr(4, R.SCRATCH):
            await stream_put(ctx, engine.rx, {"data": byte, "framing_error": 0})

    async def receive(ctx):
        decoder = FrameDecoder()
        while len(got) < 2:
            got.extend(decoder.feed([await stream_get(ctx, engine.tx)]))

    simulate(soc, send, receive, name="frame_engine_framing_error")
    assert got[0] == Frame(Opcode.ERROR, 3, bytes([Status.BAD_CRC]))
    assert got[1] == Frame(Opcode.READ_CSR | 0x80, 4, bytes([Status.OK]) + bytes(4))


def test_timeout_answers_after_the_inter_byte_timeout():
    frame = read_csr(77, R.ID)
    soc = Soc()
    engine = soc.engine
    got, times = [], {}

    async def send(ctx):
        for byte in frame[:6]:
            await stream_put(ctx, engine.rx, {"data": byte, "framing_error": 0})
        times["last_byte"] = ctx.get(cycle_count)
        while len(got) < 1:
            await ctx.tick()
        for byte in frame:
            await stream_put(ctx, engine.rx, {"data": byte, "framing_error": 0})

    cycle_count = Signal(32)

    async def receive(ctx):
        decoder = FrameDecoder()
        first = True
        while len(got) < 2:
            got.extend(decoder.feed([await stream_get(ctx, engine.tx)]))
            if first:
                times["first_response_byte"] = ctx.get(cycle_count)
                first = False

    top = Module()
    top.submodules.soc = soc
    top.d.sync += cycle_count.eq(cycle_count + 1)
    simulate(top, send, receive, name="frame_engine_timeout")
    assert got[0] == Frame(Opcode.ERROR, 77, bytes([Status.TIMEOUT]))
    assert got[1] == Frame(Opcode.READ_CSR | 0x80, 77, bytes([Status.OK])
                           + struct.pack("<I", regmap.ID_VALUE))
    assert TIMEOUT <= times["first_response_byte"] - times["last_byte"] <= TIMEOUT + 4


def test_memory_port_fault_is_bad_address():
    # No range check in the engine: the AXI slave's DECERR comes back as a fault.
    requests = [write_mem(1, MEM_SIZE - 8, bytes(range(16))), read_mem(2, MEM_SIZE - 8, 16),
                read_mem(3, MEM_SIZE - 8, 8)]
    got = request_each(Soc(engine_mem_size=None), requests, name="frame_engine_mem_fault")
    assert [e.status for e in got] == [Status.BAD_ADDRESS, Status.BAD_ADDRESS, Status.OK]
    # The in-range half of the faulting write did land (no range check here).
    assert got[2].data == bytes(range(8))


def test_read_counters():
    requests = [run(1, [1, 2, 3]), encode_request(Opcode.READ_COUNTERS, 2),
                encode_request(Opcode.READ_COUNTERS, 3)]
    got = request_each(Soc(), requests, name="frame_engine_counters")
    names = [c.name for c in regmap.COUNTERS]
    first, second = ([COUNTER_FORMAT.unpack_from(e.data, 8 * i)[0] for i in range(len(names))]
                     for e in got[1:])
    assert len(got[1].data) == len(got[2].data) == 8 * len(names)
    assert first[names.index("COMMANDS_DONE")] == second[names.index("COMMANDS_DONE")] == 3
    assert first[names.index("MACS")] == 0
    # Between the two reads of CYCLES: the first response (75 bytes) and the
    # second request (10 bytes), each at most a byte per cycle.
    cycles = names.index("CYCLES")
    assert 0 < first[cycles] and first[cycles] + 75 + 10 < second[cycles] < first[cycles] + 400


def test_throughput_one_byte_per_cycle():
    frame = write_mem(1, 0, bytes(range(256)) * 3 + bytes(range(252)))
    soc = Soc(latency=2)
    engine = soc.engine
    got, marks = [], {}

    async def send(ctx):
        ctx.set(engine.rx.valid, 1)
        start = None
        for byte in frame:
            ctx.set(engine.rx.payload, {"data": byte, "framing_error": 0})
            await ctx.tick().until(engine.rx.ready)
            start = ctx.get(cycle) if start is None else start
        ctx.set(engine.rx.valid, 0)
        marks["rx"] = ctx.get(cycle) - start
        while not got:
            await ctx.tick()

    async def receive(ctx):
        decoder = FrameDecoder()
        ctx.set(engine.tx.ready, 1)
        while not got:
            byte, = await ctx.tick().sample(engine.tx.payload).until(engine.tx.valid)
            got.extend(decoder.feed([byte]))
        marks["done"] = ctx.get(cycle)

    cycle = Signal(32)
    top = Module()
    top.submodules.soc = soc
    top.d.sync += cycle.eq(cycle + 1)
    simulate(top, send, receive, name="frame_engine_throughput")
    assert got == [Frame(Opcode.WRITE_MEM | 0x80, 1, bytes([Status.OK]))]
    assert marks["rx"] == len(frame) - 1
    # 255 words to memory plus the response (11 bytes) and a few cycles.
    assert marks["done"] < len(frame) + 255 + 11 + 20


# Responses with data words, a data-less one, an error and a CSR read.
RESPONSE_MIX = [write_mem(1, 64, bytes(range(200, 248))), read_mem(2, 64, 48), ping(3),
                encode_request(Opcode.READ_MEM, 4, b"\x00"), read_csr(5, R.SCRATCH),
                run(6, [7, 8]), read_mem(7, 60, 12)]


@pytest.mark.parametrize("pattern", ["always", "alternate", "random", "rare"])
def test_response_register_at_any_ready_rate(pattern):
    """``tx.ready`` driven cycle by cycle, independently of ``valid``: every
    response is still the model's, and a byte once offered stays offered."""
    device = FakeDevice(mem_size=MEM_SIZE, cmd_fifo_depth=16, plan_hash=PLAN_HASH)
    expected = FrameDecoder().feed(b"".join(device.receive(r, 0.0) for r in RESPONSE_MIX))
    assert len(expected) == len(RESPONSE_MIX)
    soc = Soc(latency=2)
    engine = soc.engine
    rng = random.Random(pattern)
    transfers = {}
    decoder, got = FrameDecoder(), []

    async def send(ctx):
        for frame in RESPONSE_MIX:
            for byte in frame:
                await stream_put(ctx, engine.rx, {"data": byte, "framing_error": 0})
            while len(got) < RESPONSE_MIX.index(frame) + 1:
                await ctx.tick()
                got.extend(decoder.feed(transfers.pop("tx", [])))

    async def drive_ready(ctx):
        cycle = 0
        while True:
            ready = {"always": 1, "alternate": cycle % 2,
                     "random": rng.random() < 0.5, "rare": rng.random() < 0.1}[pattern]
            ctx.set(engine.tx.ready, ready)
            await ctx.tick()
            cycle += 1

    simulate(soc, send, processes=[handshake_monitor({"tx": engine.tx}, transfers)],
             background=[drive_ready], name=f"frame_engine_tx_{pattern}")
    assert got == expected


def test_response_timing_at_full_rate():
    """With ``tx.ready`` always high: the first response byte leaves 6 cycles
    after the last byte of a READ_CSR (the output register's cycle included),
    and a response leaves at one byte per cycle except for one idle cycle
    before the CRC, whose value waits for the last data byte to leave."""
    soc = Soc(latency=2)
    engine = soc.engine
    frames = [read_csr(1, R.ID), read_mem(2, 0, 16)]
    cycle = Signal(32)
    marks, times = [], []
    decoder, got = FrameDecoder(), []

    async def send(ctx):
        ctx.set(engine.tx.ready, 1)
        for frame in frames:
            for byte in frame:
                await stream_put(ctx, engine.rx, {"data": byte, "framing_error": 0})
            marks.append(ctx.get(cycle) - 1)      # the cycle the last byte was taken
            while len(got) < frames.index(frame) + 1:
                await ctx.tick()

    async def watch(ctx):
        async for _, _, valid, payload, now in ctx.tick().sample(
                engine.tx.valid, engine.tx.payload, cycle):
            if valid:
                times.append(now)
                got.extend(decoder.feed([payload]))

    top = Module()
    top.submodules.soc = soc
    top.d.sync += cycle.eq(cycle + 1)
    simulate(top, send, processes=[watch], name="frame_engine_tx_timing")
    first_len = 6 + 1 + 4 + 4             # header, status, one word, CRC
    assert times[0] - marks[0] == 6
    for start, length in [(0, first_len), (first_len, 6 + 1 + 16 + 4)]:
        t = times[start:start + length]
        steps = [b - a for a, b in zip(t, t[1:])]
        assert steps == [1] * (length - 5) + [2] + [1] * 3, steps


@pytest.mark.parametrize("kwargs, message", [
    (dict(clk_freq=0), "Clock frequency"),
    (dict(clk_freq=1e6, timeout=0), "timeout"),
    (dict(clk_freq=1e6, timeout=2.5), "timeout"),
    (dict(clk_freq=1e6, mem_size=6), "Memory size"),
    (dict(clk_freq=1e6, mem_size=-4), "Memory size"),
])
def test_parameters_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrameEngine(**kwargs)


def test_default_timeout_is_ten_milliseconds():
    assert FrameEngine(clk_freq=100e6).timeout == 1_000_000
