"""Test support shared by every testbench: stream handshakes, simulation runs.

Stream helpers follow Amaranth 0.5's documented testbench idiom and can insert
random stalls, so every core is exercised under back-pressure. Setting
``FECAFFE_VCD=dir`` makes :func:`simulate` write ``dir/<name>.vcd``.
"""

import collections
import contextlib
import os
import pathlib
import re

from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "handshake_monitor", "simulate", "Stalls",
           "uart_send", "uart_receive", "uart_receiver", "TensorMemory"]


class Stalls:
    """Random idle cycles between transfers: ``probability`` per cycle, seeded."""

    def __init__(self, rng=None, probability=0.0):
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"Stall probability must be in [0, 1), not {probability!r}")
        self.rng, self.probability = rng, probability

    async def wait(self, ctx):
        if self.rng is None or self.probability == 0.0:
            return
        while self.rng.random() < self.probability:
            await ctx.tick()


async def stream_put(ctx, stream, payload, *, stalls=None):
    """Offer ``payload`` on ``stream`` (valid/ready) until it is taken."""
    if stalls is not None:
        await stalls.wait(ctx)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, stalls=None):
    """Accept one payload from ``stream``; while waiting, check that a payload
    once offered (valid high) stays offered and unchanged until taken."""
    if stalls is not None:
        offered = None
        while stalls.rng is not None and stalls.rng.random() < stalls.probability:
            await ctx.tick()
            valid, payload = ctx.get(stream.valid), ctx.get(stream.payload)
            if offered is not None:
                assert valid, "valid dropped before the payload was accepted"
                assert _same(payload, offered), "payload changed while valid and not ready"
            if valid:
                offered = payload
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def uart_send(ctx, pin, data, *, bit_cycles):
    """Drive ``data`` onto the UART input ``pin`` (8N1, LSB first) with a bit
    time of ``bit_cycles`` (a float: a host clock off nominal), as a host's
    UART would; returns after the last stop bit."""
    t, cycle = 0.0, 0
    for byte in data:
        for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            ctx.set(pin, level)
            t += bit_cycles
            while cycle < round(t):
                await ctx.tick()
                cycle += 1


async def uart_receive(ctx, pin, *, bit_cycles):
    """One byte from the UART output ``pin``: wait for a start bit, sample the
    centre of each data bit and of the stop bit (which must be high)."""
    # A plain loop, not ``tick().until()``: a background testbench is left
    # waiting here when the run ends, and an abandoned ``until`` warns.
    await ctx.tick()
    while ctx.get(pin):
        await ctx.tick()
    elapsed, levels = 0, []
    for i in range(1, 10):
        while elapsed < round((i + 0.5) * bit_cycles) - 1:
            await ctx.tick()
            elapsed += 1
        levels.append(ctx.get(pin))
    assert levels[8] == 1, "stop bit low"
    return sum(bit << i for i, bit in enumerate(levels[:8]))


def uart_receiver(pin, sink, *, bit_cycles):
    """A background testbench (for ``simulate(background=...)``) appending
    every byte sent on ``pin`` to ``sink`` (a list, or anything with
    ``append``)."""
    async def receiver(ctx):
        while True:
            sink.append(await uart_receive(ctx, pin, bit_cycles=bit_cycles))
    return receiver


def handshake_monitor(channels, transfers):
    """A process (for ``simulate(processes=...)``) checking the stream rules
    that AXI shares on each ``name: channel``: valid, once high, stays high
    with the payload unchanged until ready. Every transfer is appended to
    ``transfers[name]``."""
    names = list(channels)
    signals = [x for n in names for x in (channels[n].valid, channels[n].ready,
                                          channels[n].payload)]

    async def monitor(ctx):
        offered = {}
        async for _clk, _rst, *values in ctx.tick().sample(*signals):
            for i, name in enumerate(names):
                valid, ready, payload = values[3 * i:3 * i + 3]
                bits = _bits(payload)
                if name in offered:
                    assert valid, f"{name}: valid dropped before ready"
                    assert bits == offered[name], f"{name}: payload changed while waiting"
                if valid and ready:
                    transfers.setdefault(name, []).append(payload)
                    offered.pop(name, None)
                elif valid:
                    offered[name] = bits
    return monitor


def _bits(payload):
    # Struct and array payloads come back as ``data.Const``; compare their bits.
    return payload.as_value().value if hasattr(payload, "as_value") else payload


def _same(a, b):
    return _bits(a) == _bits(b)


