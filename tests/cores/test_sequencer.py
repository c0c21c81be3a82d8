# amaranth: UnusedElaboratable=no
"""Sequencer end to end: command words in, tensor memory (AxiRam behind
AxiMaster, with DDR-like latency and random stalls) compared word for word
with ``fixedpoint.gemm`` + ``requantize`` afterwards. Covers single and
multi-tile GEMMs with K split over ACCUMULATE, ping-pong buffers, a bias
loaded into C, illegal commands (flagged, skipped), the HOST hand-off,
ELTWISE, SET_GEOMETRY + POOL_FWD against ``fixedpoint.pooling``, and the
training update (ACC_ADD, ACC_BIAS, SGD_UPDATE) against ``fixedpoint.update``."""

import math

import numpy as np
import pytest

from amaranth.hdl import Module
from amaranth.lib import wiring

from fecaffe_hw.cores.axi_master import AxiMaster
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.cores.sequencer import Sequencer
from fecaffe_hw.fixedpoint import Format, gemm, requantize, wrap
from fecaffe_hw.fixedpoint.activation import (
    relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward,
)
from fecaffe_hw.cores.pool_engine import PoolGeometry
from fecaffe_hw.fixedpoint import update
from fecaffe_hw.fixedpoint.lfsr import Lfsr
from fecaffe_hw.fixedpoint.pooling import ave_pool, max_pool
from fecaffe_hw.fixedpoint.sgd import norm_multiplier
from fecaffe_hw.runtime.isa import (
    Buffer, EltwiseOp, Flag, HostOp, Opcode, PoolKind, Unit, encode,
)

from support import Stalls, simulate, stream_put

R, C, DW, AW = 4, 4, 16, 32
KT = 8                    # K per GEMM command; each of A and B holds two halves
MEM_BYTES = 16384


def gemm_program(M, N, K, *, a, b, c, shift, bias=None, bias_shift=0, pingpong=True,
                 gemm_bias=None, b_transposed=False, c_transposed=False):
    """The commands a compiler emits for ``C = requant(A @ B [+ bias])``:
    output tiles of ``R x C``, K in chunks of ``KT`` accumulated in the C
    buffer, A/B halves alternating (ping-pong) so loads overlap the array,
    C halves alternating per output tile. Without ``pingpong`` every load
    reuses the same words, so only the sequencer's hazard check keeps a load
    from overwriting operands the array is still reading. ``gemm_bias`` uses
    the GEMM's own BIAS flag on the last K chunk (as the compiler does);
    ``b_transposed``/``c_transposed``: memory holds B^T (N x K) / C^T (N x M),
    as for an InnerProduct layer's X and Y."""
    cmds = []
    half = 0
    for tile, (i0, j0) in enumerate((i, j) for i in range(0, M, R) for j in range(0, N, C)):
        mt, nt = min(R, M - i0), min(C, N - j0)
        c_off = (tile % 2) * R * C if pingpong else 0
        if bias is not None:
            # C[i][j] = bias[i0 + i] << bias_shift: C^T is nt copies of the
            # bias slice, i.e. memory rows at stride 0.
            cmds.append(encode(Opcode.DMA_LOAD, func=Buffer.C, flags=Flag.TRANSPOSE_B,
                               addr=bias + 2 * i0, stride=0, rows=mt, cols=nt,
                               offset=c_off, shift=bias_shift))
        for k0 in range(0, K, KT):
            kt = min(KT, K - k0)
            a_off, b_off = half * KT * R, half * KT * C
            half ^= pingpong
            cmds.append(encode(Opcode.DMA_LOAD, func=Buffer.A, addr=a + 2 * (i0 * K + k0),
                               stride=2 * K, rows=mt, cols=kt, offset=a_off))
            if b_transposed:
                cmds.append(encode(Opcode.DMA_LOAD, func=Buffer.B, flags=Flag.TRANSPOSE_B,
                                   addr=b + 2 * (j0 * K + k0), stride=2 * K, rows=kt, cols=nt,
                                   offset=b_off))
            else:
                cmds.append(encode(Opcode.DMA_LOAD, func=Buffer.B, addr=b + 2 * (k0 * N + j0),
                                   stride=2 * N, rows=kt, cols=nt, offset=b_off))
            accumulate = k0 > 0 or bias is not None
            flags = Flag.ACCUMULATE if accumulate else 0
            extra = {}
            if gemm_bias is not None and k0 + kt == K:
                flags |= Flag.BIAS
                extra["bias_addr"] = gemm_bias + 2 * i0
            cmds.append(encode(Opcode.GEMM, a_offset=a_off, b_offset=b_off, c_offset=c_off,
                               m=mt, n=nt, k=kt, flags=flags, **extra))
        if c_transposed:
            cmds.append(encode(Opcode.DMA_STORE, func=Buffer.C, flags=Flag.TRANSPOSE_B,
                               addr=c + 2 * (j0 * M + i0), stride=2 * M, rows=mt, cols=nt,
                               offset=c_off, shift=shift))
        else:
            cmds.append(encode(Opcode.DMA_STORE, func=Buffer.C, addr=c + 2 * (i0 * N + j0),
                               stride=2 * N, rows=mt, cols=nt, offset=c_off, shift=shift))
    return cmds


