"""runtime/isa.py: the command encoding round-trips and rejects what it cannot hold."""

import pytest
from hypothesis import given, settings, strategies as st

from fecaffe_hw.runtime import isa
from fecaffe_hw.runtime.isa import Opcode, Unit


@st.composite
def commands(draw):
    opcode = draw(st.sampled_from(list(Opcode)))
    fields = {}
    for f in isa.COMMON_FIELDS + isa.LAYOUTS[opcode]:
        if f.name == "unit":
            continue
        lo, hi = f.range
        fields[f.name] = draw(st.integers(lo, hi))
    unit = isa.OPCODE_UNIT[opcode]
    if unit is None:
        fields["unit"] = int(draw(st.sampled_from([Unit.LINE_BUFFER, Unit.POOL])))
    return opcode, fields


@settings(max_examples=300, deadline=None)
@given(commands())
def test_round_trip(command):
    opcode, fields = command
    words = isa.encode(opcode, **fields)
    assert len(words) == isa.WORDS_PER_COMMAND
    assert all(0 <= w < 1 << 32 for w in words)
    got_opcode, got = isa.decode(words)
    assert got_opcode == opcode
    want = dict(fields)
    want.setdefault("unit", isa.OPCODE_UNIT[opcode])
    assert got == want


@settings(max_examples=50, deadline=None)
@given(st.lists(commands(), min_size=1, max_size=5))
def test_stream_round_trip(cmds):
    decoded = isa.decode_stream(isa.encode_stream(cmds))
    assert [op for op, _ in decoded] == [op for op, _ in cmds]
    for (_, got), (_, want) in zip(decoded, cmds):
        assert all(got[k] == v for k, v in want.items())


def test_fields_do_not_overlap():
    for opcode in Opcode:
        used = [0xFF] + [0] * (isa.WORDS_PER_COMMAND - 1)
        for f in isa.COMMON_FIELDS + isa.LAYOUTS[opcode]:
            mask = ((1 << f.width) - 1) << f.lsb
            assert not used[f.word] & mask, (opcode.name, f.name)
            used[f.word] |= mask


def test_encode_rejects_out_of_range_and_unknown_fields():
    with pytest.raises(ValueError, match="GEMM.m = 65536"):
        isa.encode(Opcode.GEMM, m=1 << 16)
    with pytest.raises(ValueError, match="ELTWISE.shift = -129"):
        isa.encode(Opcode.ELTWISE, shift=-129)
    with pytest.raises(ValueError, match="has no field bogus"):
        isa.encode(Opcode.SYNC, bogus=1)
    with pytest.raises(ValueError, match="needs an explicit unit"):
        isa.encode(Opcode.SET_GEOMETRY)
    with pytest.raises(ValueError, match="cannot run on unit"):
        isa.encode(Opcode.GEMM, unit=int(Unit.POOL))


def test_decode_rejects_reserved_bits_and_unknown_opcodes():
    words = isa.encode(Opcode.SYNC)
    words[3] = 1
    with pytest.raises(ValueError, match="reserved bits"):
        isa.decode(words)
    with pytest.raises(ValueError, match="Unknown opcode 0x7e"):
        isa.decode([0x7E] + [0] * 7)
    with pytest.raises(ValueError, match="8 words"):
        isa.decode([0] * 7)


def test_signed_field_sign_extends():
    _, fields = isa.decode(isa.encode(Opcode.ELTWISE, shift=-3, slope=-(1 << 31)))
    assert fields["shift"] == -3 and fields["slope"] == -(1 << 31)


def test_q88():
    assert isa.to_q88(2.0) == 512 and isa.to_q88(0.5) == 128
    with pytest.raises(ValueError, match="Q8.8"):
        isa.to_q88(0.1)
