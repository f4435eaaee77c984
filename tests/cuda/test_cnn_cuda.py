"""A tiny CNN trained on device="cuda" (simulator) equals the same network
trained on the CPU: SGD, KFAC (its conv statistics) and UBP, and BatchNorm2d in
the pipeline; losses and parameters after 2 steps, float64 (the kernels differ
only in summation order: col2im gathers on the GPU, scatters on the CPU).
Shapes are tiny: the simulator runs ~1e4 threads/s."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.optim import KFAC, SGD, UBP


def _net(device, bn=False):
    layers = [tn.Conv2d(1, 2, 2), *( [tn.BatchNorm2d(2)] if bn else []), tn.ReLU(), tn.MaxPool2d(2),
              tn.Flatten(), tn.Linear(8, 3)]
    return tn.Sequential(layers, tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=3,
                         device=device, input_shape=(1, 5, 5))


OPTS = {
    "sgd": (lambda net: SGD(net, lr=0.1), False),
    "sgd-batchnorm2d": (lambda net: SGD(net, lr=0.1), True),
    "kfac": (lambda net: KFAC(net, lr=0.3, T=1, stats_every=1, eps=1e-1), False),
    "ubp": (lambda net: UBP(net, lr=0.1), False),
}


@pytest.mark.parametrize("name", list(OPTS))
def test_cnn_training_on_cuda_equals_cpu(name):
    make, bn = OPTS[name]
    r = np.random.default_rng(0)
    X = r.standard_normal((4, 25))
    Y = r.integers(0, 3, 4)
    out = {}
    for device in ("cpu", "cuda"):
        net = _net(device, bn)
        opt = make(net)
        losses = [opt.step(X, Y) for _ in range(2)]
        out[device] = (np.array(losses), net.get_flat())
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=1e-10)
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=1e-9, atol=1e-12)
