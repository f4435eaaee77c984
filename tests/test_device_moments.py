"""ACP's and NNN's amortized statistics formed on the backend
(tinynet.optim.device_moments) against the host twin (stats.input_moments,
float64 from the copied rows) and against the definitions, on the CPU backend;
tests/cuda/test_device_moments_cuda.py runs the same on device="cuda"."""
import numpy as np
import pytest

from tinynet.layers import Conv2d, Flatten, Linear, Sigmoid, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim import ACP, NNN
from tinynet.optim.device_moments import SQ_MAX_PARTIALS, device_input_moments, device_sq_max
from tinynet.optim.stats import forward_backward_bk, input_moments, kron_indices, shares


def _dense(dtype=np.float64):
    return Sequential([Linear(6, 5), Sigmoid(), Linear(5, 4), Tanh(), Linear(4, 3)], MSELoss(), dtype=dtype,
                      seed=2)


def _conv(dtype=np.float64):
    return Sequential([Conv2d(2, 3, 3), Tanh(), Flatten(), Linear(3 * 4 * 4, 3)], SoftmaxCrossEntropyLoss(),
                      dtype=dtype, seed=2, input_shape=(2, 6, 6))


def _batch(net, n=7, seed=0):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, int(np.prod(net.input_shape)) if net.input_shape else 6)) + 0.3
    Y = r.integers(0, 3, n) if isinstance(net.loss_stage, SoftmaxCrossEntropyLoss) else r.standard_normal((n, 3))
    return X, Y


def _ctxs(net, X, Y):
    grad = net.bk.zeros(net.n_params, net.dtype)
    return forward_backward_bk(net, X, Y, grad)


@pytest.mark.parametrize("make", [_dense, _conv], ids=["dense", "conv"])
def test_moments_equal_the_definition_and_the_host_twin(make):
    """mu = 1/m 1^T H and C = 1/m (H - 1 mu^T)^T (H - 1 mu^T) of every layer's
    rows (a convolution's patch rows: m = n x positions), float64."""
    net = make()
    X, Y = _batch(net)
    _, ctxs, _, _ = _ctxs(net, X, Y)
    dev, host = device_input_moments(net, ctxs), input_moments(net, ctxs)
    assert sorted(dev) == sorted(host) == kron_indices(net)
    for i in dev:
        H = np.asarray(net.layers[i].kron_rows(ctxs[i]), dtype=np.float64)
        mu = H.mean(axis=0)
        C = (H - mu).T @ (H - mu) / H.shape[0]
        assert dev[i][0].dtype == dev[i][1].dtype == np.float64
        np.testing.assert_allclose(dev[i][0], mu, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(dev[i][1], C, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dev[i][1], host[i][1], rtol=1e-12, atol=1e-14)
    assert len(next(iter(dev.values()))[0]) in (2 * 9, 6)     # the conv's patch size, or the dense input


def test_float32_moments_are_float32_accurate():
    net = _conv(np.float32)
    X, Y = _batch(net)
    _, ctxs, _, _ = _ctxs(net, X, Y)
    dev, host = device_input_moments(net, ctxs), input_moments(net, ctxs)
    for i in dev:
        scale = np.abs(host[i][1]).max()
        np.testing.assert_allclose(dev[i][0], host[i][0], rtol=0, atol=1e-6 * np.abs(host[i][0]).max())
        np.testing.assert_allclose(dev[i][1], host[i][1], rtol=0, atol=2e-6 * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 5, SQ_MAX_PARTIALS, 3 * SQ_MAX_PARTIALS + 7])
