"""Split: one bottom copied to several tops; backward sums their diffs."""

from ..layer import Layer, register

__all__ = ["Split"]


@register("Split")
class Split(Layer):
    """Each top is a copy of the bottom; the bottom diff is the sum of the top diffs."""

    num_tops = (1, None)

    def reshape(self, bottom, top):
        for t in top:
            if t is bottom[0]:
                raise self.error("Split does not work in place")
            t.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        for t in top:
            t.data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # Caffe's order: top0 + top1, then the rest added one at a time.
        acc = top[0].diff.copy()
        for t in top[1:]:
            acc += t.diff
        bottom[0].diff[...] = acc
