"""The register map: one table that the gateware CSR bank, the host link and
the generated JSON, C header and Markdown are all built from.

Registers are 32 bits wide at byte addresses (the CSR bus uses word address
``address // 4``). Field access kinds (:class:`Access`):

* ``RO``: driven by logic; writes are ignored. ``reset`` is the value for
  constant fields (ID, VERSION) and 0 for fields the SoC drives.
* ``RW``: stored; the stored value drives logic.
* ``W1C``: set by logic, writing 1 clears the bit (writing 0 leaves it).
* ``SC``: self-clearing: writing 1 gives a one-cycle pulse to logic; reads 0.

Performance counters are 64 bits: ``<NAME>_LO`` at ``0x100 + 8n`` and
``<NAME>_HI`` at ``0x104 + 8n``. Reading LO latches HI, so LO then HI reads a
consistent value. :data:`COUNTERS` lists them in regmap order (the order of
READ_COUNTERS).

DMA_* and CMD_PUSH (:data:`PCIE_REGISTERS`) exist only in a PCIe-link SoC:
the host's bulk path there is an XDMA AXI-Stream pair plus these registers
(``docs/pcie.md``), where a UART SoC uses WRITE_MEM / READ_MEM / RUN frames.

``CONTROL.enable`` resets to 1: the sequencer runs commands as they arrive;
clearing it pauses the sequencer after the current command.

Run ``python -m fecaffe_hw.runtime.regmap --markdown|--json|--c-header``.
"""

import enum
import json
import sys
from dataclasses import dataclass, field as dataclass_field

import fecaffe_hw
from ..fixedpoint.lfsr import LFSR_BITS
from ..fixedpoint.sgd import NORM_FRAC, SgdFormats, norm_multiplier

__all__ = [
    "Access", "Field", "Register", "Counter", "REGISTERS", "COUNTERS", "Reg",
    "register", "register_at", "counter", "ID_VALUE", "VERSION_VALUE", "version_value",
    "COUNTER_BASE", "PCIE_REGISTERS", "to_json", "to_c_header", "to_markdown", "main",
]


class Access(enum.Enum):
    RO = "ro"
    RW = "rw"
    W1C = "w1c"
    SC = "sc"


@dataclass(frozen=True)
class Field:
    """``width`` bits of a register starting at bit ``lsb``."""
    name: str
    lsb: int
    width: int
    access: Access
    reset: int = 0
    description: str = ""

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"Field name must be an identifier, not {self.name!r}")
        if not isinstance(self.lsb, int) or not 0 <= self.lsb < 32:
            raise ValueError(f"Field {self.name}: lsb must be in 0..31, not {self.lsb!r}")
        if not isinstance(self.width, int) or not 1 <= self.width <= 32 - self.lsb:
            raise ValueError(f"Field {self.name}: width {self.width!r} does not fit "
                             f"at bit {self.lsb}")
        if not isinstance(self.access, Access):
            raise ValueError(f"Field {self.name}: access must be an Access, not {self.access!r}")
        if not 0 <= self.reset < 1 << self.width:
            raise ValueError(f"Field {self.name}: reset {self.reset!r} does not fit "
                             f"{self.width} bits")
        if self.access is Access.SC and self.reset != 0:
            raise ValueError(f"Field {self.name}: a self-clearing field resets to 0, "
                             f"not {self.reset!r}")

    @property
    def msb(self):
        return self.lsb + self.width - 1

    @property
    def mask(self):
        """The field's bits in the register."""
        return ((1 << self.width) - 1) << self.lsb

    def extract(self, value):
        return (value >> self.lsb) & ((1 << self.width) - 1)

    def insert(self, value, field_value):
        """``value`` with this field replaced by ``field_value``."""
        if not 0 <= field_value < 1 << self.width:
            raise ValueError(f"Field {self.name}: {field_value!r} does not fit {self.width} bits")
        return (value & ~self.mask & 0xFFFFFFFF) | (field_value << self.lsb)


