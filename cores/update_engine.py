"""Update engine: runs ``ACC_ADD``, ``ACC_BIAS`` and ``SGD_UPDATE`` memory to
memory, bit-exact with ``fecaffe_hw.fixedpoint.update``.

Every command is a sequence of bursts on the memory port, issued in an order
that needs no buffering beyond one chunk (the port serves commands in order,
so a write burst completes before the next chunk's reads are served):

* ACC_ADD, per tile row: read ``cols`` gradient words, write them back after
  adding C buffer word ``offset // cols_of_array + row`` (read through
  ``c_read`` once per row).
* ACC_BIAS, per channel: read its gradient word, read the channel's span of
  ``positions`` int16 in each image (bursts of up to 256 words; the first and
  last words of a span may hold a neighbour's element), write the gradient.
* SGD_UPDATE, per chunk of up to ``chunk`` elements: read weights, history,
  gradients; write weights, history, zeros to the gradients.

Run-time shifts (the command's ``shift`` and fracs) are pipelined barrel
shifters; multiplies are registered on both sides (18 x 25 DSP friendly).
"""

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from fecaffe_hw.fixedpoint.lfsr import LFSR_BITS, LFSR_MASK
from fecaffe_hw.fixedpoint.sgd import NORM_FRAC
from fecaffe_hw.fixedpoint.update import (BIAS_SUM_BITS, CONSTANT_MAX, DIFF_BITS, MULT_FRAC,
                                          NORM_MUL_MAX)
from fecaffe_hw.runtime import isa

from .eltwise import saturate, shift_saturate, shift_saturate_mask
from .memory_port import MAX_BURST_WORDS, engine_members
from .scratchpad import ScratchpadRead

__all__ = ["UpdateEngine", "UpdateCommand", "UpdateOp"]


class UpdateOp(enum.IntEnum):
    ACC_ADD = 0
    ACC_BIAS = 1
    SGD_UPDATE = 2


#: Payload of ``UpdateEngine.cmd``: the ISA fields of the three opcodes
#: (``shift`` is ACC_ADD's or ACC_BIAS's, ``src`` ACC_BIAS's dy).
UpdateCommand = data.StructLayout({
    "op": 2,
    "grad_addr": 32,
    "src": 32, "weight_addr": 32, "history_addr": 32,
    "offset": 24, "rows": 16, "cols": 16, "stride": 32,
    "channels": 16, "positions": 32, "images": 16,
    "shift": signed(8),
    "count": 32, "lr_mult": 16, "decay_mult": 16,
    "weight_frac": signed(8), "history_frac": signed(8),
    "grad_frac": signed(8), "diff_frac": signed(8),
})

# Read destinations and write sources of a burst.
_D_W, _D_H, _D_STREAM, _D_GREG = 0, 1, 2, 3
_S_W, _S_H, _S_ZERO, _S_G = 0, 1, 2, 3

_ReadDesc = data.StructLayout({"dest": 2, "words": 9, "skip_lo": 1, "skip_hi": 1, "last": 1})
_WriteDesc = data.StructLayout({"src": 2, "words": 9})

_DESC_DEPTH = 8
#: Diff sum (63 bits, SgdFormats' limit) and history sum widths.
_SUM_BITS = 64


def _lfsr_step(state):
    return (state >> 1) ^ Mux(state[0], LFSR_MASK, 0)


def _bitlen(value, width):
    """Expression: bit length of an unsigned ``width``-bit value (0 for 0)."""
    length = Const(0, range(width + 1))
    for i in range(width):
        length = Mux(value[i], i + 1, length)
    return length


class _Requantize:
    """Pipelined ``saturate(round_half_even(value * 2**-r), out_bits)`` for a
    per-command signed register ``r`` (a right shift for ``r > 0``, a
    saturating left shift otherwise). Five registered stages, 5 cycles from
    ``value`` to ``result``.

    A right shift keeps one extra bit (the round bit) and ORs the bits below
    it (sticky), so the shifter is as wide as ``value``; ``r`` beyond that
    width rounds to 0 as the width does. A left shift by ``k`` saturates
    unless the value fits ``out_bits - k`` bits, so it starts from ``value``
    saturated to ``out_bits + 1`` bits and ``k`` stops at ``out_bits``.
    """

    latency = 5

    def __init__(self, m, name, value, r, out_bits):
        width = len(value)
        # Per-command constants (r is stable while a command runs).
        right = Signal(name=f"{name}_right")
        rs = Signal(range(width), name=f"{name}_rs")          # r - 1, clamped
        k = Signal(range(out_bits + 1), name=f"{name}_k")     # -r, clamped
        sticky_mask = Signal(width, name=f"{name}_sticky_mask")
        m.d.sync += [
            right.eq(r > 0),
            rs.eq(Mux(r > width, width - 1, Mux(r > 0, r - 1, 0))),
            k.eq(Mux(r < -out_bits, out_bits, Mux(r < 0, -r, 0))),
            sticky_mask.eq(Cat(i < rs for i in range(width))),
        ]
        x = Signal(signed(width), name=f"{name}_x")
        y = Signal(signed(out_bits + 2), name=f"{name}_y")
        sticky = Signal(name=f"{name}_sticky")
        xs = Signal(signed(out_bits + 1), name=f"{name}_xs")
        q = Signal(signed(out_bits + 2), name=f"{name}_q")
        z = Signal(signed(2 * out_bits + 1), name=f"{name}_z")
        q_sat = Signal(signed(out_bits), name=f"{name}_q_sat")
        z_sat = Signal(signed(out_bits), name=f"{name}_z_sat")
        self.result = Signal(signed(out_bits), name=f"{name}_out")
        # y keeps out_bits + 2 bits of x >> rs (round bit, result, and one
        # to see the rounding overflow), saturated: a saturated y still
        # saturates the result the same way after rounding.
        y_mask = Signal(width - out_bits - 1, name=f"{name}_y_mask")
        m.d.sync += y_mask.eq(shift_saturate_mask(rs, width, out_bits + 2))
        m.d.sync += [
            x.eq(value),
            y.eq(shift_saturate(x, rs, y_mask, out_bits + 2)),
            sticky.eq((x.as_unsigned() & sticky_mask) != 0),
            xs.eq(saturate(x, out_bits + 1)),
            # Round half to even: up if the round bit is set and the rest
            # (sticky) or the kept lsb is.
            q.eq((y >> 1) + (y[0] & (sticky | y[1]))), z.eq(xs << k),
            q_sat.eq(saturate(q, out_bits)), z_sat.eq(saturate(z, out_bits)),
            self.result.eq(Mux(right, q_sat, z_sat)),
        ]


