"""Text prototxt: Caffe's stock examples, legacy upgrades, phase filtering, errors."""

import pathlib

import pytest

from fecaffe_hw.caffe import (
    TEST, TRAIN, caffe_pb2, filter_net, format_prototxt, net_for_phase, parse_net, parse_solver,
    read_net, read_solver, solver_net_paths, solver_nets, upgrade_legacy_inputs, upgrade_net,
    write_prototxt,
)
from fecaffe_hw.errors import NetError, PrototxtError, SolverError

EXAMPLES = pathlib.Path(__file__).parent / "examples"
LENET = EXAMPLES / "lenet_train_test.prototxt"
CAFFENET = EXAMPLES / "bvlc_reference_caffenet"
GOOGLENET = EXAMPLES / "bvlc_googlenet"


def by_name(net):
    return {layer.name: layer for layer in net.layer}


def types(net):
    return [layer.type for layer in net.layer]


# -- stock examples ---------------------------------------------------------

@pytest.mark.parametrize("path, layers", [
    (LENET, 11),
    (EXAMPLES / "lenet.prototxt", 8),
    (EXAMPLES / "cifar10_quick_train_test.prototxt", 15),
    (CAFFENET / "train_val.prototxt", 26),
    # 12 stem + 9 inception modules x 14 + 2 pools + 2 aux heads x 10 + 6 final
    (GOOGLENET / "train_val.prototxt", 166),
])
def test_examples_parse(path, layers):
    assert len(read_net(path).layer) == layers


def test_lenet_facts():
    net = read_net(LENET)
    assert net.name == "LeNet"
    layers = by_name(net)
    conv1 = layers["conv1"].convolution_param
    assert (conv1.num_output, list(conv1.kernel_size), list(conv1.stride)) == (20, [5], [1])
    assert conv1.weight_filler.type == "xavier"
    assert [p.lr_mult for p in layers["conv1"].param] == [1, 2]
    assert layers["conv2"].convolution_param.num_output == 50
    assert layers["pool1"].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert layers["ip1"].inner_product_param.num_output == 500
    assert layers["ip2"].inner_product_param.num_output == 10
    # The two Data layers share a name; they differ in phase rule and source.
    data = [layer for layer in net.layer if layer.type == "Data"]
    assert [d.data_param.batch_size for d in data] == [64, 100]
    assert [d.include[0].phase for d in data] == [TRAIN, TEST]
    assert data[0].transform_param.scale == pytest.approx(1 / 256)
    assert data[0].data_param.backend == caffe_pb2.DataParameter.LMDB


def test_lenet_solver_facts():
    solver = read_solver(EXAMPLES / "lenet_solver.prototxt")
    assert solver.net == "examples/mnist/lenet_train_test.prototxt"
    assert list(solver.test_iter) == [100]
    assert (solver.test_interval, solver.max_iter, solver.snapshot) == (500, 10000, 5000)
    assert solver.base_lr == pytest.approx(0.01)
    assert solver.lr_policy == "inv"
    assert (solver.gamma, solver.power) == (pytest.approx(1e-4), 0.75)
    assert solver.momentum == pytest.approx(0.9)
    assert solver.weight_decay == pytest.approx(5e-4)
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU
    # Defaults from Caffe's schema, not written in the file.
    assert solver.type == "SGD"
    assert solver.regularization_type == "L2"
    assert solver.iter_size == 1 and solver.average_loss == 1
    assert solver.test_initialization and solver.snapshot_after_train
    assert solver.random_seed == -1 and solver.clip_gradients == -1


def test_cifar10_facts():
    solver = read_solver(EXAMPLES / "cifar10_quick_solver.prototxt")
    assert solver.snapshot_format == caffe_pb2.SolverParameter.HDF5
    assert (solver.lr_policy, solver.max_iter) == ("fixed", 4000)
    layers = by_name(read_net(EXAMPLES / "cifar10_quick_train_test.prototxt"))
    assert layers["pool2"].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert layers["conv1"].convolution_param.weight_filler.std == pytest.approx(1e-4)
    assert list(layers["conv3"].convolution_param.pad) == [2]
    assert layers["ip1"].inner_product_param.num_output == 64


