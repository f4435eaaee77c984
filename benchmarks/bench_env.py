"""Facts every speed benchmark reports and settings they share (benchmarks/step_time.py,
benchmarks/conv_step.py): the CPU, the BLAS libraries and their kernels, and the
thread count PyTorch gets so that it runs on the same cores as numpy's and Numba's BLAS."""
import ctypes
import glob
import os

import numpy as np

def torch_threads():
    """PyTorch's thread count: BENCH_THREADS, else OPENBLAS_NUM_THREADS (the
    limit numpy's and Numba's BLAS run under, so both sides get the same
    cores), else 2."""
    return int(os.environ.get("BENCH_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS") or 2)


def cpu_info():
    model, flags, fam = "unknown", set(), ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "model name" and model == "unknown":
                    model = v
                elif k == "flags" and not flags:
                    flags = set(v.split())
                elif k == "cpu family" and "family" not in fam:
                    fam += f"family {v}"
                elif k == "model" and "model" not in fam:
                    fam += f" model {v}"
    except OSError:
        pass
    isa = "/".join(f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags)
    return f"{model} ({fam.strip()}; {isa}; {os.cpu_count()} cores)"


def blas_info():
    """BLAS library and OpenBLAS kernel (core name) of numpy's and scipy's
    OpenBLAS (Numba's np.dot calls scipy's); threadpoolctl if installed."""
    out = []
    try:
        from threadpoolctl import threadpool_info
        np.dot(np.ones((2, 2)), np.ones((2, 2)))
        import scipy.linalg  # noqa: F401
        for p in threadpool_info():
            if p.get("user_api") == "blas":
                out.append(f"{os.path.basename(p['filepath'])}: {p.get('internal_api')} {p.get('version')}, "
                           f"kernel {p.get('architecture')}, {p.get('num_threads')} threads")
        if out:
            return "; ".join(out)
    except ImportError:
        pass
    import scipy
    for mod in (np, scipy):
        libdir = os.path.join(os.path.dirname(mod.__file__), "..", mod.__name__ + ".libs")
        for lib in glob.glob(os.path.join(libdir, "*openblas*")):
            try:
                L = ctypes.CDLL(lib)
                core = nthr = None
                for sym in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
                    if hasattr(L, sym):
                        f = getattr(L, sym)
                        f.restype = ctypes.c_char_p
                        core = f().decode()
                        break
                for sym in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                            "openblas_get_num_threads"):
                    if hasattr(L, sym):
                        nthr = getattr(L, sym)()
                        break
                out.append(f"{mod.__name__}: {os.path.basename(lib)}, kernel {core}, {nthr} threads")
            except OSError:
                pass
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out.insert(0, f"{cfg.get('name')} {cfg.get('version')}")
    except Exception:
        pass
    return "; ".join(out) or "unknown"
