"""Bit-exact model of the pooling cores: MAX/AVE forward and backward.

Feature maps are ``(C, H, W)`` int64 arrays in one fixed-point format; outputs
use the same format. Window geometry follows Caffe's pooling layer
(:func:`~fecaffe_hw.fixedpoint.windows.output_size` with ``ceil_mode=True``).

MAX: the first maximum in window raster order wins (Caffe compares with ``>``);
padding never wins. The argmax is the index ``ky * kernel_w + kx`` inside the
window (:func:`caffe_mask` turns it into Caffe's flat ``h * W + w`` mask).

AVE: ``sum / n`` rounded to nearest, ties to even, where ``n`` is Caffe's
pool size (the window clipped at ``H + pad``, so it counts padding inside
``H + pad``). :class:`AverageDivider` does the division by a reciprocal
multiply that is exact for every sum the window can produce.

Backward sums, per input position, the exact integer contributions and then
saturates once to the format's width: MAX routes each output gradient to its
argmax position; AVE adds ``divide(grad, n)`` (the forward's divide) to every
position of the clipped window.
"""

import math

import numpy as np

from .format import Format, requantize, saturate
from .windows import as_pair, output_size, window_origins, windows

__all__ = [
    "AverageDivider", "pool_sizes", "max_pool", "ave_pool", "caffe_mask",
    "max_pool_backward", "ave_pool_backward", "overlap_count", "pool_backward",
]


def _clog2(n):
    return (n - 1).bit_length()


