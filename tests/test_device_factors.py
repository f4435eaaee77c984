"""KFAC's statistics on the backend (tinynet.optim.device_factors) against the
host twin (tinynet.optim.stats: kfac_sums + RunningFactors, itself checked
against the definitions in test_kfac.py / test_kfac_conv.py). On the CPU
backend the two paths share no statistics code: backend GEMMs and the
running_upper / col_mean / kfac_bias_running kernels against kfac_A_running on
host float64 sums. The CUDA twins run the same code under the simulator
(tests/cuda/test_chapter6_cuda.py, test_device_factors_cuda.py)."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.optim.device_factors import DeviceRunningFactors, device_kfac_sums
from tinynet.optim.kfac import KFAC
from tinynet.optim.stats import RunningFactors, forward_backward_bk, kfac_sums, shares


def _net(kind, dtype=np.float64, seed=0):
    if kind == "tanh-mse":
        layers, loss = [tn.Linear(4, 5), tn.Tanh(), tn.Linear(5, 3)], tn.MSELoss()
    elif kind == "sigmoid-softmax":
        layers = [tn.Linear(4, 6), tn.Sigmoid(), tn.Linear(6, 5), tn.Tanh(), tn.Linear(5, 3)]
        loss = tn.SoftmaxCrossEntropyLoss()
    elif kind == "sigmoid-bce":
        layers, loss = [tn.Linear(4, 5), tn.Tanh(), tn.Linear(5, 3), tn.Sigmoid()], tn.BCELoss()
    elif kind == "cnn":
        layers = [tn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(1, 0)), tn.Tanh(), tn.Flatten(),
                  tn.Linear(3 * 4 * 2, 4)]
        return tn.Sequential(layers, tn.SoftmaxCrossEntropyLoss(), dtype=dtype, seed=seed, input_shape=(2, 4, 4))
    else:
        raise KeyError(kind)
    return tn.Sequential(layers, loss, dtype=dtype, seed=seed)


def _batch(net, n, seed):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, net.n_in))
    k = net.n_out
    if isinstance(net.loss_stage, tn.SoftmaxCrossEntropyLoss):
        return X, r.integers(0, k, n)
    if isinstance(net.loss_stage, tn.BCELoss):
        return X, r.uniform(0.05, 0.95, (n, k))
    return X, r.standard_normal((n, k))


CASES = [("tanh-mse", "gn", False), ("tanh-mse", "empirical", False), ("tanh-mse", "fisher", False),
         ("tanh-mse", "gn", True), ("sigmoid-softmax", "gn", False), ("sigmoid-softmax", "fisher", False),
         ("sigmoid-softmax", "empirical", False), ("sigmoid-bce", "gn", False), ("sigmoid-bce", "fisher", False),
         ("sigmoid-bce", "gn", True), ("cnn", "gn", False), ("cnn", "empirical", False)]


ROW_CASES = [("sigmoid-bce", "gn"), ("sigmoid-bce", "fisher"), ("tanh-mse", "fisher"), ("tanh-mse", "gn"),
             ("sigmoid-softmax", "gn"), ("sigmoid-softmax", "fisher")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["tanh-mse", "sigmoid-softmax", "sigmoid-bce"])
def test_device_exact_columns_have_the_bits_of_the_host_columns(kind, dtype):
    """exact=True: the k columns of S_n (sqrt_D_columns) formed on the backend
    from unit rows, against the host's, bit for bit; no generator draw."""
    from tinynet.optim.device_factors import device_curvature_rows
    from tinynet.optim.stats import curvature_rows
    net = _net(kind, dtype)
    X, Y = _batch(net, 7, 5)
    _, ctxs, lctx, _ = forward_backward_bk(net, X.astype(dtype), Y)
    rh, rd = np.random.default_rng(2), np.random.default_rng(2)
    host = curvature_rows(net, ctxs, lctx, "gn", rh, exact=True)
    dev = device_curvature_rows(net, lctx, "gn", rd, exact=True)
    assert rh.bit_generator.state == rd.bit_generator.state == np.random.default_rng(2).bit_generator.state
    assert len(dev) == len(host) == net.n_out
    for h, d in zip(host, dev):
        assert d.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(net.bk.to_host(d)), np.asarray(h, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind, curvature", ROW_CASES, ids=[f"{k}-{c}" for k, c in ROW_CASES])
def test_device_rows_have_the_bits_of_the_host_rows(kind, curvature, dtype):
    """device_curvature_rows (the rows formed by tinynet.kernels.sampling from
    the outputs where they are) against stats.curvature_rows (host numpy from
    the loss's hess_f_vp / sample_targets), from the same generator draws.
    In float32 too: the kernels' casts to float64 are np.float64(x), since
    Numba types float(x) of a float32 as float32 (the softmax rows once took
    their square roots in float32 that way and missed the host's bits)."""
    from tinynet.optim.device_factors import device_curvature_rows
    from tinynet.optim.stats import curvature_rows
    net = _net(kind, dtype)
    X, Y = _batch(net, 9, 3)
    _, ctxs, lctx, _ = forward_backward_bk(net, X.astype(dtype), Y)
    rh, rd = np.random.default_rng(2), np.random.default_rng(2)
    (host,), (dev,) = curvature_rows(net, ctxs, lctx, curvature, rh), device_curvature_rows(net, lctx, curvature, rd)
    assert rh.bit_generator.state == rd.bit_generator.state
    host = np.asarray(host, dtype=dtype)                  # what the host path uploads
    assert dev.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(net.bk.to_host(dev)), host)
    assert np.abs(host).max() > 0


