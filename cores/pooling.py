"""MAX and AVE pooling, forward and backward, bit-exact with
:mod:`fecaffe_hw.fixedpoint.pooling`."""

import enum

from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fecaffe_hw.fixedpoint.pooling import AverageDivider, overlap_count
from .line_buffer import WindowParameters, inside_axis
from .multiplier import product_latency, registered_product

__all__ = ["PoolKind", "Pooling", "PoolingBackward", "AverageDivide"]


class PoolKind(enum.Enum):
    MAX = "max"
    AVE = "ave"


def _kind(kind):
    if isinstance(kind, PoolKind):
        return kind
    if isinstance(kind, str) and kind.upper() in PoolKind.__members__:
        return PoolKind[kind.upper()]
    raise ValueError(f"Pooling kind must be PoolKind.MAX or PoolKind.AVE, not {kind!r}")


def _signed_shape(data_shape):
    shape = Shape.cast(data_shape)
    if not shape.signed or not 2 <= shape.width <= 32:
        raise ValueError(f"Pooling data shape must be signed, 2 to 32 bits wide, "
                         f"not {data_shape!r}")
    return shape


def _index_width(area):
    return max(1, (area - 1).bit_length())


class _Geometry(WindowParameters):
    """Parameters and position logic shared by the forward and backward cores."""

    def _setup(self, kind, width, height, channels, kernel, stride, pad, data_shape):
        self._kind = _kind(kind)
        self._shape = _signed_shape(data_shape)
        self._set_geometry(width=width, height=height, channels=channels, kernel=kernel,
                           stride=stride, pad=pad, ceil_mode=True)

    kind = property(lambda self: self._kind)
    data_shape = property(lambda self: self._shape)

    @property
    def divider(self):
        """The model's divider: its reciprocal table and constants are the RTL's."""
        return AverageDivider(self.area, self._shape.width)

    def _positions(self, m, step):
        """Output position counters advanced by ``step``; returns ``(y0, x0, c,
        last)``: the window origin in padded coordinates, the channel, and
        whether this is the frame's last position."""
        (sh, sw), (oh, ow) = self._stride, self._out_size
        ox, oy = Signal(range(ow)), Signal(range(oh))
        c = Signal(range(self._channels))
        y0 = Signal(range((oh - 1) * sh + 1))
        x0 = Signal(range((ow - 1) * sw + 1))
        with m.If(step):
            m.d.sync += c.eq(c + 1)
            with m.If(c == self._channels - 1):
                m.d.sync += [c.eq(0), ox.eq(ox + 1), x0.eq(x0 + sw)]
                with m.If(ox == ow - 1):
                    m.d.sync += [ox.eq(0), x0.eq(0), oy.eq(oy + 1), y0.eq(y0 + sh)]
                    with m.If(oy == oh - 1):
                        m.d.sync += [oy.eq(0), y0.eq(0)]
        last = (c == self._channels - 1) & (ox == ow - 1) & (oy == oh - 1)
        return y0, x0, c, last

    def _inside(self, y0, x0):
        """Per window row / column: inside the image rather than padding."""
        (kh, kw), (ph, pw) = self._kernel, self._pad
        (sh, sw), (oh, ow) = self._stride, self._out_size
        rows = Cat(inside_axis(y0, ky, ph, self._height, sh, oh) for ky in range(kh))
        cols = Cat(inside_axis(x0, kx, pw, self._width, sw, ow) for kx in range(kw))
        return rows, cols

    def _pool_extent(self, y0, x0):
        """Rows and columns of Caffe's AVE pool window: clipped at ``H + pad``
        / ``W + pad`` (unpadded coordinates; the bottom/right padding counts).
        An int where no window is clipped: the divider's table then folds
        away (a power of two size leaves a plain shift)."""
        (kh, kw), (ph, pw) = self._kernel, self._pad
        (sh, sw), (oh, ow) = self._stride, self._out_size
        bottom, right = self._height + 2 * ph, self._width + 2 * pw
        rows = (kh if (oh - 1) * sh + kh <= bottom
                else Mux(y0 + kh > bottom, bottom - y0, kh)[:kh.bit_length()])
        cols = (kw if (ow - 1) * sw + kw <= right
                else Mux(x0 + kw > right, right - x0, kw)[:kw.bit_length()])
        return rows, cols

    def _pool_size(self, y0, x0):
        """Caffe's AVE pool size (see :meth:`_pool_extent`): a ``Const`` when
        no window is clipped."""
        rows, cols = self._pool_extent(y0, x0)
        if isinstance(rows, int) and isinstance(cols, int):
            return Const(rows * cols, range(self.area + 1))
        return rows * cols

    def _reciprocal_at(self, divider, y0, x0):
        """``divider``'s reciprocal of the pool size at ``(y0, x0)``: one table
        on the clipped rows and columns, no multiplier before the lookup."""
        (kh, kw) = self._kernel
        rows, cols = self._pool_extent(y0, x0)
        recip = divider.reciprocals
        rows_range = [rows] if isinstance(rows, int) else range(1 << kh.bit_length())
        cols_range = [cols] if isinstance(cols, int) else range(1 << kw.bit_length())
        index = Cat(*(v for v in (cols, rows) if not isinstance(v, int)))
        # Combinations no window has (beyond the kernel) read 0.
        return Array(Const(recip[r * c] if r <= kh and c <= kw else 0,
                           unsigned(divider.recip_bits))
                     for r in rows_range for c in cols_range)[index]


