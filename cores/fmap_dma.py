"""Feature-map DMA: the convolution tile moves between tensor memory and the
scratchpads (``IM2COL`` gather loads, ``FMAP`` loads and stores, ``COL2IM``
saturating scatter-add stores). ``fixedpoint.tiles`` is the bit-exact model.
"""

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import Out

from fecaffe_hw.runtime import isa

from .dma import BUFFER_A, BUFFER_B, BUFFER_C
from .eltwise import saturate, shift_saturate, shift_saturate_mask
from .memory_port import engine_members
from .multiplier import product_latency, registered_product
from .scratchpad import ScratchpadRead, ScratchpadWrite
from .skid_buffer import SkidBuffer

__all__ = ["FmapDma", "FmapCommand", "FmapMode", "ConvGeometryLayout"]


def _room(m, fifo, name):
    """Whether ``fifo`` (written at most once a cycle) can take a word, from a
    register: its level a cycle ago left two entries free. One entry is
    given up so the level's compare ends at a flip-flop: on the 10x11 ULX3S
    plan the tag and write-command queues' levels ran on into the ring's
    enables and the arbiter's read skid buffer (13.4-14.1 ns routed)."""
    room = Signal(name=f"{name}_room")
    m.d.sync += room.eq(fifo.level + 2 <= fifo.depth)
    return room


class FmapMode(enum.IntEnum):
    LOAD_IM2COL = 0
    LOAD_FMAP = 1
    STORE_FMAP = 2
    STORE_COL2IM = 3


#: The fields of ``SET_GEOMETRY`` (``runtime.isa.LAYOUTS``) a tile move needs,
#: with their widths there (``group`` is not used).
ConvGeometryLayout = data.StructLayout({
    field.name: field.width for field in isa.LAYOUTS[isa.Opcode.SET_GEOMETRY]
    if field.name != "group"})

#: Payload of ``FmapDma.cmd``.
FmapCommand = data.StructLayout({
    "mode": 2,         # FmapMode
    "buffer": 2,       # loads: BUFFER_A / BUFFER_B; stores: BUFFER_C
    "transpose": 1,    # loads: 1 puts T[r, c] at word ``word + c``, lane ``r``
    "addr": 32,        # byte address of map element [0, 0, 0, 0], a multiple of 4
    "k0": 16,          # first matrix row (im2col row or channel)
    "col0": 32,        # first matrix column (position ``(n * OH + oy) * OW + ox``)
    "rows": 16,
    "cols": 16,
    "word": 24,        # first scratchpad word
    "shift": 8,        # stores: round-half-even right shift; loads: 0
    "geometry": ConvGeometryLayout,
})

_GEOMETRY_SIZES = ("channels", "height", "width", "kernel_h", "kernel_w", "stride_h",
                   "stride_w", "out_h", "out_w", "images", "out_channels")

# Offsets count int16 elements from byte 0 (mod 2**32 bytes, so mod 2**31
# elements); the memory word of element ``off`` is ``off >> 1``, its half
# ``off & 1``.
_OFF = 31
_POS = signed(27)
# Word address bits the store hazard check compares (see ``ring_word``).
_HAZARD_BITS = 16      # ox * stride - pad + kx and the like


def _schedule(program, latency):
    """The steps of a multiplier ``program`` (``(a, b, how, destinations)``
    entries, see ``FmapDma.elaborate``) in order, ``None`` for a step left
    empty because an operand is a destination of an earlier entry that is
    not captured yet: a product is captured ``latency + 1`` steps after its
    issue, an accumulated one a step after that, usable the step after."""
    slots, ready = [], {}
    for entry in program:
        a, b, how, dests = entry
        start = max([len(slots)] + [ready[id(v)] for v in (a, b) if id(v) in ready])
        slots += [None] * (start - len(slots)) + [entry]
        for d in dests:
            ready[id(d)] = start + latency + 2 + (how is not None)
    return slots


def _program_steps(slots, latency):
    """The last step of a scheduled program: its last capture."""
    return len(slots) + latency + any(s is not None and s[2] is not None for s in slots)


