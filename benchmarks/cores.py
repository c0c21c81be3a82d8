"""Resource use and simulation speed of each RTL core at representative parameters.

Prints one table (or, with ``--json``, one object ``{"cores": [...]}``): for
every core, yosys ``synth_xilinx`` counts for an Artix-7 (xc7a35t family:
LUT, FF, DSP48E1, BRAM36), the measured utilisation where it applies (the
systolic array: MACs / (rows * cols * cycles) over a long back-to-back GEMM,
fill and drain included), and Amaranth pysim speed in simulated cycles per
wall second. Progress goes to stderr; synthesis of the 16x16 array takes
minutes.

Add a core by appending an :class:`Entry` to :func:`entries`.

    python benchmarks/cores.py [--json] [--only NAME ...] [--no-synth]
"""

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable, Optional

import numpy as np
from amaranth.hdl import Module, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.sim import Simulator

from fecaffe_hw.fixedpoint import gemm
from fecaffe_hw.synthesis import synthesize

SIM_CYCLES = 2000


@dataclasses.dataclass
class Entry:
    """One benchmarked core: ``build()`` makes a fresh instance; ``measure(dut)``
    simulates it and returns ``(utilization or None, simulated cycles, wall seconds)``."""
    core: str
    parameters: dict
    build: Callable[[], wiring.Component]
    measure: Optional[Callable] = None


def _log(message):
    print(message, file=sys.stderr, flush=True)


def _stream_ports(dut):
    inputs, outputs = [], []
    for name, member in dut.signature.members.items():
        if member.is_port or not {"valid", "ready", "payload"} <= set(member.signature.members):
            continue
        (inputs if member.flow == wiring.In else outputs).append(getattr(dut, name))
    return inputs, outputs


def exercise_streams(dut, cycles=SIM_CYCLES, seed=0):
    """Random payloads on every input stream, every output always ready, for ``cycles``.

    Only a speed figure: the values are not checked, and non-stream controls
    stay at their reset values.
    """
    rng = np.random.default_rng(seed)
    inputs, outputs = _stream_ports(dut)

    async def drive(ctx):
        for stream in outputs:
            ctx.set(stream.ready, 1)
        for stream in inputs:
            ctx.set(stream.valid, 1)
        for _ in range(cycles):
            for stream in inputs:
                payload = Value.cast(stream.payload)
                ctx.set(payload, int(rng.integers(0, 2 ** 62)) & ((1 << len(payload)) - 1))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    start = time.perf_counter()
    sim.run()
    return None, cycles, time.perf_counter() - start


def systolic_gemm(dut, *, k=256, tiles=4, seed=1):
    """Back-to-back ``tiles`` GEMM tiles of depth ``k``, no stalls, every word checked.

    Cycles count from the first operand offered to the last result row taken.
    """
    rng = np.random.default_rng(seed)
    lo, hi = -2 ** (dut.data_width - 1), 2 ** (dut.data_width - 1)
    problems = [(rng.integers(lo, hi, (dut.rows, k)), rng.integers(lo, hi, (k, dut.cols)))
                for _ in range(tiles)]
    expected = [gemm(a, b, dut.acc_width) for a, b in problems]
    span = {}

    async def feed(ctx):
        span["start"] = ctx.get(cycle_count)
        ctx.set(dut.operands.valid, 1)
        for a, b in problems:
            for step in range(k):
                ctx.set(dut.operands.payload, {
                    "a": [int(v) for v in a[:, step]], "b": [int(v) for v in b[step]],
                    "last": int(step == k - 1)})
                await ctx.tick().until(dut.operands.ready)
        ctx.set(dut.operands.valid, 0)

    async def check(ctx):
        ctx.set(dut.results.ready, 1)
        for want in expected:
            for row in want:
                got, = await ctx.tick().sample(dut.results.payload).until(dut.results.valid)
                if [int(v) for v in got] != [int(v) for v in row]:
                    raise AssertionError("systolic array result differs from fixedpoint.gemm")
        span["end"] = ctx.get(cycle_count)

    # A free-running cycle counter lives in the simulation, not the design.
    cycle_count = Signal(32)
    top = Module()
    top.submodules.dut = dut
    top.d.sync += cycle_count.eq(cycle_count + 1)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(check)
    start = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - start
    cycles = span["end"] - span["start"]
    utilization = tiles * k / cycles
    return utilization, cycles, wall


def _systolic(rows, cols, data_width=16, acc_width=48):
    from fecaffe_hw.cores.systolic import SystolicArray
    params = {"rows": rows, "cols": cols, "data_width": data_width, "acc_width": acc_width}
    return Entry("SystolicArray", params, lambda: SystolicArray(**params), systolic_gemm)


