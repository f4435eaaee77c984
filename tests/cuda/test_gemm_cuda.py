"""The register-blocked GEMM candidate (tinynet.kernels.gemm) under the CUDA
simulator equals its CPU twin linalg.matmul_nn_cpu: ragged shapes (partial
64 x 64 tiles, k not a multiple of 16), several blocks, float32 and float64,
and every entry of out written (out starts as NaN)."""
import numpy as np
import pytest
from numba import cuda

from tinynet.kernels import gemm
from tinynet.kernels import linalg as la


@pytest.mark.parametrize("m, k, n, dtype", [
    (5, 3, 7, np.float32),          # one partial tile, one k step
    (65, 17, 33, np.float32),       # two block rows, two k steps (the second ragged)
    (3, 20, 66, np.float64),        # two block columns
])
def test_register_blocked_matmul_equals_cpu_twin(m, k, n, dtype):
    rng = np.random.default_rng(m * 1000 + n)
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    ref = np.empty((m, n), dtype)
    la.matmul_nn_cpu(A, B, ref)
    out = cuda.to_device(np.full((m, n), np.nan, dtype))
    blocks, threads = gemm.launch(m, n)
    gemm.matmul_nn_rb_cuda[blocks, threads](cuda.to_device(A), cuda.to_device(B), out)
    got = out.copy_to_host()
    assert not np.isnan(got).any()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())
