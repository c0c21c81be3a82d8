"""Caffe's upgrades of deprecated net and solver forms (``upgrade_proto.cpp``).

:func:`upgrade_net` is Caffe's ``UpgradeNetAsNeeded`` without the V0 step:
data-layer transformation fields, V1 ``layers`` to ``layer``, top-level
``input`` to an Input layer, and old three-parameter BatchNorm layers.
Every function works in place and returns its argument.
"""

from google.protobuf import unknown_fields as _unknown_fields

from ..errors import NetError, SolverError
from . import caffe_pb2

__all__ = [
    "upgrade_net", "upgrade_v1_net", "upgrade_data_transformation", "upgrade_legacy_inputs",
    "upgrade_batch_norm", "upgrade_solver_type", "V1_LAYER_TYPES",
]

_V1 = caffe_pb2.V1LayerParameter

# Caffe's UpgradeV1LayerType.
V1_LAYER_TYPES = {
    _V1.NONE: "", _V1.ABSVAL: "AbsVal", _V1.ACCURACY: "Accuracy", _V1.ARGMAX: "ArgMax",
    _V1.BNLL: "BNLL", _V1.CONCAT: "Concat", _V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    _V1.CONVOLUTION: "Convolution", _V1.DECONVOLUTION: "Deconvolution", _V1.DATA: "Data",
    _V1.DROPOUT: "Dropout", _V1.DUMMY_DATA: "DummyData", _V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    _V1.ELTWISE: "Eltwise", _V1.EXP: "Exp", _V1.FLATTEN: "Flatten", _V1.HDF5_DATA: "HDF5Data",
    _V1.HDF5_OUTPUT: "HDF5Output", _V1.HINGE_LOSS: "HingeLoss", _V1.IM2COL: "Im2col",
    _V1.IMAGE_DATA: "ImageData", _V1.INFOGAIN_LOSS: "InfogainLoss",
    _V1.INNER_PRODUCT: "InnerProduct", _V1.LRN: "LRN", _V1.MEMORY_DATA: "MemoryData",
    _V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", _V1.MVN: "MVN",
    _V1.POOLING: "Pooling", _V1.POWER: "Power", _V1.RELU: "ReLU", _V1.SIGMOID: "Sigmoid",
    _V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", _V1.SILENCE: "Silence",
    _V1.SOFTMAX: "Softmax", _V1.SOFTMAX_LOSS: "SoftmaxWithLoss", _V1.SPLIT: "Split",
    _V1.SLICE: "Slice", _V1.TANH: "TanH", _V1.WINDOW_DATA: "WindowData",
    _V1.THRESHOLD: "Threshold",
}

# The *_param fields a V1 layer shares, by name, with LayerParameter.
_V1_PARAMS = [field.name for field in _V1.DESCRIPTOR.fields if field.name.endswith("_param")]

# V1LayerParameter field 1 is `optional V0LayerParameter layer`, left out of our schema.
_V0_LAYER_FIELD = 1


def upgrade_net(net):
    """Caffe's ``UpgradeNetAsNeeded`` (V1 and later forms), in place; returns ``net``."""
    upgrade_data_transformation(net)
    upgrade_v1_net(net)
    upgrade_legacy_inputs(net)
    upgrade_batch_norm(net)
    return net


def upgrade_data_transformation(net):
    """Caffe's ``UpgradeNetDataTransformation``: V1 data layers' scale, mean_file,
    crop_size and mirror move from the data parameter into ``transform_param``."""
    kinds = {_V1.DATA: "data_param", _V1.IMAGE_DATA: "image_data_param",
             _V1.WINDOW_DATA: "window_data_param"}
    for layer in net.layers:
        if layer.type not in kinds:
            continue
        param = getattr(layer, kinds[layer.type])
        transform = layer.transform_param
        transform.SetInParent()  # Caffe's mutable_transform_param() creates it
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if param.HasField(field):
                setattr(transform, field, getattr(param, field))
                param.ClearField(field)
    return net


