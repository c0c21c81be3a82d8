"""Dropout: a Bernoulli mask in training, identity in testing."""

from ..layer import TRAIN, Layer, register

__all__ = ["Dropout"]


@register("Dropout")
class Dropout(Layer):
    """Train: ``x * mask / (1 - ratio)`` with ``mask ~ Bernoulli(1 - ratio)`` drawn
    from ``self.rng`` each forward pass (kept in ``self.mask``); test: ``x``.

    With Caffe's ``scale_train: false`` the scaling moves to the test phase.
    """

    def setup(self, bottom, top):
        p = self.param.dropout_param
        self.ratio = p.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio {self.ratio} is not in [0, 1)")
        self.scale_train = getattr(p, "scale_train", True)
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase == TRAIN:
            self.mask = self.rng.random(x.shape) >= self.ratio
            scale = x.dtype.type(self.scale if self.scale_train else 1.0)
            top[0].data[...] = x * self.mask * scale
        elif self.scale_train:
            top[0].data[...] = x
        else:
            top[0].data[...] = x * x.dtype.type(1.0 - self.ratio)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        if self.phase == TRAIN:
            scale = dy.dtype.type(self.scale if self.scale_train else 1.0)
            bottom[0].diff[...] = dy * self.mask * scale
        elif self.scale_train:
            bottom[0].diff[...] = dy
        else:
            bottom[0].diff[...] = dy * dy.dtype.type(1.0 - self.ratio)
