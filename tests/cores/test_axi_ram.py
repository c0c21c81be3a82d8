# amaranth: UnusedElaboratable=no
"""AxiRam against a bytearray: random FIXED/INCR/WRAP bursts of every beat
size, byte strobes, DECERR outside memory, AXI handshake rules on every
channel, and the latency and bandwidth it promises."""

import numpy as np
import pytest

from amaranth.lib.wiring import In, Out

from fecaffe_hw.cores.axi import (AxiLiteSignature, AxiSignature, AxiStreamSignature, Burst,
                                  Resp, amba_ports)
from fecaffe_hw.cores.axi_ram import AxiRam

from support import Stalls, handshake_monitor, simulate, stream_get, stream_put


class AxiModel:
    """Byte memory with AXI's burst addressing (aligned start addresses)."""

    def __init__(self, size, data_bytes):
        self.mem = bytearray(size)
        self.data_bytes = data_bytes

    def beat_addresses(self, addr, length, size, burst):
        step, addrs = 1 << size, []
        for _ in range(length + 1):
            addrs.append(addr)
            if burst == Burst.INCR:
                addr += step
            elif burst == Burst.WRAP:
                span = (length + 1) * step
                addr = addr - addr % span + (addr + step) % span
        return addrs

    def write(self, addr, data, strb):
        base = addr - addr % self.data_bytes
        if base >= len(self.mem):
            return Resp.DECERR
        for lane in range(self.data_bytes):
            if strb >> lane & 1:
                self.mem[base + lane] = data >> (8 * lane) & 0xFF
        return Resp.OKAY

    def read(self, addr):
        base = addr - addr % self.data_bytes
        if base >= len(self.mem):
            return 0, Resp.DECERR
        return int.from_bytes(self.mem[base:base + self.data_bytes], "little"), Resp.OKAY


def random_burst(rng, size_bytes, data_bytes):
    burst = [Burst.INCR, Burst.INCR, Burst.FIXED, Burst.WRAP][rng.integers(4)]
    size = int(rng.integers(0, data_bytes.bit_length()))
    if burst == Burst.WRAP:
        length = [1, 3, 7, 15][rng.integers(4)]
    else:
        length = int(rng.integers(0, 24))
    # Mostly inside memory, sometimes running past its end.
    span = (length + 1) << size
    addr = int(rng.integers(0, size_bytes + 64)) if rng.random() < 0.15 else \
        int(rng.integers(0, max(1, size_bytes - span)))
    addr -= addr % (1 << size)
    return addr, length, size, burst


@pytest.mark.parametrize("data_width, latency, rate, stall", [
    (32, 1, 1, 0.0),
    (32, 6, 1, 0.3),
    (64, 3, 0.5, 0.2),
    (128, 2, 1, 0.4),
])
def test_random_bursts_match_a_bytearray(data_width, latency, rate, stall):
    size_bytes = 2048
    data_bytes = data_width // 8
    dut = AxiRam(size=size_bytes, data_width=data_width, addr_width=16, id_width=4,
                 latency=latency, beats_per_cycle=rate, stall_rate=stall)
    model = AxiModel(size_bytes, data_bytes)
    rng = np.random.default_rng(data_width + latency)
    axi = dut.axi
    transfers = {}
    n_bursts = 60

    async def bench(ctx):
        stalls = Stalls(rng, 0.3)
        for n in range(n_bursts):
            addr, length, size, burst = random_burst(rng, size_bytes, data_bytes)
            beats = model.beat_addresses(addr, length, size, burst)
            ident = n % 16
            header = {"id": ident, "addr": addr, "len": length, "size": size, "burst": burst}
            if rng.random() < 0.5:
                await stream_put(ctx, axi.aw, header, stalls=stalls)
                want_resp = Resp.OKAY
                for i, beat in enumerate(beats):
                    value = int(rng.integers(0, 2**63)) | int(rng.integers(0, 2**63)) << 63
                    value &= (1 << data_width) - 1
                    lanes = [(beat % data_bytes) + k for k in range(1 << size)]
                    strb = sum(1 << k for k in lanes if rng.random() < 0.8)
                    if model.write(beat, value, strb) != Resp.OKAY:
                        want_resp = Resp.DECERR
                    await stream_put(ctx, axi.w, {"data": value, "strb": strb,
                                                  "last": i == length}, stalls=stalls)
                got = await stream_get(ctx, axi.b, stalls=stalls)
                assert (got.id, got.resp) == (ident, want_resp), f"burst {n}"
            else:
                await stream_put(ctx, axi.ar, header, stalls=stalls)
                for i, beat in enumerate(beats):
                    want_data, want_resp = model.read(beat)
                    got = await stream_get(ctx, axi.r, stalls=stalls)
                    assert (got.id, got.data, got.resp, got.last) == \
                        (ident, want_data, want_resp, i == length), f"burst {n} beat {i}"

    simulate(dut, bench, name=f"axi_ram_{data_width}_{latency}_{rate}_{stall}",
             processes=[handshake_monitor({c: getattr(axi, c) for c in
                                           ("aw", "w", "b", "ar", "r")}, transfers)])
    assert len(transfers["b"]) + len(transfers["ar"]) == n_bursts


