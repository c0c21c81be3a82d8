"""Run a :class:`~fecaffe_hw.sim.workload.Workload` on the simulated SoC and
check it against the NumPy machine.

The host side is the real runtime: :class:`~fecaffe_hw.runtime.link.HostLink`
speaks the protocol's frames over the simulated host link
(:class:`SimTransport`), pushes the schedule with RUN frames, waits at every
HOST command (STATUS.host_wait), does the host's step with
:class:`~fecaffe_hw.runtime.host_ops.HostOps` through READ_MEM/WRITE_MEM
frames and resumes the sequencer (CONTROL.host_resume). Parameters are
preloaded into the tensor memory model, as ``run`` writes them once before
training. Afterwards the whole tensor memory is compared word for word with
:class:`~fecaffe_hw.sim.machine.Machine` after the same schedule.
"""

import time
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Shape

from ..runtime import regmap
from ..runtime.host_ops import HostOps
from ..cores.sequencer import TRACE_UNIT_OF, TRACE_UNITS
from ..runtime.isa import OPCODE_UNIT, Opcode, Stage
from ..runtime.link import HostLink
from .backend import SimTimeout, open_backend
from .machine import Machine, sgd_registers
from .top import TRACE_LAYOUT, SimTop

__all__ = ["SimTransport", "SimResult", "simulate_workload", "command_report"]

_STATUS = regmap.register("STATUS")


class SimTransport:
    """A host-link byte transport over a simulation backend's host streams.

    Time is simulated time (``cycles / clk_hz``): :meth:`clock` and
    :meth:`sleep` are what :class:`HostLink` uses for its timeouts and polls.
    Trace events seen meanwhile collect in ``events``.
    """

    name = "simulated SoC"

    def __init__(self, backend, clk_hz):
        self.backend = backend
        self.clk_hz = clk_hz
        self.pending = b""
        self.events = []

    def write(self, data):
        self.pending += bytes(data)

    def read(self, n, timeout):
        budget = max(1, int(timeout * self.clk_hz))
        try:
            tx, events = self.backend.exchange(self.pending, n, budget)
            self.pending = b""
        except SimTimeout as error:
            tx, events = error.tx, error.events
            self.pending = self.pending[error.rx_taken:]
        self.events += events
        return tx

    def clock(self):
        return self.backend.cycles / self.clk_hz

    def sleep(self, seconds):
        self.read(0, seconds) if self.pending else self._idle(seconds)

    def _idle(self, seconds):
        try:
            _, events = self.backend.exchange(b"", 1, max(1, int(seconds * self.clk_hz)))
        except SimTimeout as error:
            events = error.events
        self.events += events

    def close(self):
        pass


@dataclass
class SimResult:
    backend: str
    cycles: int                      # from the first command word to the end of the schedule
    wall_s: float                    # simulating, without the build
    layers: list = field(default_factory=list)
    commands: list = field(default_factory=list)
    mismatched_words: int = 0
    first_mismatch: str = ""
    memory: np.ndarray = None
    expected: np.ndarray = None
    host: object = None

    @property
    def bit_exact(self):
        return self.mismatched_words == 0

    @property
    def sim_cycles_per_s(self):
        return self.total_cycles / self.wall_s if self.wall_s else 0.0

    total_cycles: int = 0            # everything simulated, link traffic included
    build_s: float = 0.0             # converting and compiling (CXXRTL: cached by hash)


def _aligned(read, write):
    """read/write of any byte span through word-aligned link accesses."""
    def aligned_read(addr, n):
        lo, hi = addr & ~3, (addr + n + 3) & ~3
        return read(lo, hi - lo)[addr - lo:addr - lo + n]

    def aligned_write(addr, data):
        data = bytes(data)
        lo, hi = addr & ~3, (addr + len(data) + 3) & ~3
        if lo != addr or hi != addr + len(data):
            buf = bytearray(read(lo, hi - lo))
            buf[addr - lo:addr - lo + len(data)] = data
            data = bytes(buf)
        write(lo, data)
    return aligned_read, aligned_write


def _segments(commands):
    """Command lists each ending with a HOST command or the END."""
    segment = []
    for c in commands:
        segment.append(c)
        if c.opcode in (Opcode.HOST, Opcode.END):
            yield segment
            segment = []
    if segment:
        yield segment


def _wait(link, transport, *, field_name, value, what, limit_s):
    deadline = transport.clock() + limit_s
    while _STATUS.unpack(link.read_csr("STATUS"))[field_name] != value:
        if transport.clock() > deadline:
            raise SimTimeout(f"the SoC did not reach {what} within {limit_s} s of simulated "
                             f"time (STATUS 0x{link.read_csr('STATUS'):08X})",
                             rx_taken=0, tx=b"", events=[])
        transport.sleep(200 / transport.clk_hz)


