"""Caffe's axis conventions shared by the layers that take an ``axis``."""

import math

import numpy as np

__all__ = ["canonical_axis", "outer_inner", "label_axes", "read_labels"]


def canonical_axis(layer, axis, ndim, what="axis"):
    """``axis`` in ``[-ndim, ndim)`` made non-negative, as ``Blob::CanonicalAxisIndex``."""
    if not -ndim <= axis < ndim:
        raise layer.error(f"{what} {axis} out of range for a {ndim}-axis blob")
    return axis % ndim


def outer_inner(shape, axis):
    """``(outer, inner)`` counts around ``axis``: the products before and after it."""
    return math.prod(shape[:axis]), math.prod(shape[axis + 1:])


def label_axes(layer, axis, scores, labels):
    """``(axis, outer, inner)`` of ``scores`` classified along ``axis``, checking
    that the ``labels`` blob holds one label per ``outer x inner`` position."""
    shape = scores.shape
    axis = canonical_axis(layer, axis, len(shape))
    outer, inner = outer_inner(shape, axis)
    if labels.count != outer * inner:
        raise layer.error(f"label count {labels.count} must be {outer * inner} "
                          f"(outer {outer} x inner {inner}) for scores of shape {shape}")
    return axis, outer, inner


def read_labels(layer, labels, outer, inner, classes, ignore_label):
    """``(labels, valid)`` as ``(outer, inner)`` arrays: the int64 labels with
    ignored ones replaced by 0 (safe to index with), and which are not ignored.
    A label outside ``[0, classes)`` that is not ignored is an error."""
    labels = labels.data.reshape(outer, inner).astype(np.int64)
    valid = (np.ones_like(labels, bool) if ignore_label is None
             else labels != ignore_label)
    bad = valid & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise layer.error(f"label {labels[bad][0]} out of range for {classes} classes")
    return np.where(valid, labels, 0), valid
