"""The ``fecaffe-hw`` command line: reports, training runs and one-line errors."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from fecaffe_hw.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
NETS = ROOT / "nets"
EXAMPLES = ROOT / "tests" / "caffe" / "examples"


def run_cli(*argv, cwd=None):
    """Run the installed entry point in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "fecaffe_hw", *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=1800)


def test_info_lenet_json(capsys):
    assert main(["info", str(NETS / "lenet.prototxt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["name"] == "LeNet"
    assert report["params"] == 431_080
    # Caffe's shapes for the deploy net at batch 64.
    shapes = {layer["name"]: layer["top_shapes"][0] for layer in report["layers"]}
    assert shapes == {
        "data": [64, 1, 28, 28], "conv1": [64, 20, 24, 24], "pool1": [64, 20, 12, 12],
        "conv2": [64, 50, 8, 8], "pool2": [64, 50, 4, 4], "ip1": [64, 500],
        "relu1": [64, 500], "ip2": [64, 10], "prob": [64, 10],
    }
    # conv1 20*24*24*25, conv2 50*8*8*500, ip1 500*800, ip2 10*500 MACs per image.
    assert report["macs"] == 64 * (288_000 + 1_600_000 + 400_000 + 5_000)
    for layer in report["layers"]:
        assert set(layer) == {"name", "type", "bottoms", "tops", "top_shapes", "params", "macs"}


def test_info_table_lists_every_layer(capsys):
    assert main(["info", str(NETS / "lenet.prototxt")]) == 0
    out = capsys.readouterr().out
    for name in ("conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"):
        assert f"\n{name} " in out
    assert "431,080" in out


@pytest.mark.parametrize("net", [
    "cifar10_quick_train_test.prototxt",
    "bvlc_reference_caffenet/train_val.prototxt",
    "bvlc_googlenet/train_val.prototxt",
])
def test_info_on_stock_nets_names_the_missing_data(net):
    # Stock nets parse; building them needs their LMDBs, and the error says which.
    result = run_cli("info", EXAMPLES / net)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith('fecaffe-hw info: error: layer "')
    assert "mean" in result.stderr or "lmdb" in result.stderr   # the file it looked for


@pytest.mark.parametrize("text, expected", [
    ('name: "x"\nlayer { name: "a" type: "Input" top: "a"\n', ':2:38: expected "}"'),
    ('layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 } } }\n'
     'layer { name: "b" type: "Frobnicate" bottom: "a" top: "b" }\n',
     'layer "b": unknown layer type'),
    ('layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 3 } } }\n'
     'layer { name: "r" type: "ReLU" bottom: "nothing" top: "r" }\n',
     'layer "r"'),
    ('layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\n'
     'layer { name: "c" type: "Convolution" bottom: "a" top: "c"\n'
     '        convolution_param { num_output: 2 kernel_size: 7 } }\n',
     'layer "c"'),
])
def test_bad_nets_give_one_line_and_exit_2(tmp_path, text, expected):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    result = run_cli("info", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    if expected.startswith(":"):
        assert str(path) + expected in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text("layer {")
    result = run_cli("--debug", "info", path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def _lenet_workdir(tmp_path, **solver_overrides):
    """A working directory with nets/, the bundled MNIST LMDBs and a solver."""
    from fecaffe_hw.data.mnist import prepare_mnist
    shutil.copytree(NETS, tmp_path / "nets")
    prepare_mnist(tmp_path / "data" / "mnist")
    solver = (NETS / "lenet_solver.prototxt").read_text()
    for key, value in solver_overrides.items():
        lines = [line for line in solver.splitlines() if not line.startswith(key + ":")]
        solver = "\n".join(lines + [f"{key}: {value}"]) + "\n"
    (tmp_path / "nets" / "lenet_solver.prototxt").write_text(solver)
    return tmp_path


def test_run_cpu_short_training(tmp_path):
    workdir = _lenet_workdir(tmp_path, test_interval=20, display=10, snapshot=20)
    result = run_cli("run", "nets/lenet_solver.prototxt", "--board", "cpu",
                     "--max-iter", "40", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["iterations"] == 40
    assert summary["final_loss"] < 2.0           # starts at ~2.3 (chance)
    assert summary["test_accuracy"] > 0.5        # chance is 0.1
    assert summary["wall_s"] > 0
    # Caffe's log lines, as parse_log.py expects them.
    assert "Iteration 20, Testing net (#0)" in result.stderr
    assert "Test net output #0: accuracy = " in result.stderr
    for iteration in (20, 40):
        assert (workdir / f"snapshots/lenet_iter_{iteration}.caffemodel").is_file()
        assert (workdir / f"snapshots/lenet_iter_{iteration}.solverstate").is_file()

    # Resuming from the first snapshot continues the count.
    result = run_cli("run", "nets/lenet_solver.prototxt", "--max-iter", "45", "--json",
                     "--resume", "snapshots/lenet_iter_40.solverstate", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["iterations"] == 45


def test_run_without_data_says_how_to_make_it(tmp_path):
    shutil.copytree(NETS, tmp_path / "nets")
    result = run_cli("run", "nets/lenet_solver.prototxt", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "fecaffe-hw data mnist" in result.stderr


@pytest.mark.slow
def test_lenet_reaches_caffe_accuracy_on_the_bundled_sample(tmp_path):
    """The issue's bar: 2,000 iterations, >= 96.5% on the 1,000 held-out digits."""
    workdir = _lenet_workdir(tmp_path)
    result = run_cli("run", "nets/lenet_solver.prototxt", "--board", "cpu", "--json",
                     cwd=workdir)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["iterations"] == 2000
    assert summary["test_accuracy"] >= 0.965, summary
