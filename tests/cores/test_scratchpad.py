"""Scratchpad: writes with lane enables, a transparent and a plain read port,
against a NumPy model; both kinds map to block RAM on ECP5."""

import numpy as np
import pytest

from fecaffe_hw.cores.scratchpad import Scratchpad
from fecaffe_hw.synthesis import synthesize
from support import simulate

LANES, WIDTH, DEPTH = 3, 12, 8


@pytest.mark.parametrize("seed", range(3))
def test_reads_match_the_model(seed):
    # Random writes (any lanes) and reads on both ports, a third of them of
    # the word being written: the transparent port sees the write, the plain
    # one the word before it.
    rng = np.random.default_rng(seed)
    dut = Scratchpad(lanes=LANES, lane_width=WIDTH, depth=DEPTH, read_ports=2, transparent=(0,))
    lo, hi = -(1 << (WIDTH - 1)), 1 << (WIDTH - 1)
    model = np.zeros((DEPTH, LANES), dtype=np.int64)
    mismatches = []
    collisions = [0]

    async def bench(ctx):
        pending = [None, None]
        for _ in range(400):
            w_addr, w_en = int(rng.integers(DEPTH)), int(rng.integers(1 << LANES))
            w_data = rng.integers(lo, hi, LANES)
            reads = [(int(rng.integers(DEPTH)), bool(rng.integers(2))) for _ in range(2)]
            if rng.random() < 0.3:
                reads[int(rng.integers(2))] = (w_addr, True)
            ctx.set(dut.write.addr, w_addr)
            ctx.set(dut.write.en, w_en)
            for lane in range(LANES):
                ctx.set(dut.write.data[lane], int(w_data[lane]))
            for port, (addr, en) in enumerate(reads):
                ctx.set(getattr(dut, f"read{port}").addr, addr)
                ctx.set(getattr(dut, f"read{port}").en, en)
            old = model.copy()
            for lane in range(LANES):
                if w_en >> lane & 1:
                    model[w_addr, lane] = w_data[lane]
            for port, (addr, en) in enumerate(reads):
                if en:
                    collisions[0] += port == 1 and w_en != 0 and addr == w_addr
                    pending[port] = (model if port == 0 else old)[addr].copy()
            await ctx.tick()
            for port in range(2):
                if pending[port] is None:
                    continue
                got = [ctx.get(getattr(dut, f"read{port}").data[lane]) for lane in range(LANES)]
                if got != list(pending[port]):
                    mismatches.append((port, got, list(pending[port])))

    simulate(dut, bench, name=f"scratchpad_{seed}")
    assert mismatches == []
    assert collisions[0] > 20


@pytest.mark.parametrize("transparent", [(), (0,)])
def test_both_read_ports_map_to_block_ram_on_ecp5(transparent):
    # yosys builds the plain port's read-first behaviour and the transparent
    # port's bypass in flip-flops beside the RAM; the words stay in it.
    dut = Scratchpad(lanes=LANES, lane_width=WIDTH, depth=512, transparent=transparent)
    used = synthesize(dut, family="ecp5")
    assert used.cells.get("DP16KD") == 2, used.cells
    assert used.lutram == 0, used.cells
