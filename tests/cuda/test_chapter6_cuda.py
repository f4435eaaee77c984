"""The chapter-6 preconditioners (centered, ACP, KFAC with and without its
trust region, NNN) on device="cuda" (simulator) equal the same steps on the
CPU: losses and parameters after 3 updates of a small sigmoid net, float64,
with the statistics and inverses refreshed inside the run (T = 2). Their
per-step GEMMs, the KFAC trust-region products and the updates run through
the CUDA backend; so do KFAC's statistics on "cuda" (factors="auto" keeps them on
the device, tinynet.optim.device_factors), the other methods' statistics and
every inversion go through the host on both.

Tolerance 1e-10 relative (the kernels differ from the CPU's BLAS only in
summation order).
"""
import numpy as np
import pytest

from tinynet.layers import Linear, Sigmoid, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim import ACP, KFAC, NNN, Centered

OPTIMIZERS = {
    "centered": lambda net: Centered(net, 0.1),
    "acp-fixed": lambda net: ACP(net, 0.1, eps=0.1, T=2, route="batch"),
    "acp-heuristic": lambda net: ACP(net, 0.1, eps=0.1, T=2, alpha="heuristic"),
    "kfac-gn-clip": lambda net: KFAC(net, 1.0, eps=1e-2, T=2, stats_every=1, kl_clip=1e-4, exact=True,
                                     route="batch"),
    "kfac-gn-clip-gradient-route": lambda net: KFAC(net, 1.0, eps=1e-2, T=2, stats_every=1, kl_clip=1e-4,
                                                    route="gradient"),
    "kfac-fisher-noclip": lambda net: KFAC(net, 0.1, curvature="fisher", eps=1e-2, T=2, stats_every=1,
                                           kl_clip=None, seed=3),
    "nnn": lambda net: NNN(net, 0.05, T=2),
}
NETS = {
    "sigmoid-mse": (lambda: [Linear(6, 5), Sigmoid(), Linear(5, 4), Tanh(), Linear(4, 3)], MSELoss),
    "sigmoid-softmax": (lambda: [Linear(6, 5), Sigmoid(), Linear(5, 3)], SoftmaxCrossEntropyLoss),
}


def _train(device, net_id, opt_id, steps=3):
    stages, loss = NETS[net_id]
    net = Sequential(stages(), loss(), dtype=np.float64, seed=2, device=device)
    opt = OPTIMIZERS[opt_id](net)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 6))
    Y = rng.integers(0, 3, 6) if net_id == "sigmoid-softmax" else rng.standard_normal((6, 3))
    losses = [opt.step(X, Y) for _ in range(steps)]
    return np.array(losses), net.get_flat(), opt


# one net per method, to keep the simulator's time down
CASES = [("centered", "sigmoid-mse"), ("acp-fixed", "sigmoid-mse"), ("acp-heuristic", "sigmoid-softmax"),
         ("kfac-gn-clip", "sigmoid-mse"), ("kfac-gn-clip-gradient-route", "sigmoid-softmax"),
         ("kfac-fisher-noclip", "sigmoid-softmax"), ("nnn", "sigmoid-softmax")]


@pytest.mark.parametrize("opt_id, net_id", CASES, ids=[f"{o}-{n}" for o, n in CASES])
def test_three_steps_equal_cpu(opt_id, net_id):
    l_cpu, th_cpu, o_cpu = _train("cpu", net_id, opt_id)
    l_gpu, th_gpu, o_gpu = _train("cuda", net_id, opt_id)
    assert l_cpu[-1] < l_cpu[0]                        # it trains (so equality means something)
    np.testing.assert_allclose(l_gpu, l_cpu, rtol=1e-10)
    np.testing.assert_allclose(th_gpu, th_cpu, rtol=1e-10, atol=1e-12)
    if opt_id.startswith("kfac"):
        np.testing.assert_allclose(o_gpu.metrics["kl_nu"], o_cpu.metrics["kl_nu"], rtol=1e-10)
        if "clip" in opt_id and "noclip" not in opt_id:
            assert o_cpu.metrics["kl_nu"] < 1                  # the trust region is active