#: The solver settings a simulated training iteration uses (Caffe's LeNet
#: solver); the host writes them to the SGD registers, the model uses the same.
SOLVER = {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "iter_size": 1}
LFSR_SEED = 1


def expected_memory(workload):
    """The machine's tensor memory after the workload, and its host steps' results."""
    machine = Machine(workload.plan)
    machine.set_solver(**SOLVER, seed=LFSR_SEED)
    for addr, data in workload.parameter_writes():
        machine.write(addr, data)
    host = HostOps(workload.plan, workload.inputs)
    machine.run(workload.commands, host)
    return machine.words(), host


def simulate_workload(workload, *, backend="auto", vcd=None, memory_latency=None,
                      memory_bandwidth=None,
                      cache_dir=None, limit_s=60.0):
    """Run ``workload`` on the simulated SoC; returns a :class:`SimResult`."""
    plan = workload.plan
    expected, _ = expected_memory(workload)
    top = SimTop(plan, memory_latency=memory_latency, memory_bandwidth=memory_bandwidth)
    clk_hz = plan.board["clock_mhz"] * 1e6
    start_wall = time.monotonic()
    with open_backend(backend, top, memories={"tensor": top.memory}, vcd=vcd,
                      cache_dir=cache_dir) as sim:
        build_s = time.monotonic() - start_wall
        image = np.zeros(top.memory_words, dtype=np.uint32)
        raw = image.view(np.uint8)
        for addr, data in workload.parameter_writes():
            raw[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)
        sim.write_memory("tensor", 0, image)
        transport = SimTransport(sim, clk_hz)
        link = HostLink(transport, timeout=0.02, retries=0, busy_timeout=limit_s,
                        poll_interval=2e-6, clock=transport.clock, sleep=transport.sleep)
        link.check_identity(plan.hash32)
        if workload.phase == "train":
            values = sgd_registers(**SOLVER)
            for register, key in (("SGD_RATE", "rate"), ("SGD_MOMENTUM", "momentum"),
                                  ("SGD_DECAY", "decay"), ("SGD_NORM", "norm_mul")):
                link.write_csr(register, values[key])
            link.write_csr("LFSR_SEED", LFSR_SEED)
        host = HostOps(plan, workload.inputs)
        read, write = _aligned(link.read_mem, link.write_mem)
        first_cycle = sim.cycles
        for segment in _segments(workload.commands):
            link.run([w for c in segment for w in c.words()])
            last = segment[-1]
            if last.opcode == Opcode.HOST:
                _wait(link, transport, field_name="host_wait", value=1,
                      what=f"the HOST step of {last.layer}", limit_s=limit_s)
                host(dict(last.fields, layer=last.layer_index), read, write)
                link.write_csr("CONTROL", enable=1, host_resume=1)
        _wait(link, transport, field_name="busy", value=0, what="the end of the schedule",
              limit_s=limit_s)
        errors = regmap.register("ERROR").unpack(link.read_csr("ERROR"))
        end_cycle = sim.cycles
        memory = sim.read_memory("tensor", 0, len(expected))
        total = sim.cycles
    wall = time.monotonic() - start_wall - build_s

    result = SimResult(backend=sim.name, cycles=end_cycle - first_cycle, wall_s=wall,
                       memory=memory, expected=expected, host=host, total_cycles=total,
                       build_s=build_s)
    decoded = _decode(transport.events)
    result.layers = _layer_report(decoded, workload)
    result.commands = command_report(decoded, workload)
    differ = np.flatnonzero(memory != expected)
    result.mismatched_words = int(differ.size)
    if differ.size:
        result.first_mismatch = _describe(plan, int(differ[0]), memory, expected)
    if errors["bad_command"] or errors["mem_fault"]:
        result.first_mismatch = (result.first_mismatch or "") + \
            f" (ERROR: {', '.join(k for k, v in errors.items() if v)})"
        result.mismatched_words = max(result.mismatched_words, 1)
    return result


def _describe(plan, word, memory, expected):
    addr = 4 * word
    region = next((r for r in plan.layout if r.kind != "alias"
                   and r.offset <= addr < r.end), None)
    where = f"{region.name}+{addr - region.offset:#x}" if region else f"byte {addr:#x}"
    return (f"first mismatch in {where}: word {word} is 0x{int(memory[word]):08X}, "
            f"expected 0x{int(expected[word]):08X}")


def _decode(events):
    return [(cycle, _unpack(value)) for cycle, value in events]