class AverageDivide(wiring.Component):
    """Combinational ``AverageDivider``: ``quotient = RNE(dividend / divisor)``.

    ``dividend`` is ``sum_bits`` signed, ``divisor`` is ``1..area``;
    ``quotient`` is ``sum_bits`` signed. One multiply by a table reciprocal
    plus the tie window (see :class:`~fecaffe_hw.fixedpoint.pooling.AverageDivider`).
    """

    def __init__(self, divider):
        if not isinstance(divider, AverageDivider):
            raise TypeError(f"Expected an AverageDivider, not {divider!r}")
        self._divider = divider
        super().__init__({
            "dividend": In(signed(divider.sum_bits)),
            "divisor": In(range(divider.area + 1)),
            "quotient": Out(signed(divider.sum_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.quotient.eq(_round_product(
            self._divider, self.dividend * _reciprocal(self._divider, self.divisor)))
        return m


def _reciprocal(divider, divisor):
    return Array(Const(r, unsigned(divider.recip_bits)) for r in divider.reciprocals)[divisor]


def _round_parts(divider, product):
    """The quotient from ``dividend * reciprocal`` as ``(whole, up)``, its sum:
    the tie window rounds to even, anything else half up."""
    d = divider
    whole = product[d.shift:].as_signed()
    fraction = product[:d.shift]
    half, window = 1 << (d.shift - 1), d.tie_window
    tie = (fraction > half - window) & (fraction < half + window)
    return whole, Mux(tie, whole[0], fraction > half)


def _round_product(divider, product):
    whole, up = _round_parts(divider, product)
    return whole + up


#: The reciprocal's low part in :func:`_divide`: one DSP width of an operand.
_RECIP_SPLIT = 17


def _divide(m, divider, dividend, size, enables, *, reciprocal=None):
    """``RNE(dividend / size)`` as ``divider`` defines it, over two register
    stages (``enables``: when each takes its input): the dividend times the
    low and the high part of ``size``'s reciprocal, then their sum; the
    returned quotient rounds the registered sum, as ``(whole, up)`` (see
    :func:`_round_parts`) for the caller to add, now or after registering
    them. So a DSP meets at most one adder in a cycle and the rounding's
    carry chains get their own.
    ``reciprocal`` is the table entry for ``size`` when the caller has
    registered it (``size`` then only says whether it is a constant). A
    constant power of two ``size`` (no window clipped) is a rounding shift,
    where the reciprocal is exact (see :class:`AverageDivider`): no
    multiplier, no tie window, the dividend delayed as the product would be."""
    if _power_of_two(size):
        return _shift_parts(_delayed(m, dividend, enables), size)
    first, second = enables
    if reciprocal is None:
        reciprocal = _reciprocal(divider, size)
    split, bits = _RECIP_SPLIT, divider.sum_bits
    low = Signal(signed(bits + split + 1), name="divide_low")
    high = Signal(signed(bits + divider.recip_bits - split + 1), name="divide_high")
    product = Signal(signed(bits + divider.recip_bits + 1), name="divide_product")
    with m.If(first):
        m.d.sync += [low.eq(dividend * reciprocal[:split]),
                     high.eq(dividend * reciprocal[split:])]
    with m.If(second):
        m.d.sync += product.eq(low + (high << split))
    return _round_parts(divider, product)


def _power_of_two(size):
    return isinstance(size, Const) and size.value & (size.value - 1) == 0


def _delayed(m, value, enables):
    """``value`` through one register per entry of ``enables``, each taking
    its input while its enable is high."""
    for i, enable in enumerate(enables):
        held = Signal(Value.cast(value).shape(), name=f"divide_dividend{i + 1}")
        with m.If(enable):
            m.d.sync += held.eq(value)
        value = held
    return value


def _shift_parts(dividend, size):
    """``RNE(dividend / size)`` for a constant power of two ``size`` as
    ``(whole, up)``: a rounding shift, exact as the reciprocal would be."""
    k = size.value.bit_length() - 1
    if k == 0:
        return dividend, Const(0)
    whole = dividend[k:].as_signed()
    fraction = dividend[:k]
    up = fraction[-1] & ((fraction[:-1] != 0) | whole[0]) if k > 1 else \
        fraction[0] & whole[0]
    return whole, up


def _divide_latency(divider):
    """Register stages of :func:`_divide_in_stages` for ``divider``."""
    return product_latency(signed(divider.sum_bits), unsigned(divider.recip_bits))


def _divide_in_stages(m, divider, dividend, size, enable, *, reciprocal=None):
    """``RNE(dividend / size)`` as :func:`_divide` computes it, but over
    :func:`_divide_latency` register stages that all take their input while
    ``enable`` is high: the product is an enabled
    :class:`~fecaffe_hw.cores.multiplier.Multiplier`, which on the ECP5 keeps
    operands and products in the MULT18X18Ds' own registers (enabled through
    their clock enable). So the hops to and from the multipliers, wherever
    the placer finds free DSP sites, are cycles of their own."""
    if _power_of_two(size):
        return _shift_parts(_delayed(m, dividend, [enable] * _divide_latency(divider)), size)
    if reciprocal is None:
        reciprocal = _reciprocal(divider, size)
    product = registered_product(m, "divide", dividend, reciprocal, enable=enable)
    return _round_parts(divider, product)


class Pooling(_Geometry, wiring.Component):
    """Pooling forward over a stream of windows.

    ``windows`` (in): ``ArrayLayout(data_shape, kh * kw)`` in window raster
    order, one per output position and channel in ``(oy, ox, c)`` order, zero
    in the padding: what a :class:`~fecaffe_hw.cores.line_buffer.LineBuffer`
    with the same geometry and ``ceil_mode=True`` emits.

    ``pooled`` (out): ``{"value", "index"}`` for MAX (``index = ky * kw + kx``
    of the first maximum; padding never wins), ``{"value"}`` for AVE
    (``RNE(sum / pool_size)``), in the same order.

    Throughput one window per cycle; latency (:attr:`latency`) MAX 2 cycles
    (reduce, select), AVE 6 up to 17-bit data (the sum, the multiplier's
    operand, product and partial-product sum registers, the rounding
    decision, its add). ``data_shape`` must be signed, 2..32 bits.
    """

    def __init__(self, *, kind, width, height, channels=1, kernel, stride=1, pad=0,
                 data_shape):
        self._setup(kind, width, height, channels, kernel, stride, pad, data_shape)
        fields = {"value": self._shape}
        if self._kind is PoolKind.MAX:
            fields["index"] = unsigned(_index_width(self.area))
        super().__init__({
            "windows": In(stream.Signature(data.ArrayLayout(self._shape, self.area))),
            "pooled": Out(stream.Signature(data.StructLayout(fields))),
        })

    @property
    def latency(self):
        """Cycles from a window's transfer to its result's valid, unstalled."""
        if self._kind is PoolKind.MAX:
            return 2
        return 3 + _divide_latency(self.divider)

    def elaborate(self, platform):
        m = Module()
        kw = self._kernel[1]
        # All stages move together: one valid bit each, stalled by the output.
        valid = [Signal(name=f"valid{i + 1}") for i in range(self.latency)]
        advance = ~valid[-1] | self.pooled.ready
        m.d.comb += [self.windows.ready.eq(advance), self.pooled.valid.eq(valid[-1])]
        take = self.windows.valid & advance
        y0, x0, c, _ = self._positions(m, take)
        window = self.windows.payload

        with m.If(advance):
            m.d.sync += [v.eq(u) for u, v in zip([self.windows.valid] + valid, valid)]

        if self._kind is PoolKind.MAX:
            rows, cols = self._inside(y0, x0)
            # Tree over window raster order; on equal values the left (earlier)
            # candidate stays, so the first maximum wins as with Caffe's `>`.
            nodes = [(window[i], Const(i, _index_width(self.area)), rows[i // kw] & cols[i % kw])
                     for i in range(self.area)]
            while len(nodes) > 1:
                paired = []
                for a, b in zip(nodes[0::2], nodes[1::2]):
                    take_b = b[2] & (~a[2] | (b[0] > a[0]))
                    paired.append((Mux(take_b, b[0], a[0]), Mux(take_b, b[1], a[1]), a[2] | b[2]))
                nodes = paired + ([nodes[-1]] if len(nodes) % 2 else [])
            value1, index1 = Signal(self._shape), Signal(_index_width(self.area))
            with m.If(advance):
                m.d.sync += [value1.eq(nodes[0][0]), index1.eq(nodes[0][1]),
                             self.pooled.payload.value.eq(value1),
                             self.pooled.payload.index.eq(index1)]
        else:
            divider = self.divider
            total = Signal(signed(divider.sum_bits))
            size = self._pool_size(y0, x0)
            reciprocal = None
            if not isinstance(size, Const):
                # Looked up with the sum, so the multiply starts from a register.
                reciprocal = Signal(divider.recip_bits)
                with m.If(advance):
                    m.d.sync += reciprocal.eq(self._reciprocal_at(divider, y0, x0))
            with m.If(advance):
                m.d.sync += total.eq(sum(window[i] for i in range(self.area)))
            whole, up = _divide_in_stages(m, divider, total, size, advance,
                                          reciprocal=reciprocal)
            # The rounding decision (the tie window's compares) and its add
            # take a cycle each: together, placed beside the multipliers'
            # sum, they were the 10x11 ULX3S build's critical path (16.7 ns).
            whole1 = Signal.like(whole, name="rounded_whole")
            up1 = Signal(name="rounded_up")
            with m.If(advance):
                # |average| <= max |input|: no saturation needed.
                m.d.sync += [whole1.eq(whole), up1.eq(up),
                             self.pooled.payload.value.eq(whole1 + up1)]
        return m


class PoolingBackward(_Geometry, wiring.Component):
    """Pooling backward: output gradients in, the input gradient map out.

    ``grads`` (in): ``{"grad", "index"}`` (MAX, ``index`` as :class:`Pooling`
    emits it; an index into the padding is not checked) or ``{"grad"}``
    (AVE), ``(oy, ox, c)`` order.
    ``bottom`` (out): the input gradient, ``data_shape``, ``(y, x, c)`` order.

    Accumulates into a scratch map of ``height * width * channels`` words of
    ``bits + clog2(overlap)`` bits (no overflow for Caffe's overlap of
    ``ceil(k/s)`` windows per axis), then streams it out saturated and clears
    it. Throughput: MAX one gradient per cycle; AVE ``kh * kw + 2`` cycles
    per gradient (one read-modify-write per window position); then one word
    per cycle out. Large maps are tiled over channels by the caller.
    """

    def __init__(self, *, kind, width, height, channels=1, kernel, stride=1, pad=0,
                 data_shape):
        self._setup(kind, width, height, channels, kernel, stride, pad, data_shape)
        fields = {"grad": self._shape}
        if self._kind is PoolKind.MAX:
            fields["index"] = unsigned(_index_width(self.area))
        super().__init__({
            "grads": In(stream.Signature(data.StructLayout(fields))),
            "bottom": Out(stream.Signature(self._shape)),
        })

    @property
    def acc_bits(self):
        return self._shape.width + (overlap_count(self._kernel, self._stride) - 1).bit_length()

    def elaborate(self, platform):
        m = Module()
        (kh, kw), (ph, pw) = self._kernel, self._pad
        height, width, channels = self._height, self._width, self._channels
        depth = height * width * channels
        acc = signed(self.acc_bits)
        m.submodules.scratch = scratch = Memory(shape=acc, depth=depth, init=[])
        wr = scratch.write_port()
        # Transparent, so back-to-back updates of one word see each other.
        rd = scratch.read_port(transparent_for=(wr,))

        # Stage 1 of the read-modify-write: the word being read, and what to add.
        rmw_valid = Signal()
        rmw_addr = Signal.like(rd.addr)
        rmw_add = Signal(acc)
        m.d.sync += rmw_valid.eq(0)

        def update(addr, amount, enable):
            m.d.comb += rd.addr.eq(addr)
            with m.If(enable):
                m.d.sync += [rmw_valid.eq(1), rmw_addr.eq(addr), rmw_add.eq(amount)]

        def address(y, x, c):
            return (y * width + x) * channels + c

        # Drain stage: output register behind the read port.
        out_valid = Signal()
        clear_valid, clear_addr = Signal(), Signal.like(rd.addr)
        m.d.sync += clear_valid.eq(0)
        m.d.comb += self.bottom.valid.eq(out_valid)
        lo, hi = -(1 << (self._shape.width - 1)), (1 << (self._shape.width - 1)) - 1
        if acc.width > self._shape.width:
            m.d.comb += self.bottom.payload.eq(
                Mux(rd.data < lo, lo, Mux(rd.data > hi, hi, rd.data)))
        else:   # no overlap: the sums cannot leave the range, nothing to clamp
            m.d.comb += self.bottom.payload.eq(rd.data)

        with m.If(rmw_valid):
            m.d.comb += [wr.addr.eq(rmw_addr), wr.data.eq(rd.data + rmw_add), wr.en.eq(1)]
        with m.Elif(clear_valid):
            m.d.comb += [wr.addr.eq(clear_addr), wr.data.eq(0), wr.en.eq(1)]

        drain_addr = Signal(range(depth))
        take = self.grads.valid & self.grads.ready
        y0, x0, c, last = self._positions(m, take)
        m.d.comb += rd.en.eq(1)

        with m.FSM():
            with m.State("ACCUMULATE"):
                if self._kind is PoolKind.MAX:
                    m.d.comb += self.grads.ready.eq(1)
                    # index -> (ky, kx) by table: kw need not be a power of two.
                    ky = Array(Const(i // kw, range(kh)) for i in range(self.area))
                    kx = Array(Const(i % kw, range(kw)) for i in range(self.area))
                    index = self.grads.payload.index
                    y, x = y0 + ky[index] - ph, x0 + kx[index] - pw
                    update(address(y, x, c), self.grads.payload.grad, take)
                    with m.If(take & last):
                        m.next = "FLUSH"
                else:
                    # Hold one gradient and its window; spread it over kh * kw cycles.
                    divider = self.divider
                    busy = Signal()
                    held = Signal(range(self.area + 1))
                    first = Signal()
                    hy0, hx0, hc = Signal.like(y0), Signal.like(x0), Signal.like(c)
                    held_last = Signal()
                    # The partial products are taken with the gradient, summed
                    # the cycle after; every update rounds the sum into its
                    # addend register, so the share needs no register of its own.
                    size = self._pool_size(y0, x0)
                    reciprocal = None
                    if not isinstance(size, Const):
                        # The position moves on a take, and the next take is
                        # kh * kw + 2 cycles away: time to look it up. From
                        # reset it holds the first window's.
                        first_size = min(kh, height + 2 * ph) * min(kw, width + 2 * pw)
                        reciprocal = Signal(divider.recip_bits,
                                            init=divider.reciprocals[first_size])
                        m.d.sync += reciprocal.eq(self._reciprocal_at(divider, y0, x0))
                    whole, up = _divide(m, divider, self.grads.payload.grad, size,
                                        (take, busy & first), reciprocal=reciprocal)
                    quotient = whole + up
                    m.d.comb += self.grads.ready.eq(~busy)
                    with m.If(take):
                        m.d.sync += [busy.eq(1), first.eq(1), held.eq(0),
                                     hy0.eq(y0), hx0.eq(x0), hc.eq(c), held_last.eq(last)]
                    rows, cols = self._inside(hy0, hx0)
                    ky = Array(Const(i // kw, range(kh)) for i in range(self.area))
                    kx = Array(Const(i % kw, range(kw)) for i in range(self.area))
                    inside = Array(rows[i // kw] & cols[i % kw] for i in range(self.area))
                    with m.If(busy & first):
                        m.d.sync += first.eq(0)
                    with m.Elif(busy):
                        y, x = hy0 + ky[held] - ph, hx0 + kx[held] - pw
                        update(address(y, x, hc), quotient, inside[held])
                        m.d.sync += held.eq(held + 1)
                        with m.If(held == self.area - 1):
                            m.d.sync += busy.eq(0)
                            with m.If(held_last):
                                m.next = "FLUSH"
            with m.State("FLUSH"):
                # The last update writes this cycle.
                m.d.sync += drain_addr.eq(0)
                m.next = "DRAIN"
            with m.State("DRAIN"):
                advance = ~out_valid | self.bottom.ready
                m.d.comb += [rd.addr.eq(drain_addr), rd.en.eq(advance)]
                with m.If(advance):
                    m.d.sync += [out_valid.eq(1), drain_addr.eq(drain_addr + 1),
                                 # Cleared a cycle after the read: the transparent
                                 # port would otherwise return the zero.
                                 clear_valid.eq(1), clear_addr.eq(drain_addr)]
                    with m.If(drain_addr == depth - 1):
                        m.next = "LAST"
            with m.State("LAST"):
                m.d.comb += rd.en.eq(0)
                with m.If(self.bottom.ready):
                    m.d.sync += out_valid.eq(0)
                    m.next = "ACCUMULATE"
        return m
