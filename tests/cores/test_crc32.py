import zlib

import numpy as np
from hypothesis import given, settings, strategies as st

from fecaffe_hw.cores.crc32 import RESIDUE, Crc32
from support import simulate


def _run(chunks, *, gaps, clear_with_first, name):
    """Feed each chunk as one CRC (clear before it); return ``value`` after
    each chunk and ``residue_ok`` after each chunk plus its own CRC."""
    dut = Crc32()
    results = []

    async def bench(ctx):
        assert ctx.get(dut.value) == zlib.crc32(b"")
        for n, chunk in enumerate(chunks):
            framed = chunk + zlib.crc32(chunk).to_bytes(4, "little")
            separate_clear = not clear_with_first or not chunk
            if separate_clear:
                ctx.set(dut.clear, 1)
                await ctx.tick()
            for i, byte in enumerate(framed):
                if i == len(chunk):
                    results.append(("value", ctx.get(dut.value), ctx.get(dut.residue_ok)))
                ctx.set(dut.clear, i == 0 and not separate_clear)
                ctx.set(dut.data, byte)
                ctx.set(dut.valid, 1)
                await ctx.tick()
                # Idle cycles with other data must not change the CRC.
                ctx.set(dut.clear, 0)
                ctx.set(dut.valid, 0)
                ctx.set(dut.data, (byte * 7 + 1) & 0xFF)
                for _ in range(gaps[(n + i) % len(gaps)]):
                    await ctx.tick()
            results.append(("residue", ctx.get(dut.value), ctx.get(dut.residue_ok)))

    simulate(dut, bench, name=name)
    return results


@settings(max_examples=15, deadline=None)
@given(chunks=st.lists(st.binary(min_size=0, max_size=24), min_size=1, max_size=4),
       gaps=st.lists(st.integers(0, 2), min_size=1, max_size=3),
       clear_with_first=st.booleans())
def test_matches_zlib(chunks, gaps, clear_with_first):
    results = _run(chunks, gaps=gaps, clear_with_first=clear_with_first, name="crc32_random")
    expected = []
    for chunk in chunks:
        expected.append(("value", zlib.crc32(chunk), None))
        expected.append(("residue", RESIDUE, 1))
    assert len(results) == len(expected)
    for (kind, value, ok), (want_kind, want, want_ok) in zip(results, expected):
        assert kind == want_kind
        assert value == want, (kind, hex(value), hex(want))
        if want_ok is not None:
            assert ok == want_ok


def test_long_frame_and_corruption():
    # A maximum-size protocol frame body, then the same frame with one bit
    # flipped: residue_ok must drop.
    rng = np.random.default_rng(7)
    body = bytes(rng.integers(0, 256, 1028, dtype=np.uint8))
    good = body + zlib.crc32(body).to_bytes(4, "little")
    bad = bytearray(good)
    bad[500] ^= 0x10
    dut = Crc32()
    seen = []

    async def bench(ctx):
        for frame in (good, bytes(bad)):
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.valid, 1)
            for byte in frame:
                ctx.set(dut.data, byte)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            seen.append((ctx.get(dut.value), ctx.get(dut.residue_ok)))

    simulate(dut, bench, name="crc32_long")
    assert seen[0] == (RESIDUE, 1)
    assert seen[1] == (zlib.crc32(bytes(bad)), 0)
    assert zlib.crc32(bytes(bad)) != RESIDUE
