"""ECP5 PLL (EHXPLLL) settings: dividers for an output clock from a board oscillator.

The EHXPLLL here feeds back from CLKOP, so ``f_out = f_in * CLKFB_DIV /
CLKI_DIV`` and the VCO runs at ``f_out * CLKOP_DIV``. Limits are Lattice's
(FPGA-DS-02012, sysCLOCK PLL timing): phase detector input 3.125..400 MHz,
VCO 400..800 MHz, output 3.125..400 MHz; dividers 1..128 (CLKFB_DIV 1..80).
"""

import dataclasses

from amaranth.hdl import Instance

from ..errors import PlanError

__all__ = ["Ecp5Pll", "ecp5_pll"]

_PFD_HZ = (3.125e6, 400e6)
_VCO_HZ = (400e6, 800e6)
_OUT_HZ = (3.125e6, 400e6)


@dataclasses.dataclass(frozen=True)
class Ecp5Pll:
    """One EHXPLLL configuration: its dividers and the frequencies they give."""
    input_hz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def output_hz(self):
        return self.input_hz * self.clkfb_div / self.clki_div

    @property
    def vco_hz(self):
        return self.output_hz * self.clkop_div

    def instance(self, *, clk_in, clk_out, locked):
        """The ``EHXPLLL`` instance: ``clk_in`` -> ``clk_out`` (also its feedback), ``locked``."""
        return Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=self.clki_div, p_CLKFB_DIV=self.clkfb_div, p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=self.clkop_div,
            p_CLKOP_CPHASE=self.clkop_div - 1, p_CLKOP_FPHASE=0,
            # Loop filter settings Trellis' ecppll writes for every configuration.
            a_FREQUENCY_PIN_CLKI=f"{self.input_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{self.output_hz / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            i_CLKI=clk_in, i_CLKFB=clk_out, i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clk_out, o_LOCK=locked)


def ecp5_pll(input_hz, output_hz):
    """The :class:`Ecp5Pll` whose output is nearest ``output_hz`` (exact when the
    dividers allow), preferring the highest phase-detector frequency (least
    jitter). PlanError names a frequency no configuration reaches within 1%.
    """
    for name, value in (("input", input_hz), ("output", output_hz)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise PlanError(f"PLL {name} frequency must be a positive number of Hz, "
                            f"not {value!r}")
    if not _OUT_HZ[0] <= output_hz <= _OUT_HZ[1]:
        raise PlanError(f"ECP5 PLL output {output_hz / 1e6:g} MHz is outside "
                        f"{_OUT_HZ[0] / 1e6:g}..{_OUT_HZ[1] / 1e6:g} MHz")
    best, best_key = None, None
    for clki_div in range(1, 129):
        pfd = input_hz / clki_div
        if pfd < _PFD_HZ[0]:
            break
        if pfd > _PFD_HZ[1]:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if out > _OUT_HZ[1]:
                break
            clkop_div = next((d for d in range(1, 129) if out * d >= _VCO_HZ[0]), None)
            if clkop_div is None or out * clkop_div > _VCO_HZ[1]:
                continue
            key = (abs(out - output_hz), clki_div)
            if best_key is None or key < best_key:
                best, best_key = Ecp5Pll(input_hz, clki_div, clkfb_div, clkop_div), key
    if best is None or abs(best.output_hz - output_hz) > 0.01 * output_hz:
        raise PlanError(f"no ECP5 PLL setting makes {output_hz / 1e6:g} MHz from "
                        f"{input_hz / 1e6:g} MHz")
    return best
