"""The host protocol: framing, opcodes, status codes and payload layouts.

Defined once here; the gateware frame engine imports these constants, the host
link and the device models encode and decode with these functions.

A frame on the wire::

    SYNC (A5 5A) | opcode u8 | seq u8 | length u16 | payload | CRC-32 u32

Multi-byte fields are little-endian. ``length`` counts payload bytes and is at
most :data:`MAX_PAYLOAD`. The CRC is IEEE 802.3 CRC-32 (what :func:`zlib.crc32`
computes) over header and payload, not the sync bytes.

A response has the same framing: opcode = request opcode | 0x80, the request's
seq, and a payload whose first byte is a :class:`Status`. Frames whose header
cannot be trusted (bad CRC, length over :data:`MAX_PAYLOAD`, bytes that stop
mid-frame) are answered with :attr:`Opcode.ERROR`, the seq as received, and the
status.

Choices the shared spec leaves open:

* After a rejected frame, :class:`FrameDecoder` resumes hunting for SYNC at the
  byte after the last one it consumed (the header for a bad length, the CRC
  for a bad CRC), as gateware that does not buffer frames would.
* A request whose payload has the wrong size for its opcode (but a good CRC)
  is answered with opcode | 0x80 and :attr:`Status.BAD_LENGTH`; an address that
  is not word-aligned or outside memory / the register map gets
  :attr:`Status.BAD_ADDRESS`.
"""

import enum
import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "SYNC", "MAX_PAYLOAD", "HEADER_SIZE", "HEADER", "CRC_SIZE", "FRAME_OVERHEAD",
    "RESPONSE_FLAG", "MAX_MEM_DATA", "MAX_RUN_WORDS",
    "Opcode", "Status", "READ_OPCODES", "crc32",
    "Frame", "BadFrame", "FrameDecoder",
    "encode_frame", "encode_request", "encode_response", "encode_error",
    "PING_RESPONSE", "READ_CSR_REQUEST", "READ_CSR_RESPONSE", "WRITE_CSR_REQUEST",
    "WRITE_MEM_HEADER", "READ_MEM_REQUEST", "COUNTER_FORMAT",
]

SYNC = b"\xA5\x5A"
MAX_PAYLOAD = 1024
HEADER = struct.Struct("<BBH")       # opcode, seq, length
HEADER_SIZE = HEADER.size            # 4
CRC = struct.Struct("<I")
CRC_SIZE = CRC.size                  # 4
FRAME_OVERHEAD = len(SYNC) + HEADER_SIZE + CRC_SIZE
RESPONSE_FLAG = 0x80


class Opcode(enum.IntEnum):
    PING = 0x01
    READ_CSR = 0x02
    WRITE_CSR = 0x03
    WRITE_MEM = 0x04
    READ_MEM = 0x05
    RUN = 0x06
    READ_COUNTERS = 0x07
    ERROR = 0xFF


class Status(enum.IntEnum):
    OK = 0
    BAD_CRC = 1
    BAD_LENGTH = 2
    BAD_OPCODE = 3
    BAD_ADDRESS = 4
    BUSY = 5
    TIMEOUT = 6


# Re-executed when a duplicate arrives; the others return the stored status.
READ_OPCODES = frozenset({Opcode.PING, Opcode.READ_CSR, Opcode.READ_MEM, Opcode.READ_COUNTERS})

# Payload layouts (after the status byte for responses).
PING_RESPONSE = struct.Struct("<IIII")       # ID, VERSION, CAPABILITIES, PLAN_HASH
READ_CSR_REQUEST = struct.Struct("<H")       # byte address
READ_CSR_RESPONSE = struct.Struct("<I")      # value
WRITE_CSR_REQUEST = struct.Struct("<HI")     # byte address, value
WRITE_MEM_HEADER = struct.Struct("<I")       # byte address, then the data
READ_MEM_REQUEST = struct.Struct("<IH")      # byte address, byte count
COUNTER_FORMAT = struct.Struct("<Q")         # each counter in READ_COUNTERS

# Largest data per frame, rounded down to whole words.
MAX_MEM_DATA = (MAX_PAYLOAD - WRITE_MEM_HEADER.size) // 4 * 4     # WRITE_MEM data, READ_MEM count
MAX_RUN_WORDS = MAX_PAYLOAD // 4


def crc32(data):
    """IEEE 802.3 CRC-32 of ``data`` (init 0xFFFFFFFF, reflected, final xor)."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """A frame that passed its CRC: ``opcode`` and ``seq`` as bytes, the payload."""
    opcode: int
    seq: int
    payload: bytes = b""

    @property
    def is_response(self):
        return self.opcode == Opcode.ERROR or bool(self.opcode & RESPONSE_FLAG)

    @property
    def status(self):
        """A response's status byte, as :class:`Status` when it is a known one."""
        if not self.payload:
            return None
        try:
            return Status(self.payload[0])
        except ValueError:
            return self.payload[0]

    @property
    def data(self):
        """A response's payload after the status byte."""
        return self.payload[1:]

    def encode(self):
        return encode_frame(self.opcode, self.seq, self.payload)


