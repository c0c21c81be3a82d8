"""AXI4-Lite slave onto the CSR bus, for a PCIe bridge's register window."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiLiteSignature, Resp
from .csr_bus import CsrBus

__all__ = ["AxilCsr"]


class AxilCsr(wiring.Component):
    """Bridges AXI4-Lite (e.g. an XDMA bridge's M_AXI_LITE) to the CSR bus.

    Ports: ``axil`` (``In(AxiLiteSignature(addr_width, 32))``), ``csr``
    (``Out(CsrBus(addr_width=csr_addr_width))``). Byte address ``a`` is CSR
    word ``a >> 2``; the two low bits are ignored. An access the CSR bank
    flags (unmapped, or a write to nothing writable), an address beyond the
    CSR space, or a write whose strobes are not all set (the bus has no byte
    enables; nothing is written) is answered SLVERR, otherwise OKAY.

    One access at a time; reads and writes alternate when both wait. AW and
    W are taken independently. RVALID rises two cycles after the AR
    handshake, BVALID three cycles after the later of the AW and W
    handshakes. ``addr_width`` is at least 3.
    """

    def __init__(self, *, addr_width=16, csr_addr_width=14):
        if isinstance(addr_width, int) and not isinstance(addr_width, bool) and addr_width < 3:
            raise ValueError(f"AXI4-Lite address width must be at least 3, not {addr_width!r}")
        self._axil_signature = AxiLiteSignature(addr_width=addr_width, data_width=32)
        csr_signature = CsrBus(addr_width=csr_addr_width)
        self._csr_addr_width = csr_addr_width
        super().__init__({
            "axil": In(self._axil_signature),
            "csr": Out(csr_signature),
        })

    def elaborate(self, platform):
        m = Module()
        axil, csr = self.axil, self.csr
        addr_width = self._axil_signature.addr_width
        span = self._csr_addr_width + 2

        def beyond(addr):
            return (addr >> span) != 0 if addr_width > span else 0

        word = Signal(self._csr_addr_width)
        refused = Signal()
        prefer_write = Signal()
        # AW and W are taken independently (a master may offer either first)
        # and held here until both have come.
        aw_have, w_have = Signal(), Signal()
        aw_addr = Signal(addr_width)
        w_strb = Signal(4)
        with m.FSM():
            with m.State("IDLE"):
                take_read = axil.ar.valid & ~aw_have & ~w_have \
                    & ~(prefer_write & (axil.aw.valid | axil.w.valid))
                m.d.comb += [
                    axil.ar.ready.eq(take_read),
                    axil.aw.ready.eq(~aw_have & ~take_read),
                    axil.w.ready.eq(~w_have & ~take_read),
                ]
                with m.If(axil.aw.valid & axil.aw.ready):
                    m.d.sync += [aw_have.eq(1), aw_addr.eq(axil.aw.payload.addr)]
                with m.If(axil.w.valid & axil.w.ready):
                    m.d.sync += [w_have.eq(1), csr.w_data.eq(axil.w.payload.data),
                                 w_strb.eq(axil.w.payload.strb)]
                with m.If(aw_have & w_have):
                    m.d.sync += [
                        word.eq(aw_addr[2:]),
                        refused.eq(beyond(aw_addr) | (w_strb != 0b1111)),
                        aw_have.eq(0), w_have.eq(0), prefer_write.eq(0),
                    ]
                    m.next = "WRITE"
                with m.Elif(take_read):
                    m.d.sync += [
                        word.eq(axil.ar.payload.addr[2:]),
                        refused.eq(beyond(axil.ar.payload.addr)),
                        prefer_write.eq(1),
                    ]
                    m.next = "READ"
            with m.State("WRITE"):
                m.d.comb += [csr.addr.eq(word), csr.w_stb.eq(~refused)]
                m.next = "WRITE_RESULT"
            with m.State("WRITE_RESULT"):
                m.d.sync += [
                    axil.b.valid.eq(1),
                    axil.b.payload.resp.eq(Resp.SLVERR),
                ]
                with m.If(~refused & ~csr.error):
                    m.d.sync += axil.b.payload.resp.eq(Resp.OKAY)
                m.next = "WRITE_RESPONSE"
            with m.State("WRITE_RESPONSE"):
                with m.If(axil.b.ready):
                    m.d.sync += axil.b.valid.eq(0)
                    m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [csr.addr.eq(word), csr.r_stb.eq(~refused)]
                m.next = "READ_RESULT"
            with m.State("READ_RESULT"):
                m.d.sync += [
                    axil.r.valid.eq(1),
                    axil.r.payload.data.eq(csr.r_data),
                    axil.r.payload.resp.eq(Resp.SLVERR),
                ]
                with m.If(refused):
                    m.d.sync += axil.r.payload.data.eq(0)
                with m.If(~refused & ~csr.error):
                    m.d.sync += axil.r.payload.resp.eq(Resp.OKAY)
                m.next = "READ_RESPONSE"
            with m.State("READ_RESPONSE"):
                with m.If(axil.r.ready):
                    m.d.sync += axil.r.valid.eq(0)
                    m.next = "IDLE"
        return m
