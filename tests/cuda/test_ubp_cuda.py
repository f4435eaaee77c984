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