def test_bce_square_root_rows_factor_its_hessian():
    """BCE's D is diagonal: its exact GN columns (sqrt(d_c) e_c) give
    sum_c s_c s_c^T = D = hess_f, and a sampled row is sqrt(d) * eps."""
    from tinynet.optim.stats import sqrt_D_columns, sqrt_D_rows
    net = _net("sigmoid-bce")
    X, Y = _batch(net, 6, 1)
    _, ctxs, lctx, _ = forward_backward_bk(net, X, Y)
    S = sqrt_D_columns(net.loss_stage, lctx)              # (k, n, k)
    np.testing.assert_allclose(np.einsum("cni,cnj->nij", S, S), net.loss_stage.hess_f(lctx), rtol=1e-13)
    eps = np.random.default_rng(0).standard_normal((6, 3))
    d = np.einsum("nii->ni", net.loss_stage.hess_f(lctx))
    np.testing.assert_allclose(sqrt_D_rows(net.loss_stage, lctx, eps), np.sqrt(d) * eps, rtol=1e-15)


@pytest.mark.parametrize("kind, curvature, exact", CASES,
                         ids=[f"{k}-{c}{'-exact' if e else ''}" for k, c, e in CASES])
def test_running_factors_equal_the_host_twin(kind, curvature, exact):
    """Four statistics batches (the first initializes, the rest average with rho
    0.9) give the same A and G, full and upper, and the same generator state."""
    net = _net(kind)
    host, dev = RunningFactors(0.9), DeviceRunningFactors(net.bk, 0.9)
    rh, rd = np.random.default_rng(5), np.random.default_rng(5)
    sh = shares(net)
    for s in range(4):
        X, Y = _batch(net, 7, s)
        _, ctxs, lctx, _ = forward_backward_bk(net, X, Y)
        host.update(kfac_sums(net, ctxs, lctx, curvature, rh, exact), sh)
        dev.update(device_kfac_sums(net, ctxs, lctx, curvature, rd, exact), sh)
    assert rh.bit_generator.state == rd.bit_generator.state        # the same draws
    up_h, up_d = host.upper, dev.upper
    for i in host.value:
        for Mh, Md in zip(host.value[i], dev.value[i]):
            assert Md.dtype == np.float64
            np.testing.assert_allclose(Md, Mh, rtol=1e-12, atol=1e-14)
        for Mh, Md in zip(up_h[i], up_d[i]):
            np.testing.assert_allclose(np.triu(Md), np.triu(Mh), rtol=1e-12, atol=1e-14)
    if kind == "cnn":
        assert sh[0] > 1                                           # KFC's share was exercised


