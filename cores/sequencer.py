"""Sequencer: executes ``runtime.isa`` commands on the DMA, scratchpads and array.

Commands arrive as 32-bit words (``isa.WORDS_PER_COMMAND`` per command) and
issue in order; each goes to its unit as soon as that unit is free and no
hazard blocks it, so a DMA command overlaps a running GEMM (and the GEMM after
it waits only if it needs the words being loaded). Hazards are checked on
buffer word ranges: a DMA load into A or B waits for a GEMM still reading an
overlapping range of that buffer; a GEMM waits for a DMA writing its A or B
range; any DMA on C waits for the array to drain, and a GEMM waits for any DMA
on C. Double buffering is the compiler's choice of ranges (ping-pong halves).
Decode is registered: a command can issue two cycles after its last word
is taken at the earliest.

Commands executed (others set ``bad_command`` and are skipped, as are
commands with reserved bits, a wrong unit, or fields out of range):

* ``NOP``; ``SYNC`` waits for every unit to go idle; ``END`` does too and
  then pulses ``end``; ``HOST`` waits for idle, raises ``host_wait`` and
  resumes on ``host_resume``.
* ``DMA_LOAD`` / ``DMA_STORE`` (``cores/dma.py``): ``func`` is the buffer,
  ``offset`` a multiple of the buffer's lanes (``rows`` for A, ``cols`` for B
  and C). ``rows x cols`` is the tile as the operand sees it (A: ``m x k``,
  B: ``k x n``, C: ``m x n``), row-major in memory at ``addr`` with ``stride``
  bytes between rows; with ``TRANSPOSE_A`` or ``TRANSPOSE_B`` memory holds its
  transpose (``cols`` rows of ``rows`` elements). Rows must start on 32-bit
  words (``addr``, ``stride`` multiples of 4) and a stored row must fill whole
  words. ``shift`` is the DMA's (C load: left, store: round-half-even right,
  saturating). ``RESIDENT`` skips the command.
* ``DMA_LOAD``/``DMA_STORE`` with ``IM2COL``, ``FMAP`` or ``COL2IM``
  (``cores/fmap_dma.py``, model ``fixedpoint.tiles``): rows ``k0 ..`` and
  columns ``col0 ..`` of the im2col matrix (IM2COL loads, COL2IM
  saturating-add stores) or of the channel x position matrix of the output
  map (FMAP loads and stores) of the geometry the last ``SET_GEOMETRY`` on
  the line buffer set; element-granular (any alignment; partial words are
  read-modify-written). ``rows x cols`` is the operand's view as for plain
  moves; ``TRANSPOSE_B`` (IM2COL into B only) loads the im2col tile's
  transpose; ``stride`` must be 0. These moves and plain ones run one at a
  time (they share the DMA's place in the hazard checks).
* ``GEMM``: ``C[m x n] (+)= A[m x k] @ B[k x n]`` with ``m <= rows``,
  ``n <= cols``, ``k >= 1``, operands at ``a_offset``/``b_offset`` (multiples
  of ``rows``/``cols``), result rows at ``c_offset`` (a multiple of ``cols``);
  ``ACCUMULATE`` adds to C (wrapping at ``acc_width``, like the array's
  accumulators). ``BIAS``: the sequencer first loads ``m`` biases from
  ``bias_addr`` (word aligned) into its bias buffer, then adds bias ``i`` to
  every element of C row ``i`` as the tile drains, shifted left by
  ``bias_shift`` (0..``acc_width - data_width``) onto the accumulator's frac.
  ``TRANSPOSE_A``/``TRANSPOSE_B`` are bad commands on a GEMM: operands are
  transposed by the load.
* ``ELTWISE`` (``cores/eltwise_engine.py``): ``count`` int16 elements from
  ``src`` (and ``aux`` for ``RELU_BWD``, ``SIGMOID_BWD``, ``TANH_BWD``,
  ``ADD``) to ``dst``, requantised by ``shift`` (round half to even,
  saturating); every ``func`` of ``isa.EltwiseOp`` runs (``COPY`` and
  ``REQUANT`` requantise ``src``, ``ADD`` ``src + aux``, ``ZERO`` writes
  zeros). ``slope`` (ReLU only, else 0) is signed Q.16 within 25 bits.
  ``count`` must be even and addresses word aligned (the memory port has no
  byte enables); ``dst`` equals or avoids each region read. Sigmoid/TanH use
  the build's ``eltwise_in_frac`` (forward input) and ``eltwise_aux_frac``
  (backward ``y``): the ISA has no field for them; they are bad commands in a
  build without their table (``eltwise_tables``). The engine shares the
  memory port with the DMA, so an ELTWISE waits for the DMA to go idle and a
  DMA command waits for the ELTWISE; a GEMM (on-chip only) overlaps it.
* ``SET_GEOMETRY`` on unit ``POOL`` selects one of the build's
  ``pool_geometries`` (``height``, ``width``, kernel, stride, pad and
  ``out_h``/``out_w`` must match one exactly; ``channels``, the blob's channel
  count, and ``images``, the batch, are free, non-zero; ``group`` 0 or 1).
  It retires at once: a POOL_FWD copies the geometry when it starts. An
  unsupported geometry is a bad command and leaves none selected, so the
  POOL_FWDs after it are flagged too. On unit ``LINE_BUFFER`` it sets the
  convolution geometry of the IM2COL/FMAP/COL2IM moves after it (checked by
  each move; a running move keeps the geometry it started with).
* ``POOL_FWD`` (``cores/pool_engine.py``): channels ``c0 ..`` and images
  ``n0 ..`` of the NCHW int16 map at ``src`` pooled (``func``: MAX or AVE,
  a kind the geometry was built with) to the NCHW map at ``dst``,
  requantised by ``shift`` (-15..15; round half to even, saturating), with
  ``TRAINING`` and a non-zero ``index_addr`` also each MAX output's window
  index ``ky * kw + kx`` as a byte, bit-exact with ``fixedpoint.pooling``.
  Each image's tile of outputs (and indices) must start and end on 32-bit
  words (no byte enables); addresses word aligned; ``c0 + channels`` and
  ``n0 + images`` within the geometry's. It shares the memory port like
  ELTWISE. ``POOL_BWD`` (builds with ``pool_backward``) takes the same
  fields: the top gradient at ``src`` (and, for MAX, the indices POOL_FWD
  wrote at ``index_addr``) scatter-added into the bottom gradient at
  ``dst``, bit-exact with ``fixedpoint.pooling.pool_backward``.
* ``ACC_ADD``, ``ACC_BIAS``, ``SGD_UPDATE`` (``training`` 16-bit builds;
  ``cores/update_engine.py``, model ``fixedpoint.update``, legality as
  ``UpdateEngine.from_isa`` decides, on unit ``ACCUMULATOR``): ACC_ADD adds
  the ``rows x cols`` C tile at ``offset`` (a multiple of ``cols``, its rows
  within the C buffer) scaled by ``2**-shift`` into the ``grad_bits``-bit
  gradient words at ``grad_addr``; ACC_BIAS adds the sums of the int16
  ``images x channels x positions`` map at ``src``; SGD_UPDATE updates
  ``count`` int16 weights and histories and zeroes their gradients with the
  constants on ``sgd_rate`` (``Format(18, 20)``), ``sgd_momentum``
  (``Format(18, 17)``), ``sgd_decay`` (``Format(18, 26)``), unsigned, and
  ``sgd_norm`` (``fixedpoint.sgd.norm_multiplier(iter_size)``), sampled as
  each starts; ``lfsr_load`` reseeds the rounding LFSR with ``lfsr_seed``
  (between commands). The engine shares the memory port like ELTWISE (it
  waits for the DMA and the memory engines, they wait for it). An ACC_ADD
  also waits for the array to drain into C, and a GEMM whose C rows overlap
  a running ACC_ADD's waits for it (other GEMMs overlap it).

Ports: ``commands`` (In stream of 32-bit words), ``mem`` (``Out(MemoryPort())``),
``enable`` (In: fetch commands), ``busy`` (a command is held or a unit
works), ``dma_busy``, ``array_busy``, ``eltwise_busy``, ``pool_busy``,
``update_busy``, ``end``,
``host_wait``, ``host_resume`` (In), ``bad_command`` and ``mem_fault`` (one-cycle pulses, for
the ERROR register), ``counters`` (:data:`CounterIncrements`, per cycle),
``trace`` (:data:`TraceEvent`: each command as it leaves the issue slot);
``sgd_rate``, ``sgd_momentum``, ``sgd_decay`` (In(18)), ``sgd_norm``
(In(25), reset ``norm_multiplier(1)``), ``lfsr_seed`` (In(32)), ``lfsr_load``
(In(1): a one-cycle strobe; zero seeds are ignored).

Throughput: the array takes one ``k`` step per cycle while the scratchpads
feed it; back-to-back GEMMs stream without a gap (the drain of one overlaps
the next), so ``k >= rows`` keeps the array busy. The DMA moves a memory
word per cycle untransposed, an element per cycle transposed (A tiles), so a
32-bit tensor memory, not the array, bounds GEMM throughput: each ``k`` step
needs ``rows + cols`` operands, the port delivers two per cycle. ELTWISE
moves two elements per cycle with one operand, one with ``aux``. POOL_FWD
takes one input pixel per cycle (the line buffer's rate). The update engine
is bound by the port too: SGD_UPDATE moves 4 words per element (about 4
cycles each at one word per cycle), ACC_ADD 2 words per gradient, ACC_BIAS
about 3 cycles per (channel, image) span plus its words; each command has
about 26 cycles of setup.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from fecaffe_hw.fixedpoint.lfsr import LFSR_BITS
from fecaffe_hw.fixedpoint.sgd import NORM_FRAC, norm_multiplier
from fecaffe_hw.runtime import isa

from .eltwise import TABLES
from .eltwise_engine import EltwiseEngine
from .update_engine import UpdateEngine
from .pool_engine import PoolEngine, PoolGeometry
from .dma import BUFFER_A, BUFFER_B, BUFFER_C, BUFFER_BIAS, Dma, DmaCommand
from .fmap_dma import ConvGeometryLayout, FmapCommand, FmapDma, FmapMode
from .memory_port import MemoryPort
from .multiplier import constant_product, small_product
from .scratchpad import Scratchpad
from .systolic import SystolicArray

__all__ = ["Sequencer", "CounterIncrements", "TraceEvent", "TRACE_UNITS", "TRACE_UNIT_OF",
           "PoolGeometry"]

#: Per-cycle increments of the performance counters the sequencer drives
#: (``runtime.regmap`` names: BUSY_CYCLES, MACS, ARRAY_STALL_CYCLES,
#: MEM_STALL_CYCLES, MEM_READ_BYTES, MEM_WRITE_BYTES, COMMANDS_DONE).
def CounterIncrements(rows, cols):
    return data.StructLayout({
        "busy": 1,
        "macs": range(rows * cols + 1),
        "array_stall": 1,
        "mem_stall": 1,
        "mem_read_bytes": range(5),
        "mem_write_bytes": range(5),
        "commands_done": 2,
    })


#: The units ``TraceEvent.done`` reports, by bit: the array (GEMM), the DMA
#: (DMA_LOAD/DMA_STORE, feature-map moves included), ELTWISE, pooling
#: (POOL_FWD/POOL_BWD), the update engine (ACC_ADD/ACC_BIAS/SGD_UPDATE).
TRACE_UNITS = ("array", "dma", "eltwise", "pool", "update")
#: The ``runtime.isa.Unit`` each trace unit runs the commands of.
TRACE_UNIT_OF = {isa.Unit.ARRAY: "array", isa.Unit.DMA: "dma", isa.Unit.ELTWISE: "eltwise",
                 isa.Unit.POOL: "pool", isa.Unit.ACCUMULATOR: "update"}

#: ``trace``: a command left the sequencer's issue slot this cycle (started
#: on its unit, finished if instant, or refused), for simulation reports.
TraceEvent = data.StructLayout({
    "valid": 1,
    "opcode": 8,
    "layer": 16,
    "stage": 4,
    "bad": 1,
    # Units that finished a command this cycle (whether or not one issued),
    # one bit each; each unit runs its commands in issue order.
    "done": len(TRACE_UNITS),
})


def _field(words, opcode, name):
    for f in isa.COMMON_FIELDS + isa.LAYOUTS[opcode]:
        if f.name == name:
            value = words[f.word][f.lsb:f.lsb + f.width]
            return value.as_signed() if f.signed else value
    raise KeyError(name)


def _reserved(words, opcode):
    """Expression: a bit outside ``opcode``'s layout is set."""
    masks = [0] * isa.WORDS_PER_COMMAND
    masks[0] = 0xFF
    for f in isa.COMMON_FIELDS + isa.LAYOUTS[opcode]:
        masks[f.word] |= ((1 << f.width) - 1) << f.lsb
    return Cat((w & (~mask & 0xFFFFFFFF)).any() for w, mask in zip(words, masks)).any()


