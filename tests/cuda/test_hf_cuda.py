"""Hessian-free on device="cuda": the same steps as on the CPU (float64), and
no parameter-sized vector crossing between host and device inside a step (the
gradient, CG's vectors and the trial parameters stay on the device; only
scalars and per-example losses come back)."""
import numpy as np
import pytest

from tinynet.layers import Linear, Tanh
from tinynet.losses import MSELoss
from tinynet.network import Sequential
from tinynet.optim import HessianFree


def _net(device, dtype=np.float64):
    return Sequential([Linear(5, 4), Tanh(), Linear(4, 3)], MSELoss(), dtype=dtype, seed=2, device=device)


def _data(s, dtype=np.float64):
    r = np.random.default_rng(s)
    return r.standard_normal((6, 5)).astype(dtype), r.standard_normal((6, 3)).astype(dtype)


@pytest.mark.parametrize("curvature", ["gn", "hessian"])
def test_hf_cuda_equals_cpu(curvature):
    out = {}
    for device in ("cpu", "cuda"):
        net = _net(device)
        # the simulator runs each CUDA thread as a Python thread: one step, 3 CG iterations
        opt = HessianFree(net, curvature=curvature, damping=0.5, cg_iters=3)
        X, Y = _data(0)
        loss = opt.step(X, Y)
        out[device] = (loss, net.get_flat(), net.loss(X, Y), opt.metrics)
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-12)
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=1e-9, atol=1e-11)
    for key in ("cg_iters", "damping", "rho", "alpha", "backtrack_iter"):
        assert out["cuda"][3][key] == pytest.approx(out["cpu"][3][key], rel=1e-9), key
    assert out["cpu"][2] < out["cpu"][0]                           # the step lowered the loss


def test_hf_step_moves_no_parameter_vector(monkeypatch):
    from numba import cuda
    net = _net("cuda", np.float32)
    opt = HessianFree(net, damping=0.5, cg_iters=3)
    X, Y = _data(0, np.float32)
    dX, dY = net.bk.asarray(X), net.bk.asarray(Y)
    sizes = {"h2d": [], "d2h": []}
    arr_type = type(dX)
    to_device, copy_to_host, copy_to_device = cuda.to_device, arr_type.copy_to_host, arr_type.copy_to_device

    def counted_to_device(a, *r, **k):
        sizes["h2d"].append(np.asarray(a).nbytes)
        return to_device(a, *r, **k)

    def counted_copy_to_device(arr, src, *r, **k):
        if not getattr(src, "__cuda_ndarray__", False):
            sizes["h2d"].append(np.asarray(src).nbytes)
        return copy_to_device(arr, src, *r, **k)

    def counted_copy_to_host(arr, *r, **k):
        sizes["d2h"].append(arr.nbytes)
        return copy_to_host(arr, *r, **k)

    monkeypatch.setattr(cuda, "to_device", counted_to_device)
    monkeypatch.setattr(arr_type, "copy_to_device", counted_copy_to_device)
    monkeypatch.setattr(arr_type, "copy_to_host", counted_copy_to_host)
    opt.step(dX, dY)
    monkeypatch.undo()
    vector = net.n_params * 4
    assert sizes["d2h"] and max(sizes["d2h"]) < vector            # scalars and the 6 per-example losses
    assert max(sizes["h2d"], default=0) < vector
    # CG's scalars stay on the device. The 9 copies back: the losses at theta
    # (one forward pass serves the gradient and the products), CG's start read
    # [b^T b, x0^T x0], its stop flag before iterations 0, 1, 2 (3), its end
    # read (the scalar vector, with p^T p in it), the losses of the backtracking
    # walk over the kept iterates (it keeps the last, 3, when 2 is not lower: 2),
    # and [g^T p, p^T C p] together. The host-scalar CG copied back 4 dots per iteration.
    assert opt.metrics["cg_iters"] == 3 and opt.metrics["backtrack_iter"] == 3
    assert len(sizes["d2h"]) == 9, sizes["d2h"]
    assert sizes["d2h"].count(8) == 3                             # the single scalars: the stop flags
