"""Every failing endpoint of a nextpnr build, from its SDF file.

nextpnr's report names one critical path per clock; a design far from its
target fails thousands of endpoints, and which units they belong to is what
a user needs to know. nextpnr writes an SDF file (``--sdf``) with every
cell's delays (``IOPATH``), setup times (``SETUPHOLD``) and every routed
connection's delay (``INTERCONNECT``; after ``--no-route``, its estimates).
:func:`failing_groups` runs a longest-path pass over that graph from the
clocked outputs (an ``IOPATH`` from a ``CLK`` pin) to the pins with a setup
time, and groups the endpoints over a period by the signals their paths
start and end at (:func:`~fecaffe_hw.build.ecp5.cell_signal`, bit indices
dropped).

One clock is assumed (the SoC's); clock and reset arrival skew is not
modelled, as nextpnr's own report does not for the global clock.

Run ``python -m fecaffe_hw.build.timing top.sdf --period 13.333`` on a
build directory's SDF.
"""

import argparse
import collections
import dataclasses
import pathlib
import re
import sys

from ..errors import FecaffeError

__all__ = ["TimingGraph", "PathGroup", "parse_sdf", "failing_groups", "main"]


class SdfError(FecaffeError):
    """An SDF file this reader cannot use; names the file."""


@dataclasses.dataclass
class TimingGraph:
    """``edges``: pin -> ``[(pin, ps)]``; ``launch``: clocked output pin ->
    clock-to-out ps; ``setup``: pin -> setup ps. Pins are ``"cell/port"``."""
    edges: dict
    launch: dict
    setup: dict


@dataclasses.dataclass
class PathGroup:
    """The failing endpoints whose worst paths run from ``source`` to
    ``endpoint`` (signal names): ``count`` endpoints, the worst ``delay_ns``
    (setup included), its ``routing_ns`` and the cells it passes."""
    source: str
    endpoint: str
    count: int
    delay_ns: float
    routing_ns: float
    cells: list


_CELL_HEAD = re.compile(r'\s*\(CELLTYPE "([^"]+)"\)\s+\(INSTANCE ([^)\n]*)\)(.*)', re.S)
_IOPATH = re.compile(r"\(IOPATH (\((?:posedge|negedge) \S+\)|\S+) (\S+) (\([^)]*\))")
_INTERCONNECT = re.compile(r"\(INTERCONNECT (\S+) (\S+) (\([^)]*\))")
_SETUPHOLD = re.compile(
    r"\(SETUPHOLD \((?:posedge|negedge) (\S+)\) \((?:posedge|negedge) \S+\) (\([^)]*\))")


def _unescape(name):
    return re.sub(r"\\(.)", r"\1", name)


def _worst_ps(triple):
    # (min:typ:max); an empty field counts as zero.
    return max(float(v) if v else 0.0 for v in triple.strip("()").split(":"))


def parse_sdf(text, *, path="<sdf>"):
    """The :class:`TimingGraph` of an SDF file's text (nextpnr's dialect)."""
    if "(DELAYFILE" not in text:
        raise SdfError(f"{path}: not an SDF file (no DELAYFILE)")
    if text.count("(") != text.count(")"):
        # Read while nextpnr still writes it, or cut short: a partial
        # ranking would look like a real one.
        raise SdfError(f"{path}: truncated (unbalanced parentheses)")
    edges, launch, setup = collections.defaultdict(list), {}, {}
    for part in text.split("(CELL\n")[1:]:
        head = _CELL_HEAD.match(part)
        if head is None:
            raise SdfError(f"{path}: a CELL without CELLTYPE and INSTANCE")
        kind, instance, body = head.groups()
        instance = _unescape(instance.strip())
        if not instance:
            # The top cell holds the interconnect.
            for source, sink, delay in _INTERCONNECT.findall(body):
                edges[_unescape(source)].append((_unescape(sink), _worst_ps(delay)))
            continue
        for pin_in, pin_out, delay in _IOPATH.findall(body):
            pin_in = re.sub(r"^\((?:posedge|negedge) (\S+)\)$", r"\1", pin_in)
            if "CLK" in pin_in:
                pin = f"{instance}/{pin_out}"
                launch[pin] = max(launch.get(pin, 0.0), _worst_ps(delay))
            else:
                edges[f"{instance}/{pin_in}"].append((f"{instance}/{pin_out}", _worst_ps(delay)))
        for pin, delay in _SETUPHOLD.findall(body):
            pin = f"{instance}/{pin}"
            setup[pin] = max(setup.get(pin, 0.0), _worst_ps(delay))
    return TimingGraph(dict(edges), launch, setup)