@dataclass(frozen=True)
class Register:
    """A 32-bit register at byte ``address``; ``access`` summarises its fields
    (RO, RW or W1C) and ``counter`` names the 64-bit counter it is half of."""
    name: str
    address: int
    access: Access
    fields: tuple = dataclass_field(default=())
    description: str = ""
    counter: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.name.isidentifier():
            raise ValueError(f"Register name must be an identifier, not {self.name!r}")
        if not isinstance(self.address, int) or self.address % 4 or not 0 <= self.address <= 0xFFFC:
            raise ValueError(f"Register {self.name}: address must be a word-aligned u16, "
                             f"not {self.address!r}")
        if self.access not in (Access.RO, Access.RW, Access.W1C):
            raise ValueError(f"Register {self.name}: access must be RO, RW or W1C, "
                             f"not {self.access!r}")
        used, names = 0, set()
        for f in self.fields:
            if f.mask & used:
                raise ValueError(f"Register {self.name}: field {f.name} overlaps another field")
            if f.name in names:
                raise ValueError(f"Register {self.name}: field {f.name} is defined twice")
            if self.access is Access.RO and f.access is not Access.RO:
                raise ValueError(f"Register {self.name}: read-only register has "
                                 f"{f.access.name} field {f.name}")
            used |= f.mask
            names.add(f.name)

    @property
    def word_address(self):
        """The address on the CSR bus."""
        return self.address // 4

    @property
    def reset(self):
        value = 0
        for f in self.fields:
            value |= f.reset << f.lsb
        return value

    @property
    def writable_mask(self):
        """Bits a write changes (RW) or acts on (W1C, SC)."""
        return sum(f.mask for f in self.fields if f.access is not Access.RO)

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"Register {self.name} has no field {name!r}")

    def pack(self, **values):
        """A register value from field values; unnamed fields are 0."""
        value = 0
        for name, field_value in values.items():
            value = self.field(name).insert(value, field_value)
        return value

    def unpack(self, value):
        """``{field name: value}`` of a register value."""
        return {f.name: f.extract(value) for f in self.fields}


@dataclass(frozen=True)
class Counter:
    """A 64-bit performance counter: ``index`` in READ_COUNTERS, two registers."""
    name: str
    index: int
    lo: Register
    hi: Register
    description: str


def version_value(version=fecaffe_hw.__version__):
    """``major<<16 | minor<<8 | patch`` of a ``"major.minor.patch"`` string."""
    parts = version.split("+")[0].split(".")
    try:
        major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
    except ValueError:
        raise ValueError(f"Version must be major.minor.patch, not {version!r}") from None
    if not all(0 <= p <= 0xFF for p in (major, minor, patch)):
        raise ValueError(f"Version parts must be 0..255, not {version!r}")
    return major << 16 | minor << 8 | patch


ID_VALUE = 0x46434857                # 'FCHW'
VERSION_VALUE = version_value()
COUNTER_BASE = 0x100

RO, RW, W1C, SC = Access.RO, Access.RW, Access.W1C, Access.SC


def _value(access, reset=0, description=""):
    return (Field("value", 0, 32, access, reset, description),)


_COUNTER_TABLE = (
    ("CYCLES", "clock cycles since reset or clear_counters"),
    ("BUSY_CYCLES", "cycles the sequencer was executing a command"),
    ("MACS", "multiply-accumulates done by the array"),
    ("ARRAY_STALL_CYCLES", "busy cycles the array waited for operands"),
    ("MEM_STALL_CYCLES", "cycles a memory request waited for tensor memory"),
    ("MEM_READ_BYTES", "bytes read from tensor memory"),
    ("MEM_WRITE_BYTES", "bytes written to tensor memory"),
    ("COMMANDS_DONE", "sequencer commands completed"),
)


def _format(fmt):
    return f"Format({fmt.bits}, {fmt.frac})"


def _counter_registers():
    registers = []
    for n, (name, description) in enumerate(_COUNTER_TABLE):
        address = COUNTER_BASE + 8 * n
        registers.append(Register(f"{name}_LO", address, RO, _value(RO),
                                  f"{description}, bits 31:0 (reading latches HI)", name))
        registers.append(Register(f"{name}_HI", address + 4, RO, _value(RO),
                                  f"{description}, bits 63:32 (latched by reading LO)", name))
    return registers


