# amaranth: UnusedElaboratable=no
"""UpdateEngine against a Python tensor memory (latency, random stalls,
several bursts in flight) and a real Scratchpad as the C buffer: ACC_ADD,
ACC_BIAS and SGD_UPDATE decoded from ISA words by ``from_isa``, every word of
memory compared with ``fixedpoint.update``; illegal commands change nothing."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from amaranth.hdl import Array, Elaboratable, Module, Signal
from amaranth.lib import wiring

from fecaffe_hw.cores.scratchpad import Scratchpad
from fecaffe_hw.cores.update_engine import UpdateEngine
from fecaffe_hw.fixedpoint.format import wrap
from fecaffe_hw.fixedpoint.lfsr import Lfsr
from fecaffe_hw.fixedpoint.update import (DIFF_BITS, acc_add, acc_bias, sgd_fracs_legal,
                                          sgd_update_command)
from fecaffe_hw.runtime import isa
from fecaffe_hw.runtime.isa import Opcode
from support import TensorMemory, simulate

MEM_WORDS = 2048
COLS, ACC_WIDTH, C_DEPTH = 5, 40, 12


class Harness(Elaboratable):
    """The engine, its C buffer, and the ISA decode the sequencer would do:
    ``words`` in, ``legal`` out; ``go`` offers the decoded command."""

    def __init__(self, engine):
        self.engine = engine
        self.pad = Scratchpad(lanes=engine.cols, lane_width=engine.acc_width,
                              depth=engine.c_depth)
        self.words = Array(Signal(32, name=f"word{i}") for i in range(isa.WORDS_PER_COMMAND))
        self.legal = Signal()
        self.go = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        m.submodules.pad = self.pad
        wiring.connect(m, e.c_read, self.pad.read0)
        w0 = self.words[0]
        cmd, legal = e.from_isa(m, opcode=w0[:8], func=w0[24:32], flags=w0[12:24],
                                words=list(self.words))
        m.d.comb += [self.legal.eq(legal), e.cmd.payload.eq(cmd),
                     e.cmd.valid.eq(self.go & legal)]
        return m


def run(harness, words, commands, *, c_buffer=None, seeds=None, constants=None, seed,
        stall=0.3, deadline=100_000):
    """Run ISA ``commands`` (``(opcode, fields)``) one after another; returns
    per command ``None`` if decoded illegal, else its fault flag. ``seeds``
    maps a command index to an LFSR seed loaded before it."""
    e = harness.engine
    rng = np.random.default_rng(seed)
    memory = TensorMemory(e.mem, words, rng, stall=stall)
    results = []

    async def drive(ctx):
        for name, value in (constants or {}).items():
            ctx.set(getattr(e, name), value)
        if c_buffer is not None:
            for r, row in enumerate(c_buffer):
                ctx.set(harness.pad.write.addr, r)
                ctx.set(harness.pad.write.data, [int(v) for v in row])
                ctx.set(harness.pad.write.en, (1 << e.cols) - 1)
                await ctx.tick()
            ctx.set(harness.pad.write.en, 0)
        for k, (opcode, fields) in enumerate(commands):
            if seeds and k in seeds:
                ctx.set(e.lfsr_seed, seeds[k])
                ctx.set(e.lfsr_load, 1)
                await ctx.tick()
                ctx.set(e.lfsr_load, 0)
            for i, word in enumerate(isa.encode(opcode, **fields)):
                ctx.set(harness.words[i], word)
            if not ctx.get(harness.legal):
                results.append(None)
                await ctx.tick()
                continue
            ctx.set(harness.go, 1)
            await ctx.tick().until(e.cmd.ready)
            ctx.set(harness.go, 0)
            while not ctx.get(e.done):
                await ctx.tick()
            results.append(bool(ctx.get(e.fault)))
            await ctx.tick()
            assert not ctx.get(e.busy)

    simulate(harness, drive, background=memory.processes(), name="update_engine",
             deadline_cycles=deadline)
    return results, memory


def get32(words, addr, count, stride=1):
    return words.view(np.int32)[addr // 4::stride][:count].astype(np.int64)


def put16(words, addr, values):
    words.view(np.uint8)[addr:addr + 2 * len(values)] = \
        np.asarray(values).astype(np.int16).view(np.uint8)


def get16(words, addr, count):
    return words.view(np.uint8)[addr:addr + 2 * count].view(np.int16).astype(np.int64)


def random_words(rng):
    return rng.integers(0, 2**32, MEM_WORDS, dtype=np.uint64).astype(np.uint32)


# ---- ACC_ADD ------------------------------------------------------------------

@pytest.mark.parametrize("grad_bits", [24, 12])
def test_acc_add_matches_model(grad_bits):
    """Tiles with odd shapes, gaps between rows, RNE right shifts, saturating
    left shifts, saturation to grad_bits and wrap of the sum; gradients wider
    and narrower than the SGD diff that shares the rounding shifter."""
    engine = UpdateEngine(cols=COLS, acc_width=ACC_WIDTH, c_depth=C_DEPTH, grad_bits=grad_bits)
    rng = np.random.default_rng(1)
    words = random_words(rng)
    c = rng.integers(-2**39, 2**39, (C_DEPTH, COLS))
    c[2] = rng.integers(-40, 40, COLS)              # small: left shifts without saturation
    c[3, :3] = [3 << 4, 5 << 4, -(3 << 4)]          # exact ties (8 = 0b1000 with shift 4)
    c[3, 3:] = [0x18, -0x18]
    # (offset word, rows, cols, stride, shift, grad addr)
    cases = [(0, 3, 5, 7, 16, 0x100), (2, 2, 3, 3, -3, 0x200), (3, 1, 5, 1, 4, 0x300),
             (5, 4, 1, 2, 0, 0x380), (7, 2, 4, 9, -30, 0x400), (9, 3, 2, 2, 60, 0x500)]
    commands = []
    for word, rows, cols, stride, shift, addr in cases:
        base = addr // 4
        for r in range(rows):
            # Near full scale: the sums wrap.
            g = rng.integers(-2**23, 2**23, cols)
            words[base + r * stride:base + r * stride + cols] = g.astype(np.int32).view(np.uint32)
        commands.append((Opcode.ACC_ADD, dict(offset=word * COLS, grad_addr=addr, rows=rows,
                                              cols=cols, stride=stride, shift=shift)))
    expected = words.copy()
    for word, rows, cols, stride, shift, addr in cases:
        base = addr // 4
        tile = np.array([wrap(expected.view(np.int32)[base + r * stride:][:cols]
                              .astype(np.int64), grad_bits) for r in range(rows)])
        result = acc_add(tile, c[word:word + rows, :cols], shift, grad_bits)
        for r in range(rows):
            expected[base + r * stride:base + r * stride + cols] = \
                result[r].astype(np.int32).view(np.uint32)
    results, _ = run(Harness(engine), words, commands, c_buffer=c, seed=2)
    assert results == [False] * len(cases)
    np.testing.assert_array_equal(words, expected)


# ---- ACC_BIAS -----------------------------------------------------------------

def test_acc_bias_matches_model():
    """Odd position counts (spans start and end mid-word), one position (ip
    layers), a span longer than one burst, shifts both ways and saturation."""
    grad_bits = 20
    engine = UpdateEngine(cols=COLS, acc_width=ACC_WIDTH, c_depth=C_DEPTH, grad_bits=grad_bits)
    rng = np.random.default_rng(3)
    words = random_words(rng)
    # (images, channels, positions, shift, src, grad addr, big)
    cases = [(3, 3, 5, 0, 0x000, 0x1000, False), (2, 4, 1, -2, 0x100, 0x1100, False),
             (1, 2, 300, 1, 0x200, 0x1200, False), (2, 3, 7, -8, 0x800, 0x1300, True),
             (4, 1, 2, 30, 0x900, 0x1400, True)]
    commands, checks = [], []
    for images, channels, positions, shift, src, addr, big in cases:
        if big:
            dy = rng.integers(2**15 - 100, 2**15, (images, channels, positions)) * \
                rng.choice([-1, 1], (1, channels, 1))
        else:
            dy = rng.integers(-2**15, 2**15, (images, channels, positions))
        put16(words, src, dy.ravel())
        commands.append((Opcode.ACC_BIAS, dict(src=src, grad_addr=addr, channels=channels,
                                               positions=positions, images=images,
                                               shift=shift)))
        checks.append((addr, dy, shift))
    expected = words.copy()
    for addr, dy, shift in checks:
        grad = wrap(get32(expected, addr, dy.shape[1]), grad_bits)
        expected[addr // 4:addr // 4 + dy.shape[1]] = \
            acc_bias(grad, dy, shift, grad_bits).astype(np.int32).view(np.uint32)
    results, _ = run(Harness(engine), words, commands, seed=4)
    assert results == [False] * len(cases)
    np.testing.assert_array_equal(words, expected)


# ---- SGD_UPDATE ---------------------------------------------------------------

#: (weight, history, grad, diff) fracs: a >= 0 and a < 0, b >= 0 and b < 0,
#: history finer than weights (two draws per element) and equal (one).
FRACS = [(12, 18, 20, 22), (14, 14, 10, 12), (10, 16, 30, 28), (13, 15, 16, 2)]
CONSTANTS = dict(rate=int(0.01 * 2**20), momentum=int(0.9 * 2**17), decay=int(5e-4 * 2**26),
                 norm_mul=1 << 24)


@pytest.mark.parametrize("chunk", [8, 32])
def test_sgd_update_matches_model(chunk):
    """Several SGD_UPDATEs in a row (the LFSR runs on across them), counts
    not a multiple of the chunk, lr/decay multipliers, a reseed; weights and
    history match ``sgd_update_command`` and the gradients are zeroed."""
    grad_bits = 28
    engine = UpdateEngine(cols=COLS, acc_width=ACC_WIDTH, c_depth=C_DEPTH, grad_bits=grad_bits,
                          chunk=chunk, seed=0x1234567)
    rng = np.random.default_rng(5 + chunk)
    words = random_words(rng)
    lfsr = Lfsr(engine.seed)
    commands, checks = [], []
    seeds = {3: 0xCAFEF00D}
    for k, (count, fracs, lr_mult, decay_mult) in enumerate(
            [(22, FRACS[0], 256, 256), (10, FRACS[1], 512, 0), (2, FRACS[2], 300, 77),
             (34, FRACS[3], 65535, 1000), (6, FRACS[0], 1, 256)]):
        wf, hf, gf, df = fracs
        assert sgd_fracs_legal(weight_frac=wf, history_frac=hf, grad_frac=gf, diff_frac=df,
                               grad_bits=grad_bits)
        base = 0x200 * (k + 1)
        waddr, haddr, gaddr = base, base + 0x80, base + 0x100
        # Gradients near full scale make diff saturate in some elements.
        g = np.where(rng.random(count) < 0.2, rng.integers(-2**27, 2**27, count),
                     rng.integers(-2**20, 2**20, count))
        words[gaddr // 4:gaddr // 4 + count] = g.astype(np.int32).view(np.uint32)
        fields = dict(weight_addr=waddr, history_addr=haddr, grad_addr=gaddr, count=count,
                      lr_mult=lr_mult, decay_mult=decay_mult, weight_frac=wf, history_frac=hf,
                      grad_frac=gf, diff_frac=df)
        commands.append((Opcode.SGD_UPDATE, fields))
        checks.append(fields)
    expected = words.copy()
    for k, f in enumerate(checks):
        if k in seeds:
            lfsr = Lfsr(seeds[k])
        count = f["count"]
        w_new, h_new, g_new = sgd_update_command(
            get16(expected, f["weight_addr"], count), get16(expected, f["history_addr"], count),
            get32(expected, f["grad_addr"], count), weight_frac=f["weight_frac"],
            history_frac=f["history_frac"], grad_frac=f["grad_frac"],
            diff_frac=f["diff_frac"], grad_bits=grad_bits, lr_mult=f["lr_mult"],
            decay_mult=f["decay_mult"], lfsr=lfsr, **CONSTANTS)
        put16(expected, f["weight_addr"], w_new)
        put16(expected, f["history_addr"], h_new)
        expected[f["grad_addr"] // 4:f["grad_addr"] // 4 + count] = 0
    results, _ = run(Harness(engine), words, commands, seeds=seeds, constants=CONSTANTS,
                     seed=6 + chunk)
    assert results == [False] * len(commands)
    np.testing.assert_array_equal(words, expected)


# ---- illegal commands and faults ---------------------------------------------

def test_illegal_commands_change_nothing():
    """Decoded illegal (refused before the engine), refused by the engine
    (C offset), or faulting in memory: nothing legal-looking is written."""
    engine = UpdateEngine(cols=COLS, acc_width=ACC_WIDTH, c_depth=C_DEPTH, grad_bits=24)
    rng = np.random.default_rng(7)
    words = random_words(rng)
    sgd = dict(weight_addr=0x100, history_addr=0x200, grad_addr=0x300, count=8,
               lr_mult=256, decay_mult=256, weight_frac=12, history_frac=18, grad_frac=20,
               diff_frac=22)
    add = dict(offset=0, grad_addr=0x400, rows=2, cols=3, stride=4, shift=0)
    bias = dict(src=0x500, grad_addr=0x600, channels=2, positions=3, images=2, shift=0)
    illegal = [
        (Opcode.SGD_UPDATE, {**sgd, "count": 7}), (Opcode.SGD_UPDATE, {**sgd, "count": 0}),
        (Opcode.SGD_UPDATE, {**sgd, "weight_addr": 0x102}),
        (Opcode.SGD_UPDATE, {**sgd, "history_frac": 11}),           # history coarser than w
        (Opcode.SGD_UPDATE, {**sgd, "grad_frac": 50}),              # a = 36 > 28
        (Opcode.SGD_UPDATE, {**sgd, "diff_frac": -2}),              # b = 17 ok ... see below
        (Opcode.SGD_UPDATE, {**sgd, "diff_frac": 40}),              # b = -25 < -15
        (Opcode.ACC_ADD, {**add, "cols": COLS + 1}), (Opcode.ACC_ADD, {**add, "rows": 0}),
        (Opcode.ACC_ADD, {**add, "stride": 2}), (Opcode.ACC_ADD, {**add, "grad_addr": 0x401}),
        (Opcode.ACC_BIAS, {**bias, "positions": 0}), (Opcode.ACC_BIAS, {**bias, "src": 0x502}),
        (Opcode.ACC_BIAS, {**bias, "images": 0x100, "positions": 1 << 24}),
        (Opcode.ACC_BIAS, {**bias, "flags": int(isa.Flag.ACCUMULATE)}),
    ]
    legal_by_model = [
        sgd_fracs_legal(**{k: f[k] for k in ("weight_frac", "history_frac", "grad_frac",
                                             "diff_frac")}, grad_bits=24)
        and f["count"] and not f["count"] % 2 and f["weight_addr"] % 4 == 0
        for op, f in illegal if op == Opcode.SGD_UPDATE]
    # Refused by the engine itself: the C offset is not a whole C word, the
    # rows leave the C buffer; a burst past the end of memory faults.
    refused = [(Opcode.ACC_ADD, {**add, "offset": 2}),
               (Opcode.ACC_ADD, {**add, "offset": (C_DEPTH - 1) * COLS})]
    faulting = [(Opcode.ACC_BIAS, {**bias, "grad_addr": 4 * MEM_WORDS})]
    before = words.copy()
    results, memory = run(Harness(engine), words, illegal + refused + faulting, seed=8,
                          c_buffer=np.zeros((C_DEPTH, COLS), dtype=np.int64))
    sgd_results = [r for (op, _), r in zip(illegal, results) if op == Opcode.SGD_UPDATE]
    assert [r is not None for r in sgd_results] == [bool(x) for x in legal_by_model]
    # The one SGD case the fracs allow (b = 17) ran; everything else did not.
    ran = [i for i, r in enumerate(results[:len(illegal)]) if r is not None]
    assert ran == [5] and results[5] is False
    assert results[len(illegal):] == [True, True, True]
    # Refused commands moved nothing; the faulting one wrote nothing in memory.
    assert all(addr != 0x400 for addr, _, _ in memory.bursts)
    changed = np.flatnonzero(words != before)
    sgd_words = set(range(0x100 // 4, 0x100 // 4 + 4)) | set(range(0x200 // 4, 0x200 // 4 + 4)) \
        | set(range(0x300 // 4, 0x300 // 4 + 8))
    assert set(changed.tolist()) <= sgd_words


@pytest.mark.parametrize("params", [dict(cols=0), dict(cols=300), dict(grad_bits=33),
                                    dict(chunk=7), dict(seed=0), dict(acc_width=1)])
def test_parameters_validated(params):
    kwargs = {**dict(cols=4, acc_width=32, c_depth=8, grad_bits=24), **params}
    with pytest.raises(ValueError, match="must be"):
        UpdateEngine(**kwargs)


@settings(max_examples=4, deadline=None)
@given(st.data())
def test_sgd_update_extreme_fracs(data):
    """Random legal fracs at the edges of their ranges (diff shifts far right
    or left, saturating; the widest alignments), full-scale operands and
    constants: still bit-exact."""
    grad_bits = data.draw(st.integers(8, 32))
    wf = data.draw(st.integers(-8, 20))
    hf = wf + data.draw(st.sampled_from([0, 1, 17, 32]))
    gf = wf + 2 + data.draw(st.sampled_from([grad_bits - 36, 0, 28]))
    df = hf - 3 - data.draw(st.sampled_from([-15, 0, 44 - DIFF_BITS]))
    seed = data.draw(st.integers(1, 2**32 - 1))
    rng = np.random.default_rng(seed)
    engine = UpdateEngine(cols=2, acc_width=16, c_depth=4, grad_bits=grad_bits, chunk=4,
                          seed=seed)
    words = random_words(rng)
    count = 6
    constants = dict(rate=int(rng.integers(0, 2**18)), momentum=int(rng.integers(0, 2**18)),
                     decay=int(rng.integers(0, 2**18)), norm_mul=int(rng.integers(0, 2**25)))
    fields = dict(weight_addr=0x100, history_addr=0x200, grad_addr=0x300, count=count,
                  lr_mult=int(rng.integers(0, 2**16)), decay_mult=int(rng.integers(0, 2**16)),
                  weight_frac=wf, history_frac=hf, grad_frac=gf, diff_frac=df)
    expected = words.copy()
    w_new, h_new, _ = sgd_update_command(
        get16(expected, 0x100, count), get16(expected, 0x200, count),
        get32(expected, 0x300, count), grad_bits=grad_bits, lfsr=Lfsr(seed),
        **{k: v for k, v in fields.items() if k.endswith(("frac", "mult"))}, **constants)
    put16(expected, 0x100, w_new)
    put16(expected, 0x200, h_new)
    expected[0x300 // 4:0x300 // 4 + count] = 0
    results, _ = run(Harness(engine), words, [(Opcode.SGD_UPDATE, fields)],
                     constants=constants, seed=seed, stall=0.1)
    assert results == [False]
    np.testing.assert_array_equal(words, expected)