class UpdateEngine(wiring.Component):
    """Runs ``ACC_ADD``, ``ACC_BIAS`` and ``SGD_UPDATE`` between tensor memory
    and the C buffer (see the module docstring for the burst order).

    Ports: ``cmd`` (In stream of :data:`UpdateCommand`, taken while idle; build
    it with :meth:`from_isa`), ``done`` (one-cycle pulse per command, with
    ``fault`` if a burst faulted or the command was refused: an ACC_ADD whose
    ``offset`` is not a multiple of ``cols`` or whose rows leave the C buffer;
    such a command moves nothing), ``busy``, ``mem`` (``Out(MemoryPort())``),
    ``r_word``/``w_word``/``mem_stall``; ``c_read`` (``Out(ScratchpadRead)``
    of the C buffer, used during ACC_ADD only); ``rate``, ``momentum``,
    ``decay`` (18-bit unsigned CSR values, formats of ``SgdFormats``),
    ``norm_mul`` (25 bits), sampled when a command starts; ``lfsr_seed`` and
    ``lfsr_load`` (reseed the rounding LFSR between commands; zero ignored).

    Parameters: ``cols`` (C buffer lanes, 1..256), ``acc_width`` (C lane
    width, 2..64), ``c_depth`` (C buffer words), ``grad_bits`` (2..32),
    ``chunk`` (SGD elements per chunk, even, 2..256), ``seed`` (LFSR reset
    state).

    Throughput: one element per cycle through each datapath (SGD elements
    one lane per beat, ``fixedpoint.update.SGD_LANES``); the memory port is
    the limit (SGD moves 4 words per element, ACC_ADD 2). Per SGD chunk or
    ACC_ADD row the pipeline latency (SGD 20 cycles, ACC 7) plus the memory
    latency passes between the reads and the writes; ACC_BIAS spends about 3
    issue cycles per (channel, image) span, so ``positions == 1`` (inner
    product biases) runs at about one element per 3 cycles. Setup: 26 cycles
    per command. Regions of one command must not partially overlap (the
    compiler's job; not checked).
    """

    def __init__(self, *, cols, acc_width, c_depth, grad_bits, chunk=128, seed=1):
        for name, value, lo, hi in (("cols", cols, 1, MAX_BURST_WORDS),
                                    ("acc width", acc_width, 2, 64),
                                    ("C depth", c_depth, 2, 1 << 24),
                                    ("gradient width", grad_bits, 2, 32),
                                    ("chunk", chunk, 2, MAX_BURST_WORDS)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"Update engine {name} must be an integer in [{lo}, {hi}], "
                                 f"not {value!r}")
        if chunk % 2:
            raise ValueError(f"Update engine chunk must be even, not {chunk}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed < 2**LFSR_BITS:
            raise ValueError(f"LFSR seed must be a nonzero 32-bit integer, not {seed!r}")
        self._cols, self._acc_width, self._c_depth = cols, acc_width, c_depth
        self._grad_bits, self._chunk, self._seed = grad_bits, chunk, seed
        super().__init__({
            **engine_members(UpdateCommand),
            "c_read": Out(ScratchpadRead(lanes=cols, lane_width=acc_width, depth=c_depth)),
            "rate": In(18), "momentum": In(18), "decay": In(18),
            "norm_mul": In(NORM_FRAC + 1),
            "lfsr_seed": In(LFSR_BITS), "lfsr_load": In(1),
        })

    cols = property(lambda self: self._cols)
    acc_width = property(lambda self: self._acc_width)
    c_depth = property(lambda self: self._c_depth)
    grad_bits = property(lambda self: self._grad_bits)
    chunk = property(lambda self: self._chunk)
    seed = property(lambda self: self._seed)

    def from_isa(self, m, *, opcode, func, flags, words):
        """Decode an ISA ``ACC_ADD``, ``ACC_BIAS`` or ``SGD_UPDATE`` command
        (``opcode``, ``func``, ``flags`` and the eight command ``words`` as
        expressions) into an :data:`UpdateCommand` signal; returns
        ``(command, legal)``. ``legal`` is 0 for other opcodes.

        Illegal: ``func`` not 0 or flags other than ``LAST``; an address not
        word aligned; ACC_ADD with no rows, ``cols`` outside ``1 ..
        cols_of_array`` or rows overlapping (``stride < cols`` with several
        rows); ACC_BIAS with no channel, position or image, or sums that may
        not fit 48 bits (``bitlen(images) + bitlen(positions) > 32``);
        SGD_UPDATE with an odd or zero ``count`` or fracs
        ``fixedpoint.update.sgd_fracs_legal`` refuses.
        """
        O = isa.Opcode

        def field(op, name):
            for f in isa.COMMON_FIELDS + isa.LAYOUTS[op]:
                if f.name == name:
                    value = words[f.word][f.lsb:f.lsb + f.width]
                    return value.as_signed() if f.signed else value
            raise KeyError(name)

        cmd = Signal(UpdateCommand, name="update_cmd")
        legal = Signal(name="update_legal")
        plain = (func == 0) & ((flags & ~isa.Flag.LAST) == 0)
        add = {n: field(O.ACC_ADD, n) for n in ("offset", "grad_addr", "rows", "cols",
                                                "stride", "shift")}
        bias = {n: field(O.ACC_BIAS, n) for n in ("src", "grad_addr", "channels", "positions",
                                                  "images", "shift")}
        sgd = {n: field(O.SGD_UPDATE, n) for n in (
            "weight_addr", "history_addr", "grad_addr", "count", "lr_mult", "decay_mult",
            "weight_frac", "history_frac", "grad_frac", "diff_frac")}
        with m.Switch(opcode):
            with m.Case(O.ACC_ADD):
                m.d.comb += [cmd.op.eq(UpdateOp.ACC_ADD)]
                m.d.comb += [getattr(cmd, n).eq(v) for n, v in add.items()]
                m.d.comb += legal.eq(
                    plain & (add["rows"] != 0) & (add["cols"] != 0)
                    & (add["cols"] <= self.cols) & (add["grad_addr"][:2] == 0)
                    & ((add["rows"] == 1) | (add["stride"] >= add["cols"])))
            with m.Case(O.ACC_BIAS):
                m.d.comb += [cmd.op.eq(UpdateOp.ACC_BIAS)]
                m.d.comb += [getattr(cmd, n).eq(v) for n, v in bias.items()]
                m.d.comb += legal.eq(
                    plain & (bias["channels"] != 0) & (bias["positions"] != 0)
                    & (bias["images"] != 0) & (bias["src"][:2] == 0)
                    & (bias["grad_addr"][:2] == 0)
                    & (_bitlen(bias["images"], 16) + _bitlen(bias["positions"], 32)
                       <= BIAS_SUM_BITS - 16))
            with m.Case(O.SGD_UPDATE):
                m.d.comb += [cmd.op.eq(UpdateOp.SGD_UPDATE)]
                m.d.comb += [getattr(cmd, n).eq(v) for n, v in sgd.items()]
                a = Signal(signed(10), name="update_a")
                b = Signal(signed(10), name="update_b")
                ws = Signal(signed(10), name="update_ws")
                m.d.comb += [a.eq(sgd["grad_frac"] - sgd["weight_frac"] - 2),
                             b.eq(sgd["history_frac"] - sgd["diff_frac"] - 3),
                             ws.eq(sgd["history_frac"] - sgd["weight_frac"])]
                m.d.comb += legal.eq(
                    plain & (sgd["count"] != 0) & ~sgd["count"][0]
                    & (sgd["weight_addr"][:2] == 0) & (sgd["history_addr"][:2] == 0)
                    & (sgd["grad_addr"][:2] == 0)
                    & (a >= self.grad_bits - 36) & (a <= 28)
                    & (b >= -15) & (b <= 44 - DIFF_BITS) & (ws >= 0) & (ws <= 32))
        return cmd, legal

    def elaborate(self, platform):
        m = Module()
        gb, cols, chunk = self.grad_bits, self.cols, self.chunk
        mem = self.mem
        cur = Signal(UpdateCommand)
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]

        m.submodules.rd_desc = rd_desc = SyncFIFO(width=_ReadDesc.size,
                                                  depth=_DESC_DEPTH)
        m.submodules.wr_desc = wr_desc = SyncFIFO(width=_WriteDesc.size,
                                                  depth=_DESC_DEPTH)
        half = chunk // 2
        m.submodules.w_in = w_in = SyncFIFO(width=32, depth=half)
        m.submodules.h_in = h_in = SyncFIFO(width=32, depth=half)
        m.submodules.w_out = w_out = SyncFIFO(width=32, depth=half)
        m.submodules.h_out = h_out = SyncFIFO(width=32, depth=half)
        m.submodules.g_out = g_out = SyncFIFO(width=32, depth=cols)

        S = enum.IntEnum("S", ["IDLE", "SETUP", "CHECK", "ADD_R", "ADD_W", "BIAS_GRAD",
                               "BIAS_SPAN0", "BIAS_SPAN1", "BIAS_BURST", "BIAS_W",
                               "SGD_RW", "SGD_RH", "SGD_RG", "SGD_WW", "SGD_WH", "SGD_WG",
                               "DRAIN"], start=0)
        state = Signal(range(len(S)))

        # ---- per-command constants, settled during SETUP (a chain of
        # registers re-evaluated every SETUP cycle; the CSRs are sampled there)
        setup = Signal()
        m.d.comb += setup.eq(state == S.SETUP)
        vw = max(self.acc_width, BIAS_SUM_BITS)
        # SGD constants.
        rate_prod = Signal(34)
        decay_prod = Signal(34)
        rate_e, decay_e, mom_e = Signal(18), Signal(18), Signal(18)
        norm_e = Signal(NORM_FRAC + 1)

        def scaled(prod):
            kept = prod >> MULT_FRAC
            r = kept + (prod[:MULT_FRAC] > (1 << (MULT_FRAC - 1)))
            r = r + ((prod[:MULT_FRAC] == (1 << (MULT_FRAC - 1))) & kept[0])
            return Mux(r > CONSTANT_MAX, CONSTANT_MAX, r)
        with m.If(setup):
            m.d.sync += [rate_prod.eq(self.rate * cur.lr_mult),
                         decay_prod.eq(self.decay * cur.decay_mult),
                         rate_e.eq(scaled(rate_prod)), decay_e.eq(scaled(decay_prod)),
                         mom_e.eq(Mux(self.momentum > CONSTANT_MAX, CONSTANT_MAX,
                                      self.momentum)),
                         norm_e.eq(Mux(self.norm_mul > NORM_MUL_MAX, NORM_MUL_MAX,
                                       self.norm_mul))]
        a, b = Signal(signed(10)), Signal(signed(10))
        a_neg, b_neg = Signal(), Signal()
        # |a| and |b| within from_isa's legal ranges: the aligning shifts.
        a_abs = Signal(range(max(36 - gb, 28) + 1))
        b_abs = Signal(range(max(15, 44 - DIFF_BITS) + 1))
        s1_minus_df = Signal(signed(11))
        # One requantizer serves ACC_* (the sum shifted right by ``shift``)
        # and SGD_UPDATE's diff (the diff sum by ``s1 - diff_frac``): one
        # command runs at a time.
        rne_r = Signal(signed(11))
        hs = Signal(6)              # history rounding shift, 17..32
        ws = Signal(6)              # weight rounding shift, 0..32
        h_mask, w_mask = Signal(32), Signal(32)
        h_fit_mask = Signal(_SUM_BITS + 1 - 17 - 15)
        with m.If(setup):
            m.d.sync += [
                a.eq(cur.grad_frac - cur.weight_frac - 2),
                b.eq(cur.history_frac - cur.diff_frac - 3),
                a_neg.eq(a < 0), b_neg.eq(b < 0),
                a_abs.eq(Mux(a < 0, -a, a)), b_abs.eq(Mux(b < 0, -b, b)),
                s1_minus_df.eq(Mux(a < 0, 26 + cur.weight_frac, cur.grad_frac + NORM_FRAC)
                               - cur.diff_frac),
                rne_r.eq(Mux(cur.op == UpdateOp.SGD_UPDATE, s1_minus_df, cur.shift)),
                hs.eq(Mux(b < 0, 17 - b, 17)),
                ws.eq(cur.history_frac - cur.weight_frac),
                h_mask.eq((Const(1, 33) << hs) - 1),
                h_fit_mask.eq(shift_saturate_mask((hs - 17)[:4], _SUM_BITS + 1 - 17, 16)),
                w_mask.eq((Const(1, 33) << ws) - 1),
            ]

        # ACC_BIAS: channels * positions by shift and add; ACC_ADD: offset // cols
        # by restoring division (both during SETUP, one bit per cycle).
        cp = Signal(48)
        c_word = Signal(24)
        c_rem = Signal(range(2 * cols + 1))
        step = Signal(range(32))

        # ---- issue side ------------------------------------------------------
        iss_valid, iss_write = Signal(), Signal()
        iss_addr, iss_words = Signal(32), Signal(9)
        iss_rd, iss_wr = Signal(_ReadDesc), Signal(_WriteDesc)
        m.d.comb += [
            mem.cmd.valid.eq(iss_valid & Mux(iss_write, wr_desc.w_rdy, rd_desc.w_rdy)),
            mem.cmd.payload.addr.eq(iss_addr), mem.cmd.payload.words.eq(iss_words),
            mem.cmd.payload.write.eq(iss_write),
            iss_rd.words.eq(iss_words), iss_wr.words.eq(iss_words),
            rd_desc.w_data.eq(iss_rd), wr_desc.w_data.eq(iss_wr),
        ]
        taken = mem.cmd.valid & mem.cmd.ready
        m.d.comb += [rd_desc.w_en.eq(taken & ~iss_write), wr_desc.w_en.eq(taken & iss_write)]

        outstanding = Signal(range(64))
        fault = Signal()
        m.d.comb += mem.resp.ready.eq(1)
        m.d.sync += outstanding.eq(outstanding + taken - mem.resp.valid)
        with m.If(mem.resp.valid & mem.resp.payload.fault):
            m.d.sync += fault.eq(1)

        addr_a, addr_b, addr_g = Signal(32), Signal(32), Signal(32)
        left = Signal(32)             # rows / channels / elements to go
        n_img = Signal(16)            # ACC_BIAS: image of the current span
        span_c = Signal(32)           # ACC_BIAS: byte address of channel's span in image 0
        span_n = Signal(32)           # ... and in the current image
        span_end = Signal(32)         # last element's byte address
        span_words = Signal(32)
        first_burst = Signal()
        image_step = Signal(32)       # 2 * channels * positions bytes
        sgd_n = Signal(range(chunk + 1))
        m.d.comb += sgd_n.eq(Mux(left > chunk, chunk, left))
        span_burst = Mux(span_words > MAX_BURST_WORDS, MAX_BURST_WORDS, span_words)
        refused = Signal()

        with m.Switch(state):
            with m.Case(S.SETUP):
                m.d.sync += step.eq(step + 1)
                # offset // cols, MSB first.
                rem = Cat(cur.offset.bit_select((23 - step)[:5], 1), c_rem)
                with m.If(step < 24):
                    with m.If(rem >= cols):
                        m.d.sync += [c_rem.eq(rem - cols), c_word.eq(Cat(1, c_word))]
                    with m.Else():
                        m.d.sync += [c_rem.eq(rem), c_word.eq(Cat(0, c_word))]
                    with m.If(cur.channels.bit_select((15 - step)[:4], 1) & (step < 16)):
                        m.d.sync += cp.eq((cp << 1) + cur.positions)
                    with m.Elif(step < 16):
                        m.d.sync += cp.eq(cp << 1)
                with m.Else():
                    m.d.sync += state.eq(S.CHECK)
            with m.Case(S.CHECK):
                m.d.sync += [image_step.eq(cp << 1), n_img.eq(0), first_burst.eq(1)]
                with m.Switch(cur.op):
                    with m.Case(UpdateOp.ACC_ADD):
                        with m.If((c_rem != 0) | (c_word + cur.rows > self.c_depth)):
                            m.d.sync += [refused.eq(1), state.eq(S.DRAIN)]
                        with m.Else():
                            m.d.sync += [state.eq(S.ADD_R), left.eq(cur.rows),
                                         addr_g.eq(cur.grad_addr)]
                    with m.Case(UpdateOp.ACC_BIAS):
                        m.d.sync += [state.eq(S.BIAS_GRAD), left.eq(cur.channels),
                                     addr_g.eq(cur.grad_addr), span_c.eq(cur.src),
                                     span_n.eq(cur.src), addr_a.eq(cur.src)]
                    with m.Default():
                        m.d.sync += [state.eq(S.SGD_RW), left.eq(cur.count),
                                     addr_a.eq(cur.weight_addr), addr_b.eq(cur.history_addr),
                                     addr_g.eq(cur.grad_addr)]

            with m.Case(S.ADD_R):
                m.d.comb += [iss_valid.eq(1), iss_addr.eq(addr_g), iss_words.eq(cur.cols),
                             iss_rd.dest.eq(_D_STREAM)]
                with m.If(taken):
                    m.d.sync += state.eq(S.ADD_W)
            with m.Case(S.ADD_W):
                m.d.comb += [iss_valid.eq(1), iss_write.eq(1), iss_addr.eq(addr_g),
                             iss_words.eq(cur.cols), iss_wr.src.eq(_S_G)]
                with m.If(taken):
                    m.d.sync += [addr_g.eq(addr_g + (cur.stride << 2)), left.eq(left - 1),
                                 state.eq(Mux(left == 1, S.DRAIN, S.ADD_R))]

            with m.Case(S.BIAS_GRAD):
                m.d.comb += [iss_valid.eq(1), iss_addr.eq(addr_g), iss_words.eq(1),
                             iss_rd.dest.eq(_D_GREG)]
                with m.If(taken):
                    m.d.sync += state.eq(S.BIAS_SPAN0)
            with m.Case(S.BIAS_SPAN0):
                # addr_a: byte address of this span's first element.
                m.d.sync += [span_end.eq(addr_a + (cur.positions << 1) - 2),
                             state.eq(S.BIAS_SPAN1), first_burst.eq(1)]
            with m.Case(S.BIAS_SPAN1):
                start = Cat(Const(0, 2), addr_a[2:])
                m.d.sync += [span_words.eq(((span_end - start)[:32] >> 2) + 1),
                             state.eq(S.BIAS_BURST)]
            with m.Case(S.BIAS_BURST):
                last_burst = span_words <= MAX_BURST_WORDS
                m.d.comb += [iss_valid.eq(1), iss_addr.eq(Cat(Const(0, 2), addr_a[2:])),
                             iss_words.eq(span_burst), iss_rd.dest.eq(_D_STREAM),
                             iss_rd.skip_lo.eq(first_burst & addr_a[1]),
                             iss_rd.skip_hi.eq(last_burst & ~span_end[1]),
                             iss_rd.last.eq(last_burst & (n_img + 1 == cur.images))]
                with m.If(taken):
                    m.d.sync += [first_burst.eq(0), span_words.eq(span_words - span_burst),
                                 addr_a.eq(Cat(Const(0, 2), addr_a[2:]) + (span_burst << 2))]
                    with m.If(last_burst):
                        with m.If(n_img + 1 == cur.images):
                            next_c = span_c + (cur.positions << 1)
                            m.d.sync += [state.eq(S.BIAS_W), n_img.eq(0), span_c.eq(next_c),
                                         span_n.eq(next_c), addr_a.eq(next_c)]
                        with m.Else():
                            m.d.sync += [state.eq(S.BIAS_SPAN0), n_img.eq(n_img + 1),
                                         span_n.eq(span_n + image_step),
                                         addr_a.eq(span_n + image_step)]
            with m.Case(S.BIAS_W):
                m.d.comb += [iss_valid.eq(1), iss_write.eq(1), iss_addr.eq(addr_g),
                             iss_words.eq(1), iss_wr.src.eq(_S_G)]
                with m.If(taken):
                    m.d.sync += [addr_g.eq(addr_g + 4), left.eq(left - 1),
                                 state.eq(Mux(left == 1, S.DRAIN, S.BIAS_GRAD))]

            for st, addr, words, dest in ((S.SGD_RW, addr_a, sgd_n >> 1, _D_W),
                                          (S.SGD_RH, addr_b, sgd_n >> 1, _D_H),
                                          (S.SGD_RG, addr_g, sgd_n, _D_STREAM)):
                with m.Case(st):
                    m.d.comb += [iss_valid.eq(1), iss_addr.eq(addr), iss_words.eq(words),
                                 iss_rd.dest.eq(dest)]
                    with m.If(taken):
                        m.d.sync += state.eq(st + 1)
            for st, addr, words, src in ((S.SGD_WW, addr_a, sgd_n >> 1, _S_W),
                                         (S.SGD_WH, addr_b, sgd_n >> 1, _S_H),
                                         (S.SGD_WG, addr_g, sgd_n, _S_ZERO)):
                with m.Case(st):
                    m.d.comb += [iss_valid.eq(1), iss_write.eq(1), iss_addr.eq(addr),
                                 iss_words.eq(words), iss_wr.src.eq(src)]
                    with m.If(taken):
                        if st == S.SGD_WG:
                            m.d.sync += [addr_a.eq(addr_a + (sgd_n << 1)),
                                         addr_b.eq(addr_b + (sgd_n << 1)),
                                         addr_g.eq(addr_g + (sgd_n << 2)),
                                         left.eq(left - sgd_n),
                                         state.eq(Mux(left == sgd_n, S.DRAIN, S.SGD_RW))]
                        else:
                            m.d.sync += state.eq(st + 1)

        # ---- read side -------------------------------------------------------
        rdesc = Signal(_ReadDesc)
        m.d.comb += rdesc.eq(rd_desc.r_data)
        rpos = Signal(9)
        r_first = rpos == 0
        r_last = rpos + 1 == rdesc.words
        c_loaded = Signal()
        lane = Signal(range(cols))
        c_row = Signal(24)
        sgd_take = Signal()
        elem_odd = Signal()                 # SGD: the element is the high half of w/h words
        r_ready = Signal()
        with m.Switch(rdesc.dest):
            with m.Case(_D_W):
                m.d.comb += [r_ready.eq(w_in.w_rdy),
                             w_in.w_en.eq(mem.r.valid & rd_desc.r_rdy)]
            with m.Case(_D_H):
                m.d.comb += [r_ready.eq(h_in.w_rdy),
                             h_in.w_en.eq(mem.r.valid & rd_desc.r_rdy)]
            with m.Case(_D_STREAM):
                with m.Switch(cur.op):
                    with m.Case(UpdateOp.ACC_ADD):
                        m.d.comb += r_ready.eq(c_loaded)
                    with m.Case(UpdateOp.ACC_BIAS):
                        m.d.comb += r_ready.eq(1)
                    with m.Default():
                        m.d.comb += r_ready.eq(w_in.r_rdy & h_in.r_rdy)
            with m.Default():
                m.d.comb += r_ready.eq(1)
        m.d.comb += [mem.r.ready.eq(rd_desc.r_rdy & r_ready),
                     w_in.w_data.eq(mem.r.payload), h_in.w_data.eq(mem.r.payload)]
        got = mem.r.valid & mem.r.ready
        with m.If(got):
            m.d.sync += rpos.eq(Mux(r_last, 0, rpos + 1))
        m.d.comb += rd_desc.r_en.eq(got & r_last)
        stream = got & (rdesc.dest == _D_STREAM)
        word_g = mem.r.payload[:gb].as_signed()

        g_bias = Signal(signed(gb))
        with m.If(got & (rdesc.dest == _D_GREG)):
            m.d.sync += g_bias.eq(word_g)

        # ACC_ADD: one C word per tile row, read before the row's first word.
        m.d.comb += [self.c_read.addr.eq(c_row)]
        with m.If(busy & (cur.op == UpdateOp.ACC_ADD) & (state != S.SETUP) & (state != S.CHECK)
                  & ~refused & ~c_loaded):
            m.d.comb += self.c_read.en.eq(1)
            m.d.sync += c_loaded.eq(1)
        with m.If(stream & (cur.op == UpdateOp.ACC_ADD)):
            with m.If(lane == cur.cols - 1):
                m.d.sync += [lane.eq(0), c_row.eq(c_row + 1), c_loaded.eq(0)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        # ---- ACC datapath: grad + saturate(RNE(value, shift)) ---------------
        q_valid = Signal()
        q_value = Signal(signed(vw))
        q_grad = Signal(signed(gb))
        m.d.sync += q_valid.eq(0)
        with m.If(stream & (cur.op == UpdateOp.ACC_ADD)):
            m.d.sync += [q_valid.eq(1), q_value.eq(self.c_read.data[lane]), q_grad.eq(word_g)]

        # ACC_BIAS sums: a word's valid halves, then the running sum.
        pair_valid, pair_last = Signal(), Signal()
        pair = Signal(signed(17))
        bias_sum = Signal(signed(BIAS_SUM_BITS))
        lo = mem.r.payload[:16].as_signed()
        hi = mem.r.payload[16:].as_signed()
        use_lo = ~(r_first & rdesc.skip_lo)
        use_hi = ~(r_last & rdesc.skip_hi)
        m.d.sync += [pair_valid.eq(stream & (cur.op == UpdateOp.ACC_BIAS)),
                     pair_last.eq(r_last & rdesc.last),
                     pair.eq(Mux(use_lo, lo, 0) + Mux(use_hi, hi, 0))]
        with m.If(pair_valid):
            with m.If(pair_last):
                m.d.sync += [bias_sum.eq(0), q_valid.eq(1), q_value.eq(bias_sum + pair),
                             q_grad.eq(g_bias)]
            with m.Else():
                m.d.sync += bias_sum.eq(bias_sum + pair)

        sgd_op = cur.op == UpdateOp.SGD_UPDATE
        diff_sum = Signal(signed(_SUM_BITS))
        rne = _Requantize(m, "rne", Mux(sgd_op, diff_sum, q_value), rne_r, max(gb, DIFF_BITS))
        acc_term = rne.result if gb >= DIFF_BITS else saturate(rne.result, gb)
        grads = [q_grad]
        valids = [q_valid]
        for i in range(_Requantize.latency):
            g_next = Signal(signed(gb), name=f"acc_grad{i + 1}")
            v_next = Signal(name=f"acc_valid{i + 1}")
            m.d.sync += [g_next.eq(grads[-1]), v_next.eq(valids[-1])]
            grads.append(g_next)
            valids.append(v_next)
        m.d.sync += [g_out.w_en.eq(valids[-1]),
                     g_out.w_data.eq((grads[-1] + acc_term)[:gb].as_signed())]

        # ---- SGD datapath (one element per beat) -----------------------------
        sgd_valid = Signal()
        m.d.comb += sgd_take.eq(stream & (cur.op == UpdateOp.SGD_UPDATE))
        m.d.comb += [w_in.r_en.eq(sgd_take & elem_odd), h_in.r_en.eq(sgd_take & elem_odd)]
        w0, h0 = Signal(signed(16)), Signal(signed(16))
        g0 = Signal(signed(gb))
        m.d.sync += [sgd_valid.eq(sgd_take), w0.eq(w_in.r_data.word_select(elem_odd, 16)),
                     h0.eq(h_in.r_data.word_select(elem_odd, 16)), g0.eq(word_g)]
        with m.If(sgd_take):
            m.d.sync += elem_odd.eq(~elem_odd)

        def delay(sig, n, name):
            out = [sig]
            for i in range(n):
                s = Signal.like(sig, name=f"{name}_d{i + 1}")
                m.d.sync += s.eq(out[-1])
                out.append(s)
            return out
        valid = delay(sgd_valid, 19, "sgd_valid")
        wd = delay(w0, 17, "sgd_w")
        hd = delay(h0, 10, "sgd_h")

        # Stages 1, 2: g * norm_mul and w * decay, registered twice.
        p1 = Signal(signed(gb + NORM_FRAC + 2))
        p2 = Signal(signed(16 + 18))
        p1b, p2b = Signal.like(p1), Signal.like(p2)
        m.d.sync += [p1.eq(g0 * norm_e), p2.eq(w0 * decay_e), p1b.eq(p1), p2b.eq(p2)]
        # Stage 3: align the term with the smaller frac; stage 4: sum (exact).
        x3, y3 = Signal(signed(_SUM_BITS)), Signal(signed(_SUM_BITS))
        m.d.sync += [x3.eq(Mux(a_neg, p1b, p2b) << a_abs), y3.eq(Mux(a_neg, p2b, p1b)),
                     diff_sum.eq(x3 + y3)]
        # Stages 5..9: diff = requantize(diff_sum), a left shift by DIFF_BITS
        # first so a negative shift (left, saturating) is a right shift too.
        diff = rne.result if gb <= DIFF_BITS else saturate(rne.result, DIFF_BITS)
        # Stages 10, 11: momentum * h and rate * diff; 12: align; 13: sum.
        m1 = Signal(signed(16 + 18))
        m2 = Signal(signed(DIFF_BITS + 18))
        m1b, m2b = Signal.like(m1), Signal.like(m2)
        m.d.sync += [m1.eq(hd[9] * mom_e), m2.eq(diff * rate_e), m1b.eq(m1), m2b.eq(m2)]
        x12, y12 = Signal(signed(_SUM_BITS)), Signal(signed(_SUM_BITS))
        h_sum = Signal(signed(_SUM_BITS))
        m.d.sync += [x12.eq(Mux(b_neg, m1b, m2b) << b_abs), y12.eq(Mux(b_neg, m2b, m1b)),
                     h_sum.eq(x12 + y12)]
        # Stage 14: add the history's random word (drawn as the element enters
        # the stage, so draws follow element order); 15: shift and saturate.
        state_lfsr = Signal(LFSR_BITS, init=self.seed)
        n1 = _lfsr_step(state_lfsr)
        n2 = _lfsr_step(n1)
        with m.If(self.lfsr_load):
            with m.If(self.lfsr_seed != 0):
                m.d.sync += state_lfsr.eq(self.lfsr_seed)
        with m.Elif(valid[13]):
            m.d.sync += state_lfsr.eq(Mux(ws != 0, n2, n1))
        h14 = Signal(signed(_SUM_BITS + 1))
        wn14, wn15 = Signal(32), Signal(32)
        m.d.sync += [h14.eq(h_sum + (n1 & h_mask)), wn14.eq(n2 & w_mask), wn15.eq(wn14)]
        # hs = 17 + (0..15): a constant then a 4-bit variable shift.
        h15 = Signal(signed(16))
        m.d.sync += h15.eq(shift_saturate(h14 >> 17, (hs - 17)[:4], h_fit_mask, 16))
        # Stages 16..18: stochastic_round((w << ws) - h', ws) is
        # w + ((r - h') >> ws), as w << ws has no bits below ws (and r is 0
        # when ws is 0); saturated.
        d16 = Signal(signed(LFSR_BITS + 2))
        e17 = Signal(signed(LFSR_BITS + 2))
        h16, h17 = Signal(signed(16)), Signal(signed(16))
        w18 = Signal(signed(16))
        h18 = Signal(signed(16))
        m.d.sync += [d16.eq(wn15 - h15), h16.eq(h15),
                     e17.eq(d16 >> ws), h17.eq(h16),
                     w18.eq(saturate(wd[17] + e17, 16)), h18.eq(h17)]
        # Stage 19: pairs of elements into words.
        out_odd = Signal()
        w_lo, h_lo = Signal(16), Signal(16)
        with m.If(valid[18]):
            m.d.sync += out_odd.eq(~out_odd)
            with m.If(~out_odd):
                m.d.sync += [w_lo.eq(w18), h_lo.eq(h18)]
        m.d.sync += [w_out.w_en.eq(valid[18] & out_odd), h_out.w_en.eq(valid[18] & out_odd),
                     w_out.w_data.eq(Cat(w_lo, w18)), h_out.w_data.eq(Cat(h_lo, h18))]

        # ---- write side ------------------------------------------------------
        wdesc = Signal(_WriteDesc)
        m.d.comb += wdesc.eq(wr_desc.r_data)
        wpos = Signal(9)
        src_valid = Signal()
        with m.Switch(wdesc.src):
            with m.Case(_S_W):
                m.d.comb += [src_valid.eq(w_out.r_rdy), mem.w.payload.eq(w_out.r_data)]
            with m.Case(_S_H):
                m.d.comb += [src_valid.eq(h_out.r_rdy), mem.w.payload.eq(h_out.r_data)]
            with m.Case(_S_ZERO):
                m.d.comb += [src_valid.eq(1), mem.w.payload.eq(0)]
            with m.Default():
                m.d.comb += [src_valid.eq(g_out.r_rdy), mem.w.payload.eq(g_out.r_data)]
        m.d.comb += mem.w.valid.eq(wr_desc.r_rdy & src_valid)
        w_word = mem.w.valid & mem.w.ready
        w_last = wpos + 1 == wdesc.words
        m.d.comb += [wr_desc.r_en.eq(w_word & w_last),
                     w_out.r_en.eq(w_word & (wdesc.src == _S_W)),
                     h_out.r_en.eq(w_word & (wdesc.src == _S_H)),
                     g_out.r_en.eq(w_word & (wdesc.src == _S_G))]
        with m.If(w_word):
            m.d.sync += wpos.eq(Mux(w_last, 0, wpos + 1))

        # ---- command life cycle ---------------------------------------------
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cur.eq(self.cmd.payload), busy.eq(1), state.eq(S.SETUP), step.eq(0),
                         c_rem.eq(0), c_word.eq(0), cp.eq(0), fault.eq(0), refused.eq(0),
                         c_loaded.eq(0), lane.eq(0), elem_odd.eq(0), out_odd.eq(0),
                         bias_sum.eq(0)]
        with m.If((state == S.CHECK) & (cur.op == UpdateOp.ACC_ADD)):
            m.d.sync += c_row.eq(c_word)
        finished = ((state == S.DRAIN) & (outstanding == 0) & ~rd_desc.r_rdy
                    & ~wr_desc.r_rdy & ~taken)
        m.d.comb += [self.done.eq(finished), self.fault.eq(finished & (fault | refused))]
        with m.If(finished):
            m.d.sync += [busy.eq(0), state.eq(S.IDLE)]

        r_word = mem.r.valid & mem.r.ready
        m.d.comb += [self.r_word.eq(r_word), self.w_word.eq(w_word),
                     self.mem_stall.eq(busy & ~r_word & ~w_word)]
        return m

