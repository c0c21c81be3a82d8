"""The board database: what the compiler may spend on each supported board.

Figures are the FPGA part's (data sheets: Xilinx DS180, Lattice FPGA-DS-02012)
and the board's (oscillator, memory, host links). ``bram36`` counts 36-kbit
blocks; a part with 18-kbit blocks (ECP5 EBR) counts each as half. ``dsp``
counts multipliers a PE can use: DSP48E1 slices on Artix-7 (a 25x18
multiplier each), MULT18X18D on ECP5. Memory bandwidth is the peak of the
DRAM at the board's clock, in bytes per fabric cycle.
"""

from dataclasses import dataclass, field

from ..errors import PlanError

__all__ = ["ExternalMemory", "Board", "BOARDS", "board", "BRAM36_BYTES"]

#: Bytes of one 36-kbit block RAM (parity bits not used for data).
BRAM36_BYTES = 4608


@dataclass(frozen=True)
class ExternalMemory:
    """DRAM behind the tensor-memory AXI4 master."""
    kind: str
    bytes: int
    bytes_per_cycle: float
    latency: int

    def to_dict(self):
        return {"kind": self.kind, "bytes": self.bytes,
                "bytes_per_cycle": self.bytes_per_cycle, "latency": self.latency}


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    part: str
    family: str          # "xilinx7" or "ecp5"
    lut: int
    ff: int
    dsp: int
    bram36: float
    clock_mhz: float
    memory: ExternalMemory | None
    links: tuple = field(default=("uart",))
    platform: str = ""   # "module:Class" in amaranth_boards

    @property
    def bram_bytes(self):
        return int(self.bram36 * BRAM36_BYTES)

    @property
    def multiplier_width(self):
        """Widest operand one multiplier takes (both ports): 18 on both families."""
        return 18

    def to_dict(self):
        return {"name": self.name, "title": self.title, "part": self.part,
                "family": self.family, "lut": self.lut, "ff": self.ff, "dsp": self.dsp,
                "bram36": self.bram36, "clock_mhz": self.clock_mhz,
                "memory": self.memory.to_dict() if self.memory else None,
                "links": list(self.links), "platform": self.platform}

    def platform_class(self):
        """The amaranth-boards platform class (imports amaranth_boards)."""
        import importlib
        module, _, name = self.platform.partition(":")
        return getattr(importlib.import_module(module), name)


# DDR3L-667 x16 on the Arty (MIG at 333 MHz DDR): 1.33 GB/s = 13.3 B per
# 100 MHz cycle; MIG's read latency is about 25-30 fabric cycles.
_ARTY_DDR = ExternalMemory("DDR3L", 256 << 20, 13.3, 30)

BOARDS = {b.name: b for b in (
    Board("arty", "Arty A7-35T", "xc7a35ticsg324-1L", "xilinx7", 20_800, 41_600, 90, 50,
          100.0, _ARTY_DDR, ("uart",), "amaranth_boards.arty_a7:ArtyA7_35Platform"),
    Board("arty-a7-100", "Arty A7-100T", "xc7a100tcsg324-1", "xilinx7", 63_400, 126_800,
          240, 135, 100.0, _ARTY_DDR, ("uart",), "amaranth_boards.arty_a7:ArtyA7_100Platform"),
    # Nitefury II: DDR3 x16 at 400 MHz (1.6 GB/s) on an M.2 card, PCIe x4 only.
    Board("nitefury", "Nitefury II", "xc7a200tfbg484-2", "xilinx7", 134_600, 269_200, 740, 365,
          100.0, ExternalMemory("DDR3", 512 << 20, 16.0, 30), ("pcie",),
          "amaranth_boards.nitefury:NitefuryIIPlatform"),
    # The ULX3S has 32 MB SDRAM, but the flow has no SDRAM controller yet:
    # tensor memory is on-chip EBR. The SoC runs at 75 MHz from a PLL on the
    # 25 MHz oscillator (nextpnr meets it on the -6 part; docs/boards.md).
    Board("ulx3s-85f", "ULX3S 85F", "LFE5U-85F-6BG381C", "ecp5", 83_640, 83_640, 156, 104,
          75.0, None, ("uart",), "amaranth_boards.ulx3s:ULX3S_85F_Platform"),
    # 100 MHz oscillator; the SoC takes 75 MHz from a PLL, the clock measured
    # to close on the ULX3S's slower -6 part (100 MHz is not measured here).
    Board("versa-ecp5-5g", "ECP5-5G Versa", "LFE5UM5G-45F-8BG381C", "ecp5", 43_848, 43_848,
          72, 54, 75.0, None, ("uart",), "amaranth_boards.versa_ecp5_5g:VersaECP55GPlatform"),
)}


def board(name):
    """The :class:`Board` called ``name`` (a Board passes through); PlanError lists the names."""
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except KeyError:
        raise PlanError(f"unknown board {name!r} (known: {', '.join(BOARDS)})") from None
