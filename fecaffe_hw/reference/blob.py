"""Caffe's Blob: an N-d float32 array of values and one of gradients."""

import numpy as np

__all__ = ["Blob"]


class Blob:
    """Holds ``data`` and ``diff``, two float32 arrays of one shape.

    Mirrors pycaffe: ``blob.data`` and ``blob.diff`` are NumPy arrays that may
    be written in place (``blob.data[...] = x``); :meth:`reshape` reallocates
    them only when the shape changes.
    """

    def __init__(self, shape=()):
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)

    @property
    def shape(self):
        return self.data.shape

    @property
    def count(self):
        return self.data.size

    @property
    def num(self):
        return self.data.shape[0]

    @property
    def channels(self):
        return self.data.shape[1]

    def reshape(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"Blob shape {shape} has a negative dimension")
        if shape != self.data.shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    def __repr__(self):
        return f"Blob(shape={self.shape})"
