"""Binary .caffemodel / .solverstate files, checked against hand-built wire bytes."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fecaffe_hw.caffe import (
    array_to_blob, blob_shape, blob_to_array, caffe_pb2, layer_blobs, parse_caffemodel,
    read_caffemodel, read_solverstate, write_caffemodel, write_solverstate,
)
from fecaffe_hw.errors import WeightsError

from wire_format import (float_field, length_delimited, packed_doubles, packed_floats, string,
                         varint, varint_field)


def blob_bytes(shape, values):
    # BlobProto: shape = 7 (BlobShape.dim = 1, packed int64), data = 5 (packed float).
    dims = length_delimited(1, b"".join(varint(d) for d in shape))
    return length_delimited(7, dims) + packed_floats(5, values)


def layer_bytes(name, type_, blobs):
    # LayerParameter: name = 1, type = 2, blobs = 7.
    return string(1, name) + string(2, type_) + b"".join(length_delimited(7, b) for b in blobs)


def net_bytes(name, layers):
    # NetParameter: name = 1, layer = 100.
    return string(1, name) + b"".join(length_delimited(100, layer) for layer in layers)


rng = np.random.default_rng(1701)


def test_read_hand_built_caffemodel(tmp_path):
    conv_w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    conv_b = rng.standard_normal(4).astype(np.float32)
    ip_w = rng.standard_normal((10, 36)).astype(np.float32)
    data = net_bytes("Tiny", [
        layer_bytes("data", "Input", []),
        layer_bytes("conv1", "Convolution", [blob_bytes(conv_w.shape, conv_w.ravel()),
                                             blob_bytes(conv_b.shape, conv_b)]),
        layer_bytes("ip1", "InnerProduct", [blob_bytes(ip_w.shape, ip_w.ravel())]),
    ])
    path = tmp_path / "tiny.caffemodel"
    path.write_bytes(data)

    net = read_caffemodel(path)
    assert net.name == "Tiny"
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("data", "Input"), ("conv1", "Convolution"), ("ip1", "InnerProduct")]
    blobs = layer_blobs(net)
    assert list(blobs) == ["conv1", "ip1"]
    assert [b.shape for b in blobs["conv1"]] == [(4, 1, 3, 3), (4,)]
    np.testing.assert_array_equal(blobs["conv1"][0], conv_w)
    np.testing.assert_array_equal(blobs["conv1"][1], conv_b)
    np.testing.assert_array_equal(blobs["ip1"][0], ip_w)
    assert all(b.dtype == np.float32 for bs in blobs.values() for b in bs)


def test_read_hand_built_solverstate(tmp_path):
    history = [rng.standard_normal((2, 3)).astype(np.float32),
               rng.standard_normal(5).astype(np.float32)]
    # SolverState: iter = 1, learned_net = 2, history = 3, current_step = 4.
    data = (varint_field(1, 12345)
            + string(2, "snapshots/lenet_iter_12345.caffemodel")
            + b"".join(length_delimited(3, blob_bytes(h.shape, h.ravel())) for h in history)
            + varint_field(4, 3))
    path = tmp_path / "lenet_iter_12345.solverstate"
    path.write_bytes(data)

    state = read_solverstate(path)
    assert state.iter == 12345 and state.current_step == 3
    assert state.learned_net == "snapshots/lenet_iter_12345.caffemodel"
    for got, want in zip([blob_to_array(h) for h in state.history], history, strict=True):
        np.testing.assert_array_equal(got, want)


def test_read_hand_built_v1_caffemodel(tmp_path):
    # Caffe models saved before 2015 (e.g. the original CaffeNet weights) use
    # NetParameter.layers = 2 with V1LayerParameter: bottom = 2, top = 3, name = 4,
    # type = 5 (enum: CONVOLUTION = 4, INNER_PRODUCT = 14), blobs = 6,
    # blobs_lr = 7 (unpacked floats, as old protobuf wrote them).
    weights = rng.standard_normal((3, 2)).astype(np.float32)
    v1_conv = (string(2, "data") + string(3, "conv") + string(4, "conv")
               + varint_field(5, 4)
               + length_delimited(6, blob_bytes(weights.shape, weights.ravel()))
               + float_field(7, 1.0) + float_field(7, 2.0))
    v1_ip = string(4, "ip") + varint_field(5, 14)
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(string(1, "Old") + length_delimited(2, v1_conv) + length_delimited(2, v1_ip))

    net = read_caffemodel(path)
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("conv", "Convolution"), ("ip", "InnerProduct")]
    assert list(net.layer[0].bottom) == ["data"] and list(net.layer[0].top) == ["conv"]
    assert [p.lr_mult for p in net.layer[0].param] == [1, 2]
    np.testing.assert_array_equal(layer_blobs(net)["conv"][0], weights)
    raw = read_caffemodel(path, upgrade=False)
    assert not raw.layer and [layer.name for layer in raw.layers] == ["conv", "ip"]


def test_writer_emits_caffes_wire_format(tmp_path):
    weights = np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float32)
    net = caffe_pb2.NetParameter(name="N")
    layer = net.layer.add(name="ip", type="InnerProduct")
    layer.blobs.append(array_to_blob(weights))
    path = tmp_path / "n.caffemodel"
    write_caffemodel(path, net)
    # Fields in field-number order, as protobuf serialises: blob data (5) before shape (7).
    blob = packed_floats(5, weights.ravel()) + length_delimited(7, length_delimited(
        1, varint(2) + varint(2)))
    expected = string(1, "N") + length_delimited(
        100, string(1, "ip") + string(2, "InnerProduct") + length_delimited(7, blob))
    assert path.read_bytes() == expected


def special_floats():
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4028235e38,
                     np.float32(1) / 3], dtype=np.float32)


def test_caffemodel_round_trip_is_bit_identical(tmp_path):
    net = caffe_pb2.NetParameter(name="RoundTrip")
    arrays = {}
    for i, shape in enumerate([(3, 2, 5, 5), (3,), (7, 11), ()]):
        values = rng.standard_normal(shape).astype(np.float32)
        if i == 0:
            values.ravel()[:8] = special_floats()
        arrays[f"l{i}"] = values
        layer = net.layer.add(name=f"l{i}", type="Convolution")
        layer.blobs.append(array_to_blob(values, diff=-values))
    path = tmp_path / "rt.caffemodel"
    write_caffemodel(path, net)
    first = path.read_bytes()
    again = read_caffemodel(path)
    assert again.SerializeToString() == first
    write_caffemodel(path, again)
    assert path.read_bytes() == first
    for name, blobs in layer_blobs(again).items():
        got, want = blobs[0], arrays[name]
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bitwise: NaN, -0.0, subnormals
        diff = blob_to_array(again.layer[int(name[1:])].blobs[0], diff=True)
        assert diff.tobytes() == (-want).tobytes()


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
                  elements=st.floats(width=32, allow_nan=False)))
def test_array_blob_round_trip(values):
    back = blob_to_array(caffe_pb2.BlobProto.FromString(
        array_to_blob(values).SerializeToString()))
    assert back.shape == values.shape and back.tobytes() == values.tobytes()


def test_solverstate_round_trip(tmp_path):
    state = caffe_pb2.SolverState(iter=500, learned_net="x.caffemodel", current_step=2)
    for shape in [(20, 1, 5, 5), (20,)]:
        state.history.append(array_to_blob(rng.standard_normal(shape).astype(np.float32)))
    path = tmp_path / "x.solverstate"
    write_solverstate(path, state)
    back = read_solverstate(path)
    assert back == state and back.SerializeToString() == path.read_bytes()


# -- blobs ------------------------------------------------------------------

def test_legacy_4d_dims_win_over_shape():
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    blob.shape.dim.extend([6])  # Caffe's FromProto reads the 4-D fields when any is set
    assert blob_shape(blob) == (1, 2, 1, 3)
    np.testing.assert_array_equal(blob_to_array(blob), np.arange(6).reshape(1, 2, 1, 3))


def test_legacy_partial_dims_default_to_zero():
    blob = caffe_pb2.BlobProto(num=4)
    assert blob_shape(blob) == (4, 0, 0, 0)
    assert blob_to_array(blob).shape == (4, 0, 0, 0)


def test_double_data_is_read_as_float32():
    values = [0.1, 1 / 3, 1e300]
    blob = caffe_pb2.BlobProto.FromString(
        length_delimited(7, length_delimited(1, varint(3))) + packed_doubles(8, values)
        + packed_doubles(9, [2.0, 4.0, 8.0]))
    with np.errstate(over="ignore"):
        want = np.array(values, dtype=np.float64).astype(np.float32)
    assert blob_to_array(blob).tobytes() == want.tobytes()
    np.testing.assert_array_equal(blob_to_array(blob, diff=True), [2, 4, 8])


def test_count_mismatch_is_named():
    blob = caffe_pb2.BlobProto(data=[1, 2, 3])
    blob.shape.dim.extend([2, 2])
    with pytest.raises(WeightsError, match=r'^layer "c" blob 0: blob of shape \(2, 2\) '
                                           r"holds 3 data values, expected 4$"):
        blob_to_array(blob, name='layer "c" blob 0')


def test_diff_shape_must_match():
    with pytest.raises(ValueError, match=r"\(3,\) differs from data shape \(2,\)"):
        array_to_blob(np.zeros(2), diff=np.zeros(3))


# -- foreign and damaged files ---------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"", "no layers"),
    (b'name: "LeNet"\nlayer {\n  name: "conv1"\n}\n', "not a Caffe binary NetParameter"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not a Caffe binary NetParameter"),
    (string(1, "net") + varint_field(15, 7), "unknown field number(s) 15"),
    # V1 layer (NetParameter field 2) holding a V0 layer (V1LayerParameter field 1).
    (string(1, "net") + length_delimited(2, length_delimited(1, string(1, "conv1"))),
     'layer "#0": V0 layer definition'),
    # Truncated in the middle of a blob, as an interrupted non-atomic writer leaves it.
    (net_bytes("t", [layer_bytes("a", "InnerProduct", [blob_bytes((4,), [1, 2, 3, 4])])])[:-5],
     "corrupt"),
])
def test_foreign_caffemodel_is_rejected(tmp_path, data, reason):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(WeightsError) as info:
        read_caffemodel(path)
    assert str(info.value).startswith(f"{path}: ") and reason in str(info.value)
    assert "\n" not in str(info.value)


def test_random_bytes_are_rejected():
    fooled = 0
    for seed in range(200):
        data = np.random.default_rng(seed).bytes(64)
        try:
            parse_caffemodel(data, "r.caffemodel")
            fooled += 1
        except WeightsError as error:
            assert str(error).startswith("r.caffemodel: ")
    assert fooled == 0


def test_foreign_solverstate_is_rejected(tmp_path):
    path = tmp_path / "x.solverstate"
    for data in [b"", varint_field(9, 1), b"\xff\xff\xff"]:
        path.write_bytes(data)
        with pytest.raises(WeightsError, match=f"^{path}: not a Caffe binary SolverState"):
            read_solverstate(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(WeightsError, match=f"^{tmp_path / 'none.caffemodel'}: cannot read"):
        read_caffemodel(tmp_path / "none.caffemodel")


# -- atomic writes ------------------------------------------------------------

def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "snap.caffemodel"
    old = caffe_pb2.NetParameter(name="old", layer=[caffe_pb2.LayerParameter(name="a")])
    write_caffemodel(path, old)
    before = path.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    new = caffe_pb2.NetParameter(name="new", layer=[caffe_pb2.LayerParameter(name="b")])
    with pytest.raises(KeyboardInterrupt):
        write_caffemodel(path, new)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.caffemodel"]


def test_write_into_missing_directory(tmp_path):
    with pytest.raises(WeightsError, match="cannot write file"):
        write_solverstate(tmp_path / "no" / "x.solverstate", caffe_pb2.SolverState())


def test_write_rejects_wrong_message(tmp_path):
    with pytest.raises(TypeError, match="SolverState"):
        write_caffemodel(tmp_path / "x.caffemodel", caffe_pb2.SolverState())
