"""Elementwise neurons: ReLU (leaky), Sigmoid, TanH. Each works in place."""

import numpy as np

from ..layer import Layer, register

__all__ = ["ReLU", "Sigmoid", "TanH"]


class _Neuron(Layer):
    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)


@register("ReLU")
class ReLU(_Neuron):
    """``max(x, 0) + negative_slope * min(x, 0)``."""

    def setup(self, bottom, top):
        self.negative_slope = self.param.relu_param.negative_slope

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = (np.maximum(x, 0) + x.dtype.type(self.negative_slope) * np.minimum(x, 0))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # In place, bottom.data now holds the output, whose sign is the input's
        # (slope >= 0) or is 0 where the input was <= 0: the mask is unchanged.
        x = bottom[0].data
        slope = x.dtype.type(self.negative_slope)
        bottom[0].diff[...] = top[0].diff * ((x > 0) + slope * (x <= 0))


@register("Sigmoid")
class Sigmoid(_Neuron):
    """``0.5 * tanh(0.5 x) + 0.5``, Caffe's overflow-free form of ``1 / (1 + e^-x)``."""

    def forward(self, bottom, top):
        x = bottom[0].data
        half = x.dtype.type(0.5)
        top[0].data[...] = half * np.tanh(half * x) + half

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (1 - y)


@register("TanH")
class TanH(_Neuron):
    """``tanh(x)``."""

    def forward(self, bottom, top):
        top[0].data[...] = np.tanh(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (1 - y * y)
