import numpy as np
import pytest

from fecaffe_hw.caffe import caffe_pb2
from fecaffe_hw.data.transformer import DataTransformer, read_mean_file, write_mean_file
from fecaffe_hw.errors import DataError

TRAIN, TEST = 0, 1
# One 2-channel 3x3 image: channel 0 is 1..9, channel 1 is 10, 20, ..., 90.
IMAGE = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]],
                  [[10, 20, 30], [40, 50, 60], [70, 80, 90]]], np.uint8)


class ScriptedRng:
    """Returns queued values from ``integers(n)``, checking each ``n``."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def integers(self, n):
        want_n, value = self.draws.pop(0)
        assert n == want_n
        return value


def test_scale_and_single_mean_value():
    out = DataTransformer(scale=0.5, mean_value=[2], phase=TEST).transform(IMAGE)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [[-0.5, 0, 0.5], [1, 1.5, 2], [2.5, 3, 3.5]])
    np.testing.assert_array_equal(out[1, 0], [4, 9, 14])


def test_per_channel_mean_and_center_crop():
    out = DataTransformer(mean_value=[1, 10], crop_size=2, phase=TEST).transform(IMAGE)
    # (3 - 2) // 2 = 0: the crop starts at the top-left, as Caffe's integer division does.
    np.testing.assert_array_equal(out, [[[0, 1], [3, 4]], [[0, 10], [30, 40]]])
    out = DataTransformer(crop_size=1, phase=TEST).transform(IMAGE)
    np.testing.assert_array_equal(out, [[[5]], [[50]]])


def test_scale_only_is_float32_exact():
    scale = 0.00390625  # LeNet's 1/256
    out = DataTransformer(scale=scale).transform(IMAGE[np.newaxis])
    np.testing.assert_array_equal(out[0], IMAGE.astype(np.float32) * np.float32(scale))
    out = DataTransformer(scale=0.1, mean_value=[0.3]).transform(IMAGE)
    assert out[0, 0, 0] == (np.float32(1) - np.float32(0.3)) * np.float32(0.1)


def test_train_crop_and_mirror_use_the_rng_in_caffes_order():
    # Mirror coin first (1: flip), then row offset 1, then column offset 0.
    rng = ScriptedRng((2, 1), (2, 1), (2, 0))
    out = DataTransformer(crop_size=2, mirror=True, phase=TRAIN, rng=rng).transform(IMAGE)
    np.testing.assert_array_equal(out, [[[5, 4], [8, 7]], [[50, 40], [80, 70]]])
    assert rng.draws == []
    rng = ScriptedRng((2, 0), (2, 0), (2, 1))
    out = DataTransformer(crop_size=2, mirror=True, phase=TRAIN, rng=rng).transform(IMAGE)
    np.testing.assert_array_equal(out[0], [[2, 3], [5, 6]])


def test_mirror_without_crop_and_test_phase_never_mirrors():
    rng = ScriptedRng((2, 1))
    out = DataTransformer(mirror=True, phase=TRAIN, rng=rng).transform(IMAGE)
    np.testing.assert_array_equal(out[0, 0], [3, 2, 1])
    out = DataTransformer(mirror=True, phase=TEST, rng=ScriptedRng()).transform(IMAGE)
    np.testing.assert_array_equal(out, IMAGE)


def test_random_crops_cover_every_offset():
    transformer = DataTransformer(crop_size=2, mirror=True, phase=TRAIN,
                                  rng=np.random.default_rng(0))
    seen = set()
    for out in transformer.transform(np.repeat(IMAGE[np.newaxis], 200, axis=0)):
        window = out[0]
        flipped = window[0, 0] > window[0, 1]
        if flipped:
            window = window[:, ::-1]
        top, left = divmod(int(window[0, 0]) - 1, 3)
        np.testing.assert_array_equal(out[1], (out[0] * 10))
        np.testing.assert_array_equal(window, IMAGE[0, top:top + 2, left:left + 2])
        seen.add((top, left, flipped))
    assert len(seen) == 8


def test_mean_file(tmp_path):
    mean = np.arange(18, dtype=np.float32).reshape(2, 3, 3) / 4
    write_mean_file(tmp_path / "mean.binaryproto", mean)
    np.testing.assert_array_equal(read_mean_file(tmp_path / "mean.binaryproto"), mean)
    out = DataTransformer(mean_file=tmp_path / "mean.binaryproto", scale=2.0, crop_size=2,
                          phase=TEST).transform(IMAGE)
    # The mean is taken at the pixel's position in the uncropped image.
    expected = [[[(1 - 0) * 2, (2 - 0.25) * 2], [(4 - 0.75) * 2, (5 - 1) * 2]],
                [[(10 - 2.25) * 2, (20 - 2.5) * 2], [(40 - 3) * 2, (50 - 3.25) * 2]]]
    np.testing.assert_array_equal(out, expected)


def test_mean_file_with_shape_field(tmp_path):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 1, 1, 2])
    blob.data.extend([1.5, -2.0])
    (tmp_path / "m").write_bytes(blob.SerializeToString())
    assert read_mean_file(tmp_path / "m").tolist() == [[[1.5, -2.0]]]


@pytest.mark.parametrize("content, message", [
    (None, "no such mean file"),
    (b"\xff\xff", "not a Caffe BlobProto"),
    (caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2, data=[1, 2, 3])
     .SerializeToString(), "not one C x H x W image"),
])
def test_bad_mean_files(tmp_path, content, message):
    path = tmp_path / "mean.binaryproto"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        DataTransformer(mean_file=path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=float("nan")), "scale must be a finite number, not nan"),
    (dict(crop_size=-1), "crop_size must be a non-negative integer, not -1"),
    (dict(crop_size=2.5), "not 2.5"),
    (dict(mean_value=[1], mean_file="m.binaryproto"), "mean_file and mean_value"),
    (dict(phase=2), "phase must be 0"),
])
def test_parameters_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataTransformer(**kwargs)


def test_shapes_are_checked_against_the_data():
    assert DataTransformer(crop_size=3).output_shape((2, 3, 4)) == (2, 3, 3)
    with pytest.raises(ValueError, match="crop_size 4 is larger than the 3x3 images"):
        DataTransformer(crop_size=4).output_shape(IMAGE.shape)
    with pytest.raises(ValueError, match="3 mean_value entries for 2 channels"):
        DataTransformer(mean_value=[1, 2, 3]).transform(IMAGE)


def test_from_param():
    param = caffe_pb2.TransformationParameter(scale=0.25, mean_value=[4], mirror=False)
    transformer = DataTransformer.from_param(param, TEST, None)
    assert (transformer.scale, transformer.mean_value, transformer.crop_size) == (0.25, (4.0,), 0)
    np.testing.assert_array_equal(transformer.transform(IMAGE)[0, 0], [-0.75, -0.5, -0.25])
