"""What a run ran on, for config.json: versions, git commit, BLAS, threads, CPU.
A speed figure means nothing without these (machines differ between sessions)."""
import os
import platform
import sys


def _git_commit():
    """HEAD of the checkout tinynet was imported from, read from .git (no subprocess)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    git = os.path.join(here, ".git")
    try:
        with open(os.path.join(git, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        path = os.path.join(git, ref)
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()
        with open(os.path.join(git, "packed-refs")) as f:
            for line in f:
                if line.strip().endswith(ref):
                    return line.split()[0]
    except OSError:
        return None
    return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas():
    import numpy as np
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version', '')}".strip()
    except Exception:       # older numpy: no dict mode; the name is not essential
        return None


def describe():
    import numba
    import numpy as np
    import scipy

    import tinynet
    return dict(tinynet=tinynet.__version__, git_commit=_git_commit(), python=sys.version.split()[0],
                numpy=np.__version__, numba=numba.__version__, scipy=scipy.__version__, blas=_blas(),
                blas_threads={k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                         "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
                              if k in os.environ},
                cpu=_cpu_model(), cpu_count=os.cpu_count(), platform=platform.platform())
