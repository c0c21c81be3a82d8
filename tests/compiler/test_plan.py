"""Plans for LeNet and two odd nets on the board database."""

import json
import math

import numpy as np
from pathlib import Path

import pytest

from fecaffe_hw.compiler import BOARDS, Plan, board, plan_network
from fecaffe_hw.errors import PlanError
from fecaffe_hw.fixedpoint import Format

NETS = Path(__file__).parent / "nets"
ROOT = Path(__file__).parents[2]
LENET = ROOT / "nets" / "lenet_train_test.prototxt"
ODD_CONV = NETS / "odd_conv.prototxt"
ODD_IP = NETS / "odd_ip.prototxt"


@pytest.fixture(scope="module")
def lenet_arty():
    return plan_network(LENET, "arty")


def test_board_database():
    arty = board("arty")
    assert (arty.part, arty.lut, arty.ff, arty.dsp, arty.bram36) == \
        ("xc7a35ticsg324-1L", 20_800, 41_600, 90, 50)
    assert arty.bram_bytes == 225 * 1024
    assert arty.memory.kind == "DDR3L" and arty.memory.bytes == 256 << 20
    assert board("nitefury").links == ("pcie",)
    assert board("ulx3s-85f").memory is None and board("ulx3s-85f").bram36 == 104
    assert sum(b.family == "ecp5" for b in BOARDS.values()) >= 2
    for b in BOARDS.values():
        assert b.platform_class().__name__ == b.platform.split(":")[1]
    with pytest.raises(PlanError, match="unknown board 'zedboard'.*arty"):
        board("zedboard")


def test_lenet_on_arty(lenet_arty):
    plan = lenet_arty
    pes = plan.rows * plan.cols
    assert pes * plan.dsp["per_pe"] + sum(plan.dsp["reserve"].values()) <= 90
    assert plan.acc_width <= 48 and plan.acc_width >= 2 * plan.data_width
    assert plan.bram["total"] <= 50
    assert plan.residency["ip1"] == "tiled"
    notice = next(n for n in plan.notices if n.startswith("ip1:"))
    assert "400,500 weights" in notice and "tiled from DDR3L" in notice
    assert set(plan.units) >= {"array", "dma", "pool", "eltwise", "accumulator", "line_buffer"}
    assert plan.units["pool"]["kinds"] == ["MAX"]
    assert plan.units["eltwise"]["tables"] == []


def test_more_pes_on_the_a7_100(lenet_arty):
    big = plan_network(LENET, "arty-a7-100")
    assert big.rows * big.cols > lenet_arty.rows * lenet_arty.cols
    assert big.rows * big.cols * big.dsp["per_pe"] + sum(big.dsp["reserve"].values()) <= 240


def test_lenet_training_does_not_fit_ulx3s():
    with pytest.raises(PlanError) as info:
        plan_network(LENET, "ulx3s-85f")
    message = str(info.value)
    assert "ULX3S 85F" in message and "no external memory" in message
    assert "KB" in message and any(c.isdigit() for c in message)


def test_small_net_inference_fits_ulx3s():
    plan = plan_network(ODD_CONV, "ulx3s-85f", training=False)
    assert plan.memory["kind"] == "on-chip"
    assert plan.memory["used"] <= plan.memory["size"]
    assert plan.bram["total"] <= plan.bram["available"]
    assert "accumulator" not in plan.units
    assert not any(r.kind in ("gradient", "history", "diff") for r in plan.layout)


@pytest.mark.parametrize("net,board_name,training", [
    (LENET, "arty", True), (ODD_CONV, "arty", True), (ODD_IP, "ulx3s-85f", True),
    (ODD_CONV, "versa-ecp5-5g", False)])