def test_float32_network_factors_are_float64_and_close():
    net = _net("tanh-mse", np.float32)
    host, dev = RunningFactors(0.5), DeviceRunningFactors(net.bk, 0.5)
    for s in range(3):
        X, Y = _batch(net, 9, s)
        _, ctxs, lctx, _ = forward_backward_bk(net, X, Y)
        host.update(kfac_sums(net, ctxs, lctx, "gn", np.random.default_rng(s)))
        dev.update(device_kfac_sums(net, ctxs, lctx, "gn", np.random.default_rng(s)))
    for i in host.value:
        for Mh, Md in zip(host.value[i], dev.value[i]):
            assert Md.dtype == np.float64
            np.testing.assert_allclose(Md, Mh, rtol=2e-6, atol=1e-6 * np.abs(Mh).max())


@pytest.mark.parametrize("kind, curvature", [("tanh-mse", "gn"), ("sigmoid-softmax", "fisher"), ("cnn", "empirical")])
def test_kfac_with_device_factors_takes_the_host_steps(kind, curvature):
    """The whole optimizer, factors='device' against 'host' on the CPU backend:
    eight steps with statistics every step and inverses every second, the
    trust region on: the same parameters and metrics."""
    nets = {f: _net(kind, seed=2) for f in ("host", "device")}
    opts = {f: KFAC(nets[f], 0.3, curvature=curvature, eps=1e-2, T=2, stats_every=1, factors=f, seed=4)
            for f in nets}
    assert isinstance(opts["device"].running, DeviceRunningFactors)
    assert isinstance(opts["host"].running, RunningFactors)
    for s in range(8):
        X, Y = _batch(nets["host"], 6, 10 + s)
        lh, ld = (opts[f].step(X, Y) for f in ("host", "device"))
        assert ld == pytest.approx(lh, rel=1e-12)
        assert opts["device"].metrics["kl_nu"] == pytest.approx(opts["host"].metrics["kl_nu"], rel=1e-9)
    np.testing.assert_allclose(nets["device"].get_flat(), nets["host"].get_flat(), rtol=1e-10, atol=1e-12)
    assert np.abs(nets["host"].get_flat() - _net(kind, seed=2).get_flat()).max() > 1e-3


def test_device_factors_checkpoint_resumes_bit_for_bit():
    net, net2 = _net("tanh-mse", seed=1), _net("tanh-mse", seed=1)
    opt = KFAC(net, 0.3, T=3, stats_every=1, factors="device")
    for s in range(4):
        opt.step(*_batch(net, 6, s))
    st = opt.state_dict()
    net2.set_flat(net.get_flat())
    opt2 = KFAC(net2, 0.3, T=3, stats_every=1, factors="device")
    opt2.load_state_dict(st)
    for s in range(4, 7):
        X, Y = _batch(net, 6, s)
        assert opt.step(X, Y) == opt2.step(X, Y)
    np.testing.assert_array_equal(net.get_flat(), net2.get_flat())


def test_auto_is_host_on_the_cpu_and_bad_values_are_refused():
    net = _net("tanh-mse")
    assert KFAC(net).factor_store == "host"
    with pytest.raises(ValueError, match="factors must be"):
        KFAC(net, factors="gpu")
    dev = DeviceRunningFactors(net.bk)
    X, Y = _batch(net, 5, 0)
    _, ctxs, lctx, _ = forward_backward_bk(net, X, Y)
    sums = device_kfac_sums(net, ctxs, lctx)
    dev.update(sums)
    H, SB = sums[0]
    with pytest.raises(ValueError, match="device_kfac_sums"):
        dev.update({0: (H[:, :3], SB)})
