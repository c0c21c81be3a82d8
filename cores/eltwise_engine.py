"""Eltwise engine: runs the ``ELTWISE`` command memory to memory.

Reads ``count`` 16-bit elements at ``src`` (and ``aux``) from tensor memory,
passes them two to a beat through an :class:`~fecaffe_hw.cores.eltwise.Eltwise`
core, requantises by the command's ``shift`` and writes them to ``dst``.

Formats: elements are ``int16`` at any binary point, except that the
Sigmoid/TanH forward input has ``in_frac`` fractional bits and the
Sigmoid/TanH backward ``aux`` (the forward output ``y``) ``aux_frac``; both
are build parameters, since the command carries only the difference
``shift = frac(input) - frac(output)``. ReLU's ``slope`` is signed Q.16
(``Format(25, 16)``, the compiler's ``negative_slope * 2**16``; a 25 x 18
product fits a DSP48). Each result is bit-exact with
``fixedpoint.activation.eltwise(op, x, in_fmt=Format(16, f),
out_fmt=Format(16, f - shift), ...)``.

The core is built to output its exact wide result (no rounding); the engine
rounds once, half to even, by a run-time shift, then saturates to 16 bits.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO

from fecaffe_hw.fixedpoint.format import Format
from fecaffe_hw.runtime import isa

from .eltwise import (TABLES, Eltwise, EltwiseOp, shift_saturate,
                      shift_saturate_mask, table_names, wide_frac)
from .memory_port import MAX_BURST_WORDS, engine_members, reservation_count
from .skid_buffer import SkidBuffer

__all__ = ["EltwiseEngine", "EltwiseCommand", "ISA_OPS", "ELEMENT_WIDTH", "ENGINE_SLOPE_FORMAT"]

ELEMENT_WIDTH = 16
#: The ISA's ``slope`` field is ``negative_slope * 2**16``.
ENGINE_SLOPE_FORMAT = Format(25, 16)
_MAX_SHIFT = 63

#: The one mapping from ``runtime.isa.EltwiseOp`` (the command's ``func``) to
#: the core's :class:`EltwiseOp`: ``(core op, reads src, reads aux, adds aux to src)``.
#: ``COPY`` is a requantisation; ``ADD`` requantises ``src + aux``; ``ZERO``
#: reads nothing and requantises zeros.
ISA_OPS = {
    isa.EltwiseOp.RELU_FWD: (EltwiseOp.RELU, True, False, False),
    isa.EltwiseOp.RELU_BWD: (EltwiseOp.RELU_BWD, True, True, False),
    isa.EltwiseOp.SIGMOID_FWD: (EltwiseOp.SIGMOID, True, False, False),
    isa.EltwiseOp.SIGMOID_BWD: (EltwiseOp.SIGMOID_BWD, True, True, False),
    isa.EltwiseOp.TANH_FWD: (EltwiseOp.TANH, True, False, False),
    isa.EltwiseOp.TANH_BWD: (EltwiseOp.TANH_BWD, True, True, False),
    isa.EltwiseOp.ADD: (EltwiseOp.REQUANT, True, True, True),
    isa.EltwiseOp.REQUANT: (EltwiseOp.REQUANT, True, False, False),
    isa.EltwiseOp.COPY: (EltwiseOp.REQUANT, True, False, False),
    isa.EltwiseOp.ZERO: (EltwiseOp.REQUANT, False, False, False),
}
_RELU_OPS = (isa.EltwiseOp.RELU_FWD, isa.EltwiseOp.RELU_BWD)

#: Payload of ``EltwiseEngine.cmd``.
EltwiseCommand = data.StructLayout({
    "op": 4,                        # core EltwiseOp
    "read_src": 1,
    "read_aux": 1,
    "add": 1,                       # x = src + aux
    "src": 32, "aux": 32, "dst": 32,    # byte addresses, word aligned
    "words": 31,                    # 32-bit words (element pairs), >= 1
    "shift": range(_MAX_SHIFT + 1),     # right shift of the core's exact result
    "slope": signed(ENGINE_SLOPE_FORMAT.bits),
})


def _overlap(lo0, hi0, lo1, hi1):
    return (lo0 < hi1) & (lo1 < hi0)


class EltwiseEngine(wiring.Component):
    """Streams ``words`` 32-bit words (two ``int16`` elements each) from
    tensor memory through a two-lane :class:`Eltwise` core back to memory.

    Ports: ``cmd`` (In stream of :data:`EltwiseCommand`; taken while idle),
    ``done`` (one-cycle pulse per command, ``fault`` with it if any burst
    faulted), ``busy``, ``mem`` (``Out(MemoryPort())``), ``r_word``/``w_word``
    (a memory word moved this cycle) and ``mem_stall`` (busy, none moved).

    Parameters: ``in_frac`` (Sigmoid/TanH forward input, >= 4), ``aux_frac``
    (Sigmoid/TanH backward ``y``, 0..15), ``chunk_words`` (burst length,
    1..256; the src and aux FIFOs hold two bursts, so one is read while the
    other is computed), ``tables`` (the Sigmoid/TanH tables built, both by
    default; the ops of a table not built are bad commands).

    Memory traffic per chunk: read ``src``, read ``aux`` (backward and ADD),
    write ``dst``, in that order. ``dst`` must equal ``src`` (in place) or
    not overlap it (likewise ``aux``): chunks are prefetched, so a partial
    overlap would read words already written.

    Throughput: one word (two elements) per cycle with one operand, one word
    per two cycles with ``aux`` (the port reads a word per cycle). Latency:
    memory latency plus 9 cycles (feed register 1, core 5, rounding 2, write
    register 1).
    """

    def __init__(self, *, in_frac=12, aux_frac=15, chunk_words=16, tables=TABLES):
        for name, value, lo, hi in (("input frac", in_frac, 4, 32),
                                    ("aux frac", aux_frac, 0, ELEMENT_WIDTH - 1),
                                    ("chunk length", chunk_words, 1, MAX_BURST_WORDS)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"Eltwise engine {name} must be an integer in [{lo}, {hi}], "
                                 f"not {value!r}")
        self._tables = table_names(tables, "Eltwise engine")
        self._in_frac, self._aux_frac, self._chunk = in_frac, aux_frac, chunk_words
        super().__init__(engine_members(EltwiseCommand))

    in_frac = property(lambda self: self._in_frac)
    aux_frac = property(lambda self: self._aux_frac)
    chunk_words = property(lambda self: self._chunk)

    tables = property(lambda self: self._tables)

    @property
    def wide_frac(self):
        """Fractional bits of the core's exact result (as ``Eltwise`` aligns it)."""
        return wide_frac(self.in_frac, self.aux_frac, ENGINE_SLOPE_FORMAT.frac, self.tables)

    @property
    def base_shift(self):
        """Right shift of the wide result for an ISA ``shift`` of 0."""
        return self.wide_frac - self.in_frac

    def from_isa(self, m, *, func, src, aux, dst, count, shift, slope):
        """Decode an ISA ``ELTWISE`` command's fields (expressions) into an
        :data:`EltwiseCommand` signal; returns ``(command, legal)``.

        Illegal: an unknown ``func`` or one of a table not built; an odd or zero ``count``; an address
        not word aligned; a ``slope`` other than 0 outside ReLU, or out of
        ``Format(25, 16)``; a ``shift`` outside ``[-base_shift, 63 -
        base_shift]``; ``dst`` partially overlapping a region it reads.
        """
        cmd = Signal(EltwiseCommand, name="eltwise_cmd")
        known = Signal(name="eltwise_known")
        relu = Signal(name="eltwise_relu")
        missing = {op for op, name in isa.ELTWISE_TABLE.items() if name not in self.tables}
        with m.Switch(func):
            for op, (core_op, rs, ra, add) in ISA_OPS.items():
                if op in missing:
                    continue
                with m.Case(op):
                    m.d.comb += [cmd.op.eq(core_op), cmd.read_src.eq(rs), cmd.read_aux.eq(ra),
                                 cmd.add.eq(add), known.eq(1), relu.eq(op in _RELU_OPS)]
        total = Signal(signed(10), name="eltwise_shift")
        m.d.comb += [
            total.eq(shift + self.base_shift),
            cmd.src.eq(src), cmd.aux.eq(aux), cmd.dst.eq(dst),
            cmd.words.eq(count >> 1), cmd.shift.eq(total), cmd.slope.eq(slope),
        ]
        size = count[1:] << 2
        lo_s, hi_s = ENGINE_SLOPE_FORMAT.min_int, ENGINE_SLOPE_FORMAT.max_int
        regions_ok = Const(1)
        for base, reads in ((src, cmd.read_src), (aux, cmd.read_aux)):
            regions_ok &= ~reads | (base == dst) | ~_overlap(base, base + size, dst, dst + size)
        legal = (known & (count != 0) & ~count[0]
                 & (src[:2] == 0) & (aux[:2] == 0) & (dst[:2] == 0)
                 & Mux(relu, (slope >= lo_s) & (slope <= hi_s), slope == 0)
                 & (total >= 0) & (total <= _MAX_SHIFT) & regions_ok)
        return cmd, legal

    def elaborate(self, platform):
        m = Module()
        ew, ch = ELEMENT_WIDTH, self.chunk_words
        depth = 2 * ch
        mem = self.mem

        m.submodules.core = core = Eltwise(
            in_fmt=Format(ew + 1, self.in_frac),           # + 1: ADD's sum
            out_fmt=Format(48, self.wide_frac),            # exact: no rounding in the core
            lanes=2, aux_fmt=Format(ew, self.aux_frac), slope_fmt=ENGINE_SLOPE_FORMAT,
            bias_depth=1, tables=self.tables)
        m.submodules.src_fifo = src_fifo = SyncFIFO(width=32, depth=depth)
        m.submodules.aux_fifo = aux_fifo = SyncFIFO(width=32, depth=depth)

        cur = Signal(EltwiseCommand)
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]

        # ---- command side: per chunk, read src, read aux, write dst --------
        PH_SRC, PH_AUX, PH_DST = 0, 1, 2
        gen_busy = Signal()
        gen_phase = Signal(2)
        gen_left = Signal(31)
        gen_src, gen_aux, gen_dst = Signal(32), Signal(32), Signal(32)
        # ``gen_left > ch`` is a register (the next chunk's test looks two
        # chunks ahead) so no 31-bit compare sits before the request's valid.
        gen_big = Signal()
        gen_chunk = Signal(range(ch + 1))
        m.d.comb += gen_chunk.eq(Mux(gen_big, ch, gen_left))
        # Words the src/aux FIFOs are committed to hold.
        reserve = Signal()
        release = Signal()
        reserved = reservation_count(m, depth, reserve, gen_chunk, release)
        issued, answered = Signal(32), Signal(32)
        fault = Signal()

        with m.Switch(gen_phase):
            with m.Case(PH_SRC):
                m.d.comb += [mem.cmd.valid.eq(gen_busy & (reserved + gen_chunk <= depth)),
                             mem.cmd.payload.addr.eq(gen_src)]
            with m.Case(PH_AUX):
                m.d.comb += [mem.cmd.valid.eq(gen_busy), mem.cmd.payload.addr.eq(gen_aux)]
            with m.Default():
                m.d.comb += [mem.cmd.valid.eq(gen_busy), mem.cmd.payload.addr.eq(gen_dst),
                             mem.cmd.payload.write.eq(1)]
        m.d.comb += mem.cmd.payload.words.eq(gen_chunk)
        taken = mem.cmd.valid & mem.cmd.ready
        with m.If(taken):
            m.d.sync += issued.eq(issued + 1)
            with m.Switch(gen_phase):
                with m.Case(PH_SRC):
                    m.d.comb += reserve.eq(1)
                    m.d.sync += gen_phase.eq(Mux(cur.read_aux, PH_AUX, PH_DST))
                with m.Case(PH_AUX):
                    m.d.sync += gen_phase.eq(PH_DST)
                with m.Default():
                    step = gen_chunk << 2
                    m.d.sync += [gen_phase.eq(Mux(cur.read_src, PH_SRC, PH_DST)),
                                 gen_left.eq(gen_left - gen_chunk), gen_big.eq(gen_left > 2 * ch),
                                 gen_src.eq(gen_src + step), gen_aux.eq(gen_aux + step),
                                 gen_dst.eq(gen_dst + step)]
                    with m.If(~gen_big):
                        m.d.sync += gen_busy.eq(0)

        m.d.comb += mem.resp.ready.eq(1)
        with m.If(mem.resp.valid):
            m.d.sync += answered.eq(answered + 1)
            with m.If(mem.resp.payload.fault):
                m.d.sync += fault.eq(1)

        # ---- read side: words arrive chunk by chunk, src then aux ----------
        rt_left = Signal(31)             # src words not yet received, this chunk's included
        rt_pos = Signal(range(ch))
        rt_aux = Signal()
        rt_big = Signal()                # rt_left > ch
        rt_chunk = Signal(range(ch + 1))
        m.d.comb += rt_chunk.eq(Mux(rt_big, ch, rt_left))
        m.d.comb += [
            mem.r.ready.eq(busy & Mux(rt_aux, aux_fifo.w_rdy, src_fifo.w_rdy)),
            src_fifo.w_data.eq(mem.r.payload), aux_fifo.w_data.eq(mem.r.payload),
        ]
        got = mem.r.valid & mem.r.ready
        m.d.comb += [src_fifo.w_en.eq(got & ~rt_aux), aux_fifo.w_en.eq(got & rt_aux)]
        with m.If(got):
            with m.If(rt_pos + 1 == rt_chunk):
                m.d.sync += rt_pos.eq(0)
                with m.If(cur.read_aux & ~rt_aux):
                    m.d.sync += rt_aux.eq(1)
                with m.Else():
                    m.d.sync += [rt_aux.eq(0), rt_left.eq(rt_left - rt_chunk),
                                 rt_big.eq(rt_left > 2 * ch)]
            with m.Else():
                m.d.sync += rt_pos.eq(rt_pos + 1)

        # ---- feed: a word of each operand per beat -------------------------
        # The beat passes through a skid buffer: its register stops the FIFOs'
        # LUT RAM read and the ADD sum from running on into the core's table
        # address, and its registered ``i.ready`` keeps the core's stall (a
        # net of hundreds of clock enables) out of the FIFO pops and the
        # ``reserved`` count, a path that crossed the chip on ECP5.
        m.submodules.feed = feed = SkidBuffer(core.data_in.payload.shape())
        wiring.connect(m, feed.o, core.data_in)
        feed_left = Signal(31)
        have_src = ~cur.read_src | src_fifo.r_rdy
        have_aux = ~cur.read_aux | aux_fifo.r_rdy
        m.d.comb += [feed.i.valid.eq(busy & (feed_left != 0) & have_src & have_aux),
                     core.op.eq(cur.op), core.slope.eq(cur.slope)]
        fire = feed.i.valid & feed.i.ready
        m.d.comb += [src_fifo.r_en.eq(fire & cur.read_src), aux_fifo.r_en.eq(fire & cur.read_aux),
                     release.eq(fire & cur.read_src)]
        with m.If(fire):
            m.d.sync += feed_left.eq(feed_left - 1)
        for lane in range(2):
            s = src_fifo.r_data.word_select(lane, ew).as_signed()
            a = aux_fifo.r_data.word_select(lane, ew).as_signed()
            m.d.comb += [feed.i.payload.x[lane].eq(Mux(cur.read_src, s, 0) + Mux(cur.add, a, 0)),
                         feed.i.payload.aux[lane].eq(a)]

        # ---- requantise (round half to even by cur.shift) and write --------
        # Two stages: the rounding add, then the saturating shift (each alone
        # fills a cycle). The write register has a skid register behind it,
        # so ``out.ready`` (the core's stall, hundreds of clock enables)
        # comes from registers, not from the write port's ready.
        out = core.data_out
        m.submodules.w_out = w_out = SkidBuffer(32)
        r_valid = Signal()
        out_left = Signal(31)
        r_free = ~r_valid | w_out.i.ready
        r_move = r_valid & w_out.i.ready
        m.d.comb += [mem.w.valid.eq(w_out.o.valid), mem.w.payload.eq(w_out.o.payload),
                     w_out.o.ready.eq(mem.w.ready), out.ready.eq(r_free)]
        # The core's result is 48 bits, so a shift beyond 49 rounds to 0 as
        # 49 does: clamped, the rounding sum fits 50 bits. The rounding
        # constant (2**(shift-1) - 1) and the saturation mask depend on the
        # command only: registers, thermometer codes.
        width = len(out.payload[0]) + 2
        shift = Signal(range(width))
        round_base = Signal(width - 1)
        sat_mask = Signal(width - ew + 1)
        m.d.sync += [
            shift.eq(Mux(cur.shift > width - 1, width - 1, cur.shift)),
            round_base.eq(Cat(shift > i + 1 for i in range(width - 1))),
            sat_mask.eq(shift_saturate_mask(shift, width, ew)),
        ]
        packed = []
        for lane in range(2):
            ext = Signal(signed(width), name=f"wide{lane}")
            m.d.comb += ext.eq(out.payload[lane])
            # as_unsigned: a variable bit select of a signed value becomes a
            # signed $shiftx, which CXXRTL evaluates unlike Amaranth's simulator.
            kept = (shift != 0) & ext.as_unsigned().bit_select(shift, 1)
            total = Signal(signed(width), name=f"rounding{lane}")
            with m.If(out.valid & r_free):
                m.d.sync += total.eq(ext + round_base + kept)
            packed.append(shift_saturate(total, shift, sat_mask, ew))
        with m.If(out.valid & r_free):
            m.d.sync += r_valid.eq(1)
        with m.Elif(r_move):
            m.d.sync += r_valid.eq(0)
        m.d.comb += [w_out.i.valid.eq(r_valid), w_out.i.payload.eq(Cat(*packed))]
        w_word = mem.w.valid & mem.w.ready
        with m.If(w_word):
            m.d.sync += out_left.eq(out_left - 1)

        # ---- command life cycle -------------------------------------------
        with m.If(self.cmd.valid & self.cmd.ready):
            c = self.cmd.payload
            m.d.sync += [
                cur.eq(c), busy.eq(1), gen_busy.eq(1),
                gen_phase.eq(Mux(c.read_src, PH_SRC, PH_DST)), gen_left.eq(c.words),
                gen_big.eq(c.words > ch), rt_big.eq(c.words > ch),
                gen_src.eq(c.src), gen_aux.eq(c.aux), gen_dst.eq(c.dst),
                rt_left.eq(c.words), rt_pos.eq(0), rt_aux.eq(0),
                feed_left.eq(c.words), out_left.eq(c.words),
                issued.eq(0), answered.eq(0), fault.eq(0),
            ]
        # Registered: the 32-bit compare and the count test ran on into done
        # and the sequencer's and the CSR bank's counters in one cycle. Once
        # true it stays true (nothing is left to move), so acting a cycle
        # later is safe; ``~finished`` in its own input keeps ``done`` to one
        # pulse.
        finished = Signal()
        m.d.sync += finished.eq(busy & ~gen_busy & (out_left == 0) & (answered == issued)
                                & ~finished)
        m.d.comb += [self.done.eq(finished), self.fault.eq(finished & fault)]
        with m.If(finished):
            m.d.sync += busy.eq(0)

        r_word = mem.r.valid & mem.r.ready
        m.d.comb += [self.r_word.eq(r_word), self.w_word.eq(w_word),
                     self.mem_stall.eq(busy & ~r_word & ~w_word)]
        return m
