"""Eltwise: elementwise PROD, SUM (with coefficients) or MAX of several bottoms."""

import numpy as np

from ..layer import Layer, register

__all__ = ["Eltwise"]

PROD, SUM, MAX = 0, 1, 2


@register("Eltwise")
class Eltwise(Layer):
    """Combines two or more same-shaped bottoms elementwise.

    SUM: ``sum(coeff_i * x_i)`` (coefficients default to 1). PROD: the product;
    backward uses the product of the other bottoms (``stable_prod_grad``) or
    ``top / x_i``. MAX: the maximum; Caffe's argmax (between the first two a
    tie goes to the second, later ties keep the earlier) routes the gradient.
    """

    num_bottoms = (2, None)

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = p.operation
        if self.op not in (PROD, SUM, MAX):
            raise self.error(f"unknown eltwise operation {self.op}")
        if len(p.coeff) and self.op != SUM:
            raise self.error("eltwise coefficients apply only to SUM")
        if len(p.coeff) not in (0, len(bottom)):
            raise self.error(f"eltwise has {len(p.coeff)} coefficients for {len(bottom)} bottoms")
        self.coeff = list(p.coeff) if len(p.coeff) else [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom, top):
        for b in bottom[1:]:
            if b.shape != bottom[0].shape:
                raise self.error(f"eltwise bottoms must share a shape, got {bottom[0].shape} "
                                 f"and {b.shape}")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        dtype = bottom[0].data.dtype
        if self.op == SUM:
            acc = np.zeros(bottom[0].shape, dtype)
            for c, b in zip(self.coeff, bottom):
                acc += dtype.type(c) * b.data
            top[0].data[...] = acc
        elif self.op == PROD:
            acc = bottom[0].data * bottom[1].data
            for b in bottom[2:]:
                acc = acc * b.data
            top[0].data[...] = acc
        else:
            a, b = bottom[0].data, bottom[1].data
            first = a > b
            best = np.where(first, a, b)
            mask = np.where(first, 0, 1)
            for i, blob in enumerate(bottom[2:], start=2):
                better = blob.data > best
                best = np.where(better, blob.data, best)
                mask = np.where(better, i, mask)
            self.mask = mask
            top[0].data[...] = best

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for i, (b, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            if self.op == SUM:
                b.diff[...] = dy if self.coeff[i] == 1 else dy.dtype.type(self.coeff[i]) * dy
            elif self.op == PROD:
                if self.stable_prod_grad:
                    others = [o.data for j, o in enumerate(bottom) if j != i]
                    acc = others[0].copy()
                    for o in others[1:]:
                        acc *= o
                    b.diff[...] = acc * dy
                else:
                    b.diff[...] = top[0].data / b.data * dy
            else:
                b.diff[...] = np.where(self.mask == i, dy, 0)
