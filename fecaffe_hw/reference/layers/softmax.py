"""Softmax and SoftmaxWithLoss (multinomial logistic loss on the softmax)."""

import numpy as np

from ..layer import Layer, register
from .axes import canonical_axis, label_axes, read_labels

__all__ = ["Softmax", "SoftmaxWithLoss"]

# LossParameter.NormalizationMode values.
FULL, VALID, BATCH_SIZE, NONE = 0, 1, 2, 3
_FLT_MIN = np.finfo(np.float32).tiny


def softmax(x, axis):
    """Caffe's softmax: subtract the maximum over ``axis``, exponentiate, normalise."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@register("Softmax")
class Softmax(Layer):
    """``exp(x) / sum(exp(x))`` over ``softmax_param.axis``."""

    def setup(self, bottom, top):
        self.axis_param = self.param.softmax_param.axis

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.axis_param, bottom[0].data.ndim)
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = softmax(bottom[0].data, self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            dot = (dy * y).sum(axis=self.axis, keepdims=True)
            bottom[0].diff[...] = (dy - dot) * y


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    """Mean of ``-log(softmax(x)[label])`` over ``softmax_param.axis``.

    Bottoms: scores, labels (``outer * inner`` integer-valued entries). Tops:
    the loss, a scalar of shape ``()``; optionally the probabilities.
    ``loss_param``: ``ignore_label``; ``normalization`` VALID (default), FULL,
    BATCH_SIZE or NONE; legacy ``normalize`` (true: VALID, false: BATCH_SIZE).
    Backward scales by ``top[0].diff`` (the loss weight).
    """

    num_bottoms = 2
    num_tops = (1, 2)
    is_loss = True

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = VALID if lp.normalize else BATCH_SIZE
        else:
            self.normalization = lp.normalization
        if self.normalization not in (FULL, VALID, BATCH_SIZE, NONE):
            raise self.error(f"unknown loss normalization {self.normalization}")
        self.axis_param = self.param.softmax_param.axis

    def reshape(self, bottom, top):
        self.axis, self.outer, self.inner = label_axes(self, self.axis_param, bottom[0],
                                                       bottom[1])
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _labels(self, bottom):
        return read_labels(self, bottom[1], self.outer, self.inner, bottom[0].shape[self.axis],
                           self.ignore_label)

    def _normalizer(self, valid_count):
        if self.normalization == FULL:
            n = self.outer * self.inner
        elif self.normalization == VALID:
            n = valid_count
        elif self.normalization == BATCH_SIZE:
            n = self.outer
        else:
            n = 1
        return max(1.0, float(n))

    def forward(self, bottom, top):
        x = bottom[0].data
        prob = softmax(x, self.axis)
        self.prob = prob
        p3 = prob.reshape(self.outer, -1, self.inner)
        labels, valid = self._labels(bottom)
        picked = np.take_along_axis(p3, labels[:, None, :], axis=1)[:, 0, :]
        logs = -np.log(np.maximum(picked, x.dtype.type(_FLT_MIN)))
        loss = logs[valid].sum(dtype=x.dtype)
        top[0].data[...] = loss / x.dtype.type(self._normalizer(int(valid.sum())))
        if len(top) > 1:
            top[1].data[...] = prob

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("SoftmaxWithLoss cannot backpropagate to the label input")
        if not propagate_down[0]:
            return
        labels, valid = self._labels(bottom)
        d = self.prob.reshape(self.outer, -1, self.inner).copy()
        np.subtract.at(d, (np.arange(self.outer)[:, None], labels,
                           np.arange(self.inner)[None, :]), valid.astype(d.dtype))
        d *= valid[:, None, :]
        scale = top[0].diff.reshape(()) / d.dtype.type(self._normalizer(int(valid.sum())))
        bottom[0].diff[...] = (d * scale).reshape(bottom[0].shape)
