import gzip
import struct

import numpy as np
import pytest

from fecaffe_hw.data.idx import read_idx, write_idx
from fecaffe_hw.errors import DataError


def idx_bytes(type_code, shape, payload):
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_read_raw_images(tmp_path):
    pixels = bytes(range(2 * 3 * 4))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(0x08, (2, 3, 4), pixels))
    array = read_idx(path)
    assert array.dtype == np.uint8 and array.shape == (2, 3, 4)
    assert array[1, 2, 3] == 23 and array[0, 1, 0] == 4


def test_read_gzipped_labels(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (5,), bytes([7, 2, 1, 0, 4]))))
    assert read_idx(path).tolist() == [7, 2, 1, 0, 4]


def test_read_big_endian_int32(tmp_path):
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(0x0C, (3,), struct.pack(">3i", -1, 256, 70000)))
    array = read_idx(path)
    assert array.dtype == np.int32 and array.tolist() == [-1, 256, 70000]


def test_write_round_trip(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (4, 5, 6)).astype(np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "a", array)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a").read_bytes() == idx_bytes(0x08, (4, 5, 6), array.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00\x00\x42\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated"),
    (idx_bytes(0x08, (2, 2), b"\x01\x02\x03"), "2x2 need 16 bytes, file has 15"),
    (b"\x1f\x8b\x08\x00garbage", "damaged gzip"),
])
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken-idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such IDX file") as info:
        read_idx(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
