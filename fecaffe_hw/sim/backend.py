"""One interface over the RTL simulators that run a design for the host.

A design driven here is a ``wiring.Component`` with one ``sync`` domain and
at least these members: ``host_rx`` (``In(stream.Signature(8))``),
``host_tx`` (``Out(stream.Signature(8))``), ``trace_valid`` (``Out(1)``) and
``trace_data`` (``Out(N)``, any N). Named ``lib.memory.Memory`` instances
inside it are read and written by a backdoor.

Cycle semantics, identical in every backend: cycle ``c`` is the ``c``-th
clock period since the simulation started (signals at their init values, as
after reset). A byte moves in a cycle where valid and ready are both 1 at its
closing clock edge; a trace event ``(c, trace_data)`` is logged for every
cycle whose ``trace_valid`` is 1 at that edge. Simulated time only passes
inside :meth:`SimBackend.exchange`.
"""

import abc
import os
import shutil
import warnings

import numpy as np
from amaranth.hdl import MemoryData, Shape

from ..errors import FecaffeError, LinkError

__all__ = ["SimBackend", "SimTimeout", "SimBuildError", "open_backend", "cxx_compiler",
           "BACKENDS", "PORT_NAMES"]

BACKENDS = ("auto", "pysim", "cxxrtl")

# Flattened port names (Amaranth joins a signature path with "__"), in the
# order the backends exchange them.
PORT_NAMES = ("host_rx__valid", "host_rx__payload", "host_rx__ready",
              "host_tx__valid", "host_tx__payload", "host_tx__ready",
              "trace_valid", "trace_data")


class SimTimeout(LinkError):
    """A simulated exchange that did not complete within its cycle budget.

    ``rx_taken``, ``tx`` (bytes received) and ``events`` hold what did happen.
    """

    def __init__(self, message, *, rx_taken, tx, events):
        self.rx_taken, self.tx, self.events = rx_taken, tx, events
        super().__init__(message)


class SimBuildError(FecaffeError):
    """A simulator that cannot be built: no C++ compiler, or Yosys or the
    compiler failed (the message names the log with the details)."""


def cxx_compiler():
    """The system C++ compiler: ``$CXX`` if set and found, else the first of
    ``g++``, ``clang++``, ``c++`` on ``PATH``; ``None`` if there is none."""
    candidates = []
    if os.environ.get("CXX"):
        candidates.append(os.environ["CXX"].split()[0])
    candidates += ["g++", "clang++", "c++"]
    for candidate in candidates:
        path = shutil.which(candidate)
        if path is not None:
            return path
    return None


class _MemoryInfo:
    """A backdoor-accessible memory: its name, width and depth."""

    def __init__(self, name, data):
        self.name, self.data = name, data
        shape = Shape.cast(data.shape)
        self.width, self.signed, self.depth = shape.width, shape.signed, data.depth
        if self.width > 32:
            raise ValueError(f"Memory {name!r} is {self.width} bits wide; the backdoor "
                             f"carries words of at most 32 bits")
        self.mask = (1 << self.width) - 1


def memory_data(name, memory):
    """The ``MemoryData`` behind ``memory`` (a ``lib.memory.Memory`` or the
    ``MemoryData`` itself)."""
    data = getattr(memory, "data", memory)
    if not isinstance(data, MemoryData):
        raise TypeError(f"Memory {name!r} must be a lib.memory.Memory or a MemoryData, "
                        f"not {memory!r}")
    return data