def simulate(dut, *testbenches, name, processes=(), background=(), deadline_cycles=100_000,
             clock=1e-8):
    """Run ``testbenches`` (async functions of ``ctx``) against ``dut``.

    ``processes`` are added with ``add_process``, ``background`` testbenches
    with ``add_testbench(background=True)``; neither keeps the run going. The
    run fails after ``deadline_cycles``, so a hung handshake fails the test
    instead of hanging it.
    """
    sim = Simulator(dut)
    sim.add_clock(clock)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    for testbench in background:
        sim.add_testbench(testbench, background=True)

    vcd_dir = os.environ.get("FECAFFE_VCD")
    if vcd_dir:
        path = pathlib.Path(vcd_dir) / (re.sub(r"[^\w.-]+", "_", name) + ".vcd")
        path.parent.mkdir(parents=True, exist_ok=True)
        context = sim.write_vcd(str(path))
    else:
        context = contextlib.nullcontext()
    with context:
        # Each clock cycle is at least two simulator time steps (two edges).
        steps = 0
        while sim.advance():
            steps += 1
            if steps > 2 * deadline_cycles:
                raise AssertionError(f"{name}: testbenches did not finish within "
                                     f"{deadline_cycles} cycles")


class TensorMemory:
    """A ``cores.memory_port`` target over ``words`` (uint32) for core tests.

    It accepts commands ahead, up to ``outstanding`` accepted and not yet
    answered (1: one at a time), and answers them in order, each ``latency``
    cycles or more after it was accepted, so accepted commands overlap;
    ``latency`` is a cycle count or a range ``(lo, hi)``, drawn as
    ``rng.integers(lo, hi)`` (``hi`` excluded). Every channel stalls with
    probability ``stall`` (0: never). A burst past the end faults (reads
    return 0, writes are dropped). A read of a word whose write is accepted
    but still unanswered fails the test: the port promises no order between
    them, so an initiator must not issue it.

    ``bursts`` lists every ``(addr, words, write)`` accepted. Run
    :meth:`processes` as background testbenches, or ``accept`` and ``serve``
    as testbenches that end once ``stop`` is set and ``count`` (the cycle
    counter the latency needs) as a process.
    """

    def __init__(self, port, words, rng, *, stall=0.3, latency=(0, 8), outstanding=4):
        if outstanding < 1:
            raise ValueError(f"outstanding must be at least 1, not {outstanding!r}")
        self.port, self.words, self.rng = port, words, rng
        self.stalls = Stalls(rng, stall) if stall else None
        self.latency, self.outstanding = latency, outstanding
        self.queue = collections.deque()       # (due cycle, addr, words, write, burst)
        self.unanswered = {}                   # burst index -> (addr, words) of writes
        self.bursts = []
        self.cycle = 0
        self.stop = False

    def _delay(self):
        if isinstance(self.latency, int):
            return self.latency
        return int(self.rng.integers(*self.latency))

    async def count(self, ctx):
        async for _ in ctx.tick():
            self.cycle += 1

    async def accept(self, ctx):
        port = self.port
        while not self.stop:
            if not ctx.get(port.cmd.valid) or len(self.queue) >= self.outstanding:
                await ctx.tick()
                continue
            cmd = await stream_get(ctx, port.cmd, stalls=self.stalls)
            addr, n, write = int(cmd.addr), int(cmd.words), int(cmd.write)
            assert addr % 4 == 0 and 1 <= n <= 256, f"bad command {(addr, n, write)}"
            index = len(self.bursts)
            self.bursts.append((addr, n, write))
            if write:
                self.unanswered[index] = (addr, n)
            else:
                clashes = {i: (a, m) for i, (a, m) in self.unanswered.items()
                           if a < addr + 4 * n and addr < a + 4 * m}
                if clashes:
                    recent = list(enumerate(self.bursts))[-24:]
                    raise AssertionError(
                        f"read of {n} words at {addr:#x} (burst {index}) while writes "
                        f"{clashes} (burst: (addr, words)) to its words are unanswered; "
                        f"last bursts (index, (addr, words, write)): {recent}")
            self.queue.append((self.cycle + self._delay(), addr, n, write, index))

    async def serve(self, ctx):
        port = self.port
        while not self.stop:
            if not self.queue or self.queue[0][0] > self.cycle:
                await ctx.tick()
                continue
            _, addr, n, write, index = self.queue[0]
            first = addr // 4
            fault = first + n > len(self.words)
            for i in range(n):
                if write:
                    word = await stream_get(ctx, port.w, stalls=self.stalls)
                    if not fault:
                        self.words[first + i] = word
                else:
                    value = 0 if fault else int(self.words[first + i])
                    await stream_put(ctx, port.r, value, stalls=self.stalls)
            await stream_put(ctx, port.resp, {"fault": int(fault)}, stalls=self.stalls)
            self.queue.popleft()
            self.unanswered.pop(index, None)

    def processes(self):
        return (self.count, self.accept, self.serve)
