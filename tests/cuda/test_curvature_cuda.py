"""Curvature on the CUDA backend under the simulator: the matrix-free products
hvp / gvp / fvp of a network living on the device equal the CPU ones, and the
@cuda.jit second-order kernels equal their CPU twins. Tiny shapes (the
simulator runs ~10^4 threads/s)."""
import numpy as np
import pytest
from numba import cuda

from tinynet import curvature as cv
from tinynet.backend import CPUBackend
from tinynet.kernels import second_order as so
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.models import mlp

LOSSES = {"mse": MSELoss, "bce": BCELoss, "softmax_ce": SoftmaxCrossEntropyLoss}


def pair(loss):
    kw = dict(out_activation="sigmoid" if loss == "bce" else None, dtype=np.float64, seed=0)
    nc = mlp([3, 4, 2], "tanh", LOSSES[loss](), device="cpu", **kw)
    ng = mlp([3, 4, 2], "tanh", LOSSES[loss](), device="cuda", **kw)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 3))
    Y = rng.integers(0, 2, 3) if loss == "softmax_ce" else rng.uniform(0, 1, (3, 2))
    return nc, ng, X, Y, rng.standard_normal(nc.n_params)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_products_on_device_match_cpu(loss):
    nc, ng, X, Y, v = pair(loss)
    for fn in (cv.hvp, cv.gvp, cv.fvp):
        ref = fn(nc, X, Y, v)
        got = ng.bk.to_host(fn(ng, X, Y, v))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


def launch(kernel, count, *args):
    kernel[(count + 31) // 32, 32](*args)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "relu"])
def test_act_d2_mul_cuda(kind):
    rng = np.random.default_rng(2)
    S, B, V = rng.uniform(-0.9, 0.9, (3, 5, 7))
    ref = CPUBackend().act_d2_mul(kind, S, B, V)
    out = cuda.device_array_like(S)
    launch(getattr(so, kind + "_d2_mul_cuda"), S.size, cuda.to_device(S), cuda.to_device(B), cuda.to_device(V), out)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-12, atol=1e-15)
    x, y = rng.standard_normal((2, 9))
    o = cuda.device_array_like(x)
    launch(so.mul_cuda, 9, cuda.to_device(x), cuda.to_device(y), o)
    np.testing.assert_array_equal(o.copy_to_host(), x * y)


@pytest.mark.parametrize("kind", ["bce", "softmax_ce"])
@pytest.mark.parametrize("fisher", [False, True])
def test_loss_hess_vp_cuda(kind, fisher):
    rng = np.random.default_rng(3)
    F = rng.uniform(0.1, 0.9, (4, 3))
    Y, V = rng.uniform(0, 1, (2, 4, 3))
    ref = CPUBackend().loss_hess_vp(kind, F, Y, V, 0.25, eps=1e-15, fisher=fisher)
    out = cuda.device_array_like(F)
    d = [cuda.to_device(a) for a in (F, Y, V)]
    if kind == "bce":
        launch(so.bce_hess_vp_cuda, F.size, *d, 0.25, 1e-15, fisher, out)
    else:
        launch(so.softmax_hess_vp_cuda, F.shape[0], *d, 0.25, fisher, out)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-12)


@pytest.mark.parametrize("kind", ["mse", "bce", "softmax_ce"])
def test_backend_loss_hess_vp_and_act_d2_mul(kind):
    """The CUDABackend methods (not just the kernels) equal the CPU backend's."""
    from tinynet.backend import get_backend
    rng = np.random.default_rng(4)
    F = rng.uniform(0.1, 0.9, (5, 3))
    Y, V = rng.uniform(0, 1, (2, 5, 3))
    cpu, gpu = CPUBackend(), get_backend("cuda")
    ref = cpu.loss_hess_vp(kind, F, Y, V, 0.5, eps=1e-15)
    got = gpu.loss_hess_vp(kind, *(gpu.asarray(a) for a in (F, Y, V)), 0.5, eps=1e-15)
    np.testing.assert_allclose(gpu.to_host(got), ref, rtol=1e-12)
    S, B = rng.uniform(-0.9, 0.9, (2, 5, 3))
    got = gpu.act_d2_mul("tanh", *(gpu.asarray(a) for a in (S, B, V)))
    np.testing.assert_allclose(gpu.to_host(got), cpu.act_d2_mul("tanh", S, B, V), rtol=1e-12)
    np.testing.assert_array_equal(gpu.to_host(gpu.mul(gpu.asarray(S), gpu.asarray(B))), S * B)
