"""The Nitefury II's pins for the PCIe build, corrected against the board's published design.

amaranth-boards' ``NitefuryIIPlatform`` has the right part, clock and LEDs,
but its ``pcie`` and ``ddr3`` resources cannot drive an XDMA and a MIG as they
stand: PERST# is declared an output, the GTP reference clock and lanes carry
an IOSTANDARD (GT pins take none), DQS is DIFF_SSTL135 in a bank whose other
DDR3 pins are SSTL15, and the address bus lists a sixteenth pin (J22) that
the 4 Gb x16 part does not have. :class:`NitefuryPciePlatform` keeps the
amaranth-boards class (part, speed grade, bitstream settings) and replaces
those two resources with the pins of RHS Research's own Nitefury sample
projects (github.com/RHSResearchLLC/NiteFury-and-LiteFury, Sample-Projects:
the MIG's ``Top_mig_7series_0_0.xdc`` for the xc7a200t-fbg484, and the
XDMA's ``Top_xdma_0_0_pcie2_ip-PCIE_X0Y0-fixed.xdc`` for the lanes); see
docs/boards.md.
"""

from amaranth.build import Attrs, Clock, DiffPairs, Pins, PinsN, Resource, Subsignal
from amaranth_boards.nitefury import NitefuryIIPlatform

__all__ = ["NitefuryPciePlatform", "GTP_QUAD_216", "PCIE_LANE_CHANNELS"]

#: GTP quad 216 of the xc7a200t-fbg484 (Xilinx package file): channel site ->
#: (RX P/N, TX P/N) package pins.
GTP_QUAD_216 = {
    "GTPE2_CHANNEL_X0Y4": (("B8", "A8"), ("B4", "A4")),
    "GTPE2_CHANNEL_X0Y5": (("D11", "C11"), ("D5", "C5")),
    "GTPE2_CHANNEL_X0Y6": (("B10", "A10"), ("B6", "A6")),
    "GTPE2_CHANNEL_X0Y7": (("D9", "C9"), ("D7", "C7")),
}

#: PCIe lane -> GTP channel on the Nitefury's M.2 routing (RHS Research's
#: fixed XDMA constraints; XDMA's default lane order does not match the board).
PCIE_LANE_CHANNELS = ("GTPE2_CHANNEL_X0Y6", "GTPE2_CHANNEL_X0Y4",
                      "GTPE2_CHANNEL_X0Y5", "GTPE2_CHANNEL_X0Y7")


def _lanes(direction, which):
    pins = [GTP_QUAD_216[channel][which] for channel in PCIE_LANE_CHANNELS]
    return DiffPairs(p=" ".join(p for p, _ in pins), n=" ".join(n for _, n in pins),
                     dir=direction)


class NitefuryPciePlatform(NitefuryIIPlatform):
    """``NitefuryIIPlatform`` with ``pcie_x4`` (perst, clkreq, 100 MHz refclk,
    4 GTP lanes) and a MIG-ready ``ddr3`` (1.5 V SSTL15, 15 address bits)."""

    resources = [
        *(r for r in NitefuryIIPlatform.resources if r.name not in ("pcie", "ddr3")),
        Resource("pcie_x4", 0,
            # PERST# comes from the host; the pull-up keeps the link in reset
            # while the M.2 socket is unpowered.
            Subsignal("perst", PinsN("J1", dir="i"), Attrs(IOSTANDARD="LVCMOS33", PULLUP="TRUE")),
            Subsignal("clkreq", PinsN("G1", dir="o"), Attrs(IOSTANDARD="LVCMOS33")),
            # MGTREFCLK0 of quad 216: dedicated GT clock pins take no IOSTANDARD.
            Subsignal("clk", DiffPairs(p="F6", n="E6", dir="i"), Clock(100e6)),
            Subsignal("rx", _lanes("i", 0)),
            Subsignal("tx", _lanes("o", 1)),
        ),
        Resource("ddr3", 0,
            Subsignal("rst", PinsN("K16", dir="o"), Attrs(IOSTANDARD="LVCMOS15")),
            Subsignal("clk", DiffPairs(p="K17", n="J17", dir="o"), Attrs(IOSTANDARD="DIFF_SSTL15")),
            Subsignal("clk_en", Pins("H22", dir="o")),
            Subsignal("we", PinsN("L16", dir="o")),
            Subsignal("ras", PinsN("H20", dir="o")),
            Subsignal("cas", PinsN("K18", dir="o")),
            Subsignal("a", Pins("M15 L21 M16 L18 K21 M18 M21 N20 M20 N19 J21 M22 K22 N18 N22",
                                dir="o")),
            Subsignal("ba", Pins("L19 J20 L20", dir="o")),
            Subsignal("dqs", DiffPairs(p="F18 B21", n="E18 A21", dir="io"),
                      Attrs(IOSTANDARD="DIFF_SSTL15", IN_TERM="UNTUNED_SPLIT_50")),
            Subsignal("dq", Pins("D19 B20 E19 A20 F19 C19 F20 C18 E22 G21 D20 E21 C22 D21 B22 D22",
                                 dir="io"), Attrs(IN_TERM="UNTUNED_SPLIT_50")),
            Subsignal("dm", Pins("A19 G22", dir="o")),
            Subsignal("odt", Pins("K19", dir="o")),
            Attrs(IOSTANDARD="SSTL15", SLEW="FAST"),
        ),
    ]
