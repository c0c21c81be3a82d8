# amaranth: UnusedElaboratable=no
import bisect
import math

import numpy as np
import pytest
from amaranth.hdl import Module

from fecaffe_hw.cores.uart import UartRx, UartTx
from support import Stalls, simulate, stream_get, stream_put


# ---- a model serial line: what an ideal sender puts on the wire ----------------------

def serial_levels(frames, *, bit_cycles, phase=0.0, lead_bits=2.0, tail_bits=3.0):
    """Pin level per clock cycle for ``frames``: (idle bits before, byte, stop level)
    sent with a bit time of ``bit_cycles`` (float) starting ``phase`` into cycle 0.
    Glitches are frames with byte ``None`` and a low time in cycles as idle."""
    edges, levels = [0.0], [1]
    t = lead_bits * bit_cycles - phase
    for idle_bits, byte, stop in frames:
        t += idle_bits * bit_cycles
        if byte is None:            # a low pulse of ``stop`` cycles
            edges += [t, t + stop]
            levels += [0, 1]
            t += stop
            continue
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
        for bit in bits:
            edges.append(t)
            levels.append(bit)
            t += bit_cycles
        edges.append(t)
        levels.append(1)
    end = math.ceil(t + tail_bits * bit_cycles)
    return [levels[bisect.bisect_right(edges, c) - 1] for c in range(end)]


def receive(dut, levels, *, ready=True, name):
    """Drive ``levels`` on ``dut.rx``, one per cycle; return the payloads taken
    (data, framing_error), and per cycle ``overrun`` and ``line_break``."""
    got, overruns, breaks = [], [], []

    async def bench(ctx):
        ctx.set(dut.data.ready, ready)
        for level in levels:
            ctx.set(dut.rx, level)
            if ready and ctx.get(dut.data.valid):
                payload = ctx.get(dut.data.payload)
                got.append((int(payload.data), int(payload.framing_error)))
            overruns.append(ctx.get(dut.overrun))
            breaks.append(ctx.get(dut.line_break))
            await ctx.tick()

    simulate(dut, bench, name=name, deadline_cycles=len(levels) + 100)
    return got, overruns, breaks


def random_frames(rng, n, *, back_to_back=0.5, stop_low=0.0):
    frames = []
    for _ in range(n):
        idle = 0.0 if rng.random() < back_to_back else float(rng.uniform(0.05, 3.0))
        stop = 0 if rng.random() < stop_low else 1
        frames.append((idle, int(rng.integers(0, 256)), stop))
    return frames


# ---- receiver ---------------------------------------------------------------------------

@pytest.mark.parametrize("mismatch", [-0.02, 0.0, 0.02])
def test_rx_baud_mismatch(mismatch):
    # 12 MHz / 1 Mbaud: 12 cycles per bit; the sender runs ``mismatch`` fast.
    rng = np.random.default_rng([12, int(1000 * mismatch) + 100])
    dut = UartRx(clk_freq=12e6, baud=1e6)
    frames = random_frames(rng, 40)
    frames += [(0.0, 0x00, 1), (0.0, 0xFF, 1), (0.0, 0x55, 1), (0.0, 0xAA, 1)]
    levels = serial_levels(frames, bit_cycles=12 / (1 + mismatch), phase=rng.random())
    got, overruns, _ = receive(dut, levels, name=f"uart_rx_mismatch_{mismatch}")
    assert got == [(byte, 0) for _, byte, _ in frames]
    assert not any(overruns)


