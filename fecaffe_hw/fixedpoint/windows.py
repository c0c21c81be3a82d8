"""The window sequence a :class:`~fecaffe_hw.cores.line_buffer.LineBuffer` emits.

A feature map is a ``(channels, height, width)`` integer array (Caffe's CHW).
On the wire it travels channel-interleaved: one value per beat, in ``(y, x, c)``
raster order (:func:`pixel_stream`). Windows come out in ``(oy, ox, c)`` order,
each a ``kernel_h * kernel_w`` vector in window raster order (``ky`` major),
with zeros where the window covers padding: im2col, one column per beat.
"""

import numpy as np

__all__ = ["output_size", "window_geometry", "pixel_stream", "windows", "window_origins",
           "as_pair"]


def output_size(size, kernel, stride, pad, *, ceil_mode=False):
    """Number of window positions along one axis.

    ``ceil_mode=False`` is Caffe's convolution rule ``(size + 2p - k) // s + 1``;
    ``ceil_mode=True`` is Caffe's pooling rule ``ceil((size + 2p - k) / s) + 1``,
    minus one if the last window would start at or beyond ``size + p``.
    """
    span = size + 2 * pad - kernel
    if span < 0:
        raise ValueError(f"Kernel {kernel} does not fit input {size} with pad {pad}")
    if not ceil_mode:
        return span // stride + 1
    count = -(-span // stride) + 1
    if pad and (count - 1) * stride >= size + pad:
        count -= 1
    if (count - 1) * stride >= size + pad:
        # Only without padding and with stride > kernel: Caffe keeps a window
        # that covers no input (MAX gives -FLT_MAX, AVE divides by zero).
        raise ValueError(f"Stride {stride} > kernel {kernel} leaves the last pooling window "
                         f"outside input {size}")
    return count


def _pair(name, value, minimum):
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum
                                 for v in pair):
        raise ValueError(f"{name.capitalize()} must be an integer >= {minimum} or a pair of "
                         f"them, not {value!r}")
    return pair


def window_geometry(*, width, height, channels, kernel, stride, pad, ceil_mode):
    """Validate a window geometry; returns ``((kh, kw), (sh, sw), (ph, pw), (oh, ow))``.

    The cores that walk windows (line buffer, pooling) all validate with this,
    so they reject the same parameters with the same messages.
    """
    for name, value in (("width", width), ("height", height), ("channels", channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name.capitalize()} must be a positive integer, not {value!r}")
    kernel = _pair("kernel", kernel, 1)
    stride = _pair("stride", stride, 1)
    pad = _pair("pad", pad, 0)
    out = []
    for axis, size, k, s, p in (("height", height, kernel[0], stride[0], pad[0]),
                                ("width", width, kernel[1], stride[1], pad[1])):
        if p >= k:
            # A window made only of padding has nothing to pool or convolve.
            raise ValueError(f"Pad {p} must be smaller than the kernel {axis} {k}")
        if size + 2 * p < k:
            raise ValueError(f"Kernel {axis} {k} is larger than the padded input {axis} "
                             f"{size} + 2 * {p}")
        out.append(output_size(size, k, s, p, ceil_mode=ceil_mode))
    return kernel, stride, pad, tuple(out)


def pixel_stream(image):
    """The beats that carry ``image`` (C, H, W): ``(y, x, c)`` raster order."""
    return np.asarray(image, dtype=np.int64).transpose(1, 2, 0).reshape(-1)


def window_origins(height, width, kernel, stride, pad, *, ceil_mode=False):
    """Top-left corners ``(y0, x0)`` of the windows in raster order, in unpadded
    coordinates (negative inside the padding)."""
    kh, kw = kernel
    sh, sw = stride
    ph, pw = pad
    oh = output_size(height, kh, sh, ph, ceil_mode=ceil_mode)
    ow = output_size(width, kw, sw, pw, ceil_mode=ceil_mode)
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    return oy.reshape(-1) * sh - ph, ox.reshape(-1) * sw - pw


def windows(image, kernel, stride=1, pad=0, *, ceil_mode=False):
    """All windows of ``image`` (C, H, W) in emission order: an int64 array of
    shape ``(OH * OW * C, kh * kw)``; positions outside the image read 0.

    ``kernel``, ``stride`` and ``pad`` are ints or ``(h, w)`` pairs.
    """
    image = np.asarray(image, dtype=np.int64)
    channels, height, width = image.shape
    kh, kw = as_pair(kernel)
    sh, sw = as_pair(stride)
    ph, pw = as_pair(pad)
    y0, x0 = window_origins(height, width, (kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil_mode)
    # Pad generously (ceil mode can run past the bottom/right padding) and gather.
    bottom = max(0, int(y0.max()) + kh - height) if y0.size else 0
    right = max(0, int(x0.max()) + kw - width) if x0.size else 0
    padded = np.pad(image, ((0, 0), (ph, bottom), (pw, right)))
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    rows = (y0 + ph)[:, None] + ky.reshape(-1)[None, :]
    cols = (x0 + pw)[:, None] + kx.reshape(-1)[None, :]
    gathered = padded[:, rows, cols]                      # (C, positions, k*k)
    return gathered.transpose(1, 0, 2).reshape(-1, kh * kw)


def as_pair(value):
    """An int or an ``(h, w)`` pair -> ``(h, w)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"Expected an int or an (h, w) pair, not {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)

