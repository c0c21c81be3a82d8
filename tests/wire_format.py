"""A minimal protobuf wire-format encoder for building test bytes by hand.

Independent of the protobuf library and of fecaffe_hw's own writers, so tests
that decode these bytes check the library against the wire format itself.
"""

import struct

__all__ = ["VARINT", "FIXED64", "LENGTH", "FIXED32", "varint", "tag", "varint_field",
           "length_delimited", "string", "float_field", "packed_floats", "packed_doubles"]

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def varint(value):
    """``value`` as a base-128 varint."""
    value &= (1 << 64) - 1  # negative int64 / int32 are ten-byte two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(field, wire_type):
    return varint(field << 3 | wire_type)


def varint_field(field, value):
    return tag(field, VARINT) + varint(value)


def length_delimited(field, payload):
    return tag(field, LENGTH) + varint(len(payload)) + payload


def string(field, text):
    return length_delimited(field, text.encode())


def float_field(field, value):
    """One element of an unpacked ``repeated float`` (or an optional float)."""
    return tag(field, FIXED32) + struct.pack("<f", value)


def packed_floats(field, values):
    return length_delimited(field, struct.pack(f"<{len(values)}f", *values))


def packed_doubles(field, values):
    return length_delimited(field, struct.pack(f"<{len(values)}d", *values))
