"""The sequencer's command set: opcodes, units and the binary layout of a command.

Pure Python, shared by the compiler (which writes commands), the host runtime
(which pushes them with the RUN frame) and the gateware sequencer (which
decodes them): none of them re-types a field position.

Every command is :data:`WORDS_PER_COMMAND` (8) little-endian 32-bit words.
Word 0 and word 1 are common to all commands::

    word 0: opcode[7:0]  unit[11:8]  flags[23:12]  func[31:24]
    word 1: layer[15:0]  stage[19:16]  (bits 31:20 reserved, zero)

``unit`` is the unit that executes the command (:class:`Unit`); it is fixed
by the opcode except for ``SET_GEOMETRY``, which configures either the
line buffer in front of the array or the pooling unit. ``flags`` are
:class:`Flag` bits, ``func`` a per-opcode sub-operation (:class:`EltwiseOp`,
:class:`PoolKind`, :class:`HostOp`, :class:`Buffer`), ``layer`` the index of
the layer in the plan the command belongs to (for counters and debugging),
``stage`` a :class:`Stage`. Words 2..7 hold the opcode's own fields, listed
in :data:`LAYOUTS` as ``(name, word, lsb, width, signed)``. Bits no field
covers must be zero; :func:`decode` rejects a command that sets them.

Addresses are byte addresses in tensor memory; buffer offsets count elements
of the on-chip buffer named by ``func``; the array reads operands from the A
and B buffers and accumulates results in the C buffer (``acc_width`` words).

Semantics, in brief (the sequencer task refines them in its own docs):

* ``DMA_LOAD``/``DMA_STORE``: copy ``rows`` rows of ``cols`` elements between
  tensor memory (``addr``, ``stride`` bytes between rows) and buffer ``func``
  at ``offset``. With ``IM2COL`` a load gathers rows ``k0 ..`` and columns
  ``col0 ..`` of the im2col matrix of the NCHW input map at ``addr``
  (geometry from the last ``SET_GEOMETRY`` on the line buffer; columns run
  over the whole batch, image outermost); with ``FMAP`` it moves a tile of
  channels ``k0 ..`` and positions ``col0 ..`` of the NCHW output map
  (``out_channels x out_h x out_w`` per image); with ``COL2IM`` a store
  saturating-adds im2col rows back into the input map
  (``fixedpoint.tiles`` is the model). A store requantises by ``shift``.
* ``GEMM``: ``C[m x n] (+)= A[m x k] @ B[k x n]`` on the systolic array,
  ``ACCUMULATE`` adds to the C buffer instead of overwriting, ``TRANSPOSE_A``/
  ``TRANSPOSE_B`` read an operand transposed, ``BIAS`` adds the bias vector
  at ``bias_addr`` (one per row, shifted left by ``bias_shift`` to the
  accumulator's frac) when the tile is complete.
* ``POOL_FWD``/``POOL_BWD``: pool channels ``c0 .. c0+channels`` of images
  ``n0 .. n0+images`` from ``src`` to ``dst``; MAX keeps/reads window indices
  at ``index_addr``.
* ``ELTWISE``: ``count`` elements from ``src`` (and ``aux``) to ``dst``.
* ``ACC_ADD``: add a ``rows x cols`` gradient tile from the C buffer at
  ``offset`` into the wide accumulator/gradient at ``grad_addr`` (row stride
  ``stride`` elements); ``ACC_BIAS``: sum ``positions`` values of each of
  ``channels`` gradient rows at ``src`` into the bias gradient.
* ``SGD_UPDATE``: Caffe's update of ``count`` parameters (weights at
  ``weight_addr``, history at ``history_addr``, gradient at ``grad_addr``,
  zeroed afterwards); ``lr_mult``/``decay_mult`` are unsigned Q8.8, the
  learning rate, momentum and decay come from CSRs; ``*_frac`` are the
  blob's formats (weights and history int16, gradients the build's
  ``grad_bits``).
* ``HOST``: stop and hand ``count`` bytes at ``addr`` to the host (softmax,
  loss, accuracy, inputs); the sequencer resumes when the host says so.
* ``SYNC`` waits until every unit is idle; ``END`` ends the command list.
"""

import enum

__all__ = [
    "WORDS_PER_COMMAND", "Opcode", "Unit", "Flag", "Stage", "Buffer", "EltwiseOp",
    "ELTWISE_TABLE", "PoolKind", "HostOp", "Field", "COMMON_FIELDS", "LAYOUTS", "OPCODE_UNIT",
    "encode", "decode", "encode_stream", "decode_stream", "Q88_ONE", "to_q88",
]

