"""CIFAR-10 reader: the Python version (`cifar-10-batches-py`), each batch a
Python 2 pickle (protocol 2) of a dict with byte-string keys b"data" (uint8
(10000, 3072): 1024 red, 1024 green, 1024 blue values, each plane row-major),
b"labels", b"batch_label", b"filenames" (shared/data/README.md).

Unpickling can run arbitrary code, so the batches go through `_SafeUnpickler`,
which resolves only the three globals a numpy array's pickle names. Measured on
these files with numpy 2.4: `numpy.core.multiarray._reconstruct`,
`numpy.ndarray`, `numpy.dtype` (pickles written by numpy 2 say
`numpy._core.multiarray` instead; both are allowed).
"""
import os
import pickle

import numpy as np

from tinynet.data.checksums import BY_NAME, DataError, check_file

try:                                    # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:                     # numpy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR-10 batch only needs numpy arrays") from None


def _unpickle(path):
    check_file(path, BY_NAME[os.path.basename(path)])
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as a CIFAR-10 pickle ({e})") from e


def read_batch(path):
    """(data uint8 (n, 3072), labels int64 (n,)) of one batch file."""
    d = _unpickle(path)
    try:
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a CIFAR-10 batch dict (missing {e})") from e
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: data {data.shape} / labels {labels.shape}, expected (n, 3072) / (n,)")
    return data, labels


def label_names(folder):
    d = _unpickle(os.path.join(folder, "batches.meta"))
    return [s.decode() for s in d[b"label_names"]]


def present_train_batches(folder):
    return [b for b in TRAIN_BATCHES if os.path.exists(os.path.join(folder, b))]


def read_cifar10(folder, split):
    """(data uint8 (n, 3072), labels int64 (n,), batch names read) of `split`.
    For "train", every data_batch_N present in `folder` is read, in order."""
    names = present_train_batches(folder) if split == "train" else TEST_BATCHES
    if not names:
        raise DataError(f"{folder}: no CIFAR-10 training batch (data_batch_1..5) found; expected e.g. "
                        f"data_batch_1 with {BY_NAME['data_batch_1'].expected()}")
    parts = [read_batch(os.path.join(folder, b)) for b in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), names
