"""The pysim and CXXRTL backends run one design cycle for cycle alike, and
both match a Python model of that design."""

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from amaranth import Cat, Module, Signal
from amaranth.back import rtlil
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fecaffe_hw.errors import FecaffeError, LinkError
from fecaffe_hw.sim import SimBuildError, SimTimeout, cxx_compiler, open_backend
from fecaffe_hw.sim import backend as sim_backend
from fecaffe_hw.sim import cxxrtl_backend, pysim_backend

needs_cxx = pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler")

DEPTH = 512
ACK = 0x21


class Trace(data.Struct):
    kind: 8      # 1 write, 2 read, 3 add, 4 aux write
    addr: 16
    value: 32
    head: 12     # aux[0], through an asynchronous read port
    stamp: 16    # free-running cycle counter


class EchoMem(wiring.Component):
    """A byte-command machine over two memories, for exercising the harness.

    ``W a0 a1 d0..d3`` writes ``main[a]``; ``R a0 a1`` answers ``main[a]``
    (4 bytes, little-endian); ``A a0 a1 n k`` adds ``k`` to ``main[a..a+n)``
    one word at a time and answers ``ACK``; ``B a d0 d1`` writes ``aux[a]``
    (12 bits); any other byte ``x`` answers ``x + 1``. A trace event marks
    every memory access.
    """

    def __init__(self, *, depth=DEPTH, init=()):
        # Made here, not in elaborate(): the harness reaches the memories by
        # these attributes to preload and read them.
        self.main = memory.Memory(shape=32, depth=depth, init=init)
        self.aux = memory.Memory(shape=12, depth=16, init=[])
        super().__init__({
            "host_rx": In(stream.Signature(8)),
            "host_tx": Out(stream.Signature(8)),
            "trace_valid": Out(1),
            "trace_data": Out(Trace),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.main = self.main
        m.submodules.aux = self.aux
        rd, wr = self.main.read_port(), self.main.write_port()
        aux_rd, aux_wr = self.aux.read_port(domain="comb"), self.aux.write_port()
        rx, tx, trace = self.host_rx, self.host_tx, self.trace_data

        stamp = Signal(16)
        op, count, delta = Signal(8), Signal(8), Signal(8)
        addr, word = Signal(16), Signal(32)
        index = Signal(3)
        m.d.sync += stamp.eq(stamp + 1)
        m.d.comb += [trace.stamp.eq(stamp), trace.head.eq(aux_rd.data), aux_rd.addr.eq(0),
                     rd.addr.eq(addr)]

        def shift_in(target):
            return target.eq(Cat(target[8:], rx.payload))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [op.eq(rx.payload), index.eq(0)]
                    with m.Switch(rx.payload):
                        with m.Case(ord("W"), ord("R"), ord("A")):
                            m.next = "ADDR"
                        with m.Case(ord("B")):
                            m.next = "AUX"
                        with m.Default():
                            m.d.sync += word.eq(rx.payload + 1)
                            m.next = "ANSWER"
            with m.State("ANSWER"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(word[:8])]
                with m.If(tx.ready):
                    m.next = "IDLE"
            with m.State("ADDR"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [shift_in(addr), index.eq(index + 1)]
                    with m.If(index == 1):
                        m.d.sync += index.eq(0)
                        with m.Switch(op):
                            with m.Case(ord("W")):
                                m.next = "DATA"
                            with m.Case(ord("R")):
                                m.next = "READ"
                            with m.Case(ord("A")):
                                m.next = "COUNT"
            with m.State("DATA"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [shift_in(word), index.eq(index + 1)]
                    with m.If(index == 3):
                        m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [wr.addr.eq(addr), wr.data.eq(word), wr.en.eq(1),
                             self.trace_valid.eq(1), trace.kind.eq(1), trace.addr.eq(addr),
                             trace.value.eq(word)]
                m.next = "IDLE"
            with m.State("READ"):
                m.next = "READ_DATA"    # the read port answers a cycle later
            with m.State("READ_DATA"):
                m.d.sync += [word.eq(rd.data), index.eq(0)]
                m.d.comb += [self.trace_valid.eq(1), trace.kind.eq(2), trace.addr.eq(addr),
                             trace.value.eq(rd.data)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(word[:8])]
                with m.If(tx.ready):
                    m.d.sync += [word.eq(word >> 8), index.eq(index + 1)]
                    with m.If(index == 3):
                        m.next = "IDLE"
            with m.State("COUNT"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [Cat(count, delta).eq(Cat(delta, rx.payload)),
                                 index.eq(index + 1)]
                    with m.If(index == 1):
                        m.next = "ADD_READ"
            with m.State("ADD_READ"):
                with m.If(count == 0):
                    m.d.sync += word.eq(ACK)
                    m.next = "ANSWER"
                with m.Else():
                    m.next = "ADD_WRITE"
            with m.State("ADD_WRITE"):
                total = (rd.data + delta)[:32]
                m.d.comb += [wr.addr.eq(addr), wr.data.eq(total), wr.en.eq(1),
                             self.trace_valid.eq(1), trace.kind.eq(3), trace.addr.eq(addr),
                             trace.value.eq(total)]
                m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                m.next = "ADD_READ"
            with m.State("AUX"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    with m.If(index == 0):
                        m.d.sync += addr.eq(rx.payload)
                    with m.Else():
                        m.d.sync += shift_in(word)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == 2):
                        m.next = "AUX_WRITE"
            with m.State("AUX_WRITE"):
                value = word[16:28]
                m.d.comb += [aux_wr.addr.eq(addr), aux_wr.data.eq(value), aux_wr.en.eq(1),
                             self.trace_valid.eq(1), trace.kind.eq(4), trace.addr.eq(addr),
                             trace.value.eq(value)]
                m.next = "IDLE"
        return m


# --- the model ----------------------------------------------------------------

def model(commands, main, aux):
    """Answer bytes and ``(kind, addr, value, head)`` events of ``commands``
    (tuples as :func:`encode` takes), updating ``main`` and ``aux`` in place."""
    answer, events = bytearray(), []
    for command in commands:
        kind = command[0]
        if kind == "W":
            _, a, v = command
            main[a] = v
            events.append((1, a, v, aux[0]))
        elif kind == "R":
            _, a = command
            answer += int(main[a]).to_bytes(4, "little")
            events.append((2, a, int(main[a]), aux[0]))
        elif kind == "A":
            _, a, n, k = command
            for i in range(a, a + n):
                main[i] = (int(main[i]) + k) % 2**32
                events.append((3, i, int(main[i]), aux[0]))
            answer.append(ACK)
        elif kind == "B":
            _, a, v = command
            events.append((4, a, v, int(aux[0])))   # the write lands at the cycle's end
            aux[a] = v
        else:
            answer.append((command[1] + 1) % 256)
    return bytes(answer), events


def encode(command):
    kind = command[0]
    if kind == "W":
        return b"W" + command[1].to_bytes(2, "little") + command[2].to_bytes(4, "little")
    if kind == "R":
        return b"R" + command[1].to_bytes(2, "little")
    if kind == "A":
        return b"A" + command[1].to_bytes(2, "little") + bytes(command[2:])
    if kind == "B":
        return b"B" + bytes([command[1]]) + command[2].to_bytes(2, "little")
    return bytes([command[1]])


def answer_length(command):
    return {"W": 0, "B": 0, "R": 4}.get(command[0], 1)


def random_commands(rng, n):
    commands = []
    for _ in range(n):
        kind = rng.choice(["W", "R", "A", "B", "E"])
        if kind == "W":
            commands.append(("W", int(rng.integers(DEPTH)), int(rng.integers(2**32))))
        elif kind == "R":
            commands.append(("R", int(rng.integers(DEPTH))))
        elif kind == "A":
            count = int(rng.integers(0, 6))
            commands.append(("A", int(rng.integers(DEPTH - count)), count,
                             int(rng.integers(256))))
        elif kind == "B":
            commands.append(("B", int(rng.integers(16)), int(rng.integers(2**12))))
        else:
            # Not an opcode: echoed.
            commands.append(("E", int(rng.choice([b for b in range(256)
                                                   if b not in b"WRAB"]))))
    return commands


def decode_event(value):
    fields = Trace.from_bits(value)
    return (int(fields.kind), int(fields.addr), int(fields.value), int(fields.head))


# --- fixtures -------------------------------------------------------------------

@pytest.fixture(scope="session")
def cache_dir():
    """Compiled simulators persist across runs (the tool's own cache root)."""
    return cxxrtl_backend.cache_root()


def open_both(cache_dir, **kwargs):
    result = []
    for kind in ("pysim", "cxxrtl"):
        design = EchoMem()
        result.append(open_backend(kind, design, memories={"main": design.main,
                                                           "aux": design.aux},
                                   cache_dir=cache_dir, **kwargs.get(kind, {})))
    return result


def run_workload(backend, commands, batches, main, aux):
    """Preload, run ``commands`` split into exchanges at ``batches``, read back."""
    backend.write_memory("main", 0, main)
    backend.write_memory("aux", 0, aux)
    tx, events = bytearray(), []
    for part in np.split(np.arange(len(commands)), batches):
        chunk = [commands[i] for i in part]
        got, seen = backend.exchange(b"".join(map(encode, chunk)),
                                     sum(map(answer_length, chunk)), 10_000)
        tx += got
        events += seen
    return (bytes(tx), events, backend.cycles, backend.read_memory("main", 0, DEPTH),
            backend.read_memory("aux", 0, 16))


# --- tests ------------------------------------------------------------------------

@needs_cxx
@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40), splits=st.integers(0, 4))
def test_backends_agree_with_each_other_and_the_model(cache_dir, seed, n, splits):
    rng = np.random.default_rng(seed)
    # An exchange ends once its last byte is taken; the closing echo makes
    # the work the previous commands started happen within the run.
    commands = random_commands(rng, n) + [("E", 0x10)]
    batches = sorted(rng.integers(0, n + 2, splits).tolist())
    main = rng.integers(0, 2**32, DEPTH, dtype=np.uint64).astype(np.uint32)
    aux = rng.integers(0, 2**12, 16).astype(np.uint32)

    want_main, want_aux = main.copy(), aux.copy()
    want_tx, want_events = model(commands, want_main, want_aux)

    results = []
    for backend in open_both(cache_dir):
        with backend:
            results.append(run_workload(backend, commands, batches, main, aux))
    (tx_p, events_p, cycles_p, main_p, aux_p), (tx_c, events_c, cycles_c, main_c, aux_c) = results

    assert tx_p == tx_c == want_tx
    assert events_p == events_c
    assert cycles_p == cycles_c
    assert [decode_event(value) for _, value in events_c] == want_events
    # The stamp field counts cycles, so it ties each event to its cycle index.
    assert all(int(Trace.from_bits(value).stamp) == cycle % 2**16 for cycle, value in events_c)
    np.testing.assert_array_equal(main_p, want_main)
    np.testing.assert_array_equal(main_c, want_main)
    np.testing.assert_array_equal(aux_p, want_aux)
    np.testing.assert_array_equal(aux_c, want_aux)


def test_exchange_cycle_semantics_pysim():
    # Hand-counted from the FSM: "R" takes 1 + 2 address cycles, READ,
    # READ_DATA (the event), then 4 answer cycles.
    design = EchoMem()
    with open_backend("pysim", design, memories={"main": design.main}) as backend:
        backend.write_memory("main", 7, np.array([0xA1B2C3D4], dtype=np.uint32))
        tx, events = backend.exchange(b"R\x07\x00", 4, 100)
        assert tx == bytes.fromhex("d4c3b2a1")
        assert [cycle for cycle, _ in events] == [4]
        assert backend.cycles == 9
        assert backend.exchange(b"", 0, 100) == (b"", [])
        assert backend.cycles == 9


@needs_cxx
def test_timeout_names_what_is_outstanding(cache_dir):
    for backend in open_both(cache_dir):
        with backend:
            # An echo answers one byte, so a second one never comes.
            with pytest.raises(SimTimeout) as info:
                backend.exchange(b"\x10", 2, 50)
            assert "1 of 2 host_tx bytes not received after 50 cycles" in str(info.value)
            assert isinstance(info.value, LinkError)
            assert info.value.tx == b"\x11" and info.value.rx_taken == 1
            assert backend.cycles == 50
            # "B" and its 3 operand bytes take a cycle each; the rest wait.
            with pytest.raises(SimTimeout, match="2 of 6 host_rx bytes not taken"):
                backend.exchange(b"B\x00\x00\x10\x10\x10", 0, 4)
            assert backend.cycles == 54


@needs_cxx
def test_backdoor_round_trip_and_limits(cache_dir):
    rng = np.random.default_rng(5)
    for backend in open_both(cache_dir):
        with backend:
            words = rng.integers(0, 2**32, 100, dtype=np.uint64).astype(np.uint32)
            backend.write_memory("main", DEPTH - 100, words)
            np.testing.assert_array_equal(backend.read_memory("main", DEPTH - 100, 100), words)
            backend.write_memory("aux", 3, np.array([0xFFF, 1], dtype=np.uint32))
            assert backend.read_memory("aux", 2, 3).tolist() == [0, 0xFFF, 1]
            assert backend.read_memory("main", 0, 0).size == 0
            with pytest.raises(ValueError, match=r"outside memory 'main' of depth 512"):
                backend.write_memory("main", DEPTH - 1, words[:2])
            with pytest.raises(ValueError, match=r"\[0, 2\*\*12\)"):
                backend.write_memory("aux", 0, np.array([0x1000], dtype=np.uint32))
            with pytest.raises(KeyError, match="No memory named 'tensor'.*'main', 'aux'"):
                backend.read_memory("tensor", 0, 1)
            # A backdoor write reaches the asynchronous read port (``head``).
            backend.write_memory("aux", 0, np.array([0xABC], dtype=np.uint32))
            _, events = backend.exchange(b"B\x05\x00\x01\x10", 1, 20)
            assert decode_event(events[0][1]) == (4, 5, 0x100, 0xABC)
        with pytest.raises(RuntimeError, match="closed"):
            backend.exchange(b"", 0, 1)


@needs_cxx
def test_memory_init_survives(cache_dir):
    # The CXXRTL conversion leaves out zero inits only.
    init = [0xDEADBEEF, 0, 7, 0xFFFFFFFF]
    for kind in ("pysim", "cxxrtl"):
        design = EchoMem(depth=16, init=init)
        with open_backend(kind, design, memories={"main": design.main},
                          cache_dir=cache_dir) as backend:
            assert backend.read_memory("main", 0, 6).tolist() == init + [0, 0]
            assert backend.exchange(b"R\x03\x00", 4, 20)[0] == b"\xff" * 4


def test_pysim_public_backdoor_matches_fast_one(monkeypatch):
    words = np.arange(1, 33, dtype=np.uint32) * 0x01010101
    seen = []
    for fast in (True, False):
        monkeypatch.setattr(pysim_backend, "_FAST_BACKDOOR", fast)
        design = EchoMem()
        with open_backend("pysim", design, memories={"main": design.main,
                                                     "aux": design.aux}) as backend:
            backend.write_memory("main", 10, words)
            backend.write_memory("aux", 0, np.array([0x123], dtype=np.uint32))
            _, events = backend.exchange(b"R\x0b\x00", 4, 100)
            seen.append((events, backend.read_memory("main", 0, 64).tolist()))
    assert seen[0] == seen[1]
    assert decode_event(seen[0][0][0][1]) == (2, 11, int(words[1]), 0x123)


@needs_cxx
def test_vcd_files(cache_dir, tmp_path):
    paths = {kind: tmp_path / f"{kind}.vcd" for kind in ("pysim", "cxxrtl")}
    for backend in open_both(cache_dir, pysim={"vcd": paths["pysim"]},
                             cxxrtl={"vcd": paths["cxxrtl"]}):
        with backend:
            backend.exchange(b"\x30\x31", 2, 20)
    for path in paths.values():
        text = path.read_text()
        assert "$timescale" in text and "host_rx__valid" in text and "trace_data" in text
        assert "#" in text.split("$enddefinitions", 1)[1]


@needs_cxx
def test_cxxrtl_cache_is_reused_and_atomic(tmp_path, monkeypatch):
    text, _ = cxxrtl_backend.convert(EchoMem(depth=8), {})
    executable = cxxrtl_backend.build_simulator(text, cache_dir=tmp_path)
    builds = tmp_path / "cxxrtl"
    assert [p.name for p in builds.iterdir()] == [executable.parent.name]
    assert os.access(executable, os.X_OK)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached simulator")
    monkeypatch.setattr(subprocess, "run", no_build)
    assert cxxrtl_backend.build_simulator(text, cache_dir=tmp_path) == executable
    # FECAFFE_CACHE is the default root.
    monkeypatch.setenv("FECAFFE_CACHE", str(tmp_path))
    assert cxxrtl_backend.build_simulator(text) == executable


class SelfFed(wiring.Component):
    """One struct signal whose second field is computed from its first: no
    loop between bits, but a wire that feeds itself."""
    a: In(1)
    b: In(1)
    y: Out(2)

    def elaborate(self, platform):
        m = Module()
        pair = Signal(data.StructLayout({"first": 1, "second": 1}))
        m.d.comb += [pair.first.eq(self.a), pair.second.eq(pair.first & self.b),
                     self.y.eq(pair)]
        return m


def test_cxxrtl_refuses_wires_that_feed_themselves(tmp_path):
    text = rtlil.convert(SelfFed(), name="top")
    with pytest.raises(SimBuildError) as info:
        # The check comes before the compiler runs (``false`` would fail it).
        cxxrtl_backend.build_simulator(text, cache_dir=tmp_path,
                                       compiler=shutil.which("false"))
    message = str(info.value)
    assert "\n" not in message and "feedback through wires" in message
    assert "test_backends.py:" in message and "feedback.log" in message


def test_cxxrtl_build_failures_are_one_line(tmp_path, monkeypatch):
    text, _ = cxxrtl_backend.convert(EchoMem(depth=8), {})
    with pytest.raises(SimBuildError) as info:
        cxxrtl_backend.build_simulator(text, cache_dir=tmp_path,
                                       compiler=shutil.which("false"))
    message = str(info.value)
    assert "\n" not in message and "C++ compiler" in message and "compile.log" in message
    # The failed build keeps its log but never takes the cache's key name.
    assert all(p.name.startswith(".") for p in (tmp_path / "cxxrtl").iterdir())

    monkeypatch.setattr(sim_backend, "cxx_compiler", lambda: None)
    monkeypatch.setattr(cxxrtl_backend, "cxx_compiler", lambda: None)
    design = EchoMem()
    with pytest.raises(SimBuildError, match=r"needs a C\+\+ compiler: none found"):
        open_backend("cxxrtl", design, memories={}, cache_dir=tmp_path)
    design = EchoMem()
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        backend = open_backend("auto", design, memories={})
    with backend:
        assert backend.name == "pysim"


@needs_cxx
def test_auto_prefers_cxxrtl(cache_dir):
    design = EchoMem()
    with open_backend("auto", design, memories={"main": design.main},
                      cache_dir=cache_dir) as backend:
        assert backend.name == "cxxrtl"
        assert backend.exchange(b"\x10", 1, 10)[0] == b"\x11"


def test_cxx_compiler_honours_cxx(monkeypatch, tmp_path):
    fake = tmp_path / "my-c++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert cxx_compiler() == str(fake)
    monkeypatch.setenv("CXX", str(tmp_path / "missing"))
    assert cxx_compiler() != str(tmp_path / "missing")


def test_bad_arguments():
    design = EchoMem()
    with pytest.raises(ValueError, match="one of auto, pysim, cxxrtl, not 'verilator'"):
        open_backend("verilator", design, memories={})
    with pytest.raises(TypeError, match="must be a lib.memory.Memory"):
        open_backend("pysim", design, memories={"main": 3})
    with open_backend("pysim", design, memories={}) as backend:
        with pytest.raises(ValueError, match="non-negative integer, not -1"):
            backend.exchange(b"", -1, 10)


def test_unknown_memory_in_cxxrtl_names_the_memory():
    stray = memory.MemoryData(shape=8, depth=4, init=[])
    with pytest.raises(ValueError, match="Memory 'stray' is not part of design"):
        cxxrtl_backend.convert(EchoMem(), {"stray": stray})


def test_missing_harness_port_is_named():
    class Bare(wiring.Component):
        host_rx: In(stream.Signature(8))

        def elaborate(self, platform):
            return Module()

    for check in (lambda design: cxxrtl_backend.convert(design, {}),
                  lambda design: open_backend("pysim", design, memories={})):
        design = Bare()
        design._MustUse__silence = True   # rejected before elaboration, on purpose
        with pytest.raises(TypeError, match="host_tx__valid|lacks a harness port"):
            check(design)


def test_exceptions_are_project_errors():
    assert issubclass(SimTimeout, LinkError) and issubclass(SimBuildError, FecaffeError)
    assert pathlib.Path(cxxrtl_backend.DRIVER).exists()
