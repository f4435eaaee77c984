"""Data readers on the real files (shapes, value ranges, the class counts of
shared/data/README.md) and on corrupted copies (truncated, one byte flipped,
missing): each must raise DataError naming the file and its expected checksum."""
import os
import pickle
import shutil

import numpy as np
import pytest

from tinynet import data
from tinynet.data import DataError, checksums
from tinynet.data.cifar10 import _SafeUnpickler, label_names, read_batch

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SHARED = os.path.abspath(os.environ.get("TINYNET_TEST_DATA", SHARED))
CIFAR = os.path.join(SHARED, "cifar10", "cifar-10-batches-py")
needs_cifar = pytest.mark.skipif(not os.path.exists(os.path.join(CIFAR, "test_batch")),
                                 reason=f"CIFAR-10 files not found in {CIFAR}")

# class counts from shared/data/README.md
MNIST_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
CIFAR_COUNTS = {
    "train": np.add([1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981],
                    [984, 1007, 1010, 995, 1010, 988, 1008, 1026, 987, 985]).tolist(),
    "test": [1000] * 10,
}


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_packaged(split):
    X, y = data.load_mnist(split)
    n = sum(MNIST_COUNTS[split])
    assert X.shape == (n, 784) and X.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.bincount(y, minlength=10).tolist() == MNIST_COUNTS[split]
    # pixel values are multiples of 1/255
    assert np.allclose(np.round(X[:50] * 255), X[:50] * 255, atol=1e-4)


def test_mnist_packaged_equals_shared():
    """The copy in the package is byte-identical to shared/data (its checksums pass)
    and decodes to the same arrays as the shared copy."""
    Xp, yp = data.load_mnist("test")
    Xs, ys = data.load_mnist("test", SHARED)
    assert np.array_equal(Xp, Xs) and np.array_equal(yp, ys)


def test_mnist_cached_and_read_only():
    a = data.load_mnist("test")
    b = data.load_mnist("test")
    assert a[0] is b[0]
    with pytest.raises(ValueError):
        a[0][0, 0] = 1.0


@needs_cifar
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_real(split):
    with pytest.warns(UserWarning, match="2 of 5 training batches") if split == "train" else _nothing():
        X, y = data.load_cifar10(split, SHARED)
    n = sum(CIFAR_COUNTS[split])
    assert X.shape == (n, 3072) and X.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0 and X.max() == 1.0
    assert np.bincount(y, minlength=10).tolist() == CIFAR_COUNTS[split]


@needs_cifar
@pytest.mark.parametrize("batch,counts", [
    ("data_batch_1", [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]),
    ("data_batch_2", [984, 1007, 1010, 995, 1010, 988, 1008, 1026, 987, 985])])
def test_cifar10_batch_class_counts(batch, counts):
    X, y = read_batch(os.path.join(CIFAR, batch))
    assert X.shape == (10000, 3072) and X.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == counts


@needs_cifar
def test_cifar10_label_names():
    assert label_names(CIFAR) == ["airplane", "automobile", "bird", "cat", "deer",
                                  "dog", "frog", "horse", "ship", "truck"]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@needs_cifar
def test_cifar10_layouts(tmp_path):
    """The batch files directly in --data-dir, or under cifar-10-batches-py/."""
    Xa, ya = data.load_cifar10("test", CIFAR)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    os.symlink(os.path.join(CIFAR, "test_batch"), d / "test_batch")
    Xb, yb = data.load_cifar10("test", tmp_path)
    assert np.array_equal(Xa, Xb) and np.array_equal(ya, yb)


def test_cifar10_without_dir_names_the_options(monkeypatch):
    monkeypatch.delenv(data.ENV, raising=False)
    with pytest.raises(DataError, match="--data-dir.*TINYNET_DATA"):
        data.load_cifar10("test")


@pytest.mark.parametrize("name,n_features", [("mnist-autoencode", 784), ("mnist-labels", 784),
                                             ("mnist7-labels", 49)])
def test_load_dataset(name, n_features):
    X, Y = data.load_dataset(name, "test")
    assert X.shape == (10000, n_features)
    if name == "mnist-autoencode":
        assert Y is X
    else:
        assert Y.shape == (10000,) and Y.dtype == np.int64


