"""The quasi-diagonal reparametrization (seed 003, tinynet.optim.reparam) on
device="cuda": the same steps as on the CPU, and a step between statistics
updates that copies only its loss back (the update kernel,
tinynet.kernels.reparam, reads the gradient where it is)."""
import numpy as np
import pytest

from test_train_cuda import _Transfers
from tinynet.layers import Linear, Tanh
from tinynet.losses import SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim.reparam import QuasiDiagonal

pytestmark = pytest.mark.cudasim


def _net(device, dtype):
    return Sequential([Linear(6, 5), Tanh(), Linear(5, 3)], SoftmaxCrossEntropyLoss(), dtype=dtype, seed=3,
                      device=device)


def _data(dtype):
    r = np.random.default_rng(2)
    return r.standard_normal((8, 6)).astype(dtype), r.integers(0, 3, 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_reparam_cuda_equals_cpu(dtype):
    X, y = _data(dtype)
    out = {}
    for device in ("cpu", "cuda"):
        net = _net(device, dtype)
        opt = QuasiDiagonal(net, lr=0.3, stats_every=2, weight_decay=1e-3)   # a statistics step among 3
        losses = [opt.step(X, y) for _ in range(3)]
        out[device] = (np.array(losses), net.get_flat())
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=tol)
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=tol, atol=tol)
    assert out["cpu"][0][-1] < out["cpu"][0][0]


def test_step_between_statistics_copies_only_the_loss(monkeypatch):
    net = _net("cuda", np.float32)
    X, y = _data(np.float32)
    dX, dy = net.bk.asarray(X), net.bk.asarray(np.eye(3, dtype=np.float32)[y])   # device targets: one-hot
    opt = QuasiDiagonal(net, lr=0.3, stats_every=10)
    opt.step(dX, dy)                                  # the first step sets the statistics (rows to the host)
    t = _Transfers(monkeypatch, type(dX))
    opt.step(dX, dy)
    assert (t.h2d, t.d2h) == (0, 1)
