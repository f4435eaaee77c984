"""BatchNorm2d's @cuda.jit kernels against their CPU @njit twins through the two
backends (bk.launch, so the launch configuration is exercised), and the whole
stage on CUDABackend against CPUBackend, in training and evaluation.
Tiny shapes, float32 and float64: one with a few channels and positions, one
with 33 channels (a ragged warp for the per-channel kernels) and 1x1 images.

Tolerances as tests/cuda/test_kernels_cuda.py: float64 1e-12 relative, float32
1e-5 (the twins sum in the same order; only FMA contraction may differ)."""
import numpy as np
import pytest

from tinynet.backend import CPUBackend
from tinynet.cuda_backend import CUDABackend
from tinynet.kernels import batchnorm2d as K
from tinynet.layers import BatchNorm2d

cpu = CPUBackend()
gpu = CUDABackend()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
SHAPES = [   # (n, C, P)
    pytest.param((3, 2, 6), id="n3-c2-p6"),
    pytest.param((2, 33, 1), id="n2-c33-p1"),
]


def rtol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def rand(rng, shape, dtype, scale=1.0, shift=0.0):
    return (scale * rng.standard_normal(shape) + shift).astype(dtype)


def run_both(name, count, *host_args):
    """Launch kernel pair `name` on copies of host_args on each backend; return the
    (cpu, gpu) host copies of every array argument after the launch."""
    c_args = [a.copy() if isinstance(a, np.ndarray) else a for a in host_args]
    g_args = [gpu.asarray(a) if isinstance(a, np.ndarray) else a for a in host_args]
    cpu.launch(K, name, count, *c_args)
    gpu.launch(K, name, count, *g_args)
    return [(c, gpu.to_host(g)) for c, g in zip(c_args, g_args) if isinstance(c, np.ndarray)]


def check_all(pairs, dtype, atol=0.0):
    for c, g in pairs:
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, c, rtol=rtol(dtype), atol=atol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_stats(shape, dtype):
    n, C, P = shape
    rng = np.random.default_rng(0)
    Z = rand(rng, (n, C * P), dtype, 2.0, 1.0)
    out = [np.full(C, np.nan, dtype) for _ in range(3)]
    check_all(run_both("channel_stats", C, Z, *out, dtype(1e-5), P), dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bn_forward(shape, dtype):
    n, C, P = shape
    rng = np.random.default_rng(1)
    Z, mu, s = rand(rng, (n, C * P), dtype), rand(rng, C, dtype), (rng.random(C) + 0.5).astype(dtype)
    gamma, beta = rand(rng, C, dtype), rand(rng, C, dtype)
    Xhat, Y = np.full((n, C * P), np.nan, dtype), np.full((n, C * P), np.nan, dtype)
    check_all(run_both("bn_forward", Z.size, Z, mu, s, gamma, beta, Xhat, Y, P), dtype, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_sums(shape, dtype):
    n, C, P = shape
    rng = np.random.default_rng(2)
    V, Xhat = rand(rng, (n, C * P), dtype), rand(rng, (n, C * P), dtype)
    sv, svx = np.full(C, np.nan, dtype), np.full(C, np.nan, dtype)
    check_all(run_both("channel_sums", C, V, Xhat, sv, svx, P), dtype, atol=1e-6)


@pytest.mark.parametrize("coupled", [pytest.param(True, id="train"), pytest.param(False, id="eval")])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bn_center_scale(shape, dtype, coupled):
    n, C, P = shape
    rng = np.random.default_rng(3)
    V, Xhat = rand(rng, (n, C * P), dtype), rand(rng, (n, C * P), dtype)
    gamma, s = rand(rng, C, dtype), (rng.random(C) + 0.5).astype(dtype)
    sv, svx = rand(rng, C, dtype), rand(rng, C, dtype)
    out = np.full((n, C * P), np.nan, dtype)
    inv_m = dtype(1.0 / (n * P) if coupled else 0.0)
    check_all(run_both("bn_center_scale", V.size, V, Xhat, gamma, s, sv, svx, out, inv_m, P), dtype, atol=1e-6)


@pytest.mark.parametrize("accumulate", [pytest.param(True, id="acc"), pytest.param(False, id="write")])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bn_affine(shape, dtype, accumulate):
    n, C, P = shape
    rng = np.random.default_rng(4)
    Xhat, a, b = rand(rng, (n, C * P), dtype), rand(rng, C, dtype), rand(rng, C, dtype)
    out = rand(rng, (n, C * P), dtype) if accumulate else np.full((n, C * P), np.nan, dtype)
    check_all(run_both("bn_affine", Xhat.size, Xhat, a, b, out, P, accumulate), dtype, atol=1e-6)


@pytest.mark.parametrize("training", [pytest.param(True, id="train"), pytest.param(False, id="eval")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_stage_on_cuda_matches_cpu(dtype, training):
    """forward (twice: the running statistics), vjp with the parameter gradient, jvp."""
    rng = np.random.default_rng(5)
    n, C, H, W = 3, 2, 2, 2
    p = rand(rng, 2 * C, dtype)
    stages = []
    for bk in (cpu, gpu):
        st = BatchNorm2d(C)
        st.set_input_shape((C, H, W))
        st.bind(bk, bk.asarray(p))
        st.running_mean, st.running_var = np.array([0.5, -1.0]), np.array([2.0, 0.7])
        st.training = training
        stages.append(st)
    Z = [rand(rng, (n, C * H * W), dtype, 2.0, 1.0) for _ in range(2)]
    b, dz, dp = rand(rng, Z[0].shape, dtype), rand(rng, Z[0].shape, dtype), rand(rng, 2 * C, dtype)
    res = []
    for st, bk in zip(stages, (cpu, gpu)):
        st.forward(bk.asarray(Z[0]))
        out, ctx = st.forward(bk.asarray(Z[1]))
        grad = bk.zeros(2 * C, dtype)
        b_in = st.vjp(ctx, bk.asarray(b), grad)
        dout = st.jvp(ctx, bk.asarray(dz), bk.asarray(dp))
        res.append([bk.to_host(a) for a in (out, b_in, grad, dout)] + [st.running_mean, st.running_var])
    for c, g in zip(*res):
        np.testing.assert_allclose(g, c, rtol=rtol(dtype), atol=1e-6 if dtype == np.float32 else 1e-13)
