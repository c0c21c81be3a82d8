# amaranth: UnusedElaboratable=no
import json

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from fecaffe_hw.cores.attributes import LOCAL_REGISTER
from fecaffe_hw.errors import FecaffeError
from fecaffe_hw.synthesis import (SynthesisError, Utilization, parse_stat, synthesize,
                                  synthesize_rtlil, utilization_from_cells)

_TEXT_STAT = """
3. Printing statistics.

=== top ===

        +----------Local Count, excluding submodules.
        |
      150 wires
      527 wire bits
        8 ports
      260 cells
        2   $scopeinfo
        1   BUFG
        4   DSP48E1
       97   FDRE
        2   FDSE
       37   IBUF
        4   LUT2
       44   LUT4
        2   LUT6
        7   RAM32M
        3   RAMB18E1
        2   RAMB36E1
        1   SRLC32E
"""


def test_parse_text_stat():
    # 4 + 44 + 2 logic LUTs, 7 RAM32M (4 LUTs each) + 1 SRL as memory.
    got = parse_stat(_TEXT_STAT)
    assert got == Utilization(lut=50 + 28 + 1, lutram=29, ff=99, dsp=4, bram36=3.5)
    assert got.cells["IBUF"] == 37


_HIERARCHY_STAT = """
=== top.grid ===
       64 cells
        4   DSP48E1

=== design hierarchy ===

        +----------Count including submodules.
        |
       93 top
       64 top.grid
       21 top.out_fifo

        +----------Count including submodules.
        |
      183 wires
       28 ports
        1 memories
       93 cells
        8   FDRE
        4   DSP48E1
        3   RAMB18E1
        2 submodules
        1   top.grid
        1   top.out_fifo
"""


def test_parse_text_stat_hierarchy_totals_only():
    got = parse_stat(_HIERARCHY_STAT)
    assert got.cells == {"FDRE": 8, "DSP48E1": 4, "RAMB18E1": 3}
    assert (got.ff, got.dsp, got.bram36) == (8, 4, 1.5)


def test_parse_json_stat_uses_design_totals():
    report = {
        "modules": {"\\top": {"num_cells_by_type": {"LUT6": 1}}},
        "design": {"num_cells_by_type": {"LUT3": 10, "LUT6": 5, "FDRE": 7, "FDCE": 1,
                                         "DSP48E1": 2, "RAMB18E1": 1, "RAM64X1D": 3}},
    }
    got = parse_stat(json.dumps(report, indent=3))
    assert got.as_dict() == {"lut": 15 + 6, "lutram": 6, "ff": 8, "dsp": 2, "bram36": 0.5}


def test_ecp5_counting():
    got = utilization_from_cells({"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 9, "MULT18X18D": 2,
                                  "DP16KD": 3}, family="ecp5")
    assert got.as_dict() == {"lut": 16, "lutram": 0, "ff": 9, "dsp": 2, "bram36": 1.5}


def test_bad_inputs():
    with pytest.raises(ValueError, match="Unknown FPGA family 'xc9'"):
        utilization_from_cells({}, family="xc9")
    with pytest.raises(SynthesisError, match="lists no cells"):
        parse_stat("=== top ===\n  3 wires\n")
    with pytest.raises(SynthesisError, match="malformed"):
        parse_stat('{"modules": {}}')


def test_yosys_error_is_one_line():
    with pytest.raises(FecaffeError) as info:
        synthesize_rtlil("module \\top\n  wire width 1 \\x\nend\n", top="nosuch")
    message = str(info.value)
    assert "\n" not in message and "nosuch" in message and "ERROR" in message


class _RomScanner(wiring.Component):
    """A 10-bit address counter reading a 1024 x 16 ROM: one RAMB18E1 in xc7."""

    def __init__(self):
        super().__init__({"data": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(
            shape=16, depth=1024, init=[(i * 2654435761) & 0xFFFF for i in range(1024)])
        port = mem.read_port()
        addr = Signal(10)
        m.d.sync += addr.eq(addr + 1)
        m.d.comb += [port.addr.eq(addr), self.data.eq(port.data)]
        return m


def test_synthesis_counts_bram18_as_half():
    got = synthesize(_RomScanner())
    assert got.cells.get("RAMB18E1") == 1, got.cells
    assert got.bram36 == 0.5
    assert got.dsp == 0
    assert got.ff >= 10 and got.lut >= 1, got.cells


class _TwinRegisters(wiring.Component):
    """Four registers of one input, the first ``marked`` of them LOCAL_REGISTER."""

    def __init__(self, marked):
        self.marked = marked
        super().__init__({"d": In(4), "q": Out(4)})

    def elaborate(self, platform):
        m = Module()
        for i in range(4):
            attrs = {LOCAL_REGISTER: 1} if i < self.marked else {}
            reg = Signal(name=f"twin{i}", attrs=attrs)
            m.d.sync += reg.eq(self.d.xor())
            m.d.comb += self.q[i].eq(reg)
        return m


@pytest.mark.parametrize("family", ["xc7", "ecp5"])
@pytest.mark.parametrize("marked, kept", [(0, 1), (3, 3)])
def test_local_registers_are_not_shared(family, marked, kept):
    # Unmarked twins become one register (an unmarked one may also fold into
    # a marked one); marked ones stay apart.
    used = synthesize(_TwinRegisters(marked), family=family)
    assert used.ff == kept, used.cells
