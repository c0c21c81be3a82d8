"""Caffe's DataTransformer: mean subtraction, scaling, cropping and mirroring.

Follows ``data_transformer.cpp``: each output value is
``(pixel - mean) * scale`` in float32, where ``mean`` is the mean image from
``mean_file`` (taken at the pixel's position before cropping) or one
``mean_value`` per channel. In TRAIN the crop is at a random offset and the
image is mirrored left-right with probability 1/2 (when ``mirror``); in TEST
the crop is centred and no image is mirrored.
"""

import math
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["DataTransformer", "read_mean_file", "write_mean_file"]

# Caffe's Phase values (as in reference.layer; repeated to keep this module light).
_TRAIN, _TEST = 0, 1


def _caffe_pb2():
    from ..caffe import caffe_pb2
    return caffe_pb2


def read_mean_file(path):
    """The mean image ``(C, H, W)`` float32 in a Caffe ``BlobProto`` binaryproto."""
    from google.protobuf.message import DecodeError
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such mean file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read mean file: {error.strerror or error}") from None
    try:
        blob = _caffe_pb2().BlobProto.FromString(raw)
    except DecodeError:
        raise DataError(f"{path}: not a Caffe BlobProto (binaryproto) file") from None
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    else:  # the legacy 4-d fields, which compute_image_mean writes
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or values.size != math.prod(shape) or values.size == 0:
        raise DataError(f"{path}: mean blob of shape {shape} with {values.size} values "
                        "is not one C x H x W image")
    return values.reshape(shape)


def write_mean_file(path, mean):
    """Write ``mean`` (``C, H, W``) as a binaryproto, as ``compute_image_mean`` does."""
    mean = np.asarray(mean, np.float32)
    if mean.ndim != 3:
        raise ValueError(f"mean image must be C x H x W, not shape {mean.shape}")
    blob = _caffe_pb2().BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1],
                                  width=mean.shape[2])
    blob.data.extend(mean.ravel().tolist())
    Path(path).write_bytes(blob.SerializeToString())


class DataTransformer:
    """Turns ``(C, H, W)`` images (``uint8`` or float) into float32 network input.

    Arguments are those of Caffe's ``TransformationParameter``: ``scale``;
    ``mean_value`` (none, one for all channels, or one per channel) or
    ``mean_file`` (a binaryproto path), not both; ``crop_size`` (0: no crop);
    ``mirror``. ``phase`` is 0 (TRAIN) or 1 (TEST); ``rng`` (a
    ``numpy.random.Generator``) draws the TRAIN crop offsets and mirror flips.
    """

    def __init__(self, *, scale=1.0, mean_value=(), mean_file=None, crop_size=0,
                 mirror=False, phase=_TRAIN, rng=None):
        if not isinstance(scale, (int, float, np.floating)) or not math.isfinite(scale):
            raise ValueError(f"scale must be a finite number, not {scale!r}")
        mean_value = np.atleast_1d(np.asarray(mean_value, np.float32))
        if mean_value.ndim != 1 or not np.all(np.isfinite(mean_value)):
            raise ValueError(f"mean_value must be finite numbers, not {mean_value.tolist()!r}")
        if mean_file and mean_value.size:
            raise ValueError("cannot specify mean_file and mean_value at the same time")
        if not isinstance(crop_size, (int, np.integer)) or crop_size < 0:
            raise ValueError(f"crop_size must be a non-negative integer, not {crop_size!r}")
        if phase not in (_TRAIN, _TEST):
            raise ValueError(f"phase must be 0 (TRAIN) or 1 (TEST), not {phase!r}")
        self._scale = np.float32(scale)
        self._mean_value = mean_value
        self._mean_file = Path(mean_file) if mean_file else None
        self._mean_image = read_mean_file(self._mean_file) if self._mean_file else None
        self._crop = int(crop_size)
        self._mirror = bool(mirror)
        self._phase = phase
        self.rng = rng if rng is not None else np.random.default_rng()

    @classmethod
    def from_param(cls, param, phase, rng):
        """From a ``caffe_pb2.TransformationParameter``."""
        return cls(scale=param.scale, mean_value=list(param.mean_value),
                   mean_file=param.mean_file or None, crop_size=param.crop_size,
                   mirror=param.mirror, phase=phase, rng=rng)

    scale = property(lambda self: float(self._scale))
    crop_size = property(lambda self: self._crop)
    mirror = property(lambda self: self._mirror)
    phase = property(lambda self: self._phase)

    @property
    def mean_value(self):
        return tuple(float(v) for v in self._mean_value)

    @property
    def mean_file(self):
        return self._mean_file

    def output_shape(self, input_shape):
        """``(C, H', W')`` produced from ``(C, H, W)`` images; ValueError if they do not fit."""
        c, h, w = input_shape
        if self._mean_image is not None and self._mean_image.shape != (c, h, w):
            raise ValueError(f"mean image {'x'.join(map(str, self._mean_image.shape))} from "
                             f"{self._mean_file} does not match data {c}x{h}x{w}")
        if self._mean_value.size not in (0, 1, c):
            raise ValueError(f"{self._mean_value.size} mean_value entries for {c} channels "
                             "(give one, or one per channel)")
        if self._crop:
            if self._crop > h or self._crop > w:
                raise ValueError(f"crop_size {self._crop} is larger than the {h}x{w} images")
            return c, self._crop, self._crop
        return c, h, w

    def _mean(self, channels):
        if self._mean_image is not None:
            return self._mean_image
        if self._mean_value.size:
            return np.broadcast_to(self._mean_value, (channels,)).reshape(channels, 1, 1)
        return None

    def transform(self, images):
        """Transform ``(N, C, H, W)`` images into a new ``(N, C, H', W')`` float32 array.

        A single ``(C, H, W)`` image gives a ``(C, H', W')`` result.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            return self.transform(images[np.newaxis])[0]
        if images.ndim != 4:
            raise ValueError(f"images must be N x C x H x W, not shape {images.shape}")
        n, c, h, w = images.shape
        _, out_h, out_w = self.output_shape((c, h, w))
        values = images.astype(np.float32)
        mean = self._mean(c)
        if mean is not None:
            values -= mean
        values *= self._scale
        if self._phase == _TEST or not (self._crop or self._mirror):
            top, left = (h - out_h) // 2, (w - out_w) // 2
            return np.ascontiguousarray(values[:, :, top:top + out_h, left:left + out_w])
        out = np.empty((n, c, out_h, out_w), np.float32)
        for i in range(n):
            # Caffe's order of draws: mirror coin first, then the crop offsets.
            flip = self._mirror and self.rng.integers(2) == 1
            top = self.rng.integers(h - out_h + 1) if self._crop else 0
            left = self.rng.integers(w - out_w + 1) if self._crop else 0
            window = values[i, :, top:top + out_h, left:left + out_w]
            out[i] = window[:, :, ::-1] if flip else window
        return out

    __call__ = transform
