"""On-chip im2col: a line buffer that turns a pixel stream into window vectors."""

from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fecaffe_hw.fixedpoint.windows import window_geometry

__all__ = ["LineBuffer", "WindowParameters", "inside_axis"]


def inside_axis(origin, k, pad, size, stride, count):
    """Expression: whether window row (column) ``k`` of the window at padded
    ``origin`` (one of ``o * stride``, ``o < count``) is inside the image; a
    constant 1 when no window position puts it in the padding, so no position
    counter or compare is built for nothing."""
    if all(pad <= o * stride + k < size + pad for o in range(count)):
        return Const(1)
    return (origin + k >= pad) & (origin + k < size + pad)


class WindowParameters:
    """Validated, read-only window geometry of a core that walks a
    ``(channels, height, width)`` feature map; shared by the line buffer and
    the pooling cores (see :func:`~fecaffe_hw.fixedpoint.windows.window_geometry`)."""

    def _set_geometry(self, *, width, height, channels, kernel, stride, pad, ceil_mode):
        self._kernel, self._stride, self._pad, self._out_size = window_geometry(
            width=width, height=height, channels=channels, kernel=kernel, stride=stride,
            pad=pad, ceil_mode=ceil_mode)
        self._width, self._height, self._channels = width, height, channels

    width = property(lambda self: self._width)
    height = property(lambda self: self._height)
    channels = property(lambda self: self._channels)
    kernel = property(lambda self: self._kernel)
    stride = property(lambda self: self._stride)
    pad = property(lambda self: self._pad)
    out_size = property(lambda self: self._out_size)

    @property
    def area(self):
        return self._kernel[0] * self._kernel[1]


