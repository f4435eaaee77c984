"""CUDA-simulator tests: the @cuda.jit kernels and the CUDA backend run as
Python under Numba's simulator, on every machine.

Run them in their own pytest process (the variable must be set before numba is
imported, and it changes what `numba.cuda` is for the whole process):

    NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda -m cudasim

(.ci/run adds `-n 2`: two pytest-xdist workers, each its own process with the
variable inherited, 11 -> 4.6 minutes on two cores.) `pytest tests/cuda -m cudasim` without the variable also works: when the run
targets only this directory and numba is not imported yet, the variable is set
here (os.environ.setdefault). In any other run (the default `pytest`, which
collects tests/) nothing here is collected or imported, so the default process
never loads numba.cuda in simulator mode. Every test here is marked `cudasim`
(the default addopts deselect them).

On a machine with a GPU the same tests run on the hardware instead of the
simulator with TINYNET_CUDA_HARDWARE=1 (and NUMBA_ENABLE_CUDASIM unset):

    TINYNET_CUDA_HARDWARE=1 pytest tests/cuda -m cudasim

(benchmarks/gpu_step.py does this on a lent GPU). There they run on
tinynet.cuda_pool's caching allocator unless TINYNET_CUDA_POOL=0.
"""
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HARDWARE = os.environ.get("TINYNET_CUDA_HARDWARE") == "1"
ENABLED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or HARDWARE


def _under_here(path):
    path = Path(path).resolve()
    return path == HERE or HERE in path.parents


def _targets_only_here(config):
    paths = [a.split("::")[0] for a in config.args]
    return bool(paths) and all(_under_here(Path(config.invocation_params.dir) / p) for p in paths)


def pytest_configure(config):
    global ENABLED
    if not _targets_only_here(config):
        return                       # e.g. the default run: stay out of it, set nothing
    if HARDWARE:
        import numba
        from numba import cuda
        from tinynet import cuda_pool
        cuda_pool.install()          # before any test makes a context: the tests run on the caching allocator
        if numba.config.ENABLE_CUDASIM or not cuda.is_available():
            raise pytest.UsageError("TINYNET_CUDA_HARDWARE=1 runs tests/cuda on a real GPU: unset "
                                    "NUMBA_ENABLE_CUDASIM and run where numba.cuda.is_available() is True")
        return
    if "NUMBA_ENABLE_CUDASIM" not in os.environ and "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    ENABLED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    import numba  # only now, after the variable is settled
    if not ENABLED or not numba.config.ENABLE_CUDASIM:
        raise pytest.UsageError(
            "tests/cuda runs under Numba's CUDA simulator, which must be enabled before numba is "
            "imported: run `NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda -m cudasim` in its own process")


def pytest_ignore_collect(collection_path, config):
    if not ENABLED and _under_here(collection_path) and collection_path.resolve() != HERE:
        return True
    return None


@pytest.hookimpl(tryfirst=True)   # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _under_here(item.path):
            item.add_marker(pytest.mark.cudasim)
