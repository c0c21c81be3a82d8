"""The pysim backend: Amaranth's Python simulator behind :class:`SimBackend`."""

import numpy as np
from amaranth.hdl import Value
from amaranth.sim import Simulator
from amaranth.sim import pysim as _pysim

from .backend import SimBackend

__all__ = ["PysimBackend"]

# 100 MHz, the Arty's oscillator; only the VCD time axis depends on it.
CLOCK_PERIOD = 1e-8

# Bulk backdoor through the pysim engine's memory state (Amaranth 0.5
# internals, pinned by pyproject): the public per-row ``ctx.set`` costs about
# 20 us a word, a minute for a LeNet-sized tensor memory.
_FAST_BACKDOOR = True


def design_ports(design):
    """The harness ports of ``design`` as plain values, in ``PORT_NAMES`` order."""
    try:
        members = (design.host_rx.valid, design.host_rx.payload, design.host_rx.ready,
                   design.host_tx.valid, design.host_tx.payload, design.host_tx.ready,
                   design.trace_valid, design.trace_data)
    except AttributeError as error:
        raise TypeError(f"Design {design!r} lacks a harness port: {error}") from None
    return tuple(Value.cast(member) for member in members)


class PysimBackend(SimBackend):
    """Simulates ``design`` with Amaranth's Python simulator (a few thousand
    cycles per second); ``vcd`` names a waveform file to write."""

    name = "pysim"

    def __init__(self, design, *, memories, vcd=None):
        super().__init__(memories)
        self._ports = design_ports(design)
        self._sim = Simulator(design)
        self._sim.add_clock(CLOCK_PERIOD)
        # One testbench serves every request: a simulation cannot take new
        # testbenches once it runs. Between requests it waits on zero-length
        # delays, which pass no simulated time, so cycles stay exact.
        self._request = None
        self._sim.add_testbench(self._serve, background=True)
        # Start the server at time 0; no clock edge passes.
        self._call(_nothing)
        self._vcd = None
        if vcd is not None:
            self._vcd = self._sim.write_vcd(str(vcd))
            self._vcd.__enter__()

    async def _serve(self, ctx):
        while True:
            request = self._request
            if request is None:
                await ctx.delay(0)
                continue
            self._request = None
            request.result = await request.run(ctx)
            request.done = True

    def _call(self, run):
        request = _Request(run)
        self._request = request
        while not request.done:
            self._sim.advance()
        return request.result

    # --- exchange ------------------------------------------------------------

    def _exchange(self, rx, tx_count, max_cycles):
        (rx_valid, rx_payload, rx_ready, tx_valid, tx_payload, tx_ready,
         trace_valid, trace_data) = self._ports

        async def run(ctx):
            taken, tx, events, ran = 0, bytearray(), [], 0
            offered, ready = None, None
            while (taken < len(rx) or len(tx) < tx_count) and ran < max_cycles:
                # Only changed inputs are set: each ``ctx.set`` settles the design.
                valid = taken < len(rx)
                if valid != offered:
                    ctx.set(rx_valid, valid)
                    offered = valid
                if valid:
                    ctx.set(rx_payload, rx[taken])
                if (len(tx) < tx_count) != ready:
                    ready = len(tx) < tx_count
                    ctx.set(tx_ready, ready)
                _clk, _rst, r_ready, t_valid, t_payload, e_valid, e_data = \
                    await ctx.tick().sample(rx_ready, tx_valid, tx_payload,
                                            trace_valid, trace_data)
                if valid and r_ready:
                    taken += 1
                if ready and t_valid:
                    tx.append(t_payload)
                if e_valid:
                    events.append((self.cycles, e_data))
                self.cycles += 1
                ran += 1
            ctx.set(rx_valid, 0)
            ctx.set(tx_ready, 0)
            return taken == len(rx) and len(tx) == tx_count, taken, bytes(tx), events

        return self._call(run)

    # --- backdoor --------------------------------------------------------------

    def _memory_state(self, info):
        state = getattr(getattr(self._sim, "_engine", None), "_state", None)
        if not _FAST_BACKDOOR or not isinstance(state, _pysim._PyEngineState):
            return None
        return state.slots[state.get_memory(info.data)]

    def _write_memory(self, info, first_word, words):
        values = words.astype(np.int64)
        if info.signed:
            values = np.where(values >> (info.width - 1), values - (1 << info.width), values)
        values = values.tolist()
        memory_state = self._memory_state(info)
        if memory_state is not None:
            memory_state.data[first_word:first_word + len(values)] = values
            # Wake the processes of asynchronous read ports, as a write would.
            _pysim._run_wakers(memory_state.wakers)
            return
        rows = [Value.cast(info.data[first_word + i]) for i in range(len(values))]

        async def run(ctx):
            for row, value in zip(rows, values):
                ctx.set(row, value)

        self._call(run)

    def _read_memory(self, info, first_word, count):
        memory_state = self._memory_state(info)
        if memory_state is not None:
            values = memory_state.data[first_word:first_word + count]
        else:
            rows = [Value.cast(info.data[first_word + i]) for i in range(count)]

            async def run(ctx):
                return [ctx.get(row) for row in rows]

            values = self._call(run)
        return (np.array(values, dtype=np.int64) & info.mask).astype(np.uint32)

    def _close(self):
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None


async def _nothing(ctx):
    pass


class _Request:
    __slots__ = ("run", "done", "result")

    def __init__(self, run):
        self.run, self.done, self.result = run, False, None
