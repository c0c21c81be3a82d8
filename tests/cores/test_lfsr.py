# amaranth: UnusedElaboratable=no
"""LfsrCore against the Lfsr model, word for word."""

import numpy as np
import pytest

from fecaffe_hw.cores.lfsr import LfsrCore
from fecaffe_hw.fixedpoint import Lfsr

from support import simulate


@pytest.mark.parametrize("lanes", [1, 3])
def test_lfsr_core_matches_model(lanes):
    seed, reseed = 0x1234ABCD, 0xDEADBEEF
    dut = LfsrCore(seed=seed, lanes=lanes)
    rng = np.random.default_rng(lanes)
    cycles = 300

    async def bench(ctx):
        model = Lfsr(seed)
        consumed = 0
        for cycle in range(cycles):
            if cycle == cycles // 2:
                # Reload mid-stream; a zero load right after must be ignored.
                ctx.set(dut.seed_value, reseed)
                ctx.set(dut.seed_load, 1)
                ctx.set(dut.enable, 1)
                await ctx.tick()
                ctx.set(dut.seed_value, 0)
                await ctx.tick()
                ctx.set(dut.seed_load, 0)
                model = Lfsr(reseed)
            enable = int(rng.random() < 0.7)
            ctx.set(dut.enable, enable)
            # The words on offer are the model's next words whether or not
            # this cycle consumes them.
            want = Lfsr(model.state).next_words(lanes).tolist()
            assert [ctx.get(dut.words[k]) for k in range(lanes)] == want
            if enable:
                model.next_words(lanes)
                consumed += 1
            await ctx.tick()
        assert consumed > cycles // 2

    simulate(dut, bench, name=f"lfsr_core_{lanes}")


def test_lfsr_core_parameters():
    with pytest.raises(ValueError, match="0"):
        LfsrCore(seed=0)
    with pytest.raises(ValueError, match="4294967296"):
        LfsrCore(seed=2**32)
    with pytest.raises(ValueError, match="65"):
        LfsrCore(lanes=65)
    assert LfsrCore(seed=7, lanes=2).lanes == 2