def _arrivals(graph):
    indegree = collections.Counter(v for sinks in graph.edges.values() for v, _ in sinks)
    arrival, previous = dict(graph.launch), {}
    ready = [pin for pin in set(graph.edges) | set(graph.launch) if indegree[pin] == 0]
    while ready:
        pin = ready.pop()
        for sink, delay in graph.edges.get(pin, ()):
            if pin in arrival and arrival[pin] + delay > arrival.get(sink, -1.0):
                arrival[sink] = arrival[pin] + delay
                previous[sink] = pin
            indegree[sink] -= 1
            if indegree[sink] == 0:
                ready.append(sink)
    return arrival, previous


def _cell(pin):
    return pin.rsplit("/", 1)[0]


def _signal(cell):
    # Imported here: ``fecaffe_hw.build`` imports ecp5, so a module-level
    # import would load this module before ``python -m`` runs it.
    from .ecp5 import cell_signal
    return re.sub(r"\[\d+\]", "", cell_signal(cell))


def failing_groups(graph, period_ns):
    """Endpoints whose worst arrival plus setup exceeds ``period_ns``, grouped
    (:class:`PathGroup`, worst first); also returns ``(failing, endpoints)``
    counts."""
    arrival, previous = _arrivals(graph)
    ends = sorted(((arrival[pin] + setup, pin) for pin, setup in graph.setup.items()
                   if pin in arrival), reverse=True)
    failing = [(ps, pin) for ps, pin in ends if ps > period_ns * 1000]
    groups = {}
    for ps, pin in failing:
        path = [pin]
        while path[-1] in previous:
            path.append(previous[path[-1]])
        path.reverse()
        key = (_signal(_cell(path[0])), _signal(_cell(pin)))
        if key in groups:
            groups[key].count += 1
            continue
        routing = sum(delay for a, b in zip(path, path[1:]) if _cell(a) != _cell(b)
                      for sink, delay in graph.edges.get(a, ()) if sink == b)
        cells = list(dict.fromkeys(_cell(p) for p in path))
        groups[key] = PathGroup(key[0], key[1], 1, round(ps / 1000, 3),
                                round(routing / 1000, 3), cells)
    return list(groups.values()), (len(failing), len(ends))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fecaffe_hw.build.timing",
        description="Rank the failing endpoints of a nextpnr build from its SDF file.")
    parser.add_argument("sdf", type=pathlib.Path)
    parser.add_argument("--period", type=float, required=True, help="clock period, ns")
    parser.add_argument("--top", type=int, default=30, help="groups to print (default 30)")
    args = parser.parse_args(argv)
    try:
        try:
            text = args.sdf.read_text()
        except OSError as error:
            raise SdfError(f"{args.sdf}: cannot read ({error.strerror})") from None
        groups, (failing, total) = failing_groups(parse_sdf(text, path=args.sdf), args.period)
    except FecaffeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{failing} of {total} endpoints over {args.period:g} ns, in {len(groups)} groups")
    for group in groups[:args.top]:
        print(f"{group.delay_ns:7.2f} ns  {group.count:5d} endpoints  {group.source} -> "
              f"{group.endpoint}  (routing {group.routing_ns:.2f} ns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