def test_pool_7x7_definition():
    X, _ = data.load_mnist("test")
    P = data.load_dataset("mnist7-labels", "test")[0]
    i, r, c = 17, 3, 5       # block (r, c) of image i: rows 4r..4r+3, cols 4c..4c+3
    img = X[i].reshape(28, 28).astype(np.float64)
    assert P[i, 7 * r + c] == pytest.approx(img[4 * r:4 * r + 4, 4 * c:4 * c + 4].mean(), abs=1e-6)


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="available"):
        data.load_dataset("svhn", "train")
    with pytest.raises(ValueError, match="split"):
        data.load_mnist("valid")


# -- corrupted copies ------------------------------------------------------------------------
def _copy_mnist(tmp_path):
    d = tmp_path / "mnist"
    shutil.copytree(data.PACKAGE_MNIST, d)
    return d


def _truncate(p):
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _flip(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0x01
    p.write_bytes(bytes(b))


CORRUPTIONS = {
    "truncated": (_truncate, "truncated"),
    "byte-flipped": (_flip, "checksum mismatch"),
    "missing": (lambda p: p.unlink(), "not found"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("fname,split", [("t10k-images-idx3-ubyte.gz", "test"),
                                         ("t10k-labels-idx1-ubyte.gz", "test"),
                                         ("train-labels-idx1-ubyte.gz", "train")])
def test_mnist_corrupt(tmp_path, kind, fname, split):
    d = _copy_mnist(tmp_path)
    corrupt, what = CORRUPTIONS[kind]
    corrupt(d / fname)
    known = checksums.BY_NAME[fname]
    with pytest.raises(DataError) as e:
        data.load_mnist(split, tmp_path)
    msg = str(e.value)
    assert fname in msg and known.sha256 in msg and known.md5 in msg and what in msg


@needs_cifar
@pytest.mark.parametrize("kind", ["truncated", "byte-flipped"])
def test_cifar_corrupt(tmp_path, kind):
    shutil.copy(os.path.join(CIFAR, "test_batch"), tmp_path / "test_batch")
    os.chmod(tmp_path / "test_batch", 0o644)
    CORRUPTIONS[kind][0](tmp_path / "test_batch")
    with pytest.raises(DataError, match="test_batch.*" + checksums.BY_NAME["test_batch"].sha256):
        data.load_cifar10("test", tmp_path)


def test_corrupt_file_verified_again_after_change(tmp_path):
    """The once-per-process cache is keyed by size and mtime: a file that passed
    and is then damaged fails the next check."""
    d = _copy_mnist(tmp_path)
    p = d / "t10k-labels-idx1-ubyte.gz"
    checksums.check_file(p, checksums.BY_NAME[p.name])
    _flip(p)
    os.utime(p, ns=(0, 1))
    with pytest.raises(DataError, match="checksum mismatch"):
        checksums.check_file(p, checksums.BY_NAME[p.name])


def test_verify_report(tmp_path):
    d = _copy_mnist(tmp_path)
    _flip(d / "t10k-images-idx3-ubyte.gz")
    rows = {r["name"]: r for r in data.verify(tmp_path)}
    assert rows["train-images-idx3-ubyte.gz"]["status"] == "ok"
    assert rows["train-images-idx3-ubyte.gz"]["sha256"] == checksums.BY_NAME["train-images-idx3-ubyte.gz"].sha256
    assert "checksum mismatch" in rows["t10k-images-idx3-ubyte.gz"]["status"]
    assert rows["test_batch"]["status"] == "missing"


def test_unpickler_refuses_other_globals():
    """A pickle that names any global besides the numpy array ones is refused."""
    payload = pickle.dumps({b"data": os.getcwd}, protocol=2)
    import io
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _SafeUnpickler(io.BytesIO(payload), encoding="bytes").load()
    # protocol 4 (protocol 2 in Python 3 spells bytes through _codecs.encode, which
    # the Python 2 files never use); numpy 2 names numpy._core.multiarray here
    ok = pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3)}, protocol=4)
    out = _SafeUnpickler(io.BytesIO(ok), encoding="bytes").load()
    assert np.array_equal(out[b"data"], np.arange(6).reshape(2, 3))