WORDS_PER_COMMAND = 8


class Opcode(enum.IntEnum):
    NOP = 0x00
    SYNC = 0x01
    END = 0x02
    SET_GEOMETRY = 0x03
    DMA_LOAD = 0x10
    DMA_STORE = 0x11
    GEMM = 0x20
    POOL_FWD = 0x30
    POOL_BWD = 0x31
    ELTWISE = 0x40
    ACC_ADD = 0x50
    ACC_BIAS = 0x51
    SGD_UPDATE = 0x52
    HOST = 0x60


class Unit(enum.IntEnum):
    SEQUENCER = 0
    DMA = 1
    ARRAY = 2
    LINE_BUFFER = 3
    POOL = 4
    ELTWISE = 5
    ACCUMULATOR = 6
    HOST = 7


class Flag(enum.IntFlag):
    ACCUMULATE = 1 << 0
    TRANSPOSE_A = 1 << 1
    TRANSPOSE_B = 1 << 2
    BIAS = 1 << 3
    IM2COL = 1 << 4
    COL2IM = 1 << 5
    TRAINING = 1 << 6     # POOL_FWD: write MAX indices for backward
    RESIDENT = 1 << 7     # operand already on chip: the DMA is skipped
    LAST = 1 << 8         # last command of a stage
    FMAP = 1 << 9         # DMA: a (channel rows x image-position columns) tile of an NCHW map


class Stage(enum.IntEnum):
    SETUP = 0
    FORWARD = 1
    BACKWARD_DATA = 2
    BACKWARD_WEIGHTS = 3
    ACCUMULATE = 4
    UPDATE = 5
    HOST = 6


class Buffer(enum.IntEnum):
    A = 0
    B = 1
    C = 2


class EltwiseOp(enum.IntEnum):
    RELU_FWD = 0
    RELU_BWD = 1
    SIGMOID_FWD = 2
    SIGMOID_BWD = 3
    TANH_FWD = 4
    TANH_BWD = 5
    ADD = 6
    REQUANT = 7
    COPY = 8
    ZERO = 9


#: The ELTWISE functions that need a table ROM, and its name: a build has
#: the tables of the activations its net uses, and refuses the others.
ELTWISE_TABLE = {EltwiseOp.SIGMOID_FWD: "sigmoid", EltwiseOp.SIGMOID_BWD: "sigmoid",
                 EltwiseOp.TANH_FWD: "tanh", EltwiseOp.TANH_BWD: "tanh"}


class PoolKind(enum.IntEnum):
    MAX = 0
    AVE = 1


class HostOp(enum.IntEnum):
    INPUT = 0          # host writes the batch's inputs and labels
    SOFTMAX = 1
    SOFTMAX_LOSS = 2   # forward loss and the gradient of its bottom
    ACCURACY = 3
    OUTPUT = 4         # host reads a result blob


#: One field: ``value`` occupies bits ``lsb .. lsb+width-1`` of word ``word``.
class Field(tuple):
    __slots__ = ()

    def __new__(cls, name, word, lsb, width, signed=False):
        if not 0 <= word < WORDS_PER_COMMAND or lsb < 0 or width < 1 or lsb + width > 32:
            raise ValueError(f"Field {name!r} does not fit a 32-bit word: word {word}, "
                             f"bits {lsb}..{lsb + width - 1}")
        return super().__new__(cls, (name, word, lsb, width, signed))

    name = property(lambda self: self[0])
    word = property(lambda self: self[1])
    lsb = property(lambda self: self[2])
    width = property(lambda self: self[3])
    signed = property(lambda self: self[4])

    @property
    def range(self):
        if self.signed:
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        return 0, (1 << self.width) - 1


COMMON_FIELDS = (
    Field("unit", 0, 8, 4), Field("flags", 0, 12, 12), Field("func", 0, 24, 8),
    Field("layer", 1, 0, 16), Field("stage", 1, 16, 4),
)

_DMA = (Field("addr", 2, 0, 32), Field("offset", 3, 0, 24), Field("rows", 4, 0, 16),
        Field("cols", 4, 16, 16), Field("stride", 5, 0, 32), Field("col0", 6, 0, 32),
        Field("k0", 7, 0, 16), Field("shift", 7, 16, 8, True))

