"""A registered multiplier that uses the FPGA's own DSP registers where it can."""

from amaranth.hdl import (Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Shape,
                          Signal, signed)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Multiplier", "Mult18x18d", "product_latency", "registered_product",
           "constant_product", "small_product"]

# The MULT18X18D's ports are signed 18-bit: an unsigned operand fits in 17 bits.
_PORT_BITS = 18


def _fits_port(shape):
    return shape.width <= _PORT_BITS - (not shape.signed)


def _pieces(shape):
    """``(offset, shape)`` of the slices of an operand of ``shape`` that each
    fit a MULT18X18D port: unsigned 17-bit slices from the bottom, the top
    slice keeping the operand's signedness (two's complement: only the top
    slice carries the sign)."""
    if _fits_port(shape):
        return [(0, shape)]
    pieces, offset = [], 0
    while not _fits_port(Shape(shape.width - offset, shape.signed)):
        pieces.append((offset, Shape(_PORT_BITS - 1)))
        offset += _PORT_BITS - 1
    pieces.append((offset, Shape(shape.width - offset, shape.signed)))
    return pieces


def _balanced_sum(terms):
    """The sum of ``terms`` as a balanced tree of adders (depth log2 of their count)."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def constant_product(value, constant):
    """``value * constant`` for an unsigned ``value`` and a non-negative integer
    ``constant``, as shifted copies of ``value`` added and subtracted (the
    constant's canonical signed digits: at most one term per two bits).

    yosys maps any ``$mul`` of two operands of 2 bits or more to an ECP5
    MULT18X18D; once the array has taken nearly all of them, a small one goes
    wherever one is left, often across the die. This adder tree places
    beside its operand. The result is ``len(value) + max(1,
    constant.bit_length())`` bits, unsigned."""
    if not isinstance(constant, int) or constant < 0:
        raise ValueError(f"Constant must be a non-negative integer, not {constant!r}")
    width = len(value) + max(constant.bit_length(), 1)
    digits, k, c = [], 0, constant
    while c:
        if c & 1:
            digit = 2 - (c & 3)          # +1 or -1: the next bits become zeros
            digits.append((digit, k))
            c -= digit
        c >>= 1
        k += 1
    if not digits:
        return Const(0, width)
    wide = value.as_unsigned()
    positive = [wide << k for d, k in digits if d > 0]
    negative = [wide << k for d, k in digits if d < 0]
    total = _balanced_sum(positive)
    if negative:
        total = total - _balanced_sum(negative)
    total = total[:width]
    return Cat(total, Const(0, width - len(total))) if len(total) < width else total


def small_product(a, b):
    """``a * b`` for small unsigned ``a`` and ``b``, as ``len(a)`` partial
    products added in LUTs rather than in a MULT18X18D (see
    :func:`constant_product`). ``len(a) + len(b)`` bits."""
    width = len(a) + len(b)
    return _balanced_sum(Mux(a[i], b.as_unsigned() << i, 0) for i in range(len(a)))[:width]


class Multiplier(wiring.Component):
    """``p = a * b`` with registered operands and a registered product.

    Ports
    -----
    a, b : In(a_shape), In(b_shape)
        Operands, sampled every cycle (no enable).
    p : Out(a_shape * b_shape)
        The exact product of ``a`` and ``b`` as they were :attr:`latency`
        cycles before.

    en : In(1), with ``enable=True`` only
        Every register of the multiplier (the DSP's own included, through its
        clock enable) takes its input only while ``en`` is high, so it can
        be a stage of a pipeline that stalls: a product is then
        :attr:`latency` enabled cycles late.

    Latency two cycles (one with ``input_registers=False``, for operands
    that are registers already), one product per cycle. The registers reset
    to zero with the ``sync`` domain.

    An operand wider than a MULT18X18D port (18 bits signed, 17 unsigned) is
    cut into slices that fit (:meth:`fits_mult18x18d` is false): one
    multiplier per pair of slices, their products shifted into place and
    summed in a register, one more cycle of latency, on every platform
    alike so that latency depends on the shapes only. A 32 x 16 product is
    two multipliers and an adder between registers, instead of a
    combinational multiply spread over two DSPs.

    Why a component: the registers around a multiplier are where timing is
    won or lost once the array fills the device. Xilinx tools pack fabric
    registers into DSP48E1s (AREG/BREG, MREG) by themselves; yosys does not
    do that for the ECP5, so there every multiplier stayed combinational, the
    placer put it dozens of tiles from its registers, and the multiply plus
    two long hops shared one cycle. On a platform whose ``family`` is
    ``"ecp5"``, and with both operands within the 18-bit ports, this
    instantiates a :class:`Mult18x18d` with its input and output registers
    enabled, so each long hop gets a cycle of its own. Elsewhere (other
    families, simulation) the registers are ordinary ``sync`` logic, the
    shape DSP48 inference expects; a fabric register elsewhere fed from the
    same source as ``a`` or ``b`` is merged with the operand register there.
    """

    def __init__(self, *, a_shape, b_shape, input_registers=True, enable=False):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        for name, shape in (("a_shape", a_shape), ("b_shape", b_shape)):
            if shape.width < 1:
                raise ValueError(f"Multiplier {name} must be at least 1 bit wide, not {shape!r}")
        _check_bool("input_registers", input_registers)
        _check_bool("enable", enable)
        self._a_shape, self._b_shape = a_shape, b_shape
        self._input_registers = input_registers
        self._enable = enable
        product = Shape(a_shape.width + b_shape.width, a_shape.signed or b_shape.signed)
        members = {"a": In(a_shape), "b": In(b_shape), "p": Out(product)}
        if enable:
            members["en"] = In(1)
        super().__init__(members)

    @property
    def a_shape(self):
        return self._a_shape

    @property
    def b_shape(self):
        return self._b_shape

    @property
    def input_registers(self):
        return self._input_registers

    @property
    def enable(self):
        return self._enable

    @property
    def latency(self):
        return product_latency(self._a_shape, self._b_shape,
                               input_registers=self._input_registers)

    def fits_mult18x18d(self):
        """Whether both operands fit an ECP5 MULT18X18D's 18-bit ports (else
        they are cut into slices that do; see above)."""
        return _fits_port(self._a_shape) and _fits_port(self._b_shape)

    def elaborate(self, platform):
        m = Module()
        if not self.fits_mult18x18d():
            terms = []
            for a_offset, a_shape in _pieces(self._a_shape):
                for b_offset, b_shape in _pieces(self._b_shape):
                    part = Multiplier(a_shape=a_shape, b_shape=b_shape,
                                      input_registers=self._input_registers,
                                      enable=self._enable)
                    m.submodules[f"part_{a_offset}_{b_offset}"] = part
                    m.d.comb += [
                        part.a.eq(self.a[a_offset:a_offset + a_shape.width]),
                        part.b.eq(self.b[b_offset:b_offset + b_shape.width]),
                    ]
                    if self._enable:
                        m.d.comb += part.en.eq(self.en)
                    terms.append(part.p << (a_offset + b_offset))
            with m.If(self.en if self._enable else 1):
                m.d.sync += self.p.eq(_balanced_sum(terms))
        elif getattr(platform, "family", None) == "ecp5":
            m.submodules.dsp = dsp = Mult18x18d(input_registers=self._input_registers,
                                                enable=self._enable)
            # Both ports sign-extended: an unsigned operand is at most 17 bits
            # here, so it stays non-negative as a signed 18-bit value.
            m.d.comb += [
                dsp.a.eq(self.a),
                dsp.b.eq(self.b),
                self.p.eq(dsp.p),
            ]
            if self._enable:
                m.d.comb += dsp.en.eq(self.en)
        else:
            _model(m, self, self._input_registers, self._enable)
        return m


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")


def _model(m, mult, input_registers, enable):
    """``mult.p = mult.a * mult.b`` in ``sync`` registers, added to ``m``:
    the operands' registers first unless not ``input_registers``, all of
    them held while ``mult.en`` is low if ``enable``."""
    with m.If(mult.en if enable else 1):
        if input_registers:
            a = Signal.like(mult.a, name="a_reg")
            b = Signal.like(mult.b, name="b_reg")
            m.d.sync += [a.eq(mult.a), b.eq(mult.b), mult.p.eq(a * b)]
        else:
            m.d.sync += mult.p.eq(mult.a * mult.b)


def product_latency(a_shape, b_shape, *, input_registers=True):
    """The :attr:`Multiplier.latency` of a multiplier of these shapes, without making one."""
    a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
    split = not (_fits_port(a_shape) and _fits_port(b_shape))
    return (2 if input_registers else 1) + split


def registered_product(m, name, a, b, *, input_registers=True, enable=None):
    """``a * b`` through a :class:`Multiplier` added to ``m`` as submodule
    ``name``, its operands wired from ``a`` and ``b`` (and its ``en`` from
    ``enable``, if given); returns its product
    (``Multiplier(a_shape=a.shape(), b_shape=b.shape()).latency`` cycles
    late, enabled cycles if ``enable`` is given)."""
    mult = Multiplier(a_shape=a.shape(), b_shape=b.shape(), input_registers=input_registers,
                      enable=enable is not None)
    m.submodules[name] = mult
    m.d.comb += [mult.a.eq(a), mult.b.eq(b)]
    if enable is not None:
        m.d.comb += mult.en.eq(enable)
    return mult.p


class Mult18x18d(wiring.Component):
    """The ECP5 MULT18X18D in signed 18 x 18 mode, its output register on and its
    input registers on unless ``input_registers=False``.

    Ports
    -----
    a, b : In(signed(18))
    p : Out(signed(36))
        ``a * b`` two cycles late (one without input registers).
    en : In(1), with ``enable=True`` only
        The clock enable ``CE0`` of every register in use (else tied high).

    On a platform it is the primitive, clocked by ``sync`` (``CLK0``, ``CE0``
    high or ``en``) with ``sync``'s reset on ``RST0`` (``RESETMODE =
    "SYNC"``), and the pipeline register off. (Whether the block's reset
    waits for ``CE0`` is not modelled: the model's reset does not; no user
    here reads a product that a reset, rather than ``en``, made valid.) ``elaborate(None)`` (simulation) gives
    :meth:`model`, a behavioural model of that configuration as documented
    in Lattice's sysDSP usage guide (TN1267): yosys ships the primitive only
    as a black box. A platform with a ``get_mult18x18d(mult)`` method
    elaborates it instead, as Amaranth's ``get_ff_sync`` hook does for
    synchronisers (the tests use this to simulate the ECP5 wiring).

    nextpnr times the registered configuration as ``MULT18X18D:REGS=ALL``
    (setup to ``CLK0`` at the A and B pins, clock to ``P``: the multiply is
    inside the block, between its registers), the one without input
    registers as ``REGS=OUTPUT`` (the multiply is in the A/B setup time).
    """

    def __init__(self, *, input_registers=True, enable=False):
        _check_bool("input_registers", input_registers)
        _check_bool("enable", enable)
        self._input_registers = input_registers
        self._enable = enable
        members = {"a": In(signed(18)), "b": In(signed(18)), "p": Out(signed(36))}
        if enable:
            members["en"] = In(1)
        super().__init__(members)

    @property
    def latency(self):
        return 2 if self._input_registers else 1

    def elaborate(self, platform):
        if platform is None:
            return self.model()
        if hasattr(platform, "get_mult18x18d"):
            return platform.get_mult18x18d(self)
        m = Module()
        ports = {}
        for i in range(18):
            ports[f"i_A{i}"] = self.a[i]
            ports[f"i_B{i}"] = self.b[i]
            ports[f"i_C{i}"] = Const(0)
        for i in range(36):
            ports[f"o_P{i}"] = self.p[i]
        # The unused CLK1-3, CE1-3 and RST1-3 stay unconnected, as yosys's
        # own MULT18X18D mapping leaves them: nextpnr routes a constant on a
        # DSP's clock, enable, reset, SIGNED or SOURCE pin from one tie cell
        # (only A, B and C take a constant in the bitstream), and nine such
        # pins on each of ~140 multipliers made one of the largest nets of
        # the 10x11 SoC. C is a bitstream constant, so it may stay tied.
        inputs = "CLK0" if self._input_registers else "NONE"
        m.submodules.mult18x18d = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK=inputs, p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK=inputs, p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
            p_REG_PIPELINE_CLK="NONE",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_RESETMODE="SYNC",
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            i_CLK0=ClockSignal("sync"), i_CE0=self.en if self._enable else Const(1),
            i_RST0=ResetSignal("sync"),
            **ports)
        return m

    def model(self):
        """The behavioural model: a module with this component's ports."""
        m = Module()
        _model(m, self, self._input_registers, self._enable)
        return m
