"""Memory port to AXI4 master."""

from amaranth.hdl import Module, Signal, Mux, Cat
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AxiSignature, Burst, Resp, BOUNDARY_BYTES
from .memory_port import MemoryPort, MAX_BURST_WORDS
from .skid_buffer import SkidBuffer

__all__ = ["AxiMaster"]


class AxiMaster(wiring.Component):
    """Turns :class:`~fecaffe_hw.cores.memory_port.MemoryPort` commands into
    AXI4 INCR bursts.

    Ports: ``bus`` (``In(MemoryPort())``), ``axi`` (``Out(AxiSignature(
    addr_width, data_width, id_width))``). A command becomes one burst, or two
    where it would cross a 4 KB boundary (AXI forbids it); all bursts use ID 0,
    so the slave answers in order. Up to ``max_outstanding`` commands (1..16,
    default 4) are in flight at once, reads and writes concurrently, so
    several AR and AW bursts may be outstanding; AXI orders nothing between
    reads and writes, so an initiator that reads what it wrote waits for the
    write's response first (and the other way round). ``w`` words are
    forwarded to W once the burst is decided, independently of the AW
    handshake (AXI lets a slave wait for W before it takes AW). A command's
    fault is the OR of its beats' and bursts' responses (anything but OKAY);
    responses leave in command order. Invalid lengths (0, > 256) and commands
    reaching past the ``addr_width`` address space are answered with a fault
    and move no data.

    Packing for ``data_width`` > 32 (64..512): beats are full width
    (``size`` = log2(data_width / 8)) from the beat-aligned address below the
    command's; 32-bit word *i* of a beat is the word at byte offset 4 *i*
    (little-endian, as the AXI byte lanes are); write strobes cover only the
    command's words, and the read beats' other words are dropped.

    Throughput: one 32-bit word per cycle each way; read words pass a skid
    buffer (one cycle; ``r.valid`` and ``r.payload`` come from registers).
    Latency on the command side: a command's first burst is offered on AR/AW
    three cycles after the command is taken (registered take, check, burst
    sizing); the next command is taken while the current one's bursts issue,
    two cycles apart, so one-burst commands issue one every three cycles.
    """

    def __init__(self, *, addr_width=32, data_width=32, id_width=1, max_outstanding=4):
        if data_width not in (32, 64, 128, 256, 512):
            raise ValueError(f"AXI data width must be 32, 64, 128, 256 or 512, "
                             f"not {data_width!r}")
        self._axi_signature = AxiSignature(addr_width=addr_width, data_width=data_width,
                                           id_width=id_width)
        if isinstance(max_outstanding, bool) or not isinstance(max_outstanding, int) \
                or not 1 <= max_outstanding <= 16:
            raise ValueError(f"Outstanding command limit must be an integer in [1, 16], "
                             f"not {max_outstanding!r}")
        self._max_outstanding = max_outstanding
        super().__init__({
            "bus": In(MemoryPort()),
            "axi": Out(self._axi_signature),
        })

    max_outstanding = property(lambda self: self._max_outstanding)

    @property
    def data_width(self):
        return self._axi_signature.data_width

    def elaborate(self, platform):
        m = Module()
        bus, axi = self.bus, self.axi
        depth = self._max_outstanding

        lanes = self._axi_signature.data_width // 32
        beat_bits = (4 * lanes).bit_length() - 1          # log2 bytes per beat
        # Per burst: the lane of its first word and its word count.
        burst_layout = data.StructLayout({
            "lane": range(lanes), "words": range(MAX_BURST_WORDS + 1), "last": 1})

        order_layout = data.StructLayout({"write": 1, "bad": 1})
        m.submodules.order = order = SyncFIFO(width=order_layout.size, depth=depth)
        # The burst trackers' heads come from flip-flops (buffered FIFOs): a
        # LUT-RAM head read started the SoC's critical path on ECP5, through
        # ``w.ready`` and the arbiter into the frame engine's buffer.
        m.submodules.r_track = r_track = SyncFIFOBuffered(width=burst_layout.size,
                                                          depth=2 * depth)
        m.submodules.w_track = w_track = SyncFIFOBuffered(width=burst_layout.size,
                                                          depth=2 * depth)
        m.submodules.b_track = b_track = SyncFIFO(width=1, depth=2 * depth)
        m.submodules.r_resp = r_resp = SyncFIFO(width=1, depth=depth)
        m.submodules.b_resp = b_resp = SyncFIFO(width=1, depth=depth)

        # ---- command splitter: one command into bursts within 4 KB --------
        # Three registered steps keep the address arithmetic off the paths
        # into and out of this core: the command is taken into registers
        # (``held``), checked and logged in ``order`` (``check``), and each
        # burst is sized at the 4 KB boundary a cycle before it is issued
        # (``decided``).
        held = Signal()
        held_cmd = Signal.like(bus.cmd.payload)
        m.d.comb += bus.cmd.ready.eq(~held)
        with m.If(bus.cmd.valid & bus.cmd.ready):
            m.d.sync += [held.eq(1), held_cmd.eq(bus.cmd.payload)]

        busy = Signal()
        addr = Signal(32)
        left = Signal(range(MAX_BURST_WORDS + 1))
        write = Signal()

        words = held_cmd.words
        bad = (words == 0) | (words > MAX_BURST_WORDS)
        addr_width = self._axi_signature.addr_width
        if 2 < addr_width < 32:
            # A burst reaching past the AXI address space would wrap silently
            # once truncated; refuse it like a bad length, with a fault.
            last_word = (held_cmd.addr >> 2) + words - 1
            bad = bad | ((last_word >> (addr_width - 2)) != 0)
        entry = Signal(order_layout)
        check = Signal()
        m.d.comb += [
            check.eq(held & ~busy & order.w_rdy),
            entry.write.eq(held_cmd.write), entry.bad.eq(bad),
            order.w_data.eq(entry),
            order.w_en.eq(check),
        ]
        with m.If(check):
            m.d.sync += held.eq(0)
            with m.If(~bad):
                m.d.sync += [
                    busy.eq(1), addr.eq(held_cmd.addr & ~3), left.eq(words),
                    write.eq(held_cmd.write),
                ]

        # The next burst, sized the cycle before it is issued.
        decided = Signal()
        to_boundary = (BOUNDARY_BYTES - addr[:12]) >> 2
        n = Mux(to_boundary < left, to_boundary, left)
        burst = Signal(burst_layout)
        burst_len = Signal(8)
        with m.If(busy & ~decided):
            m.d.sync += [
                decided.eq(1),
                burst.lane.eq(addr[2:beat_bits]), burst.words.eq(n),
                burst.last.eq(to_boundary >= left),
                burst_len.eq(((addr[2:beat_bits] + n + lanes - 1) >> (beat_bits - 2)) - 1),
            ]
        header = {
            "addr": addr & ~(2**beat_bits - 1), "len": burst_len, "size": beat_bits,
            "burst": Burst.INCR,
            "cache": 0b0011,         # normal non-cacheable bufferable, what MIG expects
        }

        with m.If(axi.ar.ready):
            m.d.sync += axi.ar.valid.eq(0)
        with m.If(axi.aw.ready):
            m.d.sync += axi.aw.valid.eq(0)
        emit = Signal()
        with m.If(write):
            m.d.comb += emit.eq(decided & (~axi.aw.valid | axi.aw.ready)
                                & w_track.w_rdy & b_track.w_rdy)
            m.d.comb += [
                w_track.w_data.eq(burst), w_track.w_en.eq(emit),
                b_track.w_data.eq(burst.last), b_track.w_en.eq(emit),
            ]
            with m.If(emit):
                m.d.sync += axi.aw.valid.eq(1)
                m.d.sync += [getattr(axi.aw.payload, k).eq(v) for k, v in header.items()]
        with m.Else():
            m.d.comb += emit.eq(decided & (~axi.ar.valid | axi.ar.ready) & r_track.w_rdy)
            m.d.comb += [r_track.w_data.eq(burst), r_track.w_en.eq(emit)]
            with m.If(emit):
                m.d.sync += axi.ar.valid.eq(1)
                m.d.sync += [getattr(axi.ar.payload, k).eq(v) for k, v in header.items()]
        with m.If(emit):
            m.d.sync += [decided.eq(0), addr.eq(addr + (burst.words << 2)),
                         left.eq(left - burst.words)]
            with m.If(burst.last):
                m.d.sync += busy.eq(0)

        # ---- read data: beats unpacked into words, lane by lane ------------
        r = axi.r
        r_head = data.View(burst_layout, r_track.r_data)
        r_started = Signal()
        r_lane_reg = Signal(range(lanes))
        r_left_reg = Signal(range(MAX_BURST_WORDS + 1))
        r_lane = Mux(r_started, r_lane_reg, r_head.lane)
        r_left = Mux(r_started, r_left_reg, r_head.words)
        r_fault = Signal()
        word_fault = r_fault | (r.payload.resp != Resp.OKAY)
        burst_done = r_left == 1
        beat_done = (r_lane == lanes - 1) | burst_done
        # Words leave through a skid buffer, so the initiator's ``r.ready``
        # (which crosses the arbiter) ends at a register here instead of
        # running on into R and the burst FIFOs. A command's response is
        # logged when its last word leaves, so it still follows that word.
        word_layout = data.StructLayout({"data": 32, "last": 1, "fault": 1})
        m.submodules.r_out = r_out = SkidBuffer(word_layout)
        m.d.comb += [
            r_out.i.payload.data.eq(r.payload.data.word_select(r_lane, 32)),
            r_out.i.payload.last.eq(burst_done & r_head.last),
            r_out.i.payload.fault.eq(word_fault),
            r_out.i.valid.eq(r.valid & r_track.r_rdy),
            r.ready.eq(r_out.i.ready & r_out.i.valid & beat_done),
        ]
        with m.If(r_out.i.valid & r_out.i.ready):
            m.d.sync += [
                r_started.eq(~burst_done), r_lane_reg.eq(r_lane + 1),
                r_left_reg.eq(r_left - 1), r_fault.eq(word_fault),
            ]
            with m.If(burst_done):
                m.d.comb += r_track.r_en.eq(1)
                with m.If(r_head.last):
                    m.d.sync += r_fault.eq(0)
        out_last = r_out.o.payload.last
        m.d.comb += [
            bus.r.payload.eq(r_out.o.payload.data),
            bus.r.valid.eq(r_out.o.valid & (~out_last | r_resp.w_rdy)),
            r_out.o.ready.eq(bus.r.ready & (~out_last | r_resp.w_rdy)),
            r_resp.w_data.eq(r_out.o.payload.fault),
            r_resp.w_en.eq(bus.r.valid & bus.r.ready & out_last),
        ]

        # ---- write data: words packed into beats, with byte strobes --------
        w_head = data.View(burst_layout, w_track.r_data)
        w_started = Signal()
        w_lane_reg = Signal(range(lanes))
        w_left_reg = Signal(range(MAX_BURST_WORDS + 1))
        w_lane = Mux(w_started, w_lane_reg, w_head.lane)
        w_left = Mux(w_started, w_left_reg, w_head.words)
        packed = Signal(32 * lanes)              # earlier words of this beat
        packed_lanes = Signal(lanes)
        w_burst_done = w_left == 1
        w_beat_done = (w_lane == lanes - 1) | w_burst_done
        this_lane = Signal(lanes)
        m.d.comb += this_lane.eq(1 << w_lane)
        beat_data = Signal(32 * lanes)
        m.d.comb += beat_data.eq(packed)
        m.d.comb += beat_data.word_select(w_lane, 32).eq(bus.w.payload)
        m.d.comb += [
            axi.w.valid.eq(bus.w.valid & w_track.r_rdy & w_beat_done),
            axi.w.payload.data.eq(beat_data),
            axi.w.payload.strb.eq(Cat(bit.replicate(4) for bit in packed_lanes | this_lane)),
            axi.w.payload.last.eq(w_burst_done),
            bus.w.ready.eq(w_track.r_rdy & (axi.w.ready | ~w_beat_done)),
        ]
        with m.If(bus.w.valid & bus.w.ready):
            m.d.sync += [
                w_started.eq(~w_burst_done), w_lane_reg.eq(w_lane + 1),
                w_left_reg.eq(w_left - 1),
            ]
            with m.If(w_beat_done):
                m.d.sync += packed_lanes.eq(0)
            with m.Else():
                m.d.sync += [packed.eq(beat_data), packed_lanes.eq(packed_lanes | this_lane)]
            m.d.comb += w_track.r_en.eq(w_burst_done)

        # ---- write responses ----------------------------------------------
        b_fault = Signal()
        b = axi.b
        burst_fault = b_fault | (b.payload.resp != Resp.OKAY)
        m.d.comb += b.ready.eq(b_track.r_rdy & b_resp.w_rdy)
        with m.If(b.valid & b.ready):
            m.d.comb += b_track.r_en.eq(1)
            m.d.sync += b_fault.eq(burst_fault)
            with m.If(b_track.r_data[0]):
                m.d.comb += [b_resp.w_data.eq(burst_fault), b_resp.w_en.eq(1)]
                m.d.sync += b_fault.eq(0)

        # ---- responses, in command order ----------------------------------
        head = data.View(order_layout, order.r_data)
        with m.If(order.r_rdy):
            with m.If(head.bad):
                m.d.comb += [bus.resp.valid.eq(1), bus.resp.payload.fault.eq(1)]
            with m.Elif(head.write):
                m.d.comb += [bus.resp.valid.eq(b_resp.r_rdy),
                             bus.resp.payload.fault.eq(b_resp.r_data[0]),
                             b_resp.r_en.eq(bus.resp.ready)]
            with m.Else():
                m.d.comb += [bus.resp.valid.eq(r_resp.r_rdy),
                             bus.resp.payload.fault.eq(r_resp.r_data[0]),
                             r_resp.r_en.eq(bus.resp.ready)]
        m.d.comb += order.r_en.eq(bus.resp.valid & bus.resp.ready)
        return m
