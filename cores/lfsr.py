"""Hardware twin of :class:`fecaffe_hw.fixedpoint.Lfsr`."""

from amaranth.hdl import Module, Signal, Mux, unsigned
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from fecaffe_hw.fixedpoint.lfsr import LFSR_BITS, LFSR_MASK

__all__ = ["LfsrCore"]


def _step(state):
    # Galois step, right-shifting: the mask is XORed in when the lsb falls out.
    return (state >> 1) ^ Mux(state[0], LFSR_MASK, 0)


class LfsrCore(wiring.Component):
    """Seeded 32-bit Galois LFSR producing the model's word sequence.

    ``words`` holds the next ``lanes`` words of ``Lfsr(seed).next_words``
    (combinationally, from the state register); a cycle with ``enable`` high
    consumes them and advances the state by ``lanes`` steps, so ``lanes``
    words per cycle at full rate. ``seed_load`` loads ``seed_value`` into the
    state instead (priority over ``enable``; a zero seed is ignored, since
    the all-zero state would lock up). Parameters: ``seed`` (nonzero 32-bit
    reset state), ``lanes`` (1..64 words per cycle).
    """

    def __init__(self, *, seed=1, lanes=1):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed < 2**LFSR_BITS:
            raise ValueError(f"LFSR seed must be a nonzero 32-bit integer, not {seed!r}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 64:
            raise ValueError(f"LFSR lanes must be an integer in [1, 64], not {lanes!r}")
        self._seed, self._lanes = seed, lanes
        super().__init__({
            "enable":     In(1),
            "seed_value": In(LFSR_BITS),
            "seed_load":  In(1),
            "words":      Out(data.ArrayLayout(unsigned(LFSR_BITS), lanes)),
        })

    @property
    def seed(self):
        return self._seed

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        state = Signal(LFSR_BITS, init=self._seed)
        word = state
        for lane in range(self._lanes):
            word = _step(word)
            m.d.comb += self.words[lane].eq(word)
        with m.If(self.seed_load):
            with m.If(self.seed_value != 0):
                m.d.sync += state.eq(self.seed_value)
        with m.Elif(self.enable):
            m.d.sync += state.eq(self.words[self._lanes - 1])
        return m
