# amaranth: UnusedElaboratable=no
# (The tensor memory model is elaborated in __init__ so that its Memory can be
# handed to the simulation backend before the design is.)
"""The design ``fecaffe-hw sim`` simulates: the generated SoC with its host
link as byte streams, and tensor memory as a latency model.

The SoC is the one ``generate`` builds for the plan, except that the UART
PHY is replaced by its byte streams (``Soc(link="stream")``: one byte per
cycle; the PHY is verified bit-level on its own), and tensor memory is an
:class:`~fecaffe_hw.cores.axi_ram.AxiRam` behind the SoC's AXI4 master (the
board's DDR3L latency by default) or the SoC's own on-chip one.

Ports: ``host_rx``, ``host_tx`` (byte streams), ``trace_valid`` and
``trace_data`` (:data:`TRACE_LAYOUT`: a record in every cycle in which the
sequencer issues a command or a unit finishes one, with the running totals
of the performance counters before that cycle), so a backend can log
per-command timing without a host round trip.
"""

from fractions import Fraction

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..cores.axi_ram import AxiRam
from ..cores.sequencer import TRACE_UNITS
from ..soc import Soc

__all__ = ["SimTop", "TRACE_LAYOUT", "TOTALS"]

#: Counter totals carried by each trace record (``CounterIncrements`` fields).
TOTALS = ("macs", "array_stall", "mem_stall", "mem_read_bytes", "mem_write_bytes")

TRACE_LAYOUT = data.StructLayout({
    "issued": 1,                    # the command below left the issue slot
    "done": len(TRACE_UNITS),       # units that finished a command (TRACE_UNITS bits)
    "opcode": 8,
    "stage": 4,
    "layer": 16,
    "bad": 1,
    **{name: 40 for name in TOTALS},
})


class SimTop(wiring.Component):
    """``Soc(plan, link="stream")`` plus its tensor memory model.

    ``memory_latency``: cycles from a read burst's address to its first beat
    (default: the plan's memory latency, the Arty DDR3L's for DRAM plans).
    ``memory_bandwidth``: bytes per cycle the DRAM model moves, up to the
    32-bit port's 4 (default: the plan's, the board's DRAM peak capped by the
    port). ``memory`` is the model's ``lib.memory.Memory`` (32-bit words
    from byte address 0), for the backends' backdoor.
    """

    def __init__(self, plan, *, memory_latency=None, memory_bandwidth=None):
        self._soc = Soc(plan, link="stream", memory_latency=memory_latency)
        self._ram = self._ram_module = None
        if self._soc.external_memory:
            size = -(-max(plan.memory["used"], 4096) // 4096) * 4096
            latency = memory_latency or plan.memory.get("latency", 24)
            bandwidth = (plan.memory.get("bytes_per_cycle", 4.0) if memory_bandwidth is None
                         else memory_bandwidth)
            if not 0 < bandwidth <= 4:
                raise ValueError(f"Memory bandwidth must be in (0, 4] bytes per cycle (the "
                                 f"32-bit port's peak), not {bandwidth!r}")
            self._ram = AxiRam(size=size, data_width=32, addr_width=self._soc.addr_width,
                               latency=latency, beats_per_cycle=Fraction(bandwidth / 4)
                               .limit_denominator(256))
            self._ram_module = self._ram.elaborate(None)
            self.memory = self._ram_module.submodules.mem
            self.memory_words = size // 4
        else:
            if memory_bandwidth is not None:
                raise ValueError(f"{plan.board['name']} keeps tensor memory on chip: there "
                                 f"is no DRAM whose bandwidth could be set")
            self.memory = self._soc.memory
            self.memory_words = self._soc.mem_size // 4
        super().__init__({
            "host_rx": In(stream.Signature(8)),
            "host_tx": Out(stream.Signature(8)),
            "trace_valid": Out(1),
            "trace_data": Out(TRACE_LAYOUT),
        })

    soc = property(lambda self: self._soc)

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self._soc
        wiring.connect(m, wiring.flipped(self.host_rx), soc.host_rx)
        wiring.connect(m, soc.host_tx, wiring.flipped(self.host_tx))
        if self._ram_module is not None:
            m.submodules.ram = self._ram_module
            wiring.connect(m, soc.mem, self._ram.axi)
        totals = {name: Signal(40, name=f"total_{name}") for name in TOTALS}
        for name, total in totals.items():
            m.d.sync += total.eq(total + getattr(soc.counters, name))
        m.d.comb += [
            self.trace_valid.eq(soc.trace.valid | soc.trace.done.any()),
            self.trace_data.issued.eq(soc.trace.valid),
            self.trace_data.done.eq(soc.trace.done),
            self.trace_data.opcode.eq(soc.trace.opcode),
            self.trace_data.stage.eq(soc.trace.stage),
            self.trace_data.layer.eq(soc.trace.layer),
            self.trace_data.bad.eq(soc.trace.bad),
        ]
        m.d.comb += [self.trace_data[name].eq(total) for name, total in totals.items()]
        return m
