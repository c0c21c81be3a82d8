"""DMA between tensor memory (a memory port) and the on-chip scratchpads."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .memory_port import MAX_BURST_WORDS, MemoryPort
from .eltwise import shift_saturate, shift_saturate_mask
from .scratchpad import ScratchpadRead, ScratchpadWrite

__all__ = ["Dma", "DmaCommand", "BUFFER_A", "BUFFER_B", "BUFFER_C", "BUFFER_BIAS"]

# Buffer codes: A, B and C are the values of ``runtime.isa.Buffer``; BIAS is
# the sequencer's own (a GEMM's bias vector, one accumulator per C row).
BUFFER_A, BUFFER_B, BUFFER_C, BUFFER_BIAS = 0, 1, 2, 3

#: Payload of ``Dma.cmd``.
DmaCommand = data.StructLayout({
    "store": 1,        # 1: buffer -> tensor memory, 0: tensor memory -> buffer
    "buffer": 2,       # BUFFER_A / BUFFER_B / BUFFER_C / BUFFER_BIAS
    "transpose": 1,    # 1: region row r goes to lane r (and column c to word word+c)
    "addr": 32,        # byte address of the region's first row, word aligned
    "stride": 32,      # bytes between region rows, a multiple of 4
    "rows": 16,        # region rows, >= 1
    "cols": 16,        # region columns (elements), >= 1
    "word": 24,        # first buffer word
    "shift": 8,        # load into C: left shift; store from C: RNE right shift
})


def _or_tree(values):
    """Expression: the OR of ``values`` (one-hot picked, so at most one is nonzero)."""
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class Dma(wiring.Component):
    """Moves a 2-D strided region of a row-major tensor between tensor memory
    and a scratchpad.

    A command (:data:`DmaCommand`) names a region of ``rows`` rows of ``cols``
    elements of ``data_width`` bits; row ``r`` starts at byte
    ``addr + r * stride``. Elements are packed ``32 // data_width`` to a
    memory word, element 0 in the low bits (little-endian, so an ``int16``
    NumPy array viewed as ``uint32`` is the memory image); each row starts on
    a word boundary. Element ``(r, c)`` is buffer word ``word + r``, lane
    ``c``, or with ``transpose`` word ``word + c``, lane ``r``: a row-major
    ``M x K`` tile of ``A`` is loaded with ``transpose`` (the A buffer holds
    columns), a ``K x N`` tile of ``B`` without.

    Loads into A or B write the element; loads into C or BIAS (one lane of
    ``acc_width``, ``bias_depth`` words) sign-extend it and
    shift it left by ``shift`` (0..``acc_width - data_width``), to align a
    bias with the accumulator's fraction. Stores read C only: each
    accumulator is shifted right by ``shift`` (0..``acc_width - 1``) with
    round half to even and saturated to ``data_width`` bits, exactly
    ``fixedpoint.requantize(acc, shift, Format(data_width, 0))``; a stored
    row must fill whole words (``cols * data_width`` a multiple of 32), since
    the memory port has no byte enables.

    Ports: ``cmd`` (In stream of :data:`DmaCommand`), ``done`` (Out, one-cycle
    pulse per finished command, ``fault`` with it if any burst faulted or the
    command was refused), ``busy``; ``mem`` (``Out(MemoryPort())``);
    ``a_write``, ``b_write``, ``c_write``, ``bias_write`` (``Out(ScratchpadWrite)``),
    ``c_read`` (``Out(ScratchpadRead)``); ``r_word``, ``w_word`` (a word moved
    this cycle) and ``mem_stall`` (busy, no word moved) for the counters.

    A refused command (zero rows or cols, a region wider than the buffer's
    lanes or deeper than its words, misalignment, a shift out of range, a
    store from A or B) moves nothing and reports ``fault``.

    Throughput: a memory word per cycle each way untransposed (two 16-bit
    elements into one buffer word), one element per cycle transposed (they go
    to different buffer words); bursts of up to 256 words issued ahead of the
    data, at most one per two cycles, from registers; one command at a time.
    Latency: a command starts the cycle after it is taken and offers its
    first burst on ``mem.cmd`` two cycles after that (one loads the row's
    word count); a refused one reports
    ``done`` two cycles after it is taken. Loaded elements reach the buffer
    a cycle after their word arrives; stored elements pass five register
    stages (C read, the C word registered, lane select, rounding add, shift
    and pack) and a queue of :attr:`STORE_WORDS_QUEUED` words (two cycles)
    before their memory word is offered; the store pipeline never stalls,
    the queue's credits pace it.
    """

    #: Finished store words the DMA holds for the memory port: enough for
    #: every word in flight through the five stages and the queue's own two
    #: cycles, so a ready memory takes a word per cycle.
    STORE_WORDS_QUEUED = 8

    def __init__(self, *, rows, cols, data_width, acc_width, a_depth, b_depth, c_depth,
                 bias_depth=2):
        if data_width not in (8, 16, 32):
            raise ValueError(f"DMA element width must be 8, 16 or 32 bits (a divisor of the "
                             f"32-bit memory word), not {data_width!r}")
        if isinstance(acc_width, bool) or not isinstance(acc_width, int) \
                or not data_width <= acc_width <= 64:
            raise ValueError(f"Accumulator width must be an integer in [{data_width}, 64], "
                             f"not {acc_width!r}")
        for name, value in (("rows", rows), ("cols", cols), ("A depth", a_depth),
                            ("B depth", b_depth), ("C depth", c_depth),
                            ("bias depth", bias_depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DMA {name} must be a positive integer, not {value!r}")
        self._rows, self._cols = rows, cols
        self._data_width, self._acc_width = data_width, acc_width
        self._depths = (a_depth, b_depth, c_depth, bias_depth)
        super().__init__({
            "cmd": In(stream.Signature(DmaCommand)),
            "done": Out(1),
            "fault": Out(1),
            "busy": Out(1),
            "mem": Out(MemoryPort()),
            "a_write": Out(ScratchpadWrite(lanes=rows, lane_width=data_width, depth=a_depth)),
            "b_write": Out(ScratchpadWrite(lanes=cols, lane_width=data_width, depth=b_depth)),
            "c_write": Out(ScratchpadWrite(lanes=cols, lane_width=acc_width, depth=c_depth)),
            "c_read": Out(ScratchpadRead(lanes=cols, lane_width=acc_width, depth=c_depth)),
            "bias_write": Out(ScratchpadWrite(lanes=1, lane_width=acc_width, depth=bias_depth)),
            "r_word": Out(1),
            "w_word": Out(1),
            "mem_stall": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    data_width = property(lambda self: self._data_width)
    acc_width = property(lambda self: self._acc_width)

    @property
    def per_word(self):
        return 32 // self.data_width

    def legal(self, cmd):
        """Expression: ``cmd`` (a :data:`DmaCommand` view) is one this DMA executes."""
        dw, aw = self.data_width, self.acc_width
        depths = [Const(d) for d in self._depths]
        buf = cmd.buffer
        n_lanes = Mux(buf == BUFFER_A, self.rows, Mux(buf == BUFFER_BIAS, 1, self.cols))
        depth = Mux(buf == BUFFER_A, depths[0], Mux(buf == BUFFER_B, depths[1],
                                                    Mux(buf == BUFFER_C, depths[2], depths[3])))
        wide = buf[1]     # C or BIAS: accumulators
        extent_lanes = Mux(cmd.transpose, cmd.rows, cmd.cols)
        extent_words = Mux(cmd.transpose, cmd.cols, cmd.rows)
        shift = cmd.shift.as_signed()
        row_bits = cmd.cols * dw
        return ((cmd.rows != 0) & (cmd.cols != 0)
                & (extent_lanes <= n_lanes) & (cmd.word + extent_words <= depth)
                & (cmd.addr[:2] == 0) & (cmd.stride[:2] == 0)
                & Mux(cmd.store,
                      (buf == BUFFER_C) & (row_bits[:5] == 0) & (shift >= 0) & (shift < aw),
                      (shift >= 0) & Mux(wide, shift <= aw - dw, shift == 0)))

    def elaborate(self, platform):
        m = Module()
        dw, aw, per_word = self.data_width, self.acc_width, self.per_word
        log_per_word = per_word.bit_length() - 1
        mem = self.mem

        cur = Signal(DmaCommand)
        busy = Signal()
        refused = Signal()               # answered the cycle after, like any command
        # A taken command is checked and started the cycle after (``start``):
        # ``cmd.valid`` is decoded combinationally by the sequencer, so it
        # only sets ``start``; ``cur`` follows the payload while idle.
        start = Signal()
        m.d.comb += [self.busy.eq(busy | refused | start),
                     self.cmd.ready.eq(~busy & ~refused & ~start)]

        # ---- command side: one burst per row, split at 256 words ----------
        # Bursts are computed into registers that drive ``mem.cmd`` (one per
        # two cycles, the rate the arbiter grants at), so the row arithmetic
        # ends at a flip-flop instead of running on through the arbiter into
        # the AXI master's carry chains. ``row_words`` follows ``cur``, which
        # holds still from ``start`` on.
        row_words = Signal(16)
        m.d.sync += row_words.eq((cur.cols + per_word - 1) >> log_per_word)
        gen_busy = Signal()
        gen_row = Signal(16)
        gen_row_addr = Signal(32)
        gen_done_words = Signal(16)      # words of this row already requested
        issued = Signal(32)              # bursts issued for this command
        answered = Signal(32)
        fault = Signal()
        # The words of the row still to request and whether more than one
        # burst's worth, both registers: the row's subtract and compare ran
        # on into the enables of the row counters and address (13.6 ns
        # routed at 6x6 on ECP5). ``gen_load`` fills them the cycle after
        # ``start``, once ``row_words`` follows the command.
        gen_load = Signal()
        left = Signal(16)
        left_big = Signal()
        burst = Mux(left_big, MAX_BURST_WORDS, left)
        cmd_valid = Signal()
        cmd_addr = Signal(32)
        cmd_words = Signal(range(MAX_BURST_WORDS + 1))
        m.d.comb += [
            mem.cmd.valid.eq(cmd_valid),
            mem.cmd.payload.addr.eq(cmd_addr),
            mem.cmd.payload.words.eq(cmd_words),
            mem.cmd.payload.write.eq(cur.store),
        ]
        with m.If(mem.cmd.valid & mem.cmd.ready):
            m.d.sync += [cmd_valid.eq(0), issued.eq(issued + 1)]
        with m.If(gen_load):
            m.d.sync += [gen_load.eq(0), left.eq(row_words),
                         left_big.eq(row_words > MAX_BURST_WORDS)]
        with m.Elif(gen_busy & ~cmd_valid):
            m.d.sync += [cmd_valid.eq(1), cmd_addr.eq(gen_row_addr + (gen_done_words << 2)),
                         cmd_words.eq(burst)]
            with m.If(~left_big):
                m.d.sync += [gen_done_words.eq(0), gen_row.eq(gen_row + 1),
                             gen_row_addr.eq(gen_row_addr + cur.stride),
                             left.eq(row_words), left_big.eq(row_words > MAX_BURST_WORDS)]
                with m.If(gen_row + 1 == cur.rows):
                    m.d.sync += gen_busy.eq(0)
            with m.Else():
                m.d.sync += [gen_done_words.eq(gen_done_words + MAX_BURST_WORDS),
                             left.eq(left - MAX_BURST_WORDS),
                             left_big.eq(left > 2 * MAX_BURST_WORDS)]

        m.d.comb += mem.resp.ready.eq(1)
        with m.If(mem.resp.valid):
            m.d.sync += answered.eq(answered + 1)
            with m.If(mem.resp.payload.fault):
                m.d.sync += fault.eq(1)

        # ---- element counters shared by both directions -------------------
        el_busy = Signal()               # elements remain to be moved
        el_row = Signal(16)
        el_col = Signal(16)
        el_slot = Signal(range(per_word))
        # Untransposed, a memory word's elements share one buffer word: they
        # move together, a whole memory word per step.
        whole = Signal()
        m.d.comb += whole.eq(~cur.transpose)
        step = Mux(whole, per_word, 1)
        # ``row_end`` (this step ends the row: el_col + step >= cols) is kept
        # in a register, computed a step ahead: it gates ``mem.r.ready``,
        # which runs on through the arbiter into the AXI master.
        row_end = Signal()
        first_row_end = step >= cur.cols

        # The buffer word of the element, ``cur.word`` plus its column
        # (transposed) or row, is kept in a register and stepped with the
        # counters: the C read address drives the read-first bypass yosys
        # builds beside every C block RAM, and at 10x11 on ECP5 the add in
        # front of it led the critical path (16.7 ns routed).
        word_addr = Signal.like(cur.word)

        def step_element():
            with m.If(row_end):
                m.d.sync += [el_col.eq(0), el_slot.eq(0), el_row.eq(el_row + 1),
                             row_end.eq(first_row_end),
                             word_addr.eq(Mux(cur.transpose, cur.word, word_addr + 1))]
                with m.If(el_row + 1 == cur.rows):
                    m.d.sync += el_busy.eq(0)
            with m.Else():
                m.d.sync += [el_col.eq(el_col + step), el_slot.eq(Mux(whole, 0, el_slot + 1)),
                             row_end.eq(el_col + 2 * step >= cur.cols),
                             word_addr.eq(word_addr + cur.transpose)]

        lane = Mux(cur.transpose, el_row, el_col)

        # ---- load: unpack words into buffer elements -----------------------
        word_reg = Signal(32)
        word_valid = Signal()
        word_last = Signal()
        m.d.comb += word_last.eq(whole | (el_slot == per_word - 1) | row_end)
        loading = busy & ~cur.store
        m.d.comb += mem.r.ready.eq(loading & el_busy & (~word_valid | word_last))
        with m.If(mem.r.valid & mem.r.ready):
            m.d.sync += [word_reg.eq(mem.r.payload), word_valid.eq(1)]
        with m.Elif(word_valid & word_last):
            m.d.sync += word_valid.eq(0)

        element = Signal(signed(dw))
        with m.Switch(el_slot):
            for k in range(per_word):
                with m.Case(k):
                    m.d.comb += element.eq(word_reg.word_select(k, dw))
        with m.If(loading & word_valid):
            step_element()
        load_en = Signal()
        m.d.comb += load_en.eq(loading & word_valid)
        # The buffer writes are registered (one cycle after the element is
        # unpacked) to keep unpacking, shifting and lane enables off the
        # path into the block RAMs; ``load_wr`` holds the command open until
        # the last write has landed.
        load_wr = Signal()
        m.d.sync += load_wr.eq(load_en)
        load_shift = cur.shift[:max(1, (aw - dw).bit_length())]
        for port, buf, width, lanes in ((self.a_write, BUFFER_A, dw, self.rows),
                                        (self.b_write, BUFFER_B, dw, self.cols),
                                        (self.c_write, BUFFER_C, aw, self.cols),
                                        (self.bias_write, BUFFER_BIAS, aw, 1)):
            m.d.sync += port.addr.eq(word_addr)
            selected = load_en & (cur.buffer == buf)
            enables = []
            for i in range(lanes):
                # Whole words start at even columns, so lane i is slot i % per_word.
                value = Mux(whole, word_reg.word_select(i % per_word, dw).as_signed(), element)
                if width != dw:
                    value = value << load_shift
                m.d.sync += port.data[i].eq(value)
                enables.append(selected & Mux(whole, (i >= el_col) & (i < el_col + per_word)
                                              & (i < cur.cols), lane == i))
            m.d.sync += port.en.eq(Cat(enables))

        # ---- store: read C, requantise, pack words -------------------------
        # A five-stage pipeline that never stalls: P (the C word read is on
        # c_read.data) -> Q (the word, registered) -> X (the word's elements,
        # selected from their lanes) -> Y (element + rounding bias) -> pack
        # (shifted, saturated, merged into the memory word). Finished words
        # queue in a FIFO, and an element is issued only while the words
        # already reserved leave room there (credits): the memory's write
        # ready reaches the FIFO's read side only, not a chain of stage
        # enables into the C block RAMs (at 10x11 on ECP5 that chain, stages
        # placed beside different C RAMs, was 16-18 ns placed). The stages
        # keep the lane selection, the rounding add and the variable shift
        # on separate clock edges; lanes are picked by one-hot masks formed
        # at issue, so no lane index is multiplied into a bit offset.
        storing = busy & cur.store
        pend = Signal()                  # a read was issued; its data is on c_read.data
        pend_pick = [Signal(self.cols, name=f"pend_pick{s}") for s in range(per_word)]
        pend_slot = Signal.like(el_slot)
        pend_last = Signal()             # the element completes a memory word
        # Q holds the whole C word, registered before any lane is picked:
        # block RAM clock-to-out, the depth-cascade mux of a deep C and the
        # lane OR tree do not fit one cycle across the chip at 10x11.
        q_valid = Signal()
        q_word = Signal.like(self.c_read.data, reset_less=True)
        q_pick = [Signal(self.cols, name=f"q_pick{s}") for s in range(per_word)]
        q_slot = Signal.like(el_slot)
        q_last = Signal()
        x_valid = Signal()
        x_ext = [Signal(signed(aw), name=f"x_ext{s}", reset_less=True) for s in range(per_word)]
        x_slot = Signal.like(el_slot)
        x_last = Signal()
        y_valid = Signal()
        y_sum = [Signal(signed(aw + 2), name=f"y_sum{s}", reset_less=True)
                 for s in range(per_word)]
        y_slot = Signal.like(el_slot)
        y_last = Signal()
        pack = Signal(32)
        m.submodules.w_fifo = w_fifo = SyncFIFOBuffered(width=32, depth=self.STORE_WORDS_QUEUED)
        m.d.comb += [mem.w.valid.eq(w_fifo.r_rdy), mem.w.payload.eq(w_fifo.r_data),
                     w_fifo.r_en.eq(mem.w.ready)]
        w_word = mem.w.valid & mem.w.ready
        reserved = Signal(range(self.STORE_WORDS_QUEUED + 1))
        room = Signal(init=1)
        issue = Signal()
        next_reserved = reserved + (issue & word_last) - w_word
        m.d.sync += [reserved.eq(next_reserved),
                     room.eq(next_reserved < self.STORE_WORDS_QUEUED)]
        m.d.comb += [
            issue.eq(storing & el_busy & room),
            self.c_read.addr.eq(word_addr),
            self.c_read.en.eq(issue),
        ]
        m.d.sync += [pend.eq(issue), q_valid.eq(pend), x_valid.eq(q_valid), y_valid.eq(x_valid)]
        with m.If(issue):
            m.d.sync += [pend_slot.eq(el_slot), pend_last.eq(word_last)]
            for s in range(per_word):
                # Untransposed, slot s of a whole word is lane el_col + s.
                target = Mux(whole, lane + s, lane)
                m.d.sync += pend_pick[s].eq(Cat(target == j for j in range(self.cols)))
            step_element()

        m.d.sync += [q_word.eq(self.c_read.data), q_slot.eq(pend_slot), q_last.eq(pend_last)]
        m.d.sync += [q_pick[s].eq(pend_pick[s]) for s in range(per_word)]

        m.d.sync += [x_slot.eq(q_slot), x_last.eq(q_last)]
        for s in range(per_word):
            picked = [Mux(q_pick[s][j], q_word[j], 0) for j in range(self.cols)]
            m.d.sync += x_ext[s].eq(_or_tree(picked))

        shift = cur.shift[:max(1, (aw - 1).bit_length())]
        # Round half to even: add half - 1 plus the lsb that is kept. Both
        # depend on the command only, so they are registered; they settle the
        # cycle after the command is taken, two before its first element
        # reaches X.
        round_base = Signal(aw + 2)          # 2**(shift-1) - 1, 0 for shift 0
        keep_mask = Signal(aw)               # the lsb kept, 0 for shift 0
        high_mask = Signal(aw + 2 - dw + 1)  # bits that must copy the sign to fit dw
        m.d.sync += [
            high_mask.eq(shift_saturate_mask(shift, aw + 2, dw)),
            round_base.eq(Mux(shift == 0, 0, ((Const(1, aw + 2) << shift) >> 1) - 1)),
            keep_mask.eq(Mux(shift == 0, 0, Const(1, aw) << shift)),
        ]
        m.d.sync += [y_slot.eq(x_slot), y_last.eq(x_last)]
        for s in range(per_word):
            kept = (x_ext[s].as_unsigned() & keep_mask).any()
            m.d.sync += y_sum[s].eq(x_ext[s] + round_base + kept)

        filled = Signal(32)
        for s in range(per_word):
            narrow = Signal(signed(dw), name=f"narrow{s}")
            m.d.comb += narrow.eq(shift_saturate(y_sum[s], shift, high_mask, dw))
            m.d.comb += filled.word_select(s, dw).eq(
                Mux(whole | (y_slot == s), narrow, pack.word_select(s, dw)))
        m.d.comb += [w_fifo.w_en.eq(y_valid & y_last), w_fifo.w_data.eq(filled)]
        with m.If(y_valid):
            m.d.sync += pack.eq(filled)

        # ---- command life cycle -------------------------------------------
        m.d.comb += [self.done.eq(0), self.fault.eq(0)]
        m.d.sync += refused.eq(0)
        with m.If(refused):
            m.d.comb += [self.done.eq(1), self.fault.eq(1)]
        # The legality check is registered beside ``cur`` (it follows the
        # payload too), so in the start cycle only a flip-flop fans out to
        # the unit's state: at 10x11 on ECP5 the check's adders and compares
        # ran on into busy, refused and the stages' counters (17 ns placed).
        cur_legal = Signal()
        with m.If(self.cmd.ready):
            m.d.sync += [cur.eq(self.cmd.payload), cur_legal.eq(self.legal(self.cmd.payload))]
        m.d.sync += start.eq(self.cmd.valid & self.cmd.ready)
        with m.If(start):
            m.d.sync += [issued.eq(0), answered.eq(0),
                         fault.eq(0), gen_row.eq(0), gen_done_words.eq(0),
                         gen_row_addr.eq(cur.addr),
                         el_row.eq(0), el_col.eq(0), el_slot.eq(0), word_addr.eq(cur.word),
                         row_end.eq(first_row_end)]
            with m.If(cur_legal):
                m.d.sync += [busy.eq(1), gen_busy.eq(1), gen_load.eq(1), el_busy.eq(1)]
            with m.Else():
                m.d.sync += refused.eq(1)
        # Registered: the test spans every stage's valid bit, stages placed
        # beside different block RAMs, and at 10x11 on ECP5 ran on into
        # busy and the counters' enables. Once true it stays true (nothing
        # is left to move), so acting a cycle later is safe; ``~finished``
        # in its own input keeps ``done`` to one pulse.
        finished = Signal()
        m.d.sync += finished.eq(
            busy & ~gen_busy & ~cmd_valid & ~el_busy & ~pend & ~q_valid & ~x_valid & ~y_valid
            & (reserved == 0) & ~word_valid & ~load_wr & (answered == issued) & ~finished)
        with m.If(finished):
            m.d.sync += busy.eq(0)
            m.d.comb += [self.done.eq(1), self.fault.eq(fault)]

        r_word = mem.r.valid & mem.r.ready
        m.d.comb += [self.r_word.eq(r_word), self.w_word.eq(w_word),
                     self.mem_stall.eq(busy & ~r_word & ~w_word)]
        return m
