"""Streaming elementwise unit: bias, ReLU/Sigmoid/TanH forward and backward,
requantisation (bit-exact with ``fecaffe_hw.fixedpoint.activation``)."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fecaffe_hw.fixedpoint.activation import (
    SLOPE_FORMAT, TABLE_FORMAT, EltwiseOp, activation_tables,
)
from fecaffe_hw.fixedpoint.format import Format

__all__ = ["Eltwise", "EltwiseOp", "TABLES", "TABLE_OPS", "table_names", "wide_frac",
           "round_half_even", "saturate", "shift_saturate", "shift_saturate_mask"]

#: The activations that need a table ROM, in ROM order.
TABLES = ("sigmoid", "tanh")
#: The ops each table serves.
TABLE_OPS = {"sigmoid": (EltwiseOp.SIGMOID, EltwiseOp.SIGMOID_BWD),
             "tanh": (EltwiseOp.TANH, EltwiseOp.TANH_BWD)}


def table_names(tables, what):
    """``tables`` (names, or one name) as a tuple in :data:`TABLES` order;
    ValueError naming ``what`` and the unknown name."""
    tables = (tables,) if isinstance(tables, str) else tuple(tables)
    for name in tables:
        if name not in TABLES:
            raise ValueError(f"{what} tables must be among {', '.join(TABLES)}, not {name!r}")
    return tuple(name for name in TABLES if name in tables)


def wide_frac(in_frac, aux_frac, slope_frac, tables=TABLES, segments_log2=8):
    """Fractional bits of an :class:`Eltwise` core's exact (unrounded) result:
    the finest of the ReLU product and, with ``tables``, the interpolation
    and the backward product."""
    fracs = [in_frac + slope_frac]
    if tables:
        all_tables = activation_tables(segments_log2)
        tb = max(all_tables[name].offset_bits(in_frac) for name in tables)
        fracs += [TABLE_FORMAT.frac + tb, in_frac + aux_frac]
    return max(fracs)


def saturate(value, bits):
    """Expression: signed ``value`` clamped to the signed ``bits``-bit range."""
    if len(value) <= bits:
        return value
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    return Mux(value > hi, hi, Mux(value < lo, lo, value))[:bits].as_signed()


def shift_saturate_mask(shift, value_width, bits):
    """Expression: the per-command mask :func:`shift_saturate` checks, ones
    where ``value`` bit ``bits - 1 + i`` lies at or above ``shift + bits -
    1`` (a thermometer code: a LUT per bit, no shifter). Register it."""
    return Cat(shift <= i for i in range(value_width - bits + 1))


def shift_saturate(value, shift, mask, bits):
    """Expression: ``saturate(value >> shift, bits)`` for a run-time
    ``shift``, small in logic: only the ``bits`` kept go through the shifter
    (built most significant stage first, each stage as wide as the later
    ones read), and the bits above them are checked against the sign through
    ``mask`` (:func:`shift_saturate_mask`) instead of comparing the whole
    shifted value."""
    sign = value[-1]
    low = Cat(value[i] if i < len(value) else sign for i in range(bits + 2**len(shift) - 1))
    for k in reversed(range(len(shift))):
        width = bits + 2**k - 1
        low = Mux(shift[k], low[2**k:2**k + width], low[:width])
    overflow = ((value[bits - 1:] ^ sign.replicate(len(mask))) & mask).any()
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    return Mux(overflow, Mux(sign, lo, hi), low.as_signed())[:bits].as_signed()


def round_half_even(value, shift):
    """Expression: signed ``value`` shifted right by ``shift`` with round half
    to even ("add half - 1 plus the kept lsb, then shift"); left for ``shift < 0``."""
    if shift <= 0:
        return value << -shift
    if shift >= len(value):
        value = value + Const(0, signed(shift + 2))    # sign-extend past the kept lsb
    return (value + ((1 << (shift - 1)) - 1) + value[shift]) >> shift


def _check_format(name, fmt, max_bits=48):
    if not isinstance(fmt, Format):
        raise TypeError(f"Eltwise {name} must be a Format, not {fmt!r}")
    if fmt.bits > max_bits:
        raise ValueError(f"Eltwise {name} {fmt} is wider than {max_bits} bits")


class Eltwise(wiring.Component):
    """Applies an :class:`EltwiseOp` to ``lanes`` values per beat.

    Ports
    -----
    data_in : In(stream)
        ``x`` (lanes of ``in_fmt``: activation, accumulator or top gradient),
        ``aux`` (lanes of ``aux_fmt``: forward input for ReLU backward, forward
        output for Sigmoid/TanH backward; ignored otherwise), ``index`` (bias
        memory word for BIAS ops).
    data_out : Out(stream)
        Lanes of ``out_fmt``, in input order.
    op, slope : In
        Operation and ReLU ``negative_slope`` (``slope_fmt``); both are sampled
        with each accepted beat, so they may change between beats.
    bias_addr, bias_data, bias_we : In
        Write port of the bias memory: ``bias_depth`` words of ``lanes``
        biases (``bias_fmt``, default 16 bits at ``in_fmt.frac``). Lane ``i``
        adds lane ``i`` of word ``index``, so a word holds either one channel's
        bias repeated (channels along the stream) or ``lanes`` channels
        (channels across lanes). Write biases while no beat is in flight.

    Arithmetic is that of ``fixedpoint.activation.eltwise``: one round half
    to even plus saturation per result. Sigmoid/TanH interpolate the tables of
    ``activation_tables(segments_log2)`` (read into a ROM); with 256 segments
    they are within 2.5e-4 / 4.5e-4 of the true function before output
    quantisation. Latency 5 cycles, one beat per cycle; back-pressure stalls
    the whole pipeline.

    Parameters: formats up to 48 bits (slope 25), non-negative ``aux_fmt`` and
    ``slope_fmt`` fracs, ``bias_fmt.frac <= in_fmt.frac`` and
    ``in_fmt.frac >= segments_log2 - 4`` (the tables' resolution); ``tables``,
    the activations built (``"sigmoid"``, ``"tanh"``, both by default): a
    core without a table has neither its forward nor its backward op (they
    output 0), and one without tables has no table ROM, interpolation or
    derivative multipliers at all.
    """

    def __init__(self, *, in_fmt, out_fmt, lanes=1, aux_fmt=Format(16, 15),
                 bias_fmt=None, bias_depth=16, slope_fmt=SLOPE_FORMAT,
                 segments_log2=8, tables=TABLES):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 64:
            raise ValueError(f"Lane count must be an integer in [1, 64], not {lanes!r}")
        if isinstance(bias_depth, bool) or not isinstance(bias_depth, int) or bias_depth < 1:
            raise ValueError(f"Bias depth must be a positive integer, not {bias_depth!r}")
        if bias_fmt is None and isinstance(in_fmt, Format):
            bias_fmt = Format(16, in_fmt.frac)
        for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt), ("aux_fmt", aux_fmt),
                          ("bias_fmt", bias_fmt)):
            _check_format(name, fmt)
        _check_format("slope_fmt", slope_fmt, max_bits=25)
        for name, fmt in (("aux_fmt", aux_fmt), ("slope_fmt", slope_fmt)):
            if fmt.frac < 0:
                raise ValueError(f"Eltwise {name} frac must be non-negative, not {fmt.frac}")
        if bias_fmt.frac > in_fmt.frac:
            raise ValueError(f"Bias frac {bias_fmt.frac} exceeds input frac {in_fmt.frac}")
        tables = table_names(tables, "Eltwise")
        self._tables = {name: table for name, table in activation_tables(segments_log2).items()
                        if name in tables}
        for table in self._tables.values():
            table.offset_bits(in_fmt.frac)      # raises if in_fmt is too coarse
        self._in_fmt, self._out_fmt, self._aux_fmt = in_fmt, out_fmt, aux_fmt
        self._bias_fmt, self._slope_fmt = bias_fmt, slope_fmt
        self._lanes, self._bias_depth, self._segments_log2 = lanes, bias_depth, segments_log2
        super().__init__({
            "data_in": In(stream.Signature(self.input_layout)),
            "data_out": Out(stream.Signature(data.ArrayLayout(signed(out_fmt.bits), lanes))),
            "op": In(unsigned(4)),
            "slope": In(signed(slope_fmt.bits)),
            "bias_addr": In(range(bias_depth)),
            "bias_data": In(self.bias_layout),
            "bias_we": In(1),
        })

    lanes = property(lambda self: self._lanes)
    in_fmt = property(lambda self: self._in_fmt)
    out_fmt = property(lambda self: self._out_fmt)
    aux_fmt = property(lambda self: self._aux_fmt)
    bias_fmt = property(lambda self: self._bias_fmt)
    slope_fmt = property(lambda self: self._slope_fmt)
    bias_depth = property(lambda self: self._bias_depth)
    segments_log2 = property(lambda self: self._segments_log2)
    tables = property(lambda self: tuple(self._tables))
    latency = 5

    @property
    def wide_frac(self):
        """Fractional bits every op's exact result is aligned to before the one
        rounding (so one rounder serves all)."""
        return wide_frac(self.in_fmt.frac, self.aux_fmt.frac, self.slope_fmt.frac,
                         self.tables, self.segments_log2)

    @property
    def input_layout(self):
        return data.StructLayout({
            "x": data.ArrayLayout(signed(self.in_fmt.bits), self.lanes),
            "aux": data.ArrayLayout(signed(self.aux_fmt.bits), self.lanes),
            "index": range(self.bias_depth),
        })

    @property
    def bias_layout(self):
        return data.ArrayLayout(signed(self.bias_fmt.bits), self.lanes)

    def elaborate(self, platform):
        m = Module()
        in_fmt, aux_fmt, out_fmt = self.in_fmt, self.aux_fmt, self.out_fmt
        sf, af = self.slope_fmt.frac, aux_fmt.frac
        tabs = list(self._tables.values())
        n_log2 = self.segments_log2
        tb = {t.name: t.offset_bits(in_fmt.frac) for t in tabs}
        tb_max = max(tb.values(), default=0)
        in_frac = in_fmt.frac
        frac = self.wide_frac

        m.submodules.bias_mem = bias_mem = Memory(shape=self.bias_layout,
                                                  depth=self.bias_depth, init=[])
        bias_w = bias_mem.write_port()
        bias_r = bias_mem.read_port()
        m.d.comb += [bias_w.addr.eq(self.bias_addr), bias_w.data.eq(self.bias_data),
                     bias_w.en.eq(self.bias_we)]

        if tabs:
            entry = data.StructLayout({"base": signed(TABLE_FORMAT.bits),
                                       "delta": signed(TABLE_FORMAT.bits)})
            m.submodules.table = table = Memory(
                shape=entry, depth=len(tabs) << n_log2,
                init=[{"base": int(b), "delta": int(d)}
                      for t in tabs for b, d in zip(t.base, t.delta)])

        out = self.data_out
        advance = Signal()
        valid = [Signal(name=f"valid{i}") for i in range(1, 6)]
        m.d.comb += [advance.eq(~out.valid | out.ready), self.data_in.ready.eq(advance),
                     out.valid.eq(valid[-1])]
        with m.If(advance):
            m.d.sync += valid[0].eq(self.data_in.valid)
            m.d.sync += [valid[i].eq(valid[i - 1]) for i in range(1, 5)]

        ops = [Signal(4, name=f"op{i}") for i in range(1, 5)]
        slope1 = Signal.like(self.slope)
        with m.If(advance):
            m.d.sync += [ops[0].eq(self.op), slope1.eq(self.slope)]
            m.d.sync += [ops[i].eq(ops[i - 1]) for i in range(1, 4)]
        slope2 = Signal.like(self.slope)     # the slope travels with its beat
        with m.If(advance):
            m.d.sync += slope2.eq(slope1)
        m.d.comb += [bias_r.addr.eq(self.data_in.payload.index), bias_r.en.eq(advance)]

        def is_op(sig_, *codes):
            return Cat(*(sig_ == code for code in codes)).any()

        payload = self.data_in.payload
        for lane in range(self.lanes):
            x0 = payload.x[lane]
            # Stage 1: registered operands; memories deliver bias and table entry.
            x1 = Signal(signed(in_fmt.bits), name=f"x1_{lane}")
            aux1 = Signal(signed(aux_fmt.bits), name=f"aux1_{lane}")
            with m.If(advance):
                m.d.sync += [x1.eq(x0), aux1.eq(payload.aux[lane])]
            if tabs:
                # Stage 0 (combinational): table address and interpolation offset.
                port = table.read_port()
                m.d.comb += port.en.eq(advance)
                offsets = {}
                addrs = {}
                for t in tabs:
                    bits = tb[t.name]
                    position = x0 + (1 << (t.range_log2 + in_frac))
                    index = position >> bits
                    low, high = position < 0, index >= t.segments
                    k = Mux(low, 0, Mux(high, t.segments - 1, index[:n_log2]))
                    offset = Mux(low, 0, Mux(high, 1 << bits, position[:bits] if bits else 0))
                    addrs[t.name] = k[:n_log2]
                    offsets[t.name] = offset << (tb_max - bits)
                if len(tabs) == 2:
                    use_tanh = is_op(self.op, EltwiseOp.TANH)
                    m.d.comb += port.addr.eq(Cat(Mux(use_tanh, addrs["tanh"], addrs["sigmoid"]),
                                                 use_tanh))
                    offset = Mux(use_tanh, offsets["tanh"], offsets["sigmoid"])
                else:
                    m.d.comb += port.addr.eq(addrs[tabs[0].name])
                    offset = offsets[tabs[0].name]
                t1 = Signal(tb_max + 1, name=f"t1_{lane}")
                with m.If(advance):
                    m.d.sync += t1.eq(offset)

            # Stage 2: bias add, derivative of the stored output, table entry.
            bias = bias_r.data[lane] << (in_frac - self.bias_fmt.frac)
            with_bias = is_op(ops[0], EltwiseOp.BIAS, EltwiseOp.BIAS_RELU)
            sum_expr = x1 + Mux(with_bias, bias, 0)
            sum2 = Signal(sum_expr.shape(), name=f"sum2_{lane}")
            relu_pos2 = Signal(name=f"pos2_{lane}")
            with m.If(advance):
                m.d.sync += [sum2.eq(sum_expr),
                             relu_pos2.eq(Mux(ops[0] == EltwiseOp.RELU_BWD, aux1 > 0,
                                              sum_expr > 0))]
            if tabs:
                one = 1 << af
                derivs = {"sigmoid": aux1 * (one - aux1), "tanh": (one * one) - aux1 * aux1}
                deriv_expr = (Mux(is_op(ops[0], EltwiseOp.SIGMOID_BWD), derivs["sigmoid"],
                                  derivs["tanh"]) if len(tabs) == 2 else derivs[tabs[0].name])
                deriv2 = Signal(deriv_expr.shape(), name=f"deriv2_{lane}")
                # The table entry is only registered here: a block RAM's
                # output is slow, too slow to feed a multiplier in one cycle.
                base2 = Signal.like(port.data.base, name=f"base2_{lane}")
                delta2 = Signal.like(port.data.delta, name=f"delta2_{lane}")
                t2 = Signal.like(t1, name=f"t2_{lane}")
                with m.If(advance):
                    m.d.sync += [deriv2.eq(deriv_expr), base2.eq(port.data.base),
                                 delta2.eq(port.data.delta), t2.eq(t1)]

            # Stage 3: ReLU slope product, derivative rounded to the output's
            # frac, interpolation. The slope product is chosen in stage 4:
            # after a two-DSP product there is no time left for the mux.
            scaled_expr = sum2 * slope2
            scaled3 = Signal(scaled_expr.shape(), name=f"scaled3_{lane}")
            relu_pos3 = Signal(name=f"pos3_{lane}")
            sum3 = Signal.like(sum2, name=f"sum3_{lane}")
            with m.If(advance):
                m.d.sync += [scaled3.eq(scaled_expr), relu_pos3.eq(relu_pos2), sum3.eq(sum2)]
            relu3 = Mux(relu_pos3, sum3 << sf, scaled3)
            if tabs:
                d_expr = round_half_even(deriv2, af)
                d3 = Signal(d_expr.shape(), name=f"d3_{lane}")
                interp_expr = (base2 << tb_max) + delta2 * t2
                interp3 = Signal(interp_expr.shape(), name=f"interp3_{lane}")
                with m.If(advance):
                    m.d.sync += [d3.eq(d_expr), interp3.eq(interp_expr)]

            # Stage 4: gradient product; align every op's result to ``frac``.
            # Ops of tables not built output 0 (the engines refuse them). The
            # product is registered apart (a multi-DSP product has no time
            # left for a mux) and chosen in stage 5.
            fwd_ops = tuple(TABLE_OPS[t.name][0] for t in tabs)
            bwd_ops = tuple(TABLE_OPS[t.name][1] for t in tabs)
            cases = [
                ((EltwiseOp.REQUANT, EltwiseOp.BIAS), sum3 << (frac - in_frac)),
                ((EltwiseOp.RELU, EltwiseOp.BIAS_RELU, EltwiseOp.RELU_BWD),
                 relu3 << (frac - in_frac - sf)),
            ]
            if tabs:
                cases += [(fwd_ops, interp3 << (frac - TABLE_FORMAT.frac - tb_max))]
                product_expr = sum3 * d3
                product4 = Signal(product_expr.shape(), name=f"product4_{lane}")
                use_product4 = Signal(name=f"use_product4_{lane}")
                with m.If(advance):
                    m.d.sync += [product4.eq(product_expr),
                                 use_product4.eq(is_op(ops[2], *bwd_ops))]
                aligned_product = product4 << (frac - in_frac - af)
            width = max([len(value) for _, value in cases]
                        + ([len(aligned_product)] if tabs else [])) + 1
            wide4 = Signal(signed(width), name=f"wide4_{lane}")
            with m.If(advance):
                with m.Switch(ops[2]):
                    for codes, value in cases:
                        with m.Case(*codes):
                            m.d.sync += wide4.eq(value)
                    with m.Default():
                        m.d.sync += wide4.eq(0)
            wide = Signal(signed(width), name=f"wide_{lane}")
            m.d.comb += wide.eq(Mux(use_product4, aligned_product, wide4) if tabs else wide4)

            # Stage 5: the one rounding (half to even) and saturation.
            with m.If(advance):
                m.d.sync += out.payload[lane].eq(
                    saturate(round_half_even(wide, frac - out_fmt.frac), out_fmt.bits))
        return m