def test_caffenet_facts():
    net = read_net(CAFFENET / "train_val.prototxt")
    layers = by_name(net)
    assert net.name == "CaffeNet"
    assert list(layers["conv1"].convolution_param.stride) == [4]
    assert [layers[n].convolution_param.group for n in ("conv1", "conv2", "conv3", "conv4")] \
        == [1, 2, 1, 2]
    assert layers["norm1"].lrn_param.local_size == 5
    assert layers["norm1"].lrn_param.beta == pytest.approx(0.75)
    assert layers["drop6"].dropout_param.dropout_ratio == 0.5
    assert layers["fc6"].inner_product_param.num_output == 4096
    assert [p.decay_mult for p in layers["fc8"].param] == [1, 0]
    solver = read_solver(CAFFENET / "solver.prototxt")
    assert (solver.lr_policy, solver.stepsize, solver.gamma) == ("step", 100000,
                                                                pytest.approx(0.1))


def test_googlenet_facts():
    net = read_net(GOOGLENET / "train_val.prototxt")
    assert types(net).count("Concat") == 9
    assert types(net).count("LRN") == 2
    losses = {layer.name: list(layer.loss_weight) for layer in net.layer
              if layer.type == "SoftmaxWithLoss"}
    assert losses == {"loss1/loss": [pytest.approx(0.3)], "loss2/loss": [pytest.approx(0.3)],
                      "loss3/loss3": [1.0]}
    layers = by_name(net)
    assert list(layers["inception_3a/output"].bottom) == [
        "inception_3a/1x1", "inception_3a/3x3", "inception_3a/5x5", "inception_3a/pool_proj"]
    assert layers["inception_5b/3x3"].convolution_param.num_output == 384
    assert layers["loss1/drop_fc"].dropout_param.dropout_ratio == pytest.approx(0.7)
    assert layers["loss3/top-5"].accuracy_param.top_k == 5
    assert list(layers["data"].transform_param.mean_value) == [104, 117, 123]

    train = filter_net(net, TRAIN)
    assert types(train).count("Accuracy") == 0 and types(train).count("SoftmaxWithLoss") == 3
    assert len(train.layer) == 166 - 1 - 6
    test = filter_net(net, TEST)
    assert types(test).count("Accuracy") == 6 and len(test.layer) == 166 - 1

    solver = read_solver(GOOGLENET / "quick_solver.prototxt")
    assert (solver.lr_policy, solver.power, solver.max_iter) == ("poly", 0.5, 2400000)
    assert solver.test_initialization is False
    assert solver.average_loss == 40


@pytest.mark.parametrize("solver_path, train_layers, test_layers", [
    (EXAMPLES / "lenet_solver.prototxt", 9, 10),
    (EXAMPLES / "cifar10_quick_solver.prototxt", 13, 14),
    (CAFFENET / "solver.prototxt", 24, 25),
    (GOOGLENET / "quick_solver.prototxt", 159, 165),
])
def test_solver_nets_of_examples(solver_path, train_layers, test_layers):
    nets = solver_nets(read_solver(solver_path), solver_path)
    assert nets.train.state.phase == TRAIN and len(nets.train.layer) == train_layers
    assert len(nets.test) == 1
    assert nets.test[0].state.phase == TEST and len(nets.test[0].layer) == test_layers


# -- legacy inputs ----------------------------------------------------------

def test_upgrade_input_dim():
    net = upgrade_legacy_inputs(read_net(EXAMPLES / "lenet.prototxt"))
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(s.dim) for s in first.input_param.shape] == [[64, 1, 28, 28]]
    assert [layer.name for layer in net.layer[1:3]] == ["conv1", "pool1"]
    assert len(net.layer) == 9
    assert not net.input and not net.input_dim and not net.input_shape


def test_upgrade_input_shape_two_inputs():
    net = parse_net('''
        input: "a" input_shape { dim: 2 dim: 3 }
        input: "b" input_shape { dim: 2 }
        layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "c" }''')
    upgrade_legacy_inputs(net)
    assert list(net.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 3], [2]]
    assert [layer.name for layer in net.layer] == ["input", "sum"]


def test_upgrade_input_without_shape_is_dropped():
    # A legacy .caffemodel names its inputs without shapes; Caffe just drops them.
    net = upgrade_legacy_inputs(parse_net('input: "data" layer { name: "x" }'))
    assert [layer.name for layer in net.layer] == ["x"] and not net.input


def test_upgrade_input_dim_count_mismatch():
    with pytest.raises(NetError, match="4 input_dim values, not 3"):
        upgrade_legacy_inputs(parse_net('input: "d" input_dim: 1 input_dim: 2 input_dim: 3'))


