"""Concat: join bottoms along one axis."""

import numpy as np

from ..layer import Layer, register
from .axes import canonical_axis

__all__ = ["Concat"]


@register("Concat")
class Concat(Layer):
    """Concatenates along ``concat_param.axis`` (or legacy ``concat_dim``);
    backward slices the top diff back out."""

    num_bottoms = (1, None)

    def reshape(self, bottom, top):
        p = self.param.concat_param
        shape = bottom[0].shape
        if p.HasField("concat_dim"):
            if p.HasField("axis"):
                raise self.error("give concat axis or concat_dim, not both")
            axis = p.concat_dim
        else:
            axis = p.axis
        self.axis = canonical_axis(self, axis, len(shape))
        total = 0
        for b in bottom:
            other = b.shape
            if (len(other) != len(shape) or other[:self.axis] != shape[:self.axis]
                    or other[self.axis + 1:] != shape[self.axis + 1:]):
                raise self.error(f"bottom shapes {shape} and {other} differ off the concat "
                                 f"axis {self.axis}")
            total += other[self.axis]
        top[0].reshape(*shape[:self.axis], total, *shape[self.axis + 1:])

    def forward(self, bottom, top):
        np.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        offset = 0
        for b, down in zip(bottom, propagate_down):
            n = b.shape[self.axis]
            if down:
                index = (slice(None),) * self.axis + (slice(offset, offset + n),)
                b.diff[...] = top[0].diff[index]
            offset += n
