"""8N1 UART PHY: :class:`UartRx` and :class:`UartTx`, byte streams on the fabric side.

Both ends time their bits with a fractional baud generator (a phase
accumulator that overflows once per bit), not an integer divider: at 100 MHz
and 12 Mbaud (the Arty's FT2232H) a bit is 8.33 cycles, and an integer divider
of 8 would run 4.2 % fast, past what a receiver tolerates over a 10-bit frame.
With the accumulator every bit lasts ``floor`` or ``ceil`` of the bit time in
cycles and the average rate is exact to ``baud_error`` (under 1e-5).

Figures at 100 MHz, 12 Mbaud (``cycles_per_bit`` 8.33, ``baud_error``
-9.5e-7): TX bits are 8 or 9 cycles and every edge lags its ideal time by
less than one cycle (12 % of a bit); a byte takes 83.3 cycles on average, so
each direction carries at most 1.2 MB/s of frame bytes. The RX samples each
bit within about a cycle of its centre plus the drift of a mismatched
sender; sweeping the sender's rate in simulation (random sub-cycle phase,
mostly back-to-back bytes) it received every byte from senders -4.5 % slow
to +4.0 % fast, about the (4.17 - 1) / 9.5 / 8.33 = 4.0 % the sampling
scheme allows; the tests check +-3.5 % here and +-2 % at 12 and 4 cycles per
bit. The FT2232H derives 12 Mbaud exactly from its 120 MHz clock.
Size (yosys synth_xilinx, xc7): RX 51 LUT + 54 FF, TX 53 LUT + 34 FF.
"""

import math

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "rx_layout"]

#: Payload of :attr:`UartRx.data`: the byte, and whether its stop bit was low.
rx_layout = data.StructLayout({"data": 8, "framing_error": 1})

_MIN_CYCLES_PER_BIT = 4
_PHASE_EXTRA_BITS = 16      # accumulator precision: rate error below 2**-17


