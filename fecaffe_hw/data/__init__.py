"""Training data as Caffe keeps it: Datum LMDBs, MNIST IDX files, the bundled
MNIST sample, and Caffe's data transformer."""

from .datum_lmdb import DatumReader, decode_datum, write_datum_lmdb
from .idx import read_idx, write_idx
from .sample import mnist_sample, mnist_sample_split
from .transformer import DataTransformer, read_mean_file, write_mean_file

__all__ = [
    "DatumReader", "decode_datum", "write_datum_lmdb",
    "read_idx", "write_idx",
    "mnist_sample", "mnist_sample_split",
    "DataTransformer", "read_mean_file", "write_mean_file",
]
