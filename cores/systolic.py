"""Output-stationary systolic MAC array computing GEMM tiles."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .attributes import LOCAL_REGISTER
from .multiplier import Multiplier

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """``rows x cols`` processing elements computing ``C = A @ B`` one tile at a time.

    ``A`` is ``rows x K``, ``B`` is ``K x cols``, signed ``data_width``-bit integers;
    ``K >= 1`` is chosen per tile by the ``last`` flag. Each processing element
    (PE) keeps its own accumulator of ``acc_width`` bits that wraps in two's
    complement, like a DSP48 P register (matches ``fixedpoint.gemm``).

    Ports
    -----
    operands : In(stream)
        One ``k`` step per beat: ``a`` (column ``k`` of ``A``, ``rows`` values),
        ``b`` (row ``k`` of ``B``, ``cols`` values), ``last`` on the tile's final
        ``k``. The next beat after ``last`` starts a new tile.
    results : Out(stream)
        ``C`` drained one row per beat (``cols`` values), row 0 first.

    Throughput and latency
    ----------------------
    One operand beat per cycle, i.e. one MAC per PE per cycle, for back-to-back
    tiles with ``K >= rows``: each PE hands its finished accumulator to the
    drain path in the cycle it completes and starts the next tile at once, so
    the array never waits for the drain unless the result consumer stalls.
    Results leave at one row per cycle, so a tile with ``K < rows`` holds its
    ``last`` beat (``ready`` low) until ``rows`` cycles after the previous
    tile's ``last``. The grid never stalls (no enable fans out to every
    PE): a tile's ``last`` beat is taken only when the output FIFO
    (:attr:`result_depth` rows) has room reserved for all its rows, so when
    results cannot drain ``operands.ready`` drops on a ``last`` beat and
    nothing is lost. The FIFO is deep enough that reservations never hold
    back a consumer taking one row per cycle. Row ``i`` of a tile is offered
    ``cols + 4 + i`` cycles after its ``last`` beat is accepted (last row after
    ``rows + cols + 3``): operands are skewed inside the core (row ``i`` of
    ``A`` and column ``j`` of ``B`` delayed ``i`` and ``j`` cycles) and the
    outputs de-skewed again. So ``N`` back-to-back tiles of depth ``K >= rows``
    take ``N * K + rows + cols + 4`` cycles from first beat to last row taken:
    utilisation ``N * K / (N * K + rows + cols + 4)``. ``operands.ready``
    depends combinationally on ``operands.payload.last`` (the pacing and the
    reservation above), never on ``results.ready``.

    Reset drops the tiles in flight: the step flags and the output FIFO are
    reset, the operand, accumulator and drain registers are not (a tile's
    first beat clears its accumulators), which keeps nearly all of the
    array's flip-flops off the reset net.

    Parameters
    ----------
    rows, cols : int >= 1
    data_width : 2..24
        Operand width. Up to 18 bits: one DSP48E1 (25x18 multiplier) per PE;
        19..24 bits: both operands exceed the 18-bit port, and yosys splits the
        product over two DSP48E1s per PE. 25 (the A port's width) is rejected
        because the accumulator would have to exceed 48 bits.
    acc_width : 2 * data_width .. 48
        Accumulator width; at most 48 so it fits the DSP48E1 P register.
    """

    def __init__(self, *, rows, cols, data_width, acc_width):
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Array {name} must be a positive integer, not {value!r}")
        if (not isinstance(data_width, int) or isinstance(data_width, bool)
                or not 2 <= data_width <= 25):
            raise ValueError(f"Data width must be an integer in 2..25 (DSP48E1 multiplier is "
                             f"25x18), not {data_width!r}")
        if 2 * data_width > 48:
            raise ValueError(f"Data width {data_width} needs an accumulator of at least "
                             f"{2 * data_width} bits, above the 48-bit DSP48E1 P register")
        if (not isinstance(acc_width, int) or isinstance(acc_width, bool)
                or not 2 * data_width <= acc_width <= 48):
            raise ValueError(f"Accumulator width must be an integer in {2 * data_width}..48 "
                             f"(twice data width {data_width}, at most the 48-bit DSP48E1 "
                             f"P register), not {acc_width!r}")
        self._rows, self._cols = rows, cols
        self._data_width, self._acc_width = data_width, acc_width
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "results": Out(stream.Signature(self.result_layout)),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    data_width = property(lambda self: self._data_width)
    acc_width = property(lambda self: self._acc_width)

    @property
    def result_depth(self):
        """Rows the output FIFO holds: the tiles in flight from a ``last``
        beat to their last row (``rows + cols + 5`` cycles, one tile per at
        least ``rows`` cycles), plus the tile being taken."""
        return self.rows * (-(-(self.rows + self.cols + 5) // self.rows) + 1)

    @property
    def operand_layout(self):
        return data.StructLayout({
            "a": data.ArrayLayout(signed(self.data_width), self.rows),
            "b": data.ArrayLayout(signed(self.data_width), self.cols),
            "last": 1,
        })

    @property
    def result_layout(self):
        return data.ArrayLayout(signed(self.acc_width), self.cols)

    def elaborate(self, platform):
        m = Module()
        rows, cols, dw, aw = self.rows, self.cols, self.data_width, self.acc_width
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1})

        # A tile's results occupy each column's drain bus for `rows` cycles, so
        # consecutive `last` beats must be at least `rows` cycles apart.
        since_last = Signal(range(rows + 1), init=rows)
        expect_first = Signal(init=1)
        # Rows of the output FIFO promised to tiles whose `last` beat was
        # taken and not yet taken by the consumer. The grid runs freely, so a
        # tile starts draining whatever the consumer does: it may only finish
        # (take its `last`) when all its rows have a place.
        depth = self.result_depth
        reserved = Signal(range(depth + 1))
        tile_room = Signal()
        m.d.comb += tile_room.eq(reserved <= depth - rows)
        last_held = self.operands.payload.last & ((since_last < rows) | ~tile_room)
        m.d.comb += self.operands.ready.eq(~last_held)
        take = Signal()
        m.d.comb += take.eq(self.operands.valid & self.operands.ready)
        with m.If(take & self.operands.payload.last):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last < rows):
            m.d.sync += since_last.eq(since_last + 1)
        with m.If(take):
            m.d.sync += expect_first.eq(self.operands.payload.last)
        popped = self.results.valid & self.results.ready
        m.d.sync += reserved.eq(reserved + Mux(take & self.operands.payload.last, rows, 0)
                                - popped)

        entry = Signal(flags)
        m.d.comb += [
            entry.valid.eq(take),
            entry.first.eq(expect_first),
            entry.last.eq(self.operands.payload.last),
        ]

        def delayed(value, n, name, reset_less=False):
            for stage in range(n):
                reg = Signal.like(value, name=f"{name}_d{stage}", reset_less=reset_less)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        # Only the step flags are reset. Operands, accumulators and the drain
        # are data: a tile's `first` clears its accumulators, and nothing
        # reads a value whose `valid` flag was reset. Leaving them out takes
        # most of the array's flip-flops off the reset net, which otherwise
        # reaches every slice of the array.
        # Skew: row i of A (with the step flags) and column j of B enter i, j cycles late.
        a_in = [delayed(self.operands.payload.a[i], i, f"skew_a{i}", reset_less=True)
                for i in range(rows)]
        f_in = [delayed(entry, i, f"skew_f{i}") for i in range(rows)]
        b_in = [delayed(self.operands.payload.b[j], j, f"skew_b{j}", reset_less=True)
                for j in range(cols)]

        a_reg = [[Signal(signed(dw), name=f"a_{i}_{j}", reset_less=True) for j in range(cols)]
                 for i in range(rows)]
        b_reg = [[Signal(signed(dw), name=f"b_{i}_{j}", reset_less=True) for j in range(cols)]
                 for i in range(rows)]
        # The step flags are the same on a whole anti-diagonal; each PE keeps
        # its own copy so that they stay local (see LOCAL_REGISTER).
        local = {LOCAL_REGISTER: 1}
        f_reg = [[Signal(flags, name=f"f_{i}_{j}", attrs=local) for j in range(cols)]
                 for i in range(rows)]
        done = [[Signal(name=f"done_{i}_{j}") for j in range(cols)] for i in range(rows)]
        acc = [[Signal(signed(aw), name=f"acc_{i}_{j}", reset_less=True) for j in range(cols)]
               for i in range(rows)]

        for i in range(rows):
            for j in range(cols):
                a_src = a_in[i] if j == 0 else a_reg[i][j - 1]
                b_src = b_in[j] if i == 0 else b_reg[i - 1][j]
                m.d.sync += [
                    a_reg[i][j].eq(a_src),
                    b_reg[i][j].eq(b_src),
                    f_reg[i][j].eq(f_in[i] if j == 0 else f_reg[i][j - 1]),
                ]
                # The multiplier registers its own copy of a_reg and b_reg
                # (merged with them where yosys packs a DSP48E1: AREG/BREG,
                # MREG, then PREG + ALU; the MULT18X18D's own registers on
                # the ECP5), so the product lands two cycles after a_src.
                pe_mult = Multiplier(a_shape=signed(dw), b_shape=signed(dw))
                m.submodules[f"mult_{i}_{j}"] = pe_mult
                m.d.comb += [pe_mult.a.eq(a_src), pe_mult.b.eq(b_src)]
                product = pe_mult.p
                m_flags = Signal(flags, name=f"mf_{i}_{j}", attrs=local)
                m.d.sync += [
                    m_flags.eq(f_reg[i][j]),
                    done[i][j].eq(m_flags.valid & m_flags.last),
                ]
                with m.If(m_flags.valid):
                    m.d.sync += acc[i][j].eq(Mux(m_flags.first, 0, acc[i][j]) + product)

        # Drain: in column j, PE (i, j) finishes one cycle after PE (i-1, j), so
        # at most one `done` is high per column and the finished accumulator is
        # picked straight out of its P register, the cycle before it restarts.
        column = []
        column_valid = []
        for j in range(cols):
            bus = Signal(signed(aw), name=f"drain_{j}", reset_less=True)
            bus_valid = Signal(name=f"drain_valid_{j}")
            picked = Const(0, aw)
            for i in range(rows):
                picked = picked | Mux(done[i][j], acc[i][j], 0)
            m.d.sync += [
                bus.eq(picked),
                bus_valid.eq(Cat(done[i][j] for i in range(rows)).any()),
            ]
            column.append(delayed(bus, cols - 1 - j, f"deskew_{j}", reset_less=True))
            column_valid.append(bus_valid)
        row_valid = column_valid[cols - 1]

        # Asynchronous read: a row is offered the cycle after it is written,
        # as with the shallow FIFO this replaced. On xc7 it is distributed
        # RAM; yosys may put it in block RAM (the whole-chip ECP5 build
        # does), moving the read address register into the RAM's output
        # register: the same behaviour, a slower clock-to-out.
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFO(width=cols * aw, depth=depth)
        m.d.comb += [
            out_fifo.w_data.eq(Cat(column)),
            out_fifo.w_en.eq(row_valid),
            self.results.payload.eq(out_fifo.r_data),
            self.results.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.results.ready),
        ]
        return m
