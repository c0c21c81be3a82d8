"""The Xilinx XDMA bridge (PG195) as the PCIe SoC's host face: IP settings and glue.

The XDMA IP (module :data:`XDMA_MODULE`, created by the Vivado tree's
``xdma.tcl`` from :data:`XDMA_CONFIG`) is a black box to this package. Its
user side runs on its own ``axi_aclk`` (125 MHz for Gen2 x4 with a 128-bit
datapath); the SoC runs on the MIG's ``ui_clk``. :class:`XdmaBridge` sits
between them: an asynchronous FIFO per AXI4-Lite channel, and on each stream
an asynchronous FIFO plus a 128 <-> 32-bit width converter, so the SoC keeps
its one clock domain and its 32-bit ``h2c``/``c2h`` ports (docs/pcie.md).
"""

import textwrap

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from ..cores.axi import AxiLiteSignature, AxiStreamSignature

__all__ = ["XdmaBridge", "XDMA_MODULE", "XDMA_CONFIG", "XDMA_LANES", "XDMA_DATA_WIDTH",
           "XDMA_AXI_MHZ", "xdma_tcl", "xdma_axi_ports"]

#: Module name of the XDMA instance.
XDMA_MODULE = "xdma"
#: PCIe lanes, the AXI datapath width and ``axi_aclk`` of the configuration.
XDMA_LANES, XDMA_DATA_WIDTH, XDMA_AXI_MHZ = 4, 128, 125.0

#: CONFIG properties of the XDMA IP (Vivado names; PG195, "Customizing and
#: Generating the Core"). Gen2 x4 on the GTP quad, 128-bit at 125 MHz, one
#: H2C and one C2H AXI-Stream channel, the AXI4-Lite master on a 64 KiB BAR
#: translated to address 0 (the SoC's CSR bank, docs/pcie.md).
XDMA_CONFIG = {
    "mode_selection": "Advanced",
    "pcie_blk_locn": "X0Y0",
    "pl_link_cap_max_link_width": f"X{XDMA_LANES}",
    "pl_link_cap_max_link_speed": "5.0_GT/s",
    "ref_clk_freq": "100_MHz",
    "axi_data_width": f"{XDMA_DATA_WIDTH}_bit",
    "axisten_freq": f"{XDMA_AXI_MHZ:g}",
    "xdma_axi_intf_mm": "AXI_Stream",
    "xdma_rnum_chnl": "1",
    "xdma_wnum_chnl": "1",
    "axilite_master_en": "true",
    "axilite_master_size": "64",
    "axilite_master_scale": "Kilobytes",
    "pciebar2axibar_axil_master": "0x00000000",
    "xdma_num_usr_irq": "1",
    "pf0_device_id": "7024",
    "cfg_mgmt_if": "false",
    "xdma_sts_ports": "false",
}


def xdma_tcl():
    """``xdma.tcl``: create the XDMA IP with :data:`XDMA_CONFIG`, generate and synthesise it."""
    config = " \\\n".join(f"    CONFIG.{key} {{{value}}}" for key, value in XDMA_CONFIG.items())
    return textwrap.dedent("""\
        # Creates the XDMA PCIe bridge (module "{module}"; PG195) and synthesises it, so
        # synth_design sees a netlist, not a black box. Gen2 x4, AXI-Stream H2C/C2H
        # channel 0, AXI4-Lite master on BAR0 (64 KiB) -> the SoC's CSR bank.
        set here [file dirname [file normalize [info script]]]
        set ipdir [file join $here ip]
        file mkdir $ipdir
        create_ip -name xdma -vendor xilinx.com -library ip -module_name {module} -dir $ipdir
        """).format(module=XDMA_MODULE) + \
        f"set_property -dict [list \\\n{config}] [get_ips {XDMA_MODULE}]\n" + \
        f"generate_target {{instantiation_template synthesis}} [get_ips {XDMA_MODULE}]\n" \
        f"synth_ip [get_ips {XDMA_MODULE}]\n"


