"""LRN: local response normalisation across channels, as Caffe's CPU code."""

import numpy as np

from ..layer import Layer, register

__all__ = ["LRN"]

ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1


@register("LRN")
class LRN(Layer):
    """``y = x * scale^-beta``, ``scale = k + alpha/size * sum(x^2)`` over the
    ``local_size`` channels centred on each channel (zero beyond the edges).

    The window sum is Caffe's running sum (add the entering channel, subtract
    the leaving one), so float32 results round as Caffe's do.
    """

    def setup(self, bottom, top):
        p = self.param.lrn_param
        if p.norm_region == WITHIN_CHANNEL:
            raise self.error("LRN norm_region WITHIN_CHANNEL is not supported "
                             "(ACROSS_CHANNELS is)")
        if p.norm_region != ACROSS_CHANNELS:
            raise self.error(f"unknown LRN norm_region {p.norm_region}")
        if p.local_size < 1 or p.local_size % 2 == 0:
            raise self.error(f"LRN local_size {p.local_size} must be odd and positive")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k

    def reshape(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise self.error(f"LRN needs a 4-D bottom (N, C, H, W), got shape {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        n, c, h, w = x.shape
        t = x.dtype.type
        size, pre_pad = self.size, (self.size - 1) // 2
        alpha_over_size = t(self.alpha / self.size)
        padded = np.zeros((n, c + size - 1, h, w), x.dtype)
        padded[:, pre_pad:pre_pad + c] = x * x
        padded *= alpha_over_size
        scale = np.empty_like(x)
        running = np.full((n, h, w), t(self.k), x.dtype)
        for i in range(size):
            running += padded[:, i]
        scale[:, 0] = running
        for i in range(1, c):
            running = running + padded[:, i + size - 1] - padded[:, i - 1]
            scale[:, i] = running
        self.scale = scale
        top[0].data[...] = x * np.power(scale, t(-self.beta))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].data, top[0].data, top[0].diff
        n, c, h, w = x.shape
        t = x.dtype.type
        size = self.size
        inverse_pre_pad = size - (size + 1) // 2
        cache_ratio = t(2.0 * self.alpha * self.beta / self.size)
        padded = np.zeros((n, c + size - 1, h, w), x.dtype)
        padded[:, inverse_pre_pad:inverse_pre_pad + c] = dy * y / self.scale
        dx = np.power(self.scale, t(-self.beta)) * dy
        accum = np.zeros((n, h, w), x.dtype)
        for i in range(size - 1):
            accum += padded[:, i]
        for i in range(c):
            accum += padded[:, i + size - 1]
            dx[:, i] -= cache_ratio * (x[:, i] * accum)
            accum -= padded[:, i]
        bottom[0].diff[...] = dx
