import pytest

from fecaffe_hw.build.pll import ecp5_pll
from fecaffe_hw.errors import PlanError


@pytest.mark.parametrize("input_mhz, output_mhz", [
    (25, 25), (25, 50), (25, 62.5), (25, 75), (25, 80), (25, 100), (25, 133.33), (100, 75),
])
def test_dividers_within_lattice_limits(input_mhz, output_mhz):
    pll = ecp5_pll(input_mhz * 1e6, output_mhz * 1e6)
    # Feedback from CLKOP: f_out = f_in * CLKFB_DIV / CLKI_DIV, VCO = f_out * CLKOP_DIV.
    out = input_mhz * 1e6 * pll.clkfb_div / pll.clki_div
    assert pll.output_hz == pytest.approx(out)
    assert pll.vco_hz == pytest.approx(out * pll.clkop_div)
    assert 3.125e6 <= input_mhz * 1e6 / pll.clki_div <= 400e6
    assert 400e6 <= out * pll.clkop_div <= 800e6
    assert 1 <= pll.clki_div <= 128 and 1 <= pll.clkfb_div <= 80 and 1 <= pll.clkop_div <= 128
    assert abs(out - output_mhz * 1e6) <= 0.01 * output_mhz * 1e6


def test_exact_when_the_dividers_allow():
    pll = ecp5_pll(25e6, 75e6)
    assert pll.output_hz == 75e6
    # Highest phase-detector frequency: no input division for a multiple of 25 MHz.
    assert (pll.clki_div, pll.clkfb_div) == (1, 3)


def test_unreachable_frequencies_are_plan_errors():
    with pytest.raises(PlanError, match="500 MHz is outside"):
        ecp5_pll(25e6, 500e6)
    with pytest.raises(PlanError, match="output frequency must be a positive number"):
        ecp5_pll(25e6, 0)
    with pytest.raises(PlanError, match="input frequency must be a positive number"):
        ecp5_pll(-1, 75e6)