# The unit that finishes each opcode's commands; other opcodes finish as they issue.
#: The trace unit that finishes each opcode's commands (the others finish as
#: they issue).
_UNIT = {op: TRACE_UNIT_OF[unit] for op, unit in OPCODE_UNIT.items() if unit in TRACE_UNIT_OF}


def command_report(decoded, workload):
    """Per schedule command, in issue order: ``issue`` (cycle, from the first
    command's issue), ``wait`` (cycles since the previous command's issue:
    what held it at the head of the queue: its unit, a SYNC, the host),
    ``cycles`` (from its issue to its unit's finish, inclusive; 1 for a
    command that finishes as it issues), its ``macs`` (the schedule's),
    ``utilization`` (MACs / (rows x cols x cycles)) and the counters' stall
    cycles from its issue to its finish (a stall in a cycle that commands of
    several units share is counted for each of them)."""
    plan = workload.plan
    peak = plan.rows * plan.cols
    commands = workload.commands
    pending = {unit: [] for unit in TRACE_UNITS}
    records = []
    first = previous = None

    def finish(rec, cycle, ev):
        rec["cycles"] = cycle - rec["issue"] + 1
        rec["utilization"] = rec["macs"] / (peak * rec["cycles"])
        rec["stalls"] = {k: ev[k] - rec.pop(f"_{k}") for k in ("array_stall", "mem_stall")}
        rec["issue"] -= first

    for cycle, ev in decoded:
        for bit, unit in enumerate(TRACE_UNITS):
            if ev["done"] >> bit & 1 and pending[unit]:
                finish(pending[unit].pop(0), cycle, ev)
        if not ev["issued"]:
            continue
        k = len(records)
        if k >= len(commands) or commands[k].opcode != ev["opcode"]:
            raise ValueError(f"trace out of step with the schedule at command {k}: "
                             f"opcode 0x{ev['opcode']:02X} issued")
        command = commands[k]
        first = cycle if first is None else first
        rec = {"index": k, "layer": command.layer, "stage": command.stage.name.lower(),
               "opcode": command.opcode.name, "issue": cycle,
               "wait": cycle - previous if previous is not None else 0,
               "macs": command.macs, "bad": bool(ev["bad"]),
               "_array_stall": ev["array_stall"], "_mem_stall": ev["mem_stall"]}
        previous = cycle
        records.append(rec)
        unit = _UNIT.get(command.opcode)
        if unit is None or ev["bad"]:
            finish(rec, cycle, ev)
        else:
            pending[unit].append(rec)
    unfinished = [rec for queue in pending.values() for rec in queue]
    if unfinished:
        raise ValueError(f"{len(unfinished)} commands never finished (first: command "
                         f"{unfinished[0]['index']}, {unfinished[0]['opcode']})")
    return records


def _layer_report(decoded, workload):
    """Per layer, each time it runs (forward, then backward and update in a
    training iteration): cycles from the issue of its first command to the
    issue of the next layer's first (each layer ends with a SYNC, so this is
    its time), the stages it ran, array MACs, utilisation (MACs / (rows x
    cols x cycles)), stall cycles by cause and memory bytes, from the trace's
    counter totals."""
    plan = workload.plan
    peak = plan.rows * plan.cols
    groups = []
    end = None
    for cycle, ev in decoded:
        if not ev["issued"]:
            continue
        if ev["opcode"] == Opcode.END:
            end = (cycle, ev)
            continue
        if not groups or groups[-1][0] != ev["layer"]:
            groups.append([ev["layer"], cycle, ev, []])
        stage = Stage(ev["stage"]).name.lower()
        if stage not in groups[-1][3]:
            groups[-1][3].append(stage)
    if end is None and decoded:
        end = decoded[-1]
    out = []
    for j, (layer, start, first, stages) in enumerate(groups):
        stop, last = groups[j + 1][1:3] if j + 1 < len(groups) else end
        cycles = stop - start
        macs = last["macs"] - first["macs"]
        rec = plan.layers[layer]
        out.append({
            "name": rec["name"], "op": rec["type"], "stages": stages, "cycles": cycles,
            "macs": macs, "utilization": macs / (peak * cycles) if cycles else 0.0,
            "stalls": {k: last[k] - first[k] for k in ("array_stall", "mem_stall")},
            "mem_bytes": (last["mem_read_bytes"] - first["mem_read_bytes"]
                          + last["mem_write_bytes"] - first["mem_write_bytes"]),
        })
    return out


def _unpack(value):
    return {name: (value >> member.offset) & ((1 << Shape.cast(member.shape).width) - 1)
            for name, member in TRACE_LAYOUT}
