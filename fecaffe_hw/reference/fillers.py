"""Caffe's weight fillers (``FillerParameter``) drawing from a NumPy Generator."""

import math

import numpy as np

from ..errors import NetError

__all__ = ["fill", "FILLER_TYPES"]

# FillerParameter.VarianceNorm values.
FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2


def _fans(shape):
    count = math.prod(shape)
    fan_in = count // shape[0] if len(shape) > 0 and shape[0] else count
    # Caffe: fan_out = count / shape(1), the whole count for a 1-D blob.
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _variance_n(param, shape, layer):
    fan_in, fan_out = _fans(shape)
    norm = param.variance_norm
    if norm == FAN_IN:
        n = fan_in
    elif norm == FAN_OUT:
        n = fan_out
    elif norm == AVERAGE:
        n = (fan_in + fan_out) / 2
    else:
        raise NetError(f"unknown filler variance_norm {norm}", layer=layer)
    if n <= 0:
        raise NetError(f"{param.type} filler needs a non-empty blob, got shape {tuple(shape)}",
                       layer=layer)
    return n


def _constant(param, shape, rng, layer):
    return np.full(shape, param.value, np.float32)


def _uniform(param, shape, rng, layer):
    if param.min > param.max:
        raise NetError(f"uniform filler min {param.min} exceeds max {param.max}", layer=layer)
    return rng.uniform(param.min, param.max, shape).astype(np.float32)


def _gaussian(param, shape, rng, layer):
    if param.std < 0:
        raise NetError(f"gaussian filler std {param.std} is negative", layer=layer)
    data = rng.normal(param.mean, param.std, shape).astype(np.float32)
    if param.sparse >= 0:
        # Caffe keeps each weight with probability sparse / num_outputs, where
        # num_outputs is the blob's first dimension.
        if len(shape) < 1 or shape[0] == 0:
            raise NetError("sparse gaussian filler needs at least one axis", layer=layer)
        p = param.sparse / shape[0]
        if not 0 <= p <= 1:
            raise NetError(f"sparse {param.sparse} exceeds num_outputs {shape[0]}", layer=layer)
        data *= rng.random(shape) < p
    return data


def _xavier(param, shape, rng, layer):
    scale = math.sqrt(3.0 / _variance_n(param, shape, layer))
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def _msra(param, shape, rng, layer):
    std = math.sqrt(2.0 / _variance_n(param, shape, layer))
    return rng.normal(0.0, std, shape).astype(np.float32)


def _positive_unitball(param, shape, rng, layer):
    if len(shape) < 1 or shape[0] == 0:
        raise NetError("positive_unitball filler needs at least one axis", layer=layer)
    data = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    rows = data.reshape(shape[0], -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return data


def _bilinear(param, shape, rng, layer):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise NetError(f"bilinear filler needs a 4-D blob with square kernels, got shape "
                       f"{tuple(shape)}", layer=layer)
    k = shape[3]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    axis = 1 - np.abs(np.arange(k) / f - c)
    kernel = np.outer(axis, axis).astype(np.float32)
    return np.broadcast_to(kernel, shape).copy()


FILLER_TYPES = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "xavier": _xavier,
    "msra": _msra,
    "positive_unitball": _positive_unitball,
    "bilinear": _bilinear,
}


def fill(filler_param, shape, rng, *, layer=None):
    """A float32 array of ``shape`` filled as Caffe's filler ``filler_param`` would.

    ``rng`` is a ``numpy.random.Generator``; ``layer`` names the layer in
    errors. An unset parameter is Caffe's default, ``constant`` 0.
    """
    shape = tuple(int(d) for d in shape)
    try:
        filler = FILLER_TYPES[filler_param.type]
    except KeyError:
        raise NetError(f"unknown filler type {filler_param.type!r} (supported: "
                       f"{', '.join(sorted(FILLER_TYPES))})", layer=layer) from None
    return filler(filler_param, shape, rng, layer)
