"""Datasets: MNIST (shipped inside the package) and CIFAR-10 (read from a data
directory), read by tinynet's own readers after checking each file's checksum.

  load_mnist(split="train"|"test", data_dir=None) -> X float32 (n, 784) in [0, 1], y int64 (n,)
  load_cifar10(split, data_dir=None)             -> X float32 (n, 3072) in [0, 1], y int64 (n,)
  load_cifar10_standardized(split, data_dir=None) -> X float32 (n, 3072), each channel standardized
  cifar10_channel_stats(data_dir=None)           -> (mean (3,), std (3,)) float64 of the training split
  load_dataset(name, split, data_dir=None)       -> (X, Y) for the names of tinynet.models.DATASET
  verify(data_dir)                                -> one row per known file (see checksums.verify_dir)

Decoded arrays are cached for the process (read-only), so asking twice costs
nothing. A missing, truncated or corrupt file raises DataError naming the file
and the checksum it should have.
"""
import os
import warnings

import numpy as np

from tinynet.data import cifar10 as _cifar
from tinynet.data import mnist as _mnist
from tinynet.data.checksums import BY_NAME, FILES, DataError, check_file, verify_dir
from tinynet.data.locate import ENV, PACKAGE_MNIST, dataset_dir

SPLITS = ("train", "test")
DATASETS = {
    "mnist-autoencode": "MNIST images as inputs and targets (784 features in [0, 1])",
    "mnist-labels": "MNIST images (784) and class ids 0-9",
    "mnist7-labels": "MNIST average-pooled 4x4 to 7x7 (49 features) and class ids 0-9",
    "cifar10": "CIFAR-10 images (3072 = 3 planes x 32 x 32, in [0, 1]) and class ids 0-9",
    "cifar10-standardized": "CIFAR-10 images (3 planes x 32 x 32), each channel minus its training-set "
                            "mean, divided by its training-set std (constants from the training split, "
                            "applied to both splits; cifar10_channel_stats), and class ids 0-9",
}

