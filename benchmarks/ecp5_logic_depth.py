"""The deepest logic of a synthesised ECP5 netlist, in seconds, by nominal delays.

nextpnr names a design's critical path only after routing, which for the
largest ULX3S plan takes over an hour; its post-placement estimate gives one
figure and a slack histogram. This script reads the netlist yosys hands to
nextpnr (``DIR/build/top.json`` of ``fecaffe-hw generate ... --build -o DIR``)
and ranks register-to-register paths by a nominal delay: clock-to-out (0.5 ns
for a flip-flop, 5.6 ns for a DP16KD block RAM), then per cell a LUT4 0.25 ns,
a PFUMX or L6MUX21 0.2 ns, a CCU2C 0.4 ns through its inputs and 0.05 ns along
the carry chain, a combinational MULT18X18D 4.2 ns, a TRELLIS_DPR16X4 read
0.6 ns, plus ``--route`` ns (default 0.9) per net between slices and 1.5 ns
into and out of a multiplier. It knows nothing of placement, so distance
across the die (several ns on a spread-out design) comes on top: use it to
find deep logic, and the routed report for the real figure. For each of the
``--top`` worst endpoints (one per register) it prints the nominal delay, the
endpoint cell and the chain of Amaranth signals the path's cells are named
after.

    python benchmarks/ecp5_logic_depth.py DIR/build/top.json [--top 15] [--route 0.9]
"""

import argparse
import json
import sys

_SOURCES = {"TRELLIS_FF": 0.5, "DP16KD": 5.6}
_ENDPOINTS = ("TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_DPR16X4")
_CLOCKS = ("CLK", "CLKA", "CLKB", "WCK")


def _bits(connections, directions, direction, ports=None):
    return [(port, bit) for port, bits in connections.items()
            if directions.get(port) == direction and (ports is None or port in ports)
            for bit in bits if isinstance(bit, int)]


def driver_graph(module, route):
    """``(drivers, sources)``: for each net bit, the cell driving it with its
    input arcs ``[(input bit, delay)]``, or its launch time if a register's."""
    drivers, sources = {}, {}
    for name, cell in module["cells"].items():
        kind, conn = cell["type"], cell["connections"]
        dirs = cell.get("port_directions", {})
        inputs = [bit for _, bit in _bits(conn, dirs, "input")]
        for port, bit in _bits(conn, dirs, "output"):
            if kind in _SOURCES:
                sources[bit] = (_SOURCES[kind], name)
            elif kind == "LUT4":
                drivers[bit] = (name, [(i, 0.25 + route) for i in inputs])
            elif kind in ("PFUMX", "L6MUX21"):
                drivers[bit] = (name, [(i, 0.2) for i in inputs])
            elif kind == "CCU2C":
                carry = {b for _, b in _bits(conn, dirs, "input", ("CIN",))}
                along = 0.05 if port == "COUT" else 0.15
                drivers[bit] = (name, [(i, along if i in carry else 0.4) for i in inputs])
            elif kind == "MULT18X18D":
                drivers[bit] = (name, [(i, 4.2 + 2 * 1.5) for i in inputs])
            elif kind == "TRELLIS_DPR16X4":
                read = [b for _, b in _bits(conn, dirs, "input", ("RAD0", "RAD1", "RAD2", "RAD3"))]
                drivers[bit] = (name, [(i, 0.6 + route) for i in read])
            else:                       # I/O, PLL, constants: launch at 0
                sources[bit] = (0.0, name)
    return drivers, sources


def arrivals(drivers, sources, route):
    """``{bit: (arrival ns, the input bit it came through)}``, iteratively (no
    recursion: chains are thousands of cells deep through carry logic)."""
    done = {}
    for start in list(drivers) + list(sources):
        stack = [start]
        while stack:
            bit = stack[-1]
            if bit in done:
                stack.pop()
                continue
            if bit in sources:
                done[bit] = (sources[bit][0] + route, None)
                stack.pop()
                continue
            if bit not in drivers:
                done[bit] = (0.0, None)
                stack.pop()
                continue
            pending = [i for i, _ in drivers[bit][1] if i not in done and i not in stack]
            if pending:
                stack.extend(pending)
                continue
            best = (0.0, None)
            for i, delay in drivers[bit][1]:
                t = done.get(i, (0.0, None))[0] + delay
                if t > best[0]:
                    best = (t, i)
            done[bit] = best
            stack.pop()
    return done


def _signal(cell):
    for marker in ("_LUT4", "_CCU2C", "_PFUMX", "_L6MUX21", "_TRELLIS", "$DPRAM", "_MULT18"):
        cell = cell.split(marker)[0]
    return cell


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist", metavar="TOP_JSON")
    parser.add_argument("--top", type=int, default=15, help="endpoints to show")
    parser.add_argument("--route", type=float, default=0.9, help="ns per net between slices")
    parser.add_argument("--module", default="top")
    args = parser.parse_args(argv)
    try:
        with open(args.netlist) as f:
            module = json.load(f)["modules"][args.module]
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {args.netlist}: not a yosys JSON netlist with module "
              f"{args.module!r} ({error})", file=sys.stderr)
        return 1
    drivers, sources = driver_graph(module, args.route)
    done = arrivals(drivers, sources, args.route)
    ends = []
    for name, cell in module["cells"].items():
        if cell["type"] not in _ENDPOINTS:
            continue
        dirs = cell.get("port_directions", {})
        for port, bit in _bits(cell["connections"], dirs, "input"):
            if port not in _CLOCKS and bit in done:
                ends.append((done[bit][0], name, port, bit))
    ends.sort(key=lambda e: -e[0])
    print(f"{args.netlist}: {len(module['cells'])} cells; nominal delays, no placement")
    shown = set()
    for delay, name, port, bit in ends:
        register = _signal(name).split("[")[0]
        if register in shown:
            continue
        shown.add(register)
        chain = []
        while bit is not None:
            cell = drivers[bit][0] if bit in drivers else sources.get(bit, (0, "?"))[1]
            signal = _signal(cell)
            if not chain or chain[-1] != signal:
                chain.append(signal)
            bit = done.get(bit, (0, None))[1]
        print(f"{delay:6.1f} ns  {_signal(name)}.{port}  ({len(chain)} signals)")
        print("          " + " <- ".join(chain[:12]) + (" <- ..." if len(chain) > 12 else ""))
        if len(shown) >= args.top:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
