# amaranth: UnusedElaboratable=no
# (The UARTs and the engine are built in __init__ so that bad parameters fail
# there; when a later one refuses its parameters the earlier ones go unused.)
"""UART host link: the serial pins to the frame engine's buses."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .csr_bus import CsrBus
from .frame_engine import FrameEngine
from .memory_port import MemoryPort
from .skid_buffer import SkidBuffer
from .uart import UartRx, UartTx

__all__ = ["UartHostLink"]


class UartHostLink(wiring.Component):
    """:class:`~fecaffe_hw.cores.uart.UartRx` and
    :class:`~fecaffe_hw.cores.uart.UartTx` (8N1 at ``baud``) around a
    :class:`~fecaffe_hw.cores.frame_engine.FrameEngine`.

    Ports: ``rx`` In(1) and ``tx`` Out(1), the pins (idle high); ``csr``,
    ``mem``, ``cmd`` and ``cmd_space`` as the frame engine's. ``overrun``
    pulses when the receiver dropped a byte (the host sent while a response
    was still going out, which a stop-and-wait host never does).

    Parameters: ``clk_freq`` (Hz), ``baud`` (at least 4 cycles per bit; the
    Arty's FT2232H runs up to 12 Mbaud), ``timeout`` (inter-byte timeout in
    cycles, default 10 ms) and ``mem_size`` as the frame engine's. Throughput
    is the UART's: ``baud / 10`` bytes per second each way. Size (yosys
    synth_xilinx, xc7, 100 MHz / 12 Mbaud): 1085 LUT + 366 FF + 1 RAMB18.
    """

    def __init__(self, *, clk_freq, baud, timeout=None, mem_size=None):
        # Built here so that bad parameters fail at construction, naming the value.
        self._uart_rx = UartRx(clk_freq=clk_freq, baud=baud)
        self._uart_tx = UartTx(clk_freq=clk_freq, baud=baud)
        self._engine = FrameEngine(clk_freq=clk_freq, timeout=timeout, mem_size=mem_size)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "overrun": Out(1),
            "csr": Out(CsrBus()),
            "mem": Out(MemoryPort()),
            "cmd": Out(self._engine.cmd.signature),
            "cmd_space": In(16),
        })

    clk_freq = property(lambda self: self._engine.clk_freq)
    baud = property(lambda self: self._uart_rx.baud)
    timeout = property(lambda self: self._engine.timeout)
    mem_size = property(lambda self: self._engine.mem_size)

    @property
    def cycles_per_bit(self):
        return self._uart_rx.cycles_per_bit

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = self._uart_rx
        m.submodules.uart_tx = uart_tx = self._uart_tx
        m.submodules.engine = engine = self._engine

        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            self.tx.eq(uart_tx.tx),
            self.overrun.eq(uart_rx.overrun),
            engine.cmd_space.eq(self.cmd_space),
        ]
        wiring.connect(m, uart_rx.data, engine.rx)
        # The transmitter's ready comes from its baud counter; registered
        # here, it does not run into the frame engine's response logic.
        m.submodules.tx_skid = tx_skid = SkidBuffer(8)
        wiring.connect(m, engine.tx, tx_skid.i)
        wiring.connect(m, tx_skid.o, uart_tx.data)
        wiring.connect(m, wiring.flipped(self.csr), engine.csr)
        wiring.connect(m, wiring.flipped(self.mem), engine.mem)
        wiring.connect(m, wiring.flipped(self.cmd), engine.cmd)
        return m
