"""Simulation speed of the generated SoC: Amaranth's pysim against CXXRTL.

Runs one workload (a net's inference schedule through the SoC's host link,
as ``fecaffe-hw sim`` does) on both backends in one run and prints the
simulated cycles, the wall time of the simulation (the CXXRTL build, cached
by hash, is reported apart), cycles per second and the CXXRTL/pysim ratio.
Both runs must be bit-exact and take the same number of cycles.

    python benchmarks/sim_speed.py [--net tests/compiler/nets/odd_conv.prototxt]
                                   [--batch 2] [--json]
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default=str(ROOT / "tests/compiler/nets/odd_conv.prototxt"))
    parser.add_argument("--board", default="arty")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from fecaffe_hw.sim import cxx_compiler
    from fecaffe_hw.sim.run import simulate_workload
    from fecaffe_hw.sim.workload import build_workload

    if cxx_compiler() is None:
        sys.exit("sim_speed: no C++ compiler found; CXXRTL cannot be measured")
    figures = {}
    for backend in ("cxxrtl", "pysim"):
        workload = build_workload(args.net, board=args.board, phase="test", batch=args.batch)
        result = simulate_workload(workload, backend=backend)
        if not result.bit_exact:
            sys.exit(f"sim_speed: {backend} is not bit-exact: {result.first_mismatch}")
        figures[backend] = {"cycles": result.total_cycles, "wall_s": result.wall_s,
                            "build_s": result.build_s,
                            "cycles_per_s": result.total_cycles / result.wall_s}
    if figures["cxxrtl"]["cycles"] != figures["pysim"]["cycles"]:
        sys.exit(f"sim_speed: the backends disagree on cycles: {figures}")
    ratio = figures["cxxrtl"]["cycles_per_s"] / figures["pysim"]["cycles_per_s"]
    plan = workload.plan
    if args.json:
        print(json.dumps({"net": args.net, "batch": args.batch, "array": [plan.rows, plan.cols],
                          "backends": figures, "ratio": ratio}))
        return
    print(f"{pathlib.Path(args.net).name}, batch {args.batch}, {plan.board['name']} plan "
          f"({plan.rows}x{plan.cols} array): {figures['pysim']['cycles']:,} cycles")
    for backend, f in figures.items():
        print(f"  {backend:7} {f['wall_s']:9.2f} s  {f['cycles_per_s']:12,.0f} cycles/s"
              + (f"  (build {f['build_s']:.1f} s)" if backend == "cxxrtl" else ""))
    print(f"  CXXRTL / pysim: {ratio:,.0f}x")


if __name__ == "__main__":
    main()
