"""UBP on device="cuda" (Numba's CUDA simulator) equals UBP on the CPU: the
loss and the parameters after one step, for each curvature and mode, float64
(the kernels differ only in summation order: 1e-10 relative)."""
import numpy as np
import pytest

from tinynet.layers import Linear, Sigmoid, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim import UBP

NETS = {
    "tanh-mse": (lambda: [Linear(5, 4), Tanh(), Linear(4, 3), Sigmoid(), Linear(3, 3)], MSELoss),
    "tanh-softmax_ce": (lambda: [Linear(5, 4), Tanh(), Linear(4, 3)], SoftmaxCrossEntropyLoss),
}


def _run(device, net_id, curvature, mode):
    stages, loss = NETS[net_id]
    net = Sequential(stages(), loss(), dtype=np.float64, seed=2, device=device, alpha=3.0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 5))
    Y = rng.integers(0, 3, 4) if net_id == "tanh-softmax_ce" else rng.standard_normal((4, 3))
    opt = UBP(net, 0.5, curvature=curvature, mode=mode)
    losses = [opt.step(X, Y)]
    return np.array(losses), net.get_flat(), opt.metrics["correction_ratio"]


@pytest.mark.parametrize("mode", ["matrix_free", "explicit"])
@pytest.mark.parametrize("curvature", ["gn", "exact"])
@pytest.mark.parametrize("net_id", list(NETS))
def test_ubp_cuda_equals_cpu(net_id, curvature, mode):
    l_gpu, x_gpu, r_gpu = _run("cuda", net_id, curvature, mode)
    l_cpu, x_cpu, r_cpu = _run("cpu", net_id, curvature, mode)
    np.testing.assert_allclose(l_gpu, l_cpu, rtol=1e-10)
    np.testing.assert_allclose(x_gpu, x_cpu, rtol=1e-10, atol=1e-12)
    assert r_gpu == pytest.approx(r_cpu, rel=1e-9) and r_cpu > 0


def test_ubp_momentum_cuda_equals_cpu():
    out = {}
    for device in ("cpu", "cuda"):
        stages, loss = NETS["tanh-mse"]
        net = Sequential(stages(), loss(), dtype=np.float64, seed=2, device=device, alpha=3.0)
        rng = np.random.default_rng(0)
        opt = UBP(net, 0.3, momentum=0.9)
        losses = [opt.step(rng.standard_normal((4, 5)), rng.standard_normal((4, 3))) for _ in range(3)]
        out[device] = (np.array(losses), net.get_flat())
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=1e-10)
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=1e-10, atol=1e-12)


def test_softmax_d_product_stays_on_the_device(monkeypatch):
    """The correction's D_i v for the softmax cross-entropy is the loss's device
    kernel: a UBP step of a softmax net copies as many arrays between host and
    device as the same net with MSE, whose D = 2I never needed the host."""
    from test_train_cuda import _Transfers
    counts = {}
    for loss in (MSELoss, SoftmaxCrossEntropyLoss):
        net = Sequential([Linear(5, 4), Tanh(), Linear(4, 3), Tanh(), Linear(3, 3)], loss(), dtype=np.float32,
                         seed=2, device="cuda")
        rng = np.random.default_rng(0)
        X = rng.standard_normal((4, 5)).astype(np.float32)
        Y = net.loss_stage.prepare_targets(rng.integers(0, 3, 4) if loss is SoftmaxCrossEntropyLoss
                                           else rng.standard_normal((4, 3)), 3, np.float32)
        dX, dY = net.bk.asarray(X), net.bk.asarray(Y)
        opt = UBP(net, 0.05)
        opt.step(dX, dY)
        t = _Transfers(monkeypatch, type(dX))
        opt.step(dX, dY)
        counts[loss.__name__] = (t.h2d, t.d2h)
        monkeypatch.undo()
    assert counts["SoftmaxCrossEntropyLoss"] == counts["MSELoss"]
