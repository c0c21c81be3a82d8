"""Bit-exact model of the tile moves between NCHW feature maps and the operand
buffers: ``DMA_LOAD``/``DMA_STORE`` with ``IM2COL``, ``FMAP`` and ``COL2IM``
(``cores/fmap_dma.py``).

A convolution's GEMMs see its input ``x`` (``N x C x H x W``) as Caffe's
im2col matrix over the whole batch: row ``k = (c * KH + ky) * KW + kx``,
column ``p = (n * OH + oy) * OW + ox``, element
``x[n, c, oy * SH - PH + ky, ox * SW - PW + kx]`` (zero outside the map).
Its output ``y`` (``N x OC x OH x OW``) and its gradient are "feature-map
matrices": row = channel, column = ``p``. Tiles address both with a first
row ``k0`` and first column ``col0``.

Loads copy int16 elements. Stores take accumulator values, requantise each
(``requantize(acc, shift, Format(16, 0))``: round half to even, saturate)
and either overwrite (``FMAP``) or saturating-add into the map (``COL2IM``,
Caffe's col2im scatter-add, padding dropped). A ``COL2IM`` tile is added row
by row in order (within a row no two columns meet the same pixel), which
fixes the result where saturation makes the order matter.
"""

from dataclasses import dataclass

import numpy as np

from .format import Format, requantize, saturate

__all__ = ["ConvGeometry", "im2col_tile", "fmap_tile", "fmap_store", "col2im_add"]

ELEMENT = Format(16, 0)


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution's shapes as ``SET_GEOMETRY`` on the line buffer gives them."""
    channels: int
    height: int
    width: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    out_h: int
    out_w: int
    images: int
    out_channels: int

    @classmethod
    def from_fields(cls, fields):
        """From the fields of a ``SET_GEOMETRY`` command (extra fields ignored)."""
        return cls(**{name: int(fields[name]) for name in cls.__dataclass_fields__})

    @property
    def rows(self):
        """Rows of the im2col matrix: ``C * KH * KW``."""
        return self.channels * self.kernel_h * self.kernel_w

    @property
    def positions(self):
        """Columns of the im2col and feature-map matrices: ``N * OH * OW``."""
        return self.images * self.out_h * self.out_w

    def im2col_indices(self, k0, col0, rows, cols):
        """``(n, c, iy, ix, inside)`` arrays of shape ``(rows, cols)`` for a tile."""
        self._check(k0, rows, self.rows, col0, cols)
        k = np.arange(k0, k0 + rows)[:, None]
        p = np.arange(col0, col0 + cols)[None, :]
        c, rest = np.divmod(k, self.kernel_h * self.kernel_w)
        ky, kx = np.divmod(rest, self.kernel_w)
        n, pix = np.divmod(p, self.out_h * self.out_w)
        oy, ox = np.divmod(pix, self.out_w)
        iy = oy * self.stride_h - self.pad_h + ky
        ix = ox * self.stride_w - self.pad_w + kx
        inside = (iy >= 0) & (iy < self.height) & (ix >= 0) & (ix < self.width)
        shape = (rows, cols)
        return tuple(np.broadcast_to(a, shape) for a in (n, c, iy, ix, inside))

    def fmap_indices(self, k0, col0, rows, cols, channels):
        """``(n, c, pix)`` arrays of shape ``(rows, cols)`` for a feature-map tile."""
        self._check(k0, rows, channels, col0, cols)
        c = np.arange(k0, k0 + rows)[:, None]
        n, pix = np.divmod(np.arange(col0, col0 + cols)[None, :], self.out_h * self.out_w)
        shape = (rows, cols)
        return tuple(np.broadcast_to(a, shape) for a in (n, c, pix))

    def _check(self, k0, rows, row_limit, col0, cols):
        if rows < 1 or cols < 1 or k0 < 0 or col0 < 0:
            raise ValueError(f"Tile {rows} x {cols} at ({k0}, {col0}) is empty or negative")
        if k0 + rows > row_limit or col0 + cols > self.positions:
            raise ValueError(f"Tile rows {k0}..{k0 + rows - 1}, columns {col0}..{col0 + cols - 1} "
                             f"leave the {row_limit} x {self.positions} matrix")


def _map(array, shape, what):
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, not {array.shape}")
    return array


def im2col_tile(x, geometry, k0, col0, rows, cols):
    """Tile ``[k0:k0+rows, col0:col0+cols]`` of the im2col matrix of ``x``
    (``N x C x H x W``), as int64."""
    g = geometry
    x = _map(x, (g.images, g.channels, g.height, g.width), "Input map")
    n, c, iy, ix, inside = g.im2col_indices(k0, col0, rows, cols)
    values = x[n, c, np.clip(iy, 0, g.height - 1), np.clip(ix, 0, g.width - 1)]
    return np.where(inside, values, 0).astype(np.int64)


def fmap_tile(y, geometry, k0, col0, rows, cols):
    """Tile ``[k0:k0+rows, col0:col0+cols]`` of the feature-map matrix of ``y``
    (``N x OC x OH x OW``), as int64."""
    g = geometry
    y = _map(y, (g.images, g.out_channels, g.out_h, g.out_w), "Output map")
    n, c, pix = g.fmap_indices(k0, col0, rows, cols, g.out_channels)
    return y.reshape(g.images, g.out_channels, -1)[n, c, pix].astype(np.int64)


def fmap_store(y, geometry, acc, shift, k0, col0):
    """Requantise the accumulator tile ``acc`` by ``shift`` into ``y`` (int16,
    ``N x OC x OH x OW``, modified in place) at ``(k0, col0)``."""
    g = geometry
    y = _map(y, (g.images, g.out_channels, g.out_h, g.out_w), "Output map")
    acc = np.asarray(acc, dtype=np.int64)
    n, c, pix = g.fmap_indices(k0, col0, *acc.shape, g.out_channels)
    y.reshape(g.images, g.out_channels, -1)[n, c, pix] = requantize(acc, shift, ELEMENT)
    return y


def col2im_add(x, geometry, acc, shift, k0, col0):
    """Requantise the accumulator tile ``acc`` (rows of the im2col matrix) by
    ``shift`` and saturating-add it into ``x`` (int16, ``N x C x H x W``,
    modified in place) row by row; elements in the padding are dropped."""
    g = geometry
    x = _map(x, (g.images, g.channels, g.height, g.width), "Input map")
    acc = np.asarray(acc, dtype=np.int64)
    values = requantize(acc, shift, ELEMENT)
    n, c, iy, ix, inside = g.im2col_indices(k0, col0, *acc.shape)
    for r in range(acc.shape[0]):
        keep = inside[r]
        at = (n[r][keep], c[r][keep], iy[r][keep], ix[r][keep])
        x[at] = saturate(x[at].astype(np.int64) + values[r][keep], 16)
    return x
