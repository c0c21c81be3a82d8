"""``fecaffe-hw generate``: plan, schedule, SoC RTL, register map and report."""

import json
import pathlib
import subprocess
import sys

import pytest

from fecaffe_hw.generate import generate

ROOT = pathlib.Path(__file__).resolve().parent.parent
LENET = ROOT / "nets" / "lenet.prototxt"
ODD_NETS = sorted((ROOT / "tests" / "compiler" / "nets").glob("*.prototxt"))


def _check_outputs(out, summary, *, phases):
    names = {pathlib.Path(f).name for f in summary["files"]}
    assert {"soc.v", "soc.il", "regmap.json", "regmap.h", "regmap.md", "plan.json",
            "schedule.json", "report.md", "report.json"} <= names
    for name in names:
        assert (out / name).stat().st_size > 0, name
    assert "module fecaffe_soc" in (out / "soc.v").read_text()
    regmap = json.loads((out / "regmap.json").read_text())
    assert regmap                                   # the generated map is not empty
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["rows"], plan["cols"]) == (summary["array"]["rows"], summary["array"]["cols"])
    schedule = json.loads((out / "schedule.json").read_text())
    assert sorted(schedule["phases"]) == sorted(phases)
    assert schedule["plan_hash"] == summary["plan_hash"]
    assert json.loads((out / "report.json").read_text()) == summary


def test_lenet_deploy_net_without_synthesis(tmp_path):
    summary = generate(LENET, board="arty", output=tmp_path, synth=False, quiet=True)
    _check_outputs(tmp_path, summary, phases=["inference"])
    assert summary["board"] == "arty" and summary["link"] == "uart"
    assert summary["resources"] is None and summary["fmax_mhz"] is None
    assert summary["capacity"] == {"lut": 20800, "ff": 41600, "dsp": 90, "bram36": 50}
    # the deploy net has no loss: the hardware can train, the schedule cannot
    assert summary["training"] is True
    assert any("no loss layer" in notice for notice in summary["notices"])
    assert any(notice.startswith("ip1: 400,500 weights") for notice in summary["notices"])


@pytest.mark.parametrize("net", ODD_NETS, ids=[n.stem for n in ODD_NETS])
def test_odd_nets_generate_for_training(tmp_path, net):
    summary = generate(net, board="arty", output=tmp_path, synth=False, quiet=True)
    _check_outputs(tmp_path, summary, phases=["train", "inference"])


def test_small_plan_verilog_synthesises_and_fits(tmp_path):
    """The written Verilog passes a yosys read and synthesis, and the report says it fits."""
    summary = generate(ODD_NETS[0], board="arty", output=tmp_path, rows=2, cols=2,
                       inference_only=True, quiet=True)
    assert summary["fits"] is True
    resources = summary["resources"]
    assert resources["dsp"] >= 4                   # one DSP48E1 per PE at least
    assert 0 < resources["lut"] <= summary["capacity"]["lut"]
    assert "| DSP |" in (tmp_path / "report.md").read_text()


def test_over_capacity_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fecaffe_hw", "generate", str(LENET), "--board", "arty",
         "--rows", "16", "--cols", "16", "--no-synth", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # progress lines, then exactly one error line, naming the limit
    errors = [l for l in result.stderr.splitlines() if l.startswith("fecaffe-hw generate: error:")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0])
    assert "16x16 array does not fit" in errors[0] and "DSP" in errors[0]


def test_json_summary_keys(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fecaffe_hw", "generate", str(ODD_NETS[1]), "--no-synth",
         "--inference-only", "--json", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {"board", "link", "array", "resources", "capacity", "fmax_mhz", "files"} <= set(summary)
    assert set(summary["array"]) == {"rows", "cols", "data_width", "acc_width"}
    assert set(summary["capacity"]) == {"lut", "ff", "dsp", "bram36"}


@pytest.mark.slow
@pytest.mark.parametrize("inference_only", [False, True], ids=["training", "inference"])
def test_lenet_on_arty_fits_by_its_own_report(tmp_path, inference_only):
    """The README's main job: the LeNet SoC (training-capable by default)
    synthesises and fits the A7-35T in every resource."""
    summary = generate(LENET, board="arty", output=tmp_path, inference_only=inference_only,
                       quiet=True)
    assert summary["fits"] is True, summary["resources"]
    for kind in ("lut", "ff", "dsp", "bram36"):
        assert 0 < summary["resources"][kind] <= summary["capacity"][kind], kind


def test_build_writes_the_vivado_tree_for_the_arty(tmp_path):
    summary = generate(LENET, board="arty", output=tmp_path, synth=False, build=True,
                       quiet=True)
    build = summary["build"]
    assert build["flow"] == "vivado" and build["command"].startswith("vivado -mode batch")
    root = pathlib.Path(build["root"])
    for name in ("build.tcl", "build.sh", "mig.tcl", "mig.prj"):
        assert (root / name).is_file(), name
    assert summary["bitstream"] is None and summary["fmax_mhz"] is None