class SimBackend(abc.ABC):
    """A running simulation of one design (see the module docstring).

    ``name`` is ``"pysim"`` or ``"cxxrtl"``; ``cycles`` counts the clock
    cycles simulated since the start. Use as a context manager, or call
    :meth:`close`, which also finishes the VCD file if one was asked for.
    """

    name = None

    def __init__(self, memories):
        if not isinstance(memories, dict):
            raise TypeError(f"Memories must be a dict of name to Memory, not {memories!r}")
        self._memories = {name: _MemoryInfo(name, memory_data(name, memory))
                          for name, memory in memories.items()}
        self.cycles = 0
        self._closed = False

    # --- the interface ---------------------------------------------------

    def write_memory(self, memory_name, first_word, words):
        """Store ``words`` (integers that fit the memory's width, e.g. a
        ``numpy.uint32`` array) at ``first_word`` onwards of a named memory."""
        info = self._memory(memory_name)
        words = np.ascontiguousarray(words)
        if words.ndim != 1:
            raise ValueError(f"Memory {memory_name!r}: words must be one-dimensional, "
                             f"not of shape {words.shape}")
        if words.size and (words.dtype.kind not in "iu" or words.min() < 0
                           or int(words.max()) > info.mask):
            raise ValueError(f"Memory {memory_name!r}: words must be integers in "
                             f"[0, 2**{info.width})")
        self._check_range(info, first_word, words.size)
        self._check_open()
        self._write_memory(info, first_word, words.astype(np.uint32))

    def read_memory(self, memory_name, first_word, count):
        """``count`` words from ``first_word`` onwards of a named memory, as
        a ``numpy.uint32`` array."""
        info = self._memory(memory_name)
        self._check_range(info, first_word, count)
        self._check_open()
        return self._read_memory(info, first_word, count)

    def exchange(self, rx, tx_count, max_cycles):
        """Offer the ``rx`` bytes on ``host_rx`` (the next one each cycle
        after one is taken) while taking bytes from ``host_tx`` (ready until
        ``tx_count`` arrived), until every ``rx`` byte was taken and
        ``tx_count`` bytes were received.

        Returns ``(tx_bytes, events)``, ``events`` being the ``(cycle,
        trace_data)`` pairs logged meanwhile. Raises :class:`SimTimeout`
        after ``max_cycles`` cycles without completing.
        """
        rx = bytes(rx)
        if not isinstance(tx_count, int) or tx_count < 0:
            raise ValueError(f"Byte count must be a non-negative integer, not {tx_count!r}")
        if not isinstance(max_cycles, int) or max_cycles < 0:
            raise ValueError(f"Cycle budget must be a non-negative integer, not {max_cycles!r}")
        self._check_open()
        start = self.cycles
        completed, rx_taken, tx, events = self._exchange(rx, tx_count, max_cycles)
        if not completed:
            outstanding = []
            if rx_taken < len(rx):
                outstanding.append(f"{len(rx) - rx_taken} of {len(rx)} host_rx bytes "
                                   f"not taken")
            if len(tx) < tx_count:
                outstanding.append(f"{tx_count - len(tx)} of {tx_count} host_tx bytes "
                                   f"not received")
            raise SimTimeout(f"{self.name} simulation: {' and '.join(outstanding)} after "
                             f"{max_cycles} cycles (cycles {start}..{self.cycles})",
                             rx_taken=rx_taken, tx=tx, events=events)
        return tx, events

    def close(self):
        """Stop the simulation; finish the VCD file if one was asked for."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # --- what a backend implements -----------------------------------------

    @abc.abstractmethod
    def _write_memory(self, info, first_word, words):
        """Store a ``uint32`` array; arguments already checked."""

    @abc.abstractmethod
    def _read_memory(self, info, first_word, count):
        """Return a ``uint32`` array; arguments already checked."""

    @abc.abstractmethod
    def _exchange(self, rx, tx_count, max_cycles):
        """Run cycles as :meth:`exchange` describes, advancing ``self.cycles``;
        return ``(completed, rx_taken, tx_bytes, events)``."""

    @abc.abstractmethod
    def _close(self):
        """Release the simulator."""

    # --- helpers ----------------------------------------------------------

    def _memory(self, name):
        try:
            return self._memories[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._memories) or "none"
            raise KeyError(f"No memory named {name!r} (known: {known})") from None

    @staticmethod
    def _check_range(info, first_word, count):
        for what, value in (("First word", first_word), ("Word count", count)):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{what} must be a non-negative integer, not {value!r}")
        if first_word + count > info.depth:
            raise ValueError(f"Words {first_word}..{first_word + count - 1} are outside "
                             f"memory {info.name!r} of depth {info.depth}")

    def _check_open(self):
        if self._closed:
            raise RuntimeError(f"The {self.name} simulation is closed")


def open_backend(kind, design, *, memories, vcd=None, cache_dir=None):
    """Start simulating ``design`` with backend ``kind`` (``"auto"``,
    ``"pysim"`` or ``"cxxrtl"``).

    ``memories`` maps a name to a ``Memory`` inside ``design`` for the
    backdoor; ``vcd`` is a path for a waveform file; ``cache_dir`` holds
    compiled CXXRTL simulators (default ``$FECAFFE_CACHE`` or
    ``~/.cache/fecaffe-hw``). ``"auto"`` is CXXRTL when a C++ compiler is
    found, else pysim with a ``RuntimeWarning``. Each backend elaborates
    ``design``, so pass a fresh instance to each.
    """
    if kind not in BACKENDS:
        raise ValueError(f"Simulation backend must be one of {', '.join(BACKENDS)}, "
                         f"not {kind!r}")
    if kind == "auto":
        if cxx_compiler() is not None:
            kind = "cxxrtl"
        else:
            warnings.warn("no C++ compiler found (set $CXX or install g++ or clang++): "
                          "simulating with Amaranth's Python simulator, which is much slower",
                          RuntimeWarning, stacklevel=2)
            kind = "pysim"
    if kind == "pysim":
        from .pysim_backend import PysimBackend
        return PysimBackend(design, memories=memories, vcd=vcd)
    from .cxxrtl_backend import CxxrtlBackend
    return CxxrtlBackend(design, memories=memories, vcd=vcd, cache_dir=cache_dir)
