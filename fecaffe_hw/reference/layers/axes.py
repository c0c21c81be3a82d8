"""Caffe's axis conventions shared by the layers that take an ``axis``."""

import math

__all__ = ["canonical_axis", "outer_inner"]


def canonical_axis(layer, axis, ndim, what="axis"):
    """``axis`` in ``[-ndim, ndim)`` made non-negative, as ``Blob::CanonicalAxisIndex``."""
    if not -ndim <= axis < ndim:
        raise layer.error(f"{what} {axis} out of range for a {ndim}-axis blob")
    return axis % ndim


def outer_inner(shape, axis):
    """``(outer, inner)`` counts around ``axis``: the products before and after it."""
    return math.prod(shape[:axis]), math.prod(shape[axis + 1:])
