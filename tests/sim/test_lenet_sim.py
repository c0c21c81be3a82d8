"""LeNet through the simulated SoC on CXXRTL (slow: the compile of the
Arty-sized SoC and millions of cycles): an inference pass and a training
iteration, every word of tensor memory equal to the NumPy machine's."""

import json
from pathlib import Path

import pytest

from fecaffe_hw import cli
from fecaffe_hw.sim import cxx_compiler

ROOT = Path(__file__).parents[2]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler for CXXRTL")]


@pytest.mark.parametrize("net,phase,batch", [
    ("lenet.prototxt", "test", 1),
    ("lenet_train_test.prototxt", "train", 2),
], ids=["inference", "training"])
def test_lenet_bit_exact_on_cxxrtl(net, phase, batch, capsys):
    status = cli.main(["sim", str(ROOT / "nets" / net), "--phase", phase, "--batch", str(batch),
                       "--backend", "cxxrtl", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["bit_exact"] and report["mismatched_words"] == 0
    # A layer shows up once per stage it runs in; its MACs are the schedule's.
    macs = {}
    for layer in report["layers"]:
        if layer["op"] == "Convolution":
            macs[layer["name"]] = macs.get(layer["name"], 0) + layer["macs"]
    assert set(macs) == {"conv1", "conv2"} and all(v > 0 for v in macs.values())
    print(f"LeNet {phase} batch {batch}: {report['cycles']:,} cycles "
          f"({report['time_at_clock_ms']:.2f} ms at {report['clock_mhz']} MHz), "
          f"{report['sim_cycles_per_s']:,.0f} cycles/s")
