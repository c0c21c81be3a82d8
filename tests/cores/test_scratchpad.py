"""Scratchpad: writes with lane enables, a transparent and a plain read port,
against a NumPy model; the plain ports' collision contract; what synthesis
makes of them."""

import numpy as np
import pytest

from fecaffe_hw.cores.scratchpad import Scratchpad
from fecaffe_hw.synthesis import synthesize
from support import scratchpad_collision_monitor, simulate

LANES, WIDTH, DEPTH = 3, 12, 8


@pytest.mark.parametrize("seed", range(3))
def test_reads_match_the_model(seed):
    # Random writes (any lanes) and reads on both ports. The transparent port
    # sees a write to its word in the same cycle; the plain port is only
    # checked where it does not read the word being written (undefined in
    # hardware), and the monitor records exactly those cycles.
    rng = np.random.default_rng(seed)
    dut = Scratchpad(lanes=LANES, lane_width=WIDTH, depth=DEPTH, read_ports=2, transparent=(0,))
    lo, hi = -(1 << (WIDTH - 1)), 1 << (WIDTH - 1)
    model = np.zeros((DEPTH, LANES), dtype=np.int64)
    expected_collisions = []
    collisions = []
    mismatches = []

    async def bench(ctx):
        held = [np.zeros(LANES, dtype=np.int64), np.zeros(LANES, dtype=np.int64)]
        pending = [None, None]
        for _ in range(400):
            w_addr, w_en = int(rng.integers(DEPTH)), int(rng.integers(1 << LANES))
            w_data = rng.integers(lo, hi, LANES)
            reads = [(int(rng.integers(DEPTH)), bool(rng.integers(2))) for _ in range(2)]
            if rng.random() < 0.3:
                reads[0] = (w_addr, True)
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
                    collided = port == 1 and w_en and addr == w_addr
                    if collided:
                        expected_collisions.append(("pad", w_addr))
                    held[port] = (model if port == 0 else old)[addr].copy()
                    pending[port] = None if collided else held[port]
            await ctx.tick()
            for port in range(2):
                if pending[port] is None:
                    continue
                got = [ctx.get(getattr(dut, f"read{port}").data[lane]) for lane in range(LANES)]
                if got != list(pending[port]):
                    mismatches.append((port, got, list(pending[port])))

    simulate(dut, bench, processes=[scratchpad_collision_monitor({"pad": dut}, collisions)],
             name=f"scratchpad_{seed}")
    assert mismatches == []
    assert expected_collisions and collisions == expected_collisions


@pytest.mark.parametrize("transparent, bypass_ffs", [((), 0), ((0,), LANES * WIDTH + LANES)])
def test_plain_read_ports_need_no_bypass_on_ecp5(transparent, bypass_ffs):
    # A plain port maps to the block RAM alone: no delayed write, no address
    # compare, no bypass mux. A transparent one keeps its bypass: the written
    # word and a match flag per lane, registered.
    dut = Scratchpad(lanes=LANES, lane_width=WIDTH, depth=512, transparent=transparent)
    used = synthesize(dut, family="ecp5")
    assert used.cells.get("DP16KD") == 2, used.cells
    assert used.ff == bypass_ffs, used.cells
    if not bypass_ffs:
        assert used.lut == 0, used.cells
