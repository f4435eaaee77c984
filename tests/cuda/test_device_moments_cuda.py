"""ACP's and NNN's amortized moments formed on device="cuda"
(tinynet.optim.device_moments): the same numbers as the host twin on the CPU,
the heuristic alpha with the host formula's bits, and an amortization that
copies mu, C and alpha's partial maxima down instead of the input and signal
rows. tests/cuda/test_chapter6_cuda.py runs ACP and NNN (moments="auto", the
device here) against the CPU for whole steps."""
import numpy as np
import pytest

from tinynet.layers import Conv2d, Flatten, Linear, Tanh
from tinynet.losses import SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim import ACP
from tinynet.optim.device_moments import SQ_MAX_PARTIALS, device_input_moments, device_sq_max
from tinynet.optim.stats import forward_backward_bk, input_moments, kron_indices

pytestmark = pytest.mark.cudasim


def _conv(device, dtype=np.float64):
    return Sequential([Conv2d(2, 3, 3), Tanh(), Flatten(), Linear(3 * 4 * 4, 3)], SoftmaxCrossEntropyLoss(),
                      dtype=dtype, seed=2, device=device, input_shape=(2, 6, 6))


def _batch(n=5):
    r = np.random.default_rng(0)
    return r.standard_normal((n, 72)) + 0.3, r.integers(0, 3, n)


def test_moments_equal_the_cpu_host_twin():
    X, Y = _batch()
    out = {}
    for device in ("cpu", "cuda"):
        net = _conv(device)
        _, ctxs, _, _ = forward_backward_bk(net, X, Y, net.bk.zeros(net.n_params, net.dtype))
        out[device] = device_input_moments(net, ctxs) if device == "cuda" else input_moments(net, ctxs)
    for i in out["cpu"]:
        np.testing.assert_allclose(out["cuda"][i][0], out["cpu"][i][0], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(out["cuda"][i][1], out["cpu"][i][1], rtol=1e-12, atol=1e-15)


def test_sq_max_has_the_host_formulas_bits():
    from tinynet.cuda_backend import CUDABackend
    r = np.random.default_rng(3)
    B = r.standard_normal((SQ_MAX_PARTIALS + 37, 2)).astype(np.float32)
    bk = CUDABackend()
    assert device_sq_max(bk, bk.asarray(B), 7) == float(np.max((7 * B) ** 2))


class _BytesDown:
    """Bytes copied device -> host, by patching the device array's copy_to_host."""

    def __init__(self, monkeypatch, device_array_type):
        self.nbytes = 0
        copy_to_host = device_array_type.copy_to_host

        def counted(arr, *a, **k):
            self.nbytes += arr.nbytes
            return copy_to_host(arr, *a, **k)
        monkeypatch.setattr(device_array_type, "copy_to_host", counted)


def test_amortization_copies_the_moments_not_the_rows(monkeypatch):
    """Step 0 amortizes (T = 2), step 1 does not: the difference in bytes copied
    back is, per layer, mu and C (i + i^2 numbers) and alpha's partial maxima,
    not the patch rows (n x 16 positions x 18) and the signal rows."""
    net = _conv("cuda", np.float32)
    opt = ACP(net, 0.1, T=2, alpha="heuristic")
    assert opt.moments == "device"
    X, Y = _batch()
    dX = net.bk.asarray(X, np.float32)
    dY = net.bk.asarray(net.loss_stage.prepare_targets(Y, 3, np.float32))
    down = []
    for _ in range(2):
        b = _BytesDown(monkeypatch, type(dX))
        opt.step(dX, dY)
        down.append(b.nbytes)
        monkeypatch.undo()
    # (patch size or fan-in, signal rows x outputs): Conv2d(2, 3, 3) on 6 x 6, 16 positions; Linear(48, 3)
    layers = dict(zip(kron_indices(net), [(2 * 3 * 3, len(X) * 16 * 3), (48, len(X) * 3)]))
    expect = sum(4 * (d + d * d + min(SQ_MAX_PARTIALS, b)) for d, b in layers.values())
    assert down[0] - down[1] == expect
