"""Known data files, their sizes and checksums, and verification.

The table is copied from shared/data/README.md (the original files as their
authors publish them; MD5s are the reference values torchvision checks).
CIFAR-10 `data_batch_3` to `data_batch_5` are not stored in this project; their
reference MD5s are known, their SHA-256 and byte counts are not, so they are
checked by MD5 alone when a user has them.

Each file is hashed once per process (keyed by its real path, size and mtime):
hashing the ~100 MB of CIFAR-10 takes well under a second.
"""
import hashlib
import os
from dataclasses import dataclass


class DataError(Exception):
    """A data file is missing, truncated, corrupt or malformed. The message names
    the file and the checksum it should have."""


@dataclass(frozen=True)
class KnownFile:
    dataset: str        # "mnist" or "cifar10"
    name: str           # file name inside the dataset's folder
    nbytes: int | None  # None where unknown
    md5: str
    sha256: str | None  # None where unknown
    examples: int | None

    def expected(self):
        """The checksums as printed in error messages."""
        s = f"SHA-256 {self.sha256}" if self.sha256 else "SHA-256 unknown"
        return f"{s}, MD5 {self.md5}"


FILES = [
    KnownFile("mnist", "train-images-idx3-ubyte.gz", 9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 60_000),
    KnownFile("mnist", "train-labels-idx1-ubyte.gz", 28_881, "d53e105ee54ea40749a09fcbcd1e9432",
              "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 60_000),
    KnownFile("mnist", "t10k-images-idx3-ubyte.gz", 1_648_877, "9fb629c4189551a2d022fa330f9573f3",
              "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 10_000),
    KnownFile("mnist", "t10k-labels-idx1-ubyte.gz", 4_542, "ec29112dd5afa0611ce80d1b7f02629c",
              "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 10_000),
    KnownFile("cifar10", "data_batch_1", 31_035_704, "c99cafc152244af753f735de768cd75f",
              "54636561a3ce25bd3e19253c6b0d8538147b0ae398331ac4a2d86c6d987368cd", 10_000),
    KnownFile("cifar10", "data_batch_2", 31_035_320, "d4bba439e000b95fd0a9bffe97cbabec",
              "766b2cef9fbc745cf056b3152224f7cf77163b330ea9a15f9392beb8b89bc5a8", 10_000),
    KnownFile("cifar10", "data_batch_3", None, "54ebc095f3ab1f0389bbae665268c751", None, 10_000),
    KnownFile("cifar10", "data_batch_4", None, "634d18415352ddfa80567beed471001a", None, 10_000),
    KnownFile("cifar10", "data_batch_5", None, "482c414d41f54cd18b22e5b47cb7c3cb", None, 10_000),
    KnownFile("cifar10", "test_batch", 31_035_526, "40351d587109b95175f43aff81a1287e",
              "f53d8d457504f7cff4ea9e021afcf0e0ad8e24a91f3fc42091b8adef61157831", 10_000),
    KnownFile("cifar10", "batches.meta", 158, "5ff9c542aee3614f3951f8cda6e48888",
              "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb", None),
]
BY_NAME = {f.name: f for f in FILES}

_verified = {}   # (realpath, size, mtime_ns) -> (md5, sha256) of files that passed


def hash_file(path):
    """(md5, sha256) hex digests of a file, read in 1 MiB chunks."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def check_file(path, known):
    """Raise DataError unless `path` exists and matches `known` (size, SHA-256
    where known, MD5). Passing files are remembered for the process."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found (expected {known.dataset} file {known.name}, "
                        f"{known.expected()})")
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    if known.nbytes is not None and st.st_size != known.nbytes:
        raise DataError(f"{path}: {st.st_size:,} bytes, expected {known.nbytes:,} "
                        f"({'truncated' if st.st_size < known.nbytes else 'too long'}); "
                        f"expected {known.expected()}. Replace it with the original file.")
    md5, sha = hash_file(path)
    if (known.sha256 is not None and sha != known.sha256) or md5 != known.md5:
        raise DataError(f"{path}: checksum mismatch, got SHA-256 {sha} (MD5 {md5}); expected "
                        f"{known.expected()}. The file is corrupt; replace it with the original.")
    _verified[key] = (md5, sha)


def verify_dir(data_dir):
    """Check every known file found under `data_dir` (the folder itself, its
    `mnist/`, `cifar-10-batches-py/` or `cifar10/cifar-10-batches-py/`).
    Returns one dict per known file: dataset, name, path (None if missing),
    bytes, status ("ok", "missing", or the error message), sha256."""
    from tinynet.data.locate import find_file
    rows = []
    for known in FILES:
        path = find_file(data_dir, known)
        row = dict(dataset=known.dataset, name=known.name, path=path, bytes=None,
                   status="missing", sha256=None)
        if path is not None:
            row["bytes"] = os.path.getsize(path)
            try:
                check_file(path, known)
                row["status"] = "ok"
                row["sha256"] = _verified[(os.path.realpath(path), row["bytes"],
                                           os.stat(path).st_mtime_ns)][1]
            except DataError as e:
                row["status"] = str(e)
        rows.append(row)
    return rows
