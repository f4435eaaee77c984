"""CUDA-simulator tests: the statistics kernels of tinynet.kernels.stats
(@cuda.jit) equal their CPU @njit twins, on ragged shapes (not multiples of the
thread block), float32 and float64."""
import numpy as np
import pytest
from numba import cuda

from tinynet.kernels import stats as K

pytestmark = pytest.mark.cudasim
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
SHAPES = [pytest.param((5, 3), id="5x3"), pytest.param((19, 17), id="19x17")]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_col_mean(shape, dtype):
    rng = np.random.default_rng(0)
    H = (rng.standard_normal(shape) + 0.5).astype(dtype)
    mu = cuda.device_array(shape[1], dtype=dtype)
    K.col_mean_cuda[K.launch_1d(shape[1])](cuda.to_device(H), mu)
    np.testing.assert_allclose(mu.copy_to_host(), K.col_mean(H), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_running_update_upper(dtype):
    """The upper-triangle update of the top-left block, lower triangle and the
    rest of R untouched, as the CPU twin."""
    rng = np.random.default_rng(2)
    R, S = rng.standard_normal((19, 19)).astype(dtype), rng.standard_normal((17, 17)).astype(dtype)
    dR = cuda.to_device(R)
    K.running_upper_cuda[K.launch_1d(S.size)](dR, cuda.to_device(S), dtype(0.9), dtype(0.25))
    ref = R.copy()
    K.running_update_upper(ref, S, 0.9, 0.25)
    np.testing.assert_allclose(dR.copy_to_host(), ref, **tol(dtype))
    np.testing.assert_array_equal(np.tril(ref, -1), np.tril(R, -1))
