"""The CPU backend's GEMM: numpy's own OpenBLAS, called through its CBLAS
interface with ctypes.

Why not Numba's `np.dot`: inside Numba it calls scipy's bundled OpenBLAS
(scipy 1.17: OpenBLAS 0.3.30), while numpy 2.4's wheel bundles 0.3.31. On the
MNIST autoencoder's 23 GEMMs (batch 200, float32, AMD EPYC Zen 3, Haswell
kernels) scipy's build took 20.4 ms against 18.2-19.7 ms for numpy's at two
threads, 36.7 against 34.4 ms at one; the forward (nn) products were 23%
slower. One library also means one BLAS thread pool for the whole step
(numpy's own reductions use it): with two pools of spinning threads on two
cores, GEMMs interleaved from both libraries in one process took twice as long.

`gemm(A, B, out, ta, tb, alpha, beta)`: out = alpha op(A) op(B) + beta out
for C-contiguous A, B and out of one dtype (float32 or float64), op = transpose
where ta / tb. The caller passes an F-contiguous operand (a transposed view) as
its C-contiguous transpose with the flag flipped (tinynet.backend).

`AVAILABLE` is False where numpy's wheel carries no scipy-openblas (a source
build, conda's MKL): the backend then keeps Numba's np.dot and scipy.linalg.blas
(tinynet.kernels.linalg), and so do the tests that compare the two paths.
"""
import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _load():
    """numpy's bundled OpenBLAS (ILP64, symbols scipy_cblas_?gemm64_), or None."""
    if os.environ.get("TINYNET_NUMPY_BLAS", "1") == "0":
        return None
    here = os.path.dirname(np.__file__)
    for d in (os.path.join(here, os.pardir, "numpy.libs"), os.path.join(here, ".dylibs")):
        for path in sorted(glob.glob(os.path.join(d, "libscipy_openblas64_*"))):
            try:
                lib = ctypes.CDLL(path)
                fns = {np.dtype(np.float32): lib.scipy_cblas_sgemm64_, np.dtype(np.float64): lib.scipy_cblas_dgemm64_}
            except (OSError, AttributeError):
                continue
            I32, I64, P = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p
            for dt, fn in fns.items():
                S = ctypes.c_float if dt == np.float32 else ctypes.c_double
                fn.argtypes = [I32, I32, I32, I64, I64, I64, S, P, I64, P, I64, S, P, I64]
                fn.restype = None
            return fns
    return None


_GEMM = _load()
AVAILABLE = _GEMM is not None


def gemm(A, B, out, ta, tb, alpha, beta):
    """out = alpha op(A) @ op(B) + beta out (module docstring); m, n, k > 0."""
    m, n = out.shape
    k = A.shape[0] if ta else A.shape[1]
    _GEMM[out.dtype](_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, m, n, k,
                     alpha, A.ctypes.data, max(1, A.shape[1]), B.ctypes.data, max(1, B.shape[1]),
                     beta, out.ctypes.data, max(1, n))
