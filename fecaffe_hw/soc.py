# amaranth: UnusedElaboratable=no
# (On-chip tensor memory is elaborated in __init__, see ``Soc.memory``.)
"""The accelerator SoC for one :class:`~fecaffe_hw.compiler.plan.Plan`.

::

    rx/tx pins -> UartHostLink --csr--> CsrBank (runtime.regmap)
                      |  \\--cmd--> command FIFO --> Sequencer --> array, DMA,
                      |                                 |          scratchpads
                      \\--mem--\\                        |
                              MemoryArbiter <-----------/
                                   |
                               AxiMaster --> AXI4 ``mem`` port (DDR3L via MIG)
                                             or an on-chip AxiRam

With ``link="pcie"`` (a Xilinx XDMA bridge, ``docs/pcie.md``) the UART link
is replaced by the bridge's AXI4-Lite and AXI-Stream channels::

    axil (BAR0) -> AxilCsr --csr--> CsrBank   (CMD_PUSH writes -> command FIFO)
    h2c / c2h  <-> AxisDma --mem--> MemoryArbiter (DMA_ADDR / DMA_LEN / DMA_CONTROL)

Everything behind the CSR bus, the command FIFO and the arbiter is the same.

The register map, the frame format and the command set come from
``fecaffe_hw.runtime`` (the same modules the host imports), and the
identity registers carry the plan's array shape, capabilities and hash, so
the host can check it talks to the bitstream it expects.
"""

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .cores.axi import AxiLiteSignature, AxiSignature, AxiStreamSignature
from .cores.axi_master import AxiMaster
from .cores.axi_ram import AxiRam
from .cores.axil_csr import AxilCsr
from .cores.axis_dma import AxisDma
from .cores.csr_bank import CsrBank
from .cores.host_link import UartHostLink
from .cores.memory_arbiter import MemoryArbiter
from .cores.frame_engine import FrameEngine
from .cores.sequencer import CounterIncrements, PoolGeometry, Sequencer, TraceEvent
from .compiler.plan import buffer_depths
from .errors import PlanError
from .runtime.regmap import PCIE_REGISTERS, REGISTERS, register

__all__ = ["Soc", "COMMAND_FIFO_DEPTH", "ON_CHIP_MEMORY_LIMIT", "PCIE_CSR_ADDR_WIDTH"]

#: Command words the FIFO between the host link and the sequencer holds: a
#: full RUN frame (255 words) fits, so the host never waits on one frame.
COMMAND_FIFO_DEPTH = 512

#: Largest tensor memory built from block RAM when a board has no DRAM
#: controller (the plan has already checked it against the board's BRAM).
ON_CHIP_MEMORY_LIMIT = 4 << 20

#: Byte address bits of the PCIe link's AXI4-Lite port (a 64 KiB BAR0).
PCIE_CSR_ADDR_WIDTH = 16