def test_sq_max_has_the_host_formulas_bits(dtype, size):
    """max (c B)^2 in B's dtype, as ACP's heuristic alpha wrote it on the host."""
    from tinynet.backend import CPUBackend
    r = np.random.default_rng(size)
    B = (r.standard_normal((size, 1)) * 1e-3).astype(dtype)
    got = device_sq_max(CPUBackend(), B, 9)
    assert got == float(np.max((9 * B) ** 2))
    B[size // 2, 0] = np.nan                                   # a diverging signal is not hidden
    assert np.isnan(device_sq_max(CPUBackend(), B, 9))


@pytest.mark.parametrize("alpha", [1.0, "heuristic"])
@pytest.mark.parametrize("make", [_dense, _conv], ids=["dense", "conv"])
def test_acp_device_moments_take_the_host_steps(make, alpha):
    """ACP with moments='device' against 'host': 5 steps, amortizing at 0, 2, 4."""
    out = {}
    for where in ("host", "device"):
        net = make()
        opt = ACP(net, 0.1, eps=0.1, T=2, alpha=alpha, moments=where)
        X, Y = _batch(net)
        losses = [opt.step(X, Y) for _ in range(5)]
        out[where] = (np.array(losses), net.get_flat(), dict(opt.alphas))
    assert out["host"][0][-1] < out["host"][0][0]
    np.testing.assert_allclose(out["device"][0], out["host"][0], rtol=1e-12)
    np.testing.assert_allclose(out["device"][1], out["host"][1], rtol=1e-10, atol=1e-13)
    a_dev, a_host = out["device"][2], out["host"][2]
    assert a_dev.keys() == a_host.keys()
    np.testing.assert_allclose([a_dev[i] for i in a_dev], [a_host[i] for i in a_dev], rtol=1e-10)


def test_heuristic_alpha_is_the_max_over_the_signal_rows():
    """alpha_l = max over examples and outputs of (dl_i/da)^2 + floor (6.3.2, 6.5.3.3),
    with dl_i/da = n B (B the batch-mean signal rows; a convolution's positions
    share an example)."""
    net = _conv()
    X, Y = _batch(net)
    opt = ACP(net, 0.1, T=1, alpha="heuristic", alpha_floor=1e-4)
    _, _, _, Bs = _ctxs(net, X, Y)
    sh = shares(net)
    expect = {i: float(np.max((len(X) * np.asarray(B)) ** 2)) + 1e-4 for i, B in Bs.items()}
    opt.step(X, Y)
    assert opt.alphas == expect
    assert sh[kron_indices(net)[0]] == 16                      # the conv's 4 x 4 positions per example


def test_nnn_device_moments_take_the_host_steps():
    out = {}
    for where in ("host", "device"):
        net = _dense()
        opt = NNN(net, 0.05, T=2, moments=where)
        X, Y = _batch(net)
        losses = [opt.step(X, Y) for _ in range(5)]
        out[where] = (np.array(losses), net.get_flat(), opt.last_matrices())
    assert out["host"][0][-1] < out["host"][0][0]
    np.testing.assert_allclose(out["device"][0], out["host"][0], rtol=1e-12)
    np.testing.assert_allclose(out["device"][1], out["host"][1], rtol=1e-10, atol=1e-13)
    for k, v in out["host"][2].items():
        np.testing.assert_allclose(out["device"][2][k], v, rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("cls", [ACP, NNN])
def test_moments_option_is_checked(cls):
    net = _dense()
    with pytest.raises(ValueError, match="moments must be 'auto', 'host' or 'device', got 'gpu'"):
        cls(net, moments="gpu")
    assert cls(net).moments == "host"                          # auto on the CPU backend
    assert cls(net, moments="device").moments == "device"


def test_keep_rows_gives_the_stages_gradient_and_its_rows():
    """backward_rows_bk(grad_of=..., keep_rows=True) (twist's neuron metric):
    the rows of the plain call and the gradient of the grad_of call, bit for bit."""
    from tinynet.optim.stats import backward_rows_bk
    net = _conv()
    X, Y = _batch(net)
    _, ctxs, lctx, _ = _ctxs(net, X, Y)
    b = net.loss_stage.vjp(lctx)
    kron = kron_indices(net)
    g_ref, g_both = np.zeros(net.n_params), np.zeros(net.n_params)
    backward_rows_bk(net, ctxs, b, g_ref, grad_of=kron)
    rows = backward_rows_bk(net, ctxs, b, np.zeros(net.n_params))
    both = backward_rows_bk(net, ctxs, b, g_both, grad_of=kron, keep_rows=True)
    np.testing.assert_array_equal(g_both, g_ref)
    assert sorted(both) == sorted(rows) == kron
    for i in kron:
        np.testing.assert_array_equal(both[i], rows[i])
    assert np.abs(g_ref).max() > 0
