"""The quasi-diagonal / whitening reparametrization of seed 003 (tinynet.optim.reparam):
one step expressed on w equals plain SG on the reparametrized network's v (torch
autograd, float64) mapped back, for dense and convolutional layers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinynet as tn
from tinynet.optim import SGD
from tinynet.optim.reparam import QuasiDiagonal

torch.set_default_dtype(torch.float64)


def _stats(opt, net, rng):
    """Fixed, arbitrary mu and Var for every Kronecker stage (the step uses them as they are)."""
    for i in opt.kron:
        n = net.layers[i].fan_in
        opt.set_statistics(i, rng.standard_normal(n), rng.uniform(0.2, 3.0, n))


def _v_of(W, b, mu, alpha, beta):
    """v with y = beta (v_0 + V diag(alpha)(x - mu)) equal to W x + b."""
    V = W / (beta[:, None] * alpha[None, :])
    v0 = b / beta + (V * alpha[None, :]) @ mu
    return V, v0


def _w_of(V, v0, mu, alpha, beta):
    W = beta[:, None] * V * alpha[None, :]
    return W, beta * (v0 - (V * alpha[None, :]) @ mu)


def _consts(opt, i):
    return (opt.mu(i), np.sqrt(opt.alpha2(i)), np.sqrt(opt.beta2(i)))


@pytest.mark.parametrize("center, scale, beta", [(True, "variance", "share-fanin"), (True, "none", "one"),
                                                  (False, "variance", "share-fanin")])
def test_dense_step_equals_sg_on_v(center, scale, beta):
    rng = np.random.default_rng(0)
    net = tn.Sequential([tn.Linear(5, 4), tn.Tanh(), tn.Linear(4, 3)], tn.SoftmaxCrossEntropyLoss(),
                        dtype=np.float64, seed=1)
    X, y = rng.standard_normal((12, 5)), rng.integers(0, 3, 12)
    opt = QuasiDiagonal(net, lr=0.3, center=center, scale=scale, beta=beta)
    _stats(opt, net, rng)
    L = [net.layers[0], net.layers[2]]
    consts = [_consts(opt, 0), _consts(opt, 2)]
    vs = [tuple(torch.tensor(a, requires_grad=True) for a in _v_of(l.W, l.b, *c)) for l, c in zip(L, consts)]
    h = torch.tensor(X)
    for k, ((V, v0), (mu, al, be)) in enumerate(zip(vs, consts)):
        mu_t, al_t, be_t = map(torch.tensor, (mu, al, be))
        h = be_t * (v0 + ((h - mu_t) * al_t) @ V.T)
        if k == 0:
            h = torch.tanh(h)
    F.cross_entropy(h, torch.tensor(y)).backward()
    opt.step(X, y)
    for l, (V, v0), c in zip(L, vs, consts):
        W, b = _w_of(V.detach().numpy() - 0.3 * V.grad.numpy(), v0.detach().numpy() - 0.3 * v0.grad.numpy(), *c)
        np.testing.assert_allclose(l.W, W, rtol=0, atol=1e-12)
        np.testing.assert_allclose(l.b, b, rtol=0, atol=1e-12)


def test_conv_step_equals_sg_on_v():
    """Conv2d: i over the patch entries (C kh kw), j over the output channels, the
    mean over examples and positions."""
    rng = np.random.default_rng(1)
    net = tn.Sequential([tn.Conv2d(2, 3, 3), tn.Tanh(), tn.Flatten(), tn.Linear(3 * 4 * 4, 4)],
                        tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=2, input_shape=(2, 6, 6))
    X, y = rng.standard_normal((5, 72)), rng.integers(0, 4, 5)
    opt = QuasiDiagonal(net, lr=0.2)
    _stats(opt, net, rng)
    conv, lin = net.layers[0], net.layers[3]
    Wc = conv.W if hasattr(conv, "W") else None
    theta = net.get_flat()
    a, b = net.offsets[0]
    K, O = conv.fan_in, conv.fan_out
    WcT = theta[a:a + K * O].reshape(K, O)            # [W^T; b^T] layout of DESIGN.md
    bc = theta[a + K * O:b]
    c0, c3 = _consts(opt, 0), _consts(opt, 3)
    V0, v00 = (torch.tensor(t, requires_grad=True) for t in _v_of(WcT.T, bc, *c0))
    V3, v03 = (torch.tensor(t, requires_grad=True) for t in _v_of(lin.W, lin.b, *c3))
    x = torch.tensor(X).reshape(5, 2, 6, 6)
    P = F.unfold(x, 3)                                  # (n, K, positions), K ordered (c, kh, kw)
    mu, al, be = map(torch.tensor, c0)
    Yc = be[None, :, None] * (v00[None, :, None] + torch.einsum("ok,nkp->nop", V0, (P - mu[None, :, None])
                                                                * al[None, :, None]))
    h = torch.tanh(Yc).reshape(5, -1)
    mu3, al3, be3 = map(torch.tensor, c3)
    out = be3 * (v03 + ((h - mu3) * al3) @ V3.T)
    F.cross_entropy(out, torch.tensor(y)).backward()
    opt.step(X, y)
    W0, b0 = _w_of(V0.detach().numpy() - 0.2 * V0.grad.numpy(), v00.detach().numpy() - 0.2 * v00.grad.numpy(), *c0)
    got = net.get_flat()
    np.testing.assert_allclose(got[a:a + K * O].reshape(K, O), W0.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[a + K * O:b], b0, rtol=0, atol=1e-12)
    W3, b3 = _w_of(V3.detach().numpy() - 0.2 * V3.grad.numpy(), v03.detach().numpy() - 0.2 * v03.grad.numpy(), *c3)
    np.testing.assert_allclose(lin.W, W3, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lin.b, b3, rtol=0, atol=1e-12)


def test_without_reparametrization_it_is_sgd():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((16, 49)), rng.integers(0, 10, 16)
    a = tn.models.build_model("tiny-mlp", dtype=np.float64, seed=4)
    b = tn.models.build_model("tiny-mlp", dtype=np.float64, seed=4)
    qd = QuasiDiagonal(a, lr=0.1, center=False, scale="none", beta="one")
    sgd = SGD(b, 0.1)
    for _ in range(3):
        qd.step(X, y)
        sgd.step(X, y)
    np.testing.assert_allclose(a.get_flat(), b.get_flat(), rtol=0, atol=1e-14)


def test_statistics_are_running_averages():
    rng = np.random.default_rng(5)
    net = tn.Sequential([tn.Linear(3, 2)], tn.MSELoss(), dtype=np.float64)
    opt = QuasiDiagonal(net, lr=0.01, rate=0.25, stats_every=2)
    X1, X2 = rng.standard_normal((8, 3)), rng.standard_normal((8, 3)) + 2
    opt.step(X1, np.zeros((8, 2)))
    np.testing.assert_allclose(opt.stats[0]["mu"], X1.mean(0))
    opt.step(X2, np.zeros((8, 2)))                      # step 2: a statistics step (stats_every 2)
    np.testing.assert_allclose(opt.stats[0]["mu"], 0.75 * X1.mean(0) + 0.25 * X2.mean(0))
    np.testing.assert_allclose(opt.stats[0]["var"], 0.75 * X1.var(0) + 0.25 * X2.var(0))
    opt.step(X1, np.zeros((8, 2)))                      # step 3: no statistics
    np.testing.assert_allclose(opt.stats[0]["mu"], 0.75 * X1.mean(0) + 0.25 * X2.mean(0))
    assert opt.beta2(0)[0] == pytest.approx(1 / math.sqrt(3))


def test_trains_resumes_and_refuses_bad_settings(tmp_path):
    from faults import tiny_data, tiny_run
    data = tiny_data()
    _, _, res = tiny_run(data, tmp_path / "r", 40, "reparam", 0.5)
    assert res.stop_reason == "steps" and res.train_loss < res.history[0]["train_loss"]
    net_a, _, _ = tiny_run(data, tmp_path / "a", 20, "reparam", 0.5)
    tiny_run(data, tmp_path / "b", 10, "reparam", 0.5)
    net_b, _, _ = tiny_run(data, tmp_path / "b", 20, "reparam", 0.5, resume=True)
    assert np.array_equal(net_a.get_flat(), net_b.get_flat())
    net = tn.models.build_model("tiny-mlp", dtype=np.float64)
    for kw, msg in ((dict(scale="x"), "scale"), (dict(beta="x"), "beta"), (dict(rate=0), "rate"),
                    (dict(eps=0), "eps")):
        with pytest.raises(ValueError, match=msg):
            QuasiDiagonal(net, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_update_kernel_equals_the_host_formula(dtype):
    """tinynet.kernels.reparam.qd_update (what step runs, on the network's
    backend) against layer_update (the host float64 expression): dW^T with the
    same bits, db to float64 rounding (its sum over i in another order)."""
    from tinynet.backend import get_backend
    from tinynet.kernels import reparam as K
    rng = np.random.default_rng(7)
    net = tn.Sequential([tn.Linear(37, 23)], tn.MSELoss(), dtype=dtype, seed=1)
    opt = QuasiDiagonal(net, lr=0.3)
    _stats(opt, net, rng)
    n, m = 37, 23
    g = rng.standard_normal(n * m + m).astype(dtype)
    theta = rng.standard_normal(n * m + m).astype(dtype)
    dWT, db = opt.layer_update(0, g[:n * m].astype(np.float64).reshape(n, m), g[n * m:].astype(np.float64))
    got = theta.copy()
    get_backend("cpu").launch(K, "qd_update", m, g, opt.mu(0), opt.alpha2(0), opt.beta2(0), 0.3, got,
                              np.zeros(m))
    np.testing.assert_array_equal(got[:n * m], theta[:n * m] + dWT.reshape(-1).astype(dtype))
    ref_b = theta[n * m:].astype(np.float64) + db
    tol = 2e-7 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got[n * m:], ref_b, rtol=tol, atol=tol * np.abs(ref_b).max())
    assert np.abs(db).max() > 1e-3                   # the bias update is not negligible here


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_kernels_equal_the_definitions(dtype):
    """qd_observe: mean and (biased) variance of the rows summed in float64, then
    the running average; qd_vectors: mu and alpha^2 = 1 / (Var + eps) as the host
    formulas mu(i) and alpha2(i) write them (the same bits)."""
    rng = np.random.default_rng(8)
    net = tn.Sequential([tn.Linear(5, 2)], tn.MSELoss(), dtype=dtype)
    opt = QuasiDiagonal(net, lr=0.1, rate=0.3, eps=1e-3)
    H1, H2 = (rng.standard_normal((11, 5)).astype(dtype) * 2 + 1 for _ in range(2))
    opt._observe(0, H1)
    h = H1.astype(np.float64)
    np.testing.assert_allclose(opt.stats[0]["mu"], h.mean(0), rtol=1e-14)
    np.testing.assert_allclose(opt.stats[0]["var"], h.var(0), rtol=1e-12)
    opt._observe(0, H2)
    g = H2.astype(np.float64)
    np.testing.assert_allclose(opt.stats[0]["mu"], 0.7 * h.mean(0) + 0.3 * g.mean(0), rtol=1e-14)
    np.testing.assert_allclose(opt.stats[0]["var"], 0.7 * h.var(0) + 0.3 * g.var(0), rtol=1e-12)
    mu, a2, b2, _ = opt._dev[0]
    for center in (True, False):
        for scale in ("variance", "none"):
            opt.center, opt.scale = center, scale
            opt._refresh(0)
            np.testing.assert_array_equal(mu, opt.mu(0))
            np.testing.assert_array_equal(a2, opt.alpha2(0))
    np.testing.assert_array_equal(b2, opt.beta2(0))
    with pytest.raises(ValueError, match=r"stage 0 takes mu and var of shape \(5,\)"):
        opt.set_statistics(0, np.zeros(4), np.ones(5))
