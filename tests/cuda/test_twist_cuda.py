"""Natural gradient with a twist, identity and neuron metrics
(tinynet.optim.twist_device) on device="cuda": the same steps as on the CPU
backend, and a step that copies only its loss back (the gradient, the running
averages and the normalizers stay on the device)."""
import numpy as np
import pytest

from test_reparam_cuda import _data, _net
from test_train_cuda import _Transfers
from tinynet.optim import NaturalTwist

pytestmark = pytest.mark.cudasim


@pytest.mark.parametrize("metric, normalizer", [("identity", "global"), ("neuron", "neuron"), ("neuron", "layer")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_twist_cuda_equals_cpu(metric, normalizer, dtype, monkeypatch):
    from tinynet.kernels import twist as K
    monkeypatch.setattr(K, "CHUNK", 8)                 # blocks over 8 entries in chunks, as a large layer's
    X, y = _data(dtype)
    out = {}
    for device in ("cpu", "cuda"):
        net = _net(device, dtype)
        opt = NaturalTwist(net, lr=0.05, metric=metric, normalizer=normalizer, rho=0.8, mu=1e-4, eps=1e-3)
        losses = [opt.step(X, y) for _ in range(3)]
        out[device] = (np.array(losses), net.get_flat(), opt.norm)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=tol)
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=tol, atol=tol)
    np.testing.assert_allclose(out["cuda"][2], out["cpu"][2], rtol=tol)
    assert out["cpu"][0][-1] < out["cpu"][0][0]


def test_step_copies_only_the_loss(monkeypatch):
    net = _net("cuda", np.float32)
    X, y = _data(np.float32)
    dX, dy = net.bk.asarray(X), net.bk.asarray(np.eye(3, dtype=np.float32)[y])
    opt = NaturalTwist(net, lr=0.05, metric="neuron", normalizer="neuron")
    opt.step(dX, dy)
    t = _Transfers(monkeypatch, type(dX))
    opt.step(dX, dy)
    assert (t.h2d, t.d2h) == (0, 1)
