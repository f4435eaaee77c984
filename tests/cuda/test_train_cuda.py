"""A tiny Sequential trained on device="cuda" (simulator) equals the same
network trained on the CPU: losses and parameters after 3 steps of each
first-order optimizer, float32 and float64. And a training step on the device
moves no arrays between host and device except the scalar loss.

Tolerances: float64 1e-10 relative (the kernels differ only in summation
order); float32 2e-5 (float32 rounding of matmul sums in a different order
and of the fast CPU sigmoid, carried through 3 updates).
"""
import numpy as np
import pytest
from numba import cuda

from tinynet.layers import Linear, Sigmoid, Tanh, ReLU
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim import SGD, Adam, RMSProp

# (id, stages, loss) of small nets: 7 inputs, 3 outputs, batch 6
NETS = {
    "tanh-mse": (lambda: [Linear(7, 5), Tanh(), Linear(5, 3)], MSELoss),
    "relu-softmax_ce": (lambda: [Linear(7, 5), ReLU(), Linear(5, 3)], SoftmaxCrossEntropyLoss),
    "sigmoid-bce": (lambda: [Linear(7, 5), Tanh(), Linear(5, 3), Sigmoid()], BCELoss),
}
OPTIMIZERS = {
    "sgd": lambda net: SGD(net, lr=0.1),
    "sgd-nesterov": lambda net: SGD(net, lr=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda net: RMSProp(net, lr=0.01),
    "adam": lambda net: Adam(net, lr=0.01),
}


def _data(net_id, dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 7)).astype(dtype)
    if net_id == "relu-softmax_ce":
        Y = rng.integers(0, 3, 6)
    elif net_id == "sigmoid-bce":
        Y = rng.uniform(0, 1, (6, 3)).astype(dtype)
    else:
        Y = rng.standard_normal((6, 3)).astype(dtype)
    return X, Y


def _train(device, net_id, opt_id, dtype, steps=3):
    stages, loss = NETS[net_id]
    net = Sequential(stages(), loss(), dtype=dtype, seed=4, device=device)
    opt = OPTIMIZERS[opt_id](net)
    X, Y = _data(net_id, dtype)
    losses = [opt.step(X, Y) for _ in range(steps)]
    return np.array(losses), net.get_flat(), opt


F32 = pytest.param(np.float32, id="f32")
F64 = pytest.param(np.float64, id="f64")
# SGD and Adam in both dtypes; the other rules and losses in one dtype each, to
# keep the simulator's time down (a 256-thread matmul launch costs ~0.1 s there)
CASES = [pytest.param(net, opt, dt.values[0], id=f"{net}-{opt}-{dt.id}") for net, opt, dt in [
    ("tanh-mse", "sgd", F32), ("tanh-mse", "sgd", F64),
    ("tanh-mse", "adam", F32), ("tanh-mse", "adam", F64),
    ("tanh-mse", "sgd-nesterov", F64), ("tanh-mse", "rmsprop", F32),
    ("relu-softmax_ce", "adam", F32), ("sigmoid-bce", "sgd", F64),
]]


@pytest.mark.parametrize("net_id, opt_id, dtype", CASES)
def test_three_steps_equal_cpu(net_id, opt_id, dtype):
    tol = 2e-5 if dtype == np.float32 else 1e-10
    l_cpu, th_cpu, o_cpu = _train("cpu", net_id, opt_id, dtype)
    l_gpu, th_gpu, o_gpu = _train("cuda", net_id, opt_id, dtype)
    assert l_cpu[-1] < l_cpu[0]                        # it trains (so equality means something)
    np.testing.assert_allclose(l_gpu, l_cpu, rtol=tol)
    assert th_gpu.dtype == np.dtype(dtype)
    np.testing.assert_allclose(th_gpu, th_cpu, rtol=tol, atol=tol * np.abs(th_cpu).max())
    # optimizer state comes back through the same checkpoint path
    for name, v in o_cpu.state_dict().items():
        np.testing.assert_allclose(o_gpu.state_dict()[name], v, rtol=tol, atol=tol)


def test_gradient_equals_cpu_float64():
    X, Y = _data("tanh-mse", np.float64)
    g = {}
    for device in ("cpu", "cuda"):
        stages, loss = NETS["tanh-mse"]
        net = Sequential(stages(), loss(), dtype=np.float64, seed=4, device=device)
        g[device] = net.gradient(X, Y)
    np.testing.assert_allclose(g["cuda"], g["cpu"], rtol=1e-12, atol=1e-15)


class _Transfers:
    """Counts host->device (cuda.to_device, copy_to_device from a host array) and
    device->host (copy_to_host) copies."""

    def __init__(self, monkeypatch, device_array_type):
        self.h2d = self.d2h = 0
        to_device, copy_to_host = cuda.to_device, device_array_type.copy_to_host
        copy_to_device = device_array_type.copy_to_device

        def counted_to_device(*a, **k):
            self.h2d += 1
            return to_device(*a, **k)

        def counted_copy_to_host(arr, *a, **k):
            self.d2h += 1
            return copy_to_host(arr, *a, **k)

        def counted_copy_to_device(arr, src, *a, **k):
            self.h2d += not getattr(src, "__cuda_ndarray__", False)   # device->device is free
            return copy_to_device(arr, src, *a, **k)

        monkeypatch.setattr(cuda, "to_device", counted_to_device)
        monkeypatch.setattr(device_array_type, "copy_to_device", counted_copy_to_device)
        monkeypatch.setattr(device_array_type, "copy_to_host", counted_copy_to_host)


def step_transfers(monkeypatch, opt, X, Y, steps):
    """[(copies up, copies back)] of each of `steps` optimizer steps on (X, Y)."""
    counts = []
    for _ in range(steps):
        t = _Transfers(monkeypatch, type(X))
        opt.step(X, Y)
        counts.append((t.h2d, t.d2h))
        monkeypatch.undo()
    return counts


def test_step_moves_only_the_loss(monkeypatch):
    """With the batch already on the device, one optimizer step (forward, loss,
    backward, update) copies nothing to the device and one thing back: the
    per-example losses whose mean is the returned scalar."""
    stages, loss = NETS["tanh-mse"]
    net = Sequential(stages(), loss(), dtype=np.float32, seed=4, device="cuda")
    opt = OPTIMIZERS["adam"](net)
    X, Y = _data("tanh-mse", np.float32)
    dX, dY = net.bk.asarray(X), net.bk.asarray(Y)
    opt.step(dX, dY)                                   # first step allocates the gradient
    t = _Transfers(monkeypatch, type(dX))
    loss_value = opt.step(dX, dY)
    assert isinstance(loss_value, float)
    assert (t.h2d, t.d2h) == (0, 1)

