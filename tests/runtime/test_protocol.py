import random
import struct
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from fecaffe_hw.runtime.protocol import (
    FRAME_OVERHEAD, HEADER_SIZE, MAX_PAYLOAD, SYNC, BadFrame, Frame, FrameDecoder, Opcode,
    Status, crc32, encode_error, encode_frame, encode_request, encode_response,
)

payloads = st.binary(max_size=MAX_PAYLOAD)


def test_wire_format_by_hand():
    # Built field by field from the spec, not with encode_frame.
    payload = bytes([0x1C, 0, 0xEF, 0xBE, 0xAD, 0xDE])
    body = bytes([0x03, 0x2A]) + (6).to_bytes(2, "little") + payload
    want = b"\xA5\x5A" + body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little")
    assert encode_request(Opcode.WRITE_CSR, 0x2A, struct.pack("<HI", 0x1C, 0xDEADBEEF)) == want
    assert len(want) == FRAME_OVERHEAD + 6 and HEADER_SIZE == 4


def test_crc_is_ieee_802_3():
    assert crc32(b"123456789") == 0xCBF43926     # the standard check value


def test_response_and_error_encoding():
    frame = FrameDecoder().feed(encode_response(Opcode.READ_CSR, 7, Status.OK, b"\x01\x02\x03\x04"))
    assert frame == [Frame(0x82, 7, b"\x00\x01\x02\x03\x04")]
    assert frame[0].is_response and frame[0].status is Status.OK
    assert frame[0].data == b"\x01\x02\x03\x04"
    error = FrameDecoder().feed(encode_error(9, Status.BAD_CRC))[0]
    assert (error.opcode, error.seq, error.status) == (0xFF, 9, Status.BAD_CRC)


@settings(max_examples=60, deadline=None)
@given(opcode=st.integers(0, 255), seq=st.integers(0, 255), payload=payloads,
       garbage=st.binary(max_size=40), chunk=st.integers(1, 64))
def test_round_trip_after_garbage_in_chunks(opcode, seq, payload, garbage, chunk):
    wire = garbage + encode_frame(opcode, seq, payload)
    decoder, events = FrameDecoder(), []
    for i in range(0, len(wire), chunk):
        events += decoder.feed(wire[i:i + chunk])
    # Garbage may itself hold a SYNC and swallow the frame's start; the
    # decoder must then report a bad frame, and never invent a good one.
    frames = [e for e in events if isinstance(e, Frame)]
    if SYNC[0] not in garbage:
        assert events == [Frame(opcode, seq, payload)]
    else:
        assert frames in ([], [Frame(opcode, seq, payload)])


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255),
                                 st.binary(max_size=64)), min_size=1, max_size=6),
       junk=st.lists(st.binary(max_size=12).filter(lambda b: SYNC[0] not in b), min_size=6,
                     max_size=6))
def test_stream_of_frames_separated_by_garbage(frames, junk):
    wire = b"".join(j + encode_frame(*f) for j, f in zip(junk, frames))
    assert FrameDecoder().feed(wire) == [Frame(*f) for f in frames]


def test_resynchronises_after_a_corrupt_frame():
    good = encode_request(Opcode.PING, 1)
    corrupt = bytearray(encode_request(Opcode.READ_CSR, 2, b"\x14\x00"))
    corrupt[7] ^= 0x10
    events = FrameDecoder().feed(b"\x00\xA5\x13" + bytes(corrupt) + b"\xA5\xA5" + good)
    assert events == [BadFrame(Status.BAD_CRC, 2, 2), Frame(1, 1, b"")]


def test_rejects_length_over_max_payload():
    header = bytes([Opcode.WRITE_MEM, 5]) + (MAX_PAYLOAD + 1).to_bytes(2, "little")
    good = encode_request(Opcode.PING, 6)
    events = FrameDecoder().feed(SYNC + header + good)
    assert events == [BadFrame(Status.BAD_LENGTH, Opcode.WRITE_MEM, 5), Frame(1, 6, b"")]


def test_every_single_bit_flip_is_caught():
    wire = encode_request(Opcode.WRITE_MEM, 3, bytes(range(12)))
    for bit in range(8 * len(wire)):
        damaged = bytearray(wire)
        damaged[bit // 8] ^= 1 << bit % 8
        events = FrameDecoder().feed(bytes(damaged))
        assert all(isinstance(e, BadFrame) for e in events), bit


def test_expire_reports_a_cut_off_frame():
    decoder = FrameDecoder()
    wire = encode_request(Opcode.RUN, 77, b"\x01\x00\x00\x00")
    assert decoder.feed(wire[:9]) == []
    assert decoder.in_frame and decoder.bytes_needed == len(wire) - 9
    assert decoder.expire() == BadFrame(Status.TIMEOUT, Opcode.RUN, 77)
    assert not decoder.in_frame and decoder.expire() is None
    assert decoder.feed(wire) == [Frame(Opcode.RUN, 77, b"\x01\x00\x00\x00")]


@pytest.mark.parametrize("kwargs, message", [
    (dict(opcode=256, seq=0, payload=b""), "Opcode"),
    (dict(opcode=1, seq=-1, payload=b""), "Sequence"),
    (dict(opcode=1, seq=0, payload=bytes(MAX_PAYLOAD + 1)), "1025"),
])
def test_encode_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        encode_frame(**kwargs)


def test_decoder_never_crashes_on_noise():
    rng = random.Random(1)
    decoder = FrameDecoder()
    for _ in range(50):
        for event in decoder.feed(bytes(rng.randrange(256) for _ in range(200))):
            assert isinstance(event, (Frame, BadFrame))


def test_runtime_imports_without_amaranth():
    code = ("import sys; sys.modules['amaranth'] = None; "
            "import fecaffe_hw.runtime.link, fecaffe_hw.runtime.regmap, "
            "fecaffe_hw.runtime.protocol, fecaffe_hw.runtime.transports.uart")
    subprocess.run([sys.executable, "-c", code], check=True)
