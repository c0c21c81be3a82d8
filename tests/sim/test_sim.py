"""``fecaffe-hw sim`` end to end: a compiled net through the SoC's host link in
both simulation backends, bit-exact with the NumPy machine, with the same
cycle counts; a mismatch is reported with the blob and word it hit."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fecaffe_hw import cli
from fecaffe_hw.sim import cxx_compiler
from fecaffe_hw.sim import run as sim_run
from fecaffe_hw.sim.run import simulate_workload
from fecaffe_hw.sim.workload import build_workload

NETS = Path(__file__).parents[1] / "compiler" / "nets"
ODD_IP = NETS / "odd_ip.prototxt"


@pytest.fixture(scope="module")
def odd_ip_pysim():
    workload = build_workload(ODD_IP, board="arty", phase="test", batch=2, seed=5)
    return workload, simulate_workload(workload, backend="pysim")


def test_pysim_runs_the_schedule_bit_exact(odd_ip_pysim):
    workload, result = odd_ip_pysim
    assert result.backend == "pysim"
    assert result.bit_exact, result.first_mismatch
    # Every layer that computes shows up, with the array's MACs where it has any.
    names = [layer["name"] for layer in result.layers]
    for rec in workload.plan.layers:
        if rec["type"] in ("InnerProduct", "Sigmoid", "ReLU"):
            assert rec["name"] in names
    for layer in result.layers:
        scheduled = sum(c.macs for c in workload.commands if c.layer == layer["name"])
        assert layer["macs"] == scheduled, layer
        assert 0 <= layer["utilization"] <= 1
    assert sum(layer["cycles"] for layer in result.layers) <= result.cycles
    # The host's losses come from logits the SoC computed.
    assert set(result.host.results) == {"loss", "loss2"}


def test_per_command_report_follows_the_schedule(odd_ip_pysim):
    workload, result = odd_ip_pysim
    commands = result.commands
    assert [(c["index"], c["opcode"], c["layer"]) for c in commands] == \
        [(k, c.opcode.name, c.layer) for k, c in enumerate(workload.commands)]
    issues = [c["issue"] for c in commands]
    assert issues[0] == 0 and all(b > a for a, b in zip(issues, issues[1:]))
    assert [c["wait"] for c in commands[1:]] == [b - a for a, b in zip(issues, issues[1:])]
    assert commands[-1]["opcode"] == "END" and commands[-1]["issue"] < result.cycles
    rows = workload.plan.rows
    by_unit = {}
    for c, command in zip(commands, workload.commands):
        assert c["cycles"] >= 1 and not c["bad"]
        if c["opcode"] == "GEMM":
            # k operand steps into the array, then its rows drain out.
            assert c["cycles"] >= command.fields["k"] + rows
            assert c["utilization"] == c["macs"] / (rows * workload.plan.cols * c["cycles"])
        elif c["opcode"] in ("DMA_LOAD", "DMA_STORE", "ELTWISE"):
            by_unit.setdefault("dma" if c["opcode"] != "ELTWISE" else "eltwise", []).append(c)
    # One command at a time on the DMA and on the elementwise engine: each
    # issues no earlier than its predecessor on that unit finished.
    for unit, runs in by_unit.items():
        for a, b in zip(runs, runs[1:]):
            assert b["issue"] >= a["issue"] + a["cycles"] - 1, (unit, a, b)
    assert sum(c["macs"] for c in commands) == sum(layer["macs"] for layer in result.layers)


@pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler for CXXRTL")
def test_cxxrtl_matches_pysim_cycle_for_cycle(odd_ip_pysim, capsys, tmp_path):
    workload, pysim = odd_ip_pysim
    csv_path = tmp_path / "commands.csv"
    status = cli.main(["sim", str(ODD_IP), "--backend", "cxxrtl", "--batch", "2",
                       "--seed", "5", "--json", "--commands", str(csv_path)])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["commands"] == json.loads(json.dumps(pysim.commands))
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["issue"]), int(r["cycles"]), r["opcode"]) for r in rows] == \
        [(c["issue"], c["cycles"], c["opcode"]) for c in pysim.commands]
    assert report["backend"] == "cxxrtl" and report["bit_exact"]
    assert report["mismatched_words"] == 0
    assert report["cycles"] == pysim.cycles
    assert [(layer["name"], layer["cycles"], layer["macs"]) for layer in report["layers"]] == \
        [(layer["name"], layer["cycles"], layer["macs"]) for layer in pysim.layers]
    assert report["max_abs_err_vs_float"] <= 16 * min(
        e["lsb"] for e in report["blob_errors"].values())
    assert report["sim_cycles_per_s"] > 0


@pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler for CXXRTL")
def test_a_mismatch_names_the_region_and_exits_nonzero(monkeypatch, capsys):
    real = sim_run.expected_memory

    def wrong(workload):       # the model "expects" one bit more in ip "fc"'s output
        words, host = real(workload)
        region = workload.plan.region("fc.data")
        words = words.copy()
        words[region.offset // 4 + 1] ^= np.uint32(1)
        return words, host
    monkeypatch.setattr(sim_run, "expected_memory", wrong)
    status = cli.main(["sim", str(ODD_IP), "--backend", "cxxrtl", "--batch", "2",
                       "--seed", "5"])
    err = capsys.readouterr().err
    assert status == 2
    assert "in 1 word;" in err and "fc.data+0x4" in err


def test_bad_requests_are_one_line_errors(capsys):
    deploy = Path(__file__).parents[2] / "nets" / "lenet.prototxt"
    assert cli.main(["sim", str(deploy), "--phase", "train"]) == 2     # no loss layer
    assert cli.main(["sim", str(ODD_IP), "--batch", "0"]) == 2
    assert cli.main(["sim", str(ODD_IP), "--memory-bandwidth", "8"]) == 2
    assert cli.main(["sim", str(ODD_IP), "--board", "ulx3s-85f",
                     "--memory-bandwidth", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("fecaffe-hw sim: error:") for line in err)
    assert "lenet_train_test" in err[0]
    assert "(0, 4]" in err[2] and "on chip" in err[3]


def test_slower_tensor_memory_costs_cycles_not_bits(odd_ip_pysim):
    """Half the DRAM bandwidth: the same words, more cycles, more memory stalls."""
    workload, full = odd_ip_pysim
    half = simulate_workload(workload, backend="pysim", memory_bandwidth=2.0)
    assert half.bit_exact, half.first_mismatch
    assert half.cycles > full.cycles
    stall = lambda r: sum(layer["stalls"]["mem_stall"] for layer in r.layers)  # noqa: E731
    assert stall(half) > stall(full)


def test_training_iteration_bit_exact_on_pysim():
    """One training iteration of a convolutional net (IM2COL with stride and
    padding, AVE pooling and its backward, TanH, InnerProduct, gradients
    accumulated over the batch, SGD with momentum and decay) through the
    SoC's host link: every word of tensor memory equals the machine's."""
    workload = build_workload(NETS / "odd_conv.prototxt", board="arty", phase="train",
                              batch=2, seed=7)
    result = simulate_workload(workload, backend="pysim")
    assert result.bit_exact, result.first_mismatch
    # A layer shows up once per stage it runs in (forward, backward, update).
    macs = {}
    for layer in result.layers:
        macs[layer["name"]] = macs.get(layer["name"], 0) + layer["macs"]
    for name in ("conv", "fc"):
        assert macs[name] == sum(c.macs for c in workload.commands if c.layer == name)
    assert macs["conv"] > 0 and macs["fc"] > 0


def test_host_summary_gives_each_images_predicted_class():
    """A deploy net's Softmax reports each image's top-1 class (its
    probabilities are not printed), loss and accuracy stay scalars."""
    from fecaffe_hw.simulate import _host_summary
    prob = np.zeros((3, 10, 1, 1))
    prob[0, 7], prob[1, 2], prob[2, 9] = 0.9, 0.6, 0.5
    assert _host_summary({"prob": prob}) == {"top1": [7, 2, 9]}
    assert _host_summary({"loss": 2.3}) == {"loss": 2.3}
