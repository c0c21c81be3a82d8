"""On-chip scratchpads: the A, B and C buffers between the DMA and the array.

Each buffer is a :class:`Scratchpad`, a ``lib.memory.Memory`` of ``depth``
words of ``lanes`` values. The A buffer holds columns of ``A`` (``rows``
values of ``data_width``), the B buffer rows of ``B`` (``cols`` values of
``data_width``), the C buffer rows of ``C`` (``cols`` accumulators of
``acc_width``). A buffer element offset ``e`` (as in ``runtime.isa``) is lane
``e % lanes`` of word ``e // lanes``.

Double buffering (ping-pong) is by address: the compiler places consecutive
tiles in different halves of a buffer, and the sequencer's hazard check lets
the DMA fill one half while the array reads the other (see
``cores/sequencer.py``). A buffer therefore needs no bank-select of its own,
and any split (halves, thirds, one big tile) uses the same hardware.
"""

from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["Scratchpad", "ScratchpadWrite", "ScratchpadRead"]


class ScratchpadWrite(wiring.Signature):
    """Write port, writer's view: ``addr``, ``data`` (``lanes`` values), ``en``
    (one enable per lane, so a single value can be written)."""

    def __init__(self, *, lanes, lane_width, depth):
        super().__init__({
            "addr": Out(range(depth)),
            "data": Out(data.ArrayLayout(signed(lane_width), lanes)),
            "en": Out(lanes),
        })


class ScratchpadRead(wiring.Signature):
    """Read port, reader's view: ``addr`` and ``en`` in, ``data`` the cycle
    after ``en`` (held while ``en`` is low)."""

    def __init__(self, *, lanes, lane_width, depth):
        super().__init__({
            "addr": Out(range(depth)),
            "en": Out(1),
            "data": In(data.ArrayLayout(signed(lane_width), lanes)),
        })


class Scratchpad(wiring.Component):
    """``depth`` words of ``lanes`` signed ``lane_width``-bit values.

    Ports: ``write`` (``In(ScratchpadWrite)``, per-lane enables) and
    ``read_ports`` read ports ``read0``, ``read1``, ... (``In(ScratchpadRead)``,
    one cycle latency). Read ports listed in ``transparent`` return the value
    written in the same cycle to the same word (a read-modify-write pipeline
    needs this when it touches one word on consecutive cycles).

    Parameters: ``lanes`` 1..256, ``lane_width`` 1..64, ``depth`` >= 2,
    ``read_ports`` >= 1.
    """

    def __init__(self, *, lanes, lane_width, depth, read_ports=1, transparent=()):
        for name, value, lo, hi in (("lanes", lanes, 1, 256), ("lane width", lane_width, 1, 64),
                                    ("depth", depth, 2, 1 << 24),
                                    ("read port count", read_ports, 1, 8)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"Scratchpad {name} must be an integer in [{lo}, {hi}], "
                                 f"not {value!r}")
        transparent = tuple(transparent)
        for index in transparent:
            if index not in range(read_ports):
                raise ValueError(f"Transparent read port {index!r} is not one of the "
                                 f"{read_ports} read ports")
        self._lanes, self._lane_width, self._depth = lanes, lane_width, depth
        self._read_ports, self._transparent = read_ports, transparent
        port = dict(lanes=lanes, lane_width=lane_width, depth=depth)
        members = {"write": In(ScratchpadWrite(**port))}
        for i in range(read_ports):
            members[f"read{i}"] = In(ScratchpadRead(**port))
        super().__init__(members)

    lanes = property(lambda self: self._lanes)
    lane_width = property(lambda self: self._lane_width)
    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(
            shape=self.lanes * self.lane_width, depth=self.depth, init=[])
        wr = mem.write_port(granularity=self.lane_width)
        m.d.comb += [wr.addr.eq(self.write.addr), wr.data.eq(self.write.data),
                     wr.en.eq(self.write.en)]
        for i in range(self._read_ports):
            port = getattr(self, f"read{i}")
            rd = mem.read_port(transparent_for=(wr,) if i in self._transparent else ())
            m.d.comb += [rd.addr.eq(port.addr), rd.en.eq(port.en), port.data.eq(rd.data)]
        return m
