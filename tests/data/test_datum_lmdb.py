import types

import lmdb
import numpy as np
import pytest

from fecaffe_hw.data import datum_lmdb
from fecaffe_hw.data.datum_lmdb import DatumReader, write_datum_lmdb
from fecaffe_hw.errors import DataError

from wire_format import float_field, length_delimited, varint_field


# -- Datum wire format by hand, with caffe.proto's field numbers ------------

def datum_bytes(channels, height, width, *, data=None, label=None, float_data=(),
                encoded=None):
    out = varint_field(1, channels) + varint_field(2, height) + varint_field(3, width)
    if data is not None:
        out += length_delimited(4, data)
    if label is not None:
        out += varint_field(5, label)
    for value in float_data:  # proto2 repeated float: not packed, as Caffe writes it
        out += float_field(6, value)
    if encoded is not None:
        out += varint_field(7, int(encoded))
    return out


def write_raw_lmdb(path, records):
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for key, value in records:
            txn.put(key, value)
    env.close()


# ---------------------------------------------------------------------------

def test_hand_built_records_read_in_key_order(tmp_path):
    path = tmp_path / "hand_lmdb"
    first = bytes(range(12))
    # Inserted out of order: LMDB sorts the "%08d" keys.
    write_raw_lmdb(path, [
        (b"00000001", datum_bytes(1, 2, 2, float_data=[0.5, -1.25, 3.0, 1e-3], label=3)),
        (b"00000000", datum_bytes(3, 2, 2, data=first, label=7)),
        (b"00000002", datum_bytes(1, 1, 3, data=b"\x09\x08\xff")),
    ])
    with DatumReader(path) as reader:
        assert len(reader) == 3 and reader.shape == (3, 2, 2) and reader.dtype == np.uint8
        records = list(reader)
    (image0, label0), (image1, label1), (image2, label2) = records
    assert image0.dtype == np.uint8 and label0 == 7
    assert image0[2, 1, 0] == 10 and image0.ravel().tolist() == list(range(12))
    assert image1.dtype == np.float32 and label1 == 3
    assert image1[0].tolist() == [[0.5, -1.25], [3.0, np.float32(1e-3)]]
    assert image2.tolist() == [[[9, 8, 255]]] and label2 == 0


def test_round_trip_and_keys(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (11, 2, 3, 5)).astype(np.uint8)
    labels = rng.integers(0, 10, 11)
    assert write_datum_lmdb(tmp_path / "db", images, labels) == 11
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [key for key, _ in txn.cursor()]
        assert txn.get(b"00000004") == datum_bytes(2, 3, 5, data=images[4].tobytes(),
                                                   label=int(labels[4]))
    env.close()
    assert keys == [b"%08d" % i for i in range(11)]
    with DatumReader(tmp_path / "db") as reader:
        got_images, got_labels = reader.read_all()
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_float_images_use_float_data(tmp_path):
    images = np.array([[[[0.25, -2.0]]], [[[1e6, 7.5]]]], np.float32)
    write_datum_lmdb(tmp_path / "f", images, [1, 2])
    with DatumReader(tmp_path / "f") as reader:
        assert reader.dtype == np.float32
        got, labels = reader.read_all()
    np.testing.assert_array_equal(got, images)
    assert labels.tolist() == [1, 2]


@pytest.mark.parametrize("shape", [(400, 1, 28, 28), (150, 3, 48, 48)])
def test_map_size_is_sized_from_the_data(tmp_path, shape):
    # 3x48x48 = 6,912-byte values go to LMDB overflow pages, 28x28 ones do not.
    images = np.random.default_rng(2).integers(0, 256, shape).astype(np.uint8)
    write_datum_lmdb(tmp_path / "db", images, np.arange(len(images)) % 10)
    with DatumReader(tmp_path / "db") as reader:
        got, _ = reader.read_all()
    np.testing.assert_array_equal(got, images)
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    page = env.stat()["psize"]
    used = (env.info()["last_pgno"] + 1) * page
    with env.begin() as txn:
        sizes = [len(value) for _, value in txn.cursor()]
    env.close()
    estimate = datum_lmdb._map_size(sizes, 8, page)
    assert used <= estimate <= 3 * used + 64 * page


def test_cycle_wraps_around(tmp_path):
    images = np.arange(3 * 4, dtype=np.uint8).reshape(3, 1, 2, 2)
    write_datum_lmdb(tmp_path / "c", images, [10, 11, 12])
    with DatumReader(tmp_path / "c") as reader:
        stream = reader.cycle()
        labels = [next(stream)[1] for _ in range(8)]
    assert labels == [10, 11, 12, 10, 11, 12, 10, 11]


def test_encoded_datum_is_refused(tmp_path):
    write_raw_lmdb(tmp_path / "jpeg", [
        (b"00000000", datum_bytes(0, 0, 0, data=b"\xff\xd8\xff\xe0", label=1, encoded=True))])
    with pytest.raises(DataError, match="encoded") as info:
        DatumReader(tmp_path / "jpeg")
    assert str(tmp_path / "jpeg") in str(info.value)


