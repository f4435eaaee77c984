"""Per-step scalars on the device (tinynet.kernels.scalars): the kernels
against their CPU twins and the definition, and a KFAC step whose trust region
(q and nu) no longer comes back to the host: with the batch and the factors
on the device, a step that gathers no statistics and inverts nothing copies
only the loss back, whatever the number of layers."""
import math

import numpy as np
import pytest

from test_train_cuda import _Transfers
from tinynet.backend import CPUBackend
from tinynet.backend_base import DeviceValue
from tinynet.cuda_backend import CUDABackend
from tinynet.kernels import scalars as sc
from tinynet.layers import Linear, Sigmoid, Tanh
from tinynet.losses import MSELoss
from tinynet.network import Sequential
from tinynet.optim import KFAC

pytestmark = pytest.mark.cudasim
cpu, gpu = CPUBackend(), CUDABackend()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_dot_acc_clip_factor_and_axpy_s_match_the_definitions(dtype):
    r = np.random.default_rng(0)
    x, y, z = (r.standard_normal(n).astype(dtype) for n in (300, 300, 40))   # 300: two dot blocks
    lr, kl_clip = 0.7, 1e-3
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    q = float(x64 @ x64 + x64 @ y64)                         # > 0 for this draw
    tol = 1e-12
    for bk in (cpu, gpu):
        acc = bk.asarray(np.array([0.0, 1.0]))
        bk.dot_acc(bk.asarray(x), bk.asarray(x), acc, 0)
        bk.dot_acc(bk.asarray(x), bk.asarray(y), acc, 0)     # accumulates
        got_q = float(bk.to_host(acc)[0])
        np.testing.assert_allclose(got_q, q, rtol=tol)
        bk.launch(sc, "kl_clip_factor", 1, acc, lr, kl_clip)
        nu = float(bk.to_host(acc)[1])
        assert nu == min(1.0, math.sqrt(kl_clip / (lr * lr * got_q))) and nu < 1   # the clip is active
        w = bk.asarray(z.copy())
        bk.axpy_s(-lr, acc, 1, bk.asarray(z), w)
        a = dtype(-lr * nu)                                  # the coefficient rounded once, as for bk.axpy
        if bk is cpu:                                        # a GPU may contract y + a x to one FMA
            np.testing.assert_array_equal(w, z + a * z)
        np.testing.assert_allclose(bk.to_host(w), z + a * z, rtol=2e-7 if dtype == np.float32 else 1e-16)
    for q0 in (0.0, -3.0, 1e-12):                            # no curvature, or a step inside the region
        for bk in (cpu, gpu):
            acc = bk.asarray(np.array([q0, 0.5]))
            bk.launch(sc, "kl_clip_factor", 1, acc, lr, kl_clip)
            assert bk.to_host(acc)[1] == 1.0


def _net(device):
    return Sequential([Linear(6, 5), Sigmoid(), Linear(5, 4), Tanh(), Linear(4, 3)], MSELoss(),
                      dtype=np.float32, seed=2, device=device)


@pytest.mark.parametrize("route", ["batch", "gradient"])
def test_kfac_step_keeps_its_trust_region_on_the_device(monkeypatch, route):
    r = np.random.default_rng(0)
    X, Y = r.standard_normal((6, 6)).astype(np.float32), r.standard_normal((6, 3)).astype(np.float32)
    nets, opts = {}, {}
    for device in ("cpu", "cuda"):
        nets[device] = net = _net(device)
        opts[device] = KFAC(net, 0.5, eps=0.1, T=100, stats_every=100, kl_clip=1e-4, route=route)
        bX, bY = (net.bk.asarray(A) for A in (X, Y))
        opts[device].step(bX, bY)                            # statistics and inverses at k = 0
        if device == "cuda":
            t = _Transfers(monkeypatch, type(bX))
        opts[device].step(bX, bY)                            # k = 1: neither
    assert (t.h2d, t.d2h) == (0, 1)                          # the loss; q and nu stayed
    monkeypatch.undo()
    nu = opts["cuda"].metrics["kl_nu"]
    assert isinstance(nu, DeviceValue)
    assert float(nu) == pytest.approx(opts["cpu"].metrics["kl_nu"], rel=1e-5)
    assert float(nu) < 1                                     # the clip scaled the step
    np.testing.assert_allclose(nets["cuda"].get_flat(), nets["cpu"].get_flat(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_ubp_explosion_control_stays_on_the_device(monkeypatch, clip):
    """UBP's per-layer rho = ||C|| / ||B|| and its clip: a step copies only the
    loss back (before, two dot products per layer came back), and rho, the
    clip and the update agree with the CPU."""
    from tinynet.optim import UBP
    r = np.random.default_rng(1)
    X, Y = r.standard_normal((6, 6)).astype(np.float32), r.standard_normal((6, 3)).astype(np.float32)
    nets, opts = {}, {}
    for device in ("cpu", "cuda"):
        nets[device] = net = _net(device)
        opts[device] = UBP(net, 0.5, clip=clip)
        bX, bY = (net.bk.asarray(A) for A in (X, Y))
        opts[device].step(bX, bY)
        if device == "cuda":
            t = _Transfers(monkeypatch, type(bX))
        opts[device].step(bX, bY)
    assert (t.h2d, t.d2h) == (0, 1)
    monkeypatch.undo()
    o_cpu, o_gpu = opts["cpu"], opts["cuda"]
    assert isinstance(o_gpu.metrics["correction_ratio"], DeviceValue)
    assert sorted(o_gpu.last_ratios) == sorted(o_cpu.last_ratios)
    for t_ in o_cpu.last_ratios:
        assert float(o_gpu.last_ratios[t_]) == pytest.approx(o_cpu.last_ratios[t_], rel=1e-4)
    assert float(o_gpu.metrics["correction_ratio"]) == pytest.approx(max(o_cpu.last_ratios.values()), rel=1e-4)
    if clip is not None:
        assert max(o_cpu.last_ratios.values()) > clip        # the clip acted
    np.testing.assert_allclose(nets["cuda"].get_flat(), nets["cpu"].get_flat(), rtol=1e-5, atol=1e-6)