@dataclass(frozen=True)
class BadFrame:
    """A frame the decoder rejected: ``status`` is BAD_CRC, BAD_LENGTH or
    TIMEOUT; ``opcode`` and ``seq`` are as received (untrustworthy)."""
    status: Status
    opcode: int
    seq: int


def encode_frame(opcode, seq, payload=b""):
    """The wire bytes of one frame."""
    if not 0 <= opcode <= 0xFF:
        raise ValueError(f"Opcode must be a byte, not {opcode!r}")
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"Sequence number must be a byte, not {seq!r}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"Payload of {len(payload)} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
    body = HEADER.pack(opcode, seq, len(payload)) + payload
    return SYNC + body + CRC.pack(crc32(body))


def encode_request(opcode, seq, payload=b""):
    return encode_frame(Opcode(opcode), seq, payload)


def encode_response(opcode, seq, status, data=b""):
    """A response to a request with ``opcode``: opcode | 0x80, status, data."""
    return encode_frame(Opcode(opcode) | RESPONSE_FLAG, seq, bytes([Status(status)]) + bytes(data))


def encode_error(seq, status):
    """The answer to a frame whose header cannot be trusted."""
    return encode_frame(Opcode.ERROR, seq, bytes([Status(status)]))


class FrameDecoder:
    """Streaming decoder: :meth:`feed` bytes, get :class:`Frame` and
    :class:`BadFrame` events in order.

    Garbage between frames is skipped by hunting for SYNC. The decoder has no
    clock: the owner calls :meth:`expire` when bytes stopped for longer than
    its inter-byte timeout.
    """

    _HUNT, _SYNC1, _HEADER, _BODY = range(4)

    def __init__(self, *, max_payload=MAX_PAYLOAD):
        if not isinstance(max_payload, int) or not 0 <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be an integer in 0..65535, not {max_payload!r}")
        self.max_payload = max_payload
        self.reset()

    def reset(self):
        """Drop any partial frame and hunt for SYNC again."""
        self._state = self._HUNT
        self._buffer = bytearray()
        self._length = 0

    @property
    def in_frame(self):
        """True between a SYNC and the end of its frame."""
        return self._state != self._HUNT

    @property
    def bytes_needed(self):
        """Bytes still needed to finish the current frame (at least 1)."""
        if self._state == self._HUNT:
            return len(SYNC) + HEADER_SIZE + CRC_SIZE
        if self._state == self._SYNC1:
            return 1 + HEADER_SIZE + CRC_SIZE
        if self._state == self._HEADER:
            return HEADER_SIZE - len(self._buffer) + CRC_SIZE
        return max(1, HEADER_SIZE + self._length + CRC_SIZE - len(self._buffer))

    def expire(self):
        """Bytes stopped: a partial frame becomes a TIMEOUT event (else None)."""
        event = None
        if self._state in (self._HEADER, self._BODY):
            opcode = self._buffer[0] if len(self._buffer) > 0 else 0
            seq = self._buffer[1] if len(self._buffer) > 1 else 0
            event = BadFrame(Status.TIMEOUT, opcode, seq)
        self.reset()
        return event

    def feed(self, data):
        """Consume ``data``; return the list of completed events."""
        events = []
        for byte in data:
            event = self._step(byte)
            if event is not None:
                events.append(event)
        return events

    def _step(self, byte):
        state = self._state
        if state == self._HUNT:
            if byte == SYNC[0]:
                self._state = self._SYNC1
            return None
        if state == self._SYNC1:
            if byte == SYNC[1]:
                self._state = self._HEADER
                self._buffer = bytearray()
            elif byte != SYNC[0]:
                self._state = self._HUNT
            return None
        self._buffer.append(byte)
        if state == self._HEADER:
            if len(self._buffer) == HEADER_SIZE:
                opcode, seq, length = HEADER.unpack(self._buffer)
                if length > self.max_payload:
                    self.reset()
                    return BadFrame(Status.BAD_LENGTH, opcode, seq)
                self._length = length
                self._state = self._BODY
            return None
        if len(self._buffer) == HEADER_SIZE + self._length + CRC_SIZE:
            body = bytes(self._buffer[:-CRC_SIZE])
            (crc,) = CRC.unpack(self._buffer[-CRC_SIZE:])
            opcode, seq, _ = HEADER.unpack(body[:HEADER_SIZE])
            self.reset()
            if crc != crc32(body):
                return BadFrame(Status.BAD_CRC, opcode, seq)
            return Frame(opcode, seq, body[HEADER_SIZE:])
        return None
