import numpy as np
import pytest

from fecaffe_hw.data.datum_lmdb import DatumReader
from fecaffe_hw.data.idx import write_idx
from fecaffe_hw.data.mnist import prepare_mnist
from fecaffe_hw.data.sample import mnist_sample_split
from fecaffe_hw.errors import DataError


def read(path):
    with DatumReader(path) as reader:
        return reader.read_all()


def test_from_bundled_sample(tmp_path):
    assert prepare_mnist(tmp_path / "mnist") == {"train": 4000, "test": 1000}
    (train_x, train_y), (test_x, test_y) = mnist_sample_split()
    images, labels = read(tmp_path / "mnist" / "mnist_train_lmdb")
    np.testing.assert_array_equal(images, train_x)
    np.testing.assert_array_equal(labels, train_y)
    images, labels = read(tmp_path / "mnist" / "mnist_test_lmdb")
    np.testing.assert_array_equal(images, test_x)
    np.testing.assert_array_equal(labels, test_y)
    # Running again replaces the databases.
    assert prepare_mnist(tmp_path / "mnist") == {"train": 4000, "test": 1000}


def test_from_idx_files(tmp_path):
    rng = np.random.default_rng(3)
    sets = {}
    for role, prefix, n, suffix in (("train", "train", 30, ".gz"), ("test", "t10k", 7, "")):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        sets[role] = images, labels
    assert prepare_mnist(tmp_path / "out", idx_dir=tmp_path) == {"train": 30, "test": 7}
    for role in ("train", "test"):
        images, labels = read(tmp_path / "out" / f"mnist_{role}_lmdb")
        np.testing.assert_array_equal(images[:, 0], sets[role][0])
        np.testing.assert_array_equal(labels, sets[role][1])


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        prepare_mnist(tmp_path / "out", idx_dir=tmp_path / "missing")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="no train-labels-idx1-ubyte or"):
        prepare_mnist(tmp_path / "out", idx_dir=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="3 images but train-labels-idx1-ubyte has 4 labels"):
        prepare_mnist(tmp_path / "out", idx_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_command_line(tmp_path, monkeypatch, capsys):
    from fecaffe_hw.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["data", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "4,000" in out and "1,000" in out
    assert (tmp_path / "data" / "mnist" / "mnist_train_lmdb" / "data.mdb").is_file()
    assert main(["data", "mnist", "--idx", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
