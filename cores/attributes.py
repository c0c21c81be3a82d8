"""Attributes the cores put on signals for the synthesis flow to act on."""

__all__ = ["LOCAL_REGISTER"]

#: Marks a register that must stay next to the logic it drives.
#:
#: Synthesis shares registers with the same input (yosys's ``opt_merge``), and
#: in a systolic array that is ruinous: every PE on an anti-diagonal sees the
#: same step flags, so one register would drive the accumulators of the whole
#: diagonal, a net spanning the array (on the 10x11 ECP5-85F plan, about 60
#: nets of 300-400 sinks each, and that route stalled).
#: :func:`fecaffe_hw.synthesis.synthesis_commands` gives the
#: flip-flops of signals carrying this attribute yosys's ``keep``, which stops
#: the sharing; each PE keeps its own copy, one hop from its neighbour's.
LOCAL_REGISTER = "fecaffe_local_register"