class _BaudTiming:
    """Parameter checks and phase accumulator constants shared by RX and TX."""

    def _init_timing(self, clk_freq, baud):
        for name, value in (("Clock frequency", clk_freq), ("Baud rate", baud)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if clk_freq / baud < _MIN_CYCLES_PER_BIT:
            raise ValueError(
                f"Baud rate {baud} at clock frequency {clk_freq} gives "
                f"{clk_freq / baud:.3g} cycles per bit; at least {_MIN_CYCLES_PER_BIT} needed")
        self._clk_freq, self._baud = clk_freq, baud
        self._phase_bits = math.ceil(math.log2(clk_freq / baud)) + _PHASE_EXTRA_BITS
        self._phase_step = round(baud * 2 ** self._phase_bits / clk_freq)

    clk_freq = property(lambda self: self._clk_freq)
    baud = property(lambda self: self._baud)

    @property
    def cycles_per_bit(self):
        """Nominal bit time in clock cycles (need not be an integer)."""
        return self._clk_freq / self._baud

    @property
    def baud_actual(self):
        """The rate the baud generator really produces (average over bits)."""
        return self._clk_freq * self._phase_step / 2 ** self._phase_bits

    @property
    def baud_error(self):
        """Relative error of :attr:`baud_actual`; positive means fast."""
        return self.baud_actual / self._baud - 1

    def _phase(self, m):
        """Accumulator signal, its next value and the bit ``tick`` (comb)."""
        phase = Signal(self._phase_bits)
        total = phase + self._phase_step
        tick = Signal()
        m.d.comb += tick.eq(total[self._phase_bits])
        m.d.sync += phase.eq(total[:self._phase_bits])
        return phase, tick


class UartRx(_BaudTiming, wiring.Component):
    """8N1 receiver: serial ``rx`` pin in, a stream of received bytes out.

    Ports
    -----
    rx : In(1)
        The pin, asynchronous; idle high. Passed through a 2-FF synchroniser.
    data : Out(stream.Signature(rx_layout))
        One payload per received frame: ``data`` and ``framing_error`` (stop
        bit sampled low; the byte is delivered anyway, so a line break reads
        as 0x00 with ``framing_error``). A byte that completes while the
        previous one still waits (``valid`` and not ``ready``) is dropped.
    overrun : Out(1)
        Pulses for one cycle when a byte is dropped that way.
    line_break : Out(1)
        The line has been low for more than 10 bit times (a break: no valid
        frame is that long), until it returns high.

    Timing: the phase accumulator restarts on each start bit's falling edge
    so that bits are sampled at their centre; the start bit is checked at its
    centre, so a low pulse on an idle line shorter than half a bit less one
    cycle is discarded as a glitch (a longer one may read as a 0xFF byte
    with ``framing_error`` low, as on any UART). The stop bit is sampled at
    its centre and the receiver is ready for the next start bit from there,
    so back-to-back frames with one stop bit are received from senders a few
    percent fast or slow. After a framing error or a break it waits for the line to go high
    (idle) before it looks for a start bit again, so it resynchronises on
    the first falling edge after idle. ``data.valid`` rises 3 cycles (2
    synchroniser, 1 register) after the middle of the stop bit.

    Parameters: ``clk_freq`` (Hz) and ``baud``, with at least 4 clock cycles
    per bit.
    """

    def __init__(self, *, clk_freq, baud):
        self._init_timing(clk_freq, baud)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(rx_layout)),
            "overrun": Out(1),
            "line_break": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1, stages=2)

        phase, tick = self._phase(m)
        shift = Signal(8)
        count = Signal(range(8))
        # High once the line has been seen idle since the last frame, so that
        # a stop bit that is low (framing error, break) starts nothing.
        armed = Signal()
        out = self.data

        m.d.sync += self.overrun.eq(0)
        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(rx):
                    m.d.sync += armed.eq(1)
                with m.Elif(armed):
                    # The first tick lands half a bit after the edge, minus
                    # the half cycle by which the edge is seen late on average.
                    m.d.sync += [phase.eq(2 ** (self._phase_bits - 1) + self._phase_step),
                                 armed.eq(0)]
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(rx):
                        m.d.sync += armed.eq(1)      # a glitch; the line is idle
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += count.eq(0)
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)), count.eq(count + 1)]
                    with m.If(count == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    m.d.sync += armed.eq(rx)
                    with m.If(~out.valid | out.ready):
                        m.d.sync += [out.payload.data.eq(shift),
                                     out.payload.framing_error.eq(~rx),
                                     out.valid.eq(1)]
                    with m.Else():
                        m.d.sync += self.overrun.eq(1)
                    m.next = "IDLE"

        break_cycles = math.floor(10 * self.cycles_per_bit) + 1
        low_cycles = Signal(range(break_cycles + 1))
        with m.If(rx):
            m.d.sync += low_cycles.eq(0)
        with m.Elif(low_cycles != break_cycles):
            m.d.sync += low_cycles.eq(low_cycles + 1)
        m.d.comb += self.line_break.eq(low_cycles == break_cycles)
        return m


class UartTx(_BaudTiming, wiring.Component):
    """8N1 transmitter: a stream of bytes in, serial ``tx`` pin out.

    Ports
    -----
    data : In(stream.Signature(8))
        Bytes to send. ``ready`` is low while a frame is shifting out and
        rises in the cycle the stop bit ends, so a waiting byte follows with
        no idle time (one stop bit).
    tx : Out(1)
        The pin, registered; idle high.
    busy : Out(1)
        A frame is being sent.

    Latency: the start bit begins the cycle after a byte is accepted on an
    idle line; a frame lasts ``10 * cycles_per_bit`` cycles (each bit
    ``floor`` or ``ceil`` of the bit time). Parameters as :class:`UartRx`.
    """

    def __init__(self, *, clk_freq, baud):
        self._init_timing(clk_freq, baud)
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        phase, tick = self._phase(m)
        shift = Signal(9)                   # data bits then the stop bit
        remaining = Signal(range(11))       # bits left, including the one on the pin

        m.d.comb += [
            self.busy.eq(remaining != 0),
            self.data.ready.eq((remaining == 0) | ((remaining == 1) & tick)),
        ]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.data.payload, 1)),
                         remaining.eq(10)]
            with m.If(remaining == 0):
                m.d.sync += phase.eq(0)     # a full start bit from an idle line
        with m.Elif(tick & (remaining != 0)):
            m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], 1)),
                         remaining.eq(remaining - 1)]
        return m