@pytest.mark.parametrize("latency, rate", [(1, 1), (2, 1), (24, 1), (10, 0.25)])
def test_read_latency_and_bandwidth(latency, rate):
    length = 31
    dut = AxiRam(size=1024, latency=latency, beats_per_cycle=rate,
                 init=list(range(1000, 1256)))
    axi = dut.axi

    async def bench(ctx):
        ctx.set(axi.ar.payload, {"addr": 64, "len": length, "size": 2, "burst": Burst.INCR})
        ctx.set(axi.ar.valid, 1)
        await ctx.tick().until(axi.ar.ready)
        ctx.set(axi.ar.valid, 0)
        ctx.set(axi.r.ready, 1)
        cycles, beats = 0, []
        while len(beats) <= length:
            cycles += 1
            _, _, valid, payload = await ctx.tick().sample(axi.r.valid, axi.r.payload)
            if valid:
                if not beats:
                    first = cycles
                beats.append(payload.data)
        assert beats == list(range(1016, 1016 + length + 1))
        # RVALID rises `latency` cycles after the AR handshake; the beat is
        # taken at the edge after that.
        assert first == latency + 1
        # After the first beat, one beat per 1/rate cycles.
        assert cycles - first == round(length / rate)

    simulate(dut, bench, name=f"axi_ram_latency_{latency}_{rate}")


def test_read_latency_overlaps_between_bursts():
    latency, bursts, beats = 20, 4, 4
    dut = AxiRam(size=1024, latency=latency, queue_depth=4, init=list(range(256)))
    axi = dut.axi

    async def issue(ctx):
        for k in range(bursts):
            await stream_put(ctx, axi.ar, {"id": 0, "addr": 64 * k, "len": beats - 1,
                                           "size": 2, "burst": Burst.INCR})

    async def drain(ctx):
        ctx.set(axi.r.ready, 1)
        got, cycles = [], 0
        while len(got) < bursts * beats:
            _, _, valid, payload = await ctx.tick().sample(axi.r.valid, axi.r.payload)
            cycles += 1
            if valid:
                got.append(payload.data)
        assert got == [16 * k + i for k in range(bursts) for i in range(beats)]
        # The first AR is taken at edge 1 and its first beat at edge
        # latency + 2; then the bursts follow with one idle cycle between
        # them. Unpipelined it would take bursts * (latency + beats).
        first = latency + 2
        assert cycles == first + (beats - 1) + (bursts - 1) * (beats + 1)

    simulate(dut, issue, drain, name="axi_ram_pipelined_latency")


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="size"):
        AxiRam(size=1001)
    with pytest.raises(ValueError, match="Latency"):
        AxiRam(size=1024, latency=0)
    with pytest.raises(ValueError, match="Beats per cycle"):
        AxiRam(size=1024, beats_per_cycle=1.5)
    with pytest.raises(ValueError, match="Stall rate"):
        AxiRam(size=1024, stall_rate=1.0)
    with pytest.raises(ValueError, match="data width"):
        AxiRam(size=1024, data_width=24)


def test_amba_port_names_and_directions():
    sig = AxiSignature(addr_width=32, data_width=64, id_width=4)
    ports = {name: (flow, len(value)) for name, flow, value in amba_ports(sig, sig.create())}
    for channel, fields in {"AW": ["ID", "ADDR", "LEN", "SIZE", "BURST", "LOCK", "CACHE", "PROT"],
                            "W": ["DATA", "STRB", "LAST"], "AR": ["ADDR", "LEN"]}.items():
        for f in fields:
            assert ports[channel + f][0] == Out
        assert ports[channel + "VALID"][0] == Out and ports[channel + "READY"][0] == In
    for name in ("RDATA", "RRESP", "RLAST", "RID", "BRESP", "BID", "RVALID", "BVALID"):
        assert ports[name][0] == In, name
    assert (ports["AWADDR"][1], ports["WDATA"][1], ports["WSTRB"][1], ports["ARLEN"][1],
            ports["RID"][1]) == (32, 64, 8, 8, 4)
    lite = AxiLiteSignature(addr_width=12)
    assert sorted(n for n, _, _ in amba_ports(lite, lite.create())) == sorted(
        ["AWADDR", "AWPROT", "AWVALID", "AWREADY", "WDATA", "WSTRB", "WVALID", "WREADY",
         "BRESP", "BVALID", "BREADY", "ARADDR", "ARPROT", "ARVALID", "ARREADY",
         "RDATA", "RRESP", "RVALID", "RREADY"])
    axis = AxiStreamSignature(32)
    assert {n: len(v) for n, _, v in amba_ports(axis, axis.create())} == {
        "TDATA": 32, "TKEEP": 4, "TLAST": 1, "TVALID": 1, "TREADY": 1}
    with pytest.raises(ValueError, match="AXI-Stream data width"):
        AxiStreamSignature(12)
