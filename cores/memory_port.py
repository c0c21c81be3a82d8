"""Memory port: how the frame engine and the DMA reach tensor memory.

Four ``lib.stream`` channels, initiator's view:

- ``cmd`` (Out): :data:`MemoryCommand` ``{addr, words, write}``. ``addr`` is a
  byte address, word aligned (the two low bits are ignored); ``words`` is the
  burst length in 32-bit words, 1..256. Other lengths are refused: the command
  moves no data and is answered with a fault (send no ``w`` words for it).
- ``w`` (Out): 32-bit words to write, ``words`` per write command, in command
  order. They may be offered before the command; they are taken after it.
- ``r`` (In): 32-bit words read, ``words`` per read command, in command order
  (also when the read faults; the words are then undefined).
- ``resp`` (In): :data:`MemoryResponse` ``{fault}``, exactly one per command,
  in command order; a read's response follows its last ``r`` word, so an
  initiator drains ``r`` before it waits for the response.

Targets may accept further commands before the earlier ones finish, and a
read is not ordered after an earlier write (AXI's read and write channels
are independent): an initiator must not read a word while a write to it
is unanswered (the core tests' ``TensorMemory`` fails such a read).
"""

from amaranth.hdl import Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MemoryCommand", "MemoryResponse", "MemoryPort", "MAX_BURST_WORDS",
           "engine_members", "reservation_count"]

MAX_BURST_WORDS = 256

#: Payload of ``cmd``.
MemoryCommand = data.StructLayout({
    "addr":  32,
    "words": 9,
    "write": 1,
})

#: Payload of ``resp``: ``fault`` is set if any beat of the command failed
#: (address outside memory, slave error) or the length was invalid.
MemoryResponse = data.StructLayout({
    "fault": 1,
})


class MemoryPort(wiring.Signature):
    """Signature of a memory port, initiator's view (see the module docstring)."""

    def __init__(self):
        super().__init__({
            "cmd":  Out(stream.Signature(MemoryCommand)),
            "w":    Out(stream.Signature(32)),
            "r":    In(stream.Signature(32)),
            "resp": In(stream.Signature(MemoryResponse)),
        })

    def __eq__(self, other):
        return type(other) is MemoryPort

    def __repr__(self):
        return "MemoryPort()"


def engine_members(command_layout):
    """Signature members of a memory-to-memory engine the sequencer drives.

    ``cmd`` (In stream of ``command_layout``); ``done`` and ``fault``
    (one-cycle pulses when a command ends); ``busy``; ``mem``, the engine's
    memory port; ``r_word``, ``w_word`` (a word moved this cycle) and
    ``mem_stall`` (busy, no word moved), for the performance counters.
    """
    return {
        "cmd": In(stream.Signature(command_layout)),
        "done": Out(1),
        "fault": Out(1),
        "busy": Out(1),
        "mem": Out(MemoryPort()),
        "r_word": Out(1),
        "w_word": Out(1),
        "mem_stall": Out(1),
    }


def reservation_count(m, depth, reserve, words, release, *, prefix=""):
    """The words a read FIFO of ``depth`` is committed to hold, a register
    added to ``m``: ``words`` more in a cycle with ``reserve`` (a read
    request taken), one fewer a cycle after one with ``release`` (a word
    popped). An engine requests reads only with room reserved, so ``r`` is
    never back-pressured.

    The pop is counted a cycle late: its path from the consumer's ready into
    this adder crossed the die on the 10x11 ULX3S plan (14.8 ns routed in the
    pool engine, 13.5 in the eltwise engine). The count then overstates the
    FIFO's commitment for a cycle, which can only delay a request."""
    reserved = Signal(range(depth + 1), name=f"{prefix}reserved")
    released = Signal(name=f"{prefix}released")
    m.d.sync += [released.eq(release),
                 reserved.eq(reserved + Mux(reserve, words, 0) - released)]
    return reserved