def xdma_axi_ports(signature, interface, prefix, suffix=""):
    """``{xdma port: (value, flow seen from the XDMA)}`` for an AXI interface of the bridge.

    ``signature``/``interface`` are the bridge's XDMA-facing member; XDMA is
    the other end, so a member the bridge takes ``In`` is an XDMA output.
    """
    from ..cores.axi import amba_ports
    return {f"{prefix}{name.lower()}{suffix}": (value, "o" if flow == In else "i")
            for name, flow, value in amba_ports(signature, interface)}


class XdmaBridge(wiring.Component):
    """Clock crossing and width conversion between the XDMA and the PCIe SoC.

    XDMA side, in domain ``xdma_domain``: ``xdma_axil`` In(AxiLiteSignature(32))
    (the IP's ``m_axil_*``), ``xdma_h2c`` In(AxiStreamSignature(xdma_width)),
    ``xdma_c2h`` Out(AxiStreamSignature(xdma_width)). SoC side, in
    ``soc_domain``: ``axil`` Out(AxiLiteSignature(csr_addr_width)) (address
    truncated: the BAR is that size), ``h2c`` Out(AxiStreamSignature(32)),
    ``c2h`` In(AxiStreamSignature(32)); these match ``Soc(link="pcie")``.

    H2C: each XDMA beat becomes one 32-bit word per TKEEP nibble that is set
    (XDMA's TKEEP is contiguous from byte 0), TLAST on the beat's last word.
    C2H: words are packed from lane 0 up; a beat leaves when full or on TLAST,
    with TKEEP covering the words it holds. One word per SoC cycle each way
    in steady state; latency is the asynchronous FIFOs' (a few cycles of each
    clock). ``stream_depth`` (a power of two, >= 4) is the beats each stream
    FIFO holds.
    """

    def __init__(self, *, xdma_width=XDMA_DATA_WIDTH, csr_addr_width=16, stream_depth=16,
                 xdma_domain="pcie", soc_domain="sync"):
        if xdma_width not in (64, 128, 256):
            raise ValueError(f"XDMA AXI-Stream width must be 64, 128 or 256, not {xdma_width!r}")
        if not isinstance(csr_addr_width, int) or not 2 <= csr_addr_width <= 32:
            raise ValueError(f"CSR address width must be an integer in [2, 32], "
                             f"not {csr_addr_width!r}")
        if not isinstance(stream_depth, int) or stream_depth < 4 \
                or stream_depth & (stream_depth - 1):
            raise ValueError(f"Stream FIFO depth must be a power of two >= 4, "
                             f"not {stream_depth!r}")
        if xdma_domain == soc_domain:
            raise ValueError(f"The XDMA and SoC domains must differ, both are {soc_domain!r}")
        self._xdma_width, self._depth = xdma_width, stream_depth
        self._xdma_domain, self._soc_domain = xdma_domain, soc_domain
        super().__init__({
            "xdma_axil": In(AxiLiteSignature(addr_width=32)),
            "xdma_h2c": In(AxiStreamSignature(xdma_width)),
            "xdma_c2h": Out(AxiStreamSignature(xdma_width)),
            "axil": Out(AxiLiteSignature(addr_width=csr_addr_width)),
            "h2c": Out(AxiStreamSignature(32)),
            "c2h": In(AxiStreamSignature(32)),
        })

    xdma_width = property(lambda self: self._xdma_width)
    lanes = property(lambda self: self._xdma_width // 32)

    def elaborate(self, platform):
        m = Module()
        xdma, soc = self._xdma_domain, self._soc_domain

        # AXI4-Lite: one small FIFO per channel, in the channel's direction.
        for name, (source, sink, w_domain, r_domain) in {
                "aw": (self.xdma_axil.aw, self.axil.aw, xdma, soc),
                "w": (self.xdma_axil.w, self.axil.w, xdma, soc),
                "ar": (self.xdma_axil.ar, self.axil.ar, xdma, soc),
                "b": (self.axil.b, self.xdma_axil.b, soc, xdma),
                "r": (self.axil.r, self.xdma_axil.r, soc, xdma)}.items():
            layout = data.Layout.cast(sink.payload.shape())
            cdc = fifo.AsyncFIFO(width=layout.size, depth=4, w_domain=w_domain,
                                 r_domain=r_domain)
            m.submodules[f"axil_{name}"] = cdc
            entry = Signal(layout)
            # Field by field, so a wider source address is truncated to the BAR.
            m.d.comb += [entry[field].eq(source.payload[field]) for field, _ in layout]
            m.d.comb += [
                cdc.w_data.eq(entry), cdc.w_en.eq(source.valid), source.ready.eq(cdc.w_rdy),
                sink.payload.eq(cdc.r_data), sink.valid.eq(cdc.r_rdy), cdc.r_en.eq(sink.ready),
            ]

        beat = data.Layout.cast(self.xdma_h2c.payload.shape())
        lanes = self.lanes

        # H2C: XDMA beats cross, then leave as words.
        m.submodules.h2c_fifo = h2c_fifo = fifo.AsyncFIFO(
            width=beat.size, depth=self._depth, w_domain=xdma, r_domain=soc)
        m.d.comb += [h2c_fifo.w_data.eq(self.xdma_h2c.payload),
                     h2c_fifo.w_en.eq(self.xdma_h2c.valid),
                     self.xdma_h2c.ready.eq(h2c_fifo.w_rdy)]
        held = Signal(beat)
        full = Signal()
        lane = Signal(range(lanes))
        keep = Cat(held.keep, Const(0, 4))      # a zero nibble past the last lane
        has = keep.word_select(lane, 4).any()
        final = (lane == lanes - 1) | ~keep.word_select(lane + 1, 4).any()
        out = self.h2c
        m.d.comb += [
            out.payload.data.eq(held.data.word_select(lane, 32)),
            out.payload.keep.eq(keep.word_select(lane, 4)),
            out.payload.last.eq(held.last & final),
            out.valid.eq(full & has),
        ]
        done = full & (~has | (out.ready & final))
        m.d.comb += h2c_fifo.r_en.eq(~full | done)
        with m.If(h2c_fifo.r_en & h2c_fifo.r_rdy):
            m.d[soc] += [held.eq(h2c_fifo.r_data), full.eq(1), lane.eq(0)]
        with m.Elif(done):
            m.d[soc] += full.eq(0)
        with m.Elif(out.valid & out.ready):
            m.d[soc] += lane.eq(lane + 1)

        # C2H: words gather into a beat, which crosses when full or on TLAST.
        m.submodules.c2h_fifo = c2h_fifo = fifo.AsyncFIFO(
            width=beat.size, depth=self._depth, w_domain=soc, r_domain=xdma)
        gathered_data = Signal(self._xdma_width)
        gathered_keep = Signal(self._xdma_width // 8)
        slot = Signal(range(lanes))
        word = self.c2h
        merged = Signal(beat)
        m.d.comb += [
            merged.data.eq(gathered_data),
            merged.data.word_select(slot, 32).eq(word.payload.data),
            merged.keep.eq(gathered_keep),
            merged.keep.word_select(slot, 4).eq(word.payload.keep),
            merged.last.eq(word.payload.last),
            word.ready.eq(c2h_fifo.w_rdy),
            c2h_fifo.w_data.eq(merged),
        ]
        with m.If(word.valid & word.ready):
            with m.If(word.payload.last | (slot == lanes - 1)):
                m.d.comb += c2h_fifo.w_en.eq(1)
                m.d[soc] += [slot.eq(0), gathered_keep.eq(0)]
            with m.Else():
                m.d[soc] += [slot.eq(slot + 1), gathered_data.eq(merged.data),
                             gathered_keep.eq(merged.keep)]
        m.d.comb += [self.xdma_c2h.payload.eq(c2h_fifo.r_data),
                     self.xdma_c2h.valid.eq(c2h_fifo.r_rdy),
                     c2h_fifo.r_en.eq(self.xdma_c2h.ready)]
        return m
