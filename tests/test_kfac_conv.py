"""Kronecker statistics of convolutions (KFC, Grosse & Martens 2016) against their
definitions computed densely, and the chapter-6 optimizers on small CNNs.

Definitions (float64), with per-example, per-position patches u_{i,t} of a
Conv2d (written here from the convolution's definition, not from im2col) and
g_{i,t} (O,) the derivative of the network output's curvature rows at output
position t:
  A = 1/n sum_i sum_t [u_{i,t}; 1][u_{i,t}; 1]^T              (Omega: summed over positions)
  G = 1/(n |T|) sum_i sum_t J_{i,t}^T D_i J_{i,t}              (Gamma: averaged over them)
J_{i,t} = d f_i / d a_{i,t} (k, O), the Jacobian of the output w.r.t. the
pre-activations at position t, by torch.func.jacrev of a torch mirror of the
stages above the convolution.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import jacrev

import tinynet as tn
from tinynet.optim import ACP, KFAC, NNN, Centered
from tinynet.optim.stats import forward_backward, input_moments, kfac_factors, kron_indices

torch.set_default_dtype(torch.float64)


def _net(seed=0):
    layers = [tn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(1, 0)), tn.Tanh(), tn.Flatten(),
              tn.Linear(3 * 4 * 2, 4)]
    return tn.Sequential(layers, tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=seed,
                         input_shape=(2, 4, 4))


def _patches(X, C, H, W, kh, kw, sh, sw, ph, pw):
    """(n, P, K) patches u[i, t] from the definition: zero-padded windows, C-major."""
    n = X.shape[0]
    Xp = np.zeros((n, C, H + 2 * ph, W + 2 * pw))
    Xp[:, :, ph:ph + H, pw:pw + W] = X.reshape(n, C, H, W)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.empty((n, Ho * Wo, C * kh * kw))
    for oy in range(Ho):
        for ox in range(Wo):
            out[:, oy * Wo + ox] = Xp[:, :, oy * sh:oy * sh + kh, ox * sw:ox * sw + kw].reshape(n, -1)
    return out


def _above(net, theta):
    """a (O*P,) -> network output (k,), the stages above the conv, in torch."""
    lin = net.layers[3]
    a, b = net.offsets[3]
    k = lin.n_in * lin.n_out
    W = theta[a:a + k].reshape(lin.n_in, lin.n_out).T
    return lambda z: W @ torch.tanh(z) + theta[a + k:b]


def test_kfc_factors_equal_their_definition():
    net = _net()
    conv = net.layers[0]
    r = np.random.default_rng(3)
    n = 5
    X = r.standard_normal((n, net.n_in))
    Y = r.integers(0, net.n_out, n)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    A, G = kfac_factors(net, ctxs, lctx, "gn", exact=True)[0]

    U = _patches(X, 2, 4, 4, 3, 2, 1, 2, 1, 0)
    P = U.shape[1]
    U1 = np.concatenate([U, np.ones((n, P, 1))], axis=2)
    A_def = np.einsum("ntk,ntl->kl", U1, U1) / n
    np.testing.assert_allclose(A, A_def, rtol=1e-12, atol=1e-14)

    theta = torch.tensor(net.get_flat())
    above = _above(net, theta)
    O = conv.out_channels
    F_out, _ = net.forward_ctx(X)
    p = np.exp(F_out - F_out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    a_conv = torch.tensor(np.asarray(net.layers[0].forward(X)[0]))
    G_def = np.zeros((O, O))
    for i in range(n):
        J = jacrev(above)(a_conv[i]).numpy().reshape(net.n_out, O, P)   # columns o*P + t
        D = np.diag(p[i]) - np.outer(p[i], p[i])
        for t in range(P):
            G_def += J[:, :, t].T @ D @ J[:, :, t]
    G_def /= n * P
    np.testing.assert_allclose(G, G_def, rtol=1e-10, atol=1e-14)
    assert conv.share == P


def test_input_moments_of_a_conv_are_the_patch_statistics():
    net = _net()
    X = np.random.default_rng(4).standard_normal((3, net.n_in))
    _, ctxs = net.forward_ctx(X)
    mu, C = input_moments(net, ctxs)[0]
    U = _patches(X, 2, 4, 4, 3, 2, 1, 2, 1, 0).reshape(-1, 12)
    np.testing.assert_allclose(mu, U.mean(0), rtol=1e-12)
    np.testing.assert_allclose(C, np.cov(U.T, bias=True), rtol=1e-10, atol=1e-14)


def test_kron_indices_are_conv_and_linear():
    assert kron_indices(_net()) == [0, 3]


def _cnn():
    layers = [tn.Conv2d(1, 3, 3, padding=1), tn.ReLU(), tn.MaxPool2d(2), tn.Conv2d(3, 4, 2), tn.ReLU(),
              tn.Flatten(), tn.Linear(4 * 2 * 2, 3)]
    return tn.Sequential(layers, tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=1, input_shape=(1, 6, 6))


@pytest.mark.parametrize("make", [
    pytest.param(lambda net: KFAC(net, lr=0.5, T=5, stats_every=1, kl_clip=None, eps=1e-1), id="kfac-gn"),
    pytest.param(lambda net: KFAC(net, lr=0.5, T=5, stats_every=1, curvature="fisher", eps=1e-1), id="kfac-fisher"),
    pytest.param(lambda net: ACP(net, lr=0.1, T=5), id="acp"),
    pytest.param(lambda net: Centered(net, lr=0.1), id="centered"),
    pytest.param(lambda net: NNN(net, lr=0.1, T=5), id="nnn"),
])
def test_chapter6_optimizers_train_a_cnn(make):
    """Each chapter-6 method runs on a CNN with no special case and lowers the
    loss of a fixed batch it is fitted to."""
    net = _cnn()
    r = np.random.default_rng(0)
    X = r.standard_normal((16, net.n_in))
    Y = r.integers(0, 3, 16)
    opt = make(net)
    first = net.loss(X, Y)
    for _ in range(30):
        opt.step(X, Y)
    assert net.loss(X, Y) < 0.7 * first


def test_kfac_conv_update_is_the_kronecker_solve():
    """One KFAC step with statistics and inverses from the same batch: the conv
    layer's update is -lr (A_d ⊗ G_d)^{-1} vec(grad) with the KFC factors."""
    net = _net()
    r = np.random.default_rng(5)
    X = r.standard_normal((6, net.n_in))
    Y = r.integers(0, net.n_out, 6)
    g = net.gradient(X, Y)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    A, G = kfac_factors(net, ctxs, lctx, "gn", exact=True)[0]
    opt = KFAC(net, lr=0.3, eps=1e-2, exact=True, kl_clip=None, rho=0.0)
    from tinynet.optim.kfac import factored_damping
    dA, dG = factored_damping(A, G, opt.eps)
    before = net.get_flat()
    opt.step(X, Y)
    a, c = net.offsets[0]
    K, O = net.layers[0].K, net.layers[0].out_channels
    Gamma = np.concatenate([g[a:a + K * O].reshape(K, O).T, g[a + K * O:c, None]], axis=1)   # (O, K+1)
    upd = -0.3 * np.linalg.solve(G + dG * np.eye(O), Gamma) @ np.linalg.inv(A + dA * np.eye(K + 1))
    expect = np.concatenate([upd[:, :K].T.reshape(-1), upd[:, K]])
    np.testing.assert_allclose(net.get_flat()[a:c] - before[a:c], expect, rtol=1e-9, atol=1e-13)
