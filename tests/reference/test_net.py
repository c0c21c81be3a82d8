"""Net construction and passes against Caffe's Net::Init rules and NumPy models."""

import numpy as np
import pytest

from fecaffe_hw import TEST, TRAIN, Net
from fecaffe_hw.caffe import caffe_pb2, prototxt
from fecaffe_hw.errors import NetError, WeightsError

rng = np.random.default_rng(1234)

INPUT = """
name: "tiny"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }
"""


def ip(name, bottom, n, top=None, extra=""):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" '
            f'top: "{top or name}" {extra} inner_product_param {{ num_output: {n} '
            f'weight_filler {{ type: "gaussian" std: 0.3 }} '
            f'bias_filler {{ type: "uniform" min: -0.2 max: 0.2 }} }} }}\n')


LOSS = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "%s" bottom: "label" '
        'top: "loss" }\n')

MLP = (INPUT + ip("ip1", "data", 5) + 'layer { name: "relu1" type: "ReLU" bottom: "ip1" '
       'top: "ip1" }\n' + ip("ip2", "ip1", 3) + LOSS % "ip2"
       + 'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" '
         'include { phase: TEST } }\n')


def net_of(text, phase=TRAIN, **kw):
    return Net(prototxt.parse_net(text), phase, seed=kw.pop("seed", 7), **kw)


def fill_inputs(net, seed=0):
    g = np.random.default_rng(seed)
    net.blobs["data"].data[...] = g.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = g.integers(0, 3, net.blobs["label"].shape)


def softmax_loss_grad(scores, labels):
    """Mean softmax cross-entropy and its gradient, in float64."""
    s = scores.astype(np.float64)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.mean(np.log(p[np.arange(n), labels.astype(int)]))
    g = p.copy()
    g[np.arange(n), labels.astype(int)] -= 1
    return loss, g / n


def test_structure_follows_caffe():
    net = net_of(MLP)
    assert net.layer_names == ["in", "ip1", "relu1", "ip2", "loss"]
    assert list(net.blobs) == ["data", "label", "ip1", "ip2", "loss"]
    assert net.inputs == ["data", "label"]
    assert net.outputs == ["loss"]
    assert list(net.params) == ["ip1", "ip2"]
    assert [b.shape for b in net.params["ip1"]] == [(5, 6), (5,)]
    assert net.blob_loss_weights["loss"] == 1.0
    # Input needs no backward; the loss does not propagate into the labels.
    assert net.layer_need_backward == [False, True, True, True, True]
    assert net.bottom_need_backward[1] == [False]
    assert net.bottom_need_backward[4] == [True, False]
    assert net.layer_dict["ip2"] is net.layers[3]

    test = net_of(MLP, TEST)
    # The TEST phase adds the Accuracy layer, so ip2 and label are split.
    assert test.layer_names == ["in", "label_in_1_split", "ip1", "relu1", "ip2",
                                "ip2_ip2_0_split", "loss", "acc"]
    assert test.outputs == ["acc", "loss"]
    assert test.bottom_names["acc"] == ["ip2_ip2_0_split_1", "label_in_1_split_1"]
    # Accuracy reaches no loss: no backward.
    assert test.layer_need_backward[-1] is False


