"""Caffe's im2col / col2im lowering of 2-D convolution to GEMM, vectorised.

Column rows are ordered ``(channel, kernel_row, kernel_col)`` as in Caffe's
``im2col_cpu``; columns are ordered ``(out_row, out_col, image)`` so that a
whole batch is one GEMM. The image index is innermost because it makes every
copy and every col2im add a long contiguous run (about 4x faster for LeNet's
conv2 than image-major order). Arrays keep the dtype they are given.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["conv_out_size", "im2col", "col2im"]


def conv_out_size(size, kernel, pad, stride, dilation=1):
    """Caffe's convolution output extent: ``floor((size + 2p - (d(k-1)+1)) / s) + 1``."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _out_shape(h, w, kernel, pad, stride, dilation):
    return (conv_out_size(h, kernel[0], pad[0], stride[0], dilation[0]),
            conv_out_size(w, kernel[1], pad[1], stride[1], dilation[1]))


def im2col(x, kernel, pad=(0, 0), stride=(1, 1), dilation=(1, 1)):
    """Lower ``x`` of shape ``(N, C, H, W)`` to columns ``(C*kh*kw, OH*OW*N)``.

    ``kernel``, ``pad``, ``stride`` and ``dilation`` are ``(h, w)`` pairs.
    """
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = kernel, pad, stride, dilation
    oh, ow = _out_shape(h, w, kernel, pad, stride, dilation)
    xp = np.zeros((c, h + 2 * ph, w + 2 * pw, n), x.dtype)
    xp[:, ph:ph + h, pw:pw + w] = x.transpose(1, 2, 3, 0)
    s_c, s_h, s_w, s_n = xp.strides
    # A read-only strided view (C, kh, kw, OH, OW, N); the reshape makes the
    # one copy, already in GEMM order.
    view = as_strided(xp, shape=(c, kh, kw, oh, ow, n),
                      strides=(s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw, s_n),
                      writeable=False)
    return view.reshape(c * kh * kw, oh * ow * n)


def col2im(col, shape, kernel, pad=(0, 0), stride=(1, 1), dilation=(1, 1)):
    """Adjoint of :func:`im2col`: sum columns back into an ``(N, C, H, W)`` array."""
    n, c, h, w = shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = kernel, pad, stride, dilation
    oh, ow = _out_shape(h, w, kernel, pad, stride, dilation)
    cols = col.reshape(c, kh, kw, oh, ow, n)
    xp = np.zeros((c, h + 2 * ph, w + 2 * pw, n), col.dtype)
    # One vectorised add per kernel tap, not per pixel.
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            xp[:, y0:y0 + sh * (oh - 1) + 1:sh, x0:x0 + sw * (ow - 1) + 1:sw] += cols[:, i, j]
    return xp[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2)
