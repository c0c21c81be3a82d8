"""Caffe's binary files: .caffemodel (``NetParameter``) and .solverstate (``SolverState``).

Blobs convert to and from float32 NumPy arrays the way Caffe's
``Blob::FromProto`` / ``Blob::ToProto`` do. Files are written atomically (a
temporary file in the same directory, then ``os.replace``), so an interrupted
snapshot never leaves a truncated file behind.
"""

import pathlib

import numpy as np
from google.protobuf import message as _message
from google.protobuf import unknown_fields as _unknown_fields

from ..errors import NetError, WeightsError
from . import caffe_pb2
from .atomic import write_atomically
from .upgrade import upgrade_net

__all__ = [
    "blob_shape", "blob_to_array", "array_to_blob", "layer_blobs",
    "read_caffemodel", "write_caffemodel", "read_solverstate", "write_solverstate",
    "parse_caffemodel", "parse_solverstate",
]

def blob_shape(blob):
    """The shape of a ``BlobProto`` as a tuple, as Caffe's ``Blob::FromProto`` reads it.

    The deprecated ``num``/``channels``/``height``/``width`` win when any of
    them is set (a 4-D shape); otherwise ``shape.dim``.
    """
    legacy = ("num", "channels", "height", "width")
    if any(blob.HasField(field) for field in legacy):
        return tuple(getattr(blob, field) for field in legacy)
    return tuple(blob.shape.dim)


def blob_to_array(blob, *, diff=False, name=None):
    """A ``BlobProto``'s data (or ``diff``) as a float32 array of its shape.

    Reads ``double_data`` / ``double_diff`` when present (rounded to float32),
    else ``data`` / ``diff``. A count that does not match the shape is a
    :class:`WeightsError`; ``name`` labels it.
    """
    shape = blob_shape(blob)
    if any(dim < 0 for dim in shape):
        raise WeightsError(f"{_label(name)}negative dimension in blob shape {shape}")
    doubles, floats = (blob.double_diff, blob.diff) if diff else (blob.double_data, blob.data)
    values = np.array(doubles, dtype=np.float64) if len(doubles) else \
        np.array(floats, dtype=np.float32)
    count = int(np.prod(shape, dtype=np.int64))
    if values.size != count:
        what = "diff" if diff else "data"
        raise WeightsError(f"{_label(name)}blob of shape {shape} holds {values.size} "
                           f"{what} values, expected {count}")
    # Caffe narrows double_data with a plain cast: out-of-range values become inf.
    with np.errstate(over="ignore"):
        return values.astype(np.float32, copy=False).reshape(shape)


def _label(name):
    return f"{name}: " if name is not None else ""


def _packed_floats(field, array):
    # Encoding the packed field directly is ~50x faster than extending the
    # repeated field element by element (AlexNet has 61 M weights).
    payload = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def array_to_blob(array, diff=None):
    """A ``BlobProto`` holding ``array`` (and optionally ``diff``) as packed float32.

    Writes ``shape`` (not the deprecated 4-D fields), as Caffe's ``ToProto`` does.
    """
    array = np.asarray(array)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(dim) for dim in array.shape)
    encoded = _packed_floats(5, array)
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != array.shape:
            raise ValueError(f"Diff shape {diff.shape} differs from data shape {array.shape}")
        encoded += _packed_floats(6, diff)
    blob.MergeFromString(encoded)
    return blob


def layer_blobs(net):
    """``{layer name: [float32 array, ...]}`` for every layer of ``net`` with blobs."""
    return {layer.name: [blob_to_array(blob, name=f'layer "{layer.name}" blob {i}')
                         for i, blob in enumerate(layer.blobs)]
            for layer in net.layer if layer.blobs}


def _read_bytes(path):
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise WeightsError(f"{path}: cannot read file: {error.strerror or error}") from None


def _parse(message, data, where):
    """Parse ``data`` into ``message``; returns a description of the unknown
    top-level fields (``None`` if there are none)."""
    kind = type(message).__name__
    try:
        message.ParseFromString(data)
    except _message.DecodeError:
        raise WeightsError(f"{where}: not a Caffe binary {kind} "
                           "(protobuf wire format is corrupt)") from None
    unknown = {field.field_number for field in _unknown_fields.UnknownFieldSet(message)}
    if unknown:
        return f"unknown field number(s) {', '.join(map(str, sorted(unknown)))}"
    return None


def parse_caffemodel(data, path=None, *, upgrade=True):
    """Decode .caffemodel bytes into a ``NetParameter``; see :func:`read_caffemodel`."""
    where = path if path is not None else "<bytes>"
    net = caffe_pb2.NetParameter()
    # ParseFromString keeps fields it does not know; a real .caffemodel has none
    # at the top level, while other data often decodes as a few stray fields.
    unknown = _parse(net, data, where)
    if unknown:
        raise WeightsError(f"{where}: not a Caffe binary NetParameter ({unknown})")
    if not net.layer and not net.layers:
        raise WeightsError(f"{where}: not a Caffe binary NetParameter (no layers)")
    if upgrade:
        try:
            upgrade_net(net)
        except NetError as error:
            raise WeightsError(f"{where}: {error}") from None
    return net


def read_caffemodel(path, *, upgrade=True):
    """Read a .caffemodel file into a ``NetParameter`` (layers with their blobs).

    With ``upgrade`` deprecated forms are converted as Caffe's
    ``ReadNetParamsFromBinaryFileOrDie`` does (:func:`~.upgrade.upgrade_net`:
    V1 ``layers``, data transformation fields, legacy inputs). A file that is
    not a binary ``NetParameter`` (corrupt wire format, stray top-level fields,
    no layers) is a :class:`WeightsError` naming the file.
    """
    return parse_caffemodel(_read_bytes(path), path, upgrade=upgrade)


def write_caffemodel(path, net):
    """Write ``NetParameter`` ``net`` to ``path`` as a .caffemodel, atomically."""
    if not isinstance(net, caffe_pb2.NetParameter):
        raise TypeError(f"Expected a caffe_pb2.NetParameter, not {type(net).__name__}")
    write_atomically(path, net.SerializeToString(),
                     lambda message: WeightsError(f"{path}: {message}"))


def parse_solverstate(data, path=None):
    """Decode .solverstate bytes into a ``SolverState``; see :func:`read_solverstate`."""
    where = path if path is not None else "<bytes>"
    state = caffe_pb2.SolverState()
    unknown = _parse(state, data, where)
    if unknown or not data:
        raise WeightsError(f"{where}: not a Caffe binary SolverState "
                           f"({unknown or 'empty file'})")
    return state


def read_solverstate(path):
    """Read a .solverstate file (binaryproto format) into a ``SolverState``.

    Corrupt, empty or foreign files are a :class:`WeightsError` naming the file.
    """
    return parse_solverstate(_read_bytes(path), path)


def write_solverstate(path, state):
    """Write ``SolverState`` ``state`` to ``path``, atomically."""
    if not isinstance(state, caffe_pb2.SolverState):
        raise TypeError(f"Expected a caffe_pb2.SolverState, not {type(state).__name__}")
    write_atomically(path, state.SerializeToString(),
                     lambda message: WeightsError(f"{path}: {message}"))
