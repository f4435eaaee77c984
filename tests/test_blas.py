"""The CPU backend's GEMM through numpy's OpenBLAS (tinynet.kernels.blas)
against Numba's np.dot path it replaces and against a float64 product from
the definition: every transpose combination, C / F / strided operands,
float32 and float64, the accumulating form, and empty sizes."""
import numpy as np
import pytest

from tinynet.backend import CPUBackend
from tinynet.kernels import blas
from tinynet.kernels import linalg as la

pytestmark = pytest.mark.skipif(not blas.AVAILABLE, reason="numpy's wheel carries no scipy-openblas here")
bk = CPUBackend()
rng = np.random.default_rng(0)


def _layouts(M):
    """M as C-contiguous, F-contiguous, and a strided view with the same values."""
    F = np.asfortranarray(M)
    big = np.zeros((M.shape[0], 2 * M.shape[1] + 1), M.dtype)
    big[:, ::2][:, :M.shape[1]] = M
    return [M.copy(), F, big[:, ::2][:, :M.shape[1]]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_equals_the_definition_and_the_numba_path(dtype, ta, tb):
    m, k, n = 37, 19, 23
    A0 = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B0 = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    ref = (A0.T if ta else A0).astype(np.float64) @ (B0.T if tb else B0).astype(np.float64)
    fn = {(0, 0): la.matmul_nn_cpu, (0, 1): la.matmul_nt_cpu, (1, 0): la.matmul_tn_cpu, (1, 1): la.matmul_tt_cpu}
    numba_out = np.empty((m, n), dtype)
    fn[ta, tb](A0, B0, numba_out)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for A in _layouts(A0):
        for B in _layouts(B0):
            out = bk.matmul(A, B, ta=ta, tb=tb)
            np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
            np.testing.assert_allclose(out, numba_out, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True)])
def test_matmul_acc_accumulates_alpha_times_the_product(dtype, ta, tb):
    m, k, n = 11, 200, 13
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    C0 = rng.standard_normal((m, n)).astype(dtype)
    P = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    C = C0.copy()
    bk.matmul_acc(A, B, C, alpha=-0.3, ta=ta, tb=tb)
    C_scipy = C0.copy()
    la.matmul_acc_cpu(A, B, C_scipy, -0.3, ta, tb)                 # the scipy.linalg.blas fallback
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(C, C0 - 0.3 * P, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(C, C_scipy, rtol=tol, atol=tol * 10)


def test_empty_sizes():
    A, B = np.ones((3, 0), np.float32), np.ones((0, 4), np.float32)
    np.testing.assert_array_equal(bk.matmul(A, B), np.zeros((3, 4), np.float32))    # k = 0: zeros, as np.dot
    assert bk.matmul(np.ones((0, 2)), np.ones((2, 5))).shape == (0, 5)
    C = np.full((3, 4), 2.0, np.float32)
    bk.matmul_acc(A, B, C)
    np.testing.assert_array_equal(C, 2.0)
