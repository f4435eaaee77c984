"""MNIST reader: the original IDX files, gzip-compressed (shared/data/README.md).

IDX header: big-endian int32 magic (2051 images, 2049 labels), the count, and
for images rows = cols = 28; then unsigned bytes, images row-major.
"""
import gzip
import os

import numpy as np

from tinynet.data.checksums import BY_NAME, DataError, check_file

SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path, magic, dims):
    """Decompress an IDX file and return its uint8 payload shaped (count, *dims)."""
    check_file(path, BY_NAME[os.path.basename(path)])
    try:
        with open(path, "rb") as f:
            raw = gzip.decompress(f.read())
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from e
    n_header = 4 * (2 + len(dims))
    header = np.frombuffer(raw[:n_header], dtype=">i4")
    if len(header) < 2 or header[0] != magic:
        raise DataError(f"{path}: IDX magic {header[:1]} is not the expected {magic}")
    count = int(header[1])
    if tuple(header[2:]) != tuple(dims):
        raise DataError(f"{path}: IDX dimensions {tuple(header[2:])}, expected {dims}")
    body = np.frombuffer(raw, dtype=np.uint8, offset=n_header)
    if body.size != count * int(np.prod(dims, dtype=np.int64)):
        raise DataError(f"{path}: {body.size} data bytes for {count} items of shape {dims}")
    return body.reshape((count,) + tuple(dims))


def read_mnist(folder, split):
    """(images uint8 (n, 28, 28), labels uint8 (n,)) of `split` from `folder`."""
    img_name, lab_name = SPLITS[split]
    images = _read_idx(os.path.join(folder, img_name), 2051, (28, 28))
    labels = _read_idx(os.path.join(folder, lab_name), 2049, ())
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels for {split!r}")
    return images, labels
