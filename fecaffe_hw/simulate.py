"""``fecaffe-hw sim``: the generated SoC runs a network cycle by cycle, checked
word for word against the NumPy machine and against the float reference."""

import csv
import json
import sys
import time
import warnings

import numpy as np

from .errors import FecaffeError

__all__ = ["run_sim"]


class SimMismatch(FecaffeError):
    """The simulated hardware's memory differs from the model's."""


def _float_errors(workload, memory):
    """``{blob: (max abs error vs float, lsb)}`` for the blobs the board computed."""
    reference = workload.reference()
    raw = memory.view(np.uint8).tobytes()
    read = lambda addr, n: raw[addr:addr + n]       # noqa: E731
    errors = {}
    for name in workload.blobs():
        got = workload.float_blob(name, workload.read_blob(name, read))
        want = reference.blobs[name].data
        lsb = 2.0 ** -workload.plan.formats[name]["data"].frac
        errors[name] = (float(np.abs(got - want).max()), lsb)
    return errors


def run_sim(args):
    from .sim.run import simulate_workload
    from .sim.workload import build_workload

    if args.batch < 1:
        raise FecaffeError(f"--batch must be at least 1, not {args.batch}")
    if args.memory_bandwidth is not None and not 0 < args.memory_bandwidth <= 4:
        raise FecaffeError(f"--memory-bandwidth must be in (0, 4] bytes per cycle (the "
                           f"32-bit port's peak), not {args.memory_bandwidth:g}")
    if args.memory_latency is not None and not 1 <= args.memory_latency <= 4096:
        raise FecaffeError(f"--memory-latency must be 1 to 4096 cycles, not "
                           f"{args.memory_latency}")
    start = time.monotonic()
    workload = build_workload(args.net, board=args.board, phase=args.phase, batch=args.batch,
                              seed=args.seed, weights=args.weights)
    plan = workload.plan
    if args.memory_bandwidth is not None and plan.memory["kind"] == "on-chip":
        raise FecaffeError(f"--memory-bandwidth: {plan.board['name']} keeps tensor memory "
                           f"on chip (one word per cycle); there is no DRAM to set")
    if not args.json:
        print(f"{args.net}: {plan.board['name']}, {plan.rows}x{plan.cols} array, "
              f"{len(workload.commands):,} commands, batch {args.batch}; "
              f"simulating ({args.backend})...", file=sys.stderr, flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = simulate_workload(workload, backend=args.backend, vcd=args.vcd,
                                   memory_latency=args.memory_latency,
                                   memory_bandwidth=args.memory_bandwidth)
    for w in caught:
        print(f"fecaffe-hw sim: notice: {w.message}", file=sys.stderr)
    errors = _float_errors(workload, result.memory)
    max_err = max((e for e, _ in errors.values()), default=0.0)
    clk = plan.board["clock_mhz"]
    report = {
        "backend": result.backend, "phase": args.phase, "batch": args.batch,
        "board": plan.board["name"], "array": {"rows": plan.rows, "cols": plan.cols},
        "clock_mhz": clk, "cycles": result.cycles,
        "time_at_clock_ms": result.cycles / (clk * 1e3),
        "layers": [{k: layer[k] for k in ("name", "op", "stages", "cycles", "macs",
                                           "utilization", "stalls")}
                   for layer in result.layers],
        "commands": result.commands,
        "bit_exact": result.bit_exact, "mismatched_words": result.mismatched_words,
        "max_abs_err_vs_float": max_err,
        "blob_errors": {name: {"max_abs_err": e, "lsb": lsb} for name, (e, lsb) in errors.items()},
        "host": {name: _host_summary(r) for name, r in result.host.results.items()},
        "wall_s": round(time.monotonic() - start, 3),
        "sim_wall_s": round(result.wall_s, 3),
        "build_s": round(result.build_s, 3),
        "sim_cycles_per_s": round(result.sim_cycles_per_s, 1),
    }
    if args.commands:
        _write_commands(args.commands, result.commands)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
        if args.commands:
            print(f"every command's figures: {args.commands}")
    if not result.bit_exact:
        n = result.mismatched_words
        raise SimMismatch(f"the simulated SoC differs from the fixed-point model in "
                          f"{n:,} word{'s' if n != 1 else ''}; {result.first_mismatch}")
    return 0


_COMMAND_COLUMNS = ("index", "layer", "stage", "opcode", "issue", "wait", "cycles", "macs",
                    "utilization", "array_stall", "mem_stall", "bad")


def _host_summary(result):
    """A host step's scalars (loss, accuracy); a Softmax's probabilities as
    each image's predicted class (``top1``)."""
    summary = {k: v for k, v in result.items() if k != "prob"}
    if "prob" in result:
        prob = np.asarray(result["prob"])
        summary["top1"] = [int(i) for i in prob.reshape(len(prob), -1).argmax(axis=1)]
    return summary


def _write_commands(path, commands):
    try:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(_COMMAND_COLUMNS)
            for c in commands:
                row = {**c, **c["stalls"], "utilization": f"{c['utilization']:.6f}"}
                writer.writerow([row[k] for k in _COMMAND_COLUMNS])
    except OSError as error:
        raise FecaffeError(f"cannot write {path}: {error.strerror}") from None


def _by_opcode(commands, peak):
    """Commands summed per opcode: count, busy cycles (issue to finish),
    MACs, utilisation over those cycles, stalls."""
    out = {}
    for c in commands:
        s = out.setdefault(c["opcode"], {"count": 0, "cycles": 0, "macs": 0,
                                         "array_stall": 0, "mem_stall": 0})
        s["count"] += 1
        s["cycles"] += c["cycles"]
        s["macs"] += c["macs"]
        for k in ("array_stall", "mem_stall"):
            s[k] += c["stalls"][k]
    for s in out.values():
        s["utilization"] = s["macs"] / (peak * s["cycles"]) if s["cycles"] else 0.0
    return out


def _print_report(r):
    w = max([len(layer["name"]) + 2 for layer in r["layers"]] + [16])
    stages = [",".join(s.replace("backward_", "bwd_") for s in layer["stages"])
              for layer in r["layers"]]
    ws = max([len(s) + 1 for s in stages] + [10])
    print(f"{'layer':<{w}}{'op':<16}{'stages':<{ws}}{'cycles':>12}{'MACs':>13}{'util':>7}"
          f"{'mem stall':>11}{'array stall':>12}")
    for layer, stage in zip(r["layers"], stages):
        print(f"{layer['name']:<{w}}{layer['op']:<16}{stage:<{ws}}{layer['cycles']:>12,}"
              f"{layer['macs']:>13,}{layer['utilization']:>7.1%}"
              f"{layer['stalls']['mem_stall']:>11,}{layer['stalls']['array_stall']:>12,}")
    macs = sum(layer["macs"] for layer in r["layers"])
    peak = r["array"]["rows"] * r["array"]["cols"]
    util = macs / (peak * r["cycles"]) if r["cycles"] else 0.0
    print(f"{'total':<{w + 16 + ws}}{r['cycles']:>12,}{macs:>13,}{util:>7.1%}")
    print()
    print(f"{'command':<16}{'count':>8}{'busy cycles':>14}{'MACs':>13}{'util':>7}"
          f"{'mem stall':>11}{'array stall':>12}   (busy: issue to finish; units overlap)")
    for opcode, s in sorted(_by_opcode(r["commands"], peak).items(),
                            key=lambda item: -item[1]["cycles"]):
        print(f"{opcode:<16}{s['count']:>8,}{s['cycles']:>14,}{s['macs']:>13,}"
              f"{s['utilization']:>7.1%}{s['mem_stall']:>11,}{s['array_stall']:>12,}")
    print()
    print(f"{r['cycles']:,} cycles = {r['time_at_clock_ms']:.3f} ms at {r['clock_mhz']:g} MHz "
          f"on {r['board']}; simulated on {r['backend']} at {r['sim_cycles_per_s']:,.0f} "
          f"cycles/s")
    worst = max(r["blob_errors"].items(), default=None,
                key=lambda item: item[1]["max_abs_err"] / item[1]["lsb"])
    in_lsb = (f" (worst blob {worst[0]}: {worst[1]['max_abs_err'] / worst[1]['lsb']:.1f} "
              f"LSB of its format)" if worst else "")
    print(f"bit-exact with the fixed-point model: {'yes' if r['bit_exact'] else 'NO'} "
          f"({r['mismatched_words']} words differ); largest error vs float "
          f"{r['max_abs_err_vs_float']:.3g}{in_lsb}")
    for name, values in r["host"].items():
        print(f"host {name}: " + ", ".join(
            f"{k} {' '.join(map(str, v))}" if isinstance(v, list) else f"{k} {v:.4g}"
            for k, v in values.items()))
