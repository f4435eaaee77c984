"""Natural Neural Networks (thesis 6.4.2): the re-projection leaves the network's
function unchanged, and the V, d step equals the formula written from torch
autograd gradients, dW = -lr (grad_W - grad_b mu^T) U^2, db = -lr grad_b - dW mu."""
import numpy as np
import pytest
import torch

from tinynet.layers import Linear, Sigmoid, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim.nnn import NNN, inverse_sqrt
from tinynet.optim.stats import kron_indices
from torch_ref import theta_of, torch_loss_fn


def make_case(name, seed=0):
    rng = np.random.default_rng(seed)
    if name == "tanh-mse":
        net = Sequential([Linear(4, 5), Tanh(), Linear(5, 3)], MSELoss(), dtype=np.float64, seed=seed)
        Y = rng.standard_normal((10, 3))
    else:
        net = Sequential([Linear(4, 6), Sigmoid(), Linear(6, 5), Tanh(), Linear(5, 3)],
                         SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=seed)
        Y = rng.integers(0, 3, 10)
    return net, rng.standard_normal((10, 4)) * 2 + 1, Y


CASES = ["tanh-mse", "sigmoid-softmax"]


@pytest.mark.parametrize("case", CASES)
def test_reprojection_leaves_outputs_unchanged(case):
    net, X, Y = make_case(case)
    opt = NNN(net, 0.1, T=2)
    for t in range(3):                         # reprojects at 0 and 2, trains V, d between
        opt.step(X + t, Y)
    Xt = np.random.default_rng(7).standard_normal((5, 4))
    before = net.forward(Xt)
    _, ctxs = net.forward_ctx(X * 0.5 - 1)     # new statistics
    opt.reproject(ctxs)
    np.testing.assert_allclose(net.forward(Xt), before, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_nnn_step(case):
    net, X, Y = make_case(case)
    lr, eps = 0.05, 1e-2
    opt = NNN(net, lr, eps=eps, T=100)
    _, ctxs = net.forward_ctx(X)
    opt.reproject(ctxs)                        # what step 0 does; then the step reuses mu, U
    opt.k = 1
    grad = torch.func.grad(torch_loss_fn(net, X, Y))(theta_of(net)).numpy()
    th0 = net.get_flat()
    opt.step(X, Y)
    d = net.get_flat() - th0
    for i in kron_indices(net):
        s = net.layers[i]
        a, c = net.offsets[i]
        k = a + s.n_in * s.n_out
        H = np.array(ctxs[i][0])
        mu = H.mean(axis=0)
        C = (H - mu).T @ (H - mu) / len(H) + eps * np.eye(s.n_in)
        U2 = np.linalg.inv(C)                  # U^2 = (C + eps I)^{-1}
        gW = grad[a:k].reshape(s.n_in, s.n_out).T
        gb = grad[k:c]
        dW = -lr * (gW - np.outer(gb, mu)) @ U2
        np.testing.assert_allclose(d[a:k], dW.ravel(order="F"), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(d[k:c], -lr * gb - dW @ mu, rtol=1e-8, atol=1e-12)


def test_inverse_sqrt_floor():
    C = np.diag([4.0, 1e-12])
    U, Uinv = inverse_sqrt(C, floor=1e-4)
    np.testing.assert_allclose(U, np.diag([0.5, 100.0]))
    np.testing.assert_allclose(U @ Uinv, np.eye(2), atol=1e-12)