LAYOUTS = {
    Opcode.NOP: (),
    Opcode.SYNC: (),
    Opcode.END: (),
    Opcode.SET_GEOMETRY: (
        Field("channels", 2, 0, 16), Field("height", 2, 16, 16),
        Field("width", 3, 0, 16), Field("kernel_h", 3, 16, 8), Field("kernel_w", 3, 24, 8),
        Field("stride_h", 4, 0, 8), Field("stride_w", 4, 8, 8),
        Field("pad_h", 4, 16, 8), Field("pad_w", 4, 24, 8),
        Field("out_h", 5, 0, 16), Field("out_w", 5, 16, 16),
        Field("images", 6, 0, 16), Field("group", 6, 16, 16),
        Field("out_channels", 7, 0, 16)),
    Opcode.DMA_LOAD: _DMA,
    Opcode.DMA_STORE: _DMA,
    Opcode.GEMM: (
        Field("a_offset", 2, 0, 24), Field("b_offset", 3, 0, 24), Field("c_offset", 4, 0, 24),
        Field("m", 5, 0, 16), Field("n", 5, 16, 16), Field("k", 6, 0, 24),
        Field("bias_shift", 6, 24, 8), Field("bias_addr", 7, 0, 32)),
    Opcode.POOL_FWD: (
        Field("src", 2, 0, 32), Field("dst", 3, 0, 32), Field("index_addr", 4, 0, 32),
        Field("c0", 5, 0, 16), Field("channels", 5, 16, 16),
        Field("n0", 6, 0, 16), Field("images", 6, 16, 16), Field("shift", 7, 0, 8, True)),
    Opcode.ELTWISE: (
        Field("src", 2, 0, 32), Field("aux", 3, 0, 32), Field("dst", 4, 0, 32),
        Field("count", 5, 0, 32), Field("shift", 6, 0, 8, True), Field("slope", 7, 0, 32, True)),
    Opcode.ACC_ADD: (
        Field("offset", 2, 0, 24), Field("grad_addr", 3, 0, 32),
        Field("rows", 4, 0, 16), Field("cols", 4, 16, 16), Field("stride", 5, 0, 32),
        Field("shift", 6, 0, 8, True)),
    Opcode.ACC_BIAS: (
        Field("src", 2, 0, 32), Field("grad_addr", 3, 0, 32), Field("channels", 4, 0, 16),
        Field("positions", 5, 0, 32), Field("images", 6, 0, 16), Field("shift", 6, 16, 8, True)),
    Opcode.SGD_UPDATE: (
        Field("weight_addr", 2, 0, 32), Field("history_addr", 3, 0, 32),
        Field("grad_addr", 4, 0, 32), Field("count", 5, 0, 32),
        Field("lr_mult", 6, 0, 16), Field("decay_mult", 6, 16, 16),
        Field("weight_frac", 7, 0, 8, True), Field("history_frac", 7, 8, 8, True),
        Field("grad_frac", 7, 16, 8, True), Field("diff_frac", 7, 24, 8, True)),
    Opcode.HOST: (
        Field("addr", 2, 0, 32), Field("diff_addr", 3, 0, 32), Field("count", 4, 0, 32),
        Field("label_addr", 5, 0, 32)),
}
LAYOUTS[Opcode.POOL_BWD] = LAYOUTS[Opcode.POOL_FWD]

#: The unit each opcode runs on; ``None``: given per command (SET_GEOMETRY).
OPCODE_UNIT = {
    Opcode.NOP: Unit.SEQUENCER, Opcode.SYNC: Unit.SEQUENCER, Opcode.END: Unit.SEQUENCER,
    Opcode.SET_GEOMETRY: None,
    Opcode.DMA_LOAD: Unit.DMA, Opcode.DMA_STORE: Unit.DMA, Opcode.GEMM: Unit.ARRAY,
    Opcode.POOL_FWD: Unit.POOL, Opcode.POOL_BWD: Unit.POOL, Opcode.ELTWISE: Unit.ELTWISE,
    Opcode.ACC_ADD: Unit.ACCUMULATOR, Opcode.ACC_BIAS: Unit.ACCUMULATOR,
    Opcode.SGD_UPDATE: Unit.ACCUMULATOR, Opcode.HOST: Unit.HOST,
}
_GEOMETRY_UNITS = (Unit.LINE_BUFFER, Unit.POOL)

#: ``lr_mult`` and ``decay_mult`` are unsigned Q8.8.
Q88_ONE = 1 << 8


