"""Helpers of tests/mpi: data-parallel runs under `mpirun -n 2` (marker mpi, run by .ci/run).

Without mpirun or mpi4py these tests are skipped, unless TINYNET_REQUIRE_MPI=1
(as in .ci/run, which installs both): then they fail, so CI cannot pass
having run none of them."""
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _mpi_missing():
    if shutil.which("mpirun") is None:
        return "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py not installed (pip install -e \".[mpi]\")"
    return None


@pytest.fixture(scope="session")
def mpi_available():
    why = _mpi_missing()
    if why:
        if os.environ.get("TINYNET_REQUIRE_MPI") == "1":
            pytest.fail(f"TINYNET_REQUIRE_MPI=1 but {why}")
        pytest.skip(why)


def mpi_env():
    env = dict(os.environ)
    # one BLAS / Numba thread per rank (two ranks share this machine's cores);
    # OpenMPI refuses root unless told (CI containers run as root)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def mpirun_cmd(n, *args):
    return ["mpirun", "-n", str(n), "--oversubscribe", *args]


def run_worker(tmp_path, spec, n=2, timeout=180, check=True):
    """Run tests/mpi/worker.py under mpirun -n n; returns (CompletedProcess, result json or None)."""
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.json"
    spec = dict(spec)
    spec.setdefault("result", str(tmp_path / f"result-{path.stem}"))
    path.write_text(json.dumps(spec))
    p = subprocess.run(mpirun_cmd(n, sys.executable, os.path.join(HERE, "worker.py"), str(path)),
                       capture_output=True, text=True, env=mpi_env(), timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"mpirun exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    res = None
    if os.path.exists(spec["result"] + ".json"):
        res = json.loads(open(spec["result"] + ".json").read())
    return p, res, spec["result"]
