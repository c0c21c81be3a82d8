"""Caffe's Net with pycaffe's Python face, on the float reference layers.

Construction follows ``Net::Init``: filter the layers for the phase, insert
Split layers where a blob feeds several layers (``InsertSplits``, with
Caffe's names), build the layers in order, share in-place blobs, set loss
weights, and decide which layers and bottoms need backward. Names and
semantics are pycaffe's (``net.blobs``, ``net.params``, ``net.forward()``,
``net.backward()``, ...).
"""

import collections
import logging
import os

import numpy as np

from ..errors import FecaffeError, NetError, WeightsError
from .blob import Blob
from .layer import TEST, TRAIN, layer_class

__all__ = ["Net", "LayerInfo", "insert_splits", "split_layer_name", "split_blob_name"]

_log = logging.getLogger("fecaffe_hw.net")


def _caffe():
    # Imported late so that this module imports even while the Caffe front
    # end is being rebuilt; every Net needs it.
    from ..caffe import caffe_pb2, prototxt, weights
    return caffe_pb2, prototxt, weights


#: One row of :meth:`Net.layer_infos`: ``params`` counts learnable values,
#: ``macs`` is the layer's forward multiply-accumulates at the current shapes.
LayerInfo = collections.namedtuple(
    "LayerInfo", "name type bottoms tops top_shapes params macs")


def split_layer_name(layer_name, blob_name, blob_index):
    return f"{blob_name}_{layer_name}_{blob_index}_split"


def split_blob_name(layer_name, blob_name, blob_index, split_index):
    return f"{blob_name}_{layer_name}_{blob_index}_split_{split_index}"