class FmapDma(wiring.Component):
    """Moves convolution tiles between NCHW int16 maps in tensor memory and the
    scratchpads, bit-exact with ``fixedpoint.tiles``.

    A command (:data:`FmapCommand`) names a tile ``T`` of ``rows x cols``:
    rows ``k0 ..`` and columns ``col0 ..`` of the im2col matrix of the input
    map at ``addr`` (``LOAD_IM2COL``, ``STORE_COL2IM``) or of the feature-map
    matrix (channel x position) of the output map (``LOAD_FMAP``,
    ``STORE_FMAP``); ``geometry`` is the convolution's. Elements are packed two
    to a 32-bit memory word, element 0 in the low half. Loads write ``T[r, c]``
    to A or B word ``word + r``, lane ``c`` (``transpose``: word ``word + c``,
    lane ``r``); im2col padding reads no memory and loads 0. Stores read
    ``T[r, c]`` from C word ``word + r``, lane ``c``, requantise it
    (``requantize(acc, shift, Format(16, 0))``: round half to even,
    saturate) and overwrite (``STORE_FMAP``) or saturating-add into the map
    row by row (``STORE_COL2IM``; padding dropped). Stores write whole memory
    words; a word the tile covers only in part is read, merged and written
    back, and a word is never read while a write to it is unanswered.

    Ports: ``cmd`` (In stream of :data:`FmapCommand`), ``done`` (one-cycle
    pulse per finished command, ``fault`` with it if a memory command faulted
    or the command was refused), ``busy``; ``mem`` (``Out(MemoryPort())``);
    ``a_write``, ``b_write`` (``Out(ScratchpadWrite)``), ``c_read``
    (``Out(ScratchpadRead)``); ``r_word``, ``w_word`` (a word moved this
    cycle) and ``mem_stall`` (busy, no word moved) for the counters.

    A command is refused (moves nothing, ``done`` with ``fault``) when
    :meth:`legal` is false for it: zero rows or cols, a tile leaving its
    matrix, lanes or words beyond the buffer, an unaligned ``addr``, a shift
    out of range (stores 0..``acc_width - 1``, loads 0), a store not from C, a
    load not into A or B, a transposed store, or a zero size, kernel or
    stride in the geometry.

    Parameters: ``rows`` (A lanes), ``cols`` (B and C lanes), ``acc_width``
    (16..64), the buffers' depths, and ``depth`` (a power of two), the memory
    commands and store operations in flight.

    Latency: a command spends 63 cycles in set-up (the geometry's products
    on one shared, registered 32 x 16 multiplier; two restoring dividers, a
    quotient bit per cycle, split ``col0`` and ``k0`` into map coordinates;
    the walker's start offsets are the multiplier's products summed in one
    accumulator); a refused one reports ``done`` 13 cycles after it is
    taken. The tile is
    then walked row by row with incremental counters, no multiplier or
    divider in the per-element path; an element reaches the memory side three
    cycles after the walker, which runs up to four elements ahead, and a
    memory command leaves through a skid buffer (registered outputs) a
    cycle after it is issued.

    Throughput (single-word memory commands, up to ``depth`` in flight, so
    a memory latency ``L`` below ``depth`` overlaps): loads move one element
    per cycle while each element needs at most one new word (the last word
    read is reused, padding reads nothing); ``STORE_FMAP`` writes a whole
    word (two elements) per two cycles, and a read-modify-write only for
    words the tile covers in part; ``STORE_COL2IM`` is a read-modify-write
    per word (two memory commands), and a row re-reading a word of an
    earlier row waits for that write's response (about ``2 L``; the check
    compares 16 address bits, so a word a multiple of 2**16 words from one
    in flight may wait too). Measured
    with ``L = 8`` (tests/cores/test_fmap_dma.py): IM2COL load of 25 x 64
    (1 x 1 x 28 x 28 map, 5x5 kernel) 1739 cycles, 1.05 per element;
    STORE_FMAP 20 x 8: 251 cycles; STORE_COL2IM 25 x 8: 639 cycles (rows of
    8 overlap the previous row's words, so each row waits a round trip).
    """

    def __init__(self, *, rows, cols, acc_width, a_depth, b_depth, c_depth, depth=16):
        if isinstance(acc_width, bool) or not isinstance(acc_width, int) \
                or not 16 <= acc_width <= 64:
            raise ValueError(f"Accumulator width must be an integer in [16, 64], "
                             f"not {acc_width!r}")
        for name, value in (("rows", rows), ("cols", cols), ("A depth", a_depth),
                            ("B depth", b_depth), ("C depth", c_depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Feature-map DMA {name} must be a positive integer, "
                                 f"not {value!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2 \
                or depth & (depth - 1):
            raise ValueError(f"Feature-map DMA in-flight depth must be a power of two "
                             f">= 2, not {depth!r}")
        self._rows, self._cols, self._acc_width = rows, cols, acc_width
        self._depths = (a_depth, b_depth, c_depth)
        self._depth = depth
        super().__init__({
            **engine_members(FmapCommand),
            "a_write": Out(ScratchpadWrite(lanes=rows, lane_width=16, depth=a_depth)),
            "b_write": Out(ScratchpadWrite(lanes=cols, lane_width=16, depth=b_depth)),
            "c_read": Out(ScratchpadRead(lanes=cols, lane_width=acc_width, depth=c_depth)),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    acc_width = property(lambda self: self._acc_width)
    depth = property(lambda self: self._depth)

    def legal(self, cmd, *, products=None):
        """Expression: ``cmd`` (a :data:`FmapCommand` view) is one this engine
        executes. It needs two products of the geometry, ``C * KH * KW`` and
        ``N * OH * OW``: pass them registered as ``products`` (see
        :meth:`geometry_products`) to keep the multipliers off the path, or
        leave None to form them here (two chained multipliers each)."""
        g = cmd.geometry
        fmap = (cmd.mode == FmapMode.LOAD_FMAP) | (cmd.mode == FmapMode.STORE_FMAP)
        if products is None:
            products = (g.channels * (g.kernel_h * g.kernel_w), g.images * (g.out_h * g.out_w))
        patch_rows, positions = products
        return self._legal(cmd, Mux(fmap, g.out_channels, patch_rows), positions)

    #: Cycles from a change of the geometry to :meth:`geometry_products`.
    GEOMETRY_PRODUCTS_LATENCY = 5

    @staticmethod
    def geometry_products(m, geometry):
        """``(C * KH * KW, N * OH * OW)`` of a :data:`ConvGeometryLayout`
        signal, through :class:`Multiplier` s (on the ECP5 the MULT18X18D's
        own registers: a multiplier the array left over may sit across the
        die): they follow a change of ``geometry``
        :attr:`GEOMETRY_PRODUCTS_LATENCY` cycles later. ``N * OH * OW`` is
        a 32 x 16 product (a :class:`Multiplier` in slices, one cycle more)."""
        g = geometry
        kernel_area = registered_product(m, "geometry_kernel_area", g.kernel_h, g.kernel_w)  # 2
        out_area = registered_product(m, "geometry_out_area", g.out_h, g.out_w)
        patch_rows = registered_product(m, "geometry_patch_rows", g.channels, kernel_area)  # 4
        positions = registered_product(m, "geometry_positions", g.images, out_area)        # 5
        delayed = Signal(48, name="patch_rows")
        m.d.sync += delayed.eq(patch_rows)                                      # 5
        return delayed, positions

    @staticmethod
    def _at_most(a, b):
        """``a <= b`` for unsigned ``a`` narrower than ``b``: the compare as
        wide as ``a``, the rest of ``b`` only tested for zero."""
        n = len(a)
        return (b[n:] != 0) | (a <= b[:n]) if len(b) > n else a <= b

    def _legal(self, cmd, row_limit, positions):
        return Cat(self._legal_terms(cmd, row_limit, positions)).all()

    def _legal_terms(self, cmd, row_limit, positions):
        """The one-bit checks whose conjunction is :meth:`_legal`."""
        g = cmd.geometry
        a_depth, b_depth, c_depth = (Const(d) for d in self._depths)
        store = cmd.mode[1]
        buf = cmd.buffer
        lanes = Mux(buf == BUFFER_A, self.rows, self.cols)
        depth = Mux(buf == BUFFER_A, a_depth, Mux(buf == BUFFER_B, b_depth, c_depth))
        extent_lanes = Mux(cmd.transpose, cmd.rows, cmd.cols)
        extent_words = Mux(cmd.transpose, cmd.cols, cmd.rows)
        shift = cmd.shift.as_signed()
        sizes_ok = Cat(getattr(g, name) != 0 for name in _GEOMETRY_SIZES).all()
        # Words within the deepest buffer: word and extent each below
        # 2**bits, their sum compared at bits + 1.
        bits = max(self._depths).bit_length()
        words_ok = ((cmd.word[bits:] == 0) & (extent_words[bits:] == 0)
                    & (cmd.word[:bits] + extent_words[:bits] <= depth))
        return [(cmd.rows != 0) & (cmd.cols != 0) & sizes_ok,
                self._at_most(cmd.k0 + cmd.rows, row_limit),
                self._at_most(cmd.col0 + cmd.cols, positions),
                (extent_lanes <= lanes) & words_ok,
                cmd.addr[:2] == 0,
                Mux(store,
                    (buf == BUFFER_C) & ~cmd.transpose & (shift >= 0) & (shift < self.acc_width),
                    ((buf == BUFFER_A) | (buf == BUFFER_B)) & (shift == 0))]

    def elaborate(self, platform):
        m = Module()
        aw, mem, depth = self.acc_width, self.mem, self._depth

        cur = Signal(FmapCommand)
        g = cur.geometry
        storing_cmd = cur.mode[1]
        col2im = cur.mode == FmapMode.STORE_COL2IM
        fmap = (cur.mode == FmapMode.LOAD_FMAP) | (cur.mode == FmapMode.STORE_FMAP)

        # ---- set-up: effective geometry, products, divisions --------------
        # A feature-map matrix is the im2col matrix of the output map with a
        # 1x1 kernel, stride 1 and no padding, so one walker serves all modes.
        e = {name: Signal(16, name=f"eff_{name}") for name in
             ("C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "OH", "OW", "N")}
        HW, CHW, SHW = (Signal(_OFF, name=n) for n in ("HW", "CHW", "SHW"))
        P = Signal(32)       # OH * OW: a size, not an offset
        KK = Signal(16)
        row_limit, positions = Signal(32), Signal(48)

        # The multiplier keeps its operands and product in the DSPs' own
        # registers: placed on whichever DSP sites the array left free (on
        # the 10x11 ULX3S plan at the die's far edge), the hops from
        # ``mul_a``/``mul_b`` and back to the accumulator are a cycle each.
        mul_a, mul_b = Signal(32), Signal(16)
        prod = registered_product(m, "setup_product", mul_a, mul_b)
        mul_latency = product_latency(mul_a.shape(), mul_b.shape())
        # The walker's start values are sums of products; the multiplier's
        # products are summed (mod 2**32, as the offsets) in one accumulator
        # rather than by an adder per start value.
        acc = Signal(_OFF)
        acc_load, acc_sub = Signal(), Signal()
        acc_next = (Cat(acc_sub, Mux(acc_load, 0, acc))
                    + Cat(acc_sub, prod[:_OFF] ^ acc_sub.replicate(_OFF)))[1:_OFF + 1]

        # Two restoring dividers, a quotient bit per cycle: (col0 / P, then
        # rem / OW) and (k0 / KK, then rem / KW). Every quotient fits 16 bits
        # (``_legal``: col0 < N * P, k0 < C * KK, N and C below 2**16), so the
        # dividend's high half starts in the remainder (already below the
        # divisor) and its low half is shifted in beside the quotient bits: the
        # trial subtraction is only as wide as the divisor.
        divisor_low = Signal()       # second division: by OW and KW
        def divider(name, width, first, second):
            rem = Signal(width, name=f"{name}_rem")
            quo = Signal(16, name=f"{name}_quo")   # dividend bits left, then quotient
            trial = Signal(width + 2, name=f"{name}_trial")
            m.d.comb += trial.eq(Cat(quo[15], rem) - Mux(divisor_low, second, first))
            return rem, quo, trial

        div_c = divider("div_col", 32, P, e["OW"])
        div_k = divider("div_row", 16, KK, e["KW"])
        n0, oy0, ox0 = Signal(16), Signal(16), Signal(16)
        c0, ky0, kx0 = Signal(16), Signal(8), Signal(8)
        div_step = Signal(4)

        # walker start values (and oy0, ox0)
        st_iy, st_ix = Signal(_POS), Signal(_POS)
        st_n_off, st_oy_off, st_col_off = Signal(_OFF), Signal(_OFF), Signal(_OFF)

        # Requantisation constants, per command: round_base = 2**(shift - 1)
        # - 1 and, for saturation, the bits at and above ``shift + 15`` (they
        # must all equal the sign for the shifted value to fit 16 bits). Both
        # are thermometer codes, a LUT per bit instead of a shifter.
        shift = cur.shift[:max(1, (aw - 1).bit_length())]
        round_base = Signal(aw)
        high_mask = Signal(aw + 2 - 15)         # bit i: i + 15 >= shift + 15

        # ---- walker --------------------------------------------------------
        gen_active = Signal()
        last_ok = Signal()            # ``last_word`` holds an inside element of this command
        last_word = Signal(30)
        w_r, w_c = Signal(16), Signal(16)
        kx, ky = Signal(8), Signal(8)
        c_off, ky_off, row_off = Signal(_OFF), Signal(_OFF), Signal(_OFF)
        ox, oy = Signal(16), Signal(16)
        ix_base, iy_base = Signal(_POS), Signal(_POS)
        n_off, oy_off, col_off = Signal(_OFF), Signal(_OFF), Signal(_OFF)
        c_last, r_last, kx_last, ky_last, ox_last, oy_last = (
            Signal(name=f"{n}_last") for n in ("c", "r", "kx", "ky", "ox", "oy"))
        # per command: ``limit - 2`` (mod 2**16) and ``limit == 1``
        cols_m2, rows_m2, ow_m2, oh_m2 = (Signal(16, name=n) for n in
                                          ("cols_m2", "rows_m2", "ow_m2", "oh_m2"))
        kw_m2, kh_m2 = Signal(16), Signal(16)
        cols_one, kw_one, kh_one, ow_one, oh_one = (
            Signal(name=f"{n}_one") for n in ("cols", "kw", "kh", "ow", "oh"))
        ox0_last, oy0_last = Signal(), Signal()

        busy = Signal()
        finished = Signal()
        refused = Signal()
        fault = Signal()
        m.d.comb += [self.busy.eq(busy | refused), self.cmd.ready.eq(~busy & ~refused)]
        m.d.comb += [self.done.eq(0), self.fault.eq(0)]
        m.d.sync += refused.eq(0)
        with m.If(refused):
            m.d.comb += [self.done.eq(1), self.fault.eq(1)]

        # Multiplier programs: (a, b, how, destinations), issued one a step
        # in order (``_schedule`` leaves a step empty where an operand is a
        # product not yet captured). The product of step i is captured at
        # step i + 1 + mul_latency (an accumulated one a step later).
        # ``how``: None keeps the product itself; "load", "add", "sub" set,
        # add it to or subtract it from the accumulator, and the destinations
        # take the accumulator's new value.
        first_products = [
            (e["H"], e["W"], None, [HW]), (e["OH"], e["OW"], None, [P]),
            (e["KH"], e["KW"], None, [KK]), (e["SH"], e["W"], None, [SHW]),
            (HW, e["C"], None, [CHW]), (P, e["N"], None, [positions]),
            (KK, e["C"], None, [row_limit]),
        ]
        # Row start: addr / 2 - PH * W - PW + c0 * HW + ky0 * W + kx0; column
        # start: n0 * CHW + oy0 * SH * W + ox0 * SW, at oy0 * SH - PH, ox0 * SW - PW.
        second_products = [
            (CHW, n0, "load", [st_n_off]), (SHW, oy0, "add", [st_oy_off]),
            (e["SW"], ox0, "add", [st_col_off]),
            (e["SH"], oy0, "load", []), (e["PH"], 1, "sub", [st_iy]),
            (e["SW"], ox0, "load", []), (e["PW"], 1, "sub", [st_ix]),
            (cur.addr[1:], 1, "load", []), (e["PH"], e["W"], "sub", []),
            (e["PW"], 1, "sub", []), (HW, c0, "add", [c_off, ky_off]),
            (e["W"], ky0, "add", [ky_off, row_off]), (1, kx0, "add", [row_off]),
        ]
        programs = [_schedule(program, mul_latency)
                    for program in (first_products, second_products)]
        step = Signal(range(max(_program_steps(slots, mul_latency) for slots in programs) + 1))
        legal_terms = self._legal_terms(cur, row_limit, positions)
        legal_ok = Signal(len(legal_terms))

        def run_products(slots, next_state):
            # The accumulator's mode is registered a step ahead and its
            # destinations load from ``acc`` a step after it, so neither the
            # step decoder nor the 31-bit adder sits before the walker's
            # multiplexers.
            lat = mul_latency
            last = _program_steps(slots, lat)
            with m.Switch(step):
                for i in range(last + 1):
                    with m.Case(i):
                        if i < len(slots) and slots[i] is not None:
                            a, b, _, _ = slots[i]
                            m.d.sync += [mul_a.eq(a), mul_b.eq(b)]
                        if lat <= i < len(slots) + lat and slots[i - lat] is not None:
                            how = slots[i - lat][2]
                            m.d.sync += [acc_load.eq(how == "load"), acc_sub.eq(how == "sub")]
                        if lat + 1 <= i < len(slots) + lat + 1 and slots[i - lat - 1] is not None:
                            _, _, how, dests = slots[i - lat - 1]
                            if how is None:
                                m.d.sync += [d.eq(prod[:len(d)]) for d in dests]
                            else:
                                m.d.sync += acc.eq(acc_next)
                        if lat + 2 <= i < len(slots) + lat + 2 and slots[i - lat - 2] is not None:
                            _, _, how, dests = slots[i - lat - 2]
                            if how is not None:
                                m.d.sync += [d.eq(acc[:len(d)]) for d in dests]
                        if i == last:
                            m.d.sync += step.eq(0)
                            m.next = next_state
                        else:
                            m.d.sync += step.eq(step + 1)

        def div_iterate(d):
            rem, quo, trial = d
            fits = ~trial[-1]
            m.d.sync += [rem.eq(Mux(fits, trial, Cat(quo[15], rem))),
                         quo.eq(Cat(fits, quo[:15]))]

        def div_start(d, dividend):
            rem, quo, _ = d
            m.d.sync += [rem.eq(dividend[16:]), quo.eq(dividend[:16])]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += [cur.eq(self.cmd.payload), busy.eq(1)]
                    m.next = "GEOMETRY"
            with m.State("GEOMETRY"):
                for name, conv, out in (("C", g.channels, g.out_channels),
                                        ("H", g.height, g.out_h), ("W", g.width, g.out_w),
                                        ("KH", g.kernel_h, 1), ("KW", g.kernel_w, 1),
                                        ("SH", g.stride_h, 1), ("SW", g.stride_w, 1),
                                        ("PH", g.pad_h, 0), ("PW", g.pad_w, 0),
                                        ("OH", g.out_h, g.out_h), ("OW", g.out_w, g.out_w),
                                        ("N", g.images, g.images)):
                    m.d.sync += e[name].eq(Mux(fmap, out, conv))
                m.d.sync += [
                    round_base.eq(Cat(shift > i + 1 for i in range(aw))),
                    high_mask.eq(shift_saturate_mask(shift, aw + 2, 16)),
                    step.eq(0), fault.eq(0), last_ok.eq(0),
                ]
                m.next = "PRODUCTS"
            with m.State("PRODUCTS"):
                run_products(programs[0], "CHECK")
            with m.State("CHECK"):
                # Registered, each check on its own: the legality cone ends at
                # flip-flops instead of at the divider's and the FSM's
                # enables, and their AND is the next cycle's (the whole cone
                # into one flip-flop was 13.5 ns routed on the 10x11 plan).
                m.d.sync += legal_ok.eq(Cat(legal_terms))
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(legal_ok.all()):
                    div_start(div_c, cur.col0)
                    div_start(div_k, cur.k0)
                    m.d.sync += [divisor_low.eq(0), div_step.eq(0)]
                    m.next = "DIVIDE_HIGH"
                with m.Else():
                    m.d.sync += [refused.eq(1), busy.eq(0)]
                    m.next = "IDLE"
            with m.State("DIVIDE_HIGH"):
                div_iterate(div_c)
                div_iterate(div_k)
                m.d.sync += div_step.eq(div_step + 1)
                with m.If(div_step == 15):
                    m.next = "DIVIDE_SWITCH"
            with m.State("DIVIDE_SWITCH"):
                # The second divisions split the remainders.
                m.d.sync += [n0.eq(div_c[1]), c0.eq(div_k[1]), divisor_low.eq(1)]
                div_start(div_c, div_c[0])
                div_start(div_k, div_k[0])
                m.next = "DIVIDE_LOW"
            with m.State("DIVIDE_LOW"):
                div_iterate(div_c)
                div_iterate(div_k)
                m.d.sync += div_step.eq(div_step + 1)
                with m.If(div_step == 15):
                    m.next = "COORDS"
            with m.State("COORDS"):
                m.d.sync += [oy0.eq(div_c[1]), ox0.eq(div_c[0]),
                             ky0.eq(div_k[1]), kx0.eq(div_k[0]), step.eq(0)]
                m.d.sync += [cols_m2.eq(cur.cols - 2), rows_m2.eq(cur.rows - 2),
                             ow_m2.eq(e["OW"] - 2), oh_m2.eq(e["OH"] - 2),
                             kw_m2.eq(e["KW"] - 2), kh_m2.eq(e["KH"] - 2),
                             cols_one.eq(cur.cols == 1), kw_one.eq(e["KW"] == 1),
                             kh_one.eq(e["KH"] == 1), ow_one.eq(e["OW"] == 1),
                             oh_one.eq(e["OH"] == 1)]
                m.next = "PRODUCTS2"
            with m.State("PRODUCTS2"):
                run_products(programs[1], "START")
            with m.State("START"):
                m.d.sync += [
                    kx.eq(kx0), ky.eq(ky0),
                    ox.eq(ox0), oy.eq(oy0), ix_base.eq(st_ix), iy_base.eq(st_iy),
                    n_off.eq(st_n_off), oy_off.eq(st_oy_off), col_off.eq(st_col_off),
                    w_r.eq(0), w_c.eq(0), gen_active.eq(1),
                    c_last.eq(cols_one), r_last.eq(cur.rows == 1),
                    kx_last.eq(kx0 + 1 == e["KW"]), ky_last.eq(ky0 + 1 == e["KH"]),
                    ox_last.eq(ox0 + 1 == e["OW"]), oy_last.eq(oy0 + 1 == e["OH"]),
                    ox0_last.eq(ox0 + 1 == e["OW"]), oy0_last.eq(oy0 + 1 == e["OH"]),
                ]
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(finished):
                    m.d.sync += busy.eq(0)
                    m.d.comb += [self.done.eq(1), self.fault.eq(fault)]
                    m.next = "IDLE"

        # ---- walker: row-major over the tile, incremental map coordinates --
        # Row k = (c, ky, kx); row_off = base + c*HW + ky*W + kx, where base
        # folds in addr/2 - PH*W - PW. Column p = (n, oy, ox); col_off =
        # n*CHW + oy*SH*W + ox*SW; ix_base = ox*SW - PW, iy_base = oy*SH - PH.
        # Element offset = row_off + col_off, at (iy_base + ky, ix_base + kx).
        # The walker fires on credit (registered state only), so the memory
        # side's handshakes never reach the walker's clock enables.
        # A legal tile's lanes and buffer words are within the buffers, so the
        # pipeline carries them only as wide as the largest buffer needs.
        lane_bits = max(1, (max(self.rows, self.cols) - 1).bit_length())
        baddr_bits = max(1, (max(self._depths) - 1).bit_length())
        elem_layout = data.StructLayout({"inside": 1, "need": 1, "word": 30, "half": 1,
                                         "lane": lane_bits, "baddr": baddr_bits, "last": 1})
        # Registered output: the memory side's handshakes start at flip-flops,
        # not behind the queue's distributed-RAM read.
        m.submodules.elems = elems = SyncFIFOBuffered(width=elem_layout.size, depth=4)
        e1_valid = Signal()
        e2_valid, e2_take = elems.r_rdy, Signal()
        gen_fire = Signal()
        # ``w_level`` misses the element in E1 and the one being generated.
        m.d.comb += gen_fire.eq(gen_active & (elems.w_level < elems.depth - 1))
        # Each counter carries a registered "at its last value" flag, set
        # one step ahead by an equality with ``limit - 2`` (a per-command
        # constant), so no increment-and-compare chain drives the walker's
        # wide clock enables and multiplexers.
        with m.If(gen_fire):
            with m.If(c_last):
                m.d.sync += [w_c.eq(0), w_r.eq(w_r + 1), c_last.eq(cols_one),
                             r_last.eq(w_r == rows_m2),
                             ox.eq(ox0), oy.eq(oy0), ox_last.eq(ox0_last), oy_last.eq(oy0_last),
                             ix_base.eq(st_ix), iy_base.eq(st_iy),
                             n_off.eq(st_n_off), oy_off.eq(st_oy_off), col_off.eq(st_col_off)]
                with m.If(r_last):
                    m.d.sync += gen_active.eq(0)
                with m.If(kx_last):
                    m.d.sync += [kx.eq(0), kx_last.eq(kw_one)]
                    with m.If(ky_last):
                        m.d.sync += [ky.eq(0), ky_last.eq(kh_one),
                                     c_off.eq(c_off + HW), ky_off.eq(c_off + HW),
                                     row_off.eq(c_off + HW)]
                    with m.Else():
                        m.d.sync += [ky.eq(ky + 1), ky_last.eq(ky == kh_m2),
                                     ky_off.eq(ky_off + e["W"]), row_off.eq(ky_off + e["W"])]
                with m.Else():
                    m.d.sync += [kx.eq(kx + 1), kx_last.eq(kx == kw_m2),
                                 row_off.eq(row_off + 1)]
            with m.Else():
                m.d.sync += [w_c.eq(w_c + 1), c_last.eq(w_c == cols_m2)]
                with m.If(ox_last):
                    m.d.sync += [ox.eq(0), ox_last.eq(ow_one), ix_base.eq(-e["PW"])]
                    with m.If(oy_last):
                        m.d.sync += [oy.eq(0), oy_last.eq(oh_one), iy_base.eq(-e["PH"]),
                                     n_off.eq(n_off + CHW), oy_off.eq(n_off + CHW),
                                     col_off.eq(n_off + CHW)]
                    with m.Else():
                        m.d.sync += [oy.eq(oy + 1), oy_last.eq(oy == oh_m2),
                                     iy_base.eq(iy_base + e["SH"]),
                                     oy_off.eq(oy_off + SHW), col_off.eq(oy_off + SHW)]
                with m.Else():
                    m.d.sync += [ox.eq(ox + 1), ox_last.eq(ox == ow_m2),
                                 ix_base.eq(ix_base + e["SW"]),
                                 col_off.eq(col_off + e["SW"])]

        # E1: positions and offset; then the inside test and placement on
        # the way into ``elems``.
        e1_iy, e1_ix = Signal(_POS), Signal(_POS)
        e1_off = Signal(_OFF)
        e1_lane, e1_baddr = Signal(lane_bits), Signal(baddr_bits)
        e1_last = Signal()
        m.d.sync += e1_valid.eq(gen_fire)
        with m.If(gen_fire):
            m.d.sync += [e1_iy.eq(iy_base + ky), e1_ix.eq(ix_base + kx),
                         e1_off.eq(row_off + col_off),
                         e1_lane.eq(Mux(cur.transpose, w_r, w_c)),
                         e1_baddr.eq(cur.word + Mux(cur.transpose, w_c, w_r)),
                         e1_last.eq(c_last & r_last)]
        ew = elem_layout(elems.w_data)
        # Its own signal, not a field read back from ``w_data``: a wire that
        # feeds itself needs delta cycles in CXXRTL's single evaluation.
        inside = Signal()
        m.d.comb += [
            elems.w_en.eq(e1_valid),
            # 0 <= iy < H, H below 2**16: as iy's high bits zero, a 16-bit compare.
            inside.eq((e1_iy[16:] == 0) & (e1_iy[:16] < e["H"])
                      & (e1_ix[16:] == 0) & (e1_ix[:16] < e["W"])),
            ew.inside.eq(inside),
            # Loads request a word only if it differs from the previous
            # inside element's (the last word requested, as elements are
            # taken in order), decided here off the memory side's path.
            ew.need.eq(inside & ~(last_ok & (last_word == e1_off[1:]))),
            ew.word.eq(e1_off[1:]), ew.half.eq(e1_off[0]),
            ew.lane.eq(e1_lane), ew.baddr.eq(e1_baddr),
            ew.last.eq(e1_last),
        ]
        with m.If(e1_valid & inside):
            m.d.sync += [last_word.eq(e1_off[1:]), last_ok.eq(1)]
        er = elem_layout(elems.r_data)
        e2_inside, e2_word, e2_half = er.inside, er.word, er.half
        e2_lane, e2_baddr, e2_last = er.lane, er.baddr, er.last
        m.d.comb += elems.r_en.eq(e2_take)

        # ---- memory commands, responses -----------------------------------
        # Every command pushes a tag (1: write) so responses, in command order,
        # tell which ones retire a write; ``tags`` also bounds those in flight.
        m.submodules.tags = tags = SyncFIFO(width=1, depth=2 * depth + 2)
        tags_room = _room(m, tags, "tags")
        rd_cmd_valid, wr_cmd_valid = Signal(), Signal()
        rd_word, wr_word = Signal(30), Signal(30)
        # Commands leave through a skid buffer (registered outputs, and room
        # that is one register): the target's ``ready`` reaches no internal
        # handshake, an offered command stays offered until taken (stream
        # rule), and one command per cycle passes with a cycle of latency. A
        # tag is pushed as a command enters; responses still come in order.
        # Its payload registers load whenever free (``gate_payload=False``),
        # keeping the late ``cmd_fire`` off their 31 enables.
        cmd_layout = data.StructLayout({"word": 30, "write": 1})
        m.submodules.cmd_out = cmd_out = SkidBuffer(cmd_layout, gate_payload=False)
        grant_wr = Signal()
        m.d.comb += [
            cmd_out.i.valid.eq(rd_cmd_valid | wr_cmd_valid),
            cmd_out.i.payload.word.eq(Mux(wr_cmd_valid, wr_word, rd_word)),
            cmd_out.i.payload.write.eq(wr_cmd_valid),
            grant_wr.eq(wr_cmd_valid & cmd_out.i.ready),
        ]
        # A read command goes out when no write wants the buffer. Loads and
        # stores each take this, not ``rd_fire``: through ``rd_cmd_valid``
        # the store side's hazard logic would time into every load (a path
        # no command exercises, nextpnr's critical one at 6x6 on ECP5).
        rd_free = ~wr_cmd_valid & cmd_out.i.ready
        rd_fire = rd_cmd_valid & rd_free
        wr_fire = grant_wr
        cmd_fire = rd_fire | wr_fire
        m.d.comb += [
            mem.cmd.valid.eq(cmd_out.o.valid),
            mem.cmd.payload.addr.eq(Cat(Const(0, 2), cmd_out.o.payload.word)),
            mem.cmd.payload.words.eq(1),
            mem.cmd.payload.write.eq(cmd_out.o.payload.write),
            cmd_out.o.ready.eq(mem.cmd.ready),
        ]
        m.d.comb += [tags.w_en.eq(cmd_fire), tags.w_data.eq(grant_wr)]

        m.d.comb += [mem.resp.ready.eq(1), tags.r_en.eq(mem.resp.valid)]
        resp_write = mem.resp.valid & tags.r_data[0]
        with m.If(mem.resp.valid & mem.resp.payload.fault):
            m.d.sync += fault.eq(1)

        st_rd_valid, st_rd_word = Signal(), Signal(30)
        loading = busy & ~storing_cmd
        storing = busy & storing_cmd

        # ---- loads ---------------------------------------------------------
        # Reads are issued ahead of the data through ``pending``; the last word
        # requested is not requested again.
        pending_layout = data.StructLayout({"need": 1, "half": 1, "inside": 1,
                                            "lane": lane_bits, "baddr": baddr_bits})
        # Buffered: the head (need, lane, address) comes from registers, not
        # a LUT RAM read, into the pop and on into every lane's write
        # enable (18 ns placed at 10x11 on ECP5 with the LUT RAM read).
        m.submodules.pending = pending = SyncFIFOBuffered(width=pending_layout.size,
                                                          depth=depth)
        need = er.need
        m.d.comb += [
            rd_cmd_valid.eq((loading & e2_valid & need & pending.w_rdy & tags_room)
                            | st_rd_valid),
            rd_word.eq(Mux(loading, e2_word, st_rd_word)),
        ]
        ld_take = loading & e2_valid & pending.w_rdy & (~need | (tags_room & rd_free))
        pw = pending_layout(pending.w_data)
        m.d.comb += [pw.need.eq(need), pw.half.eq(e2_half), pw.inside.eq(e2_inside),
                     pw.lane.eq(e2_lane), pw.baddr.eq(e2_baddr),
                     pending.w_en.eq(ld_take)]

        head = pending_layout(pending.r_data)
        held = Signal(32)
        ld_pop = pending.r_rdy & (~head.need | mem.r.valid)
        word_now = Mux(head.need, mem.r.payload, held)
        element = Mux(head.inside, Mux(head.half, word_now[16:], word_now[:16]), 0)
        m.d.comb += pending.r_en.eq(ld_pop)
        with m.If(ld_pop & head.need):
            m.d.sync += held.eq(mem.r.payload)
        # Buffer writes are registered to keep lane enables off the memory path.
        load_wr = Signal()
        m.d.sync += load_wr.eq(ld_pop)
        for port, code, lanes in ((self.a_write, BUFFER_A, self.rows),
                                  (self.b_write, BUFFER_B, self.cols)):
            m.d.sync += port.addr.eq(head.baddr)
            for i in range(lanes):
                m.d.sync += port.data[i].eq(element)
            selected = ld_pop & (cur.buffer == code)
            m.d.sync += port.en.eq(Cat(selected & (head.lane == i) for i in range(lanes)))

        # ---- stores: read C, requantise, merge into words, RMW -------------
        # The requantiser never stalls: an element is read from C only with
        # room for it in ``requant`` (counted in ``st_count`` from the read to
        # its leaving the queue), so the merge stage's handshakes stop at the
        # queue instead of running back through every stage to ``elems``.
        # ``follows``: an inside element whose word is the previous inside
        # element's (``need`` low), which is the open word operation's
        # whenever one is open: the merge tests a flag, not 30-bit words.
        meta = data.StructLayout({"word": 30, "half": 1, "inside": 1, "last": 1, "follows": 1})
        pend = Signal()
        pend_lane = Signal(lane_bits)
        pend_meta = Signal(meta)
        # The C word is registered whole before its lane is picked: block RAM
        # clock-to-out (5.6 ns on ECP5), the depth-cascade mux of a deep C
        # and a lane mux across the chip do not fit one cycle at 10x11.
        c_valid = Signal()
        c_word = Signal.like(self.c_read.data, reset_less=True)
        c_lane = Signal(lane_bits)
        c_meta = Signal(meta)
        x_valid = Signal()
        x_val = Signal(signed(aw), reset_less=True)
        x_meta = Signal(meta)
        y_valid = Signal()
        y_sum = Signal(signed(aw + 2), reset_less=True)
        y_meta = Signal(meta)
        s_valid = Signal()
        s_val = Signal(signed(16))
        s_meta = Signal(meta)
        requant_layout = data.StructLayout({"val": signed(16), "meta": meta})
        m.submodules.requant = requant = SyncFIFOBuffered(width=requant_layout.size, depth=8)
        st_count = Signal(range(requant.depth + 1))
        z_adv = Signal()
        z_valid = requant.r_rdy
        z_val = requant_layout(requant.r_data).val
        z_meta = requant_layout(requant.r_data).meta

        st_take = storing & e2_valid & (st_count != requant.depth)
        m.d.comb += [self.c_read.addr.eq(e2_baddr), self.c_read.en.eq(st_take)]
        m.d.comb += e2_take.eq(Mux(storing_cmd, st_take, ld_take))
        m.d.sync += st_count.eq(st_count + st_take - z_adv)
        m.d.sync += [pend.eq(st_take), c_valid.eq(pend), x_valid.eq(c_valid),
                     y_valid.eq(x_valid), s_valid.eq(y_valid)]
        with m.If(st_take):
            m.d.sync += [pend_lane.eq(e2_lane),
                         pend_meta.word.eq(e2_word), pend_meta.half.eq(e2_half),
                         pend_meta.inside.eq(e2_inside), pend_meta.last.eq(e2_last),
                         pend_meta.follows.eq(~need)]
        with m.If(pend):
            m.d.sync += [c_meta.eq(pend_meta), c_lane.eq(pend_lane), c_word.eq(self.c_read.data)]
        with m.If(c_valid):
            m.d.sync += [x_meta.eq(c_meta), x_val.eq(c_word[c_lane])]
        with m.If(x_valid):
            kept = (shift != 0) & x_val.as_unsigned().bit_select(shift, 1)
            m.d.sync += [y_meta.eq(x_meta), y_sum.eq(x_val + round_base + kept)]
        with m.If(y_valid):
            m.d.sync += [s_meta.eq(y_meta),
                         s_val.eq(shift_saturate(y_sum, shift, high_mask, 16))]
        m.d.comb += [requant.w_en.eq(s_valid), requant.w_data.eq(Cat(s_val, s_meta)),
                     requant.r_en.eq(z_adv)]

        # Merge: elements of one memory word that follow each other (two
        # halves, never the same half twice) become one word operation.
        op_valid, op_closed = Signal(), Signal()
        op_word = Signal(30)
        op_mask = Signal(2)
        op_val = Signal(data.ArrayLayout(signed(16), 2))
        i_valid, i_adv = Signal(), Signal()
        mergeable = op_valid & ~op_closed & z_meta.follows & ~op_mask.bit_select(z_meta.half, 1)
        emit = Signal()
        m.d.comb += [
            # Only into an empty issue stage, so the memory side's handshakes
            # stop there. A word operation takes two elements or (a partial
            # word) two memory commands, so one per two cycles loses nothing.
            emit.eq(op_valid & ~i_valid
                    & (op_closed | (z_valid & z_meta.inside & ~mergeable))),
            z_adv.eq(z_valid & (~z_meta.inside | mergeable | ~op_valid | emit)),
        ]
        with m.If(emit):
            m.d.sync += op_valid.eq(0)
        with m.If(z_adv):
            with m.If(z_meta.inside):
                with m.If(mergeable):
                    m.d.sync += [op_mask.eq(0b11), op_closed.eq(1),
                                 op_val[1].eq(Mux(z_meta.half, z_val, op_val[1])),
                                 op_val[0].eq(Mux(z_meta.half, op_val[0], z_val))]
                with m.Else():
                    m.d.sync += [op_valid.eq(1), op_closed.eq(z_meta.last),
                                 op_word.eq(z_meta.word),
                                 op_mask.eq(Mux(z_meta.half, 0b10, 0b01)),
                                 op_val[0].eq(z_val), op_val[1].eq(z_val)]
            with m.Elif(z_meta.last):
                m.d.sync += op_closed.eq(1)

        # Issue: a word operation that needs the old word waits while any
        # earlier operation on that word is unanswered (``ring``, in order).
        i_word = Signal(30)
        i_mask = Signal(2)
        i_val = Signal(data.ArrayLayout(signed(16), 2))
        with m.If(emit):
            m.d.sync += [i_valid.eq(1), i_word.eq(op_word), i_mask.eq(op_mask),
                         i_val.eq(op_val)]
        with m.Elif(i_adv):
            m.d.sync += i_valid.eq(0)

        # The ring keeps only the low bits of each word: a match on them is
        # conservative (an operation may wait for an unrelated write whose
        # word differs by a multiple of 2**_HAZARD_BITS words, in practice
        # never within one tile's few rows in flight), a mismatch exact.
        ring_word = [Signal(_HAZARD_BITS, name=f"ring_word{j}") for j in range(depth)]
        ring_busy = Signal(depth)
        ring_head = Signal(range(depth))
        ring_tail = Signal(range(depth))
        # The word compares are registered with the operation (``emit`` only
        # fills an empty issue stage, and only an issue writes the ring, so
        # no entry changes under a waiting operation but by being answered):
        # the 16 compares and their OR no longer run on into the read
        # command's valid, the skid buffer and the ring's enables.
        match = Signal(depth)
        with m.If(emit):
            m.d.sync += match.eq(Cat(ring_word[j] == op_word[:_HAZARD_BITS]
                                     for j in range(depth)))
        hazard = (ring_busy & match).any()
        ring_full = ring_busy.bit_select(ring_tail, 1)
        i_need = col2im | (i_mask != 0b11)
        # Registered output: the old word meets the new values (and the
        # saturating add) straight from flip-flops.
        m.submodules.ops = ops = SyncFIFOBuffered(width=30 + 2 + 32 + 1, depth=depth)
        i_room = storing & i_valid & ~ring_full & ops.w_rdy & tags_room
        m.d.comb += [st_rd_valid.eq(i_room & i_need & ~hazard), st_rd_word.eq(i_word),
                     i_adv.eq(i_room & (~i_need | (~hazard & rd_free)))]
        m.d.comb += [ops.w_data.eq(Cat(i_word, i_mask, i_val, i_need)), ops.w_en.eq(i_adv)]
        with m.If(i_adv):
            m.d.sync += ring_tail.eq(ring_tail + 1)
            with m.Switch(ring_tail):
                for j in range(depth):
                    with m.Case(j):
                        m.d.sync += ring_word[j].eq(i_word[:_HAZARD_BITS])
        clear = Signal(depth)
        m.d.comb += clear.eq(Mux(resp_write, Const(1, depth) << ring_head, 0)[:depth])
        setb = Signal(depth)
        m.d.comb += setb.eq(Mux(i_adv, Const(1, depth) << ring_tail, 0)[:depth])
        m.d.sync += ring_busy.eq((ring_busy & ~clear) | setb)
        with m.If(resp_write):
            m.d.sync += ring_head.eq(ring_head + 1)

        # Complete: merge with the old word (saturating add for COL2IM) and
        # queue the write. The queues hold at most ``depth`` words (the ring
        # bounds operations in flight), so taking read data never waits for
        # the command channel: a target may hold commands until its earlier
        # reads drain.
        o_word, o_mask = ops.r_data[:30], ops.r_data[30:32]
        o_val = data.ArrayLayout(signed(16), 2)(ops.r_data[32:64])
        o_need = ops.r_data[64]
        # Write commands run ahead of their data: separate queues.
        m.submodules.wcmds = wcmds = SyncFIFO(width=30, depth=depth)
        m.submodules.wdata = wdata = SyncFIFO(width=32, depth=depth)
        w_room = _room(m, wcmds, "wcmds") & _room(m, wdata, "wdata")
        o_take = storing & ops.r_rdy & w_room & (~o_need | mem.r.valid)
        old = Mux(o_need, mem.r.payload, 0)
        merged = Signal(32)
        for h in range(2):
            old_h = old.word_select(h, 16).as_signed()
            added = saturate(old_h + o_val[h], 16)
            m.d.comb += merged.word_select(h, 16).eq(
                Mux(o_mask[h], Mux(col2im, added, o_val[h]), old_h))
        m.d.comb += [ops.r_en.eq(o_take),
                     wcmds.w_en.eq(o_take), wcmds.w_data.eq(o_word),
                     wdata.w_en.eq(o_take), wdata.w_data.eq(merged)]
        m.d.comb += [wr_cmd_valid.eq(wcmds.r_rdy & tags_room), wr_word.eq(wcmds.r_data),
                     wcmds.r_en.eq(wr_fire),
                     mem.w.valid.eq(wdata.r_rdy), mem.w.payload.eq(wdata.r_data),
                     wdata.r_en.eq(mem.w.ready)]
        w_fire = mem.w.valid & mem.w.ready

        # mem.r serves both paths: loads pop ``pending``, stores ``ops``.
        m.d.comb += mem.r.ready.eq(Mux(storing_cmd,
                                       storing & ops.r_rdy & o_need & w_room,
                                       loading & pending.r_rdy & head.need))

        # ---- command life cycle --------------------------------------------
        # Registered: the test spans every stage and queue of both paths and
        # ran on through ``done`` into the sequencer's decode (13.9 ns routed
        # at 6x6 on ECP5). Once true in RUN it stays true (nothing is left to
        # move and nothing starts), so acting a cycle later is safe;
        # ``~finished`` in its own input keeps ``done`` to one pulse.
        m.d.sync += finished.eq(
            fsm.ongoing("RUN") & ~finished
            & ~gen_active & ~e1_valid & (elems.r_level == 0)
            & (pending.level == 0) & ~load_wr
            & ~pend & ~c_valid & ~x_valid & ~y_valid & ~s_valid & (requant.r_level == 0)
            & ~op_valid & ~i_valid
            & (ops.r_level == 0) & ~wcmds.r_rdy & ~wdata.r_rdy & ~tags.r_rdy)

        r_word = mem.r.valid & mem.r.ready
        m.d.comb += [self.r_word.eq(r_word), self.w_word.eq(w_fire),
                     self.mem_stall.eq(busy & ~r_word & ~w_fire)]
        return m
