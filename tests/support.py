"""Test support shared by every testbench: stream handshakes, simulation runs.

Stream helpers follow Amaranth 0.5's documented testbench idiom and can insert
random stalls, so every core is exercised under back-pressure. Setting
``FECAFFE_VCD=dir`` makes :func:`simulate` write ``dir/<name>.vcd``.
"""

import contextlib
import os
import pathlib
import re

from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "simulate", "Stalls"]


class Stalls:
    """Random idle cycles between transfers: ``probability`` per cycle, seeded."""

    def __init__(self, rng=None, probability=0.0):
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"Stall probability must be in [0, 1), not {probability!r}")
        self.rng, self.probability = rng, probability

    async def wait(self, ctx):
        if self.rng is None or self.probability == 0.0:
            return
        while self.rng.random() < self.probability:
            await ctx.tick()


async def stream_put(ctx, stream, payload, *, stalls=None):
    """Offer ``payload`` on ``stream`` (valid/ready) until it is taken."""
    if stalls is not None:
        await stalls.wait(ctx)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, stalls=None):
    """Accept one payload from ``stream``; while waiting, check that a payload
    once offered (valid high) stays offered and unchanged until taken."""
    if stalls is not None:
        offered = None
        while stalls.rng is not None and stalls.rng.random() < stalls.probability:
            await ctx.tick()
            valid, payload = ctx.get(stream.valid), ctx.get(stream.payload)
            if offered is not None:
                assert valid, "valid dropped before the payload was accepted"
                assert _same(payload, offered), "payload changed while valid and not ready"
            if valid:
                offered = payload
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def _same(a, b):
    # Struct and array payloads come back as ``data.Const``; compare their bits.
    if hasattr(a, "as_value"):
        return a.as_value().value == b.as_value().value
    return a == b


def simulate(dut, *testbenches, name, processes=(), deadline_cycles=100_000, clock=1e-8):
    """Run ``testbenches`` (async functions of ``ctx``) against ``dut``.

    ``processes`` are added with ``add_process``. The run fails after
    ``deadline_cycles``, so a hung handshake fails the test instead of
    hanging it.
    """
    sim = Simulator(dut)
    sim.add_clock(clock)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)

    vcd_dir = os.environ.get("FECAFFE_VCD")
    if vcd_dir:
        path = pathlib.Path(vcd_dir) / (re.sub(r"[^\w.-]+", "_", name) + ".vcd")
        path.parent.mkdir(parents=True, exist_ok=True)
        context = sim.write_vcd(str(path))
    else:
        context = contextlib.nullcontext()
    with context:
        # Each clock cycle is at least two simulator time steps (two edges).
        steps = 0
        while sim.advance():
            steps += 1
            if steps > 2 * deadline_cycles:
                raise AssertionError(f"{name}: testbenches did not finish within "
                                     f"{deadline_cycles} cycles")