class LineBuffer(WindowParameters, wiring.Component):
    """Holds ``kernel_h + stride_h`` rows of a feature map and emits its
    ``kernel_h x kernel_w`` windows (im2col, zero padding, stride).

    ``pixels`` (in): one value per beat, channel-interleaved, in ``(y, x, c)``
    raster order. One value per beat keeps the window ``kh * kw`` values wide
    whatever the channel count, which is what a pooling unit (per channel) and
    a GEMM array (one K-slice per beat) consume.

    ``windows`` (out): ``ArrayLayout(data_shape, kh * kw)`` in window raster
    order (``ky`` major), one per output position and channel in
    ``(oy, ox, c)`` order; positions in the padding read zero. ``ceil_mode``
    selects Caffe's pooling output size (windows may run past the bottom/right
    padding, reading zero) instead of the convolution size.

    Memory: ``(kh + sh) * kw`` banks of ``ceil(X / kw) * channels`` words,
    ``X`` the padded width the windows span, so about ``(kh + sh) * (W + 2pw)
    * channels`` words; banking by row slot and column modulo ``kw`` lets one
    window be read per cycle. Throughput: one window per cycle once its pixels
    are in; input is accepted while the row it lands in is free, so input and
    output overlap. A frame's input starts once the previous frame's last
    pixel is in and its last window issued (one idle cycle between frames).
    Latency: with a pixel accepted every cycle from cycle 0, the first window
    is valid in cycle ``N + 2``, ``N = (min(kh - 1 - ph, H - 1) * W +
    min(kw - 1 - pw, W - 1)) * channels + 1``.
    """

    def __init__(self, *, width, height, channels=1, kernel, stride=1, pad=0, data_shape,
                 ceil_mode=False):
        self._set_geometry(width=width, height=height, channels=channels, kernel=kernel,
                           stride=stride, pad=pad, ceil_mode=ceil_mode)
        try:
            Shape.cast(data_shape)
        except TypeError:
            raise ValueError(f"Data shape must be a shape-castable, not {data_shape!r}") from None
        self._data_shape = data_shape
        self._ceil_mode = bool(ceil_mode)
        super().__init__({
            "pixels": In(stream.Signature(data_shape)),
            "windows": Out(stream.Signature(data.ArrayLayout(data_shape, self.area))),
        })

    data_shape = property(lambda self: self._data_shape)
    ceil_mode = property(lambda self: self._ceil_mode)

    @property
    def row_slots(self):
        return self._kernel[0] + self._stride[0]

    @property
    def bank_depth(self):
        kw, sw = self._kernel[1], self._stride[1]
        # Padded columns any window touches, or any pixel lands in.
        span = max((self._out_size[1] - 1) * sw + kw, self._width + self._pad[1])
        return -(-span // kw) * self._channels

    def elaborate(self, platform):
        m = Module()
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.kernel, self.stride, self.pad, self.out_size
        height, width, channels = self.height, self.width, self.channels
        slots, depth = self.row_slots, self.bank_depth

        banks = [[Memory(shape=self.data_shape, depth=depth, init=[]) for _ in range(kw)]
                 for _ in range(slots)]
        for i, row in enumerate(banks):
            for j, bank in enumerate(row):
                m.submodules[f"bank_{i}_{j}"] = bank

        # Input cursor, in padded coordinates (row Y = y + ph, column X = x + pw).
        in_y = Signal(range(height + ph + 1), init=ph)
        in_slot = Signal(range(slots), init=ph % slots)
        in_q = Signal(range(depth // channels + 1), init=pw // kw)
        in_r = Signal(range(kw), init=pw % kw)
        in_x = Signal(range(width + pw + 1), init=pw)
        in_c = Signal(range(channels))
        # A frame's last pixel and its last window can come in either order;
        # the next frame starts once both have.
        in_done = Signal()
        out_done = Signal()
        with m.If(in_done & out_done):
            m.d.sync += [in_done.eq(0), out_done.eq(0)]

        # Output cursor: window origin (Y0, X0) in padded coordinates.
        oy = Signal(range(oh))
        ox = Signal(range(ow))
        oc = Signal(range(channels))
        y0 = Signal(range((oh - 1) * sh + 1))
        x0 = Signal(range((ow - 1) * sw + 1))
        slot0 = Signal(range(slots))
        q0 = Signal(range(depth // channels + 1))
        r0 = Signal(range(kw))

        # Input: free while its row slot no longer holds a row the current
        # output row needs (row Y - slots < Y0), or once the frame's windows
        # are all out (rows below the last window, when stride > kernel).
        m.d.comb += self.pixels.ready.eq(~in_done & (out_done | (in_y < y0 + slots)))
        write = self.pixels.valid & self.pixels.ready
        for i, row in enumerate(banks):
            for j, bank in enumerate(row):
                port = bank.write_port()
                m.d.comb += [
                    port.addr.eq(in_q * channels + in_c),
                    port.data.eq(self.pixels.payload),
                    port.en.eq(write & (in_slot == i) & (in_r == j)),
                ]
        with m.If(write):
            m.d.sync += in_c.eq(in_c + 1)
            with m.If(in_c == channels - 1):
                m.d.sync += [in_c.eq(0), in_x.eq(in_x + 1)]
                with m.If(in_r == kw - 1):
                    m.d.sync += [in_r.eq(0), in_q.eq(in_q + 1)]
                with m.Else():
                    m.d.sync += in_r.eq(in_r + 1)
                with m.If(in_x == width + pw - 1):
                    m.d.sync += [in_x.eq(pw), in_q.eq(pw // kw), in_r.eq(pw % kw),
                                 in_y.eq(in_y + 1),
                                 in_slot.eq(Mux(in_slot == slots - 1, 0, in_slot + 1))]
                    with m.If(in_y == height + ph - 1):
                        m.d.sync += [in_y.eq(ph), in_slot.eq(ph % slots), in_done.eq(1)]

        # A window is ready once its last real pixel (bottom-right, clipped to
        # the image) of this channel has been written. The clipped corner is
        # held in registers, set wherever the origin is (from the origin's
        # next value, computed beside the cursor logic), so the test below
        # is compares only: the corner's adder and clamp no longer run on
        # through ``available`` into every cursor's enable.
        def clipped(origin, k, pad, size):
            return Mux(origin + k - 1 > size + pad - 1, size + pad - 1, origin + k - 1)
        y_last = Signal(range(height + ph), init=min(kh - 1, height + ph - 1))
        x_last = Signal(range(width + pw), init=min(kw - 1, width + pw - 1))
        available = ~out_done & (
            in_done | (in_y > y_last) |
            ((in_y == y_last) & ((in_x > x_last) | ((in_x == x_last) & (in_c > oc)))))

        # Two output stages moving together: the banks' read (with the
        # crossbar's selects), then the window register, so the crossbar and
        # the padding mask do not share a cycle with the consumer's logic.
        read_valid, out_valid = Signal(), Signal()
        advance = ~out_valid | self.windows.ready
        issue = available & advance
        m.d.comb += self.windows.valid.eq(out_valid)
        with m.If(advance):
            m.d.sync += [read_valid.eq(available), out_valid.eq(read_valid)]

        # Reads: column bank j holds X = j (mod kw); the window's column kx
        # with (r0 + kx) mod kw == j lies in the next block when j < r0.
        read_data = [[None] * kw for _ in range(slots)]
        for j in range(kw):
            addr = Signal(range(depth), name=f"read_addr_{j}")
            m.d.comb += addr.eq((q0 + (j < r0)) * channels + oc)
            for i in range(slots):
                port = banks[i][j].read_port()
                m.d.comb += [port.addr.eq(addr), port.en.eq(advance)]
                read_data[i][j] = port.data

        # Captured with the read so the crossbar and padding mask line up with the data.
        sel_slot = Signal.like(slot0)
        sel_r = Signal.like(r0)
        row_ok = Signal(kh)
        col_ok = Signal(kw)
        with m.If(advance):
            m.d.sync += [
                sel_slot.eq(slot0), sel_r.eq(r0),
                row_ok.eq(Cat(inside_axis(y0, ky, ph, height, sh, oh) for ky in range(kh))),
                col_ok.eq(Cat(inside_axis(x0, kx, pw, width, sw, ow) for kx in range(kw))),
            ]
        # Two small muxes per value instead of one (slots * kw)-way mux: pick
        # each window row's slot for all kw banks, then rotate the columns.
        columns = []
        for kx in range(kw):
            column = Signal(range(kw), name=f"column_{kx}")
            m.d.comb += column.eq(Mux(sel_r + kx >= kw, sel_r + kx - kw, sel_r + kx))
            columns.append(column)
        for ky in range(kh):
            slot = Signal(range(slots), name=f"slot_{ky}")
            m.d.comb += slot.eq(Mux(sel_slot + ky >= slots, sel_slot + ky - slots, sel_slot + ky))
            row = []
            for j in range(kw):
                value = Signal(self.data_shape, name=f"row_{ky}_bank_{j}")
                m.d.comb += value.eq(Array(read_data[i][j] for i in range(slots))[slot])
                row.append(value)
            for kx in range(kw):
                with m.If(advance):
                    m.d.sync += self.windows.payload[ky * kw + kx].eq(
                        Mux(row_ok[ky] & col_ok[kx], Array(row)[columns[kx]], 0))

        with m.If(issue):
            m.d.sync += oc.eq(oc + 1)
            with m.If(oc == channels - 1):
                m.d.sync += [oc.eq(0), ox.eq(ox + 1), x0.eq(x0 + sw),
                             x_last.eq(clipped(x0 + sw, kw, pw, width))]
                carry = r0 + sw % kw >= kw
                m.d.sync += [
                    r0.eq(Mux(carry, r0 + sw % kw - kw, r0 + sw % kw)),
                    q0.eq(q0 + sw // kw + carry),
                ]
                with m.If(ox == ow - 1):
                    m.d.sync += [ox.eq(0), x0.eq(0), q0.eq(0), r0.eq(0),
                                 x_last.eq(x_last.init),
                                 oy.eq(oy + 1), y0.eq(y0 + sh),
                                 y_last.eq(clipped(y0 + sh, kh, ph, height)),
                                 slot0.eq(Mux(slot0 + sh >= slots, slot0 + sh - slots,
                                              slot0 + sh))]
                    with m.If(oy == oh - 1):
                        m.d.sync += [oy.eq(0), y0.eq(0), y_last.eq(y_last.init),
                                     slot0.eq(0), out_done.eq(1)]
        return m
