"""CSR bus: the one-access-at-a-time register bus inside the SoC.

The frame engine (UART link) or :class:`~fecaffe_hw.cores.axil_csr.AxilCsr`
(PCIe link) is the initiator, :class:`~fecaffe_hw.cores.csr_bank.CsrBank` the
target. Timing, from the initiator's side:

- cycle *t*: ``addr`` (word address, byte address >> 2) with ``r_stb`` or
  ``w_stb`` (with ``w_data``) high for one cycle;
- cycle *t + 1*: ``r_data`` holds the value read and ``error`` is high if
  ``addr`` maps to no register (reads return 0) or, on a write, to a register
  with nothing writable; the access had no side effect then.

A new access may start at *t + 1*. ``r_stb`` and ``w_stb`` are never high
together.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CsrBus"]


class CsrBus(wiring.Signature):
    """Signature of the CSR bus, initiator's view.

    Members: ``addr`` Out(``addr_width``), ``r_stb`` Out(1), ``w_stb`` Out(1),
    ``w_data`` Out(32), ``r_data`` In(32), ``error`` In(1). The default
    ``addr_width`` of 14 covers the protocol's 16-bit byte addresses.
    """

    data_width = 32

    def __init__(self, *, addr_width=14):
        if isinstance(addr_width, bool) or not isinstance(addr_width, int) \
                or not 1 <= addr_width <= 30:
            raise ValueError(f"CSR address width must be an integer in [1, 30], "
                             f"not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "addr":   Out(addr_width),
            "r_stb":  Out(1),
            "w_stb":  Out(1),
            "w_data": Out(32),
            "r_data": In(32),
            "error":  In(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    def __eq__(self, other):
        return type(other) is CsrBus and self.addr_width == other.addr_width

    def __repr__(self):
        return f"CsrBus(addr_width={self.addr_width})"