def upgrade_v1_net(net):
    """Caffe's ``UpgradeV1Net``: deprecated ``layers`` become ``layer`` entries.

    Types become strings (``SOFTMAX_LOSS`` -> ``"SoftmaxWithLoss"``); ``param``,
    ``blob_share_mode``, ``blobs_lr`` and ``weight_decay`` become ``ParamSpec``
    name, share_mode, lr_mult and decay_mult.
    """
    if not net.layers:
        return net
    if net.layer:
        raise NetError(f"net {net.name!r} has both 'layer' and deprecated 'layers' "
                       "fields; use 'layer' only")
    v1_layers = list(net.layers)
    net.ClearField("layers")
    for index, v1 in enumerate(v1_layers):
        if any(f.field_number == _V0_LAYER_FIELD for f in _unknown_fields.UnknownFieldSet(v1)):
            raise NetError("V0 layer definition (2014 and older) is not supported; upgrade "
                           "it with Caffe's upgrade_net_proto_text / _binary",
                           layer=v1.name or f"#{index}")
        layer = net.layer.add()
        layer.bottom.extend(v1.bottom)
        layer.top.extend(v1.top)
        if v1.HasField("name"):
            layer.name = v1.name
        for rule in v1.include:
            layer.include.add().CopyFrom(rule)
        for rule in v1.exclude:
            layer.exclude.add().CopyFrom(rule)
        if v1.HasField("type"):
            layer.type = V1_LAYER_TYPES[v1.type]
        for blob in v1.blobs:
            layer.blobs.add().CopyFrom(blob)
        for values, attribute in ((v1.param, "name"), (v1.blob_share_mode, "share_mode"),
                                  (v1.blobs_lr, "lr_mult"), (v1.weight_decay, "decay_mult")):
            for i, value in enumerate(values):
                while len(layer.param) <= i:
                    layer.param.add()
                setattr(layer.param[i], attribute, value)
        layer.loss_weight.extend(v1.loss_weight)
        for name in _V1_PARAMS:
            if v1.HasField(name):
                getattr(layer, name).CopyFrom(getattr(v1, name))
    return net


def upgrade_legacy_inputs(net):
    """Caffe's ``UpgradeNetInput``, in place; returns ``net``.

    Top-level ``input`` blobs with ``input_shape`` or ``input_dim`` (four per
    input) become one first layer ``name: "input" type: "Input"`` whose tops are
    the inputs and whose ``input_param.shape`` holds their shapes. Inputs
    without shapes (legacy .caffemodel files) are simply dropped, as in Caffe.
    """
    inputs = list(net.input)
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape and len(net.input_shape) != len(inputs):
        raise NetError(f"net {net.name!r}: {len(inputs)} input(s) but "
                       f"{len(net.input_shape)} input_shape(s)")
    if not has_shape and has_dim and len(net.input_dim) != 4 * len(inputs):
        raise NetError(f"net {net.name!r}: {len(inputs)} input(s) need "
                       f"{4 * len(inputs)} input_dim values, not {len(net.input_dim)}")
    if has_shape or has_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input", top=inputs)
        for i in range(len(inputs)):
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer, *net.layer]
        del net.layer[:]
        net.layer.extend(layers)
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)
    return net


def upgrade_batch_norm(net):
    """Caffe's ``UpgradeNetBatchNorm``: a BatchNorm layer declaring the three
    ``param`` specs of the old definition gets lr_mult and decay_mult 0 on each
    (its statistics are not learned by gradient)."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0
    return net


_SOLVER_TYPE_NAMES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}


def upgrade_solver_type(solver, *, path=None):
    """Caffe's ``UpgradeSolverType``, in place: ``solver_type: ADAM`` -> ``type: "Adam"``."""
    if not solver.HasField("solver_type"):
        return solver
    if solver.HasField("type"):
        where = f"{path}: " if path is not None else ""
        raise SolverError(f"{where}old solver_type field (enum) and new type field "
                          "(string) cannot both be specified")
    solver.type = _SOLVER_TYPE_NAMES[solver.solver_type]
    solver.ClearField("solver_type")
    return solver