def test_forward_backward_matches_numpy_model():
    net = net_of(MLP)
    fill_inputs(net)
    w1, b1 = (b.data.astype(np.float64) for b in net.params["ip1"])
    w2, b2 = (b.data.astype(np.float64) for b in net.params["ip2"])
    x = net.blobs["data"].data.astype(np.float64)
    labels = net.blobs["label"].data
    h_pre = x @ w1.T + b1
    h = np.maximum(h_pre, 0)
    loss, ds = softmax_loss_grad(h @ w2.T + b2, labels)

    got = net.forward_backward()
    assert got == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(net.params["ip2"][0].diff, ds.T @ h, rtol=1e-4, atol=1e-6)
    dh = (ds @ w2) * (h_pre > 0)
    np.testing.assert_allclose(net.params["ip1"][0].diff, dh.T @ x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip1"][1].diff, dh.sum(0), rtol=1e-4, atol=1e-6)
    # In place: relu1 reads and writes the one "ip1" Blob.
    assert net.layers[2] is net.layer_dict["relu1"]
    np.testing.assert_allclose(net.blobs["ip1"].data, h, rtol=1e-5, atol=1e-6)


SPLIT = (INPUT + 'force_backward: true\n' + ip("ipa", "data", 3) + ip("ipb", "data", 3)
         + 'layer { name: "sum" type: "Eltwise" bottom: "ipa" bottom: "ipb" top: "s" }\n'
         + LOSS % "s")


def test_split_sums_gradients_like_finite_differences():
    net = net_of(SPLIT)
    assert "data_in_0_split" in net.layer_names
    assert net.top_names["data_in_0_split"] == ["data_in_0_split_0", "data_in_0_split_1"]
    assert net.bottom_names["ipa"] == ["data_in_0_split_0"]
    assert net.bottom_names["ipb"] == ["data_in_0_split_1"]
    fill_inputs(net, seed=3)
    net.forward()
    grad = net.backward()["data"].astype(np.float64).copy()
    assert np.abs(grad).max() > 1e-3

    x0 = net.blobs["data"].data.copy()
    eps = 1e-2
    numeric = np.zeros_like(grad)
    for idx in np.ndindex(x0.shape):
        losses = []
        for sign in (1, -1):
            x = x0.astype(np.float64)
            x[idx] += sign * eps
            net.blobs["data"].data[...] = x
            losses.append(float(net.forward()["loss"]))
        numeric[idx] = (losses[0] - losses[1]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=2e-4)


def test_loss_weight_scales_loss_and_gradient():
    plain = net_of(MLP, seed=5)
    weighted = net_of(MLP.replace('top: "loss" }', 'top: "loss" loss_weight: 2.5 }'), seed=5)
    for net in (plain, weighted):
        fill_inputs(net, seed=9)
    a, b = plain.forward_backward(), weighted.forward_backward()
    assert b == pytest.approx(2.5 * a, rel=1e-6)
    np.testing.assert_allclose(weighted.params["ip1"][0].diff,
                               2.5 * plain.params["ip1"][0].diff, rtol=1e-5, atol=1e-7)


def test_loss_top_consumed_elsewhere_gets_a_split_carrying_the_weight():
    text = (INPUT + ip("ip1", "data", 3, extra='loss_weight: 0.5')
            + LOSS % "ip1")
    net = net_of(text)
    split = "ip1_ip1_0_split"
    assert split in net.layer_names
    # Split top 0 carries the loss (never consumed); top 1 feeds the loss layer.
    assert net.blob_loss_weights["ip1_ip1_0_split_0"] == 0.5
    assert net.bottom_names["loss"][0] == "ip1_ip1_0_split_1"
    fill_inputs(net)
    loss = net.forward_backward()
    ip1 = net.blobs["ip1"].data.astype(np.float64)
    want, ds = softmax_loss_grad(ip1, net.blobs["label"].data)
    assert loss == pytest.approx(want + 0.5 * ip1.sum(), rel=1e-5)
    np.testing.assert_allclose(net.blobs["ip1"].diff, ds + 0.5, rtol=1e-5, atol=1e-6)


def test_missing_bottom_names_layer_and_blob():
    text = INPUT + ip("ip1", "data", 3) + LOSS % "nowhere"
    with pytest.raises(NetError, match=r'layer "loss".*"nowhere"') as info:
        net_of(text)
    assert info.value.layer == "loss"


def test_top_produced_twice_is_an_error():
    text = INPUT + ip("ip1", "data", 3, top="x") + ip("ip2", "data", 3, top="x")
    with pytest.raises(NetError, match=r'layer "ip2".*"x"'):
        net_of(text)


def test_layer_setup_errors_are_net_errors():
    text = INPUT + ip("bad", "data", 0)
    with pytest.raises(NetError, match='layer "bad"'):
        net_of(text)
    text = INPUT + 'layer { name: "nope" type: "NoSuchType" bottom: "data" top: "y" }'
    with pytest.raises(NetError, match='layer "nope"'):
        net_of(text)


def test_backward_needs_follow_lr_mult_and_propagate_down():
    frozen = 'param { lr_mult: 0 } param { lr_mult: 0 }'
    net = net_of(INPUT + ip("ip1", "data", 5, extra=frozen) + ip("ip2", "ip1", 3) + LOSS % "ip2")
    # ip1's params are frozen and its input needs no gradient: skip it entirely.
    assert net.layer_need_backward == [False, False, True, True]
    assert net.bottom_need_backward[2] == [False]

    cut = net_of(INPUT + ip("ip1", "data", 5)
                 + ip("ip2", "ip1", 3, extra="propagate_down: false") + LOSS % "ip2")
    assert cut.bottom_need_backward[2] == [False]
    # Nothing above ip1 passes a gradient down, so ip1 skips backward too.
    assert cut.layer_need_backward[1] is False
    fill_inputs(cut)
    cut.forward_backward()
    assert not cut.params["ip1"][0].diff.any()
    assert cut.params["ip2"][0].diff.any()

    forced = net_of(MLP.replace('name: "tiny"', 'name: "tiny" force_backward: true'))
    assert forced.bottom_need_backward[1] == [True]
    assert forced.bottom_need_backward[4] == [True, False]  # never into the labels


def test_forward_kwargs_reshape_and_backward_returns_input_diffs():
    net = net_of(SPLIT)
    x = rng.standard_normal((7, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 7).astype(np.float32)
    out = net.forward(data=x, label=labels)
    assert net.blobs["s"].shape == (7, 3)
    want, ds = softmax_loss_grad(net.blobs["s"].data, labels)
    assert float(out["loss"]) == pytest.approx(want, rel=1e-5)
    diffs = net.backward(diffs=["s"])
    assert set(diffs) == {"data", "label", "s"}
    wa, wb = net.params["ipa"][0].data, net.params["ipb"][0].data
    np.testing.assert_allclose(diffs["data"], ds @ wa + ds @ wb, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="not an input"):
        net.forward(s=x)
    blobs = net.forward(end="ipa", blobs=["data"])
    assert list(blobs) == ["ipa", "data"]


def test_param_name_sharing_sums_gradients():
    shared = 'param { name: "w" } param { name: "b" }'
    text = (INPUT + ip("ipa", "data", 3, extra=shared) + ip("ipb", "data", 3, extra=shared)
            + 'layer { name: "sum" type: "Eltwise" bottom: "ipa" bottom: "ipb" top: "s" }\n'
            + LOSS % "s")
    net = net_of(text)
    assert net.params["ipa"][0] is net.params["ipb"][0]
    assert len(net.learnable_params) == 2
    fill_inputs(net)
    net.forward_backward()
    w, b = (p.data.astype(np.float64) for p in net.params["ipa"])
    x = net.blobs["data"].data.astype(np.float64)
    _, ds = softmax_loss_grad(2 * (x @ w.T + b), net.blobs["label"].data)
    np.testing.assert_allclose(net.params["ipa"][0].diff, 2 * ds.T @ x, rtol=1e-4, atol=1e-6)


def test_save_copy_from_round_trip(tmp_path):
    a = net_of(MLP, seed=1)
    b = net_of(MLP, TEST, seed=2)
    assert not np.array_equal(a.params["ip1"][0].data, b.params["ip1"][0].data)
    path = tmp_path / "w.caffemodel"
    a.save(path)
    b.copy_from(path)
    for name in a.params:
        for pa, pb in zip(a.params[name], b.params[name]):
            np.testing.assert_array_equal(pa.data, pb.data)
    saved = caffe_pb2.NetParameter()
    saved.ParseFromString(path.read_bytes())
    assert [layer.name for layer in saved.layer] == a.layer_names
    assert [layer.type for layer in saved.layer][:2] == ["Input", "InnerProduct"]
    assert not any(blob.diff for layer in saved.layer for blob in layer.blobs)

    # pycaffe's positional order: Net(prototxt, weights, phase).
    proto_path = tmp_path / "net.prototxt"
    proto_path.write_text(MLP)
    c = Net(str(proto_path), str(path), TEST)
    np.testing.assert_array_equal(c.params["ip2"][0].data, a.params["ip2"][0].data)
    assert c.phase == TEST


def test_copy_from_shape_mismatch_names_layer_and_shapes(tmp_path):
    a = net_of(MLP)
    wide = net_of(MLP.replace("num_output: 5", "num_output: 4"))
    path = tmp_path / "w.caffemodel"
    a.save(path)
    with pytest.raises(WeightsError, match=r'"ip1".*\(5, 6\).*\(4, 6\)'):
        wide.copy_from(path)
    # Unknown source layers are skipped, as Caffe does.
    renamed = net_of(MLP.replace('"ip1"', '"fresh"'))
    before = renamed.params["fresh"][0].data.copy()
    renamed.copy_from(path)
    np.testing.assert_array_equal(renamed.params["fresh"][0].data, before)
    np.testing.assert_array_equal(renamed.params["ip2"][0].data, a.params["ip2"][0].data)


def test_share_with_uses_the_train_blobs():
    train, test = net_of(MLP, seed=1), net_of(MLP, TEST, seed=2)
    test.share_with(train)
    assert test.params["ip1"][0] is train.params["ip1"][0]
    train.params["ip1"][0].data[...] = 0.25
    assert (test.params["ip1"][0].data == 0.25).all()


def test_seed_makes_nets_reproducible():
    a, b, c = net_of(MLP, seed=11), net_of(MLP, seed=11), net_of(MLP, seed=12)
    np.testing.assert_array_equal(a.params["ip1"][0].data, b.params["ip1"][0].data)
    assert not np.array_equal(a.params["ip1"][0].data, c.params["ip1"][0].data)


def test_layer_infos():
    rows = net_of(MLP).layer_infos()
    assert [r.name for r in rows] == ["in", "ip1", "relu1", "ip2", "loss"]
    ip1 = rows[1]
    assert (ip1.type, ip1.bottoms, ip1.tops, ip1.top_shapes) == \
        ("InnerProduct", ("data",), ("ip1",), ((4, 5),))
    assert ip1.params == 5 * 6 + 5
    assert ip1.macs == 4 * 6 * 5


def test_net_accepts_legacy_input_fields():
    text = ('name: "old" input: "data" input_shape { dim: 2 dim: 6 }\n'
            + ip("ip1", "data", 3))
    net = Net(prototxt.parse_net(text), phase=TEST)
    assert net.inputs == ["data"] and net.blobs["ip1"].shape == (2, 3)
    assert isinstance(net.param, caffe_pb2.NetParameter)


def test_permissive_param_sharing_shares_storage_across_shapes():
    text = (INPUT + ip("ipa", "data", 3, extra='param { name: "w" } param { name: "b" }')
            + 'layer { name: "ipt" type: "InnerProduct" bottom: "data" top: "t" '
              'param { name: "w" share_mode: PERMISSIVE } param { name: "b" } '
              'inner_product_param { num_output: 3 transpose: true } }\n')
    net = net_of(text)
    wa, wt = net.params["ipa"][0], net.params["ipt"][0]
    assert (wa.shape, wt.shape) == ((3, 6), (6, 3))
    wa.data[...] = np.arange(18).reshape(3, 6)
    # One storage viewed in two shapes: ipt's weight is ipa's, reinterpreted.
    np.testing.assert_array_equal(wt.data.ravel(), np.arange(18))
    assert len(net.learnable_params) == 2
