import numpy as np
import pytest
from google.protobuf import text_format

from fecaffe_hw.caffe import caffe_pb2
from fecaffe_hw.data.datum_lmdb import write_datum_lmdb
from fecaffe_hw.errors import DataError, NetError
from fecaffe_hw.reference.blob import Blob
from fecaffe_hw.reference.layer import TEST, TRAIN
from fecaffe_hw.reference.layers.data import DataLayer

IMAGES = np.arange(10 * 16, dtype=np.uint8).reshape(10, 1, 4, 4)
LABELS = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])


def make_layer(text, phase=TRAIN, seed=0):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return DataLayer(param, phase, np.random.default_rng(seed))


def setup_layer(layer, ntop=2):
    top = [Blob() for _ in range(ntop)]
    layer.setup([], top)
    layer.reshape([], top)
    return top


@pytest.fixture
def database(tmp_path, monkeypatch):
    # Sources are relative to the working directory, as in Caffe.
    monkeypatch.chdir(tmp_path)
    write_datum_lmdb(tmp_path / "db" / "digits_lmdb", IMAGES, LABELS)
    return "db/digits_lmdb"


@pytest.mark.parametrize("memory_limit", [256 << 20, 0])
def test_batches_in_order_and_wrap_around(database, monkeypatch, memory_limit):
    monkeypatch.setattr(DataLayer, "memory_limit", memory_limit)
    layer = make_layer(f'''name: "mnist" type: "Data" top: "data" top: "label"
        data_param {{ source: "{database}" batch_size: 4 backend: LMDB }}
        transform_param {{ scale: 0.00390625 mean_value: 2 }}''')
    top = setup_layer(layer)
    assert top[0].shape == (4, 1, 4, 4) and top[1].shape == (4,)
    for indices in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5]):
        layer.forward([], top)
        expected = (IMAGES[indices].astype(np.float32) - np.float32(2)) * np.float32(1 / 256)
        np.testing.assert_array_equal(top[0].data, expected)
        np.testing.assert_array_equal(top[1].data, LABELS[indices])
    layer.backward(top, [], [])  # nothing to do, and no error


def test_data_only_and_test_crop(database):
    layer = make_layer(f'''name: "d" type: "Data" top: "data"
        data_param {{ source: "{database}" batch_size: 3 backend: LMDB }}
        transform_param {{ crop_size: 2 mirror: true }}''', phase=TEST)
    top = setup_layer(layer, ntop=1)
    assert top[0].shape == (3, 1, 2, 2)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, IMAGES[:3, :, 1:3, 1:3])


def test_train_crops_are_windows_of_the_record(database):
    layer = make_layer(f'''name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{database}" batch_size: 10 backend: LMDB }}
        transform_param {{ crop_size: 3 }}''')
    top = setup_layer(layer)
    offsets = set()
    for _ in range(4):
        layer.forward([], top)
        for out, image in zip(top[0].data, IMAGES):
            top_row, left = divmod(int(out[0, 0, 0]) - int(image[0, 0, 0]), 4)
            np.testing.assert_array_equal(out, image[:, top_row:top_row + 3, left:left + 3])
            offsets.add((top_row, left))
    assert offsets == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_legacy_data_param_transform_fields(database):
    layer = make_layer(f'''name: "d" type: "Data" top: "data"
        data_param {{ source: "{database}" batch_size: 2 backend: LMDB scale: 0.5 }}''')
    top = setup_layer(layer, ntop=1)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, IMAGES[:2] * np.float32(0.5))


@pytest.mark.parametrize("source, hint", [
    ("examples/mnist/mnist_train_lmdb",
     "run `fecaffe-hw data mnist -o examples/mnist` to create it"),
    ("data/mnist/mnist_test_lmdb", "run `fecaffe-hw data mnist` to create it"),
    ("elsewhere/cifar_lmdb", None),
])
def test_missing_source(tmp_path, monkeypatch, source, hint):
    monkeypatch.chdir(tmp_path)
    layer = make_layer(f'''name: "mnist" type: "Data" top: "data"
        data_param {{ source: "{source}" batch_size: 64 backend: LMDB }}''')
    with pytest.raises(DataError) as info:
        setup_layer(layer, ntop=1)
    message = str(info.value)
    assert message.startswith(f'layer "mnist": data source {source} does not exist')
    assert str(tmp_path) in message
    if hint:
        assert message.endswith(hint)
    else:
        assert "fecaffe-hw data mnist" not in message


def test_invalid_database_names_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    layer = make_layer('''name: "src" type: "Data" top: "data"
        data_param { source: "empty_dir" batch_size: 1 backend: LMDB }''')
    with pytest.raises(DataError, match='layer "src": empty_dir: not an LMDB database'):
        setup_layer(layer, ntop=1)


@pytest.mark.parametrize("params, message", [
    ('data_param { source: "db/digits_lmdb" batch_size: 4 backend: LEVELDB }',
     "LEVELDB is not supported"),
    ('data_param { source: "db/digits_lmdb" backend: LMDB }', "batch_size must be positive"),
    ('data_param { batch_size: 4 }', "source is not set"),
    ('data_param { source: "db/digits_lmdb" batch_size: 4 } transform_param { crop_size: 5 }',
     "crop_size 5 is larger than the 4x4 images"),
    ('data_param { source: "db/digits_lmdb" batch_size: 4 } '
     'transform_param { mean_value: 1 mean_value: 2 }', "2 mean_value entries for 1 channels"),
    ('data_param { source: "db/digits_lmdb" batch_size: 4 } '
     'transform_param { mean_file: "m.binaryproto" mean_value: 2 }', "mean_file and mean_value"),
])
def test_bad_parameters_name_the_layer(database, params, message):
    layer = make_layer(f'name: "bad" type: "Data" top: "data" {params}')
    with pytest.raises(NetError, match=message) as info:
        setup_layer(layer, ntop=1)
    assert str(info.value).startswith('layer "bad": ')


def test_top_count_checked(database):
    layer = make_layer(f'''name: "d" type: "Data"
        data_param {{ source: "{database}" batch_size: 1 }}''')
    with pytest.raises(NetError, match="1 to 2 top"):
        setup_layer(layer, ntop=3)


def test_rand_skip_starts_at_a_random_record(database):
    skip = int(np.random.default_rng(7).integers(6))
    layer = make_layer(f'''name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{database}" batch_size: 10 rand_skip: 6 }}''', seed=7)
    top = setup_layer(layer)
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, np.roll(LABELS, -skip))
