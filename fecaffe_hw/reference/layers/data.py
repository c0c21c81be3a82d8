"""Caffe's ``Data`` layer: batches of images and labels from a Datum LMDB."""

from pathlib import Path

import numpy as np

from ...data.datum_lmdb import DatumReader
from ...data.transformer import DataTransformer
from ...errors import DataError
from ..layer import Layer, register

__all__ = ["DataLayer"]

_MNIST_DATABASES = ("mnist_train_lmdb", "mnist_test_lmdb")


@register("Data")
class DataLayer(Layer):
    """Tops ``data`` (``batch_size, C, H, W`` float32, transformed as
    ``transform_param`` says) and optionally ``label`` (``batch_size``).

    Records are taken in key order and wrap around at the end of the
    database, as Caffe's reader does. ``data_param.source`` is resolved
    against the current directory, as Caffe does. A database of at most
    :attr:`memory_limit` bytes of pixels is read into memory once; larger ones
    are streamed. No bottoms; backward does nothing.
    """

    num_bottoms = 0
    num_tops = (1, 2)
    memory_limit = 256 << 20

    def setup(self, bottom, top):
        self.check_blob_counts(len(bottom), len(top))
        param = self.param.data_param
        if param.batch_size < 1:
            raise self.error(f"data_param.batch_size must be positive, not {param.batch_size}")
        if param.HasField("backend") and param.backend == param.LEVELDB:
            raise self.error("backend LEVELDB is not supported; use LMDB "
                             "(convert the data again with --backend=lmdb)")
        if not param.source:
            raise self.error("data_param.source is not set")
        self.batch_size = param.batch_size
        self.source = Path(param.source)
        try:
            self.transformer = DataTransformer.from_param(self._transform_param(), self.phase,
                                                          self.rng)
        except ValueError as error:
            raise self.error(f"transform_param: {error}") from None
        except DataError as error:
            raise self.error(str(error)) from None
        reader = self._open(self.source)
        try:
            self.output_shape = self.transformer.output_shape(reader.shape)
        except ValueError as error:
            reader.close()
            raise self.error(f"transform_param: {error}") from None
        self._input_shape = reader.shape
        self.size = len(reader)
        skip = int(self.rng.integers(param.rand_skip)) if param.rand_skip else 0
        if reader.nbytes <= self.memory_limit:
            try:
                self._images, self._labels = reader.read_all()
            except DataError as error:
                raise DataError(f'layer "{self.name}": {error}') from None
            finally:
                reader.close()
            self._cursor = skip % self.size
            self._stream = None
        else:
            self._reader = reader
            self._stream = reader.cycle()
            for _ in range(skip):
                next(self._stream)

    def _transform_param(self):
        # Old prototxts put these in data_param; Caffe's upgrade moves them.
        transform = type(self.param.transform_param)()
        transform.CopyFrom(self.param.transform_param)
        legacy = self.param.data_param
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if legacy.HasField(field) and not transform.HasField(field):
                setattr(transform, field, getattr(legacy, field))
        return transform

    def _open(self, path):
        if not path.exists():
            hint = ""
            if path.name in _MNIST_DATABASES:
                out_dir = path.parent.as_posix()
                option = "" if out_dir == "data/mnist" else f" -o {out_dir}"
                hint = f"; run `fecaffe-hw data mnist{option}` to create it"
            where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
            raise DataError(f'layer "{self.name}": data source {path} does not exist'
                            f"{where}{hint}")
        try:
            return DatumReader(path)
        except DataError as error:
            raise DataError(f'layer "{self.name}": {error}') from None

    def reshape(self, bottom, top):
        top[0].reshape(self.batch_size, *self.output_shape)
        if len(top) > 1:
            top[1].reshape(self.batch_size)

    def next_batch(self):
        """The next ``(images (N, C, H, W), labels (N,))``, untransformed."""
        if self._stream is None:
            index = (self._cursor + np.arange(self.batch_size)) % self.size
            self._cursor = (self._cursor + self.batch_size) % self.size
            return self._images[index], self._labels[index]
        images = np.empty((self.batch_size, *self._input_shape), self._reader.dtype)
        labels = np.empty(self.batch_size, np.int64)
        try:
            for i in range(self.batch_size):
                image, labels[i] = next(self._stream)
                if image.shape != self._input_shape:
                    raise DataError(f"{self.source}: a record is "
                                    f"{'x'.join(map(str, image.shape))}, the first is "
                                    f"{'x'.join(map(str, self._input_shape))}")
                images[i] = image
        except DataError as error:
            raise DataError(f'layer "{self.name}": {error}') from None
        return images, labels

    def forward(self, bottom, top):
        images, labels = self.next_batch()
        top[0].data[...] = self.transformer.transform(images)
        if len(top) > 1:
            top[1].data[...] = labels

    def backward(self, top, propagate_down, bottom):
        pass  # data layers have no inputs to propagate to
