"""Pool engine: runs ``POOL_FWD`` and ``POOL_BWD`` memory to memory.

Feature maps are NCHW ``int16`` in tensor memory (the compiler's layout), so
one ``(n, c)`` plane is ``H * W`` contiguous elements in raster order: fed
plane after plane to a one-channel :class:`~fecaffe_hw.cores.line_buffer.LineBuffer`,
that is exactly its ``(y, x, c)`` order with ``c`` trivial, and the pooled
values come out in the NCHW order of the top. The channel tile ``c0 ..
c0 + channels`` of one image is one contiguous run in memory (input and
output), so a command is ``images`` runs.

Backward runs the same way the other way round: the top gradient ``dy``
(and for MAX the forward's index bytes, one per output in the same NCHW
order) streams plane after plane into a one-channel
:class:`~fecaffe_hw.cores.pooling.PoolingBackward`, which scatter-adds a
plane into its scratch plane (``H * W`` sums) and streams it out in raster
order: the NCHW order of the bottom gradient ``dx``. The sums are kept
exact (``16 + clog2(overlap)`` bits) and requantised once, as
:func:`fecaffe_hw.fixedpoint.pooling.pool_backward` defines.

Window geometry is fixed when a line buffer is elaborated, while
``SET_GEOMETRY`` arrives at run time: the engine holds one line buffer (and
a MAX and/or AVE :class:`~fecaffe_hw.cores.pooling.Pooling` core, and with
``backward`` a :class:`~fecaffe_hw.cores.pooling.PoolingBackward` per kind)
per :class:`PoolGeometry` it is built for, and the command selects one.
"""

import dataclasses

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO

from fecaffe_hw.fixedpoint.pooling import overlap_count
from fecaffe_hw.fixedpoint.windows import window_geometry
from fecaffe_hw.runtime import isa

from .line_buffer import LineBuffer
from .memory_port import MAX_BURST_WORDS, engine_members, reservation_count
from .multiplier import registered_product
from .skid_buffer import SkidBuffer
from .pooling import Pooling, PoolingBackward, PoolKind

__all__ = ["PoolGeometry", "PoolEngine", "PoolCommand", "ELEMENT_WIDTH", "MAX_SHIFT"]

ELEMENT_WIDTH = 16
#: ``|shift|`` limit of the requantisation after pooling.
MAX_SHIFT = 15
_KINDS = {isa.PoolKind.MAX: PoolKind.MAX, isa.PoolKind.AVE: PoolKind.AVE}
#: Read bursts in flight at once (each one's destination FIFO is queued).
_READS_IN_FLIGHT = 8


@dataclasses.dataclass(frozen=True)
class PoolGeometry:
    """One pooling geometry a build supports (Caffe's ceil-mode output size):
    ``height x width`` input planes, ``kernel``/``stride``/``pad`` ints or
    ``(h, w)`` pairs, ``kinds`` the :class:`runtime.isa.PoolKind` s to build.
    The kernel area must be at most 256 (MAX indices are stored as bytes)."""

    height: int
    width: int
    kernel: object
    stride: object = 1
    pad: object = 0
    kinds: tuple = (isa.PoolKind.MAX, isa.PoolKind.AVE)

    def __post_init__(self):
        kernel, stride, pad, out = window_geometry(
            width=self.width, height=self.height, channels=1, kernel=self.kernel,
            stride=self.stride, pad=self.pad, ceil_mode=True)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "pad", pad)
        if kernel[0] * kernel[1] > 256:
            raise ValueError(f"Pooling kernel {kernel[0]}x{kernel[1]} has more than 256 "
                             f"positions: its MAX index does not fit a byte")
        try:
            kinds = tuple(dict.fromkeys(isa.PoolKind(k) for k in self.kinds))
        except (ValueError, TypeError):
            raise ValueError(f"Pooling kinds must be runtime.isa.PoolKind values, "
                             f"not {self.kinds!r}") from None
        if not kinds:
            raise ValueError("A pooling geometry needs at least one kind")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "_out", out)

    out_size = property(lambda self: self._out)
    plane = property(lambda self: self.height * self.width)
    out_plane = property(lambda self: self._out[0] * self._out[1])

    @classmethod
    def from_layer(cls, rec):
        """The geometry of a plan layer record (``type`` Pooling)."""
        kind = isa.PoolKind.MAX if rec["pool"] == "MAX" else isa.PoolKind.AVE
        return cls(height=rec["in_hw"][0], width=rec["in_hw"][1], kernel=tuple(rec["kernel"]),
                   stride=tuple(rec["stride"]), pad=tuple(rec["pad"]), kinds=(kind,))


def PoolCommand(geometries):
    """Payload of ``PoolEngine.cmd``: the geometry index and the command's
    fields; ``total`` is the blob's channel count (SET_GEOMETRY ``channels``),
    ``backward`` selects POOL_BWD (``src`` the top gradient, ``dst`` the
    bottom gradient, ``index_addr`` the MAX indices read)."""
    return data.StructLayout({
        "geometry": range(max(1, len(geometries))),
        "kind": 1,
        "backward": 1,
        "src": 32, "dst": 32, "index_addr": 32,
        "write_index": 1,
        "c0": 16, "channels": 16, "n0": 16, "images": 16, "total": 16,
        "shift": signed(8),
    })


def _backward_shape(geometry):
    # Exact sums of int16 gradients: at most overlap_count windows meet at a pixel.
    return signed(ELEMENT_WIDTH + (overlap_count(geometry.kernel, geometry.stride) - 1)
                  .bit_length())


