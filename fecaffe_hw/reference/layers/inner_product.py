"""InnerProduct: a fully connected layer, one GEMM."""

import math

from ..layer import Layer, register
from .axes import canonical_axis
from .learnable import weight_and_bias

__all__ = ["InnerProduct"]


@register("InnerProduct")
class InnerProduct(Layer):
    """``y = x W^T + b`` over the axes from ``axis`` on, flattened to ``K``.

    Blobs: weight ``(num_output, K)`` (``(K, num_output)`` with ``transpose``),
    bias ``(num_output,)``. Top shape: ``bottom.shape[:axis] + (num_output,)``.
    """

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        if p.num_output <= 0:
            raise self.error(f"num_output {p.num_output} must be positive")
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        shape = bottom[0].shape
        self.axis = canonical_axis(self, p.axis, len(shape))
        self.k = math.prod(shape[self.axis:])
        wshape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.blobs = weight_and_bias(self, p, wshape)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self, self.param.inner_product_param.axis, len(shape))
        k = math.prod(shape[axis:])
        if k != self.k:
            raise self.error(f"input of shape {shape} has {k} features from axis {axis}; "
                             f"the weights expect {self.k}")
        self.axis = axis
        self.m = math.prod(shape[:axis])
        top[0].reshape(*shape[:axis], self.num_output)

    def _weight_nk(self, dtype):
        w = self.blobs[0].data.astype(dtype, copy=False)
        return w.T if self.transpose else w

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.m, self.k)
        y = x @ self._weight_nk(x.dtype).T
        if self.bias_term:
            y += self.blobs[1].data.astype(y.dtype, copy=False)
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        w = self.blobs[0]
        # The net sets param_propagate_down (Caffe's lr_mult 0 turns it off).
        param_down = getattr(self, "param_propagate_down", None) or [True] * len(self.blobs)
        if param_down[0]:
            dw = (x.T @ dy) if self.transpose else (dy.T @ x)
            w.diff += dw.astype(w.diff.dtype, copy=False)
        if self.bias_term and param_down[1]:
            self.blobs[1].diff += dy.sum(axis=0).astype(self.blobs[1].diff.dtype, copy=False)
        if propagate_down[0]:
            bottom[0].diff[...] = (dy @ self._weight_nk(dy.dtype)).reshape(bottom[0].shape)

    @property
    def macs(self):
        return getattr(self, "m", 0) * self.k * self.num_output if hasattr(self, "k") else 0
