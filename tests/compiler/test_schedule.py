"""Schedules: MACs per the stated rule, tiles within the buffers, words that decode."""

from pathlib import Path

import pytest

from fecaffe_hw.compiler import build_schedule, plan_network
from fecaffe_hw.compiler.plan import buffer_depths
from fecaffe_hw.reference.layer import TEST, TRAIN
from fecaffe_hw.reference.net import Net
from fecaffe_hw.runtime import isa
from fecaffe_hw.runtime.isa import Opcode, Stage, Unit

NETS = Path(__file__).parent / "nets"
ROOT = Path(__file__).parents[2]
GEMM_TYPES = ("Convolution", "InnerProduct")


def _macs(net, training):
    """Expected array MACs from the reference net: forward MACs per GEMM
    layer, times (1 + learns + bottom needs a gradient) when training."""
    total = 0
    for i, info in enumerate(net.layer_infos()):
        if info.type not in GEMM_TYPES:
            continue
        factor = 1
        if training and net.layer_need_backward[i]:
            factor += any(net.layers[i].param_propagate_down)
            factor += net.bottom_need_backward[i][0]
        total += factor * info.macs
    return total


@pytest.fixture(scope="module")
def lenet():
    plan = plan_network(ROOT / "nets" / "lenet_train_test.prototxt", "arty")
    return plan, build_schedule(plan)


def test_lenet_macs(lenet):
    plan, schedule = lenet
    # The deploy LeNet has the same GEMM layers; its conv1 reads the input,
    # so no backward-data there: 3F - F(conv1).
    deploy = Net(ROOT / "nets" / "lenet.prototxt", TEST, seed=0)
    infos = {i.name: i.macs for i in deploy.layer_infos() if i.type in GEMM_TYPES}
    forward = sum(infos.values())
    assert schedule.macs("inference") == forward == 146_752_000
    assert schedule.macs("train") == 3 * forward - infos["conv1"]


@pytest.mark.parametrize("name", ["odd_conv", "odd_ip"])
def test_odd_net_macs(name):
    path = NETS / f"{name}.prototxt"
    plan = plan_network(path, "arty")
    schedule = build_schedule(plan)
    assert schedule.macs("train") == _macs(Net(path, TRAIN, seed=0), True)
    assert schedule.macs("inference") == _macs(Net(path, TRAIN, seed=0), False)
    inference = build_schedule(plan_network(path, "arty", training=False))
    assert list(inference.phases) == ["inference"]
    assert inference.macs("inference") == _macs(Net(path, TEST, seed=0), False)


def test_lenet_command_counts(lenet):
    plan, schedule = lenet
    learnable = sum(p["learn"] for rec in plan.layers for p in rec["params"])
    assert schedule.count("train", Opcode.SGD_UPDATE) == learnable == 8
    assert schedule.count("inference", Opcode.SGD_UPDATE) == 0
    assert schedule.count("train", Opcode.POOL_FWD) == 2
    assert schedule.count("train", Opcode.POOL_BWD) == 2
    assert schedule.count("train", Opcode.ACC_BIAS) == 4
    assert schedule.count("train", Opcode.END) == 1
    assert schedule.commands("train")[-1].opcode == Opcode.END
    assert schedule.count("train", unit=Unit.HOST) == 2      # inputs, softmax loss
    # Every backward-weights C tile (summed over the batch's positions in the
    # array, then added once) goes into its gradient.
    first_chunks = [c for c in schedule.commands("train") if c.opcode == Opcode.GEMM
                    and c.stage == Stage.BACKWARD_WEIGHTS
                    and not c.fields["flags"] & isa.Flag.ACCUMULATE]
    assert len(first_chunks) == schedule.count("train", Opcode.ACC_ADD)
    assert schedule.cycles("train") > schedule.cycles("inference") > 0


def test_tiles_fit_buffers(lenet):
    """Forward GEMMs are array-sized and their operands lie in the buffers
    (the NumPy machine checks every command of whole schedules in tests/sim)."""
    plan, schedule = lenet
    a_words, b_words, c_words = buffer_depths(plan)
    for c in schedule.commands("inference"):
        if c.opcode == Opcode.GEMM:
            f = c.fields
            assert 1 <= f["m"] <= plan.rows and 1 <= f["n"] <= plan.cols
            assert f["a_offset"] % plan.rows == 0 and f["b_offset"] % plan.cols == 0
            assert f["a_offset"] // plan.rows + f["k"] <= a_words
            assert f["b_offset"] // plan.cols + f["k"] <= b_words
            assert f["c_offset"] // plan.cols + f["m"] <= c_words
            assert c.macs == f["m"] * f["n"] * f["k"]


def test_resident_weights_load_once(lenet):
    plan, schedule = lenet
    assert plan.residency["conv1"] == "resident"
    loads = [c for c in schedule.commands("inference") if c.layer == "conv1"
             and c.opcode == Opcode.DMA_LOAD and c.operands["operand"] == "A"]
    # One load per block of array rows, each weight exactly once.
    assert len(loads) == -(-20 // plan.rows)
    assert sum(c.fields["rows"] * c.fields["cols"] for c in loads) == 20 * 25


def test_words_decode_to_the_commands(lenet):
    plan, schedule = lenet
    words = schedule.to_words("inference")
    decoded = isa.decode_stream(words)
    commands = schedule.commands("inference")
    assert len(decoded) == len(commands)
    names = [rec["name"] for rec in plan.layers]
    for (opcode, fields), c in zip(decoded, commands):
        assert opcode == c.opcode and fields["stage"] == c.stage
        if c.layer:
            assert names[fields["layer"]] == c.layer
        for key, value in c.fields.items():
            assert fields[key] == value


def test_addresses_inside_the_layout(lenet):
    plan, schedule = lenet
    end = plan.memory_used
    for c in schedule.commands("train"):
        for key in ("addr", "src", "dst", "weight_addr", "history_addr", "grad_addr"):
            if key in c.fields:
                assert 0 <= c.fields[key] < end, (c.opcode.name, key)


def test_json(lenet):
    import json
    plan, schedule = lenet
    obj = json.loads(schedule.to_json())
    assert obj["plan_hash"] == plan.hash
    assert obj["phases"]["inference"]["macs"] == schedule.macs("inference")
    first = obj["phases"]["train"]["commands"][0]
    assert first["unit"] == "host" and first["opcode"] == "HOST"


def test_activation_backward_reads_what_caffe_reads():
    """ReLU's gradient gates on the forward input, Sigmoid's uses the forward output."""
    plan = plan_network(NETS / "odd_ip.prototxt", "arty")
    commands = build_schedule(plan).commands("train")
    aux = {c.layer: c.fields["aux"] for c in commands
           if c.opcode == Opcode.ELTWISE and c.stage == Stage.BACKWARD_DATA
           and c.layer in ("relu", "sig")}
    assert aux == {"relu": plan.region("sig.data").offset,     # ReLU's bottom
                   "sig": plan.region("sig.data").offset}      # Sigmoid's top
