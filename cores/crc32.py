"""Byte-at-a-time CRC-32 (IEEE 802.3), identical to ``zlib.crc32``."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Crc32", "crc32_byte", "POLY", "INIT", "XOROUT", "RESIDUE"]

POLY = 0xEDB88320     # 0x04C11DB7 bit-reversed: the CRC shifts right (reflected)
INIT = 0xFFFFFFFF
XOROUT = 0xFFFFFFFF
# zlib.crc32(m + zlib.crc32(m).to_bytes(4, "little")) for every m: a receiver
# that runs the CRC over a frame *and* its trailing CRC checks one constant.
RESIDUE = 0x2144DF1C


def _step_matrix():
    # The CRC register update is linear over GF(2) in (state, byte): track, for
    # every register bit, the set of input bits it is the XOR of. Inputs 0..31
    # are state bits, 32..39 the byte's bits.
    state = [1 << i for i in range(32)]
    for i in range(8):
        feedback = state[0] ^ (1 << (32 + i))
        state = state[1:] + [0]
        state = [bit ^ feedback if (POLY >> n) & 1 else bit for n, bit in enumerate(state)]
    return state


_STEP = _step_matrix()


def crc32_byte(state, byte):
    """Expression: the 32-bit CRC register after shifting in ``byte`` (8 bits,
    least significant first), from register value ``state`` (not final-xored).

    Each result bit is a plain XOR of state and byte bits, which is what
    synthesis wants to see (no chain of eight conditional XORs).
    """
    inputs = Cat(state[:32], byte[:8])
    return Cat(*(Cat(*(inputs[i] for i in range(40) if (mask >> i) & 1)).xor()
                 for mask in _STEP))


class Crc32(wiring.Component):
    """Running CRC-32 of the bytes seen since the last ``clear``.

    A tap, not a handshake: it never stalls, so it can watch a byte stream's
    transfers (``valid = stream.valid & stream.ready``).

    Ports
    -----
    data, valid : In
        A byte to add this cycle.
    clear : In
        Start a new CRC. With ``valid`` in the same cycle, that byte is the
        first byte of the new CRC.
    value : Out(32)
        ``zlib.crc32`` of the bytes since the last ``clear`` (0 after a clear
        with no byte): the value to send, least significant byte first.
    residue_ok : Out(1)
        The bytes since ``clear`` end with their own CRC-32 (little-endian),
        i.e. ``value == RESIDUE``: a frame check without storing the CRC field.

    Latency one cycle (``value`` includes the byte presented in the previous
    cycle); throughput one byte per cycle. Size (yosys synth_xilinx, xc7):
    136 LUT + 32 FF.
    """

    def __init__(self):
        super().__init__({
            "data": In(8),
            "valid": In(1),
            "clear": In(1),
            "value": Out(32),
            "residue_ok": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        state = Signal(32, init=INIT)
        current = Signal(32)      # the register, or INIT when clearing
        m.d.comb += current.eq(state)
        with m.If(self.clear):
            m.d.comb += current.eq(INIT)
        with m.If(self.valid):
            m.d.sync += state.eq(crc32_byte(current, self.data))
        with m.Else():
            m.d.sync += state.eq(current)
        m.d.comb += [
            self.value.eq(state ^ XOROUT),
            self.residue_ok.eq(state == (RESIDUE ^ XOROUT)),
        ]
        return m
