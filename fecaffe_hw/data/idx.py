"""MNIST's IDX files (``train-images-idx3-ubyte`` and friends), raw or gzipped."""

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_idx", "write_idx"]

# IDX type codes; every multi-byte value in an IDX file is big-endian.
_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype: code
          for code, dtype in _TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path):
    """The array stored in IDX file ``path`` (gzip detected from its content).

    MNIST's files hold ``uint8`` (images ``(N, 28, 28)``, labels ``(N,)``);
    the other IDX element types are returned in native byte order.
    :class:`DataError` naming the file if it is missing, truncated or not IDX.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such IDX file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: damaged gzip data ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header is truncated or has no dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX dimensions {'x'.join(map(str, shape))} need "
                        f"{expected} bytes, file has {len(raw)}")
    array = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzipped if ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    if key not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, not {array.ndim}")
    code = _CODES[key]
    raw = (bytes([0, 0, code, array.ndim])
           + np.asarray(array.shape, ">u4").tobytes()
           + array.astype(_TYPES[code]).tobytes())
    path = Path(path)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