def _requantise_scale(shift):
    """``(scale, left)`` for ``shift``: the multiplier and the direction.

    The requantiser computes ``saturate(shift_round(value, shift), 16)`` for
    ``shift[:4]`` right (``shift >= 0``) or ``(-shift)[:4]`` left as one
    multiply by a power of two: ``shift`` is fixed for a whole command, so a
    DSP stands in for two wide variable shifters. A right shift by ``r`` is a
    multiply by ``2**(15 - r)`` whose low 15 bits are the fraction to round.
    The engine registers the scale and the product ``value * scale`` (of
    ``_product_shape(value)``) before :func:`_requantise_product`."""
    left = shift < 0
    return (Mux(left, Const(1, MAX_SHIFT + 1) << (-shift)[:4],
                Const(1 << MAX_SHIFT, MAX_SHIFT + 1) >> shift[:4]), left)


def _product_shape(value):
    return signed(len(value) + MAX_SHIFT + 2)


def _requantise_product(product, left):
    """The rounded, saturated 16-bit result from ``value * scale``."""
    whole = product[MAX_SHIFT:].as_signed()
    fraction = product[:MAX_SHIFT]
    # Above half, or exactly half and odd: bit tests, no compare.
    up = fraction[-1] & ((fraction[:-1] != 0) | whole[0])
    # |whole| <= |value| on a right shift: one bit more holds the rounding.
    rounded = (whole + up)[:len(product) - MAX_SHIFT - 1].as_signed()

    # Saturate by sign bits: a value fits 16 bits when its bits 15 and up
    # agree; only the 16 result bits pass the left/right mux.
    def fits(v):
        top = v[ELEMENT_WIDTH - 1:]
        return (top == 0) | (top == (1 << len(top)) - 1)
    ok = Mux(left, fits(product), fits(rounded))
    negative = Mux(left, product[-1], rounded[-1])
    limit = Mux(negative, Const(1 << (ELEMENT_WIDTH - 1), ELEMENT_WIDTH),
                Const((1 << (ELEMENT_WIDTH - 1)) - 1, ELEMENT_WIDTH))
    return Mux(ok, Mux(left, product[:ELEMENT_WIDTH], rounded[:ELEMENT_WIDTH]),
               limit).as_signed()


def _countdown(width):
    """A down counter stored as its one's complement (counting up): on the
    Xilinx carry chain a decrement costs an inverter per bit, an increment
    none. ``~n`` loads ``n``, ``+ 1`` takes one away, ``init`` reads 0."""
    return Signal(width, init=(1 << width) - 1)


def _exceeds(value, limit):
    """``value > limit`` for a constant ``limit``: an OR of the high bits and
    a narrow compare, not a carry chain (with an inverter per bit) the full
    width of ``value``."""
    n = limit.bit_length()
    return (value[n:] != 0) | (value[:n] > limit)


#: A 16-bit :func:`_countdown` run counter on its last run (1 left).
_LAST = 0xFFFF ^ 1


