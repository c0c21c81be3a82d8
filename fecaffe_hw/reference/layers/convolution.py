"""Convolution, lowered to im2col + GEMM as Caffe's CPU path does."""

import numpy as np

from ..im2col import col2im, conv_out_size, im2col
from ..layer import Layer, register
from .learnable import weight_and_bias

__all__ = ["Convolution"]


def _pair(layer, values, h, w, has_hw, name, default):
    """Caffe's ``kernel_size``/``kernel_h``+``kernel_w`` (and pad, stride) rules for 2-D."""
    if has_hw:
        if len(values):
            raise layer.error(f"{name} is {name}_size or {name}_h and {name}_w, not both"
                              if name == "kernel" else
                              f"{name} is {name} or {name}_h and {name}_w, not both")
        return int(h), int(w)
    if len(values) == 0:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise layer.error(f"{name} has {len(values)} values; 2-D convolution takes 1 or 2")


@register("Convolution")
class Convolution(Layer):
    """2-D convolution with Caffe's ``convolution_param``: pad, stride, dilation,
    group, optional bias. Blobs: weight ``(num_output, C/group, kh, kw)``, bias
    ``(num_output,)``. Output extent ``floor((H + 2p - (d(k-1)+1)) / s) + 1``.
    Several bottoms (each with its own top) share the weights, as in Caffe.
    """

    num_bottoms = (1, None)
    num_tops = (1, None)

    def setup(self, bottom, top):
        p = self.param.convolution_param
        if len(bottom) != len(top):
            raise self.error(f"convolution needs one top per bottom, got {len(bottom)} "
                             f"bottoms and {len(top)} tops")
        if p.axis != 1:
            raise self.error(f"convolution axis {p.axis} is not supported (only 1)")
        if p.num_output <= 0:
            raise self.error(f"num_output {p.num_output} must be positive")
        self.num_output = p.num_output
        self.kernel = _pair(self, p.kernel_size, p.kernel_h, p.kernel_w,
                            p.HasField("kernel_h") or p.HasField("kernel_w"), "kernel", None)
        if self.kernel[0] is None:
            raise self.error("kernel_size (or kernel_h and kernel_w) is required")
        if (p.HasField("kernel_h") != p.HasField("kernel_w")):
            raise self.error("kernel_h and kernel_w must be given together")
        self.pad = _pair(self, p.pad, p.pad_h, p.pad_w,
                         p.HasField("pad_h") or p.HasField("pad_w"), "pad", 0)
        self.stride = _pair(self, p.stride, p.stride_h, p.stride_w,
                            p.HasField("stride_h") or p.HasField("stride_w"), "stride", 1)
        if len(p.dilation) > 2:
            raise self.error(f"dilation has {len(p.dilation)} values; 2-D convolution takes 1 or 2")
        d = list(p.dilation) or [1]
        self.dilation = (int(d[0]), int(d[-1]))
        for name, v in (("kernel", self.kernel), ("stride", self.stride),
                        ("dilation", self.dilation)):
            if min(v) <= 0:
                raise self.error(f"{name} {v[0]}x{v[1]} must be positive")
        if min(self.pad) < 0:
            raise self.error(f"pad {self.pad[0]}x{self.pad[1]} must not be negative")
        self.group = p.group
        self.bias_term = p.bias_term
        if bottom[0].data.ndim != 4:
            raise self.error(f"convolution needs a 4-D bottom (N, C, H, W), got shape "
                             f"{bottom[0].shape}")
        self.channels = bottom[0].shape[1]
        if self.group <= 0 or self.channels % self.group or self.num_output % self.group:
            raise self.error(f"group {self.group} must divide both the {self.channels} input "
                             f"channels and num_output {self.num_output}")
        kh, kw = self.kernel
        wshape = (self.num_output, self.channels // self.group, kh, kw)
        self.blobs = weight_and_bias(self, p, wshape)

    def reshape(self, bottom, top):
        for b in bottom:
            if b.data.ndim != 4 or b.shape[1] != self.channels:
                raise self.error(f"bottom shape {b.shape} does not match the "
                                 f"{self.channels}-channel 4-D input this layer was set up for")
            if b.shape != bottom[0].shape:
                raise self.error(f"all bottoms must have one shape, got {bottom[0].shape} "
                                 f"and {b.shape}")
        n, _, h, w = bottom[0].shape
        (kh, kw), (ph, pw), (sh, sw), (dh, dw) = self.kernel, self.pad, self.stride, self.dilation
        ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if h + 2 * ph < ekh or w + 2 * pw < ekw:
            raise self.error(f"kernel {kh}x{kw} does not fit input {h}x{w} (pad {ph}"
                             + (f"x{pw}" if pw != ph else "")
                             + (f", dilation {dh}x{dw})" if (dh, dw) != (1, 1) else ")"))
        self.out_hw = (conv_out_size(h, kh, ph, sh, dh), conv_out_size(w, kw, pw, sw, dw))
        self.in_shape = bottom[0].shape
        self.n_inputs = len(bottom)
        for t in top:
            t.reshape(n, self.num_output, *self.out_hw)

    def _geometry(self):
        return self.kernel, self.pad, self.stride, self.dilation

    def forward(self, bottom, top):
        g, m = self.group, self.num_output
        weight = self.blobs[0].data.reshape(g, m // g, -1)
        n = self.in_shape[0]
        oh, ow = self.out_hw
        for b, t in zip(bottom, top):
            col = im2col(b.data, *self._geometry())
            col = col.reshape(g, -1, col.shape[1])
            # (g, M/g, K/g) @ (g, K/g, OH*OW*N): one GEMM per group for the whole batch.
            out = np.matmul(weight.astype(col.dtype, copy=False), col)
            out = out.reshape(m, oh, ow, n).transpose(3, 0, 1, 2)
            if self.bias_term:
                out = out + self.blobs[1].data.astype(out.dtype, copy=False)[:, None, None]
            t.data[...] = out

    def backward(self, top, propagate_down, bottom):
        g, m = self.group, self.num_output
        weight = self.blobs[0].data.reshape(g, m // g, -1)
        n = self.in_shape[0]
        # The net sets param_propagate_down (Caffe's lr_mult 0 turns it off).
        param_down = getattr(self, "param_propagate_down", None) or [True] * len(self.blobs)
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff
            if self.bias_term and param_down[1]:
                self.blobs[1].diff += dy.sum(axis=(0, 2, 3)).astype(self.blobs[1].diff.dtype,
                                                                      copy=False)
            # (M, OH*OW*N) in group-major row order, matching the weight rows.
            dy_mat = dy.transpose(1, 2, 3, 0).reshape(g, m // g, -1)
            if param_down[0]:
                col = im2col(b.data, *self._geometry())
                col = col.reshape(g, -1, col.shape[1])
                dw = np.matmul(dy_mat, col.transpose(0, 2, 1))
                self.blobs[0].diff += dw.reshape(self.blobs[0].shape).astype(
                    self.blobs[0].diff.dtype, copy=False)
            if propagate_down[i]:
                dcol = np.matmul(weight.transpose(0, 2, 1).astype(dy.dtype, copy=False), dy_mat)
                b.diff[...] = col2im(dcol.reshape(-1, dcol.shape[2]), (n, *b.shape[1:]),
                                     *self._geometry())

    @property
    def macs(self):
        if not hasattr(self, "out_hw"):
            return 0
        n = self.in_shape[0]
        kh, kw = self.kernel
        return (self.n_inputs * n * self.num_output * self.out_hw[0] * self.out_hw[1]
                * (self.channels // self.group) * kh * kw)