def _divide_exact(m, value, divisor, name):
    """``(value // divisor, value % divisor == 0)`` for an unsigned ``value`` and a
    constant ``divisor``, one cycle late: multiply by a rounded-up reciprocal
    (exact for every value of ``len(value)`` bits), so no divider is built.

    With ``magic = ceil(2**n / divisor)``, ``n = width + ell`` and
    ``2**ell >= divisor``, the product's low ``n`` bits are ``q * e + r *
    magic`` (``value = q * divisor + r``, ``e = divisor * magic - 2**n <
    divisor``), below ``magic`` exactly when ``r == 0`` (``q * e < 2**width
    <= magic``): the remainder test is one compare after the multiplier,
    not a second multiply and a wide equality. The product is formed in
    LUTs (:func:`constant_product`: a MULT18X18D left over by the array sat
    across the die, 11 ns away) and registered; the compare runs after the
    register."""
    width = len(value)
    if divisor & (divisor - 1) == 0:
        shift = divisor.bit_length() - 1
        quotient = Signal(max(width - shift, 1), name=f"{name}_quotient")
        exact = Signal(name=f"{name}_exact")
        m.d.sync += [quotient.eq(value >> shift), exact.eq(value[:shift] == 0 if shift else 1)]
        return quotient, exact
    ell = (divisor - 1).bit_length()
    n = width + ell
    magic = -(-(1 << n) // divisor)
    expr = constant_product(value, magic)
    product = Signal(len(expr), name=f"{name}_product")
    m.d.sync += product.eq(expr)
    return product >> n, product[:n] < magic


def _offset_word(m, offset, lanes, depth, name):
    """``(offset // lanes, exact)``, one cycle late, for a buffer of ``depth``
    words of ``lanes`` elements: ``exact`` if ``offset`` is a multiple of
    ``lanes`` below the power of two at or above ``depth * lanes`` (the
    quotient is right then). An offset past the buffer is refused by the
    range checks anyway, so only the bits below that power are divided: a
    narrower constant product (:func:`_divide_exact`'s adders) and a
    shorter carry chain than for all 24 bits."""
    bits = (depth * lanes - 1).bit_length()
    quotient, exact = _divide_exact(m, offset[:bits], lanes, name)
    if len(offset) > bits:
        in_low_bits = Signal(name=f"{name}_in_low_bits")
        m.d.sync += in_low_bits.eq(offset[bits:] == 0)
        exact = exact & in_low_bits
    return quotient, exact


def _overlap(lo0, hi0, lo1, hi1):
    return (lo0 < hi1) & (lo1 < hi0)


class _NoEltwise:
    """Stand-in for the ELTWISE engine of a build without one: idle, and
    every ELTWISE command illegal."""

    def __init__(self):
        self.mem = MemoryPort().create()
        self.cmd = stream.Signature(1).create()
        self.done, self.fault, self.r_word, self.w_word, self.mem_stall = (Const(0),) * 5

    def from_isa(self, m, **fields):
        return Const(0, 1), Const(0)


class _NoFmap:
    """Stand-in for the feature-map DMA of an 8-bit build: idle, and every
    IM2COL/FMAP/COL2IM move illegal."""

    def __init__(self):
        self.mem = MemoryPort().create()
        self.cmd = stream.Signature(1).create()
        self.done, self.fault, self.r_word, self.w_word, self.mem_stall = (Const(0),) * 5

    def legal(self, cmd, *, products=None):
        return Const(0)


class _NoUpdate:
    """Stand-in for the update engine of a build that does not train: idle,
    and every ACC_ADD, ACC_BIAS and SGD_UPDATE illegal."""

    def __init__(self):
        self.mem = MemoryPort().create()
        self.cmd = stream.Signature(1).create()
        self.done, self.fault, self.r_word, self.w_word, self.mem_stall = (Const(0),) * 5

    def from_isa(self, m, **fields):
        return Const(0, 1), Const(0)


class _NoPool:
    """Stand-in for the pool engine of a build without one: idle, every
    pooling geometry unsupported and every POOL_FWD illegal."""

    def __init__(self):
        self.mem = MemoryPort().create()
        self.cmd = stream.Signature(1).create()
        self.done, self.fault, self.r_word, self.w_word, self.mem_stall = (Const(0),) * 5

    def match(self, m, fields):
        return Const(0, 1), Const(0)

    def from_isa(self, m, **fields):
        return Const(0, 1), Const(0)


class Sequencer(wiring.Component):
    """Decodes ``runtime.isa`` commands and runs them on a ``rows x cols``
    :class:`SystolicArray`, a :class:`Dma` and A/B/C :class:`Scratchpad` s of
    ``a_depth``/``b_depth``/``c_depth`` words (see the module docstring).

    Parameters: ``rows``, ``cols`` 1..64; ``data_width`` 8 or 16 (the DMA's
    packing), ``acc_width`` as the array allows; depths 2..2**16;
    ``eltwise_in_frac``, ``eltwise_aux_frac``, ``eltwise_chunk``,
    ``eltwise_tables`` as :class:`EltwiseEngine` takes them (``in_frac``,
    ``aux_frac``, ``chunk_words``, ``tables``); ``pool_geometries`` the :class:`PoolGeometry` s the
    pool engine is built for (``PoolGeometry.from_layer`` of the plan's
    Pooling layers; none: no pool engine), ``pool_chunk`` its burst length,
    ``pool_backward`` whether it also runs POOL_BWD (training builds);
    ``training`` builds an :class:`UpdateEngine` (16-bit builds only) for
    gradients of ``grad_bits`` (2..32, the plan's ``grad_bits``) with SGD
    chunks of ``update_chunk`` elements and LFSR reset state ``lfsr_reset``.
    """

    def __init__(self, *, rows, cols, data_width=16, acc_width=32,
                 a_depth=512, b_depth=512, c_depth=64,
                 eltwise_in_frac=12, eltwise_aux_frac=15, eltwise_chunk=16,
                 eltwise_tables=TABLES, pool_geometries=(), pool_chunk=16, pool_backward=True,
                 training=False, grad_bits=32, update_chunk=128, lfsr_reset=1):
        for name, value, lo, hi in (("rows", rows, 1, 64), ("cols", cols, 1, 64),
                                    ("A depth", a_depth, 2, 1 << 16),
                                    ("B depth", b_depth, 2, 1 << 16),
                                    ("C depth", c_depth, 2, 1 << 16)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"Sequencer {name} must be an integer in [{lo}, {hi}], "
                                 f"not {value!r}")
        if not isinstance(training, bool):
            raise ValueError(f"Sequencer training must be a bool, not {training!r}")
        if data_width not in (8, 16):
            raise ValueError(f"Sequencer data width must be 8 or 16 bits (packed into "
                             f"32-bit memory words), not {data_width!r}")
        # Validates acc_width against data_width.
        self._array = SystolicArray(rows=rows, cols=cols, data_width=data_width,
                                    acc_width=acc_width)
        # The engines validate their own parameters. Their elements are
        # int16: an 8-bit build has neither (ELTWISE and POOL are bad commands).
        self._eltwise = (EltwiseEngine(in_frac=eltwise_in_frac, aux_frac=eltwise_aux_frac,
                                       chunk_words=eltwise_chunk, tables=eltwise_tables)
                         if data_width == 16 else None)
        pool_geometries = tuple(pool_geometries)
        self._fmap = (FmapDma(rows=rows, cols=cols, acc_width=acc_width, a_depth=a_depth,
                              b_depth=b_depth, c_depth=c_depth)
                      if data_width == 16 else None)
        self._pool = (PoolEngine(geometries=pool_geometries, chunk_words=pool_chunk,
                                 backward=pool_backward)
                      if pool_geometries and data_width == 16 else None)
        # Gradients and the SGD update work on int16 weights and activations:
        # an 8-bit build has no update engine (its opcodes are bad commands).
        self._update = (UpdateEngine(cols=cols, acc_width=acc_width, c_depth=c_depth,
                                     grad_bits=grad_bits, chunk=update_chunk, seed=lfsr_reset)
                        if training and data_width == 16 else None)
        self._training = training
        self._rows, self._cols = rows, cols
        self._data_width, self._acc_width = data_width, acc_width
        self._depths = (a_depth, b_depth, c_depth)
        super().__init__({
            "commands": In(stream.Signature(32)),
            "mem": Out(MemoryPort()),
            "enable": In(1, init=1),
            "busy": Out(1),
            "dma_busy": Out(1),
            "array_busy": Out(1),
            "eltwise_busy": Out(1),
            "pool_busy": Out(1),
            "update_busy": Out(1),
            "end": Out(1),
            "host_wait": Out(1),
            "host_resume": In(1),
            "bad_command": Out(1),
            "mem_fault": Out(1),
            "counters": Out(CounterIncrements(rows, cols)),
            "trace": Out(TraceEvent),
            # The SGD constants (CSRs; formats in the module docstring),
            # sampled by each SGD_UPDATE as it starts.
            "sgd_rate": In(18),
            "sgd_momentum": In(18),
            "sgd_decay": In(18),
            "sgd_norm": In(NORM_FRAC + 1, init=norm_multiplier(1)),
            "lfsr_seed": In(LFSR_BITS),
            "lfsr_load": In(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    data_width = property(lambda self: self._data_width)
    acc_width = property(lambda self: self._acc_width)
    a_depth = property(lambda self: self._depths[0])
    b_depth = property(lambda self: self._depths[1])
    c_depth = property(lambda self: self._depths[2])
    eltwise = property(lambda self: self._eltwise)
    pool = property(lambda self: self._pool)
    update = property(lambda self: self._update)
    training = property(lambda self: self._training)

    def elaborate(self, platform):
        m = Module()
        rows, cols, dw, aw = self.rows, self.cols, self.data_width, self.acc_width
        a_depth, b_depth, c_depth = self._depths
        Op, F = isa.Opcode, isa.Flag

        m.submodules.array = array = self._array
        m.submodules.dma = dma = Dma(rows=rows, cols=cols, data_width=dw, acc_width=aw,
                                     a_depth=a_depth, b_depth=b_depth, c_depth=c_depth,
                                     bias_depth=max(2, rows))
        m.submodules.a_buf = a_buf = Scratchpad(lanes=rows, lane_width=dw, depth=a_depth)
        m.submodules.b_buf = b_buf = Scratchpad(lanes=cols, lane_width=dw, depth=b_depth)
        # Port 0 is the drain's read-modify-write. Its write lands two
        # cycles after the read (one with a single row), and the next read
        # of the word comes ``rows`` cycles after; only an array of one or
        # two rows can meet its own write, so only there must the port be
        # transparent (elsewhere it returns the old word, like port 1).
        m.submodules.c_buf = c_buf = Scratchpad(lanes=cols, lane_width=aw, depth=c_depth,
                                                read_ports=2,
                                                transparent=(0,) if rows < 3 else ())
        m.submodules.bias_buf = bias_buf = Scratchpad(lanes=1, lane_width=aw,
                                                      depth=max(2, rows))
        elt = self._eltwise
        elt_active = Signal()
        if elt is None:
            elt = _NoEltwise()
        else:
            m.submodules.eltwise = elt
        pool = self._pool
        pool_active = Signal()
        if pool is None:
            pool = _NoPool()
        else:
            m.submodules.pool = pool
        fmap = self._fmap
        fmap_active = Signal()
        if fmap is None:
            fmap = _NoFmap()
        else:
            m.submodules.fmap = fmap
        upd = self._update
        upd_active = Signal()
        if upd is None:
            upd = _NoUpdate()
        else:
            m.submodules.update = upd
            m.d.comb += [upd.rate.eq(self.sgd_rate), upd.momentum.eq(self.sgd_momentum),
                         upd.decay.eq(self.sgd_decay), upd.norm_mul.eq(self.sgd_norm),
                         upd.lfsr_seed.eq(self.lfsr_seed), upd.lfsr_load.eq(self.lfsr_load)]
        # One owner of the memory port at a time: the ELTWISE, pool,
        # feature-map or update engine while it runs (the DMA is idle then),
        # the DMA otherwise.
        for unit, owns in ((elt.mem, elt_active), (pool.mem, pool_active),
                           (fmap.mem, fmap_active), (upd.mem, upd_active),
                           (dma.mem, ~elt_active & ~pool_active & ~fmap_active
                            & ~upd_active)):
            for name in ("cmd", "w"):
                src, dst = getattr(unit, name), getattr(self.mem, name)
                with m.If(owns):
                    m.d.comb += [dst.valid.eq(src.valid), dst.payload.eq(src.payload)]
                m.d.comb += src.ready.eq(owns & dst.ready)
            for name in ("r", "resp"):
                src, dst = getattr(self.mem, name), getattr(unit, name)
                m.d.comb += [dst.valid.eq(owns & src.valid), dst.payload.eq(src.payload)]
                with m.If(owns):
                    m.d.comb += src.ready.eq(dst.ready)
        # Both DMAs write A and B (one runs at a time; a write may trail its
        # engine's done by a cycle, so select by the write, not the engine).
        if self._fmap is None:
            wiring.connect(m, dma.a_write, a_buf.write)
            wiring.connect(m, dma.b_write, b_buf.write)
            wiring.connect(m, dma.c_read, c_buf.read1)
        else:
            for ours, theirs, buf in ((dma.a_write, fmap.a_write, a_buf.write),
                                      (dma.b_write, fmap.b_write, b_buf.write)):
                with m.If(theirs.en.any()):
                    m.d.comb += [buf.addr.eq(theirs.addr), buf.data.eq(theirs.data),
                                 buf.en.eq(theirs.en)]
                with m.Else():
                    m.d.comb += [buf.addr.eq(ours.addr), buf.data.eq(ours.data),
                                 buf.en.eq(ours.en)]
            # C read port 1: whichever of the DMAs and the update engine
            # (ACC_ADD) runs; they run one at a time.
            c_rd1 = c_buf.read1
            readers = [(fmap_active, fmap.c_read)]
            if self._update is not None:
                readers.append((upd_active, upd.c_read))
            addr, en = dma.c_read.addr, dma.c_read.en
            for active, port in reversed(readers):
                addr, en = Mux(active, port.addr, addr), Mux(active, port.en, en)
            m.d.comb += [c_rd1.addr.eq(addr), c_rd1.en.eq(en), dma.c_read.data.eq(c_rd1.data)]
            m.d.comb += [port.data.eq(c_rd1.data) for _, port in readers]
        wiring.connect(m, dma.bias_write, bias_buf.write)

        # ---- command fetch ------------------------------------------------
        words = [Signal(32, name=f"word{i}") for i in range(isa.WORDS_PER_COMMAND)]
        count = Signal(range(isa.WORDS_PER_COMMAND + 1))
        have = Signal()
        m.d.comb += [have.eq(count == isa.WORDS_PER_COMMAND),
                     self.commands.ready.eq(self.enable & ~have)]
        with m.If(self.commands.valid & self.commands.ready):
            m.d.sync += [words[i].eq(words[i + 1]) for i in range(len(words) - 1)]
            m.d.sync += [words[-1].eq(self.commands.payload), count.eq(count + 1)]
        retire = Signal()
        with m.If(retire):
            m.d.sync += count.eq(0)
        # Decode takes cycles of its own: every field check, divide-by-lanes
        # and range sum below is registered (``_decoded``) before it reaches
        # the issue logic, so no path runs from the command words through
        # the legality checks into a unit's start. Four stages: offsets
        # divided by the lanes, then each unit's checks (the feature-map
        # DMA's in two), then the opcode's choice among them (a
        # divide-by-lanes multiplier, a field's adders and compares and the
        # choice do not fit one cycle on ECP5). Words,
        # and the geometry state decode reads, hold still while a command
        # waits in the slot.
        go = Signal()       # a command waits in the slot, not retiring
        m.d.comb += go.eq(have & ~retire)
        stages = [Signal(name=f"decode_stage{i}") for i in range(4)]
        for before, stage in zip([go] + stages, stages):
            m.d.sync += stage.eq(before & go)
        decoded = stages[-1]

        def _decoded(value, name):
            # Not reset: nothing reads it before ``decoded`` rises.
            reg = Signal.like(value, name=f"dec_{name}", reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        def _decoded_quotient(offset, lanes, depth, name):
            return _offset_word(m, offset, lanes, depth, f"dec_{name}")

        opcode = words[0][:8]
        flags = words[0][12:24]
        func = words[0][24:32]

        # ---- unit state for the hazard checks -----------------------------
        dma_active = Signal()
        dma_buf = Signal(2)
        dma_lo = Signal(17)
        dma_hi = Signal(18)
        gemm_idle = Signal()
        feeding = Signal()
        feed_a_lo, feed_a_hi = Signal(17), Signal(18)
        feed_b_lo, feed_b_hi = Signal(17), Signal(18)
        mem_engine = elt_active | pool_active | upd_active   # an engine owns the memory port
        all_idle = ~dma_active & gemm_idle & ~mem_engine
        host_wait = Signal()
        m.d.comb += self.host_wait.eq(host_wait)
        upd_reads_c = Signal()          # a running ACC_ADD reads C words [lo, hi)
        upd_c_lo, upd_c_hi = Signal(24), Signal(25)

        # ---- DMA command decode -------------------------------------------
        lanes_of = {BUFFER_A: (rows, a_depth), BUFFER_B: (cols, b_depth),
                    BUFFER_C: (cols, c_depth)}
        dma_cmd = Signal(DmaCommand)
        dma_word = Signal(24)
        offset_ok = Signal()
        d_op = Op.DMA_LOAD
        offset = _field(words, d_op, "offset")
        # Each buffer's divide is registered; the choice among them by
        # `func` (words hold still) comes after the registers.
        quotients = {buf: _decoded_quotient(offset, lanes, depth, f"dma{buf}")
                     for buf, (lanes, depth) in lanes_of.items()}
        with m.Switch(func):
            for buf, (q, exact) in quotients.items():
                with m.Case(buf):
                    m.d.comb += [dma_word.eq(q), offset_ok.eq(exact)]
        flip = (flags & (F.TRANSPOSE_A | F.TRANSPOSE_B)).any()
        m.d.comb += [
            dma_cmd.store.eq(opcode == Op.DMA_STORE),
            dma_cmd.buffer.eq(func[:2]),
            dma_cmd.transpose.eq((func == BUFFER_A) ^ flip),
            dma_cmd.addr.eq(_field(words, d_op, "addr")),
            dma_cmd.stride.eq(_field(words, d_op, "stride")),
            # rows x cols is the tile as the buffer holds it; transposed, memory
            # holds cols rows of rows elements (the compiler's convention).
            dma_cmd.rows.eq(Mux(flip, _field(words, d_op, "cols"), _field(words, d_op, "rows"))),
            dma_cmd.cols.eq(Mux(flip, _field(words, d_op, "rows"), _field(words, d_op, "cols"))),
            dma_cmd.word.eq(dma_word),
            dma_cmd.shift.eq(_field(words, d_op, "shift")),
        ]
        dma_flags_ok = (flags & ~(F.TRANSPOSE_A | F.TRANSPOSE_B | F.RESIDENT | F.LAST)) == 0
        dma_ok = (dma.legal(dma_cmd) & offset_ok & (func < 3) & dma_flags_ok
                  & (_field(words, d_op, "col0") == 0) & (_field(words, d_op, "k0") == 0))

        # IM2COL / FMAP / COL2IM moves go to the feature-map DMA, with the
        # geometry of the last SET_GEOMETRY on the line buffer.
        conv_geom = Signal(ConvGeometryLayout)
        conv_geom_valid = Signal()
        is_store = opcode == Op.DMA_STORE
        im2col, fmap_flag, col2im = ((flags & f).any() for f in (F.IM2COL, F.FMAP, F.COL2IM))
        fmap_sel = im2col | fmap_flag | col2im
        fmap_transpose_b = (flags & F.TRANSPOSE_B).any()
        fmap_cmd = Signal(FmapCommand)
        m.d.comb += [
            fmap_cmd.mode.eq(Mux(is_store, Mux(col2im, FmapMode.STORE_COL2IM,
                                               FmapMode.STORE_FMAP),
                                 Mux(im2col, FmapMode.LOAD_IM2COL, FmapMode.LOAD_FMAP))),
            fmap_cmd.buffer.eq(func[:2]),
            # A holds columns; an IM2COL|TRANSPOSE_B load into B is the
            # transpose of the im2col tile (operand rows are its columns).
            fmap_cmd.transpose.eq((func == BUFFER_A) | fmap_transpose_b),
            fmap_cmd.addr.eq(_field(words, d_op, "addr")),
            fmap_cmd.k0.eq(_field(words, d_op, "k0")),
            fmap_cmd.col0.eq(_field(words, d_op, "col0")),
            fmap_cmd.rows.eq(Mux(fmap_transpose_b, _field(words, d_op, "cols"),
                                 _field(words, d_op, "rows"))),
            fmap_cmd.cols.eq(Mux(fmap_transpose_b, _field(words, d_op, "rows"),
                                 _field(words, d_op, "cols"))),
            fmap_cmd.word.eq(dma_word),
            fmap_cmd.shift.eq(_field(words, d_op, "shift")),
            fmap_cmd.geometry.eq(conv_geom),
        ]
        # Exactly one move kind, loads IM2COL/FMAP into A or B (TRANSPOSE_B
        # only with IM2COL into B), stores FMAP/COL2IM from C; no stride.
        one_kind = (im2col.as_unsigned() + fmap_flag + col2im) == 1
        fmap_flags_ok = ((flags & ~(F.IM2COL | F.FMAP | F.COL2IM | F.TRANSPOSE_B | F.LAST))
                         == 0) & one_kind & Mux(
            is_store, ~im2col & ~fmap_transpose_b & (func == BUFFER_C),
            ~col2im & (func != BUFFER_C) & (~fmap_transpose_b | (im2col & (func == BUFFER_B))))
        # The geometry's products are pipelined (FmapDma.geometry_products);
        # they settle a few cycles after a SET_GEOMETRY, before the next
        # command has been fetched (a word a cycle at most).
        assert isa.WORDS_PER_COMMAND >= FmapDma.GEOMETRY_PRODUCTS_LATENCY
        products = (FmapDma.geometry_products(m, conv_geom) if self._fmap is not None
                    else None)
        # The feature-map DMA's checks take two stages: its command from the
        # words and the divide is registered first, so its legality's adders
        # and compares start at flip-flops (the 10x11 ULX3S build's critical
        # path ran from a command word through both, 13.4 ns routed).
        fmap_cmd_r = _decoded(fmap_cmd, "fmap_cmd")
        fmap_fields_ok = _decoded(offset_ok & fmap_flags_ok & conv_geom_valid
                                  & (_field(words, d_op, "stride") == 0), "fmap_fields_ok")
        fmap_ok = _decoded(fmap.legal(fmap_cmd_r, products=products) & fmap_fields_ok,
                           "fmap_ok")
        dma_extent = Mux(fmap_sel, Mux(fmap_cmd.transpose, fmap_cmd.cols, fmap_cmd.rows),
                         Mux(dma_cmd.transpose, dma_cmd.cols, dma_cmd.rows))
        dma_new_lo = _decoded(dma_cmd.word, "dma_lo")
        dma_new_hi = _decoded(dma_cmd.word + dma_extent, "dma_hi")
        # The range compares against the feeding GEMM are registered, as the
        # GEMM's own below (they ran on into the issue and the decode's
        # stage registers: 14.3 ns routed at 10x11 on ECP5): a load into A or
        # B issues from its second decoded cycle, when the register holds
        # its own ranges; ``feeding`` and the feeder's ranges only change as
        # a GEMM starts, never while this command is decoded, or as feeding
        # ends, which unblocks a cycle late.
        decoded_before = Signal()
        m.d.sync += decoded_before.eq(decoded)
        dma_feed_hazard = Signal()
        m.d.sync += dma_feed_hazard.eq(
            feeding & Mux(func == BUFFER_A,
                          _overlap(dma_new_lo, dma_new_hi, feed_a_lo, feed_a_hi),
                          _overlap(dma_new_lo, dma_new_hi, feed_b_lo, feed_b_hi)))
        dma_blocked = dma_active | mem_engine | Mux(
            func == BUFFER_C, ~gemm_idle, dma_feed_hazard | ~decoded_before)

        # ---- GEMM command decode ------------------------------------------
        g_op = Op.GEMM
        g_m, g_n, g_k = (_field(words, g_op, x) for x in ("m", "n", "k"))
        a_word, a_exact = _decoded_quotient(_field(words, g_op, "a_offset"), rows, a_depth, "a")
        b_word, b_exact = _decoded_quotient(_field(words, g_op, "b_offset"), cols, b_depth, "b")
        c_word, c_exact = _decoded_quotient(_field(words, g_op, "c_offset"), cols, c_depth, "c")
        g_flags_ok = (flags & ~(F.ACCUMULATE | F.BIAS | F.RESIDENT | F.LAST)) == 0
        g_bias = (flags & F.BIAS).any()
        bias_addr = _field(words, g_op, "bias_addr")
        bias_shift = _field(words, g_op, "bias_shift")
        bias_cmd = Signal(DmaCommand)
        m.d.comb += [bias_cmd.buffer.eq(BUFFER_BIAS), bias_cmd.transpose.eq(1),
                     bias_cmd.addr.eq(bias_addr), bias_cmd.rows.eq(1), bias_cmd.cols.eq(g_m),
                     bias_cmd.shift.eq(bias_shift)]
        gemm_ok = (g_flags_ok & (func == 0) & a_exact & b_exact & c_exact
                   & (g_m >= 1) & (g_m <= rows) & (g_n >= 1) & (g_n <= cols) & (g_k >= 1)
                   & (a_word + g_k <= a_depth) & (b_word + g_k <= b_depth)
                   & (c_word + g_m <= c_depth)
                   & Mux(g_bias, dma.legal(bias_cmd), bias_addr == 0))
        g_a_lo, g_a_hi = _decoded(a_word, "a_lo"), _decoded(a_word + g_k, "a_hi")
        g_b_lo, g_b_hi = _decoded(b_word, "b_lo"), _decoded(b_word + g_k, "b_hi")
        g_c_lo, g_c_hi = _decoded(c_word, "c_lo"), _decoded(c_word + g_m, "c_hi")
        # In LUTs (yosys would spend a MULT18X18D on it, wherever one is
        # left); only the bits a legal command can have (m <= rows, n <= cols).
        g_macs = _decoded(small_product(g_m[:rows.bit_length()], g_n[:cols.bit_length()]),
                          "macs")
        tile_room = Signal()     # a GEMM also needs room to queue its tile for the drain
        bias_loaded = Signal()   # this GEMM's bias is in the bias buffer
        # Registered: the range compares against the running DMA ran on into
        # the issue and the feeder's registers (14.6 ns routed at 10x11 on
        # ECP5). A cycle late is safe: a GEMM issues no sooner than its
        # second decoded cycle (``decoded_before``), when the register holds
        # its own ranges, and every other input changes only as a command
        # starts (the GEMM's own bias load blocks it through ``bias_loaded``
        # in that very cycle) or, unblocking, as a unit finishes.
        gemm_blocked = Signal()
        m.d.sync += gemm_blocked.eq(
            feeding | ~tile_room | (g_bias & ~bias_loaded) | (
                upd_reads_c & _overlap(upd_c_lo, upd_c_hi, g_c_lo, g_c_hi)) | dma_active & (
                (dma_buf == BUFFER_C) | (dma_buf == BUFFER_BIAS)
                | ((dma_buf == BUFFER_A) & _overlap(dma_lo, dma_hi, g_a_lo, g_a_hi))
                | ((dma_buf == BUFFER_B) & _overlap(dma_lo, dma_hi, g_b_lo, g_b_hi))))

        # ---- ELTWISE command decode ----------------------------------------
        e_op = Op.ELTWISE
        elt_cmd, elt_ok = elt.from_isa(
            m, func=func, **{name: _field(words, e_op, name)
                             for name in ("src", "aux", "dst", "count", "shift", "slope")})

        # ---- SET_GEOMETRY (pooling) and POOL_FWD decode --------------------
        s_op, p_op = Op.SET_GEOMETRY, Op.POOL_FWD
        geom_index, geom_ok = pool.match(m, {f.name: _field(words, s_op, f.name)
                                             for f in isa.LAYOUTS[s_op]})
        # The selected geometry; the engine copies it when a POOL_FWD starts,
        # so a SET_GEOMETRY need not wait for a running one.
        pool_geom = Signal.like(geom_index)
        pool_total = Signal(16)
        pool_batch = Signal(16)
        pool_geom_valid = Signal()
        pool_cmd, pool_ok = pool.from_isa(
            m, geometry=pool_geom, total=pool_total, batch=pool_batch, func=func, flags=flags,
            backward=opcode == Op.POOL_BWD,
            **{name: _field(words, p_op, name)
               for name in ("src", "dst", "index_addr", "c0", "channels", "n0", "images",
                            "shift")})

        # ---- ACC_ADD, ACC_BIAS and SGD_UPDATE decode -----------------------
        u_ops = (Op.ACC_ADD, Op.ACC_BIAS, Op.SGD_UPDATE)
        upd_cmd, upd_ok = upd.from_isa(m, opcode=opcode, func=func, flags=flags, words=words)
        # The engine refuses (with a fault) an ACC_ADD off the C buffer's
        # words; here it is a bad command, like a GEMM's C range.
        add_word, add_exact = _decoded_quotient(_field(words, Op.ACC_ADD, "offset"), cols, c_depth, "add")
        add_end = add_word + _field(words, Op.ACC_ADD, "rows")
        add_ok = add_exact & (add_end <= c_depth)
        add_word, add_end = _decoded(add_word, "add_lo"), _decoded(add_end, "add_hi")
        is_update = Cat(opcode == op for op in u_ops).any()

        # ---- dispatch ------------------------------------------------------
        dma_ok, gemm_ok, elt_ok, geom_ok, upd_ok, add_ok, pool_ok = (
            _decoded(ok, name) for ok, name in (
                (dma_ok, "dma_ok"), (gemm_ok, "gemm_ok"),
                (elt_ok, "elt_ok"), (geom_ok, "geom_ok"), (upd_ok, "upd_ok"),
                (add_ok, "add_ok"), (pool_ok, "pool_ok")))
        plain_ok = ((flags & ~F.LAST) == 0) & (func == 0)
        legal = Signal()
        with m.Switch(opcode):
            for op in (Op.NOP, Op.SYNC, Op.END, Op.HOST):
                with m.Case(op):
                    m.d.comb += legal.eq((plain_ok if op != Op.HOST else (flags & ~F.LAST) == 0)
                                         & ~_reserved(words, op)
                                         & (_field(words, op, "unit") == isa.OPCODE_UNIT[op]))
            for op in (Op.DMA_LOAD, Op.DMA_STORE):
                with m.Case(op):
                    m.d.comb += legal.eq(
                        ~_reserved(words, op) & (_field(words, op, "unit") == isa.Unit.DMA)
                        & Mux(fmap_sel, fmap_ok, dma_ok | (flags & F.RESIDENT).any()))
            with m.Case(Op.GEMM):
                m.d.comb += legal.eq(~_reserved(words, g_op) & gemm_ok
                                     & (_field(words, g_op, "unit") == isa.Unit.ARRAY))
            with m.Case(e_op):
                m.d.comb += legal.eq(~_reserved(words, e_op) & elt_ok & ((flags & ~F.LAST) == 0)
                                     & (_field(words, e_op, "unit") == isa.Unit.ELTWISE))
            with m.Case(s_op):
                # The pooling unit's must be one the pool engine was built
                # for; the line buffer's is checked by the moves that use it.
                m.d.comb += legal.eq(~_reserved(words, s_op) & plain_ok & Mux(
                    _field(words, s_op, "unit") == isa.Unit.POOL, geom_ok,
                    (_field(words, s_op, "unit") == isa.Unit.LINE_BUFFER)
                    & (self._fmap is not None)))
            for op in u_ops:
                with m.Case(op):
                    m.d.comb += legal.eq(~_reserved(words, op) & upd_ok
                                         & (add_ok if op == Op.ACC_ADD else 1)
                                         & (_field(words, op, "unit") == isa.Unit.ACCUMULATOR))
            with m.Case(p_op, Op.POOL_BWD):
                m.d.comb += legal.eq(~_reserved(words, p_op) & pool_ok & pool_geom_valid
                                     & ((flags & ~(F.TRAINING | F.LAST)) == 0)
                                     & (_field(words, p_op, "unit") == isa.Unit.POOL))

        legal = _decoded(legal, "legal")
        fmap_sel = _decoded(fmap_sel, "fmap_sel")
        geom_index = _decoded(geom_index, "geom_index")
        dma_cmd, bias_cmd, fmap_cmd = (_decoded(dma_cmd, "dma_cmd"), _decoded(bias_cmd, "bias_cmd"),
                                       fmap_cmd_r)
        elt_cmd, pool_cmd, upd_cmd = (_decoded(elt_cmd, "elt_cmd"), _decoded(pool_cmd, "pool_cmd"),
                                      _decoded(upd_cmd, "upd_cmd"))

        start_dma = Signal()
        start_fmap = Signal()
        start_bias = Signal()
        start_gemm = Signal()
        start_elt = Signal()
        start_pool = Signal()
        start_upd = Signal()
        instant_done = Signal()
        m.d.comb += [self.bad_command.eq(0), self.end.eq(0)]
        with m.If(decoded):
            with m.If(~legal):
                m.d.comb += [self.bad_command.eq(1), retire.eq(1)]
                with m.If(opcode == s_op):
                    # No stale geometry survives a refused one.
                    with m.If(_field(words, s_op, "unit") == isa.Unit.LINE_BUFFER):
                        m.d.sync += conv_geom_valid.eq(0)
                    with m.Else():
                        m.d.sync += pool_geom_valid.eq(0)
            with m.Elif((opcode == Op.DMA_LOAD) | (opcode == Op.DMA_STORE)):
                with m.If((flags & F.RESIDENT).any()):
                    m.d.comb += [retire.eq(1), instant_done.eq(1)]
                with m.Elif(~dma_blocked):
                    with m.If(fmap_sel):
                        m.d.comb += [start_fmap.eq(1), retire.eq(1)]
                    with m.Else():
                        m.d.comb += [start_dma.eq(1), retire.eq(1)]
            with m.Elif(opcode == Op.GEMM):
                # A bias is fetched first, once earlier tiles no longer need the
                # bias buffer; the GEMM itself then waits for that load.
                with m.If(g_bias & ~bias_loaded):
                    with m.If(~dma_active & gemm_idle & ~mem_engine):
                        m.d.comb += start_bias.eq(1)
                        m.d.sync += bias_loaded.eq(1)
                with m.Elif(~gemm_blocked & decoded_before):
                    m.d.comb += [start_gemm.eq(1), retire.eq(1)]
                    m.d.sync += bias_loaded.eq(0)
            with m.Elif(opcode == e_op):
                with m.If(~dma_active & ~mem_engine):
                    m.d.comb += [start_elt.eq(1), retire.eq(1)]
            with m.Elif((opcode == p_op) | (opcode == Op.POOL_BWD)):
                with m.If(~dma_active & ~mem_engine):
                    m.d.comb += [start_pool.eq(1), retire.eq(1)]
            with m.Elif(is_update):
                # An ACC_ADD reads C, so the array must have drained into it.
                with m.If(~dma_active & ~mem_engine & (gemm_idle | (opcode != Op.ACC_ADD))):
                    m.d.comb += [start_upd.eq(1), retire.eq(1)]
            with m.Elif(opcode == s_op):
                m.d.comb += [retire.eq(1), instant_done.eq(1)]
                with m.If(_field(words, s_op, "unit") == isa.Unit.LINE_BUFFER):
                    # A running move copied its geometry when it started.
                    m.d.sync += [conv_geom_valid.eq(1)]
                    m.d.sync += [conv_geom[name].eq(_field(words, s_op, name))
                                 for name in ConvGeometryLayout.members]
                with m.Else():
                    m.d.sync += [pool_geom.eq(geom_index), pool_geom_valid.eq(1),
                                 pool_total.eq(_field(words, s_op, "channels")),
                                 pool_batch.eq(_field(words, s_op, "images"))]
            with m.Elif(opcode == Op.NOP):
                m.d.comb += [retire.eq(1), instant_done.eq(1)]
            with m.Elif(opcode == Op.HOST):
                with m.If(host_wait & self.host_resume):
                    m.d.sync += host_wait.eq(0)
                    m.d.comb += [retire.eq(1), instant_done.eq(1)]
                with m.Elif(all_idle):
                    m.d.sync += host_wait.eq(1)
            with m.Elif(all_idle):     # SYNC, END
                m.d.comb += [retire.eq(1), instant_done.eq(1),
                             self.end.eq(opcode == Op.END)]

        # ---- DMA -----------------------------------------------------------
        # Units take their commands a cycle after issue, from registers that
        # load every cycle: the hazard checks and the choice of unit end at
        # these flip-flops, not at a unit's wide command-register enables.
        def _issue(port, start, payload, name):
            """A register slice without the ready half of a skid buffer: a
            unit is only issued to when idle (its ``*_active`` flag is
            clear), so it is ready the cycle after too and the command is
            taken the cycle ``valid`` rises; a :class:`SkidBuffer` here would
            add a second command register per unit for a stall that cannot
            happen. A lost command would show in every end-to-end test."""
            valid = Signal(name=f"{name}_issued")
            cmd = Signal.like(payload, name=f"{name}_issued_cmd", reset_less=True)
            m.d.sync += [valid.eq(start), cmd.eq(payload)]
            m.d.comb += [port.valid.eq(valid), port.payload.eq(cmd)]

        _issue(dma.cmd, start_dma | start_bias, Mux(start_bias, bias_cmd, dma_cmd), "dma")
        with m.If(start_dma | start_fmap):
            m.d.sync += [dma_active.eq(1), dma_buf.eq(func[:2]),
                         dma_lo.eq(dma_new_lo), dma_hi.eq(dma_new_hi)]
        with m.Elif(start_bias):
            m.d.sync += [dma_active.eq(1), dma_buf.eq(BUFFER_BIAS)]
        with m.Elif(dma.done | fmap.done):
            m.d.sync += dma_active.eq(0)
        # ---- feature-map DMA -------------------------------------------------
        _issue(fmap.cmd, start_fmap, fmap_cmd, "fmap")
        with m.If(start_fmap):
            m.d.sync += fmap_active.eq(1)
        with m.Elif(fmap.done):
            m.d.sync += fmap_active.eq(0)
        # ---- ELTWISE -------------------------------------------------------
        _issue(elt.cmd, start_elt, elt_cmd, "elt")
        with m.If(start_elt):
            m.d.sync += elt_active.eq(1)
        with m.Elif(elt.done):
            m.d.sync += elt_active.eq(0)
        # ---- POOL_FWD ------------------------------------------------------
        _issue(pool.cmd, start_pool, pool_cmd, "pool")
        with m.If(start_pool):
            m.d.sync += pool_active.eq(1)
        with m.Elif(pool.done):
            m.d.sync += pool_active.eq(0)
        # ---- ACC_ADD, ACC_BIAS, SGD_UPDATE --------------------------------
        _issue(upd.cmd, start_upd, upd_cmd, "upd")
        with m.If(start_upd):
            m.d.sync += [upd_active.eq(1), upd_reads_c.eq(opcode == Op.ACC_ADD),
                         upd_c_lo.eq(add_word), upd_c_hi.eq(add_end)]
        with m.Elif(upd.done):
            m.d.sync += [upd_active.eq(0), upd_reads_c.eq(0)]
        m.d.comb += self.mem_fault.eq((dma.done & dma.fault) | (elt.done & elt.fault)
                                      | (pool.done & pool.fault) | (fmap.done & fmap.fault)
                                      | (upd.done & upd.fault))

        # ---- GEMM feeder: A columns and B rows into the array -------------
        feed_left = Signal(24)
        feed_a = Signal(17)
        feed_b = Signal(17)
        feed_macs = Signal.like(self.counters.macs)
        beat_valid = Signal()
        beat_last = Signal()
        beat_macs = Signal.like(self.counters.macs)
        a_rd, b_rd = a_buf.read0, b_buf.read0
        ops = array.operands
        advance = ~beat_valid | ops.ready
        m.d.comb += [
            a_rd.addr.eq(feed_a), b_rd.addr.eq(feed_b),
            # Read only while feeding: an idle read is a block RAM access
            # for nothing (and met the DMA's writes to word 0).
            a_rd.en.eq(advance & feeding), b_rd.en.eq(advance & feeding),
            ops.valid.eq(beat_valid),
            ops.payload.a.eq(a_rd.data), ops.payload.b.eq(b_rd.data),
            ops.payload.last.eq(beat_last),
        ]
        with m.If(advance):
            m.d.sync += [beat_valid.eq(feeding), beat_last.eq(feed_left == 1),
                         beat_macs.eq(feed_macs)]
            with m.If(feeding):
                m.d.sync += [feed_a.eq(feed_a + 1), feed_b.eq(feed_b + 1),
                             feed_left.eq(feed_left - 1)]
                with m.If(feed_left == 1):
                    m.d.sync += feeding.eq(0)

        # Tiles in flight in the array, drained in order.
        tile = data.StructLayout({"c_word": range(c_depth), "m": range(rows + 1),
                                  "n": range(cols + 1), "accumulate": 1, "bias": 1})
        m.submodules.tiles = tiles = SyncFIFO(width=tile.size, depth=2)
        new_tile = Signal(tile)
        m.d.comb += [
            new_tile.c_word.eq(g_c_lo), new_tile.m.eq(g_m), new_tile.n.eq(g_n),
            new_tile.accumulate.eq((flags & F.ACCUMULATE).any()), new_tile.bias.eq(g_bias),
            tiles.w_data.eq(new_tile),
            tiles.w_en.eq(start_gemm),
        ]
        m.d.comb += tile_room.eq(tiles.w_rdy)
        with m.If(start_gemm):
            m.d.sync += [feeding.eq(1), feed_left.eq(g_k),
                         feed_a.eq(g_a_lo), feed_b.eq(g_b_lo), feed_macs.eq(g_macs),
                         feed_a_lo.eq(g_a_lo), feed_a_hi.eq(g_a_hi),
                         feed_b_lo.eq(g_b_lo), feed_b_hi.eq(g_b_hi)]

        # ---- drain: result rows into C, read-modify-write for ACCUMULATE ---
        cur = Signal(tile)
        m.d.comb += cur.eq(tiles.r_data)
        res = array.results
        drow = Signal(range(rows))
        c_rd = c_buf.read0
        m.d.comb += [res.ready.eq(tiles.r_rdy), c_rd.addr.eq(cur.c_word + drow)]
        take = res.valid & res.ready
        bias_rd = bias_buf.read0
        m.d.comb += [c_rd.en.eq(take), tiles.r_en.eq(take & (drow == rows - 1)),
                     bias_rd.addr.eq(drow), bias_rd.en.eq(take)]
        s1_valid = Signal()
        # The stages' data is not reset (their valid bits are): the sequencer's
        # reset reached some 10k flip-flops across the die on the 10x11 plan.
        s1_row = Signal.like(res.payload, reset_less=True)
        s1_addr = Signal(range(c_depth), reset_less=True)
        s1_mask = Signal(cols, reset_less=True)
        s1_acc = Signal()
        s1_bias = Signal()
        m.d.sync += s1_valid.eq(take & (drow < cur.m))
        with m.If(take):
            m.d.sync += drow.eq(Mux(drow == rows - 1, 0, drow + 1))
        # The stages' data registers load every cycle, read only under their
        # valid bits: an enable on them fanned ``s1_valid`` out to some 900
        # flip-flops beside the C block RAMs.
        m.d.sync += [s1_row.eq(res.payload), s1_addr.eq(cur.c_word + drow),
                     s1_acc.eq(cur.accumulate), s1_bias.eq(cur.bias),
                     s1_mask.eq(Cat(j < cur.n for j in range(cols)))]
        # The C and bias reads are registered before the add: a block RAM's
        # output is slow (5.6 ns on ECP5), too slow to add and write back in
        # the same cycle at 75 MHz. The write then lands two cycles after the
        # read; a later tile's read of the same row comes ``rows`` cycles
        # after this one's, so with three rows or more it sees the write in
        # the RAM, with two in the same cycle through the transparent port
        # (the only case that needs one, see ``__init__``). A one-row array
        # keeps the single-cycle read-add-write.
        staged = rows >= 2
        if staged:
            s2_valid = Signal()
            s2_row = Signal.like(res.payload, reset_less=True)
            s2_addr = Signal(range(c_depth), reset_less=True)
            s2_mask = Signal(cols, reset_less=True)
            s2_c = Signal.like(c_rd.data, reset_less=True)
            s2_bias = Signal.like(bias_rd.data[0], reset_less=True)
            m.d.sync += [s2_valid.eq(s1_valid),
                         s2_row.eq(s1_row), s2_addr.eq(s1_addr), s2_mask.eq(s1_mask),
                         s2_c.eq(Mux(s1_acc, c_rd.data, 0)),
                         s2_bias.eq(Mux(s1_bias, bias_rd.data[0], 0))]
            w_valid, w_row, w_addr, w_mask = s2_valid, s2_row, s2_addr, s2_mask
            w_c, w_bias = s2_c, s2_bias
        else:
            w_valid, w_row, w_addr, w_mask = s1_valid, s1_row, s1_addr, s1_mask
            w_c = c_rd.data.shape()(Mux(s1_acc, c_rd.data.as_value(), 0))
            w_bias = Mux(s1_bias, bias_rd.data[0], 0)
        c_wr = c_buf.write
        dma_c = dma.c_write.en.any()
        with m.If(dma_c):
            m.d.comb += [c_wr.addr.eq(dma.c_write.addr), c_wr.data.eq(dma.c_write.data),
                         c_wr.en.eq(dma.c_write.en)]
        with m.Else():
            m.d.comb += [c_wr.addr.eq(w_addr), c_wr.en.eq(Mux(w_valid, w_mask, 0))]
            for j in range(cols):
                m.d.comb += c_wr.data[j].eq(w_row[j] + w_c[j] + w_bias)
        m.d.comb += gemm_idle.eq(~feeding & ~beat_valid & ~tiles.r_rdy & ~s1_valid
                                 & ~(s2_valid if staged else 0))
        tile_done = take & (drow == rows - 1)

        # ---- status, trace and counters ------------------------------------
        m.d.comb += [self.trace.valid.eq(retire), self.trace.opcode.eq(opcode),
                     self.trace.layer.eq(words[1][:16]), self.trace.stage.eq(words[1][16:20]),
                     self.trace.bad.eq(self.bad_command),
                     self.trace.done.eq(Cat(
                         tile_done,
                         (dma.done & dma_active & (dma_buf != BUFFER_BIAS))
                         | (fmap.done & fmap_active),
                         elt.done & elt_active, pool.done & pool_active,
                         upd.done & upd_active))]
        m.d.comb += [self.busy.eq((count != 0) | ~all_idle),
                     self.dma_busy.eq(dma_active), self.array_busy.eq(~gemm_idle),
                     self.eltwise_busy.eq(elt_active), self.pool_busy.eq(pool_active),
                     self.update_busy.eq(upd_active)]
        cnt = self.counters
        beat = ops.valid & ops.ready
        m.d.comb += [
            cnt.busy.eq(self.busy),
            cnt.macs.eq(Mux(beat, beat_macs, 0)),
            cnt.array_stall.eq(~gemm_idle & ~beat),
            cnt.mem_stall.eq(Mux(elt_active, elt.mem_stall,
                                 Mux(pool_active, pool.mem_stall,
                                     Mux(fmap_active, fmap.mem_stall,
                                         Mux(upd_active, upd.mem_stall, dma.mem_stall))))),
            cnt.mem_read_bytes.eq(Mux(dma.r_word | elt.r_word | pool.r_word | fmap.r_word
                                      | upd.r_word, 4, 0)),
            cnt.mem_write_bytes.eq(Mux(dma.w_word | elt.w_word | pool.w_word | fmap.w_word
                                       | upd.w_word, 4, 0)),
            # The DMA and the memory engines never finish in the same cycle.
            cnt.commands_done.eq(instant_done + (dma.done & dma_active & (dma_buf != BUFFER_BIAS))
                                 + (elt.done & elt_active) + (pool.done & pool_active)
                                 + (fmap.done & fmap_active) + (upd.done & upd_active)
                                 + tile_done),
        ]
        return m