_cache = {}


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _frozen(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


def load_mnist(split="train", data_dir=None):
    """MNIST `split`: X float32 (n, 784) = pixels / 255, y int64 (n,).
    data_dir None reads the copy shipped in the package."""
    _check_split(split)
    files = [BY_NAME[n] for n in _mnist.SPLITS[split]]
    folder = dataset_dir("mnist", data_dir, files)
    key = ("mnist", os.path.realpath(folder), split)
    if key not in _cache:
        images, labels = _mnist.read_mnist(folder, split)
        X = images.reshape(images.shape[0], 784).astype(np.float32) / np.float32(255)
        _cache[key] = _frozen(X, labels.astype(np.int64))
    return _cache[key]


def load_cifar10(split="train", data_dir=None):
    """CIFAR-10 `split`: X float32 (n, 3072) = bytes / 255 (red, green, blue
    planes), y int64 (n,). "train" reads every data_batch_N present (with a
    warning saying how many when fewer than 5). data_dir None: $TINYNET_DATA."""
    _check_split(split)
    names = _cifar.TRAIN_BATCHES if split == "train" else _cifar.TEST_BATCHES
    folder = dataset_dir("cifar10", data_dir, [BY_NAME[n] for n in names])
    key = ("cifar10", os.path.realpath(folder), split)
    if key not in _cache:
        data, labels, read = _cifar.read_cifar10(folder, split)
        if split == "train" and len(read) < len(_cifar.TRAIN_BATCHES):
            warnings.warn(f"CIFAR-10 in {folder}: {len(read)} of 5 training batches present "
                          f"({', '.join(read)}): training on {data.shape[0]:,} images", stacklevel=2)
        X = data.astype(np.float32) / np.float32(255)
        _cache[key] = _frozen(X, labels)
    return _cache[key]


def cifar10_channel_stats(data_dir=None):
    """(mean, std), float64 (3,) each: per channel (red, green, blue) of the
    pixels / 255 of the CIFAR-10 training split, over every image and every one
    of its 1024 positions; std is the population one (ddof 0). Computed once per
    data folder from the training batches present (load_cifar10("train")), never
    from the test split.

    On the two training batches of shared/data (data_batch_1, data_batch_2;
    20,000 images): mean (0.49280, 0.48299, 0.44701), std (0.24743, 0.24412,
    0.26205). Each batch alone gives means within 7e-4 and stds within 6e-4 of
    these, so the constants of the full 50,000 images differ little."""
    X, _ = load_cifar10("train", data_dir)
    key = ("cifar10-stats", id(X))
    if key not in _cache:
        planes = X.reshape(X.shape[0], 3, 1024)
        mean = planes.mean(axis=(0, 2), dtype=np.float64)
        squares = np.zeros(3)
        for a in range(0, X.shape[0], 2000):                 # in chunks: no float64 copy of the whole set
            d = planes[a:a + 2000].astype(np.float64)
            d -= mean[None, :, None]
            for c in range(3):
                v = d[:, c].ravel()
                squares[c] += v @ v
        _cache[key] = _frozen(mean, np.sqrt(squares / (planes.shape[0] * planes.shape[2])))
    return _cache[key]


def load_cifar10_standardized(split="train", data_dir=None):
    """CIFAR-10 `split` with each channel standardized: X float32 (n, 3072),
    X[:, c*1024:(c+1)*1024] = (pixels / 255 - mean_c) / std_c with the
    training-split constants of cifar10_channel_stats (the same constants for
    "train" and "test"); rows stay C-major (3 planes x 32 x 32). y int64 (n,)."""
    _check_split(split)
    mean, std = cifar10_channel_stats(data_dir)
    X, y = load_cifar10(split, data_dir)
    key = ("cifar10-standardized", id(X))
    if key not in _cache:
        Z = np.empty_like(X)
        src, dst = X.reshape(-1, 3, 1024), Z.reshape(-1, 3, 1024)
        for c in range(3):
            dst[:, c] = (src[:, c] - np.float32(mean[c])) * np.float32(1.0 / std[c])
        _cache[key] = _frozen(Z, y)
    return _cache[key]


def cifar10_train_batches(data_dir=None):
    """Names of the CIFAR-10 training batches present (what load_cifar10 reads)."""
    folder = dataset_dir("cifar10", data_dir, [BY_NAME[n] for n in _cifar.TRAIN_BATCHES])
    return _cifar.present_train_batches(folder)


def pool_7x7(X):
    """(n, 784) 28x28 images -> (n, 49): the mean of each 4x4 block."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 784:
        raise ValueError(f"pool_7x7 expects (n, 784) MNIST rows, got {X.shape}")
    return X.reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4), dtype=np.float64).astype(X.dtype).reshape(-1, 49)


def load_dataset(name, split, data_dir=None):
    """(X, Y) of dataset `name` (see DATASETS): Y is X itself for
    "mnist-autoencode", int64 class ids otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if name == "cifar10":
        return load_cifar10(split, data_dir)
    if name == "cifar10-standardized":
        return load_cifar10_standardized(split, data_dir)
    X, y = load_mnist(split, data_dir)
    if name == "mnist-autoencode":
        return X, X
    if name == "mnist-labels":
        return X, y
    key = ("mnist7", id(X))
    if key not in _cache:
        _cache[key] = _frozen(pool_7x7(X), y)
    return _cache[key]


def verify(data_dir):
    """Check every known file under data_dir; one dict per file (dataset, name,
    path, bytes, status "ok" / "missing" / the error, sha256)."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: not a directory")
    return verify_dir(data_dir)


__all__ = ["DataError", "DATASETS", "FILES", "load_mnist", "load_cifar10", "load_cifar10_standardized",
           "cifar10_channel_stats", "load_dataset",
           "verify", "check_file", "pool_7x7", "cifar10_train_batches", "ENV", "PACKAGE_MNIST"]