class Bench:
    """Sequencer + AxiMaster + AxiRam; memory contents readable after the run."""

    def __init__(self, image, *, latency=24, stall_rate=0.25, **eltwise):
        self.dut = Sequencer(rows=R, cols=C, data_width=DW, acc_width=AW,
                             a_depth=2 * KT, b_depth=2 * KT, c_depth=2 * R, **eltwise)
        self.master = AxiMaster(max_outstanding=4)
        ram = AxiRam(size=MEM_BYTES, latency=latency, stall_rate=stall_rate,
                     init=[int(w) for w in image])
        # Elaborated here so the test can read the RAM's Memory afterwards.
        ram_module = ram.elaborate(None)
        self.ram_mem = ram_module.submodules.mem
        self.top = Module()
        self.top.submodules.dut = self.dut
        self.top.submodules.master = self.master
        self.top.submodules.ram = ram_module
        wiring.connect(self.top, self.dut.mem, self.master.bus)
        wiring.connect(self.top, self.master.axi, ram.axi)
        self.totals = {}
        self.cycles = 0
        self.bad_commands = 0

    def run(self, words, *, name, rng, host=None, setup=None, deadline=200_000):
        dut = self.dut
        image = np.zeros(MEM_BYTES // 4, dtype=np.uint32)
        done = []

        async def feed(ctx):
            if setup is not None:
                await setup(ctx)
            stalls = Stalls(rng, 0.2)
            for word in words:
                await stream_put(ctx, dut.commands, word, stalls=stalls)

        async def watch(ctx):
            # Counts every counter increment from the first cycle to END.
            fields = ("busy", "macs", "array_stall", "mem_stall", "mem_read_bytes",
                      "mem_write_bytes", "commands_done")
            totals = dict.fromkeys(fields, 0)
            cycles = bad = overlap = 0
            while True:
                # Sampled at the clock edge, so inputs other testbenches set
                # during the cycle (host_resume) count as the logic saw them.
                _, _, counters, bad_command, dma_busy, array_busy, end = await ctx.tick().sample(
                    dut.counters, dut.bad_command, dut.dma_busy, dut.array_busy, dut.end)
                cycles += 1
                for f in fields:
                    totals[f] += int(getattr(counters, f))
                bad += bad_command
                overlap += dma_busy & array_busy
                if end:
                    break
            self.totals, self.cycles, self.bad_commands = totals, cycles, bad
            self.overlap_cycles = overlap
            for i in range(len(image)):
                image[i] = ctx.get(self.ram_mem.data[i])
            done.append(True)

        async def serve_host(ctx):
            # Beside the watcher, so the counters are summed while the host works.
            while True:
                await ctx.tick()
                if ctx.get(dut.host_wait):
                    await host(ctx)

        simulate(self.top, feed, watch, name=name, deadline_cycles=deadline,
                 background=[serve_host] if host is not None else [])
        assert done
        return image


def random_problem(rng, M, N, K, scale=2**15):
    a = rng.integers(-scale, scale, (M, K), dtype=np.int64)
    b = rng.integers(-scale, scale, (K, N), dtype=np.int64)
    return a, b


def layout(M, N, K):
    a_addr = 0
    b_addr = a_addr + 2 * M * K
    c_addr = b_addr + 2 * K * N
    bias_addr = c_addr + 2 * M * N
    assert bias_addr + 2 * M + 64 <= MEM_BYTES
    return a_addr, b_addr, c_addr, bias_addr


def pack(values):
    values = np.asarray(values, dtype=np.int16).ravel()
    if len(values) % 2:
        values = np.append(values, np.int16(0))
    return values.view(np.uint32)


def image_for(rng, parts):
    image = rng.integers(0, 2**32, MEM_BYTES // 4, dtype=np.uint64).astype(np.uint32)
    for addr, values in parts:
        words = pack(values)
        image[addr // 4:addr // 4 + len(words)] = words
    return image


@pytest.mark.parametrize("M,N,K,shift,pingpong", [
    (4, 4, 8, 15, True),        # one tile, one GEMM
    (3, 2, 6, 10, True),        # partial tile: m < rows, n < cols, k < rows
    (9, 10, 20, 16, True),      # 3 x 3 output tiles, K split 8 + 8 + 4
    (5, 6, 16, 16, False),      # every load into the words the last GEMM read
])
def test_sequencer_gemm_requant(M, N, K, shift, pingpong):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    a, b = random_problem(rng, M, N, K)
    a_addr, b_addr, c_addr, _ = layout(M, N, K)
    image = image_for(rng, [(a_addr, a), (b_addr, b)])
    words = [w for cmd in gemm_program(M, N, K, a=a_addr, b=b_addr, c=c_addr, shift=shift,
                                       pingpong=pingpong) for w in cmd]
    words += encode(Opcode.SYNC, layer=3, stage=1) + encode(Opcode.END, flags=Flag.LAST)
    bench = Bench(image)
    result = bench.run(words, name=f"sequencer_gemm_{M}x{N}x{K}_{pingpong}", rng=rng)

    expected = requantize(gemm(a, b, AW), shift, Format(DW, 0))
    c_words = pack(expected)
    got = result[c_addr // 4:c_addr // 4 + len(c_words)]
    np.testing.assert_array_equal(got.view(np.int16)[:M * N].reshape(M, N), expected)
    assert (got == c_words).all()
    # Everything else in memory is as it was.
    outside = np.ones(len(image), dtype=bool)
    outside[c_addr // 4:c_addr // 4 + len(c_words)] = False
    assert (result[outside] == image[outside]).all()

    totals = bench.totals
    assert totals["macs"] == M * N * K
    assert bench.bad_commands == 0
    n_commands = len(words) // 8
    assert totals["commands_done"] == n_commands
    read_bytes = sum(4 * math.ceil(kt / 2) * mt + 4 * math.ceil(nt / 2) * kt
                     for mt in _chunks(M, R) for nt in _chunks(N, C) for kt in _chunks(K, KT))
    assert totals["mem_read_bytes"] == read_bytes
    assert totals["mem_write_bytes"] == 2 * M * N
    if pingpong and K > KT:
        assert bench.overlap_cycles > 0, "loads never overlapped the array"
    utilisation = totals["macs"] / (R * C * bench.cycles)
    print(f"{M}x{N}x{K}: {bench.cycles} cycles, array utilisation {utilisation:.3f}, "
          f"busy {totals['busy']}, array stall {totals['array_stall']}, "
          f"mem stall {totals['mem_stall']}, DMA/array overlap {bench.overlap_cycles}")


def _chunks(total, size):
    return [min(size, total - i) for i in range(0, total, size)]


def test_sequencer_bias_and_illegal_commands():
    """A bias loaded into C before accumulating GEMMs; illegal commands in the
    stream are flagged once each and skipped without disturbing the result."""
    M, N, K, shift, bias_shift = 6, 4, 12, 14, 8
    rng = np.random.default_rng(7)
    a, b = random_problem(rng, M, N, K, scale=2**12)
    bias = rng.integers(-2**15, 2**15, M, dtype=np.int64)
    a_addr, b_addr, c_addr, bias_addr = layout(M, N, K)
    image = image_for(rng, [(a_addr, a), (b_addr, b), (bias_addr, bias)])
    program = gemm_program(M, N, K, a=a_addr, b=b_addr, c=c_addr, shift=shift,
                           bias=bias_addr, bias_shift=bias_shift)
    illegal = [
        [0x7F] + [0] * 7,                                            # unknown opcode
        encode(Opcode.GEMM, m=R + 1, n=1, k=1),                      # m > rows
        encode(Opcode.GEMM, m=1, n=1, k=1, flags=Flag.BIAS, bias_addr=2),   # misaligned
        encode(Opcode.DMA_LOAD, func=Buffer.A, flags=Flag.IM2COL, rows=1, cols=2),
        encode(Opcode.DMA_LOAD, func=Buffer.B, rows=1, cols=2, offset=1),   # not a word
        encode(Opcode.POOL_FWD),                                     # no pool engine
        encode(Opcode.NOP)[:1] + [1 << 20] + [0] * 6,                # reserved bits
    ]
    for i, cmd in enumerate(illegal):
        program.insert(1 + 3 * i, cmd)
    words = [w for cmd in program for w in cmd] + encode(Opcode.END)
    bench = Bench(image, latency=8, stall_rate=0.4)
    result = bench.run(words, name="sequencer_bias_illegal", rng=rng)

    acc = wrap(gemm(a, b, AW) + (bias << bias_shift)[:, None], AW)
    expected = requantize(acc, shift, Format(DW, 0))
    got = result[c_addr // 4:c_addr // 4 + M * N // 2].view(np.int16).reshape(M, N)
    np.testing.assert_array_equal(got, expected)
    assert bench.bad_commands == len(illegal)
    assert bench.totals["commands_done"] == len(words) // 8 - len(illegal)


def test_sequencer_inner_product_layout():
    """The compiler's InnerProduct forward: Y^T = W @ X^T + bias with X (N x K)
    and Y (N x M) row-major, so B is loaded and C stored transposed, and the
    bias (in the accumulator's format) comes with the GEMM's BIAS flag."""
    M, N, K, shift = 8, 6, 12, 13
    rng = np.random.default_rng(5)
    w, x_t = random_problem(rng, M, N, K, scale=2**12)
    x = x_t.T.copy()                                   # memory holds X = B^T
    bias = rng.integers(-2**15, 2**15, M, dtype=np.int64)
    a_addr, x_addr, y_addr, bias_addr = layout(M, N, K)
    image = image_for(rng, [(a_addr, w), (x_addr, x), (bias_addr, bias)])
    program = gemm_program(M, N, K, a=a_addr, b=x_addr, c=y_addr, shift=shift,
                           gemm_bias=bias_addr, b_transposed=True, c_transposed=True)
    words = [w_ for cmd in program for w_ in cmd] + encode(Opcode.END)
    bench = Bench(image, latency=6, stall_rate=0.3)
    result = bench.run(words, name="sequencer_inner_product", rng=rng)

    acc = wrap(gemm(w, x_t, AW) + bias[:, None], AW)
    expected_y = requantize(acc, shift, Format(DW, 0)).T          # N x M
    got = result[y_addr // 4:y_addr // 4 + M * N // 2].view(np.int16).reshape(N, M)
    np.testing.assert_array_equal(got, expected_y)
    assert bench.totals["macs"] == M * N * K
    assert bench.totals["commands_done"] == len(words) // 8


def test_sequencer_host_handoff():
    """HOST waits for the units, raises host_wait and resumes on host_resume;
    the host changes memory meanwhile (as it would write a batch's inputs)."""
    M, N, K, shift = 4, 4, 4, 12
    rng = np.random.default_rng(11)
    a, b = random_problem(rng, M, N, K)
    a2 = rng.integers(-2**15, 2**15, (M, K), dtype=np.int64)
    a_addr, b_addr, c_addr, _ = layout(M, N, K)
    c2_addr = c_addr + 64
    image = image_for(rng, [(a_addr, a), (b_addr, b)])
    first = gemm_program(M, N, K, a=a_addr, b=b_addr, c=c_addr, shift=shift)
    second = gemm_program(M, N, K, a=a_addr, b=b_addr, c=c2_addr, shift=shift)
    words = [w for cmd in first for w in cmd]
    words += encode(Opcode.HOST, func=HostOp.INPUT, addr=a_addr, count=2 * M * K)
    words += [w for cmd in second for w in cmd] + encode(Opcode.END)
    bench = Bench(image, latency=4, stall_rate=0.0)
    handoffs = []

    async def host(ctx):
        handoffs.append(True)
        assert not ctx.get(bench.dut.end)
        # The host writes new inputs while the sequencer waits.
        for i, word in enumerate(pack(a2)):
            ctx.set(bench.ram_mem.data[a_addr // 4 + i], int(word))
        for _ in range(5):
            await ctx.tick()
            assert ctx.get(bench.dut.host_wait)
        ctx.set(bench.dut.host_resume, 1)
        await ctx.tick()
        ctx.set(bench.dut.host_resume, 0)

    result = bench.run(words, name="sequencer_host", rng=rng, host=host)
    assert handoffs == [True]
    for addr, lhs in ((c_addr, a), (c2_addr, a2)):
        expected = requantize(gemm(lhs, b, AW), shift, Format(DW, 0))
        got = result[addr // 4:addr // 4 + M * N // 2].view(np.int16).reshape(M, N)
        np.testing.assert_array_equal(got, expected)


def test_sequencer_rejects_bad_parameters():
    with pytest.raises(ValueError, match="rows"):
        Sequencer(rows=0, cols=4)
    with pytest.raises(ValueError, match="12"):
        Sequencer(rows=4, cols=4, data_width=12)
    with pytest.raises(ValueError, match="C depth"):
        Sequencer(rows=4, cols=4, c_depth=1)


# ---- ELTWISE ---------------------------------------------------------------

SLOPE_FMT = Format(25, 16)        # the ISA's slope: negative_slope * 2**16
ACT_IN_FRAC, ACT_AUX_FRAC = 12, 14


def _eltwise_case(rng, count):
    """Operands and the model's results for every ELTWISE func; returns
    ``(regions, commands, expected)`` with ``expected`` ``{dst: values}``."""
    x = rng.integers(-2**15, 2**15, count)
    dy = rng.integers(-2**15, 2**15, count)
    # Sigmoid output in [0, 1], TanH output in [-1, 1] (the y of backward).
    y_sig = rng.integers(0, (1 << ACT_AUX_FRAC) + 1, count)
    y_tanh = rng.integers(-(1 << ACT_AUX_FRAC), (1 << ACT_AUX_FRAC) + 1, count)
    slope = int(rng.integers(1, 1 << 16))          # a negative_slope in (0, 1)
    f = 9                                          # ReLU's frac: any, only ``shift`` matters
    inputs = {"x": x, "dy": dy, "y_sig": y_sig, "y_tanh": y_tanh, "inplace": dy.copy()}
    addr, regions = 0, {}
    for name, values in inputs.items():
        regions[name] = addr
        addr += 2 * count + 4 * int(rng.integers(1, 4))      # word aligned, not burst aligned
    outs = ["relu", "relu_bwd", "relu_bwd_right", "sig", "tanh", "sig_bwd", "tanh_bwd", "add",
            "requant", "zero"]
    for name in outs:
        regions[name] = addr
        addr += 2 * count + 4
    assert addr <= MEM_BYTES
    fmt = lambda frac: Format(16, frac)     # noqa: E731
    r = regions
    E = EltwiseOp
    table = [
        # func, src, aux, dst, shift, slope, expected
        (E.RELU_FWD, r["x"], 0, r["relu"], 2, slope,
         relu_forward(x, f, slope, SLOPE_FMT, fmt(f - 2))),
        (E.RELU_BWD, r["dy"], r["x"], r["relu_bwd"], -3, slope,
         relu_backward(dy, x, f, slope, SLOPE_FMT, fmt(f + 3))),
        # A right shift rounds half to even (an odd dy halves to a tie).
        (E.RELU_BWD, r["dy"], r["x"], r["relu_bwd_right"], 1, 0,
         relu_backward(dy, x, f, 0, SLOPE_FMT, fmt(f - 1))),
        (E.SIGMOID_FWD, r["x"], 0, r["sig"], ACT_IN_FRAC - 15, 0,
         sigmoid_forward(x, fmt(ACT_IN_FRAC), fmt(15))),
        (E.TANH_FWD, r["x"], 0, r["tanh"], ACT_IN_FRAC - 14, 0,
         tanh_forward(x, fmt(ACT_IN_FRAC), fmt(14))),
        (E.SIGMOID_BWD, r["dy"], r["y_sig"], r["sig_bwd"], 1, 0,
         sigmoid_backward(dy, y_sig, f, fmt(ACT_AUX_FRAC), fmt(f - 1))),
        (E.TANH_BWD, r["dy"], r["y_tanh"], r["tanh_bwd"], 0, 0,
         tanh_backward(dy, y_tanh, f, fmt(ACT_AUX_FRAC), fmt(f))),
        (E.ADD, r["dy"], r["x"], r["add"], 1, 0, requantize(dy + x, 1, fmt(0))),
        (E.REQUANT, r["x"], 0, r["requant"], -2, 0, requantize(x, -2, fmt(0))),
        (E.ZERO, 0, 0, r["zero"], 0, 0, np.zeros(count, dtype=np.int64)),
        # In place (Caffe's in-place ReLU): dst == src.
        (E.RELU_FWD, r["inplace"], 0, r["inplace"], 0, 0,
         relu_forward(dy, f, 0, SLOPE_FMT, fmt(f))),
    ]
    commands, expected = [], {}
    for func, src, aux, dst, shift, slp, want in table:
        commands.append(encode(Opcode.ELTWISE, func=func, src=src, aux=aux, dst=dst,
                               count=count, shift=shift, slope=slp, layer=2, stage=1))
        expected[dst] = want
    return [(regions[n], v) for n, v in inputs.items()], commands, expected


def _illegal_eltwise(count, src, dst):
    base = dict(func=EltwiseOp.RELU_FWD, src=src, dst=dst, count=count)
    wrong_unit = encode(Opcode.ELTWISE, **base)
    wrong_unit[0] = (wrong_unit[0] & ~0xF00) | (Unit.POOL << 8)
    reserved = encode(Opcode.ELTWISE, **base)
    reserved[6] |= 1 << 8                                   # above the 8-bit shift
    return [
        encode(Opcode.ELTWISE, **{**base, "count": count + 1}),          # odd count
        encode(Opcode.ELTWISE, **{**base, "count": 0}),
        encode(Opcode.ELTWISE, **{**base, "src": src + 2}),              # not word aligned
        encode(Opcode.ELTWISE, **{**base, "func": 10}),                  # no such op
        encode(Opcode.ELTWISE, **{**base, "func": EltwiseOp.SIGMOID_FWD, "slope": 5}),
        encode(Opcode.ELTWISE, **{**base, "slope": 1 << 24}),            # beyond Q8.16
        encode(Opcode.ELTWISE, **{**base, "shift": -100}),               # left beyond the core
        encode(Opcode.ELTWISE, **{**base, "dst": src + 4}),              # partial overlap
        encode(Opcode.ELTWISE, **{**base, "flags": Flag.ACCUMULATE}),
        wrong_unit,
        reserved,
    ]


@pytest.mark.parametrize("chunk,count", [(8, 38), (1, 6)])
def test_sequencer_eltwise_ops(chunk, count):
    """Every ELTWISE func on random int16 tensors (several bursts each, the
    last one partial), word for word against ``fixedpoint.activation``;
    illegal commands in between are flagged and change nothing."""
    rng = np.random.default_rng(21 + chunk)
    inputs, commands, expected = _eltwise_case(rng, count)
    illegal = _illegal_eltwise(count, inputs[0][0], max(expected))
    program = []
    for i, cmd in enumerate(commands):
        program.append(cmd)
        program += illegal[i::len(commands)]
    words = [w for cmd in program for w in cmd] + encode(Opcode.END)
    image = image_for(rng, inputs)
    bench = Bench(image, latency=6, stall_rate=0.3, eltwise_in_frac=ACT_IN_FRAC,
                  eltwise_aux_frac=ACT_AUX_FRAC, eltwise_chunk=chunk)
    result = bench.run(words, name=f"sequencer_eltwise_{chunk}", rng=rng)

    touched = np.zeros(len(image), dtype=bool)
    for dst, want in expected.items():
        got = result[dst // 4:dst // 4 + count // 2]
        np.testing.assert_array_equal(got.view(np.int16).astype(np.int64), want,
                                      err_msg=f"ELTWISE result at 0x{dst:x}")
        touched[dst // 4:dst // 4 + count // 2] = True
    assert (result[~touched] == image[~touched]).all()
    assert bench.bad_commands == len(illegal)
    assert bench.totals["commands_done"] == len(commands) + 1
    two = (EltwiseOp.RELU_BWD, EltwiseOp.SIGMOID_BWD, EltwiseOp.TANH_BWD, EltwiseOp.ADD)
    funcs = [cmd[0] >> 24 for cmd in commands]
    reads = sum(2 if f in two else 0 if f == EltwiseOp.ZERO else 1 for f in funcs)
    assert bench.totals["mem_read_bytes"] == reads * 2 * count
    assert bench.totals["mem_write_bytes"] == len(commands) * 2 * count
    print(f"ELTWISE x{len(commands)} of {count}: {bench.cycles} cycles")


def test_sequencer_without_tables_refuses_sigmoid_and_tanh():
    """A build for a net with no Sigmoid/TanH has no tables: their four
    functions are bad commands that change nothing; the others still run."""
    count = 6
    rng = np.random.default_rng(5)
    inputs, commands, expected = _eltwise_case(rng, count)
    tabled = (EltwiseOp.SIGMOID_FWD, EltwiseOp.SIGMOID_BWD, EltwiseOp.TANH_FWD,
              EltwiseOp.TANH_BWD)
    refused = [cmd[0] >> 24 in tabled for cmd in commands]
    assert sum(refused) == 4
    dsts = list(expected)
    words = [w for cmd in commands for w in cmd] + encode(Opcode.END)
    image = image_for(rng, inputs)
    bench = Bench(image, latency=3, stall_rate=0.2, eltwise_tables=())
    result = bench.run(words, name="sequencer_eltwise_no_tables", rng=rng)
    touched = np.zeros(len(image), dtype=bool)
    for dst, was_refused in zip(dsts, refused):
        if was_refused:
            continue
        got = result[dst // 4:dst // 4 + count // 2]
        np.testing.assert_array_equal(got.view(np.int16).astype(np.int64), expected[dst],
                                      err_msg=f"ELTWISE result at 0x{dst:x}")
        touched[dst // 4:dst // 4 + count // 2] = True
    assert (result[~touched] == image[~touched]).all()
    assert bench.bad_commands == 4


def test_sequencer_eltwise_far_right_shifts():
    """Requantisation by shifts up to the engine's limit (total 63, beyond
    the core's 48-bit result), ties included: round half to even, then 0."""
    count = 8
    rng = np.random.default_rng(9)
    x = rng.integers(-2**15, 2**15, count)
    x[:4] = [3 << 13, -(3 << 13), 1 << 13, -(1 << 13)]     # ties at shift 14
    inputs = [(0, x)]
    shifts = [14, 16, 30, 47]
    commands, expected = [], {}
    for i, shift in enumerate(shifts):
        dst = 0x100 + 0x40 * i
        commands.append(encode(Opcode.ELTWISE, func=EltwiseOp.REQUANT, src=0, dst=dst,
                               count=count, shift=shift, layer=1, stage=1))
        expected[dst] = requantize(x, shift, Format(16, 0))
    assert any(expected[0x100] != 0) and not any(expected[0x100 + 0x40 * 3])
    words = [w for cmd in commands for w in cmd] + encode(Opcode.END)
    bench = Bench(image_for(rng, inputs), latency=3, stall_rate=0.2)
    result = bench.run(words, name="sequencer_eltwise_far_shifts", rng=rng)
    for dst, want in expected.items():
        got = result[dst // 4:dst // 4 + count // 2]
        np.testing.assert_array_equal(got.view(np.int16).astype(np.int64), want,
                                      err_msg=f"REQUANT into 0x{dst:x}")
    assert bench.bad_commands == 0


def test_sequencer_gemm_then_relu():
    """A layer's forward as the compiler emits it: GEMM tiles stored by the
    DMA, then an in-place ReLU over the stored output (ELTWISE waits for the
    stores, the next layer's loads wait for the ELTWISE)."""
    M, N, K, shift = 8, 8, 8, 15
    rng = np.random.default_rng(3)
    a, b = random_problem(rng, M, N, K)
    a_addr, b_addr, c_addr, _ = layout(M, N, K)
    d_addr = c_addr + 2 * M * N + 64
    image = image_for(rng, [(a_addr, a), (b_addr, b)])
    slope = 6554                                        # negative_slope 0.1
    words = [w for cmd in gemm_program(M, N, K, a=a_addr, b=b_addr, c=c_addr, shift=shift)
             for w in cmd]
    words += encode(Opcode.ELTWISE, func=EltwiseOp.RELU_FWD, src=c_addr, dst=c_addr,
                    count=M * N, slope=slope, shift=1)
    # The next layer reads the ReLU output: C @ B of the activations.
    words += [w for cmd in gemm_program(M, N, N, a=c_addr, b=b_addr, c=d_addr, shift=shift)
              for w in cmd]
    words += encode(Opcode.END)
    bench = Bench(image, latency=10, stall_rate=0.2, eltwise_chunk=16)
    result = bench.run(words, name="sequencer_gemm_relu", rng=rng)

    y = requantize(gemm(a, b, AW), shift, Format(DW, 0))
    act = relu_forward(y, 0, slope, SLOPE_FMT, Format(DW, -1))
    out = requantize(gemm(act, b, AW), shift, Format(DW, 0))
    for addr, want in ((c_addr, act), (d_addr, out)):
        got = result[addr // 4:addr // 4 + M * N // 2].view(np.int16).reshape(M, N)
        np.testing.assert_array_equal(got, want)
    assert bench.bad_commands == 0
    assert bench.totals["commands_done"] == len(words) // 8


def test_sequencer_rejects_bad_eltwise_parameters():
    with pytest.raises(ValueError, match="input frac"):
        Sequencer(rows=4, cols=4, eltwise_in_frac=2)
    with pytest.raises(ValueError, match="chunk length"):
        Sequencer(rows=4, cols=4, eltwise_chunk=300)


def test_sequencer_8_bit_build_has_no_eltwise():
    """The ELTWISE engine works on int16 elements: an 8-bit build flags it."""
    dut = Sequencer(rows=2, cols=2, data_width=8)
    assert dut.eltwise is None
    words = encode(Opcode.ELTWISE, func=EltwiseOp.RELU_FWD, src=0, dst=64, count=2)
    words += encode(Opcode.END)
    seen = []

    async def feed(ctx):
        for word in words:
            await stream_put(ctx, dut.commands, word)

    async def watch(ctx):
        bad = 0
        while not ctx.get(dut.end):
            bad += ctx.get(dut.bad_command)
            assert not ctx.get(dut.mem.cmd.valid)
            await ctx.tick()
        seen.append(bad)

    simulate(dut, feed, watch, name="sequencer_no_eltwise", deadline_cycles=200)
    assert seen == [1]


# ---- SET_GEOMETRY + POOL_FWD ------------------------------------------------

#: LeNet's pooling (2x2, stride 2) on pool2's 8x8 maps, and an odd geometry:
#: 7x5 planes (odd plane sizes put channels on half words), 3x3 stride 2
#: pad 1 (Caffe's padded ceil-mode sizes: AVE divides by 4, 6 and 9).
LENET = PoolGeometry(height=8, width=8, kernel=2, stride=2)
ODD = PoolGeometry(height=7, width=5, kernel=3, stride=2, pad=1)
MAX_ONLY = PoolGeometry(height=4, width=4, kernel=2, stride=2, kinds=(PoolKind.MAX,))
NINE = PoolGeometry(height=5, width=5, kernel=2, stride=2, kinds=(PoolKind.MAX,))   # 3x3 out
GEOMETRIES = (LENET, ODD, MAX_ONLY, NINE)


def set_geometry(g, *, channels, images, **override):
    fields = dict(unit=Unit.POOL, channels=channels, images=images, group=1,
                  height=g.height, width=g.width, kernel_h=g.kernel[0], kernel_w=g.kernel[1],
                  stride_h=g.stride[0], stride_w=g.stride[1], pad_h=g.pad[0], pad_w=g.pad[1],
                  out_h=g.out_size[0], out_w=g.out_size[1])
    fields.update(override)
    return encode(Opcode.SET_GEOMETRY, **fields)


def expected_pool(x, g, kind, shift):
    """``(values, index)`` of every image and channel of ``x`` (N, C, H, W)
    from the model, requantised by ``shift`` as the engine does."""
    fmt = Format(DW, max(-shift, 0))
    values, index = [], []
    for image in x:
        if kind == PoolKind.MAX:
            v, i = max_pool(image, g.kernel, g.stride, g.pad)
        else:
            v, i = ave_pool(image, g.kernel, g.stride, g.pad, bits=DW), None
        values.append(requantize(v, max(shift, 0), fmt))
        index.append(i)
    return np.array(values), index


def place(image, addr, values, dtype):
    """Write ``values`` as ``dtype`` elements at byte ``addr`` of a word image."""
    raw = image.view(np.uint8)
    data = np.asarray(values).astype(dtype).ravel().view(np.uint8)
    raw[addr:addr + len(data)] = data


@pytest.mark.parametrize("g,kind,tile,shift,training", [
    # (total C, N, c0, channels, n0, images)
    (LENET, PoolKind.MAX, (6, 2, 2, 3, 0, 2), 0, True),
    (LENET, PoolKind.AVE, (4, 2, 0, 4, 1, 1), 1, False),
    (ODD, PoolKind.MAX, (3, 2, 1, 2, 0, 2), -1, True),
    (ODD, PoolKind.AVE, (3, 2, 0, 3, 0, 2), 2, False),
], ids=["lenet-max", "lenet-ave", "odd-max", "odd-ave"])
def test_sequencer_pool_forward(g, kind, tile, shift, training):
    """SET_GEOMETRY then POOL_FWD of a channel/image tile of an NCHW map in
    tensor memory; memory afterwards equals the model's pooled tile (and the
    MAX indices, one byte each, when training) and nothing else changed."""
    total, batch, c0, channels, n0, images = tile
    rng = np.random.default_rng(hash((g.height, int(kind), shift)) % 2**32)
    x = rng.integers(-2**15, 2**15, (batch, total, g.height, g.width), dtype=np.int64)
    oh, ow = g.out_size
    src, dst, idx = 0x100, 0x1000, 0x2000
    image = image_for(rng, [(src, x)])
    words = set_geometry(g, channels=total, images=batch)
    words += encode(Opcode.POOL_FWD, func=kind, src=src, dst=dst,
                    index_addr=idx if kind == PoolKind.MAX else 0, c0=c0, channels=channels,
                    n0=n0, images=images, shift=shift, flags=Flag.TRAINING if training else 0)
    words += encode(Opcode.SYNC) + encode(Opcode.END)
    bench = Bench(image, latency=12, stall_rate=0.3, pool_geometries=GEOMETRIES, pool_chunk=8)
    result = bench.run(words, name=f"sequencer_pool_{kind.name}_{g.height}x{g.width}", rng=rng)

    values, index = expected_pool(x, g, kind, shift)
    want = image.copy()
    for n in range(n0, n0 + images):
        for c in range(c0, c0 + channels):
            plane = (n * total + c) * oh * ow
            place(want, dst + 2 * plane, values[n, c], np.int16)
            if kind == PoolKind.MAX and training:
                place(want, idx + plane, index[n][c], np.uint8)
    got_values = result.view(np.uint8)[dst:dst + 2 * batch * total * oh * ow].view(np.int16)
    np.testing.assert_array_equal(
        got_values.reshape(batch, total, oh, ow)[n0:n0 + images, c0:c0 + channels],
        values[n0:n0 + images, c0:c0 + channels])
    assert (result == want).all(), "memory outside the pooled tile changed"
    assert bench.bad_commands == 0
    assert bench.totals["commands_done"] == len(words) // 8
    outs = images * channels * oh * ow
    assert bench.totals["mem_write_bytes"] == 2 * outs + (outs if kind == PoolKind.MAX
                                                          and training else 0)
    print(f"POOL_FWD {kind.name} {g.height}x{g.width} x{images * channels}: "
          f"{bench.cycles} cycles for {images * channels * g.plane} pixels")


def test_sequencer_pool_illegal_geometry():
    """Unsupported geometries and POOL_FWDs the engine cannot run are flagged
    and skipped, leave no stale geometry behind, and a good pair after them
    still runs."""
    rng = np.random.default_rng(21)
    g, total, batch = ODD, 2, 1
    x = rng.integers(-2**15, 2**15, (batch, total, g.height, g.width), dtype=np.int64)
    src, dst, dst2, idx = 0x100, 0x1000, 0x1800, 0x2000
    image = image_for(rng, [(src, x)])

    def pool(**fields):
        return encode(Opcode.POOL_FWD, **dict(dict(func=PoolKind.AVE, src=src, dst=dst, c0=0,
                                                   channels=total, n0=0, images=1), **fields))
    program = [
        (pool(), True),                                                  # no geometry yet
        (set_geometry(g, channels=total, images=batch, pad_h=0), True),  # not built
        (pool(), True),                                  # the refused one left none behind
        (set_geometry(g, channels=total, images=batch, out_w=4), True),  # inconsistent sizes
        # The line buffer's geometry (for IM2COL) is legal and leaves the pool's alone.
        (set_geometry(g, channels=total, images=batch, unit=Unit.LINE_BUFFER), False),
        (set_geometry(g, channels=0, images=batch), True),
        (set_geometry(MAX_ONLY, channels=1, images=1), False),
        (pool(func=PoolKind.AVE, channels=1), True),     # a kind the geometry lacks
        (pool(func=PoolKind.MAX, channels=1), False),    # runs: x's first 16 elements
        (set_geometry(NINE, channels=2, images=1), False),
        (pool(func=PoolKind.MAX, channels=1), True),     # 9 outputs: ends on a half word
        (pool(func=PoolKind.MAX, flags=Flag.TRAINING,    # 18 index bytes: not whole words
              index_addr=idx), True),
        (pool(func=PoolKind.MAX, index_addr=idx, dst=dst2), False),   # inference: no indices
        (set_geometry(g, channels=total, images=batch), False),
        (pool(c0=1), True),                              # channels past the map's
        (pool(images=2), True),                          # images past the batch
        (pool(src=src + 2), True),                       # not word aligned
        (pool(shift=16), True),                          # shift out of range
        (pool(flags=Flag.BIAS), True),                   # a flag POOL_FWD lacks
        (pool(), False),
    ]
    words = [w for cmd, _ in program for w in cmd] + encode(Opcode.END)
    bench = Bench(image, latency=6, stall_rate=0.2, pool_geometries=GEOMETRIES, pool_chunk=8)
    result = bench.run(words, name="sequencer_pool_illegal", rng=rng)

    values, _ = expected_pool(x, g, PoolKind.AVE, 0)
    want = image.copy()
    # The MAX-only 4x4 POOL_FWD ran on x's first 16 elements: channel 0 of a
    # (1, 1, 4, 4) view.
    small = x.ravel()[:16].reshape(1, 1, 4, 4)
    small_values, _ = expected_pool(small, MAX_ONLY, PoolKind.MAX, 0)
    place(want, dst, small_values, np.int16)
    place(want, dst, values, np.int16)
    nine_values, _ = expected_pool(x.ravel()[:50].reshape(1, 2, 5, 5), NINE, PoolKind.MAX, 0)
    place(want, dst2, nine_values, np.int16)
    assert bench.bad_commands == sum(bad for _, bad in program)
    assert (result == want).all()


def test_sequencer_rejects_bad_pool_parameters():
    with pytest.raises(ValueError, match="Pad 2"):
        PoolGeometry(height=6, width=6, kernel=2, pad=2)
    with pytest.raises(ValueError, match="256"):
        PoolGeometry(height=20, width=20, kernel=17)
    with pytest.raises(ValueError, match="kinds"):
        PoolGeometry(height=6, width=6, kernel=2, kinds=("min",))
    with pytest.raises(ValueError, match="PoolGeometry"):
        Sequencer(rows=4, cols=4, pool_geometries=((6, 6, 2),))
    # Layers of one size share a line buffer, whatever their kinds.
    max_2x2, ave_2x2 = (PoolGeometry(height=8, width=8, kernel=2, stride=2, kinds=(kind,))
                        for kind in (PoolKind.MAX, PoolKind.AVE))
    assert Sequencer(rows=2, cols=2,
                     pool_geometries=(max_2x2, NINE, ave_2x2, LENET)).pool.geometries == (
        LENET, NINE)
    with pytest.raises(ValueError, match="chunk length"):
        Sequencer(rows=4, cols=4, pool_geometries=(LENET,), pool_chunk=0)
    # Pooling is int16, like ELTWISE: an 8-bit build has no pool engine.
    assert Sequencer(rows=2, cols=2, data_width=8, pool_geometries=(LENET,)).pool is None
    assert Sequencer(rows=2, cols=2, pool_geometries=(LENET,)).pool.geometries == (LENET,)
    # The plan's layer record gives the layer's geometry and kind.
    rec = {"pool": "AVE", "in_hw": [7, 5], "kernel": [3, 3], "stride": [2, 2], "pad": [1, 1]}
    assert PoolGeometry.from_layer(rec) == PoolGeometry(
        height=7, width=5, kernel=3, stride=2, pad=1, kinds=(PoolKind.AVE,))


@pytest.mark.parametrize("kind", [PoolKind.MAX, PoolKind.AVE], ids=["max", "ave"])
def test_sequencer_pool_backward_after_forward(kind):
    """POOL_FWD (writing MAX indices) then POOL_BWD of a channel/image tile
    through the sequencer: the whole memory afterwards equals the NumPy
    machine's after the same commands."""
    g, total, batch = ODD, 4, 2      # 2 of 4 channels: dx tiles end on words
    rng = np.random.default_rng(int(kind) + 77)
    x = rng.integers(-2**15, 2**15, (batch, total, g.height, g.width), dtype=np.int64)
    oh, ow = g.out_size
    dy = rng.integers(-2**12, 2**12, (batch, total, oh, ow), dtype=np.int64)
    src, dst, idx, dy_at, dx_at = 0x100, 0x1000, 0x2000, 0x2800, 0x3000
    image = image_for(rng, [(src, x), (dy_at, dy)])
    geometry = set_geometry(g, channels=total, images=batch)
    commands = [
        (Opcode.POOL_FWD, dict(func=kind, src=src, dst=dst, index_addr=idx, c0=0,
                               channels=total, n0=0, images=batch, shift=0,
                               flags=Flag.TRAINING)),
        (Opcode.SYNC, {}),
        (Opcode.POOL_BWD, dict(func=kind, src=dy_at, dst=dx_at,
                               index_addr=idx if kind == PoolKind.MAX else 0,
                               c0=0, channels=2, n0=0, images=batch, shift=1)),
        (Opcode.SYNC, {}), (Opcode.END, {}),
    ]
    words = geometry + [w for op, f in commands for w in encode(op, **f)]
    bench = Bench(image, latency=8, stall_rate=0.2, pool_geometries=GEOMETRIES, pool_chunk=8)
    result = bench.run(words, name=f"sequencer_pool_bwd_{kind.name}", rng=rng)

    from fecaffe_hw.runtime.isa import decode_stream
    from fecaffe_hw.sim.machine import Machine
    machine = Machine.__new__(Machine)          # the model's units, no plan needed
    machine.memory = image.copy().view(np.uint8)
    machine.pool_geometry, machine.executed = None, 0
    for op, fields in decode_stream(words):
        machine.execute(op, fields)
    assert bench.bad_commands == 0
    assert (result.view(np.uint8) == machine.memory).all()


# ---- training update: ACC_ADD, ACC_BIAS, SGD_UPDATE ------------------------------

GRAD_BITS = 24
#: CSR values on the sequencer's ports (formats of ``fixedpoint.sgd.SgdFormats``).
SGD_PORTS = dict(sgd_rate=int(0.01 * 2**20), sgd_momentum=int(0.9 * 2**17),
                 sgd_decay=int(5e-4 * 2**26), sgd_norm=norm_multiplier(2))
SEEDS = (0xCAFEF00D, 0x0BADC0DE)


def _get32(image, addr, count):
    return image.view(np.int32)[addr // 4:addr // 4 + count].astype(np.int64)


def _put32(image, addr, values):
    image[addr // 4:addr // 4 + len(values)] = np.asarray(values).astype(np.int32).view(np.uint32)


def _get16(image, addr, count):
    return image.view(np.uint8)[addr:addr + 2 * count].view(np.int16).astype(np.int64)


def _put16(image, addr, values):
    image.view(np.uint8)[addr:addr + 2 * len(values)] = \
        np.asarray(values).astype(np.int16).view(np.uint8)


def _update_program():
    """A training step's tail, with the expected memory computed by the model:
    GEMMs into both C halves, ACC_ADDs of each (one GEMM accumulating into a
    half an ACC_ADD is reading, one into the other half), an ACC_BIAS, two
    SGD_UPDATEs (the LFSR runs on), a HOST hand-off that reseeds, a third."""
    rng = np.random.default_rng(2024)
    a1, b = random_problem(rng, R, C, KT, scale=2**12)
    a2, _ = random_problem(rng, R, C, KT, scale=2**12)
    A1, A2, B = 0x000, 0x040, 0x080
    image = image_for(rng, [(A1, a1), (A2, a2), (B, b)])
    expected = image.copy()
    cmds = [encode(Opcode.DMA_LOAD, func=Buffer.A, addr=A1, stride=2 * KT, rows=R, cols=KT,
                   offset=0),
            encode(Opcode.DMA_LOAD, func=Buffer.A, addr=A2, stride=2 * KT, rows=R, cols=KT,
                   offset=KT * R),
            encode(Opcode.DMA_LOAD, func=Buffer.B, addr=B, stride=2 * C, rows=KT, cols=C,
                   offset=0)]
    c_half = {0: gemm(a1, b, AW), 1: gemm(a2, b, AW)}

    def g(a_half, c_word, accumulate=False):
        return encode(Opcode.GEMM, a_offset=a_half * KT * R, b_offset=0, c_offset=c_word * C,
                      m=R, n=C, k=KT, flags=Flag.ACCUMULATE if accumulate else 0)

    def acc_add(c_word, acc, *, addr, rows, cols, stride, shift):
        grads = np.stack([wrap(_get32(expected, addr + 4 * r * stride, cols), GRAD_BITS)
                          for r in range(rows)])
        new = update.acc_add(grads, acc[:rows, :cols], shift, GRAD_BITS)
        for r in range(rows):
            _put32(expected, addr + 4 * r * stride, new[r])
        return encode(Opcode.ACC_ADD, offset=c_word * C, grad_addr=addr, rows=rows, cols=cols,
                      stride=stride, shift=shift)

    cmds.append(g(0, 0))
    cmds.append(acc_add(0, c_half[0], addr=0x100, rows=R, cols=C, stride=6, shift=6))
    cmds.append(g(1, R))                          # other half: runs beside the ACC_ADD
    cmds.append(g(1, 0, accumulate=True))         # same half: waits for the ACC_ADD
    cmds.append(acc_add(R, c_half[1], addr=0x200, rows=R, cols=C, stride=C, shift=-1))
    cmds.append(acc_add(0, wrap(c_half[0] + c_half[1], AW), addr=0x300, rows=3, cols=3,
                        stride=5, shift=10))

    images, channels, positions = 2, 3, 5
    dy = rng.integers(-2**15, 2**15, (images, channels, positions))
    _put16(image, 0x400, dy.ravel())
    _put16(expected, 0x400, dy.ravel())
    grad = wrap(_get32(expected, 0x480, channels), GRAD_BITS)
    _put32(expected, 0x480, update.acc_bias(grad, dy, -3, GRAD_BITS))
    cmds.append(encode(Opcode.ACC_BIAS, src=0x400, grad_addr=0x480, channels=channels,
                       positions=positions, images=images, shift=-3))

    lfsr = Lfsr(SEEDS[0])
    sgd = [(0x800, 10, (12, 18, 20, 22), 256, 256), (0x900, 22, (14, 14, 10, 12), 384, 0),
           None, (0xA00, 8, (12, 18, 20, 22), 256, 512)]
    for step in sgd:
        if step is None:
            cmds.append(encode(Opcode.HOST, func=HostOp.INPUT))
            lfsr = Lfsr(SEEDS[1])
            continue
        base, count, (wf, hf, gf, df), lr_mult, decay_mult = step
        assert update.sgd_fracs_legal(weight_frac=wf, history_frac=hf, grad_frac=gf,
                                      diff_frac=df, grad_bits=GRAD_BITS)
        w_at, h_at, g_at = base, base + 0x40, base + 0x80
        grads = np.where(rng.random(count) < 0.2, rng.integers(-2**23, 2**23, count),
                         rng.integers(-2**16, 2**16, count))
        for mem in (image, expected):
            _put32(mem, g_at, grads)
        fields = dict(weight_frac=wf, history_frac=hf, grad_frac=gf, diff_frac=df,
                      lr_mult=lr_mult, decay_mult=decay_mult)
        w, h, z = update.sgd_update_command(
            _get16(expected, w_at, count), _get16(expected, h_at, count), grads,
            grad_bits=GRAD_BITS, rate=SGD_PORTS["sgd_rate"],
            momentum=SGD_PORTS["sgd_momentum"], decay=SGD_PORTS["sgd_decay"],
            norm_mul=SGD_PORTS["sgd_norm"], lfsr=lfsr, **fields)
        _put16(expected, w_at, w)
        _put16(expected, h_at, h)
        _put32(expected, g_at, z)
        cmds.append(encode(Opcode.SGD_UPDATE, weight_addr=w_at, history_addr=h_at,
                           grad_addr=g_at, count=count, **fields))
    return cmds, image, expected


def _illegal_updates():
    wrong_unit = encode(Opcode.ACC_BIAS, src=0, grad_addr=0x40, channels=1, positions=2,
                        images=1)
    wrong_unit[0] = (wrong_unit[0] & ~(0xF << 8)) | (Unit.DMA << 8)
    reserved = encode(Opcode.ACC_ADD, offset=0, grad_addr=0x40, rows=1, cols=1, stride=1)
    reserved[7] = 1                               # ACC_ADD has nothing in word 7
    sgd = dict(weight_addr=0x40, history_addr=0x80, grad_addr=0xC0, count=4, weight_frac=12,
               history_frac=18, grad_frac=20, diff_frac=22, lr_mult=256)
    return [
        wrong_unit, reserved,
        encode(Opcode.ACC_ADD, offset=2, grad_addr=0x40, rows=1, cols=2, stride=2),  # mid-word
        encode(Opcode.ACC_ADD, offset=R * C, grad_addr=0x40, rows=R + 1, cols=C,
               stride=C),                                                   # past C
        encode(Opcode.ACC_ADD, offset=0, grad_addr=0x40, rows=1, cols=C + 1, stride=8),
        encode(Opcode.ACC_BIAS, src=0, grad_addr=0x40, channels=0, positions=2, images=1),
        encode(Opcode.SGD_UPDATE, **{**sgd, "count": 5}),                   # odd count
        encode(Opcode.SGD_UPDATE, **{**sgd, "grad_addr": 0xC2}),            # not aligned
        encode(Opcode.SGD_UPDATE, **{**sgd, "flags": Flag.ACCUMULATE}),
        encode(Opcode.SGD_UPDATE, **{**sgd, "grad_frac": 60}),              # fracs illegal
    ]


def test_sequencer_training_update():
    """ACC_ADD after GEMMs (and beside one), ACC_BIAS and SGD_UPDATEs through
    the sequencer, the SGD constants and LFSR seeds driven on its ports, the
    whole memory compared with ``fixedpoint.update``; illegal commands among
    them flagged and skipped."""
    cmds, image, expected = _update_program()
    illegal = _illegal_updates()
    program = list(cmds)
    for i, cmd in enumerate(illegal):
        program.insert(2 + 2 * i, cmd)
    words = [w for cmd in program for w in cmd] + encode(Opcode.END)
    bench = Bench(image, latency=8, stall_rate=0.3, training=True, grad_bits=GRAD_BITS,
                  update_chunk=8)
    dut = bench.dut

    async def setup(ctx):
        for name, value in SGD_PORTS.items():
            ctx.set(getattr(dut, name), value)
        await _reseed(ctx, SEEDS[0])

    async def _reseed(ctx, seed):
        ctx.set(dut.lfsr_seed, seed)
        ctx.set(dut.lfsr_load, 1)
        await ctx.tick()
        ctx.set(dut.lfsr_load, 0)

    async def host(ctx):
        await _reseed(ctx, SEEDS[1])
        ctx.set(dut.host_resume, 1)
        await ctx.tick()
        ctx.set(dut.host_resume, 0)

    rng = np.random.default_rng(3)
    result = bench.run(words, name="sequencer_training_update", rng=rng, setup=setup,
                       host=host)
    for addr in range(0, MEM_BYTES, 4):
        if result[addr // 4] != expected[addr // 4]:
            raise AssertionError(f"word at 0x{addr:x}: got 0x{int(result[addr // 4]):08x}, "
                                 f"expected 0x{int(expected[addr // 4]):08x}")
    assert bench.bad_commands == len(illegal)
    assert bench.totals["commands_done"] == len(program) + 1 - len(illegal)
    print(f"training update: {len(cmds)} commands, {bench.cycles} cycles")


def test_sequencer_without_training_flags_updates():
    """A build that does not train (and any 8-bit build) has no update engine:
    its opcodes are bad commands and memory is left alone."""
    assert Sequencer(rows=R, cols=C, data_width=8, acc_width=24, training=True).update is None
    assert Sequencer(rows=R, cols=C, training=False).update is None
    rng = np.random.default_rng(9)
    image = image_for(rng, [])
    words = [w for cmd in _illegal_updates()[2:3] for w in cmd]
    words += encode(Opcode.ACC_BIAS, src=0, grad_addr=0x40, channels=1, positions=2, images=1)
    words += encode(Opcode.SGD_UPDATE, weight_addr=0x40, history_addr=0x80, grad_addr=0xC0,
                    count=4, weight_frac=12, history_frac=18, grad_frac=20, diff_frac=22)
    words += encode(Opcode.END)
    bench = Bench(image, latency=2, stall_rate=0.0)
    result = bench.run(words, name="sequencer_no_training", rng=rng)
    assert bench.bad_commands == 3
    np.testing.assert_array_equal(result, image)


def test_sequencer_rejects_bad_training_parameters():
    with pytest.raises(ValueError, match="training must be a bool, not 1"):
        Sequencer(rows=R, cols=C, training=1)
    with pytest.raises(ValueError, match="gradient width .* not 40"):
        Sequencer(rows=R, cols=C, training=True, grad_bits=40)
    with pytest.raises(ValueError, match="chunk must be even, not 7"):
        Sequencer(rows=R, cols=C, training=True, update_chunk=7)


@pytest.mark.parametrize("lanes, depth", [(10, 512), (11, 64), (2, 512), (3, 2), (13, 100)])
def test_offset_word_divides_in_range_offsets(lanes, depth):
    # The decode's buffer-offset divide works on the bits below the buffer's
    # size only; every offset it calls exact must divide exactly, every
    # in-range offset must be judged right, and one past the low bits never
    # exact. The answer is one cycle late (the multiplier's register).
    from amaranth.hdl import Signal
    from fecaffe_hw.cores.sequencer import _offset_word

    offset = Signal(24)
    m = Module()
    word, exact = _offset_word(m, offset, lanes, depth, "offset")
    bits = (depth * lanes - 1).bit_length()
    rng = np.random.default_rng(lanes * depth)
    # Every offset below the divided bits, then some above them.
    values = [*range((1 << bits) + 2 * lanes),
              *(int(v) for v in rng.integers(1 << bits, 1 << 24, 50)), (1 << 24) - 1]

    async def check(ctx):
        for value in values:
            ctx.set(offset, value)
            await ctx.tick()
            # The next offset is already on the input: the answer is the
            # registered one, not a combinational path from `offset`.
            ctx.set(offset, value ^ 1)
            got_exact = ctx.get(exact)
            if value >> bits:
                assert not got_exact, value
            else:
                assert got_exact == (value % lanes == 0), value
                if got_exact:
                    assert ctx.get(word) == value // lanes, value

    simulate(m, check, name=f"sequencer_offset_word_{lanes}x{depth}")
