"""Bit-exact fixed-point model: the arithmetic contract every RTL core follows.

See docs/fixed_point.md for formats, rounding, saturation vs wrap and the LFSR.
"""

from .format import Format, quantize, dequantize, saturate, wrap, shift_round, requantize
from .gemm import gemm
from .lfsr import LFSR_BITS, LFSR_MASK, lfsr_step, Lfsr, stochastic_round

__all__ = [
    "Format", "quantize", "dequantize", "saturate", "wrap", "shift_round", "requantize",
    "gemm", "LFSR_BITS", "LFSR_MASK", "lfsr_step", "Lfsr", "stochastic_round",
]
