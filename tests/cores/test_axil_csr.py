# amaranth: UnusedElaboratable=no
"""AxilCsr in front of the project's CsrBank: AXI4-Lite reads and writes
follow the register table, refused accesses answer SLVERR with no effect,
reads and writes offered together both complete, handshake rules hold."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from fecaffe_hw.cores.axi import AxiLiteSignature, Resp
from fecaffe_hw.cores.axil_csr import AxilCsr
from fecaffe_hw.cores.csr_bank import CsrBank
from fecaffe_hw.runtime.regmap import REGISTERS, Access, register

from support import Stalls, handshake_monitor, simulate, stream_get, stream_put


class BridgedBank(wiring.Component):
    def __init__(self):
        self.bridge = AxilCsr(addr_width=20)
        self.bank = CsrBank(REGISTERS)
        super().__init__({"axil": wiring.In(AxiLiteSignature(addr_width=20))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge, m.submodules.bank = self.bridge, self.bank
        wiring.connect(m, wiring.flipped(self.axil), self.bridge.axil)
        wiring.connect(m, self.bridge.csr, self.bank.bus)
        return m


class TableModel:
    """The register table with nothing driving the SoC side: RO fields read
    their reset value, RW and W1C fields what was stored, SC fields 0."""

    def __init__(self):
        self.by_address = {r.address: r for r in REGISTERS}
        self.stored = {r.name: r.reset for r in REGISTERS}

    def read(self, address):
        reg = self.by_address.get(address & ~3)
        if reg is None or address >> 16:
            return 0, Resp.SLVERR
        value = 0
        for f in reg.fields:
            if f.access is not Access.SC:
                value |= f.extract(self.stored[reg.name]) << f.lsb
        return value, Resp.OKAY

    def write(self, address, value, strb):
        reg = self.by_address.get(address & ~3)
        if reg is None or address >> 16 or strb != 0xF or not reg.writable_mask \
                or reg.counter is not None:
            return Resp.SLVERR
        for f in reg.fields:
            if f.access is Access.RW:
                self.stored[reg.name] = f.insert(self.stored[reg.name], f.extract(value))
            elif f.access is Access.W1C:
                old = f.extract(self.stored[reg.name])
                self.stored[reg.name] = f.insert(self.stored[reg.name], old & ~f.extract(value))
        return Resp.OKAY


@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_accesses_follow_the_register_table(stall):
    dut = BridgedBank()
    model = TableModel()
    rng = np.random.default_rng(int(stall * 10))
    addresses = [r.address for r in REGISTERS] + [0x02C, 0x0FC, 0x200, 0xFFFC, 0x10000, 0x11C]
    transfers = {}

    async def bench(ctx):
        stalls = Stalls(rng, stall)
        for n in range(150):
            address = addresses[rng.integers(len(addresses))] | int(rng.integers(0, 4))
            if rng.random() < 0.5:
                value = int(rng.integers(0, 2**32))
                strb = 0xF if rng.random() < 0.85 else int(rng.integers(0, 15))
                want = model.write(address, value, strb)
                await stream_put(ctx, dut.axil.aw, {"addr": address}, stalls=stalls)
                await stream_put(ctx, dut.axil.w, {"data": value, "strb": strb}, stalls=stalls)
                got = await stream_get(ctx, dut.axil.b, stalls=stalls)
                assert got.resp == want, f"write {address:#x} = {value:#x} strb {strb:#x}"
            else:
                want = model.read(address)
                await stream_put(ctx, dut.axil.ar, {"addr": address}, stalls=stalls)
                got = await stream_get(ctx, dut.axil.r, stalls=stalls)
                assert (got.data, got.resp) == want, f"read {address:#x} step {n}"
        assert ctx.get(dut.bank.field("SCRATCH", "value")) == model.stored["SCRATCH"]

    simulate(dut, bench, name=f"axil_csr_{stall}", processes=[handshake_monitor(
        {c: getattr(dut.axil, c) for c in ("aw", "w", "b", "ar", "r")}, transfers)])


def test_reads_and_writes_offered_together_both_finish():
    dut = BridgedBank()
    scratch = register("SCRATCH").address
    ident = register("ID")
    values = list(range(100, 140))
    transfers = {}

    async def writer(ctx):
        for value in values:
            ctx.set(dut.axil.aw.payload.addr, scratch)
            ctx.set(dut.axil.w.payload, {"data": value, "strb": 0xF})
            ctx.set(dut.axil.aw.valid, 1)
            ctx.set(dut.axil.w.valid, 1)
            await ctx.tick().until(dut.axil.aw.ready)
            ctx.set(dut.axil.aw.valid, 0)
            ctx.set(dut.axil.w.valid, 0)
            assert (await stream_get(ctx, dut.axil.b)).resp == Resp.OKAY

    async def reader(ctx):
        for _ in values:
            await stream_put(ctx, dut.axil.ar, {"addr": ident.address})
            got = await stream_get(ctx, dut.axil.r)
            assert (got.data, got.resp) == (ident.reset, Resp.OKAY)

    simulate(dut, writer, reader, name="axil_csr_together", processes=[handshake_monitor(
        {c: getattr(dut.axil, c) for c in ("aw", "w", "b", "ar", "r")}, transfers)])
    # Neither side starves the other: their accesses alternate.
    assert len(transfers["aw"]) == len(transfers["ar"]) == len(values)


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="at least 3"):
        AxilCsr(addr_width=2)
    with pytest.raises(ValueError, match="CSR address width"):
        AxilCsr(csr_addr_width=0)