def entries():
    found = [_systolic(8, 8), _systolic(16, 16)]
    # Other cores are written alongside; include each that imports.
    try:
        from fecaffe_hw.cores.line_buffer import LineBuffer
        found.append(Entry(
            "LineBuffer", {"width": 28, "height": 28, "channels": 1, "kernel": 5,
                           "data_shape": "signed(16)"},
            lambda: LineBuffer(width=28, height=28, channels=1, kernel=5,
                               data_shape=signed(16))))
    except ImportError as error:
        _log(f"skipping LineBuffer: {error}")
    try:
        from fecaffe_hw.cores.pooling import Pooling, PoolKind
        found.append(Entry(
            "Pooling", {"kind": "MAX", "width": 24, "height": 24, "channels": 20, "kernel": 2,
                        "stride": 2, "data_shape": "signed(16)"},
            lambda: Pooling(kind=PoolKind.MAX, width=24, height=24, channels=20, kernel=2,
                            stride=2, data_shape=signed(16))))
    except ImportError as error:
        _log(f"skipping Pooling: {error}")
    try:
        from fecaffe_hw.cores.eltwise import Eltwise
        from fecaffe_hw.fixedpoint import Format
        found.append(Entry(
            "Eltwise", {"in_fmt": "Format(32, 16)", "out_fmt": "Format(16, 8)", "lanes": 8},
            lambda: Eltwise(in_fmt=Format(32, 16), out_fmt=Format(16, 8), lanes=8)))
    except ImportError as error:
        _log(f"skipping Eltwise: {error}")
    try:
        from fecaffe_hw.cores.grad_accumulator import GradientAccumulator
        from fecaffe_hw.fixedpoint import Format
        from fecaffe_hw.fixedpoint.sgd import SgdFormats
        formats = SgdFormats(grad=Format(20, 16), acc_bits=32, weight=Format(16, 14),
                             history=Format(20, 22), diff=Format(22, 20))
        found.append(Entry(
            "GradientAccumulator",
            {"words": 1024, "lanes": 4, "grad": "Format(20, 16)", "acc_bits": 32,
             "weight": "Format(16, 14)"},
            lambda: GradientAccumulator(words=1024, lanes=4, formats=formats)))
    except ImportError as error:
        _log(f"skipping GradientAccumulator: {error}")
    return found


def run_entry(entry, *, synth=True):
    row = {"core": entry.core, **entry.parameters}
    _log(f"{entry.core} {entry.parameters}: simulating")
    measure = entry.measure or exercise_streams
    utilization, cycles, wall = measure(entry.build())
    row["utilization"] = None if utilization is None else round(utilization, 4)
    row["sim_cycles_per_s"] = round(cycles / wall, 1)
    if synth:
        _log(f"{entry.core} {entry.parameters}: synth_xilinx -family xc7")
        start = time.perf_counter()
        used = synthesize(entry.build(), family="xc7")
        _log(f"  {used.as_dict()} in {time.perf_counter() - start:.0f} s")
        row.update(lut=used.lut, ff=used.ff, dsp=used.dsp, bram36=used.bram36)
    else:
        row.update(lut=None, ff=None, dsp=None, bram36=None)
    return row, entry.parameters


def _table(rows):
    header = ["core", "parameters", "lut", "ff", "dsp", "bram36", "utilization",
              "sim_cycles_per_s"]
    lines = [header]
    for row, params in rows:
        lines.append([
            row["core"], " ".join(f"{k}={v}" for k, v in params.items()),
            *("-" if row[key] is None else str(row[key]) for key in ("lut", "ff", "dsp",
                                                                     "bram36")),
            "-" if row["utilization"] is None else f"{100 * row['utilization']:.1f}%",
            f"{row['sim_cycles_per_s']:.0f}",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", nargs="+", metavar="CORE", help="benchmark these cores")
    parser.add_argument("--no-synth", action="store_true", help="skip yosys synthesis")
    args = parser.parse_args(argv)

    rows = []
    for entry in entries():
        if args.only and entry.core not in args.only:
            continue
        try:
            rows.append(run_entry(entry, synth=not args.no_synth))
        except Exception as error:  # one broken core must not hide the others' figures
            _log(f"{entry.core} {entry.parameters}: failed: {type(error).__name__}: {error}")
    if args.json:
        print(json.dumps({"cores": [row for row, _ in rows]}, indent=2))
    else:
        print(_table(rows))


if __name__ == "__main__":
    main()
