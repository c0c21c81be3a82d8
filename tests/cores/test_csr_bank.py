# amaranth: UnusedElaboratable=no
"""CsrBank against a Python model of the register table: RO/RW/W1C/SC fields,
64-bit counters with LO/HI latching, unmapped addresses, with the project's
register map and with a small table of the test's own."""

import numpy as np
import pytest

from fecaffe_hw.cores.csr_bank import CsrBank
from fecaffe_hw.runtime.regmap import REGISTERS, Access, Field, Register

from support import simulate

RO, RW, W1C, SC = Access.RO, Access.RW, Access.W1C, Access.SC

SMALL_TABLE = (
    Register("MAGIC", 0x0, RO, (Field("value", 0, 32, RO, 0x12345678),)),
    Register("MIXED", 0x4, RW, (
        Field("go", 0, 1, SC),
        Field("mode", 1, 3, RW, 5),
        Field("level", 4, 12, RO),
        Field("kick", 16, 2, SC),
        Field("limit", 20, 12, RW, 0xABC),
    )),
    Register("FLAGS", 0xC, W1C, (Field("a", 0, 1, W1C), Field("b", 3, 4, W1C))),
    Register("EMPTY", 0x10, RO, ()),
    Register("EVENTS_LO", 0x40, RO, (Field("value", 0, 32, RO),), counter="EVENTS"),
    Register("EVENTS_HI", 0x44, RO, (Field("value", 0, 32, RO),), counter="EVENTS"),
    Register("TICKS_LO", 0x48, RO, (Field("value", 0, 32, RO),), counter="TICKS"),
    Register("TICKS_HI", 0x4C, RO, (Field("value", 0, 32, RO),), counter="TICKS"),
)