REGISTERS = (
    Register("ID", 0x000, RO, _value(RO, ID_VALUE, "'FCHW'"),
             "identifies a fecaffe-hw device"),
    Register("VERSION", 0x004, RO, (
        Field("patch", 0, 8, RO, VERSION_VALUE & 0xFF),
        Field("minor", 8, 8, RO, VERSION_VALUE >> 8 & 0xFF),
        Field("major", 16, 8, RO, VERSION_VALUE >> 16 & 0xFF),
    ), "toolkit version the gateware was generated by"),
    Register("CAPABILITIES", 0x008, RO, (
        Field("training", 0, 1, RO, 0, "backward pass and weight update"),
        Field("pooling", 1, 1, RO, 0, "max and average pooling unit"),
        Field("sigmoid_tanh", 2, 1, RO, 0, "Sigmoid and TanH in the elementwise unit"),
        Field("lrn", 3, 1, RO, 0, "local response normalisation"),
        Field("link_pcie", 4, 1, RO, 0, "host link is PCIe (else UART)"),
        Field("external_memory", 5, 1, RO, 0, "tensor memory is external (DDR), not BRAM"),
    ), "what the generated hardware supports"),
    Register("ARRAY", 0x00C, RO, (
        Field("rows", 0, 8, RO, 0, "systolic array rows"),
        Field("cols", 8, 8, RO, 0, "systolic array columns"),
        Field("data_width", 16, 8, RO, 0, "operand width in bits"),
        Field("acc_width", 24, 8, RO, 0, "accumulator width in bits"),
    ), "systolic array geometry"),
    Register("CONTROL", 0x010, RW, (
        Field("soft_reset", 0, 1, SC, 0, "reset the sequencer, DMA and command FIFO"),
        Field("clear_counters", 1, 1, SC, 0, "zero every performance counter"),
        Field("enable", 2, 1, RW, 1, "the sequencer executes commands"),
        Field("host_resume", 3, 1, SC, 0,
              "the host has done a HOST command's work; the sequencer resumes"),
    ), "control"),
    Register("STATUS", 0x014, RO, (
        Field("busy", 0, 1, RO, 0, "a command is executing or queued"),
        Field("error", 1, 1, RO, 0, "a bit of ERROR is set"),
        Field("host_wait", 2, 1, RO, 0,
              "a HOST command waits for the host (softmax, loss, inputs); see host_resume"),
        Field("cmd_fifo_level", 8, 8, RO, 0, "command words queued (saturates at 255)"),
    ), "status"),
    Register("ERROR", 0x018, W1C, (
        Field("bad_command", 0, 1, W1C, 0, "the sequencer read an invalid command"),
        Field("mem_fault", 1, 1, W1C, 0, "a memory access was out of range or failed"),
        Field("overflow", 2, 1, W1C, 0, "an accumulator or counter overflowed"),
    ), "sticky error causes; write 1 to clear"),
    Register("SCRATCH", 0x01C, RW, _value(RW, 0, "free for host use"),
             "read/write scratch register for link tests"),
    Register("PLAN_HASH", 0x020, RO, _value(RO, 0, "low 32 bits of the plan's hash"),
             "identifies the plan the gateware was generated for"),
    Register("CMD_SPACE", 0x024, RO, _value(RO, 0, "free command FIFO words"),
             "free command FIFO words"),
    Register("MEM_SIZE", 0x028, RO, _value(RO, 0, "tensor memory bytes / 4096"),
             "tensor memory size in 4 KiB units"),
    # PCIe link only (see PCIE_REGISTERS and docs/pcie.md).
    Register("DMA_ADDR", 0x040, RW, _value(RW, 0, "tensor memory byte address, a multiple of 4"),
             "PCIe DMA: where the next transfer starts in tensor memory"),
    Register("DMA_LEN", 0x044, RW, _value(RW, 0, "bytes, a nonzero multiple of 4"),
             "PCIe DMA: length of the next transfer in bytes"),
    Register("DMA_CONTROL", 0x048, RW, (
        Field("start_h2c", 0, 1, SC, 0,
              "start a transfer from the H2C stream into tensor memory"),
        Field("start_c2h", 1, 1, SC, 0,
              "start a transfer from tensor memory out on the C2H stream"),
        Field("abort", 2, 1, SC, 0,
              "stop the transfer after the bursts already issued; sets done"),
    ), "PCIe DMA: starts a transfer of DMA_LEN bytes at DMA_ADDR"),
    Register("DMA_STATUS", 0x04C, W1C, (
        Field("busy", 0, 1, RO, 0, "a transfer is running"),
        Field("c2h", 1, 1, RO, 0, "direction of the running or last transfer (1: C2H)"),
        Field("done", 8, 1, W1C, 0, "a transfer finished (or was aborted)"),
        Field("bad_request", 9, 1, W1C, 0,
              "a start was refused (length 0 or not a multiple of 4, address unaligned, "
              "beyond tensor memory, both directions, or a transfer running); "
              "nothing moved"),
        Field("mem_fault", 10, 1, W1C, 0, "tensor memory answered a burst with an error"),
        Field("stream_fault", 11, 1, W1C, 0,
              "H2C TLAST came before DMA_LEN bytes; the transfer ended there"),
        Field("cmd_refused", 12, 1, W1C, 0,
              "a CMD_PUSH found the command FIFO full; the word was dropped"),
    ), "PCIe DMA and command push status; write 1 to clear the sticky bits"),
    Register("DMA_PROGRESS", 0x050, RO, _value(RO, 0, "bytes"),
             "PCIe DMA: bytes of the running or last transfer that crossed the stream"),
    Register("CMD_PUSH", 0x054, RW, _value(RW, 0, "command word"),
             "PCIe: a write pushes the word onto the command FIFO (refused with "
             "SLVERR and DMA_STATUS.cmd_refused when CMD_SPACE is 0); reads the "
             "last word pushed"),
    # The SGD_UPDATE constants (fixedpoint.update.sgd_constants): unsigned
    # values in the signed 18-bit formats of fixedpoint.sgd.SgdFormats.
    Register("SGD_RATE", 0x060, RW, (
        Field("value", 0, 18, RW, 0,
              f"learning rate as unsigned {_format(SgdFormats.rate)}: round(lr * 2**"
              f"{SgdFormats.rate.frac}); larger than 2**17 - 1 saturates"),
    ), "SGD_UPDATE learning rate (times each command's lr_mult)"),
    Register("SGD_MOMENTUM", 0x064, RW, (
        Field("value", 0, 18, RW, 0,
              f"momentum as unsigned {_format(SgdFormats.momentum)}: round(momentum * 2**"
              f"{SgdFormats.momentum.frac}); larger than 2**17 - 1 saturates"),
    ), "SGD_UPDATE momentum"),
    Register("SGD_DECAY", 0x068, RW, (
        Field("value", 0, 18, RW, 0,
              f"weight decay as unsigned {_format(SgdFormats.decay)}: round(weight_decay * "
              f"2**{SgdFormats.decay.frac}); larger than 2**17 - 1 saturates"),
    ), "SGD_UPDATE weight decay (times each command's decay_mult)"),
    Register("SGD_NORM", 0x06C, RW, (
        Field("value", 0, NORM_FRAC + 1, RW, norm_multiplier(1),
              f"fixedpoint.sgd.norm_multiplier(iter_size) = round(2**{NORM_FRAC} / "
              f"iter_size); larger than 2**{NORM_FRAC} saturates"),
    ), "SGD_UPDATE gradient normalisation (1 / iter_size)"),
    Register("LFSR_SEED", 0x070, RW, (
        Field("value", 0, LFSR_BITS, RW, 1,
              "a write reseeds the stochastic-rounding LFSR with this value "
              "(0 is ignored); reads the last value written"),
    ), "SGD_UPDATE rounding LFSR seed: a write reseeds the LFSR (0 is ignored); write it "
       "while STATUS.busy is low (soft_reset returns the LFSR to the reset seed)"),
    *_counter_registers(),
)

