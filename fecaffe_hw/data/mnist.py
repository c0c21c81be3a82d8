"""The ``fecaffe-hw data mnist`` job: MNIST as the Caffe LMDBs LeNet reads.

Writes ``mnist_train_lmdb`` and ``mnist_test_lmdb`` in ``out_dir``, as Caffe's
``examples/mnist/create_mnist.sh`` does, from the four IDX files of the full
MNIST set when given a directory holding them, else from the bundled
5,000-digit sample (4,000 train / 1,000 test).
"""

from pathlib import Path

import numpy as np

from ..errors import DataError
from .datum_lmdb import write_datum_lmdb
from .idx import read_idx
from .sample import mnist_sample_split

__all__ = ["prepare_mnist", "IDX_FILES"]

#: Role -> base name of the IDX file (optionally with ``.gz``), as on LeCun's site.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(idx_dir, name):
    # The files are distributed both ways and some mirrors use a dot.
    for candidate in (name, name + ".gz", name.replace("-idx", ".idx"),
                      name.replace("-idx", ".idx") + ".gz"):
        if (idx_dir / candidate).is_file():
            return idx_dir / candidate
    raise DataError(f"{idx_dir}: no {name} or {name}.gz (the MNIST IDX files)")


def _load_idx_pair(idx_dir, role):
    images_path = _find_idx(idx_dir, IDX_FILES[f"{role}_images"])
    labels_path = _find_idx(idx_dir, IDX_FILES[f"{role}_labels"])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images N x H x W, "
                        f"found {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected uint8 labels, "
                        f"found {labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path.name} "
                        f"has {len(labels)} labels")
    return images[:, np.newaxis], labels


def prepare_mnist(out_dir="data/mnist", idx_dir=None):
    """Write ``out_dir/mnist_train_lmdb`` and ``out_dir/mnist_test_lmdb``.

    Existing databases there are replaced (each atomically). Returns the
    record counts, ``{"train": n, "test": n}``.
    """
    out_dir = Path(out_dir).expanduser()
    if idx_dir is not None:
        idx_dir = Path(idx_dir).expanduser()
        if not idx_dir.is_dir():
            raise DataError(f"{idx_dir}: no such directory (expected the MNIST IDX files)")
        train = _load_idx_pair(idx_dir, "train")
        test = _load_idx_pair(idx_dir, "test")
    else:
        train, test = mnist_sample_split()
    return {role: write_datum_lmdb(out_dir / f"mnist_{role}_lmdb", images, labels,
                                   overwrite=True)
            for role, (images, labels) in (("train", train), ("test", test))}
