"""Where data files are looked for.

A data directory may hold the files themselves or the usual sub-folders:
`mnist/` for MNIST, `cifar-10-batches-py/` or `cifar10/cifar-10-batches-py/`
for CIFAR-10 (so `shared/data/` and an unpacked `cifar-10-python.tar.gz` both
work). Without a directory, MNIST comes from the copy shipped inside the
package and CIFAR-10 from the environment variable TINYNET_DATA.
"""
import os

from tinynet.data.checksums import DataError

PACKAGE_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist")
ENV = "TINYNET_DATA"

SUBDIRS = {
    "mnist": ("", "mnist"),
    "cifar10": ("", "cifar-10-batches-py", os.path.join("cifar10", "cifar-10-batches-py"), "cifar10"),
}


def candidates(data_dir, dataset):
    return [os.path.join(os.fspath(data_dir), s) if s else os.fspath(data_dir) for s in SUBDIRS[dataset]]


def find_file(data_dir, known):
    """Path of `known` under data_dir (see SUBDIRS), or None."""
    for d in candidates(data_dir, known.dataset):
        p = os.path.join(d, known.name)
        if os.path.exists(p):
            return p
    return None


def dataset_dir(dataset, data_dir, files):
    """The folder to read `dataset` from: the first candidate under data_dir that
    holds one of `files` (KnownFile list). data_dir None: the packaged MNIST, or
    $TINYNET_DATA for CIFAR-10."""
    first_file = files[0]
    if data_dir is None:
        if dataset == "mnist":
            data_dir = PACKAGE_MNIST
        else:
            data_dir = os.environ.get(ENV)
            if not data_dir:
                raise DataError(
                    f"CIFAR-10 is not shipped with tinynet: pass --data-dir DIR (or set {ENV}=DIR) "
                    f"where DIR holds cifar-10-batches-py/ or the batch files "
                    f"({first_file.name} should have {first_file.expected()})")
    for d in candidates(data_dir, dataset):
        if any(os.path.exists(os.path.join(d, f.name)) for f in files):
            return d
    looked = ", ".join(candidates(data_dir, dataset))
    raise DataError(f"{first_file.name}: file not found in {looked} (expected {first_file.expected()})")