@pytest.mark.parametrize("clk_freq, baud", [(100e6, 12e6), (10e6, 2.5e6)])
@pytest.mark.parametrize("mismatch", [-0.02, 0.02])
def test_rx_fractional_and_minimum_bit_time(clk_freq, baud, mismatch):
    # 8.33 cycles per bit (the Arty's 12 Mbaud) and the minimum, 4 cycles.
    rng = np.random.default_rng([int(baud), int(1000 * mismatch) + 100])
    dut = UartRx(clk_freq=clk_freq, baud=baud)
    frames = random_frames(rng, 30, back_to_back=0.7)
    for phase in (0.0, 0.5, 0.99):
        levels = serial_levels(frames, bit_cycles=clk_freq / baud / (1 + mismatch),
                               phase=phase)
        got, _, _ = receive(dut, levels, name=f"uart_rx_{baud}_{mismatch}_{phase}")
        assert got == [(byte, 0) for _, byte, _ in frames], phase


@pytest.mark.parametrize("mismatch", [-0.035, 0.035])
def test_rx_tolerance_at_12_mbaud(mismatch):
    # The margin uart.py's docstring quotes (its sweep found -4.5 % .. +4.0 %).
    rng = np.random.default_rng([35, int(mismatch > 0)])
    dut = UartRx(clk_freq=100e6, baud=12e6)
    for phase in rng.random(4):
        frames = random_frames(rng, 16, back_to_back=0.8)
        levels = serial_levels(frames, bit_cycles=100 / 12 / (1 + mismatch), phase=phase)
        got, _, _ = receive(dut, levels, name=f"uart_rx_tolerance_{mismatch}")
        assert got == [(byte, 0) for _, byte, _ in frames], phase


def test_rx_framing_error_recovers():
    rng = np.random.default_rng(3)
    dut = UartRx(clk_freq=12e6, baud=1e6)
    frames = random_frames(rng, 30, back_to_back=0.3, stop_low=0.3)
    # The receiver needs to see the line idle after a low stop bit, as a UART
    # must: the bit after a low stop bit cannot be told from a start bit.
    frames = [(max(idle, 1.0) if k and frames[k - 1][2] == 0 else idle, byte, stop)
              for k, (idle, byte, stop) in enumerate(frames)]
    assert any(stop == 0 for _, _, stop in frames)
    levels = serial_levels(frames, bit_cycles=12.0, phase=0.3)
    got, _, _ = receive(dut, levels, name="uart_rx_framing")
    assert got == [(byte, 1 - stop) for _, byte, stop in frames]


def test_rx_glitches_are_ignored():
    # Low pulses shorter than half a bit minus one cycle (here 1..4 cycles of
    # 12, at any phase) on an idle line start no byte; a real byte right after
    # each is received.
    dut = UartRx(clk_freq=12e6, baud=1e6)
    frames = []
    for width in (0.5, 1.0, 2.0, 3.0, 4.0, 4.9):
        frames += [(1.0, None, width), (0.5, 0xC3, 1), (1.0, None, width), (0.1, 0x3C, 1)]
    for phase in (0.0, 0.4, 0.8):
        levels = serial_levels(frames, bit_cycles=12.0, phase=phase)
        got, _, _ = receive(dut, levels, name=f"uart_rx_glitch_{phase}")
        assert got == [(byte, 0) for _, byte, _ in frames if byte is not None], phase


def test_rx_break():
    dut = UartRx(clk_freq=12e6, baud=1e6)
    # 0x41, then the line low for 40 bit times (a break), then idle, then 0x42.
    levels = serial_levels([(0.0, 0x41, 1)], bit_cycles=12.0)
    low_start = len(levels)
    levels += [0] * (40 * 12) + [1] * (2 * 12)
    levels += serial_levels([(0.0, 0x42, 1)], bit_cycles=12.0)
    got, _, breaks = receive(dut, levels, name="uart_rx_break")
    assert got == [(0x41, 0), (0x00, 1), (0x42, 0)]
    # line_break rises once, after 10 bit times low (plus the synchroniser),
    # and falls when the line returns high.
    rises = [c for c in range(1, len(breaks)) if breaks[c] and not breaks[c - 1]]
    assert len(rises) == 1
    assert low_start + 10 * 12 < rises[0] <= low_start + 10 * 12 + 4
    assert sum(breaks) > 25 * 12


