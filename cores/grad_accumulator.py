"""Gradient accumulation and the Caffe SGD update in fixed point (bit-exact with
``fecaffe_hw.fixedpoint.sgd``)."""

import enum

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fecaffe_hw.cores.eltwise import round_half_even, saturate
from fecaffe_hw.cores.lfsr import LfsrCore
from fecaffe_hw.fixedpoint.sgd import NORM_FRAC, SgdFormats, words_per_beat

__all__ = ["GradientAccumulator", "AccumulatorCommand"]


class AccumulatorCommand(enum.IntEnum):
    UPDATE = 0   # apply SGD to words [base, base + count), zero their accumulators
    CLEAR = 1    # zero the accumulators of words [base, base + count)


class GradientAccumulator(wiring.Component):
    """Accumulates gradients of ``words * lanes`` parameters and applies SGD.

    Element ``e`` of a parameter blob is lane ``e % lanes`` of word ``e // lanes``
    (weights and biases are address ranges; each range is updated by its own
    command with its own constants). Accumulators are ``formats.acc_bits`` wide
    (frac = ``formats.grad.frac``) and wrap, in a ``lib.memory.Memory``; with
    ``acc_bits >= grad.bits + ceil(log2(contributions per element))`` (batch
    tiles times ``iter_size``) they cannot overflow.

    Ports
    -----
    grad : In(stream)
        ``addr`` (word) and ``data`` (lanes of ``formats.grad``), added into the
        accumulators: one beat per cycle, any order, repeats allowed (a
        transparent read port forwards back-to-back updates of one word).
        Not ready while a command runs or one is offered.
    cmd : In(stream)
        ``op`` (:class:`AccumulatorCommand`), ``base``, ``count``. Taken when
        idle; ``rate``, ``momentum``, ``decay`` (``formats`` fixed point) and
        ``norm_mul`` (``norm_multiplier(iter_size)``) are latched then.
    params_in : In(stream)
        During UPDATE, ``count`` beats of current ``w`` and ``h`` (lanes each),
        word ``base`` first.
    params_out : Out(stream)
        The updated ``w`` and ``h`` in the same order, 6 cycles after their
        input; one word per cycle. Each word's accumulators are zeroed.
    seed_value, seed_load : In
        Reload the rounding LFSR (reset state ``seed``).
    busy : Out
        A command is running.

    The update is :func:`fecaffe_hw.fixedpoint.sgd.sgd_update`; its random
    words come from one :class:`LfsrCore` stepping ``words_per_beat`` words per
    updated word. CLEAR zeroes one word per cycle.
    """

    def __init__(self, *, words, lanes=1, formats, seed=1):
        if isinstance(words, bool) or not isinstance(words, int) or words < 1:
            raise ValueError(f"Word count must be a positive integer, not {words!r}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 32:
            raise ValueError(f"Lane count must be an integer in [1, 32], not {lanes!r}")
        if not isinstance(formats, SgdFormats):
            raise TypeError(f"Formats must be an SgdFormats, not {formats!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed < 2**32:
            raise ValueError(f"LFSR seed must be a nonzero 32-bit integer, not {seed!r}")
        self._words, self._lanes, self._formats, self._seed = words, lanes, formats, seed
        f = formats
        super().__init__({
            "grad": In(stream.Signature(data.StructLayout({
                "addr": range(words),
                "data": data.ArrayLayout(signed(f.grad.bits), lanes)}))),
            "cmd": In(stream.Signature(data.StructLayout({
                "op": unsigned(1), "base": range(words), "count": range(words + 1)}))),
            "params_in": In(stream.Signature(self.param_layout)),
            "params_out": Out(stream.Signature(self.param_layout)),
            "rate": In(signed(f.rate.bits)),
            "momentum": In(signed(f.momentum.bits)),
            "decay": In(signed(f.decay.bits)),
            "norm_mul": In(unsigned(NORM_FRAC + 1)),
            "seed_value": In(32),
            "seed_load": In(1),
            "busy": Out(1),
        })

    words = property(lambda self: self._words)
    lanes = property(lambda self: self._lanes)
    formats = property(lambda self: self._formats)
    seed = property(lambda self: self._seed)
    latency = 6

    @property
    def param_layout(self):
        return data.StructLayout({
            "w": data.ArrayLayout(signed(self.formats.weight.bits), self.lanes),
            "h": data.ArrayLayout(signed(self.formats.history.bits), self.lanes)})

    def elaborate(self, platform):
        m = Module()
        f, lanes = self.formats, self.lanes

        m.submodules.acc = acc = Memory(
            shape=data.ArrayLayout(signed(f.acc_bits), lanes), depth=self.words, init=[])
        wr = acc.write_port()
        rd = acc.read_port(transparent_for=(wr,))
        per_beat = words_per_beat(f, lanes)
        m.submodules.lfsr = lfsr = LfsrCore(seed=self.seed, lanes=per_beat)
        m.d.comb += [lfsr.seed_value.eq(self.seed_value), lfsr.seed_load.eq(self.seed_load)]

        # Command state; constants latched with the command.
        updating, clearing = Signal(), Signal()
        base, count = Signal.like(self.cmd.payload.base), Signal.like(self.cmd.payload.count)
        issued, retired = Signal.like(count), Signal.like(count)
        rate, momentum = Signal.like(self.rate), Signal.like(self.momentum)
        decay, norm_mul = Signal.like(self.decay), Signal.like(self.norm_mul)
        idle = ~updating & ~clearing
        m.d.comb += [self.busy.eq(~idle), self.cmd.ready.eq(idle),
                     # Commands go first, so no accumulate write is pending when
                     # a CLEAR starts writing.
                     self.grad.ready.eq(idle & ~self.cmd.valid)]
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [base.eq(p.base), count.eq(p.count), issued.eq(0), retired.eq(0),
                         rate.eq(self.rate), momentum.eq(self.momentum),
                         decay.eq(self.decay), norm_mul.eq(self.norm_mul)]
            with m.If(p.count != 0):
                with m.If(p.op == AccumulatorCommand.CLEAR):
                    m.d.sync += clearing.eq(1)
                with m.Else():
                    m.d.sync += updating.eq(1)

        # Accumulate: read at acceptance, add and write back the next cycle.
        g_valid = Signal()
        g_addr = Signal.like(self.grad.payload.addr)
        g_data = Signal.like(self.grad.payload.data)
        m.d.sync += [g_valid.eq(self.grad.valid & self.grad.ready),
                     g_addr.eq(self.grad.payload.addr), g_data.eq(self.grad.payload.data)]

        # Update pipeline: the whole pipeline stalls when the output does.
        out = self.params_out
        advance = Signal()
        valid = [Signal(name=f"valid{i}") for i in range(1, 7)]
        m.d.comb += [advance.eq(~out.valid | out.ready), out.valid.eq(valid[5])]
        take = Signal()
        m.d.comb += [take.eq(self.params_in.valid & self.params_in.ready),
                     self.params_in.ready.eq(updating & (issued < count) & advance)]
        with m.If(advance):
            m.d.sync += valid[0].eq(take)
            m.d.sync += [valid[i].eq(valid[i - 1]) for i in range(1, 6)]
        with m.If(take):
            m.d.sync += issued.eq(issued + 1)
        with m.If(out.valid & out.ready):
            m.d.sync += retired.eq(retired + 1)
            with m.If(retired + 1 == count):
                m.d.sync += updating.eq(0)

        addr1 = Signal.like(base)
        with m.If(advance):
            m.d.sync += addr1.eq(base + issued)
        with m.If(updating):
            m.d.comb += [rd.addr.eq(base + issued), rd.en.eq(advance),
                         # Zero a word's accumulators as its gradient moves on.
                         wr.addr.eq(addr1), wr.data.eq(0), wr.en.eq(valid[0] & advance)]
        with m.Elif(clearing):
            m.d.comb += [wr.addr.eq(base + issued), wr.data.eq(0), wr.en.eq(1)]
            m.d.sync += issued.eq(issued + 1)
            with m.If(issued + 1 == count):
                m.d.sync += clearing.eq(0)
        with m.Else():
            m.d.comb += [rd.addr.eq(self.grad.payload.addr), rd.en.eq(1),
                         wr.addr.eq(g_addr), wr.en.eq(g_valid)]
            for lane in range(lanes):
                m.d.comb += wr.data[lane].eq(rd.data[lane] + g_data[lane])

        m.d.comb += lfsr.enable.eq(valid[3] & advance)
        pin = self.params_in.payload
        noise = lfsr.words
        for lane in range(lanes):
            w = [Signal(signed(f.weight.bits), name=f"w{i}_{lane}") for i in range(1, 6)]
            h = [Signal(signed(f.history.bits), name=f"h{i}_{lane}") for i in range(1, 4)]
            with m.If(advance):
                m.d.sync += [w[0].eq(pin.w[lane]), h[0].eq(pin.h[lane])]
                m.d.sync += [w[i].eq(w[i - 1]) for i in range(1, 5)]
                m.d.sync += [h[i].eq(h[i - 1]) for i in range(1, 3)]

            # Stage 2: normalised gradient and L2 decay term, exact.
            g_norm = rd.data[lane] * norm_mul
            g_norm2 = Signal(g_norm.shape(), name=f"gnorm2_{lane}")
            decay2 = Signal(signed(f.decay.bits + f.weight.bits), name=f"decay2_{lane}")
            # Stage 3: diff rounded half to even and saturated.
            shift = f.diff_sum_frac
            diff_sum = ((g_norm2 << (shift - f.grad.frac - NORM_FRAC))
                        + (decay2 << (shift - f.decay.frac - f.weight.frac)))
            diff3 = Signal(signed(f.diff.bits), name=f"diff3_{lane}")
            # Stage 4: momentum and rate products.
            mom4 = Signal(signed(f.momentum.bits + f.history.bits), name=f"mom4_{lane}")
            step4 = Signal(signed(f.rate.bits + f.diff.bits), name=f"step4_{lane}")
            # Stage 5: h' by stochastic rounding; its w words wait a stage.
            shift = f.history_sum_frac
            h_sum = ((mom4 << (shift - f.momentum.frac - f.history.frac))
                     + (step4 << (shift - f.rate.frac - f.diff.frac)))
            h_rounded = (h_sum + noise[lane][:f.history_shift]) >> f.history_shift
            h5 = Signal(signed(f.history.bits), name=f"h5_{lane}")
            # Stage 6: w' = w - h', stochastic rounding if h is finer than w.
            w_sum = (w[4] << f.weight_shift) - h5
            if f.weight_shift:
                w_noise5 = Signal(f.weight_shift, name=f"wnoise5_{lane}")
                w_sum = (w_sum + w_noise5) >> f.weight_shift
            with m.If(advance):
                m.d.sync += [
                    g_norm2.eq(g_norm), decay2.eq(w[0] * decay),
                    diff3.eq(saturate(round_half_even(diff_sum, f.diff_sum_frac - f.diff.frac),
                                      f.diff.bits)),
                    mom4.eq(h[2] * momentum), step4.eq(diff3 * rate),
                    h5.eq(saturate(h_rounded, f.history.bits)),
                    out.payload.h[lane].eq(h5),
                    out.payload.w[lane].eq(saturate(w_sum, f.weight.bits)),
                ]
                if f.weight_shift:
                    m.d.sync += w_noise5.eq(noise[lanes + lane][:f.weight_shift])
        return m
