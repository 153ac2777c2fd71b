"""Datasets: digits split, user .npz files, and torchvision's real file formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from advkit.data import DataError, load_dataset


def test_digits_split_is_stratified_fixed_and_disjoint():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert a.sizes() == {"train": 1257, "val": 180, "test": 360}
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    for split in ("train", "val", "test"):
        x, y = a.split(split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        counts = torch.bincount(y, minlength=10).float()
        assert counts.min() / counts.max() > 0.8  # stratified: every class about equally present
    # The splits do not share images.
    rows = {tuple(r.tolist()) for r in a.x_train.flatten(1)}
    assert (
        sum(tuple(r.tolist()) in rows for r in a.x_test.flatten(1)) < 5
    )  # digits has a few duplicates
    assert not torch.equal(load_dataset("digits", seed=1).y_test, a.y_test)


def _write_npz(path, x_train, y_train, x_test, y_test):
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc"])
def test_npz_layouts_and_uint8_scaling(tmp_path, layout):
    rng = np.random.default_rng(0)
    shape = {"nhw": (40, 6, 5), "nchw": (40, 3, 6, 5), "nhwc": (40, 6, 5, 3)}[layout]
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    y = np.arange(40) % 4
    d = load_dataset(_write_npz(tmp_path / "d.npz", x, y, x[:10], y[:10]))
    c = 1 if layout == "nhw" else 3
    assert d.input_shape == (c, 6, 5) and d.num_classes == 4
    assert len(d.y_train) + len(d.y_val) == 40 and len(d.y_test) == 10
    assert d.x_test.max() <= 1.0 and d.x_test.dtype == torch.float32
    expected = torch.from_numpy(x[:10].astype(np.float32) / 255)
    if layout == "nhw":
        expected = expected[:, None]
    elif layout == "nhwc":
        expected = expected.permute(0, 3, 1, 2)
    assert torch.allclose(d.x_test, expected)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_test"), "missing arrays"),
        (lambda a: a.update(x_train=a["x_train"] * 2.0), "range"),
        (lambda a: a.update(x_train=np.full((20, 6, 6), np.nan, np.float32)), "NaN"),
        (lambda a: a.update(y_train=a["y_train"][:5]), "labels"),
        (lambda a: a.update(x_train=np.zeros((20, 6), np.float32)), "shape"),
        (lambda a: a.update(x_train=np.zeros((20, 5, 6, 6), np.float32)), "channels"),
        (lambda a: a.update(y_train=a["y_train"] - 1), "negative"),
        (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "integer"),
        (
            lambda a: a.update(x_test=np.zeros((0, 6, 6), np.float32), y_test=np.zeros(0, int)),
            "empty",
        ),
    ],
)
def test_npz_bad_contents_are_refused_with_what_was_found(tmp_path, change, message):
    arrays = {
        "x_train": np.random.default_rng(0).random((20, 6, 6), dtype=np.float32),
        "y_train": np.arange(20) % 2,
        "x_test": np.zeros((4, 6, 6), np.float32),
        "y_test": np.zeros(4, int),
    }
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "bad.npz"))


def test_npz_with_pickled_objects_is_never_unpickled(tmp_path, exploit):
    obj = np.array([exploit], dtype=object)
    np.savez(tmp_path / "p.npz", x_train=obj, y_train=obj, x_test=obj, y_test=obj)
    with pytest.raises(DataError, match="unpickling"):
        load_dataset(str(tmp_path / "p.npz"))
    assert not exploit.ran()


def test_not_an_npz_file(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a valid .npz"):
        load_dataset(str(tmp_path / "junk.npz"))


def _idx(path, array):
    """Write an IDX file (big-endian header, uint8 data), gzipped, as MNIST ships it."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_from_gzipped_idx_files_through_torchvision(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    train_x, test_x = rng.integers(0, 256, (60, 28, 28)), rng.integers(0, 256, (12, 28, 28))
    _idx(raw / "train-images-idx3-ubyte.gz", train_x)
    _idx(raw / "train-labels-idx1-ubyte.gz", np.arange(60) % 10)
    _idx(raw / "t10k-images-idx3-ubyte.gz", test_x)
    _idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(12) % 10)
    d = load_dataset(name, data_dir=tmp_path, download=False)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert len(d.y_train) + len(d.y_val) == 60
    assert torch.allclose(d.x_test[:, 0], torch.from_numpy(test_x / 255.0).float())
    assert d.y_test.tolist() == (np.arange(12) % 10).tolist()


def test_cifar10_from_python_batches_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # torchvision checks the official files' MD5 sums before unpickling them;
    # our tiny stand-ins cannot match, so only this test skips that check.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (10, 3 * 32 * 32), dtype=np.uint8)
        batches.append(data)
        with open(root / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(10))}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    d = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert len(d.y_train) + len(d.y_val) == 50 and len(d.y_test) == 10
    expected = torch.from_numpy(batches[-1].reshape(10, 3, 32, 32) / 255.0).float()
    assert torch.allclose(d.x_test, expected)


def test_missing_torchvision_files_name_the_directory(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw.*train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    "y_train, y_test, message",
    [
        (np.arange(40) % 10 + 5, np.arange(12) % 5, r"y_train has labels 5\.\.14, missing 0\.\.4"),
        (np.arange(40) % 3 * 2, np.zeros(12, int), r"labels 0, 2, 4, missing 1, 3"),
        (np.arange(40) % 4, np.arange(12) % 6, r"y_test has labels 4\.\.5 that y_train"),
    ],
)
def test_npz_labels_must_be_the_classes_seen_in_training(tmp_path, y_train, y_test, message):
    x = np.zeros((40, 6, 6), np.float32)
    path = _write_npz(tmp_path / "d.npz", x, y_train, x[:12], y_test)
    with pytest.raises(DataError, match=message):
        load_dataset(path)
