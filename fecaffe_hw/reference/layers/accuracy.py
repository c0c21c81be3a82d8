"""Accuracy: top-k classification accuracy, with Caffe's tie rule."""

import numpy as np

from ..layer import Layer, register
from .axes import label_axes, read_labels

__all__ = ["Accuracy"]


@register("Accuracy")
class Accuracy(Layer):
    """Fraction of (non-ignored) labels whose score is among the ``top_k`` best.

    Caffe's tie rule: a label counts as correct when fewer than ``top_k`` other
    classes score ``>=`` its score, so a tie counts against it. Tops: the
    accuracy (shape ``()``); optionally per-class accuracy ``(classes,)``. No
    backward.
    """

    num_bottoms = 2
    num_tops = (1, 2)

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        self.axis_param = p.axis

    def reshape(self, bottom, top):
        self.axis, self.outer, self.inner = label_axes(self, self.axis_param, bottom[0],
                                                       bottom[1])
        classes = bottom[0].shape[self.axis]
        if not 1 <= self.top_k <= classes:
            raise self.error(f"top_k {self.top_k} must be between 1 and the {classes} classes")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(classes)

    def forward(self, bottom, top):
        classes = bottom[0].shape[self.axis]
        scores = bottom[0].data.reshape(self.outer, classes, self.inner)
        safe, valid = read_labels(self, bottom[1], self.outer, self.inner, classes,
                                  self.ignore_label)
        true_score = np.take_along_axis(scores, safe[:, None, :], axis=1)
        # The true class itself is among the ">=" scores, hence the -1.
        better = (scores >= true_score).sum(axis=1) - 1
        correct = valid & (better < self.top_k)
        count = int(valid.sum())
        dtype = top[0].data.dtype
        top[0].data[...] = dtype.type(correct.sum()) / dtype.type(count) if count else 0
        if len(top) > 1:
            seen = np.bincount(safe[valid], minlength=classes)
            hits = np.bincount(safe[correct], minlength=classes)
            top[1].data[...] = np.where(seen > 0, hits / np.maximum(seen, 1), 0)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("Accuracy has no backward pass")