class PoolEngine(wiring.Component):
    """``POOL_FWD`` and ``POOL_BWD`` from tensor memory to tensor memory (see
    the module docstring).

    Forward: for each image ``n`` of ``n0 .. n0 + images``, reads channels
    ``c0 .. c0 + channels`` (``H * W`` elements each) at ``src + 2 * ((n *
    total + c) * H * W)``, pools them (bit-exact with
    ``fixedpoint.pooling.max_pool`` / ``ave_pool``), requantises by ``shift``
    (right: round half to even; left: saturating) and writes them NCHW at
    ``dst``; with ``write_index`` the MAX argmax (``ky * kw + kx``) as one
    byte per output at ``index_addr``.

    Backward: reads the ``OH * OW`` top gradients of each plane (and, MAX,
    their index bytes at ``index_addr + (n * total + c) * OH * OW``) and
    writes the ``H * W`` bottom gradients NCHW at ``dst``, bit-exact with
    ``fixedpoint.pooling.pool_backward``.

    Ports: ``cmd`` (In stream of :func:`PoolCommand`, taken while idle),
    ``done`` (registered pulse per command, the cycle after ``busy``
    falls; ``fault`` with it if a burst faulted),
    ``busy``, ``mem`` (``Out(MemoryPort())``), ``r_word``/``w_word``/``mem_stall``.

    The memory port has no byte enables: outputs must start and end on whole
    words (:meth:`from_isa` checks); inputs may start on any element (byte,
    for indices). Reads are issued only with room to take them and writes
    only with their data buffered, so the port never waits on the engine.
    Commands go to the port from registers, at most every other cycle.
    Throughput forward: one input pixel per cycle (the line buffer's rate;
    the port delivers two per cycle); latency memory latency plus the line
    buffer's fill and the pooling core's latency, plus seven setup cycles per
    command, the run starts, two skid buffers (pixel, result) and three
    requantising stages. Backward, per plane: MAX one gradient per
    cycle, AVE ``kh * kw + 2`` cycles per gradient, then ``H * W + 2`` cycles
    to stream the plane out (the next plane's gradients wait meanwhile).

    Parameters: ``geometries`` (a non-empty tuple of :class:`PoolGeometry`;
    those of one size are merged, their kinds joined),
    ``chunk_words`` (burst length 1..256), ``backward`` (build the POOL_BWD
    cores: a scratch plane of ``H * W`` sums of ``16 + clog2(overlap)``
    bits per geometry and kind, and for AVE a divider).
    """

    def __init__(self, *, geometries, chunk_words=16, backward=True):
        geometries = tuple(geometries)
        if not geometries or not all(isinstance(g, PoolGeometry) for g in geometries):
            raise ValueError(f"Pool engine geometries must be a non-empty tuple of "
                             f"PoolGeometry, not {geometries!r}")
        # One line buffer per size: layers of one size (a plan's MAX and AVE
        # layers alike) share it, with the union of their kinds.
        merged = {}
        for g in geometries:
            key = (g.height, g.width, g.kernel, g.stride, g.pad)
            merged[key] = merged.get(key, ()) + g.kinds
        geometries = tuple(PoolGeometry(*key[:2], *key[2:], kinds=kinds)
                           for key, kinds in merged.items())
        if (isinstance(chunk_words, bool) or not isinstance(chunk_words, int)
                or not 1 <= chunk_words <= MAX_BURST_WORDS):
            raise ValueError(f"Pool engine chunk length must be an integer in "
                             f"[1, {MAX_BURST_WORDS}], not {chunk_words!r}")
        if not isinstance(backward, bool):
            raise ValueError(f"Pool engine backward must be a bool, not {backward!r}")
        self._geometries, self._chunk, self._backward = geometries, chunk_words, backward
        super().__init__(engine_members(PoolCommand(geometries)))

    geometries = property(lambda self: self._geometries)
    chunk_words = property(lambda self: self._chunk)
    backward = property(lambda self: self._backward)

    def match(self, m, fields):
        """Decode ``SET_GEOMETRY`` fields (expressions): ``(index, supported)``,
        ``supported`` if a built geometry has exactly these sizes, at least
        one channel and image, and ``group`` 0 or 1."""
        index = Signal(range(max(1, len(self._geometries))), name="pool_geometry_index")
        hits = []
        for i, g in enumerate(self._geometries):
            hit = Const(1)
            for name, value in (("height", g.height), ("width", g.width),
                                ("kernel_h", g.kernel[0]), ("kernel_w", g.kernel[1]),
                                ("stride_h", g.stride[0]), ("stride_w", g.stride[1]),
                                ("pad_h", g.pad[0]), ("pad_w", g.pad[1]),
                                ("out_h", g.out_size[0]), ("out_w", g.out_size[1])):
                hit &= fields[name] == value
            hits.append(hit)
            with m.If(hit):
                m.d.comb += index.eq(i)
        supported = (Cat(hits).any() & (fields["channels"] != 0) & (fields["images"] != 0)
                     & (fields["group"] <= 1))
        return index, supported

    def from_isa(self, m, *, geometry, total, batch, func, flags, src, dst, index_addr,
                 c0, channels, n0, images, shift, backward=0):
        """Decode an ISA ``POOL_FWD`` (``backward`` 0) or ``POOL_BWD``
        (``backward`` 1, e.g. ``opcode == Opcode.POOL_BWD``) command
        (expressions; ``geometry``, ``total``, ``batch`` from the last
        SET_GEOMETRY) into a :func:`PoolCommand` signal; returns ``(command,
        legal)``.

        Illegal: a kind the selected geometry was not built for (any
        backward in an engine built without ``backward``); no channel or
        image, or tiles past ``total`` channels / ``batch`` images; an
        address not word aligned; ``|shift| > 15``; outputs (and, written,
        indices: forward with ``TRAINING``, MAX and a non-zero
        ``index_addr``) not starting and ending on 32-bit words in each
        image; a MAX backward with ``index_addr`` 0 (forward's "no indices").
        """
        cmd = Signal(PoolCommand(self._geometries), name="pool_cmd")
        backward = Value.cast(backward).bool()
        is_max = func == isa.PoolKind.MAX
        write_index = (~backward & (flags & isa.Flag.TRAINING).any() & is_max
                       & (index_addr != 0))
        m.d.comb += [
            cmd.geometry.eq(geometry), cmd.kind.eq(func[0]), cmd.backward.eq(backward),
            cmd.src.eq(src), cmd.dst.eq(dst),
            cmd.index_addr.eq(index_addr), cmd.write_index.eq(write_index),
            cmd.c0.eq(c0), cmd.channels.eq(channels), cmd.n0.eq(n0), cmd.images.eq(images),
            cmd.total.eq(total), cmd.shift.eq(shift),
        ]
        kind_ok = Signal(name="pool_kind_ok")
        out_plane = Signal(16, name="pool_out_plane")
        dst_plane = Signal(16, name="pool_dst_plane")
        with m.Switch(geometry):
            for i, g in enumerate(self._geometries):
                with m.Case(i):
                    m.d.comb += [kind_ok.eq(Cat(func == k for k in g.kinds).any()),
                                 out_plane.eq(g.out_plane),
                                 dst_plane.eq(Mux(backward, g.plane, g.out_plane))]

        # Alignment depends only on the low two bits of each product.
        def low2(value):
            return value[:2]
        base = low2(low2(n0) * low2(total) + low2(c0))       # (n0 * total + c0) mod 4

        def words(plane):
            q = low2(plane)
            return (low2(base * q), low2(low2(channels) * q), low2(low2(total) * q))
        one_image = images == 1
        first, run, step = words(dst_plane)
        out_ok = ~first[0] & ~run[0] & (one_image | ~step[0])
        first, run, step = words(out_plane)
        idx_ok = (first == 0) & (run == 0) & (one_image | (step == 0))
        bwd_ok = Const(1) if self._backward else Const(0)
        legal = (kind_ok & (func <= 1) & (channels != 0) & (images != 0)
                 & (c0 + channels <= total) & (n0 + images <= batch)
                 & (src[:2] == 0) & (dst[:2] == 0) & (index_addr[:2] == 0)
                 & (shift >= -MAX_SHIFT) & (shift <= MAX_SHIFT)
                 & out_ok & (~write_index | idx_ok)
                 & (~backward | (bwd_ok & (~is_max | (index_addr != 0)))))
        return cmd, legal

    def elaborate(self, platform):
        m = Module()
        ew, ch = ELEMENT_WIDTH, self._chunk
        depth = 2 * ch
        mem = self.mem
        geoms = self._geometries

        cur = Signal(PoolCommand(geoms))
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]
        bwd = cur.backward
        read_index = bwd & (cur.kind == int(isa.PoolKind.MAX))

        # ---- per-command sizes (elements), set up the cycle after the command
        plane = Signal(16)
        out_plane = Signal(16)
        with m.Switch(cur.geometry):
            for i, g in enumerate(geoms):
                with m.Case(i):
                    m.d.comb += [plane.eq(g.plane), out_plane.eq(g.out_plane)]
        # Planes read and written: backward reads the pooled size, writes the full.
        src_plane = Mux(bwd, out_plane, plane)
        dst_plane = Mux(bwd, plane, out_plane)
        # Seven setup cycles (``phase`` one-hot). The address arithmetic goes
        # through free-running two-cycle multipliers (:class:`Multiplier`:
        # on the ECP5 the MULT18X18D's own registers, so a multiplier placed
        # far away costs no cycle), operands held still for them:
        # 0: total into the step multipliers, n0 * total, cursors load their
        #    origins; 1: channels into them; 2: steps (total * plane) out,
        #    + c0; 3: runs (channels * plane) out, base into the offset
        #    multipliers; 5: their halves' products out, summed; 6: cursors
        #    += the first image's offsets.
        setup = Signal()
        phase = Signal(7)
        # 16-bit channel counts times the largest plane bound every run and
        # step (the 32-bit address space bounds them too).
        run_bits = min(32, 16 + max(max(g.plane, g.out_plane) for g in geoms).bit_length())
        in_step, out_step = Signal(run_bits), Signal(run_bits)   # total * plane: between images
        in_run, out_run = Signal(run_bits), Signal(run_bits)     # channels * plane: one image

        factor = Signal(16)
        m.d.comb += factor.eq(Mux(phase[0], cur.total, cur.channels))
        src_product = registered_product(m, "src_plane_mult", factor, src_plane)
        dst_product = registered_product(m, "dst_plane_mult", factor, dst_plane)
        with m.If(phase[2]):
            m.d.sync += [in_step.eq(src_product), out_step.eq(dst_product)]
        with m.If(phase[3]):
            m.d.sync += [in_run.eq(src_product), out_run.eq(dst_product)]

        def run_cursor(name, origin, lane_bits):
            # The origin's word address plus the element index of a run's
            # first element, in one register (``lane_bits`` element bits below
            # the word address; 0: a plain byte address): the run's first
            # word address is then a slice, not a sum. Loaded with the origin
            # in the first setup cycle, the base added in the last, a step
            # per image after, all through one adder.
            cursor = Signal(32 if lane_bits == 0 else 30 + lane_bits, name=f"{name}_cursor")
            step = Signal(32, name=f"{name}_addend")
            load = origin if lane_bits == 0 else Cat(Const(0, lane_bits), origin[2:])
            with m.If(phase[0]):
                m.d.sync += cursor.eq(load)
            if lane_bits == 0:
                address = cursor
            else:
                address = Cat(origin[:2], cursor[lane_bits:])
            return cursor, step, address

        # ---- read side: per image, the words holding its run of elements,
        # of the input map (rd) and, MAX backward, of the index bytes (ir).
        in_fifo = m.submodules.in_fifo = SyncFIFO(width=32, depth=depth)
        rd_elem, rd_step, rd_first = run_cursor("rd", cur.src, 1)
        rd_runs = _countdown(16)
        rd_left_n = _countdown(run_bits)
        rd_left = Signal(run_bits)       # words of this run not yet requested
        m.d.comb += rd_left.eq(~rd_left_n)
        rd_addr = Signal(32)
        rd_start = Signal()              # compute this run's address next cycle
        # Burst sizes, and whether a burst ends its run, registered with the
        # requests (see "command channel").
        rd_chunk, rd_ends = Signal(range(ch + 1)), Signal()
        rd_chunk_next = Mux(_exceeds(rd_left, ch), ch, rd_left)
        m.d.sync += [rd_chunk.eq(rd_chunk_next),
                     rd_ends.eq(~_exceeds(rd_left, ch) & (rd_runs != _LAST))]
        reserve, release = Signal(), Signal()
        reserved = reservation_count(m, depth, reserve, rd_chunk, release)
        with m.If(rd_start):
            m.d.sync += [rd_start.eq(0), rd_addr.eq(rd_first),
                         rd_left_n.eq(~((rd_elem[0] + in_run + 1) >> 1))]

        ix_fifo = m.submodules.ix_fifo = SyncFIFO(width=32, depth=depth)
        ir_elem, ir_step, ir_first = run_cursor("ir", cur.index_addr, 2)
        ir_runs = _countdown(16)
        ir_left_n = _countdown(run_bits)
        ir_left = Signal(run_bits)
        m.d.comb += ir_left.eq(~ir_left_n)
        ir_addr = Signal(32)
        ir_start = Signal()
        ir_chunk, ir_ends = Signal(range(ch + 1)), Signal()
        ir_chunk_next = Mux(_exceeds(ir_left, ch), ch, ir_left)
        m.d.sync += [ir_chunk.eq(ir_chunk_next),
                     ir_ends.eq(~_exceeds(ir_left, ch) & (ir_runs != _LAST))]
        ix_reserve, ix_release = Signal(), Signal()
        ix_reserved = reservation_count(m, depth, ix_reserve, ir_chunk, ix_release,
                                        prefix="ix_")
        with m.If(ir_start):
            m.d.sync += [ir_start.eq(0), ir_addr.eq(ir_first),
                         ir_left_n.eq(~((ir_elem[:2] + in_run + 3) >> 2))]

        # Each read burst's destination, in command order: the port returns
        # read data in that order.
        tags = m.submodules.read_tags = SyncFIFO(width=10, depth=_READS_IN_FLIGHT)
        reading = busy & ~setup & tags.w_rdy
        want_rd, want_ir = Signal(), Signal()
        # Room for a whole chunk, whatever this burst's size: a compare of
        # the count with a constant, not the burst size's compare, mux and
        # an add in front of it (a run's last, shorter burst may wait for
        # room it does not need; the FIFO drains meanwhile).
        want_rd_next = (reading & ~rd_start & (rd_left != 0) & (reserved <= depth - ch))
        want_ir_next = (reading & ~ir_start & (ir_left != 0) & (ix_reserved <= depth - ch))
        prefer_ir = Signal()             # alternate the two when both want a burst
        read_chunk = Signal(9)

        # ---- write side: outputs and indices, per image one run each -------
        out_fifo = m.submodules.out_fifo = SyncFIFO(width=32, depth=depth)
        idx_fifo = m.submodules.idx_fifo = SyncFIFO(width=32, depth=depth)
        wo_runs, wi_runs = _countdown(16), _countdown(16)
        wo_left_n, wi_left_n = _countdown(run_bits), _countdown(run_bits)
        wo_left, wi_left = Signal(run_bits), Signal(run_bits)   # words not yet requested
        m.d.comb += [wo_left.eq(~wo_left_n), wi_left.eq(~wi_left_n)]
        wo_addr, wi_addr = Signal(32), Signal(32)
        wo_start, wi_start = Signal(), Signal()
        wo_elem, wo_step, wo_first = run_cursor("wo", cur.dst, 1)
        wi_elem, wi_step, wi_first = run_cursor("wi", cur.index_addr, 0)
        with m.If(wo_start):
            m.d.sync += [wo_start.eq(0), wo_addr.eq(wo_first),
                         wo_left_n.eq(~(out_run >> 1))]
        with m.If(wi_start):
            m.d.sync += [wi_start.eq(0), wi_addr.eq(wi_first),
                         wi_left_n.eq(~(out_run >> 2))]
        wo_chunk, wo_ends = Signal(range(ch + 1)), Signal()
        wi_chunk, wi_ends = Signal(range(ch + 1)), Signal()
        wo_chunk_next = Mux(_exceeds(wo_left, ch), ch, wo_left)
        wi_chunk_next = Mux(_exceeds(wi_left, ch), ch, wi_left)
        m.d.sync += [wo_chunk.eq(wo_chunk_next), wi_chunk.eq(wi_chunk_next),
                     wo_ends.eq(~_exceeds(wo_left, ch) & (wo_runs != _LAST)),
                     wi_ends.eq(~_exceeds(wi_left, ch) & (wi_runs != _LAST))]
        # One write burst's data in flight at a time, from one FIFO.
        w_left = Signal(range(ch + 1))
        w_index = Signal()
        idle_w = busy & ~setup & (w_left == 0)
        want_out, want_idx = Signal(), Signal()
        want_out_next = (idle_w & ~wo_start & (wo_left != 0)
                         & (out_fifo.level >= wo_chunk_next))
        want_idx_next = (idle_w & ~wi_start & (wi_left != 0)
                         & (idx_fifo.level >= wi_chunk_next))

        # ---- command channel: reads first, then output, then index writes --
        # Commands issued and not yet answered: one up/down counter, wrapping
        # as a 32-bit issued - answered difference would.
        pending = Signal(32)
        fault = Signal()
        # The request on offer: reads first (alternating between the two
        # when both want one), then output, then index writes. The choice is
        # held while offered and not taken, so a request that rises
        # meanwhile (a reservation released, say) cannot change the command
        # the port sees.
        want_read = want_rd | want_ir
        choice_now = Cat(want_rd & (~want_ir | ~prefer_ir), want_ir & (~want_rd | prefer_ir),
                         ~want_read & want_out, ~want_read & ~want_out & want_idx)
        choice, held_choice, held = Signal(4), Signal(4), Signal()
        m.d.comb += choice.eq(Mux(held, held_choice, choice_now))
        m.d.sync += [held.eq(mem.cmd.valid & ~mem.cmd.ready), held_choice.eq(choice)]
        pick_ir, read_chosen = choice[1], choice[:2].any()
        m.d.comb += read_chunk.eq(Mux(pick_ir, ir_chunk, rd_chunk))
        with m.If(read_chosen):
            m.d.comb += [mem.cmd.valid.eq(1), mem.cmd.payload.addr.eq(Mux(pick_ir, ir_addr, rd_addr)),
                         mem.cmd.payload.words.eq(read_chunk)]
        with m.Elif(choice[2]):
            m.d.comb += [mem.cmd.valid.eq(1), mem.cmd.payload.addr.eq(wo_addr),
                         mem.cmd.payload.words.eq(wo_chunk), mem.cmd.payload.write.eq(1)]
        with m.Elif(choice[3]):
            m.d.comb += [mem.cmd.valid.eq(1), mem.cmd.payload.addr.eq(wi_addr),
                         mem.cmd.payload.words.eq(wi_chunk), mem.cmd.payload.write.eq(1)]
        taken = mem.cmd.valid & mem.cmd.ready
        # Requests are decided a cycle ahead, into registers, so the port's
        # command and the counter updates a take enables start from flops.
        # What a request was decided on can change meanwhile only by a take
        # (hence none in the cycle after one: a request every other cycle,
        # ample for bursts of two words or more), by a run start (which
        # holds its requests off), or in the request's favour: FIFO room
        # and levels, the tag FIFO's room, only grow between takes.
        m.d.sync += [want_rd.eq(want_rd_next & ~taken), want_ir.eq(want_ir_next & ~taken),
                     want_out.eq(want_out_next & ~taken), want_idx.eq(want_idx_next & ~taken)]
        m.d.comb += [tags.w_data.eq(Cat(read_chunk, pick_ir)),
                     tags.w_en.eq(taken & read_chosen)]
        with m.If(taken):
            with m.If(read_chosen):
                m.d.sync += prefer_ir.eq(~pick_ir)
                with m.If(pick_ir):
                    m.d.comb += ix_reserve.eq(1)
                    m.d.sync += [ir_left_n.eq(ir_left_n + ir_chunk),
                                 ir_addr.eq(ir_addr + (ir_chunk << 2))]
                    with m.If(ir_ends):
                        m.d.sync += [ir_runs.eq(ir_runs + 1), ir_elem.eq(ir_elem + ir_step),
                                     ir_start.eq(1)]
                with m.Else():
                    m.d.comb += reserve.eq(1)
                    m.d.sync += [rd_left_n.eq(rd_left_n + rd_chunk),
                                 rd_addr.eq(rd_addr + (rd_chunk << 2))]
                    with m.If(rd_ends):
                        m.d.sync += [rd_runs.eq(rd_runs + 1), rd_elem.eq(rd_elem + rd_step),
                                     rd_start.eq(1)]
            with m.Elif(choice[2]):
                m.d.sync += [w_left.eq(wo_chunk), w_index.eq(0),
                             wo_left_n.eq(wo_left_n + wo_chunk),
                             wo_addr.eq(wo_addr + (wo_chunk << 2))]
                with m.If(wo_ends):
                    m.d.sync += [wo_runs.eq(wo_runs + 1), wo_elem.eq(wo_elem + wo_step),
                                 wo_start.eq(1)]
            with m.Else():
                m.d.sync += [w_left.eq(wi_chunk), w_index.eq(1),
                             wi_left_n.eq(wi_left_n + wi_chunk),
                             wi_addr.eq(wi_addr + (wi_chunk << 2))]
                with m.If(wi_ends):
                    m.d.sync += [wi_runs.eq(wi_runs + 1), wi_elem.eq(wi_elem + wi_step),
                                 wi_start.eq(1)]
        m.d.comb += [mem.w.valid.eq((w_left != 0) & Mux(w_index, idx_fifo.r_rdy, out_fifo.r_rdy)),
                     mem.w.payload.eq(Mux(w_index, idx_fifo.r_data, out_fifo.r_data))]
        w_word = mem.w.valid & mem.w.ready
        m.d.comb += [out_fifo.r_en.eq(w_word & ~w_index), idx_fifo.r_en.eq(w_word & w_index)]
        with m.If(w_word):
            m.d.sync += w_left.eq(w_left - 1)

        m.d.comb += mem.resp.ready.eq(1)
        answer = mem.resp.valid
        # +1, -1 (all ones) or 0 as one addend, so one adder.
        m.d.sync += pending.eq(pending + Cat(taken ^ answer, (answer & ~taken).replicate(31)))
        with m.If(answer):
            with m.If(mem.resp.payload.fault):
                m.d.sync += fault.eq(1)

        # Reads are requested only with room reserved: r is always taken once
        # its burst's tag is visible.
        r_left = Signal(9)               # words of the current read burst still due
        r_dest = Signal()
        head = r_left == 0
        dest = Mux(head, tags.r_data[9], r_dest)
        m.d.comb += mem.r.ready.eq(busy & (~head | tags.r_rdy))
        r_word = mem.r.valid & mem.r.ready
        m.d.comb += [in_fifo.w_data.eq(mem.r.payload), ix_fifo.w_data.eq(mem.r.payload),
                     in_fifo.w_en.eq(r_word & ~dest), ix_fifo.w_en.eq(r_word & dest),
                     tags.r_en.eq(r_word & head)]
        with m.If(r_word):
            m.d.sync += [r_left.eq(Mux(head, tags.r_data[:9], r_left) - 1), r_dest.eq(dest)]

        # ---- unpack: one element per beat, skipping a leading half word ----
        up_lane = Signal()
        up_left = _countdown(run_bits)   # elements of this run still to send, complemented
        up_none = up_left.init
        up_elem = Signal(1)              # only its half-word lane matters
        up_runs = _countdown(16)
        up_start = Signal()
        with m.If(up_start):
            m.d.sync += [up_start.eq(0), up_lane.eq(up_elem[0]), up_left.eq(~in_run)]
        fetched = stream.Signature(signed(ew)).create()
        m.d.comb += [fetched.valid.eq(busy & ~up_start & ~setup & (up_left != up_none)
                                      & in_fifo.r_rdy),
                     fetched.payload.eq(in_fifo.r_data.word_select(up_lane, ew))]
        # A skid buffer between the FIFO's read and the cores (a multiplier's
        # input, backward AVE); the index bytes join it at the cores. Its
        # ready is a register: the selected line buffer's or backward core's
        # ready does not run on into the unpack counters and the FIFO's
        # read (17-18 ns placed at 10x11 on ECP5, when this was a plain
        # pipeline register).
        m.submodules.pixel_skid = pixel_skid = SkidBuffer(signed(ew))
        wiring.connect(m, fetched, pixel_skid.i)
        pixel = pixel_skid.o
        sent = fetched.valid & fetched.ready
        pop = sent & (up_lane | (up_left == up_none - 1))
        m.d.comb += [in_fifo.r_en.eq(pop), release.eq(pop)]
        with m.If(sent):
            m.d.sync += [up_lane.eq(~up_lane), up_left.eq(up_left + 1)]
            with m.If((up_left == up_none - 1) & (up_runs != _LAST)):
                m.d.sync += [up_runs.eq(up_runs + 1), up_elem.eq(up_elem + in_step),
                             up_start.eq(1)]

        # Index bytes, MAX backward: one per gradient, skipping leading bytes.
        ix_lane = Signal(2)
        ix_left = _countdown(run_bits)
        ix_none = ix_left.init
        ix_elem = Signal(2)              # only its byte lane matters
        ix_runs = _countdown(16)
        ix_start = Signal()
        with m.If(ix_start):
            m.d.sync += [ix_start.eq(0), ix_lane.eq(ix_elem[:2]), ix_left.eq(~in_run)]
        ix_valid = busy & ~ix_start & ~setup & (ix_left != ix_none) & ix_fifo.r_rdy
        ix_byte = ix_fifo.r_data.word_select(ix_lane, 8)
        ix_sent = pixel.valid & pixel.ready & read_index
        ix_pop = ix_sent & ((ix_lane == 3) | (ix_left == ix_none - 1))
        m.d.comb += [ix_fifo.r_en.eq(ix_pop), ix_release.eq(ix_pop)]
        with m.If(ix_sent):
            m.d.sync += [ix_lane.eq(ix_lane + 1), ix_left.eq(ix_left + 1)]
            with m.If((ix_left == ix_none - 1) & (ix_runs != _LAST)):
                m.d.sync += [ix_runs.eq(ix_runs + 1), ix_elem.eq(ix_elem + in_step),
                             ix_start.eq(1)]

        # ---- a line buffer per geometry, a pooling core per kind -----------
        res_width = max([ew] + ([_backward_shape(g).width for g in geoms]
                                if self._backward else []))
        result = stream.Signature(signed(res_width)).create()   # before requantising
        index = Signal(8)                                       # forward MAX argmax
        for i, g in enumerate(geoms):
            params = dict(width=g.width, height=g.height, channels=1, kernel=g.kernel,
                          stride=g.stride, pad=g.pad)
            lb = m.submodules[f"line_buffer_{i}"] = LineBuffer(
                **params, data_shape=signed(ew), ceil_mode=True)
            sel = cur.geometry == i
            m.d.comb += lb.pixels.payload.eq(pixel.payload)
            with m.If(sel & ~bwd):
                m.d.comb += [lb.pixels.valid.eq(pixel.valid), pixel.ready.eq(lb.pixels.ready)]
            for kind in g.kinds:
                core = m.submodules[f"pool_{i}_{kind.name.lower()}"] = Pooling(
                    kind=_KINDS[kind], **params, data_shape=signed(ew))
                use = sel & ~bwd & (cur.kind == int(kind))
                m.d.comb += core.windows.payload.eq(lb.windows.payload)
                with m.If(use):
                    m.d.comb += [core.windows.valid.eq(lb.windows.valid),
                                 lb.windows.ready.eq(core.windows.ready),
                                 result.valid.eq(core.pooled.valid),
                                 core.pooled.ready.eq(result.ready),
                                 result.payload.eq(core.pooled.payload.value)]
                    if kind == isa.PoolKind.MAX:
                        m.d.comb += index.eq(core.pooled.payload.index)
                if not self._backward:
                    continue
                back = m.submodules[f"pool_bwd_{i}_{kind.name.lower()}"] = PoolingBackward(
                    kind=_KINDS[kind], **params, data_shape=_backward_shape(g))
                use = sel & bwd & (cur.kind == int(kind))
                m.d.comb += back.grads.payload.grad.eq(pixel.payload)
                if kind == isa.PoolKind.MAX:
                    # A gradient waits for its index byte, and the byte for it.
                    m.d.comb += back.grads.payload.index.eq(ix_byte)
                    joined = ix_valid
                else:
                    joined = Const(1)
                with m.If(use):
                    m.d.comb += [back.grads.valid.eq(pixel.valid & joined),
                                 pixel.ready.eq(back.grads.ready & joined),
                                 result.valid.eq(back.bottom.valid),
                                 back.bottom.ready.eq(result.ready),
                                 result.payload.eq(back.bottom.payload)]

        # ---- requantise, pack two values (four indices) per word -----------
        # Three stages, moving together: the pooled value, its product by the
        # command's scale (set up with it), then the rounded, saturated
        # value: the cores' output logic (the backward clamp), the DSP and the
        # rounding carry chain each get their own cycle.
        scale, left = Signal(MAX_SHIFT + 1), Signal()
        cur_scale, cur_left = _requantise_scale(cur.shift)
        with m.If(phase[0]):
            m.d.sync += [scale.eq(cur_scale), left.eq(cur_left)]
        # The cores' results enter through a skid buffer: the stages' advance
        # (the output FIFOs' room) reaches no core, line buffer or their
        # counters, placed wherever the geometries' logic is.
        result_skid = m.submodules.result_skid = SkidBuffer(data.StructLayout({
            "value": result.payload.shape(), "index": 8}))
        m.d.comb += [result_skid.i.valid.eq(result.valid),
                     result_skid.i.payload.value.eq(result.payload),
                     result_skid.i.payload.index.eq(index),
                     result.ready.eq(result_skid.i.ready)]
        entering = result_skid.o
        pooled = Signal.like(result.payload)
        product = Signal(_product_shape(result.payload))
        value = Signal(signed(ew))
        index0, index1, index2 = Signal(8), Signal(8), Signal(8)
        q_valid0, q_valid1, q_valid2 = Signal(), Signal(), Signal()
        q_ready = out_fifo.w_rdy & (~cur.write_index | idx_fifo.w_rdy)
        q_advance = ~q_valid2 | q_ready
        m.d.comb += entering.ready.eq(q_advance)
        with m.If(q_advance):
            m.d.sync += [q_valid0.eq(entering.valid), pooled.eq(entering.payload.value),
                         index0.eq(entering.payload.index),
                         q_valid1.eq(q_valid0), product.eq(pooled * scale),
                         index1.eq(index0),
                         q_valid2.eq(q_valid1), value.eq(_requantise_product(product, left)),
                         index2.eq(index1)]
        lo_half = Signal(ew)
        idx_bytes = Signal(24)
        o_lane = Signal()
        i_lane = Signal(2)
        index = index2
        m.d.comb += [out_fifo.w_data.eq(Cat(lo_half, value)),
                     idx_fifo.w_data.eq(Cat(idx_bytes, index))]
        got = q_valid2 & q_ready
        m.d.comb += [out_fifo.w_en.eq(got & o_lane),
                     idx_fifo.w_en.eq(got & cur.write_index & (i_lane == 3))]
        with m.If(got):
            m.d.sync += [o_lane.eq(~o_lane), lo_half.eq(value), i_lane.eq(i_lane + 1),
                         idx_bytes.eq(Cat(idx_bytes[8:], index))]

        # ---- command life cycle -------------------------------------------
        m.d.sync += phase.eq(phase << 1)
        with m.If(phase[-1]):
            m.d.sync += setup.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            c = self.cmd.payload
            bwd_max = c.backward & (c.kind == int(isa.PoolKind.MAX))
            m.d.sync += [cur.eq(c), busy.eq(1), setup.eq(1), phase.eq(1),
                         rd_runs.eq(~c.images), up_runs.eq(~c.images),
                         ir_runs.eq(~Mux(bwd_max, c.images, 1)),
                         ix_runs.eq(~Mux(bwd_max, c.images, 1)),
                         wo_runs.eq(~c.images), wi_runs.eq(~Mux(c.write_index, c.images, 1)),
                         rd_left_n.eq(rd_left_n.init), ir_left_n.eq(ir_left_n.init),
                         ix_left.eq(ix_none),
                         wo_left_n.eq(wo_left_n.init), wi_left_n.eq(wi_left_n.init),
                         pending.eq(0), fault.eq(0),
                         o_lane.eq(0), i_lane.eq(0)]
        # The first image's first plane, (n0 * total + c0) * plane: the
        # product of n0 and total (both held since the command) is out in
        # phase 2, base in 3, its products (base holds) from 6 on.
        n0_total = registered_product(m, "n0_total_mult", cur.n0, cur.total)
        base = Signal(32)
        with m.If(phase[2]):
            m.d.sync += base.eq(n0_total + cur.c0)
        # base is 32 bits: a Multiplier in slices, its products summed in a
        # register, valid from phase 6 on. Addresses are 32 bits.
        in_base = registered_product(m, "in_base_mult", base, plane)[:32]
        out_base = registered_product(m, "out_base_mult", base, out_plane)[:32]
        src_base, dst_base = Mux(bwd, out_base, in_base), Mux(bwd, in_base, out_base)
        m.d.comb += [rd_step.eq(Mux(setup, src_base, in_step)),
                     wo_step.eq(Mux(setup, dst_base, out_step)),
                     ir_step.eq(Mux(setup, out_base, in_step)),
                     wi_step.eq(Mux(setup, out_base, out_step))]
        with m.If(phase[6]):
            m.d.sync += [rd_elem.eq(rd_elem + rd_step), wo_elem.eq(wo_elem + wo_step),
                         ir_elem.eq(ir_elem + ir_step), wi_elem.eq(wi_elem + wi_step),
                         up_elem.eq(src_base), ix_elem.eq(out_base),
                         rd_start.eq(1), up_start.eq(1), wo_start.eq(1),
                         wi_start.eq(cur.write_index),
                         ir_start.eq(read_index), ix_start.eq(read_index)]
        # The end test is two cycles deep: each term (most a 16- or 32-bit
        # compare) is registered, then they are ANDed. Once every term holds
        # nothing moves until the next command, so a term a cycle old is
        # still true; ``busy``'s own term keeps a command accepted in the
        # cycle after a finish from ending at once. In one cycle the compares
        # and the AND were nine LUTs (14.8 ns routed on the 10x11 ULX3S plan).
        idle_terms = [
            busy, ~setup, ~rd_start, ~wo_start, ~wi_start, ~ir_start, ~ix_start, ~up_start,
            rd_left == 0, rd_runs == _LAST, wo_left == 0, wo_runs == _LAST,
            wi_left == 0, wi_runs == _LAST, w_left == 0, ir_left == 0, ir_runs == _LAST,
            ix_left == ix_none, ix_runs == _LAST, up_left == up_none, up_runs == _LAST,
            pending == 0,
        ]
        idle = Signal(len(idle_terms))
        m.d.sync += idle.eq(Cat(idle_terms))
        finished = busy & idle.all()
        # done and fault leave from flip-flops, a cycle after ``finished``:
        # the end test reached the sequencer's unit flags and the CSR
        # counters in the same cycle.
        m.d.sync += [self.done.eq(finished), self.fault.eq(finished & fault)]
        with m.If(finished):
            m.d.sync += busy.eq(0)

        m.d.comb += [self.r_word.eq(r_word), self.w_word.eq(w_word),
                     self.mem_stall.eq(busy & ~r_word & ~w_word)]
        return m