def test_rx_overrun_keeps_the_first_byte():
    dut = UartRx(clk_freq=12e6, baud=1e6)
    levels = serial_levels([(0.0, 0x5A, 1), (0.0, 0xA5, 1), (1.0, 0x0F, 1)], bit_cycles=12.0)
    got = []

    async def bench(ctx):
        overruns = 0
        for level in levels:
            ctx.set(dut.rx, level)
            overruns += ctx.get(dut.overrun)
            await ctx.tick()
        assert overruns == 2
        payload = await stream_get(ctx, dut.data)
        got.append((int(payload.data), int(payload.framing_error)))
        await ctx.tick()
        assert not ctx.get(dut.data.valid)

    simulate(dut, bench, name="uart_rx_overrun")
    assert got == [(0x5A, 0)]


# ---- transmitter ------------------------------------------------------------------------

def decode_line(levels, bit_cycles):
    """An ideal receiver: returns (start cycle, byte, stop bit) per frame, sampling
    each bit at its nominal centre from the falling edge of its start bit."""
    frames, c = [], 1
    while c < len(levels):
        if levels[c - 1] and not levels[c]:
            centre = [round(c + (k + 0.5) * bit_cycles - 0.5) for k in range(10)]
            if centre[-1] >= len(levels):
                raise AssertionError(f"frame starting at cycle {c} is cut off")
            bits = [levels[i] for i in centre]
            assert bits[0] == 0, f"start bit at cycle {c} does not last half a bit"
            byte = sum(bit << k for k, bit in enumerate(bits[1:9]))
            frames.append((c, byte, bits[9]))
            c = centre[-1]
        c += 1
    return frames


def transmit(dut, payloads, *, rng=None, stall=0.0, tail_cycles=None, name):
    """Send ``payloads`` through ``dut``; return the tx level per cycle and the
    cycles at which each byte was accepted, checking ``ready`` every cycle."""
    levels, accepted = [], []
    tail_cycles = tail_cycles or math.ceil(12 * dut.cycles_per_bit)
    stalls = Stalls(rng, stall)

    async def feed(ctx):
        for byte in payloads:
            await stream_put(ctx, dut.data, byte, stalls=stalls)

    async def watch(ctx):
        idle = 0
        while idle < tail_cycles:
            levels.append(ctx.get(dut.tx))
            if ctx.get(dut.data.valid) and ctx.get(dut.data.ready):
                accepted.append(len(levels) - 1)
            idle = idle + 1 if len(accepted) == len(payloads) and not ctx.get(dut.busy) \
                else 0
            await ctx.tick()

    simulate(dut, feed, watch, name=name)
    return levels, accepted


@pytest.mark.parametrize("clk_freq, baud", [(12e6, 1e6), (100e6, 12e6), (10e6, 2.5e6)])
def test_tx_waveform(clk_freq, baud):
    rng = np.random.default_rng(int(baud))
    dut = UartTx(clk_freq=clk_freq, baud=baud)
    payloads = [int(b) for b in rng.integers(0, 256, 40)] + [0x00, 0xFF]
    levels, accepted = transmit(dut, payloads, rng=rng, stall=0.2,
                                name=f"uart_tx_{clk_freq}_{baud}")
    bit = dut.cycles_per_bit
    frames = decode_line(levels, bit)
    assert [(byte, stop) for _, byte, stop in frames] == [(b, 1) for b in payloads]
    # Every bit edge lies within one cycle of the ideal edge of its frame.
    for start, byte, _ in frames:
        bits = [0] + [(byte >> k) & 1 for k in range(8)] + [1]
        for k in range(1, 10):
            if bits[k] != bits[k - 1]:
                ideal = start + k * bit
                edge = next(c for c in range(math.floor(ideal) - 1, len(levels))
                            if levels[c] == bits[k])
                assert abs(edge - ideal) <= 1, (start, k, edge, ideal)
    # Each start bit begins the cycle after its byte was accepted.
    assert [start - 1 for start, _, _ in frames] == accepted


