"""Streaming elementwise unit: bias, ReLU/Sigmoid/TanH forward and backward,
requantisation (bit-exact with ``fecaffe_hw.fixedpoint.activation``)."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fecaffe_hw.fixedpoint.activation import (
    SLOPE_FORMAT, TABLE_FORMAT, EltwiseOp, activation_tables,
)
from fecaffe_hw.fixedpoint.format import Format

from .multiplier import product_latency, registered_product

__all__ = ["Eltwise", "EltwiseOp", "TABLES", "TABLE_OPS", "table_names", "wide_frac",
           "derivative_shape", "round_half_even", "saturate", "shift_saturate",
           "shift_saturate_mask"]

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


def derivative_shape(aux_fmt):
    """The signed shape that holds every rounded activation derivative
    ``round_half_even(aux * (1 - aux))`` (sigmoid) and ``round_half_even(1 -
    aux * aux)`` (tanh) at ``aux_fmt.frac``, for ``aux`` of ``aux_fmt``:
    bounded by value, not by the width of the exact product (the amaranth
    shape of the expression is twice as wide, and the gradient multiplier
    would need three DSPs instead of one)."""
    lo, hi, one = aux_fmt.min_int, aux_fmt.max_int, 1 << aux_fmt.frac
    sigmoid = [a * (one - a) for a in (lo, hi)]
    if lo <= one // 2 <= hi:
        sigmoid.append((one // 2) * (one - one // 2))     # the parabola's top
    tanh = [one * one - a * a for a in (lo, hi, 0)]
    # Rounding lands between the floor and the ceiling of the quotient.
    values = sigmoid + tanh
    low, high = min(values) // one, -(-max(values) // one)
    return signed(max(high.bit_length(), (-low - 1).bit_length()) + 1)


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
    quantisation. One beat per cycle; :attr:`latency` cycles (10 for the
    engine's formats) from a beat taken to its result. The pipeline never
    stalls: results queue in a FIFO and ``data_in.ready`` (a register)
    admits a beat only with room reserved for it there, so back-pressure
    reaches no pipeline register and every product is a :class:`Multiplier`
    with its DSP registers.

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

    def _product_shapes(self):
        """``{name: (a_shape, b_shape)}`` of the core's multipliers, from the
        formats alone (their latencies set the pipeline's)."""
        in_frac, af = self.in_fmt.frac, self.aux_fmt.frac
        x, bias = Signal(signed(self.in_fmt.bits)), Signal(signed(self.bias_fmt.bits))
        sum_shape = (x + (bias << (in_frac - self.bias_fmt.frac))).shape()
        shapes = {"scaled": (sum_shape, signed(self.slope_fmt.bits))}
        if self._tables:
            aux, pick = Signal(signed(self.aux_fmt.bits)), Signal()
            one = 1 << af
            deriv_b = Mux(pick, one - aux, aux).shape()
            tb_max = max(t.offset_bits(in_frac) for t in self._tables.values())
            shapes.update({
                "deriv": (aux.shape(), deriv_b),
                "interp": (signed(TABLE_FORMAT.bits), unsigned(tb_max + 1)),
                "product": (sum_shape, derivative_shape(self.aux_fmt)),
            })
        return shapes

    def _stages(self):
        """The stage each result is registered in (stage 0: the beat is taken)."""
        latency = {name: product_latency(a, b)
                   for name, (a, b) in self._product_shapes().items()}
        # Operands enter their multiplier in the stage their registers are:
        # aux and op at 0, the table entry at 2 (read at 1, registered
        # again), the biased sum at 2, the rounded derivative a cycle after
        # its product.
        stages = {"scaled": 2 + latency["scaled"]}
        if self._tables:
            stages["deriv"] = latency["deriv"]
            stages["d"] = stages["deriv"] + 1
            stages["interp"] = 2 + latency["interp"] + 1
            stages["product_in"] = max(2, stages["d"])
            stages["product"] = stages["product_in"] + latency["product"]
        stages["wide"] = max(stages.values()) + 1
        stages["out"] = stages["wide"] + 1
        return stages

    @property
    def latency(self):
        """Cycles from a beat taken to its result on ``data_out`` (no stalls)."""
        # The result FIFO's write to its registered read: two cycles.
        return self._stages()["out"] + 2

    @property
    def _fifo_depth(self):
        # Credits for every beat in flight plus the FIFO's own two cycles
        # and the credit's register: one beat per cycle with no stalls.
        return self._stages()["out"] + 4

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
        stages = self._stages()
        shapes = self._product_shapes()
        last = stages["out"]

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

        # The pipeline runs free: no stage waits, so no clock enable fans out
        # from ``data_out.ready`` and every multiplier keeps its own
        # registers (a MULT18X18D's have no enable here). Results queue in a
        # FIFO, and a beat is taken only with room for it there (credits).
        width = out_fmt.bits * self.lanes
        m.submodules.results = results = SyncFIFOBuffered(width=width, depth=self._fifo_depth)
        credits = Signal(range(self._fifo_depth + 1))
        room = Signal(init=1)
        taken = self.data_in.valid & room
        popped = results.r_rdy & results.r_en
        next_credits = credits + taken - popped
        m.d.sync += [credits.eq(next_credits), room.eq(next_credits < self._fifo_depth)]
        m.d.comb += [self.data_in.ready.eq(room),
                     self.data_out.valid.eq(results.r_rdy),
                     self.data_out.payload.eq(results.r_data),
                     results.r_en.eq(self.data_out.ready)]

        def delayed(value, stage, to, name):
            """``value``, the beat's at ``stage``, in stage ``to``."""
            for k in range(stage + 1, to + 1):
                reg = Signal.like(value, name=f"{name}{k}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        def product(name, lane, a, b):
            # The operands at the shapes the latencies were worked out for.
            a_shape, b_shape = shapes[name]
            a_in = Signal(a_shape, name=f"{name}_a_{lane}")
            b_in = Signal(b_shape, name=f"{name}_b_{lane}")
            m.d.comb += [a_in.eq(a), b_in.eq(b)]
            return registered_product(m, f"{name}_{lane}", a_in, b_in)

        valid = delayed(taken, 0, last, "valid")
        op = {0: self.op}
        for k in range(1, stages["wide"]):
            op[k] = delayed(op[k - 1], k - 1, k, "op")
        slope = delayed(self.slope, 0, 2, "slope")
        m.d.comb += bias_r.addr.eq(self.data_in.payload.index)

        def is_op(sig_, *codes):
            return Cat(*(sig_ == code for code in codes)).any()

        payload = self.data_in.payload
        wide_k = stages["wide"] - 1       # the stage every result is chosen in
        one = 1 << af
        if len(tabs) == 2:
            # Which derivative a lane forms, in the two stages that use it.
            sigmoid_bwd = {0: is_op(op[0], EltwiseOp.SIGMOID_BWD),
                           stages["deriv"]: is_op(op[stages["deriv"]], EltwiseOp.SIGMOID_BWD)}
        elif tabs:
            sigmoid_bwd = dict.fromkeys((0, stages["deriv"]), Const(tabs[0].name == "sigmoid"))
        lane_out = []
        for lane in range(self.lanes):
            x0, aux0 = payload.x[lane], payload.aux[lane]
            x1 = delayed(x0, 0, 1, f"x_{lane}_")
            aux1 = delayed(aux0, 0, 1, f"aux_{lane}_")
            if tabs:
                # Table address and interpolation offset from the beat itself.
                port = table.read_port()
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
                m.d.sync += t1.eq(offset)

                # Interpolation. The block RAM's entry is registered before
                # the multiplier: the read's clock-to-out and the hop to
                # wherever the placer found a free DSP site did not fit a
                # cycle (14.1 ns routed on the 10x11 ULX3S plan).
                entry2 = delayed(port.data, 1, 2, f"entry_{lane}_")
                t2 = delayed(t1, 1, 2, f"t_{lane}_")
                delta_t = product("interp", lane, entry2.delta, t2)
                base = delayed(entry2.base, 2, stages["interp"] - 1, f"base_{lane}_")
                interp_expr = (base << tb_max) + delta_t
                interp = Signal(interp_expr.shape(), name=f"interp_{lane}")
                m.d.sync += interp.eq(interp_expr)

                # Derivative of the stored output: sigmoid aux * (1 - aux),
                # tanh 1 - aux * aux, one multiplier for both.
                raw = product("deriv", lane, aux0, Mux(sigmoid_bwd[0], one - aux0, aux0))
                deriv = Mux(sigmoid_bwd[stages["deriv"]], raw, (one * one) - raw)
                d = Signal(derivative_shape(aux_fmt), name=f"d_{lane}")
                m.d.sync += d.eq(round_half_even(deriv, af))

            # The bias add and the ReLU sign (stage 2).
            bias = bias_r.data[lane] << (in_frac - self.bias_fmt.frac)
            with_bias = is_op(op[1], EltwiseOp.BIAS, EltwiseOp.BIAS_RELU)
            sum_expr = x1 + Mux(with_bias, bias, 0)
            sum2 = Signal(sum_expr.shape(), name=f"sum2_{lane}")
            relu_pos2 = Signal(name=f"pos2_{lane}")
            m.d.sync += [sum2.eq(sum_expr),
                         relu_pos2.eq(Mux(op[1] == EltwiseOp.RELU_BWD, aux1 > 0, sum_expr > 0))]
            scaled = product("scaled", lane, sum2, slope)

            # Every op's exact result, aligned to ``frac``, chosen in one
            # stage from registers. Ops of tables not built output 0 (the
            # engines refuse them).
            sum_w = delayed(sum2, 2, wide_k, f"sum_{lane}_")
            relu_pos_w = delayed(relu_pos2, 2, wide_k, f"pos_{lane}_")
            relu_w = Mux(relu_pos_w, sum_w << sf, delayed(scaled, stages["scaled"], wide_k,
                                                           f"scaled_{lane}_"))
            cases = [
                ((EltwiseOp.REQUANT, EltwiseOp.BIAS), sum_w << (frac - in_frac)),
                ((EltwiseOp.RELU, EltwiseOp.BIAS_RELU, EltwiseOp.RELU_BWD),
                 relu_w << (frac - in_frac - sf)),
            ]
            if tabs:
                fwd_ops = tuple(TABLE_OPS[t.name][0] for t in tabs)
                bwd_ops = tuple(TABLE_OPS[t.name][1] for t in tabs)
                k_in = stages["product_in"]
                grad = product("product", lane, delayed(sum2, 2, k_in, f"sum_p_{lane}_"),
                               delayed(d, stages["d"], k_in, f"d_{lane}_"))
                cases += [
                    (fwd_ops, delayed(interp, stages["interp"], wide_k, f"interp_{lane}_")
                     << (frac - TABLE_FORMAT.frac - tb_max)),
                    (bwd_ops, delayed(grad, stages["product"], wide_k, f"grad_{lane}_")
                     << (frac - in_frac - af)),
                ]
            wide = Signal(signed(max(len(value) for _, value in cases) + 1), name=f"wide_{lane}")
            with m.Switch(op[wide_k]):
                for codes, value in cases:
                    with m.Case(*codes):
                        m.d.sync += wide.eq(value)
                with m.Default():
                    m.d.sync += wide.eq(0)

            # The one rounding (half to even) and saturation.
            result = Signal(signed(out_fmt.bits), name=f"result_{lane}")
            m.d.sync += result.eq(saturate(round_half_even(wide, frac - out_fmt.frac),
                                           out_fmt.bits))
            lane_out.append(result)
        m.d.comb += [results.w_data.eq(Cat(*lane_out)), results.w_en.eq(valid)]
        return m
