"""Caffe's image databases: LMDB holding serialised ``Datum`` records.

This is what Caffe's ``convert_mnist_data`` and ``convert_imageset`` write and
what its ``Data`` layer reads: keys are record indices formatted ``"%08d"`` (so
LMDB's byte order is insertion order), values are ``caffe.Datum`` messages with
``channels``, ``height``, ``width``, the pixels as ``data`` bytes (or
``float_data``) and the ``label``.
"""

import itertools
import os
import shutil
from pathlib import Path

import lmdb
import numpy as np

from ..errors import DataError

__all__ = ["write_datum_lmdb", "DatumReader", "decode_datum"]

# Records per write transaction; Caffe's converters commit every 1,000.
_CHUNK = 5000


def _caffe_pb2():
    from ..caffe import caffe_pb2
    return caffe_pb2


def _map_size(value_sizes, key_size, page):
    """Bytes LMDB needs for these records, with room for the B-tree's pages.

    A node is an 8-byte header, the key and the value; values too big for
    half a page go to their own overflow pages. Records are appended in key
    order, so leaf pages fill completely; doubling covers branch pages and
    the free-list of the one transaction being written.
    """
    sizes = np.asarray(value_sizes, np.int64)
    node = 8 + key_size + sizes
    inline = node <= (page - 16) // 2
    leaf = int(node[inline].sum())
    overflow = int((np.ceil((sizes[~inline] + 16) / page) * page).sum()
                   + (8 + key_size + 8) * (~inline).sum())
    total = 2 * (leaf + overflow) + 64 * page
    return -(-total // page) * page


def write_datum_lmdb(path, images, labels, *, overwrite=False):
    """Write ``images`` (``N, C, H, W``) and ``labels`` (``N``) as a Caffe Datum LMDB.

    ``uint8`` images are stored as ``data`` bytes, float images as
    ``float_data``. The database is built in a temporary directory beside
    ``path`` and renamed into place when complete, so an interrupted write
    never leaves something that looks like a finished database. An existing
    ``path`` is a :class:`DataError` unless ``overwrite``. Returns ``N``.
    """
    path = Path(path)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, not shape {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels shape {labels.shape} does not match {len(images)} images")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or floating point, not {images.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError("labels must be integers")
        labels = labels.astype(np.int64)
    if labels.size and (labels.min() < -2**31 or labels.max() >= 2**31):
        raise ValueError("labels must fit Datum's int32 label field")
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists (remove it or pass overwrite=True)")

    caffe_pb2 = _caffe_pb2()
    n, c, h, w = images.shape
    values = []
    for image, label in zip(images, labels):
        datum = caffe_pb2.Datum(channels=c, height=h, width=w, label=int(label))
        if images.dtype == np.uint8:
            datum.data = image.tobytes()
        else:
            datum.float_data.extend(image.astype(np.float32).ravel().tolist())
        values.append(datum.SerializeToString())
    keys = [b"%08d" % i for i in range(n)]

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        env = lmdb.open(str(partial), map_size=1 << 20, subdir=True, sync=True)
        try:
            env.set_mapsize(_map_size([len(v) for v in values], 8, env.stat()["psize"]))
            start = 0
            while start < n:
                stop = min(start + _CHUNK, n)
                try:
                    with env.begin(write=True) as txn:
                        for key, value in zip(keys[start:stop], values[start:stop]):
                            txn.put(key, value, append=True)
                except lmdb.MapFullError:
                    # The estimate is conservative; this is the safety net.
                    env.set_mapsize(2 * env.info()["map_size"])
                    continue
                start = stop
            env.sync(True)
        finally:
            env.close()
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(partial, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return n


def decode_datum(value, *, where="<datum>"):
    """``(image, label)`` from a serialised Datum: ``uint8`` image from ``data``,
    ``float32`` from ``float_data``, shaped ``(C, H, W)``.

    ``where`` names the record in the :class:`DataError` raised for a record
    that does not parse, is JPEG/PNG-``encoded`` or has the wrong pixel count.
    """
    from google.protobuf.message import DecodeError
    try:
        datum = _caffe_pb2().Datum.FromString(value)
    except DecodeError:
        raise DataError(f"{where}: not a Caffe Datum record") from None
    if datum.encoded:
        raise DataError(f"{where}: encoded (JPEG/PNG) Datum records are not supported; "
                        "convert the images without --encoded")
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        image = np.frombuffer(datum.data, np.uint8)
    else:
        image = np.asarray(datum.float_data, np.float32)
    if count == 0 or image.size != count:
        raise DataError(f"{where}: Datum says {'x'.join(map(str, shape))} "
                        f"but holds {image.size} values")
    return image.reshape(shape), datum.label


class DatumReader:
    """Reads a Caffe Datum LMDB at ``path`` in key order.

    Iterating gives one pass of ``(image, label)``, image ``(C, H, W)``
    ``uint8`` (or ``float32`` for ``float_data`` records); :meth:`cycle`
    restarts at the first record forever, as Caffe's data reader does in
    training; :meth:`read_all` loads the whole database into two arrays.
    A missing or invalid database is a :class:`DataError` naming ``path``.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such LMDB database")
        if not (self.path / "data.mdb").is_file():
            raise DataError(f"{self.path}: not an LMDB database (no data.mdb inside)")
        try:
            self._env = lmdb.open(str(self.path), readonly=True, lock=False,
                                  readahead=False, subdir=True)
            self._length = self._env.stat()["entries"]
        except lmdb.Error as error:
            raise DataError(f"{self.path}: cannot open LMDB database: {error}") from None
        if self._length == 0:
            self.close()
            raise DataError(f"{self.path}: LMDB database is empty")
        image, _ = next(iter(self))
        self.shape = image.shape
        self.dtype = image.dtype

    def __len__(self):
        return self._length

    @property
    def nbytes(self):
        """Bytes the decoded images take in memory (judged from the first record)."""
        return self._length * int(np.prod(self.shape)) * self.dtype.itemsize

    def _where(self, key):
        return f"{self.path} record {bytes(key).decode('ascii', 'replace')!r}"

    def __iter__(self):
        try:
            with self._env.begin(buffers=True) as txn:
                for key, value in txn.cursor():
                    yield decode_datum(value, where=self._where(key))
        except lmdb.Error as error:
            raise DataError(f"{self.path}: cannot read LMDB database: {error}") from None

    def cycle(self):
        """``(image, label)`` in key order, wrapping to the first record forever."""
        return itertools.chain.from_iterable(iter(self) for _ in itertools.count())

    def read_all(self):
        """``(images (N, C, H, W), labels (N,) int64)``; records must share one shape."""
        images = np.empty((self._length, *self.shape), self.dtype)
        labels = np.empty(self._length, np.int64)
        count = 0
        for index, (image, label) in enumerate(self):
            if index >= self._length:
                raise DataError(f"{self.path}: database changed while it was read")
            if image.shape != self.shape:
                raise DataError(f"{self.path}: record {index} is "
                                f"{'x'.join(map(str, image.shape))}, the first is "
                                f"{'x'.join(map(str, self.shape))}")
            if image.dtype != images.dtype:
                images = images.astype(np.float32)
            images[index] = image
            labels[index] = label
            count = index + 1
        if count != self._length:
            raise DataError(f"{self.path}: database changed while it was read")
        return images, labels

    def close(self):
        self._env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