#: Registers only a PCIe-link SoC implements (its DMA and command push over
#: BAR0); a UART-link SoC leaves them unmapped, so accesses answer BAD_ADDRESS.
PCIE_REGISTERS = ("DMA_ADDR", "DMA_LEN", "DMA_CONTROL", "DMA_STATUS", "DMA_PROGRESS",
                  "CMD_PUSH")

Reg = enum.IntEnum("Reg", {r.name: r.address for r in REGISTERS})
Reg.__doc__ = "Register byte addresses by name."

_BY_NAME = {r.name: r for r in REGISTERS}
_BY_ADDRESS = {r.address: r for r in REGISTERS}
assert len(_BY_NAME) == len(_BY_ADDRESS) == len(REGISTERS)

COUNTERS = tuple(
    Counter(name, n, _BY_NAME[f"{name}_LO"], _BY_NAME[f"{name}_HI"], description)
    for n, (name, description) in enumerate(_COUNTER_TABLE))
_COUNTERS_BY_NAME = {c.name: c for c in COUNTERS}


def register(name):
    """The :class:`Register` called ``name`` (KeyError naming it if none)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"No register named {name!r}") from None


def register_at(address):
    """The :class:`Register` at byte ``address``, or None."""
    return _BY_ADDRESS.get(address)


def counter(name):
    """The :class:`Counter` called ``name``."""
    try:
        return _COUNTERS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"No performance counter named {name!r}") from None


def to_json():
    """The register map as a JSON document."""
    return json.dumps({
        "id": ID_VALUE,
        "version": VERSION_VALUE,
        "registers": [{
            "name": r.name, "address": r.address, "access": r.access.value,
            "reset": r.reset, "description": r.description,
            **({"counter": r.counter} if r.counter else {}),
            "fields": [{
                "name": f.name, "lsb": f.lsb, "width": f.width, "access": f.access.value,
                "reset": f.reset, "description": f.description,
            } for f in r.fields],
        } for r in REGISTERS],
        "counters": [c.name for c in COUNTERS],
    }, indent=2) + "\n"


def to_c_header(prefix="FCHW"):
    """The register map as a C header: addresses, field shifts, masks and resets."""
    guard = f"{prefix}_REGMAP_H"
    lines = [
        "/* Generated by python -m fecaffe_hw.runtime.regmap --c-header; do not edit. */",
        f"#ifndef {guard}", f"#define {guard}", "",
        f"#define {prefix}_ID_VALUE 0x{ID_VALUE:08X}u",
        f"#define {prefix}_VERSION_VALUE 0x{VERSION_VALUE:08X}u",
        f"#define {prefix}_COUNTER_COUNT {len(COUNTERS)}u", "",
    ]
    for r in REGISTERS:
        name = f"{prefix}_{r.name}"
        lines.append(f"/* {r.name} ({r.access.name}): {_c_comment(r.description)} */")
        lines.append(f"#define {name}_ADDR 0x{r.address:03X}u")
        lines.append(f"#define {name}_RESET 0x{r.reset:08X}u")
        for f in r.fields:
            if len(r.fields) == 1 and f.width == 32:
                continue
            fname = f"{name}_{f.name.upper()}"
            lines.append(f"#define {fname}_SHIFT {f.lsb}u")
            lines.append(f"#define {fname}_MASK 0x{f.mask:08X}u")
        lines.append("")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


def _c_comment(text):
    return text.replace("*/", "* /")


def to_markdown():
    """The register map as Markdown: one table row per register, then fields."""
    lines = [
        "# Register map",
        "",
        "Generated by `python -m fecaffe_hw.runtime.regmap --markdown`; do not edit.",
        "Registers are 32 bits at byte addresses. Access: RO read-only, RW read/write,",
        "W1C write 1 to clear, SC self-clearing (write 1 for a one-cycle pulse, reads 0).",
        "Performance counters are 64 bits (LO, HI); reading LO latches HI.",
        "",
        "| address | name | access | reset | description |",
        "|---|---|---|---|---|",
    ]
    for r in REGISTERS:
        lines.append(f"| 0x{r.address:03X} | {r.name} | {r.access.name} | "
                     f"0x{r.reset:08X} | {_md(r.description)} |")
    lines.append("")
    lines.append("## Fields")
    for r in REGISTERS:
        if r.counter or (len(r.fields) == 1 and r.fields[0].width == 32):
            continue
        lines += ["", f"### {r.name} (0x{r.address:03X})", "",
                  "| bits | field | access | reset | description |", "|---|---|---|---|---|"]
        for f in r.fields:
            bits = f"{f.msb}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
            lines.append(f"| {bits} | {f.name} | {f.access.name} | {f.reset:#x} | "
                         f"{_md(f.description)} |")
    return "\n".join(lines) + "\n"


def _md(text):
    return text.replace("|", "\\|")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    formats = {"--markdown": to_markdown, "--json": to_json, "--c-header": to_c_header}
    if len(argv) != 1 or argv[0] not in formats:
        print(f"usage: python -m fecaffe_hw.runtime.regmap {{{'|'.join(formats)}}}",
              file=sys.stderr)
        return 2
    sys.stdout.write(formats[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
