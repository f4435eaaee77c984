"""KFAC's device-resident statistics (tinynet.optim.device_factors) on
device="cuda": the same steps as the host statistics on the CPU, and a
statistics step that moves no matrix between host and device (the random
numbers of sampled rows are the one upload; the empirical Fisher's rows none)."""
import numpy as np
import pytest

from test_train_cuda import step_transfers
from tinynet.layers import Linear, Sigmoid, Tanh
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim import KFAC
from tinynet.optim.device_factors import DeviceRunningFactors

pytestmark = pytest.mark.cudasim


def _net(loss, dtype, device):
    out = [Sigmoid()] if loss is BCELoss else []          # BCE takes probabilities
    return Sequential([Linear(6, 5), Sigmoid(), Linear(5, 4), Tanh(), Linear(4, 3), *out], loss(), dtype=dtype,
                      seed=2, device=device)


def _data(loss, n=6, seed=0):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, 6))
    if loss is BCELoss:
        return X, r.uniform(0.05, 0.95, (n, 3))
    return X, (r.integers(0, 3, n) if loss is SoftmaxCrossEntropyLoss else r.standard_normal((n, 3)))


@pytest.mark.parametrize("loss, curvature", [(MSELoss, "gn"), (SoftmaxCrossEntropyLoss, "empirical"),
                                             (SoftmaxCrossEntropyLoss, "gn"), (SoftmaxCrossEntropyLoss, "fisher"),
                                             (BCELoss, "gn"), (BCELoss, "fisher"), (MSELoss, "fisher")],
                         ids=["mse-gn", "softmax-empirical", "softmax-gn", "softmax-fisher", "bce-gn", "bce-fisher",
                              "mse-fisher"])
def test_device_statistics_equal_cpu_host_statistics(loss, curvature):
    out = {}
    for device in ("cpu", "cuda"):
        net = _net(loss, np.float64, device)
        opt = KFAC(net, 0.5, curvature=curvature, eps=1e-2, T=2, stats_every=1, seed=1)
        assert opt.factor_store == ("device" if device == "cuda" else "host")
        losses = [opt.step(*_data(loss, seed=s)) for s in range(4)]
        out[device] = (np.array(losses), net.get_flat(), opt.factors)
    assert isinstance(opt.running, DeviceRunningFactors)
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=1e-10)
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=1e-10, atol=1e-12)
    for i, (A, G) in out["cpu"][2].items():
        np.testing.assert_allclose(out["cuda"][2][i][0], A, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(out["cuda"][2][i][1], G, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss, curvature, uploads", [(MSELoss, "gn", 1), (SoftmaxCrossEntropyLoss, "empirical", 0),
                                                      (SoftmaxCrossEntropyLoss, "gn", 1),
                                                      (SoftmaxCrossEntropyLoss, "fisher", 1),
                                                      (BCELoss, "gn", 1), (BCELoss, "fisher", 1),
                                                      (MSELoss, "fisher", 1)],
                         ids=["mse-gn", "softmax-empirical", "softmax-gn", "softmax-fisher", "bce-gn", "bce-fisher",
                              "mse-fisher"])
def test_statistics_step_moves_no_matrix(monkeypatch, loss, curvature, uploads):
    """Step 2 gathers statistics (stats_every=2) without inverting (T=100);
    step 3 does neither: the first may copy only `uploads` more arrays to the
    device than the second, and nothing more back."""
    net = _net(loss, np.float32, "cuda")
    opt = KFAC(net, 0.1, curvature=curvature, eps=0.1, T=100, stats_every=2)
    X, Y = _data(loss)
    dX, dY = net.bk.asarray(X, np.float32), net.bk.asarray(net.loss_stage.prepare_targets(Y, 3, np.float32))
    opt.step(dX, dY)
    opt.step(dX, dY)
    (h_stats, d_stats), (h_plain, d_plain) = step_transfers(monkeypatch, opt, dX, dY, 2)
    assert (h_stats - h_plain, d_stats - d_plain) == (uploads, 0)


@pytest.mark.parametrize("loss", [MSELoss, SoftmaxCrossEntropyLoss], ids=["mse", "softmax"])
def test_exact_columns_on_the_device(monkeypatch, loss):
    """exact=True: the k exact GN columns formed on the device (unit_column, and
    for the softmax its square-root kernel on the unit rows; BCE's goes the same
    way, its kernel checked by the sampled cases): the CPU's steps, and a
    statistics step that uploads nothing more than a plain one."""
    out = {}
    for device in ("cpu", "cuda"):
        net = _net(loss, np.float64, device)
        opt = KFAC(net, 0.5, eps=1e-2, T=2, stats_every=1, exact=True)
        losses = [opt.step(*_data(loss, seed=s)) for s in range(2)]
        out[device] = (np.array(losses), net.get_flat())
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=1e-10)
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=1e-10, atol=1e-12)
    net = _net(loss, np.float32, "cuda")
    opt = KFAC(net, 0.1, eps=0.1, T=100, stats_every=2, exact=True)
    X, Y = _data(loss)
    dX, dY = net.bk.asarray(X, np.float32), net.bk.asarray(net.loss_stage.prepare_targets(Y, 3, np.float32))
    opt.step(dX, dY)
    opt.step(dX, dY)
    (h_stats, d_stats), (h_plain, d_plain) = step_transfers(monkeypatch, opt, dX, dY, 2)
    assert (h_stats - h_plain, d_stats - d_plain) == (0, 0)