def insert_splits(param):
    """A copy of ``param`` (a NetParameter) with Caffe's ``InsertSplits`` applied.

    A top consumed by more than one bottom (a nonzero ``loss_weight`` counts
    as a consumer) gets a Split layer right after its producer; each consumer
    reads its own split top, so their gradients sum in the Split's backward.
    """
    caffe_pb2, _, _ = _caffe()
    last_top = {}                 # blob name -> (layer index, top index)
    source_of_bottom = {}         # (layer, bottom) -> (layer, top)
    consumers = collections.Counter()
    loss_weight = {}
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise NetError(f'unknown bottom blob "{name}" (bottom {j}): no earlier '
                               f"layer produces it", layer=lp.name)
            source_of_bottom[i, j] = last_top[name]
            consumers[last_top[name]] += 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            idx = last_top[lp.top[j]]
            loss_weight[idx] = lp.loss_weight[j]
            if loss_weight[idx]:
                consumers[idx] += 1

    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    next_split = collections.Counter()
    for i, source in enumerate(param.layer):
        lp = out.layer.add()
        lp.CopyFrom(source)
        for j, name in enumerate(lp.bottom):
            idx = source_of_bottom[i, j]
            if consumers[idx] > 1:
                producer = param.layer[idx[0]].name
                lp.bottom[j] = split_blob_name(producer, name, idx[1], next_split[idx])
                next_split[idx] += 1
        for j, name in enumerate(lp.top):
            count = consumers[i, j]
            if count <= 1:
                continue
            weight = loss_weight.get((i, j), 0.0)
            split = out.layer.add()
            split.name = split_layer_name(lp.name, name, j)
            split.type = "Split"
            split.bottom.append(name)
            for k in range(count):
                split.top.append(split_blob_name(lp.name, name, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                # The loss now comes from split top 0, which no layer consumes.
                lp.ClearField("loss_weight")
                next_split[i, j] += 1
    return out


def _allow_force_backward(layer, bottom_index):
    allow = getattr(layer, "allow_force_backward", None)
    if callable(allow):
        return bool(allow(bottom_index))
    # Caffe's LossLayer refuses to force a gradient into its labels (bottom 1).
    return not (layer.is_loss and bottom_index == 1)


class Net:
    """A Caffe network built from a prototxt path or a ``caffe_pb2.NetParameter``.

    ``Net(net, phase, weights=None, *, stages=(), level=0, seed=None)``; the
    pycaffe order ``Net(net, weights, phase)`` works too. ``phase`` is
    :data:`TRAIN` or :data:`TEST`; ``stages`` and ``level`` select layers as
    Caffe's NetState rules do; ``seed`` (an int, ``None``, or a
    ``numpy.random.Generator``) seeds the one generator all layers share.
    Errors: :class:`NetError` naming the layer, :class:`WeightsError`.
    """

    def __init__(self, net, *args, phase=None, weights=None, stages=(), level=0, seed=None):
        if len(args) > 2:
            raise TypeError(f"Net() takes at most 3 positional arguments, got {1 + len(args)}")
        for arg in args:
            if arg is None:
                continue
            if isinstance(arg, (int, np.integer)) and not isinstance(arg, bool):
                if phase is not None:
                    raise TypeError("Net(): phase given twice")
                phase = int(arg)
            elif isinstance(arg, (str, os.PathLike)):
                if weights is not None:
                    raise TypeError("Net(): weights given twice")
                weights = arg
            else:
                raise TypeError(f"Net(): expected a phase or a weights path, got {arg!r}")
        if phase is None:
            raise TypeError("Net(): the phase (TRAIN or TEST) is required")
        if phase not in (TRAIN, TEST):
            raise ValueError(f"Net(): phase must be TRAIN (0) or TEST (1), not {phase!r}")
        self.phase = phase
        self.rng = np.random.default_rng(seed)

        caffe_pb2, prototxt, _ = _caffe()
        if isinstance(net, caffe_pb2.NetParameter):
            source = caffe_pb2.NetParameter()
            source.CopyFrom(net)
        elif isinstance(net, (str, os.PathLike)):
            source = net
        else:
            raise TypeError(f"Net(): expected a prototxt path or a NetParameter, not {net!r}")
        filtered = prototxt.net_for_phase(source, phase, stages=tuple(stages), level=level)
        self.param = insert_splits(filtered)
        self.name = self.param.name
        self._build()
        if weights is not None:
            self.copy_from(weights)

    # -- construction (Net::Init) -------------------------------------------

    def _build(self):
        self.layers = []
        self._layer_names = []
        self.blobs = collections.OrderedDict()
        self.inputs = []
        self.blob_loss_weights = {}
        self._bottom_vecs, self._top_vecs = [], []
        self.bottom_names = collections.OrderedDict()
        self.top_names = collections.OrderedDict()
        self._top_loss = []           # per layer, the loss weight of each top
        self.bottom_need_backward = []
        self.layer_need_backward = []
        self.learnable_params, self.params_lr, self.params_weight_decay = [], [], []
        self._param_owner = {}        # ParamSpec name -> (layer index, param index)
        self._param_flags = {}        # learnable index -> [has_lr, has_decay]
        self._learnable_index = {}    # (layer index, param index) -> learnable index
        blob_need_backward = {}
        available = set()

        for i, lp in enumerate(self.param.layer):
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetError(f"propagate_down is given {len(lp.propagate_down)} times for "
                               f"{len(lp.bottom)} bottoms", layer=lp.name)
            if lp.name in self._layer_names:
                _log.warning("layer name %r is used twice; pycaffe's layer_dict keeps "
                             "the last", lp.name)
            bottom, need_backward, bottom_flags = [], False, []
            for j, name in enumerate(lp.bottom):
                if name not in available:
                    raise NetError(f'unknown bottom blob "{name}" (bottom {j})', layer=lp.name)
                available.discard(name)
                bottom.append(self.blobs[name])
                flag = blob_need_backward[name]
                if lp.propagate_down:
                    flag = bool(lp.propagate_down[j])
                bottom_flags.append(flag)
                need_backward |= blob_need_backward[name]
            top = []
            for j, name in enumerate(lp.top):
                if j < len(lp.bottom) and lp.bottom[j] == name:
                    blob = self.blobs[name]
                elif name in self.blobs:
                    raise NetError(f'top blob "{name}" is produced by more than one layer',
                                   layer=lp.name)
                else:
                    blob = self.blobs[name] = Blob()
                    blob_need_backward[name] = False
                available.add(name)
                top.append(blob)
                if lp.type == "Input":
                    self.inputs.append(name)

            _log.info("Creating layer %s", lp.name)
            layer = self._make_layer(lp, bottom, top)
            _log.info("Setting up %s", lp.name)
            for name, blob in zip(lp.top, top):
                _log.info("Top shape: %s (%d)", " ".join(map(str, blob.shape)), blob.count)
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            self._bottom_vecs.append(bottom)
            self._top_vecs.append(top)
            self.bottom_names[lp.name] = list(lp.bottom)
            self.top_names[lp.name] = list(lp.top)
            self.bottom_need_backward.append(bottom_flags)

            weights = self._loss_weights(lp, layer)
            self._top_loss.append(weights)
            for name, w in zip(lp.top, weights):
                self.blob_loss_weights[name] = w

            if len(lp.param) > len(layer.blobs):
                raise NetError(f"{len(lp.param)} param specs for {len(layer.blobs)} "
                               f"parameter blobs", layer=lp.name)
            propagate = []
            for p in range(len(layer.blobs)):
                lr_mult = lp.param[p].lr_mult if p < len(lp.param) else 1.0
                propagate.append(lr_mult != 0)
                need_backward |= lr_mult != 0
            layer.param_propagate_down = propagate
            for p in range(len(layer.blobs)):
                self._append_param(i, p)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for name in lp.top:
                    blob_need_backward[name] = True

        self._prune_backward(blob_need_backward)
        for name, needed in zip(self._layer_names, self.layer_need_backward):
            _log.info("%s %s backward computation.", name,
                      "needs" if needed else "does not need")
        # Caffe keeps outputs in a std::set: sorted by name.
        self.outputs = sorted(available)
        self._blob_need_backward = blob_need_backward
        self._set_loss_diffs()
        for name in self.outputs:
            _log.info("This network produces output %s", name)
        _log.info("Network initialization done.")

    def _make_layer(self, lp, bottom, top):
        try:
            layer = layer_class(lp.type, layer_name=lp.name)(lp, self.phase, self.rng)
            layer.check_blob_counts(len(bottom), len(top))
            layer.setup(bottom, top)
            layer.reshape(bottom, top)
        except NetError as error:
            if error.layer is None:
                raise NetError(error.message, layer=lp.name) from error
            raise
        except FecaffeError:
            raise
        except Exception as error:
            raise NetError(f"{type(error).__name__}: {error}", layer=lp.name) from error
        return layer

    @staticmethod
    def _loss_weights(lp, layer):
        n = len(lp.top)
        given = list(lp.loss_weight)
        if given and len(given) != n:
            raise NetError(f"loss_weight is given {len(given)} times for {n} tops "
                           f"(give it once per top or not at all)", layer=lp.name)
        if not given and layer.is_loss and n:
            given = [1.0]
        return [float(w) for w in given] + [0.0] * (n - len(given))

    def _append_param(self, layer_index, param_index):
        """Caffe's ``AppendParam``: a named ParamSpec seen before shares its owner's blob."""
        lp = self.param.layer[layer_index]
        layer = self.layers[layer_index]
        spec = lp.param[param_index] if param_index < len(lp.param) else None
        name = spec.name if spec is not None else ""
        has_lr = spec is not None and spec.HasField("lr_mult")
        has_decay = spec is not None and spec.HasField("decay_mult")
        lr = spec.lr_mult if spec is not None else 1.0
        decay = spec.decay_mult if spec is not None else 1.0
        if not name or name not in self._param_owner:
            if name:
                self._param_owner[name] = (layer_index, param_index)
            index = len(self.learnable_params)
            self.learnable_params.append(layer.blobs[param_index])
            self.params_lr.append(float(lr))
            self.params_weight_decay.append(float(decay))
            self._param_flags[index] = [has_lr, has_decay]
            self._learnable_index[layer_index, param_index] = index
            return
        owner_layer, owner_param = self._param_owner[name]
        owner = self.layers[owner_layer].blobs[owner_param]
        mine = layer.blobs[param_index]
        permissive = spec.share_mode == spec.PERMISSIVE
        if (mine.count != owner.count) if permissive else (mine.shape != owner.shape):
            raise NetError(f'shared param "{name}" has shape {mine.shape} here but '
                           f"{owner.shape} in its owner, layer "
                           f'"{self._layer_names[owner_layer]}"', layer=lp.name)
        if mine.shape != owner.shape:
            # PERMISSIVE: same count, own shape, one storage; share data and diff
            # by giving this layer a view of the owner's arrays.
            view = Blob()
            view.data = owner.data.reshape(mine.shape)
            view.diff = owner.diff.reshape(mine.shape)
            layer.blobs[param_index] = view
        else:
            layer.blobs[param_index] = owner
        index = self._learnable_index[owner_layer, owner_param]
        self._learnable_index[layer_index, param_index] = index
        flags = self._param_flags[index]
        for k, (has, value, values, what) in enumerate(
                ((has_lr, lr, self.params_lr, "lr_mult"),
                 (has_decay, decay, self.params_weight_decay, "decay_mult"))):
            if not has:
                continue
            if flags[k] and values[index] != float(value):
                raise NetError(f'shared param "{name}" has mismatched {what} '
                               f"({value} here, {values[index]} in its owner)", layer=lp.name)
            flags[k] = True
            values[index] = float(value)

    def _prune_backward(self, blob_need_backward):
        """The backward half of ``Net::Init``: skip layers that reach no loss."""
        under_loss, skip = set(), set()
        for i in reversed(range(len(self.layers))):
            lp = self.param.layer[i]
            contributes = False
            skip_down = True
            for j, name in enumerate(lp.top):
                if self._top_loss[i][j] or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self.layer_need_backward[i] and skip_down:
                self.layer_need_backward[i] = False
                self.bottom_need_backward[i] = [False] * len(lp.bottom)
            if not contributes:
                self.layer_need_backward[i] = False
            for j, name in enumerate(lp.bottom):
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[i][j] = False
                if not self.bottom_need_backward[i][j]:
                    skip.add(name)
        if self.param.force_backward:
            for i, layer in enumerate(self.layers):
                self.layer_need_backward[i] = True
                for j, name in enumerate(self.param.layer[i].bottom):
                    flag = self.bottom_need_backward[i][j] or _allow_force_backward(layer, j)
                    self.bottom_need_backward[i][j] = flag
                    blob_need_backward[name] = blob_need_backward[name] or flag
                layer.param_propagate_down = [True] * len(layer.blobs)

    def _set_loss_diffs(self, index=None):
        # Caffe's SetLossWeights: a loss top's diff holds its weight, which is
        # the gradient the loss layer's backward starts from.
        for i in (range(len(self.layers)) if index is None else (index,)):
            for blob, weight in zip(self._top_vecs[i], self._top_loss[i]):
                if weight:
                    blob.diff[...] = weight

    # -- pycaffe's attributes -----------------------------------------------

    @property
    def layer_names(self):
        return list(self._layer_names)

    @property
    def layer_dict(self):
        return collections.OrderedDict(zip(self._layer_names, self.layers))

    @property
    def params(self):
        """Layer name -> list of its parameter Blobs, for layers that have any."""
        return collections.OrderedDict(
            (name, list(layer.blobs)) for name, layer in zip(self._layer_names, self.layers)
            if layer.blobs)

    # -- passes ---------------------------------------------------------------

    def _layer_index(self, name, what):
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetError(f'{what} layer "{name}" is not in net "{self.name}"') from None

    def _forward(self, start=0, end=None):
        """Run layers ``start..end`` (inclusive); return the float32 loss (Net::ForwardFromTo)."""
        end = len(self.layers) - 1 if end is None else end
        loss = np.float32(0)
        for i in range(start, end + 1):
            layer, bottom, top = self.layers[i], self._bottom_vecs[i], self._top_vecs[i]
            if layer.type != "Input":
                # Caffe's Layer::Forward reshapes first; Input keeps the shapes
                # the caller gave its tops (InputLayer::Reshape is empty).
                layer.reshape(bottom, top)
                self._set_loss_diffs(i)
            layer.forward(bottom, top)
            for blob, weight in zip(top, self._top_loss[i]):
                if weight:
                    loss += np.float32(np.dot(blob.data.ravel(), blob.diff.ravel()))
        return loss

    def _backward(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            if self.layer_need_backward[i]:
                self.layers[i].backward(self._top_vecs[i], list(self.bottom_need_backward[i]),
                                        self._bottom_vecs[i])

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """pycaffe's forward: copy ``inputs`` (name=array) into the input blobs
        (reshaping the net if the shape changes), run layers ``start..end``
        (layer names), return ``{name: data}`` for the outputs (or ``end``'s
        tops) plus the named ``blobs``."""
        for name, value in inputs.items():
            if name not in self.inputs:
                raise ValueError(f"forward(): {name!r} is not an input of net "
                                 f"\"{self.name}\" (inputs: {', '.join(self.inputs)})")
        if inputs:
            reshaped = False
            for name, value in inputs.items():
                value = np.asarray(value, np.float32)
                if value.shape != self.blobs[name].shape:
                    self.blobs[name].reshape(value.shape)
                    reshaped = True
                self.blobs[name].data[...] = value
            if reshaped:
                self.reshape()
        first = 0 if start is None else self._layer_index(start, "start")
        last = len(self.layers) - 1 if end is None else self._layer_index(end, "end")
        self._forward(first, last)
        names = list(self.outputs) if end is None else list(self.top_names[end])
        names += [b for b in (blobs or ()) if b not in names]
        return collections.OrderedDict((n, self.blobs[n].data) for n in names)

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """pycaffe's backward: copy ``top_diffs`` (name=array) into output diffs,
        run layers ``start`` down to ``end``, return ``{name: diff}`` for the
        inputs (or ``end``'s bottoms) plus the named ``diffs``."""
        for name, value in top_diffs.items():
            if name not in self.outputs:
                raise ValueError(f"backward(): {name!r} is not an output of net "
                                 f"\"{self.name}\" (outputs: {', '.join(self.outputs)})")
            self.blobs[name].diff[...] = value
        first = len(self.layers) - 1 if start is None else self._layer_index(start, "start")
        last = 0 if end is None else self._layer_index(end, "end")
        self._backward(first, last)
        names = list(self.inputs) if end is None else list(self.bottom_names[end])
        names += [d for d in (diffs or ()) if d not in names]
        return collections.OrderedDict((n, self.blobs[n].diff) for n in names)

    def forward_backward(self):
        """One forward and one backward pass; the loss (Caffe's ``ForwardBackward``)."""
        loss = self._forward()
        self._backward()
        return float(loss)

    def reshape(self):
        """Propagate shapes from the inputs through every layer (Net::Reshape)."""
        for i, layer in enumerate(self.layers):
            if layer.type != "Input":
                layer.reshape(self._bottom_vecs[i], self._top_vecs[i])
        self._set_loss_diffs()

    def clear_param_diffs(self):
        for blob in self.learnable_params:
            blob.diff[...] = 0

    # -- weights ----------------------------------------------------------------

    def to_proto(self, write_diff=False):
        """A NetParameter of every layer with its blobs (Caffe's ``Net::ToProto``)."""
        caffe_pb2, _, weights = _caffe()
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for lp, layer in zip(self.param.layer, self.layers):
            dst = out.layer.add()
            dst.CopyFrom(lp)
            dst.ClearField("blobs")
            for blob in layer.blobs:
                dst.blobs.add().CopyFrom(
                    weights.array_to_blob(blob.data, blob.diff if write_diff else None))
        return out

    def save(self, path):
        """Write the weights as a binary ``.caffemodel`` (no diffs)."""
        _, _, weights = _caffe()
        weights.write_caffemodel(path, self.to_proto())

    def copy_from(self, source):
        """Caffe's ``CopyTrainedLayersFrom``: a ``.caffemodel`` path or a NetParameter.

        Layers are matched by name; source layers this net lacks are skipped.
        A blob count or shape mismatch is a :class:`WeightsError`.
        """
        caffe_pb2, _, weights = _caffe()
        if isinstance(source, caffe_pb2.NetParameter):
            param, where = source, "NetParameter"
        else:
            param, where = weights.read_caffemodel(source), os.fspath(source)
        for src in list(param.layer) or list(param.layers):
            if src.name not in self._layer_names:
                _log.info("Ignoring source layer %s", src.name)
                continue
            layer = self.layers[self._layer_names.index(src.name)]
            if len(src.blobs) != len(layer.blobs):
                raise WeightsError(f'{where}: layer "{src.name}" has {len(src.blobs)} blobs '
                                   f"there, {len(layer.blobs)} in the net")
            for j, proto in enumerate(src.blobs):
                array = weights.blob_to_array(proto)
                target = layer.blobs[j]
                if not _shape_equals(array.shape, target.shape):
                    raise WeightsError(
                        f'{where}: cannot copy param {j} of layer "{src.name}": source '
                        f"shape {tuple(array.shape)} but the net has {tuple(target.shape)}")
                target.data[...] = array.reshape(target.shape)

    def share_with(self, other):
        """Use ``other``'s parameter Blobs for layers of the same name (Caffe's
        ``ShareTrainedLayersWith``): test nets see the train net's weights."""
        for name, source in zip(other._layer_names, other.layers):
            if name not in self._layer_names:
                continue
            index = self._layer_names.index(name)
            layer = self.layers[index]
            if len(layer.blobs) != len(source.blobs):
                raise NetError(f"{len(source.blobs)} parameter blobs in the source net, "
                               f"{len(layer.blobs)} here", layer=name)
            for j, blob in enumerate(source.blobs):
                if layer.blobs[j].shape != blob.shape:
                    raise NetError(f"param {j} has shape {blob.shape} in the source net, "
                                   f"{layer.blobs[j].shape} here", layer=name)
                old = layer.blobs[j]
                layer.blobs[j] = blob
                self.learnable_params = [blob if p is old else p for p in self.learnable_params]

    # -- information ----------------------------------------------------------

    def layer_infos(self):
        """One :class:`LayerInfo` per layer, in order, at the current shapes."""
        rows = []
        for i, (name, layer) in enumerate(zip(self._layer_names, self.layers)):
            rows.append(LayerInfo(
                name=name, type=layer.type,
                bottoms=tuple(self.bottom_names[name]), tops=tuple(self.top_names[name]),
                top_shapes=tuple(tuple(b.shape) for b in self._top_vecs[i]),
                params=sum(b.count for b in layer.blobs), macs=int(layer.macs)))
        return rows

    def __repr__(self):
        return f"Net({self.name!r}, {'TRAIN' if self.phase == TRAIN else 'TEST'}, " \
               f"{len(self.layers)} layers)"


def _shape_equals(source, target):
    source, target = tuple(source), tuple(target)
    if source == target:
        return True
    # Legacy blobs carry num/channels/height/width: compare as Caffe's
    # ShapeEquals does, padding the net's shape with leading 1s to 4 axes.
    if len(source) == 4 and len(target) <= 4:
        return source == (1,) * (4 - len(target)) + target
    return False