def test_wrong_pixel_count(tmp_path):
    write_raw_lmdb(tmp_path / "short", [
        (b"00000000", datum_bytes(1, 2, 2, data=b"\x01\x02\x03", label=1))])
    with pytest.raises(DataError, match="1x2x2 but holds 3 values") as info:
        DatumReader(tmp_path / "short")
    assert "'00000000'" in str(info.value)


def test_not_a_datum(tmp_path):
    write_raw_lmdb(tmp_path / "junk", [(b"00000000", b"\xff\xff\xff")])
    with pytest.raises(DataError, match="not a Caffe Datum"):
        DatumReader(tmp_path / "junk")


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such LMDB database"),
    (lambda p: p.mkdir(), "no data.mdb"),
    (lambda p: p.write_text("hello"), "no data.mdb"),
    (lambda p: (p.mkdir(), (p / "data.mdb").write_bytes(b"x" * 10000)), "cannot open"),
])
def test_bad_paths_name_the_path(tmp_path, make, message):
    path = tmp_path / "db"
    make(path)
    with pytest.raises(DataError, match=message) as info:
        DatumReader(path)
    assert str(path) in str(info.value)


def test_empty_database(tmp_path):
    write_raw_lmdb(tmp_path / "empty", [])
    with pytest.raises(DataError, match="empty"):
        DatumReader(tmp_path / "empty")


def test_existing_database_is_kept_unless_overwrite(tmp_path):
    images = np.zeros((2, 1, 2, 2), np.uint8)
    write_datum_lmdb(tmp_path / "db", images, [1, 2])
    with pytest.raises(DataError, match="already exists"):
        write_datum_lmdb(tmp_path / "db", images, [3, 4])
    write_datum_lmdb(tmp_path / "db", images[:1] + 5, [9], overwrite=True)
    with DatumReader(tmp_path / "db") as reader:
        assert [label for _, label in reader] == [9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_interrupted_write_leaves_no_database(tmp_path, monkeypatch):
    class Interrupting:
        """lmdb whose write transactions die at the 7th put."""
        MapFullError = lmdb.MapFullError
        puts = 0

        @staticmethod
        def open(*args, **kwargs):
            env = lmdb.open(*args, **kwargs)
            wrapper = types.SimpleNamespace(
                stat=env.stat, info=env.info, set_mapsize=env.set_mapsize,
                sync=env.sync, close=env.close)

            class Txn:
                def __init__(self, **kwargs):
                    self.txn = env.begin(**kwargs)

                def __enter__(self):
                    self.txn.__enter__()
                    return self

                def __exit__(self, *exc):
                    return self.txn.__exit__(*exc)

                def put(self, *args, **kwargs):
                    Interrupting.puts += 1
                    if Interrupting.puts == 7:
                        raise KeyboardInterrupt
                    return self.txn.put(*args, **kwargs)

            wrapper.begin = Txn
            return wrapper

    images = np.ones((10, 1, 2, 2), np.uint8)
    write_datum_lmdb(tmp_path / "db", images, np.arange(10))
    monkeypatch.setattr(datum_lmdb, "lmdb", Interrupting)
    monkeypatch.setattr(datum_lmdb, "_CHUNK", 3)
    with pytest.raises(KeyboardInterrupt):
        write_datum_lmdb(tmp_path / "db", images[:9] * 2, np.arange(9), overwrite=True)
    Interrupting.puts = 0
    with pytest.raises(KeyboardInterrupt):
        write_datum_lmdb(tmp_path / "new", images, np.arange(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    monkeypatch.undo()
    with DatumReader(tmp_path / "db") as reader:
        got, labels = reader.read_all()
    np.testing.assert_array_equal(got, images)  # the old database, untouched
    assert labels.tolist() == list(range(10))


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((2, 2, 2), np.uint8), [0, 1], "N x C x H x W"),
    (np.zeros((2, 1, 2, 2), np.uint8), [0], "does not match 2 images"),
    (np.zeros((2, 1, 2, 2), np.int16), [0, 1], "uint8 or floating"),
    (np.zeros((2, 1, 2, 2), np.uint8), [0.5, 1], "integers"),
])
def test_write_validates(tmp_path, images, labels, message):
    with pytest.raises(ValueError, match=message):
        write_datum_lmdb(tmp_path / "db", images, labels)
    assert not (tmp_path / "db").exists()


def test_records_of_different_shapes_are_refused_by_read_all(tmp_path):
    write_raw_lmdb(tmp_path / "mixed", [
        (b"00000000", datum_bytes(1, 2, 2, data=bytes(4), label=0)),
        (b"00000001", datum_bytes(1, 2, 3, data=bytes(6), label=1)),
    ])
    with DatumReader(tmp_path / "mixed") as reader:
        assert [image.shape for image, _ in reader] == [(1, 2, 2), (1, 2, 3)]
        with pytest.raises(DataError, match="record 1 is 1x2x3, the first is 1x2x2"):
            reader.read_all()
