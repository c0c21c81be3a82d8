"""Flatten: merge the axes ``axis..end_axis`` into one."""

import math

from ..layer import Layer, register
from .axes import canonical_axis

__all__ = ["Flatten"]


@register("Flatten")
class Flatten(Layer):
    """Top shape ``shape[:axis] + (prod(shape[axis:end_axis+1]),) + shape[end_axis+1:]``."""

    def reshape(self, bottom, top):
        p = self.param.flatten_param
        shape = bottom[0].shape
        if len(shape) == 0:
            raise self.error("cannot flatten a scalar blob")
        start = canonical_axis(self, p.axis, len(shape))
        end = canonical_axis(self, p.end_axis, len(shape), "end_axis")
        if end < start:
            raise self.error(f"end_axis {p.end_axis} comes before axis {p.axis} "
                             f"for a {len(shape)}-axis blob")
        top[0].reshape(*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)