class BankModel:
    """What a register table promises, field by field."""

    def __init__(self, registers):
        self.by_word = {r.address // 4: r for r in registers}
        self.stored = {(r.name, f.name): f.reset for r in registers for f in r.fields
                       if f.access in (RW, W1C)}

    def read(self, word, inputs):
        reg = self.by_word.get(word)
        if reg is None:
            return 0, True
        value = 0
        for f in reg.fields:
            if f.access is RO:
                value |= inputs.get((reg.name, f.name), f.reset) << f.lsb
            elif f.access in (RW, W1C):
                value |= self.stored[reg.name, f.name] << f.lsb
        return value, False

    def write(self, word, value):
        """Returns (error, {SC field: pulse value})."""
        reg = self.by_word.get(word)
        if reg is None or all(f.access is RO for f in reg.fields):
            return True, {}
        pulses = {}
        for f in reg.fields:
            bits = f.extract(value)
            if f.access is RW:
                self.stored[reg.name, f.name] = bits
            elif f.access is W1C:
                self.stored[reg.name, f.name] &= ~bits
            elif f.access is SC:
                pulses[reg.name, f.name] = bits
        return False, pulses


async def access(ctx, bus, word, write=None):
    ctx.set(bus.addr, word)
    ctx.set(bus.w_stb if write is not None else bus.r_stb, 1)
    if write is not None:
        ctx.set(bus.w_data, write)
    await ctx.tick()
    ctx.set(bus.r_stb, 0)
    ctx.set(bus.w_stb, 0)
    return ctx.get(bus.r_data), ctx.get(bus.error)


def plain_registers(registers):
    return [r for r in registers if r.counter is None]


@pytest.mark.parametrize("table", ["regmap", "small"])
def test_fields_follow_the_model(table):
    registers = REGISTERS if table == "regmap" else SMALL_TABLE
    dut = CsrBank(registers)
    model = BankModel(registers)
    rng = np.random.default_rng(11)
    plain = plain_registers(registers)
    mapped = {r.address // 4 for r in registers}
    unmapped = [w for w in rng.integers(0, 2**14, 200).tolist() if w not in mapped][:20]
    ro_fields = [(r.name, f) for r in plain for f in r.fields if f.access is RO]
    w1c_fields = [(r.name, f) for r in plain for f in r.fields if f.access is W1C]
    sc_fields = [(r.name, f) for r in plain for f in r.fields if f.access is SC]

    async def bench(ctx):
        # Constant RO fields left undriven must read their reset value.
        inputs = {}
        for name, f in ro_fields:
            if rng.random() < 0.5:
                inputs[name, f.name] = int(rng.integers(0, 2**f.width))
                ctx.set(dut.field(name, f.name), inputs[name, f.name])
        for step in range(400):
            if ro_fields and rng.random() < 0.2:
                name, f = ro_fields[rng.integers(len(ro_fields))]
                inputs[name, f.name] = int(rng.integers(0, 2**f.width))
                ctx.set(dut.field(name, f.name), inputs[name, f.name])
            setting = []
            if w1c_fields and rng.random() < 0.3:
                name, f = w1c_fields[rng.integers(len(w1c_fields))]
                bits = int(rng.integers(0, 2**f.width))
                setting.append((name, f, bits))
                ctx.set(dut.field(name, f.name + "_set"), bits)
            choice = rng.random()
            if choice < 0.1 and unmapped:
                word = unmapped[rng.integers(len(unmapped))]
            else:
                word = plain[rng.integers(len(plain))].address // 4
            if rng.random() < 0.5:
                value = int(rng.integers(0, 2**32))
                error, pulses = model.write(word, value)
                _, got_error = await access(ctx, dut.bus, word, value)
                assert got_error == error, f"write {word * 4:#x}"
                for name, f in sc_fields:
                    assert ctx.get(dut.field(name, f.name)) == pulses.get((name, f.name), 0)
            else:
                want, error = model.read(word, inputs)
                got, got_error = await access(ctx, dut.bus, word)
                assert (got, got_error) == (want, error), f"read {word * 4:#x} step {step}"
            # A set in the cycle of a clear wins: the event is not lost.
            for name, f, bits in setting:
                model.stored[name, f.name] |= bits
                ctx.set(dut.field(name, f.name + "_set"), 0)
            for (name, field), value in model.stored.items():
                assert ctx.get(dut.field(name, field)) == value, f"{name}.{field}"
            if sc_fields:
                await ctx.tick()
                for name, f in sc_fields:
                    assert ctx.get(dut.field(name, f.name)) == 0, "SC pulse longer than a cycle"

    simulate(dut, bench, name=f"csr_bank_fields_{table}")


def test_counters_latch_hi_on_lo_read_and_clear():
    dut = CsrBank(SMALL_TABLE, increment_width=32)
    rng = np.random.default_rng(5)
    names = ["EVENTS", "TICKS"]
    lo = {"EVENTS": 0x40 // 4, "TICKS": 0x48 // 4}
    totals = dict.fromkeys(names, 0)
    pending = dict.fromkeys(names, 0)       # the increment in the pipeline register

    async def cycle(ctx, word=None, clear=False):
        # Increments set now enter the pipeline register at this edge and the
        # count at the next; a read sees the count before this edge.
        increments = {n: int(rng.integers(0, 2**32)) for n in names}
        for n in names:
            ctx.set(dut.counter(n), increments[n])
        ctx.set(dut.counters_clear, int(clear))
        before = dict(totals)
        if word is not None:
            got = await access(ctx, dut.bus, word)
        else:
            await ctx.tick()
            got = None
        for n in names:
            totals[n] = 0 if clear else (totals[n] + pending[n]) % 2**64
            pending[n] = 0 if clear else increments[n]
        ctx.set(dut.counters_clear, 0)
        return before, got

    async def bench(ctx):
        for trial in range(30):
            name = names[trial % 2]
            for _ in range(rng.integers(0, 4)):
                await cycle(ctx)
            before, (lo_value, error) = await cycle(ctx, lo[name])
            assert not error
            assert lo_value == before[name] & 0xFFFFFFFF
            # HI read later still gives the half that matches the LO read.
            for _ in range(rng.integers(0, 4)):
                await cycle(ctx)
            _, (hi_value, error) = await cycle(ctx, lo[name] + 1)
            assert not error
            assert hi_value == before[name] >> 32
            if trial == 15:
                await cycle(ctx, clear=True)
                _, (lo_value, _) = await cycle(ctx, lo[name])
                assert lo_value == 0, "increments up to the clear cycle must be dropped"
        # Counters are read-only: writes are refused and change nothing.
        await cycle(ctx)
        _, error = await access(ctx, dut.bus, lo["TICKS"], 0)
        assert error
        _, (lo_value, _) = await cycle(ctx, lo["TICKS"])
        assert lo_value != 0

    simulate(dut, bench, name="csr_bank_counters")


def test_counter_pipeline_timing_and_clear():
    """Cycle by cycle: an increment presented in cycle t is seen by a read
    issued in t + 2; a clear drops the increments presented in the clear
    cycle and the one before it (still in flight) and keeps the next."""
    dut = CsrBank(SMALL_TABLE, increment_width=8)
    events = SMALL_TABLE[4].address // 4
    # (increment, clear) per cycle, and what a LO read issued in that cycle returns.
    script = [(1, 0), (0, 0), (0, 0), (2, 0), (3, 0), (5, 0), (7, 1), (11, 0), (0, 0),
              (0, 0), (13, 1), (0, 0), (0, 0), (17, 0), (0, 1), (0, 0), (255, 0), (0, 0),
              (0, 0)]
    expected = [0, 0, 1, 1, 1, 3, 6, 0, 0, 11, 11, 0, 0, 0, 0, 0, 0, 0, 255]

    async def bench(ctx):
        got = []
        for increment, clear in script:
            ctx.set(dut.counter("EVENTS"), increment)
            ctx.set(dut.counters_clear, clear)
            value, error = await access(ctx, dut.bus, events)
            assert not error
            got.append(value)
        assert got == expected

    simulate(dut, bench, name="csr_bank_counter_timing")


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="share address"):
        CsrBank([SMALL_TABLE[0], Register("OTHER", 0x0, RW, (Field("x", 0, 1, RW),))])
    with pytest.raises(ValueError, match="exactly two"):
        CsrBank(SMALL_TABLE[:5])
    with pytest.raises(ValueError, match="increment width"):
        CsrBank(SMALL_TABLE, increment_width=0)
    with pytest.raises(ValueError, match="address bits"):
        CsrBank(SMALL_TABLE, addr_width=3)
    with pytest.raises(KeyError, match="TICKS2"):
        CsrBank(SMALL_TABLE).counter("TICKS2")