class Soc(wiring.Component):
    """The accelerator for ``plan``, with its host link and tensor memory port.

    Ports with ``link="uart"``: ``rx`` In(1), ``tx`` Out(1): the UART pins
    (idle high). With ``link="stream"`` (simulation): ``host_rx``/``host_tx``,
    the frame engine's byte streams (the UART's bytes, one per cycle), and
    the sequencer's ``trace`` and ``counters``. With ``link="pcie"`` (the plan's board must list a PCIe
    link): ``axil`` (``In(AxiLiteSignature(16))``, the XDMA's M_AXI_LITE on
    BAR0), ``h2c`` (``In(AxiStreamSignature(32))``) and ``c2h``
    (``Out(AxiStreamSignature(32))``), the XDMA's stream channels (through
    32-bit width converters in the block design); see ``docs/pcie.md``.
    ``mem``: ``Out(AxiSignature(addr_width, data_width=32))``, the tensor
    memory master, when the board has external memory (``plan.memory`` names
    a DRAM kind); otherwise tensor memory is an on-chip :class:`AxiRam` of
    ``plan.memory["used"]`` bytes and there is no ``mem`` port.

    CONTROL.soft_reset resets the sequencer and the command FIFO only; issue
    it when STATUS.busy is low (a reset in the middle of a DMA burst would
    leave the memory side mid-transaction). SGD_RATE, SGD_MOMENTUM,
    SGD_DECAY and SGD_NORM drive the update engine's constants (training
    plans); each write of LFSR_SEED reseeds its rounding LFSR.

    Parameters: ``plan``; ``clk_freq`` in Hz (default: the board's clock);
    ``baud`` of the UART (default 12 Mbaud, the Arty's FT2232H maximum);
    ``memory_latency``: the on-chip or simulated memory's latency in cycles.
    """

    def __init__(self, plan, *, clk_freq=None, baud=12_000_000, link="uart",
                 memory_latency=None):
        if link not in ("uart", "pcie", "stream"):
            raise PlanError(f"link {link!r} is unknown (uart, pcie, or stream for simulation)")
        if link == "pcie" and "pcie" not in plan.board.get("links", ()):
            raise PlanError(f"board {plan.board['name']} has no PCIe link "
                            f"(links: {', '.join(plan.board.get('links', ()))})")
        self._plan = plan
        self._link_kind = link
        self._clk_freq = float(clk_freq if clk_freq is not None
                               else plan.board["clock_mhz"] * 1e6)
        self._external = plan.board.get("memory") is not None
        self._mem_size = (plan.board["memory"]["bytes"] if self._external
                          else _round_up(max(plan.memory["used"], 4096), 4096))
        if not self._external and self._mem_size > ON_CHIP_MEMORY_LIMIT:
            raise PlanError(f"tensor memory needs {self._mem_size:,} bytes on chip; "
                            f"the on-chip limit is {ON_CHIP_MEMORY_LIMIT:,}")
        self._memory_latency = (memory_latency if memory_latency is not None
                                else plan.memory.get("latency", 2) if self._external else 2)
        # Built here so that parameters are checked now, naming the bad value.
        if link == "uart":
            self._link = UartHostLink(clk_freq=self._clk_freq, baud=baud,
                                      mem_size=min(self._mem_size, 2**32 - 4))
        elif link == "stream":
            self._link = FrameEngine(clk_freq=self._clk_freq,
                                     mem_size=min(self._mem_size, 2**32 - 4))
        else:
            self._link = AxilCsr(addr_width=PCIE_CSR_ADDR_WIDTH)
            self._dma = AxisDma(mem_size=min(self._mem_size, 2**32))
        self._sequencer = Sequencer(
            rows=plan.rows, cols=plan.cols, data_width=plan.data_width,
            acc_width=plan.acc_width,
            **dict(zip(("a_depth", "b_depth", "c_depth"), buffer_depths(plan))),
            eltwise_in_frac=plan.units.get("eltwise", {}).get("in_frac", 12),
            eltwise_aux_frac=plan.units.get("eltwise", {}).get("aux_frac", 15),
            # Sigmoid/TanH tables only for nets that use them.
            eltwise_tables=tuple(plan.units.get("eltwise", {}).get("tables", ())),
            # One pooling engine configuration per geometry the net pools with.
            pool_geometries=tuple(PoolGeometry.from_layer(layer) for layer in plan.layers
                                  if layer["type"] == "Pooling"),
            pool_backward=plan.training,
            # The update engine (ACC_ADD, ACC_BIAS, SGD_UPDATE) in training builds.
            training=plan.training, grad_bits=plan.grad_bits,
            lfsr_reset=register("LFSR_SEED").reset)
        self._addr_width = max(12, (self._mem_size - 1).bit_length())
        if link == "uart":
            ports = {"rx": In(1, init=1), "tx": Out(1, init=1)}
        elif link == "stream":
            ports = {"host_rx": In(stream.Signature(8)), "host_tx": Out(stream.Signature(8)),
                     "trace": Out(TraceEvent),
                     "counters": Out(CounterIncrements(plan.rows, plan.cols))}
        else:
            ports = {"axil": In(AxiLiteSignature(addr_width=PCIE_CSR_ADDR_WIDTH)),
                     "h2c": In(AxiStreamSignature(32)),
                     "c2h": Out(AxiStreamSignature(32))}
        if self._external:
            ports["mem"] = Out(AxiSignature(addr_width=self._addr_width, data_width=32))
            self._ram = self._ram_module = None
        else:
            self._ram = AxiRam(size=self._mem_size, data_width=32, addr_width=self._addr_width,
                               latency=self._memory_latency)
            # Elaborated now so that a simulator can reach its Memory (``memory``).
            self._ram_module = self._ram.elaborate(None)
        super().__init__(ports)

    plan = property(lambda self: self._plan)
    clk_freq = property(lambda self: self._clk_freq)
    external_memory = property(lambda self: self._external)
    mem_size = property(lambda self: self._mem_size)
    link = property(lambda self: self._link_kind)
    addr_width = property(lambda self: self._addr_width)
    sequencer = property(lambda self: self._sequencer)

    @property
    def memory(self):
        """The on-chip tensor memory's ``lib.memory.Memory`` (None with a ``mem`` port)."""
        return self._ram_module.submodules.mem if self._ram_module is not None else None

    @property
    def baud(self):
        """The UART's baud rate (None on the PCIe link)."""
        return self._link.baud if self._link_kind == "uart" else None

    def capabilities(self):
        """The CAPABILITIES fields this design reports."""
        units = self._plan.units
        return {
            "training": int(self._plan.training),
            "pooling": int("pool" in units),
            "sigmoid_tanh": int(bool(units.get("eltwise", {}).get("tables"))),
            "lrn": 0,
            "link_pcie": int(self._link_kind == "pcie"),
            "external_memory": int(self._external),
        }

    def elaborate(self, platform):
        m = Module()
        plan = self._plan

        m.submodules.link = link = self._link
        pcie = self._link_kind == "pcie"
        # A UART SoC leaves the PCIe-only registers unmapped (BAD_ADDRESS).
        m.submodules.csr = bank = CsrBank(
            REGISTERS if pcie else [r for r in REGISTERS if r.name not in PCIE_REGISTERS])
        soft_reset = Signal()
        m.submodules.sequencer = sequencer = ResetInserter(soft_reset)(self._sequencer)
        m.submodules.commands = commands = ResetInserter(soft_reset)(
            fifo.SyncFIFOBuffered(width=32, depth=COMMAND_FIFO_DEPTH))
        m.submodules.arbiter = arbiter = MemoryArbiter(ports=2)
        m.submodules.axi_master = axi_master = AxiMaster(addr_width=self._addr_width,
                                                         data_width=32)

        m.d.comb += [
            sequencer.commands.payload.eq(commands.r_data),
            sequencer.commands.valid.eq(commands.r_rdy),
            commands.r_en.eq(sequencer.commands.ready),
        ]
        if pcie:
            dma_mem_fault = self._connect_pcie(m, bank, commands, arbiter, soft_reset)
        else:
            if self._link_kind == "stream":
                m.d.comb += [link.rx.valid.eq(self.host_rx.valid),
                             link.rx.payload.data.eq(self.host_rx.payload),
                             self.host_rx.ready.eq(link.rx.ready)]
                wiring.connect(m, link.tx, wiring.flipped(self.host_tx))
                m.d.comb += [self.trace.eq(sequencer.trace),
                             self.counters.eq(sequencer.counters)]
            else:
                m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
            wiring.connect(m, link.csr, bank.bus)
            # Host -> command FIFO -> sequencer. RUN is all-or-nothing against
            # the free space the engine sees.
            m.d.comb += [
                commands.w_data.eq(link.cmd.payload),
                commands.w_en.eq(link.cmd.valid),
                link.cmd.ready.eq(commands.w_rdy),
                link.cmd_space.eq(COMMAND_FIFO_DEPTH - commands.level),
            ]
            wiring.connect(m, link.mem, arbiter.initiators[0])
            dma_mem_fault = 0
        wiring.connect(m, sequencer.mem, arbiter.initiators[1])
        wiring.connect(m, arbiter.target, axi_master.bus)
        if self._external:
            wiring.connect(m, axi_master.axi, wiring.flipped(self.mem))
        else:
            m.submodules.memory = self._ram_module
            wiring.connect(m, axi_master.axi, self._ram.axi)

        # Identity: what the host checks before it trusts the bitstream.
        for name, value in self.capabilities().items():
            m.d.comb += bank.field("CAPABILITIES", name).eq(value)
        m.d.comb += [
            bank.field("ARRAY", "rows").eq(plan.rows),
            bank.field("ARRAY", "cols").eq(plan.cols),
            bank.field("ARRAY", "data_width").eq(plan.data_width),
            bank.field("ARRAY", "acc_width").eq(plan.acc_width),
            bank.field("PLAN_HASH", "value").eq(plan.hash32),
            bank.field("MEM_SIZE", "value").eq(self._mem_size // 4096),
            bank.field("CMD_SPACE", "value").eq(COMMAND_FIFO_DEPTH - commands.level),
        ]

        # Control and status.
        error = Signal()
        # STATUS.busy from a register: the sequencer's busy is an OR over
        # every unit's state, and on into the bank's read multiplexer it was
        # one of the 10x11 ULX3S build's failing paths (14.3 ns routed). A
        # host sees it a cycle late, far less than any link's turnaround
        # between a command push and a status read.
        status_busy = Signal()
        m.d.sync += status_busy.eq(sequencer.busy | commands.r_rdy)
        m.d.comb += [
            soft_reset.eq(bank.field("CONTROL", "soft_reset")),
            bank.counters_clear.eq(bank.field("CONTROL", "clear_counters")),
            sequencer.enable.eq(bank.field("CONTROL", "enable")),
            sequencer.host_resume.eq(bank.field("CONTROL", "host_resume")),
            bank.field("STATUS", "host_wait").eq(sequencer.host_wait),
            bank.field("STATUS", "busy").eq(status_busy),
            bank.field("STATUS", "cmd_fifo_level").eq(
                commands.level.as_unsigned()[:8] | (commands.level >= 255).replicate(8)),
            bank.field("ERROR", "bad_command_set").eq(sequencer.bad_command),
            bank.field("ERROR", "mem_fault_set").eq(sequencer.mem_fault | dma_mem_fault),
            error.eq(bank.field("ERROR", "bad_command") | bank.field("ERROR", "mem_fault")
                     | bank.field("ERROR", "overflow")),
            bank.field("STATUS", "error").eq(error),
        ]
        if self._link_kind == "uart":
            m.d.comb += bank.field("ERROR", "overflow_set").eq(link.overrun)

        # SGD constants; LFSR_SEED reseeds on every write, also of the value
        # it holds (a host replaying a run rewrites the same seed). The bank
        # has no write strobe for RW fields, so the write is decoded from its
        # bus; the stored value is there the cycle after, with the strobe.
        m.d.comb += [
            sequencer.sgd_rate.eq(bank.field("SGD_RATE", "value")),
            sequencer.sgd_momentum.eq(bank.field("SGD_MOMENTUM", "value")),
            sequencer.sgd_decay.eq(bank.field("SGD_DECAY", "value")),
            sequencer.sgd_norm.eq(bank.field("SGD_NORM", "value")),
            sequencer.lfsr_seed.eq(bank.field("LFSR_SEED", "value")),
        ]
        m.d.sync += sequencer.lfsr_load.eq(
            bank.bus.w_stb & (bank.bus.addr == register("LFSR_SEED").word_address))

        # Performance counters, from the units that do the work through a
        # register: the increments are decoded all over the sequencer, and
        # on the 10x11 ULX3S plan their paths into the CSR bank's adders
        # crossed the die. A count trails its event by a cycle.
        increments = Signal.like(sequencer.counters, name="counter_increments")
        m.d.sync += increments.eq(sequencer.counters)
        m.d.comb += [
            bank.counter("CYCLES").eq(1),
            bank.counter("BUSY_CYCLES").eq(increments.busy),
            bank.counter("MACS").eq(increments.macs),
            bank.counter("ARRAY_STALL_CYCLES").eq(increments.array_stall),
            bank.counter("MEM_STALL_CYCLES").eq(increments.mem_stall),
            bank.counter("MEM_READ_BYTES").eq(increments.mem_read_bytes),
            bank.counter("MEM_WRITE_BYTES").eq(increments.mem_write_bytes),
            bank.counter("COMMANDS_DONE").eq(increments.commands_done),
        ]
        return m

    def _connect_pcie(self, m, bank, commands, arbiter, soft_reset):
        """AXI4-Lite -> CSR bank (with CMD_PUSH), AXI-Stream <-> AxisDma ->
        arbiter. Returns the DMA's memory fault pulse, for ERROR.mem_fault."""
        bridge = self._link
        m.submodules.dma = dma = self._dma
        wiring.connect(m, wiring.flipped(self.axil), bridge.axil)
        wiring.connect(m, wiring.flipped(self.h2c), dma.h2c)
        wiring.connect(m, dma.c2h, wiring.flipped(self.c2h))
        wiring.connect(m, dma.mem, arbiter.initiators[0])

        # CMD_PUSH: a write to it also pushes the word onto the command FIFO.
        # With the FIFO full the write is refused (the bank does not see it and
        # the bus reports an error, so AxilCsr answers SLVERR): a push is never
        # half done, and the host learns of it on the write's response.
        csr, target = bridge.csr, bank.bus
        push = csr.w_stb & (csr.addr == register("CMD_PUSH").word_address)
        refused, refused_reply = Signal(), Signal()
        m.d.comb += [
            refused.eq(push & ~commands.w_rdy),
            target.addr.eq(csr.addr),
            target.r_stb.eq(csr.r_stb),
            target.w_stb.eq(csr.w_stb & ~refused),
            target.w_data.eq(csr.w_data),
            csr.r_data.eq(target.r_data),
            csr.error.eq(target.error | refused_reply),
            commands.w_data.eq(csr.w_data),
            commands.w_en.eq(push & commands.w_rdy),
        ]
        m.d.sync += refused_reply.eq(refused)

        m.d.comb += [
            dma.addr.eq(bank.field("DMA_ADDR", "value")),
            dma.length.eq(bank.field("DMA_LEN", "value")),
            dma.start_h2c.eq(bank.field("DMA_CONTROL", "start_h2c")),
            dma.start_c2h.eq(bank.field("DMA_CONTROL", "start_c2h")),
            # soft_reset aborts rather than resets the DMA: bursts already
            # issued finish, so the arbiter and memory are never left mid-burst.
            dma.abort.eq(bank.field("DMA_CONTROL", "abort") | soft_reset),
            bank.field("DMA_STATUS", "busy").eq(dma.busy),
            bank.field("DMA_STATUS", "c2h").eq(dma.c2h_mode),
            bank.field("DMA_STATUS", "done_set").eq(dma.done),
            bank.field("DMA_STATUS", "bad_request_set").eq(dma.bad_request),
            bank.field("DMA_STATUS", "mem_fault_set").eq(dma.mem_fault),
            bank.field("DMA_STATUS", "stream_fault_set").eq(dma.stream_fault),
            bank.field("DMA_STATUS", "cmd_refused_set").eq(refused),
            bank.field("DMA_PROGRESS", "value").eq(dma.progress),
        ]
        return dma.mem_fault


def _round_up(value, multiple):
    return -(-value // multiple) * multiple
