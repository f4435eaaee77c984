"""Dense linear algebra kernels: matmul in the four transpose combinations,
row-broadcast bias add, column sums, and vector updates.

Index legend: A is (m, k) after its optional transpose, B is (k, n), out is (m, n).

CPU kernels are `@njit` functions; inside Numba `np.dot` calls the same BLAS
GEMM numpy uses, so a CPU matmul runs at the machine's GEMM speed (see
TOOLCHAIN.md). Transposed operands are passed as transposed views, which BLAS
reads without a copy.
"""
import numpy as np
from numba import njit

# ---------------------------------------------------------------- CPU (@njit)


@njit(cache=True)
def matmul_nn_cpu(A, B, out):
    """out = A @ B."""
    np.dot(A, B, out)


@njit(cache=True)
def matmul_nt_cpu(A, B, out):
    """out = A @ B.T  (B stored as (n, k))."""
    np.dot(A, B.T, out)


@njit(cache=True)
def matmul_tn_cpu(A, B, out):
    """out = A.T @ B  (A stored as (k, m))."""
    np.dot(A.T, B, out)


@njit(cache=True)
def matmul_tt_cpu(A, B, out):
    """out = A.T @ B.T."""
    np.dot(A.T, B.T, out)


@njit(cache=True)
def add_bias_cpu(A, b):
    """A[i, j] += b[j] for every row i (in place)."""
    m, n = A.shape
    for i in range(m):
        for j in range(n):
            A[i, j] += b[j]


@njit(cache=True)
def col_sum_cpu(A, out):
    """out[j] = sum_i A[i, j]."""
    m, n = A.shape
    for j in range(n):
        out[j] = 0
    for i in range(m):
        for j in range(n):
            out[j] += A[i, j]


@njit(cache=True)
def axpy_cpu(a, x, y):
    """y += a * x (flat vectors, in place)."""
    for i in range(x.shape[0]):
        y[i] += a * x[i]


@njit(cache=True)
def scale_cpu(a, x):
    """x *= a (in place)."""
    for i in range(x.shape[0]):
        x[i] *= a


@njit(cache=True)
def dot_cpu(x, y):
    """sum_i x[i] y[i], accumulated in float64."""
    s = 0.0
    for i in range(x.shape[0]):
        s += np.float64(x[i]) * np.float64(y[i])
    return s
