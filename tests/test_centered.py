"""Centered gradient descent (thesis algorithm 3) against the formula written
from torch autograd gradients: dW = -lr 1/n sum g_i (h_i - mu)^T, db = -lr 1/n sum g_i."""
import numpy as np
import pytest
import torch

from tinynet.layers import Linear, ReLU, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim.centered import Centered
from tinynet.optim.stats import kron_indices
from torch_ref import theta_of, torch_loss_fn


@pytest.mark.parametrize("case", ["tanh-mse", "relu-softmax"])
def test_centered_step(case):
    rng = np.random.default_rng(1)
    if case == "tanh-mse":
        net = Sequential([Linear(3, 4), Tanh(), Linear(4, 2)], MSELoss(), dtype=np.float64)
        Y = rng.standard_normal((6, 2))
    else:
        net = Sequential([Linear(3, 5), ReLU(), Linear(5, 4), Tanh(), Linear(4, 3)],
                         SoftmaxCrossEntropyLoss(), dtype=np.float64)
        Y = rng.integers(0, 3, 6)
    X = rng.standard_normal((6, 3)) + 1.0
    lr = 0.2
    grad = torch.func.grad(torch_loss_fn(net, X, Y))(theta_of(net)).numpy()
    _, ctxs = net.forward_ctx(X)
    mus = {i: np.array(ctxs[i][0]).mean(axis=0) for i in kron_indices(net)}
    th0 = net.get_flat()
    Centered(net, lr).step(X, Y)
    d = net.get_flat() - th0
    for i in kron_indices(net):
        s = net.layers[i]
        a, c = net.offsets[i]
        k = a + s.n_in * s.n_out
        gW = grad[a:k].reshape(s.n_in, s.n_out).T        # mean_i g_i h_i^T
        gb = grad[k:c]                                   # mean_i g_i
        dW = -lr * (gW - np.outer(gb, mus[i]))           # mean_i g_i (h_i - mu)^T
        np.testing.assert_allclose(d[a:k], dW.ravel(order="F"), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(d[k:c], -lr * gb, rtol=1e-10, atol=1e-13)
