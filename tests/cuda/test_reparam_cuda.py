"""The quasi-diagonal reparametrization (seed 003, tinynet.optim.reparam) on
device="cuda": the same steps as on the CPU, and a step between statistics
updates, a statistics step and the first step each copy only their loss back
(the update and the statistics kernels, tinynet.kernels.reparam, read the
gradient and the rows where they are)."""
import numpy as np
import pytest

from test_train_cuda import step_transfers
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


def test_every_step_copies_only_the_loss(monkeypatch):
    """Step 1 sets the statistics, step 2 is plain, step 3 updates them (stats_every 3)."""
    net = _net("cuda", np.float32)
    X, y = _data(np.float32)
    dX, dy = net.bk.asarray(X), net.bk.asarray(np.eye(3, dtype=np.float32)[y])   # device targets: one-hot
    opt = QuasiDiagonal(net, lr=0.3, stats_every=3)
    assert step_transfers(monkeypatch, opt, dX, dy, 3) == [(0, 1)] * 3


def test_statistics_kernels_equal_the_cpu_twins():
    """qd_observe (first batch, then a running average) and qd_vectors on the
    device against the CPU backend, float32 rows."""
    from tinynet.backend import get_backend
    from tinynet.kernels import reparam as K
    r = np.random.default_rng(4)
    H1, H2 = (r.standard_normal((9, 7)).astype(np.float32) + 1 for _ in range(2))
    out = {}
    for device in ("cpu", "cuda"):
        bk = get_backend(device)
        run, mu, a2 = bk.zeros(14, np.float64), bk.empty(7, np.float64), bk.empty(7, np.float64)
        bk.launch(K, "qd_observe", 7, bk.asarray(H1), run, 0.2, True)
        bk.launch(K, "qd_observe", 7, bk.asarray(H2), run, 0.2, False)
        bk.launch(K, "qd_vectors", 7, run, True, True, 1e-3, mu, a2)
        out[device] = [np.array(bk.to_host(v)) for v in (run, mu, a2)]
    for got, ref in zip(out["cuda"], out["cpu"]):
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0)    # hardware may contract to FMA: not bits