def test_net_for_phase_reads_upgrades_and_filters():
    net = net_for_phase(EXAMPLES / "lenet.prototxt", TEST)
    assert types(net)[0] == "Input" and len(net.layer) == 9
    original = read_net(LENET)
    train = net_for_phase(original, "TRAIN")
    assert len(original.layer) == 11  # the argument is left alone
    assert [layer.name for layer in train.layer] == [
        "mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]


V1_NET = '''
name: "OldNet"
layers {
  name: "mnist" type: DATA top: "data" top: "label"
  data_param { source: "train_lmdb" batch_size: 64 scale: 0.00390625 mirror: true }
  include { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  param: "w_shared" blob_share_mode: PERMISSIVE
  convolution_param { num_output: 20 kernel_size: 5 }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "acc" type: ACCURACY bottom: "conv1" bottom: "label" top: "acc"
         include { phase: TEST } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "conv1" bottom: "label" top: "loss"
         loss_weight: 2 }
'''


def test_upgrade_v1_net():
    net = upgrade_net(parse_net(V1_NET))
    assert not net.layers and net.name == "OldNet"
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("mnist", "Data"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("acc", "Accuracy"),
        ("loss", "SoftmaxWithLoss")]
    layers = by_name(net)
    # Data transformation fields move out of data_param (UpgradeNetDataTransformation).
    mnist = layers["mnist"]
    assert mnist.transform_param.scale == pytest.approx(1 / 256) and mnist.transform_param.mirror
    assert not mnist.data_param.HasField("scale") and not mnist.data_param.HasField("mirror")
    assert (mnist.data_param.source, mnist.data_param.batch_size) == ("train_lmdb", 64)
    assert [rule.phase for rule in mnist.include] == [TRAIN]
    conv = layers["conv1"]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert conv.param[0].name == "w_shared"
    assert conv.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not conv.param[1].HasField("name")
    assert conv.convolution_param.num_output == 20
    assert list(layers["loss"].loss_weight) == [2]
    assert [layer.name for layer in net_for_phase(parse_net(V1_NET), TRAIN).layer] == [
        "mnist", "conv1", "relu1", "loss"]


def test_v1_and_v2_layers_together_is_an_error():
    with pytest.raises(NetError, match="both 'layer' and deprecated 'layers'"):
        upgrade_net(parse_net('layer { name: "a" } layers { name: "b" }'))


def test_upgrade_batch_norm_freezes_three_param_specs():
    net = upgrade_net(parse_net('''
        layer { name: "bn3" type: "BatchNorm" param { lr_mult: 1 name: "m" } param { } param { } }
        layer { name: "bn1" type: "BatchNorm" param { lr_mult: 1 } }'''))
    bn3, bn1 = net.layer
    assert [(p.lr_mult, p.decay_mult) for p in bn3.param] == [(0, 0)] * 3
    assert bn3.param[0].name == "m"
    assert (bn1.param[0].lr_mult, bn1.param[0].decay_mult) == (1, 1)


# -- filtering --------------------------------------------------------------

def test_phase_filter_lenet():
    net = read_net(LENET)
    train = filter_net(net, TRAIN)
    assert "accuracy" not in by_name(train)
    assert by_name(train)["mnist"].data_param.source == "examples/mnist/mnist_train_lmdb"
    test = filter_net(net, TEST)
    assert "accuracy" in by_name(test)
    assert by_name(test)["mnist"].data_param.source == "examples/mnist/mnist_test_lmdb"
    assert len(test.layer) == 10 and test.state.phase == TEST


RULES_NET = '''
state { phase: TRAIN level: 3 stage: "from_file" }
layer { name: "always" }
layer { name: "deploy" include { stage: "deploy" } }
layer { name: "deploy_and_fast" include { stage: "deploy" stage: "fast" } }
layer { name: "deploy_or_fast" include { stage: "deploy" } include { stage: "fast" } }
layer { name: "not_deploy" include { not_stage: "deploy" } }
layer { name: "levels_1_to_2" include { min_level: 1 max_level: 2 } }
layer { name: "level_at_least_2" include { min_level: 2 } }
layer { name: "drop_in_test" exclude { phase: TEST } }
layer { name: "drop_deploy_test" exclude { phase: TEST stage: "deploy" } }
layer { name: "needs_file_stage" include { stage: "from_file" } }
'''


@pytest.mark.parametrize("phase, stages, level, kept", [
    (TRAIN, (), 0, {"always", "not_deploy", "drop_in_test", "drop_deploy_test",
                    "needs_file_stage"}),
    (TEST, (), 0, {"always", "not_deploy", "drop_deploy_test", "needs_file_stage"}),
    (TEST, ("deploy",), 0, {"always", "deploy", "deploy_or_fast", "needs_file_stage"}),
    (TEST, ("deploy", "fast"), 0, {"always", "deploy", "deploy_and_fast", "deploy_or_fast",
                                   "needs_file_stage"}),
    (TRAIN, ("fast",), 1, {"always", "deploy_or_fast", "not_deploy", "levels_1_to_2",
                           "drop_in_test", "drop_deploy_test", "needs_file_stage"}),
    (TRAIN, (), 2, {"always", "not_deploy", "levels_1_to_2", "level_at_least_2",
                    "drop_in_test", "drop_deploy_test", "needs_file_stage"}),
    (TRAIN, (), 5, {"always", "not_deploy", "level_at_least_2", "drop_in_test",
                    "drop_deploy_test", "needs_file_stage"}),
])
def test_stage_and_level_rules(phase, stages, level, kept):
    net = filter_net(parse_net(RULES_NET), phase, stages, level)
    assert {layer.name for layer in net.layer} == kept
    # Given stages add to the file's, as Caffe's Net(file, phase, level, stages) does.
    assert list(net.state.stage) == ["from_file", *stages]
    assert (net.state.phase, net.state.level) == (phase, level)


def test_filter_keeps_file_state_when_asked():
    net = filter_net(parse_net(RULES_NET), None, level=None)
    assert (net.state.phase, net.state.level) == (TRAIN, 3)
    assert {"level_at_least_2", "drop_in_test"} <= {layer.name for layer in net.layer}
    # A net without a state defaults to TEST, as NetState's schema says.
    assert filter_net(parse_net('layer { name: "x" }'), None).state.phase == TEST


def test_include_and_exclude_is_an_error():
    net = parse_net('layer { name: "both" include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(NetError, match="either include rules or exclude rules") as info:
        filter_net(net, TRAIN)
    assert str(info.value).startswith('layer "both": ')


def test_bad_phase_argument():
    with pytest.raises(ValueError, match="'VALIDATE'"):
        filter_net(parse_net(""), "VALIDATE")


# -- errors -----------------------------------------------------------------

def test_malformed_text_names_path_line_and_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "conv1"\n  type: "Convolution"\n')
    with pytest.raises(PrototxtError) as info:
        read_net(path)
    error = info.value
    assert str(error).startswith(f"{path}:{error.line}:{error.column}:")
    assert str(error).endswith('expected "}"')
    assert error.line == 4 and "\n" not in str(error)


def test_unknown_field_is_named():
    text = 'layer {\n  name: "c"\n  convolution_param {\n    kernal_size: 3\n  }\n}\n'
    with pytest.raises(PrototxtError) as info:
        parse_net(text, "nets/x.prototxt")
    assert str(info.value) == \
        'nets/x.prototxt:4:5: unknown field "kernal_size" in ConvolutionParameter'


@pytest.mark.parametrize("text, message", [
    ('layer { phase: TRIAN }', "unknown value TRIAN for Phase"),
    ('name: "a" name: "b"', 'field "name" given more than once in NetParameter'),
    ('layer { convolution_param { num_output: -3 } }', "value out of range: -3"),
    ('layers { layer { name: "old" } }',
     'unknown field "layer" in V1LayerParameter (V0 net format'),
    ('layer { clip_param { min: 1 } }', "missing required field layer[0].clip_param.max"),
])
def test_other_parse_errors(text, message):
    with pytest.raises(PrototxtError, match="^x.prototxt:") as info:
        parse_net(text, "x.prototxt")
    assert message in str(info.value)
    assert "'" + text not in str(info.value)  # the source line is not echoed


def test_solver_unknown_field():
    with pytest.raises(PrototxtError, match='unknown field "base_rl" in SolverParameter'):
        parse_solver("base_rl: 0.1", "s.prototxt")


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.prototxt"
    with pytest.raises(PrototxtError) as info:
        read_net(missing)
    assert str(info.value).startswith(f"{missing}: ") and "\n" not in str(info.value)


# -- solvers ----------------------------------------------------------------

def test_solver_type_upgrade():
    assert parse_solver("solver_type: ADAM").type == "Adam"
    assert not parse_solver("solver_type: NESTEROV").HasField("solver_type")
    assert parse_solver("solver_type: NESTEROV", upgrade=False).type == "SGD"
    with pytest.raises(SolverError, match="cannot both be specified"):
        parse_solver('solver_type: SGD type: "Adam"')


def test_solver_net_paths_resolution(tmp_path, monkeypatch):
    (tmp_path / "solvers").mkdir()
    (tmp_path / "solvers" / "net.prototxt").write_text("")
    (tmp_path / "cwd_net.prototxt").write_text("")
    solver_path = tmp_path / "solvers" / "solver.prototxt"
    monkeypatch.chdir(tmp_path)
    solver = parse_solver('train_net: "cwd_net.prototxt" '
                          'test_net: "net.prototxt" test_net: "examples/x/net.prototxt"')
    paths = solver_net_paths(solver, solver_path)
    assert paths.net is None
    assert paths.train_net == pathlib.Path("cwd_net.prototxt")   # working directory first
    assert paths.test_net == [tmp_path / "solvers" / "net.prototxt"] * 2
    with pytest.raises(SolverError, match='net "missing.prototxt" not found'):
        solver_net_paths(parse_solver('net: "missing.prototxt"'), solver_path)


def test_solver_nets_generic_net_for_every_test_iter(tmp_path):
    (tmp_path / "net.prototxt").write_text(RULES_NET)
    solver_path = tmp_path / "solver.prototxt"
    solver = parse_solver('''
        net: "net.prototxt" test_iter: 10 test_iter: 20 test_interval: 5
        train_state { stage: "fast" level: 1 }
        test_state { stage: "deploy" } test_state { level: 2 }''')
    nets = solver_nets(solver, solver_path)
    train = {layer.name for layer in nets.train.layer}
    # train_state merges over the file's state (level 3 -> 1, stages appended).
    assert (nets.train.state.phase, nets.train.state.level) == (TRAIN, 1)
    assert list(nets.train.state.stage) == ["from_file", "fast"]
    assert {"deploy_or_fast", "levels_1_to_2", "drop_in_test"} <= train
    # The file's own phase (TRAIN) overrides the solver's default TEST for test nets,
    # as Caffe's MergeFrom order does; test_state has no phase here.
    first, second = nets.test
    assert (first.state.phase, first.state.level) == (TRAIN, 3)
    assert "deploy" in {layer.name for layer in first.layer}
    assert second.state.level == 2 and "deploy" not in {layer.name for layer in second.layer}


def test_solver_nets_inline_params():
    solver = parse_solver('''
        train_net_param { name: "t" layer { name: "a" include { phase: TRAIN } }
                          layer { name: "b" include { phase: TEST } } }
        test_net_param { name: "v" layer { name: "a" include { phase: TRAIN } }
                         layer { name: "b" include { phase: TEST } } }
        test_iter: 3 test_interval: 100''')
    nets = solver_nets(solver)
    assert [layer.name for layer in nets.train.layer] == ["a"]
    assert [[layer.name for layer in net.layer] for net in nets.test] == [["b"]]


@pytest.mark.parametrize("text, message", [
    ('', "exactly one train net"),
    ('net_param { } train_net_param { }', "exactly one train net"),
    ('train_net_param { } test_net_param { } test_iter: 1 test_iter: 2 test_interval: 1',
     "test_iter must be specified for each test network"),
    ('train_net_param { } test_net_param { }', "test_iter must be specified"),
    ('net_param { } test_iter: 1 test_state { } test_state { } test_interval: 1',
     "test_state must be unspecified or specified once per test net"),
    ('net_param { } test_iter: 1', "test_interval must be positive"),
])
def test_solver_nets_errors(text, message):
    with pytest.raises(SolverError, match=message) as info:
        solver_nets(parse_solver(text), "s.prototxt")
    assert str(info.value).startswith("s.prototxt: ")


def test_solver_nets_relative_to_cwd_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.prototxt").write_text('layer { name: "x" }')
    nets = solver_nets(parse_solver('net: "here.prototxt"'), None)
    assert [layer.name for layer in nets.train.layer] == ["x"] and nets.test == []


# -- writing ----------------------------------------------------------------

@pytest.mark.parametrize("path", [GOOGLENET / "train_val.prototxt", EXAMPLES / "lenet.prototxt"])
def test_write_and_read_back(tmp_path, path):
    net = read_net(path)
    out = tmp_path / "copy.prototxt"
    write_prototxt(out, net)
    assert read_net(out) == net
    assert out.read_text() == format_prototxt(net)


def test_written_solver_keeps_values(tmp_path):
    solver = read_solver(EXAMPLES / "lenet_solver.prototxt")
    out = tmp_path / "solver.prototxt"
    write_prototxt(out, solver)
    text = out.read_text()
    assert 'lr_policy: "inv"' in text and "base_lr: 0.01" in text
    assert read_solver(out) == solver


def test_write_prototxt_into_missing_directory(tmp_path):
    with pytest.raises(PrototxtError, match="cannot write file") as info:
        write_prototxt(tmp_path / "no" / "x.prototxt", caffe_pb2.NetParameter())
    assert str(info.value).startswith(str(tmp_path / "no" / "x.prototxt") + ": ")