def to_q88(value, what="multiplier"):
    """A non-negative multiplier as Q8.8; ValueError if not exactly representable."""
    q = round(value * Q88_ONE)
    if q / Q88_ONE != value or not 0 <= q < 1 << 16:
        raise ValueError(f"{what} {value!r} is not representable as unsigned Q8.8 "
                         f"(0 .. 255.996 in steps of 1/256)")
    return q


def _fields(opcode):
    return COMMON_FIELDS + LAYOUTS[opcode]


def _used_masks(opcode):
    masks = [0] * WORDS_PER_COMMAND
    masks[0] = 0xFF
    for f in _fields(opcode):
        masks[f.word] |= ((1 << f.width) - 1) << f.lsb
    return masks


def encode(opcode, **fields):
    """The :data:`WORDS_PER_COMMAND` words of one command.

    Fields not given are zero; ``unit`` defaults to the opcode's unit.
    ValueError names an unknown field or a value out of its range.
    """
    try:
        opcode = Opcode(opcode)
    except ValueError:
        raise ValueError(f"Unknown opcode {opcode!r}") from None
    unit = OPCODE_UNIT[opcode]
    if "unit" not in fields:
        if unit is None:
            raise ValueError(f"{opcode.name} needs an explicit unit "
                             f"({', '.join(u.name for u in _GEOMETRY_UNITS)})")
        fields["unit"] = unit
    elif (unit is not None and fields["unit"] != unit) or \
            (unit is None and fields["unit"] not in _GEOMETRY_UNITS):
        raise ValueError(f"{opcode.name} cannot run on unit {fields['unit']!r}")
    layout = {f.name: f for f in _fields(opcode)}
    unknown = set(fields) - set(layout)
    if unknown:
        raise ValueError(f"{opcode.name} has no field {', '.join(sorted(unknown))} "
                         f"(fields: {', '.join(layout)})")
    words = [0] * WORDS_PER_COMMAND
    words[0] = int(opcode)
    for name, value in fields.items():
        f = layout[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{opcode.name}.{name} must be an integer, not {value!r}")
        lo, hi = f.range
        if not lo <= value <= hi:
            raise ValueError(f"{opcode.name}.{name} = {value} does not fit "
                             f"{'signed' if f.signed else 'unsigned'} {f.width} bits "
                             f"[{lo}, {hi}]")
        words[f.word] |= (value & ((1 << f.width) - 1)) << f.lsb
    return words


def decode(words):
    """``(opcode, fields)`` of one command; the inverse of :func:`encode`.

    ``fields`` holds every field of the opcode (zeros included). ValueError
    for a wrong word count, an unknown opcode, bits set outside the layout
    or a unit the opcode cannot run on.
    """
    words = list(words)
    if len(words) != WORDS_PER_COMMAND:
        raise ValueError(f"A command is {WORDS_PER_COMMAND} words, not {len(words)}")
    for i, w in enumerate(words):
        if not isinstance(w, int) or not 0 <= w < 1 << 32:
            raise ValueError(f"Command word {i} is not a 32-bit unsigned value: {w!r}")
    try:
        opcode = Opcode(words[0] & 0xFF)
    except ValueError:
        raise ValueError(f"Unknown opcode 0x{words[0] & 0xFF:02x}") from None
    for i, (w, mask) in enumerate(zip(words, _used_masks(opcode))):
        if w & ~mask:
            raise ValueError(f"{opcode.name}: reserved bits 0x{w & ~mask:08x} set in word {i}")
    fields = {}
    for f in _fields(opcode):
        raw = (words[f.word] >> f.lsb) & ((1 << f.width) - 1)
        if f.signed and raw >> (f.width - 1):
            raw -= 1 << f.width
        fields[f.name] = raw
    unit = OPCODE_UNIT[opcode]
    if (unit is not None and fields["unit"] != unit) or \
            (unit is None and fields["unit"] not in _GEOMETRY_UNITS):
        raise ValueError(f"{opcode.name} cannot run on unit {fields['unit']}")
    return opcode, fields


def encode_stream(commands):
    """Concatenated words of ``(opcode, fields)`` pairs."""
    words = []
    for opcode, fields in commands:
        words += encode(opcode, **fields)
    return words


def decode_stream(words):
    """The ``(opcode, fields)`` pairs of a concatenation of commands."""
    words = list(words)
    if len(words) % WORDS_PER_COMMAND:
        raise ValueError(f"{len(words)} words is not a whole number of "
                         f"{WORDS_PER_COMMAND}-word commands")
    return [decode(words[i:i + WORDS_PER_COMMAND])
            for i in range(0, len(words), WORDS_PER_COMMAND)]