class AverageDivider:
    """Round-to-nearest-even division of ``bits + clog2(area)``-bit sums by
    ``n`` in ``1..area``, the way the AVE pooling core does it.

    ``q = sum * recip[n]`` with ``recip[n] = round(2**S / n)``, then
    ``j = q >> S`` and ``f = q - (j << S)``. If ``|f - 2**(S-1)| < 2**(S-G)``
    the exact quotient is a tie: the result is ``j`` rounded up to even;
    otherwise it is ``j + (f > 2**(S-1))``.

    With ``G = clog2(area) + 2`` and ``S = sum_bits + G`` the product's error
    is below ``2**(sum_bits-2)`` (in units of ``2**-S``) while a non-tie
    quotient sits at least ``2**(sum_bits+1)`` from the half: the result
    equals exact round-half-even division for every sum (tested
    exhaustively). For a power of two ``n`` the reciprocal is exact and the
    rule is :func:`~fecaffe_hw.fixedpoint.format.shift_round`.
    """

    def __init__(self, area, bits):
        if not isinstance(area, int) or area < 1:
            raise ValueError(f"Window area must be a positive integer, not {area!r}")
        if not isinstance(bits, int) or not 2 <= bits <= 32:
            raise ValueError(f"Data width must be an integer in [2, 32], not {bits!r}")
        self.area, self.bits = area, bits

    @property
    def sum_bits(self):
        """Signed width that holds any window sum."""
        return self.bits + _clog2(self.area)

    @property
    def guard(self):
        return _clog2(self.area) + 2

    @property
    def shift(self):
        """S: the reciprocals are ``round(2**S / n)``."""
        return self.sum_bits + self.guard

    @property
    def tie_window(self):
        return 1 << (self.shift - self.guard)

    @property
    def recip_bits(self):
        """Unsigned width of the largest reciprocal (``2**S`` for ``n = 1``)."""
        return self.shift + 1

    @property
    def reciprocals(self):
        """``recip[n]`` for ``n`` in ``0..area`` (entry 0 unused, 0)."""
        # Exact integer round-half-up; 2**S / n is never a half-integer (that
        # would need n = 2**(S+1) / odd), so no tie rule is needed.
        return [0] + [((1 << (self.shift + 1)) // n + 1) >> 1 for n in range(1, self.area + 1)]

    def __call__(self, sums, n):
        sums = np.asarray(sums, dtype=np.int64)
        n = np.broadcast_to(np.asarray(n, dtype=np.int64), sums.shape)
        if ((n < 1) | (n > self.area)).any():
            raise ValueError(f"Divisor out of range 1..{self.area}")
        limit = 1 << (self.sum_bits - 1)
        if ((sums < -limit) | (sums >= limit)).any():
            raise ValueError(f"Sum does not fit {self.sum_bits} bits")
        # Products need sum_bits + recip_bits bits: int64 up to 16-bit data,
        # exact Python integers beyond.
        dtype = np.int64 if self.sum_bits + self.recip_bits <= 63 else object
        recip = np.array(self.reciprocals, dtype=dtype)[n]
        q = sums.astype(dtype) * recip
        j = q >> self.shift
        f = q - (j << self.shift)
        half = 1 << (self.shift - 1)
        tie = abs(f - half) < self.tie_window
        result = np.where(tie, j + (j & 1), j + (f > half).astype(dtype))
        return result.astype(np.int64)


def pool_sizes(height, width, kernel, stride, pad):
    """Caffe's AVE pool size per output position, shape ``(OH, OW)``."""
    (kh, kw), (sh, sw), (ph, pw) = as_pair(kernel), as_pair(stride), as_pair(pad)
    oh = output_size(height, kh, sh, ph, ceil_mode=True)
    ow = output_size(width, kw, sw, pw, ceil_mode=True)
    y0 = np.arange(oh) * sh - ph
    x0 = np.arange(ow) * sw - pw
    rows = np.minimum(y0 + kh, height + ph) - y0
    cols = np.minimum(x0 + kw, width + pw) - x0
    return rows[:, None] * cols[None, :]


def _valid(height, width, kernel, stride, pad):
    """Per window position and window element: inside the image (not padding)."""
    (kh, kw) = kernel
    y0, x0 = window_origins(height, width, kernel, stride, pad, ceil_mode=True)
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    y = y0[:, None] + ky.reshape(-1)[None, :]
    x = x0[:, None] + kx.reshape(-1)[None, :]
    return (y >= 0) & (y < height) & (x >= 0) & (x < width), y, x


def _geometry(image, kernel, stride, pad):
    image = np.asarray(image, dtype=np.int64)
    if image.ndim != 3:
        raise ValueError(f"Expected a (C, H, W) map, not shape {image.shape}")
    kernel, stride, pad = as_pair(kernel), as_pair(stride), as_pair(pad)
    for name, k, p in (("height", kernel[0], pad[0]), ("width", kernel[1], pad[1])):
        if p >= k:
            raise ValueError(f"Pad {p} must be smaller than the kernel {name} {k}")
    return image, kernel, stride, pad


def max_pool(image, kernel, stride=1, pad=0):
    """MAX forward: ``(values, index)``, each ``(C, OH, OW)``; ``index`` is the
    argmax's position ``ky * kernel_w + kx`` inside its window."""
    image, kernel, stride, pad = _geometry(image, kernel, stride, pad)
    channels, height, width = image.shape
    oh = output_size(height, kernel[0], stride[0], pad[0], ceil_mode=True)
    ow = output_size(width, kernel[1], stride[1], pad[1], ceil_mode=True)
    wins = windows(image, kernel, stride, pad, ceil_mode=True).reshape(oh * ow, channels, -1)
    valid, _, _ = _valid(height, width, kernel, stride, pad)
    masked = np.where(valid[:, None, :], wins, np.iinfo(np.int64).min)
    index = masked.argmax(axis=2)          # argmax returns the first maximum
    values = np.take_along_axis(wins, index[..., None], axis=2)[..., 0]
    shape = (oh, ow, channels)
    return (values.reshape(shape).transpose(2, 0, 1),
            index.reshape(shape).transpose(2, 0, 1).astype(np.int64))


def ave_pool(image, kernel, stride=1, pad=0, *, bits):
    """AVE forward, ``(C, OH, OW)``: RNE(window sum / pool size) for ``bits``-wide data."""
    image, kernel, stride, pad = _geometry(image, kernel, stride, pad)
    channels, height, width = image.shape
    oh = output_size(height, kernel[0], stride[0], pad[0], ceil_mode=True)
    ow = output_size(width, kernel[1], stride[1], pad[1], ceil_mode=True)
    sums = windows(image, kernel, stride, pad, ceil_mode=True).sum(axis=1)
    sums = sums.reshape(oh, ow, channels).transpose(2, 0, 1)
    divide = AverageDivider(kernel[0] * kernel[1], bits)
    sizes = pool_sizes(height, width, kernel, stride, pad)
    return saturate(divide(sums, np.broadcast_to(sizes, sums.shape)), bits)


def caffe_mask(index, height, width, kernel, stride=1, pad=0):
    """Window-relative argmax -> Caffe's top_mask: flat ``h * width + w``."""
    kernel, stride, pad = as_pair(kernel), as_pair(stride), as_pair(pad)
    index = np.asarray(index, dtype=np.int64)
    oh, ow = index.shape[-2:]
    y0 = (np.arange(oh) * stride[0] - pad[0])[:, None]
    x0 = (np.arange(ow) * stride[1] - pad[1])[None, :]
    return (y0 + index // kernel[1]) * width + (x0 + index % kernel[1])


def overlap_count(kernel, stride):
    """Most windows that can cover one input position."""
    kernel, stride = as_pair(kernel), as_pair(stride)
    return math.prod(-(-k // s) for k, s in zip(kernel, stride))


def max_pool_backward(grad, index, height, width, kernel, stride=1, pad=0, *, bits):
    """MAX backward: each ``grad`` (C, OH, OW) added at its argmax input
    position; the exact sums saturated to ``bits``. Returns ``(C, H, W)``."""
    kernel, stride, pad = as_pair(kernel), as_pair(stride), as_pair(pad)
    grad = np.asarray(grad, dtype=np.int64)
    mask = caffe_mask(index, height, width, kernel, stride, pad)
    channels = grad.shape[0]
    out = np.zeros((channels, height * width), dtype=np.int64)
    for c in range(channels):
        np.add.at(out[c], mask[c].reshape(-1), grad[c].reshape(-1))
    return saturate(out.reshape(channels, height, width), bits)


def ave_pool_backward(grad, height, width, kernel, stride=1, pad=0, *, bits):
    """AVE backward: ``divide(grad, n)`` added to every input position of each
    clipped window; the exact sums saturated to ``bits``. Returns ``(C, H, W)``."""
    kernel, stride, pad = as_pair(kernel), as_pair(stride), as_pair(pad)
    grad = np.asarray(grad, dtype=np.int64)
    channels, oh, ow = grad.shape
    sizes = pool_sizes(height, width, kernel, stride, pad)
    divide = AverageDivider(kernel[0] * kernel[1], bits)
    share = divide(grad, np.broadcast_to(sizes, grad.shape))
    valid, y, x = _valid(height, width, kernel, stride, pad)
    out = np.zeros((channels, height * width), dtype=np.int64)
    flat = (y * width + x)
    for position in range(oh * ow):
        targets = flat[position][valid[position]]
        out[:, targets] += share.reshape(channels, -1)[:, position][:, None]
    return saturate(out.reshape(channels, height, width), bits)


def pool_backward(kind, dy, index, height, width, kernel, stride, pad, shift):
    """``POOL_BWD`` of one image, as the pool engine computes it: int16 ``dy``
    (C, OH, OW) -> int16-valued ``dx`` (C, H, W).

    ``dx[c, y, x] = sat16(RNE(S[c, y, x] / 2**shift))`` (a negative ``shift``
    shifts left), one :func:`~.format.requantize` to ``Format(16, 0)``, where
    the exact sum ``S`` is, for MAX, ``sum dy[c, o]`` over the outputs ``o``
    whose argmax ``index[c, o]`` is ``(y, x)``; for AVE, ``sum divide(dy[c, o],
    n[o])`` over the outputs whose clipped window holds ``(y, x)`` (the
    forward's RNE divide, ``n`` Caffe's pool size). ``S`` never saturates: it
    is formed at ``16 + clog2(overlap_count(kernel, stride))`` bits, the
    width of the engine's scratch sums (no sum of that many int16 values
    overflows it). ``kind`` is ``"max"``/``"ave"`` or an enum named MAX/AVE;
    ``index`` is ignored for AVE (may be ``None``); ``|shift| <= 15``.
    """
    name = getattr(kind, "name", kind)
    name = name.upper() if isinstance(name, str) else None
    if name not in ("MAX", "AVE"):
        raise ValueError(f"Pooling kind must be MAX or AVE, not {kind!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or abs(shift) > 15:
        raise ValueError(f"Pooling backward shift must be an integer in [-15, 15], "
                         f"not {shift!r}")
    kernel, stride, pad = as_pair(kernel), as_pair(stride), as_pair(pad)
    dy = np.asarray(dy, dtype=np.int64)
    if dy.ndim != 3:
        raise ValueError(f"Expected a (C, OH, OW) gradient, not shape {dy.shape}")
    if ((dy < -(1 << 15)) | (dy >= 1 << 15)).any():
        raise ValueError("Pooling backward gradients must be int16 values")
    bits = 16 + _clog2(overlap_count(kernel, stride))
    if name == "MAX":
        if index is None:
            raise ValueError("MAX pooling backward needs the forward's indices")
        sums = max_pool_backward(dy, index, height, width, kernel, stride, pad, bits=bits)
    else:
        sums = ave_pool_backward(dy, height, width, kernel, stride, pad, bits=bits)
    return requantize(sums, int(shift), Format(16, 0))