def test_layout_disjoint_aligned(net, board_name, training):
    plan = plan_network(net, board_name, training=training)
    align = plan.memory["align"]
    real = sorted((r for r in plan.layout if r.kind != "alias"), key=lambda r: r.offset)
    for r in real:
        assert r.offset % align == 0, r
        if r.row:     # rows start on 32-bit words; the padding is all that is added
            assert r.pitch * r.elem_bytes % 4 == 0 and r.row <= r.pitch < r.row + 4, r
            assert r.size == -(-max(1, math.prod(r.shape)) // r.row) * r.pitch * r.elem_bytes
            values = np.arange(r.count) % 97 - 40
            assert (r.unpack(r.pack(values)) == values.reshape(r.shape)).all()
        else:
            assert r.size == max(1, math.prod(r.shape)) * r.elem_bytes
    for a, b in zip(real, real[1:]):
        assert a.end <= b.offset, (a, b)
    assert real[-1].end <= plan.memory["size"]
    for alias in (r for r in plan.layout if r.kind == "alias"):
        assert any(r.offset == alias.offset and r.size == alias.size for r in real)
    # Every learnable parameter has weight, gradient and history when training.
    for rec in plan.layers:
        for p in rec["params"]:
            kinds = {r.kind for r in plan.layout if r.name.startswith(p["key"] + ".")}
            assert kinds == ({"weight", "gradient", "history"} if training else {"weight"})


def test_units_follow_the_net():
    plan = plan_network(ODD_IP, "arty")
    assert "pool" not in plan.units and "line_buffer" not in plan.units
    assert plan.units["eltwise"]["tables"] == ["sigmoid"]
    conv = plan_network(ODD_CONV, "arty")
    assert conv.units["pool"]["kinds"] == ["AVE"] and conv.units["pool"]["backward"]
    assert conv.units["eltwise"]["tables"] == ["tanh"]
    assert conv.dsp["reserve"]["pool_ave"] == 4        # one AVE geometry, one divider
    assert "pool_ave" not in plan.dsp["reserve"]
    assert plan.layer("rows")["m"] == 6      # axis 2: (2, 3) rows of 5 * 4 features


def test_unsupported_layer_names_it(tmp_path):
    text = ODD_CONV.read_text().replace(
        'layer {\n  name: "tanh"',
        'layer {\n  name: "norm1"\n  type: "LRN"\n  bottom: "pool"\n  top: "pool"\n}\n'
        'layer {\n  name: "tanh"')
    path = tmp_path / "lrn.prototxt"
    path.write_text(text)
    with pytest.raises(PlanError) as info:
        plan_network(path, "arty")
    assert info.value.layer == "norm1"
    assert str(info.value).startswith('layer "norm1": type LRN is not supported')
    assert "Convolution" in str(info.value) and "InnerProduct" in str(info.value)


def test_array_request_validated():
    plan = plan_network(ODD_IP, "arty", rows=4, cols=6)
    assert (plan.rows, plan.cols) == (4, 6)
    with pytest.raises(PlanError, match="20x20 array does not fit.*DSP48E1"):
        plan_network(ODD_IP, "arty", rows=20, cols=20)
    with pytest.raises(PlanError, match="data width 30"):
        plan_network(ODD_IP, "arty", width=30)


def test_json_round_trip_and_hash(lenet_arty):
    text = lenet_arty.to_json()
    again = Plan.from_json(text)
    assert again.hash == lenet_arty.hash
    assert again.to_json() == text
    assert json.loads(text)["rows"] == lenet_arty.rows
    assert 0 <= lenet_arty.hash32 < 1 << 32
    other = plan_network(ODD_IP, "arty", width=12)
    assert other.hash != plan_network(ODD_IP, "arty", width=16).hash


def test_overrides_and_batch():
    plan = plan_network(ODD_IP, "arty", batch=5, overrides={"sig": Format(16, 15)})
    assert plan.batch == 5 and plan.region("data.data").shape == (5, 3, 5, 4)
    assert plan.formats["sig"]["data"] == Format(16, 15)
    # The Sigmoid tables serve one frac: the override sets it for every table blob.
    assert plan.units["eltwise"]["in_frac"] == plan.units["eltwise"]["aux_frac"] == 15
    assert plan.formats["rows"]["data"] == Format(16, 15)
    with pytest.raises(PlanError, match="nonexistent"):
        plan_network(ODD_IP, "arty", overrides={"nonexistent": Format(16, 8)})