def test_tx_back_pressure():
    # The source offers every byte at once: ready stays low for the whole frame,
    # so frames go out back to back, 10 bit times apart, each byte exactly once.
    clk_freq, baud = 100e6, 12e6
    dut = UartTx(clk_freq=clk_freq, baud=baud)
    payloads = list(range(0x30, 0x30 + 24))
    levels, accepted = transmit(dut, payloads, name="uart_tx_backpressure")
    frames = decode_line(levels, dut.cycles_per_bit)
    assert [(byte, stop) for _, byte, stop in frames] == [(b, 1) for b in payloads]
    frame_cycles = 10 * dut.cycles_per_bit
    for k in range(1, len(payloads)):
        assert abs(accepted[k] - accepted[0] - k * frame_cycles) <= 1
        assert abs(frames[k][0] - frames[0][0] - k * frame_cycles) <= 1
    assert all(start == accept + 1 for (start, _, _), accept in zip(frames, accepted))
    # Over 24 frames the average rate is the nominal one (fractional generator).
    span = frames[-1][0] - frames[0][0]
    assert abs(span / (23 * frame_cycles) - 1) < 1 / (23 * frame_cycles) + 1e-5


# ---- both ends --------------------------------------------------------------------------

@pytest.mark.parametrize("clk_freq, baud", [(100e6, 12e6), (12e6, 1e6)])
def test_loopback(clk_freq, baud):
    rng = np.random.default_rng(int(baud) + 1)
    tx, rx = UartTx(clk_freq=clk_freq, baud=baud), UartRx(clk_freq=clk_freq, baud=baud)
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.rx.eq(tx.tx)
    payloads = [int(b) for b in rng.integers(0, 256, 48)]
    stalls = Stalls(rng, 0.3)
    got = []

    async def feed(ctx):
        for byte in payloads:
            await stream_put(ctx, tx.data, byte, stalls=stalls)

    async def check(ctx):
        overruns = 0
        for _ in payloads:
            payload = await stream_get(ctx, rx.data)
            got.append((int(payload.data), int(payload.framing_error)))
            overruns += ctx.get(rx.overrun)
        assert overruns == 0

    simulate(m, feed, check, name=f"uart_loopback_{baud}")
    assert got == [(b, 0) for b in payloads]


# ---- parameters -------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [UartRx, UartTx])
def test_baud_generator_precision(cls):
    for clk_freq, baud in ((100e6, 12e6), (12e6, 1e6), (100e6, 115200), (48e6, 3e6),
                           (4, 1)):
        dut = cls(clk_freq=clk_freq, baud=baud)
        assert dut.cycles_per_bit == clk_freq / baud
        assert abs(dut.baud_error) < 2 ** -17
        assert dut.baud_actual == pytest.approx(baud, rel=2 ** -17)


@pytest.mark.parametrize("cls", [UartRx, UartTx])
@pytest.mark.parametrize("kwargs, match", [
    ({"clk_freq": 100e6, "baud": 30e6}, r"Baud rate 30000000.0 .* 3.33 cycles per bit"),
    ({"clk_freq": 12, "baud": 4}, "3 cycles per bit; at least 4"),
    ({"clk_freq": 0, "baud": 9600}, "Clock frequency must be a positive number, not 0"),
    ({"clk_freq": 100e6, "baud": -1}, "Baud rate must be a positive number, not -1"),
    ({"clk_freq": 100e6, "baud": True}, "Baud rate must be a positive number, not True"),
    ({"clk_freq": "100e6", "baud": 9600}, "Clock frequency must be .* not '100e6'"),
    ({"clk_freq": float("inf"), "baud": 9600}, "Clock frequency must be .* not inf"),
])
def test_parameter_errors(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_rx_signature():
    dut = UartRx(clk_freq=12e6, baud=1e6)
    assert dut.data.payload.shape().size == 9
    assert {"data", "framing_error"} <= set(dict(dut.data.payload.shape()))
