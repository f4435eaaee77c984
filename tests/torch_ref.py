"""An independent PyTorch (float64) mirror of a tinynet Sequential, for tests.

`torch_loss_fn(net, X, Y)` returns f(theta) -> batch-mean loss, a torch function
of the flat parameter vector written from the DESIGN.md conventions (vec(W)
column-major then b; MSE without 1/2; mean over the batch), not from tinynet's
code. `torch_output_fn(net, X)` returns theta -> network output (n, k).
Use them with torch.func.hessian / jacrev / autograd.
"""
import numpy as np
import torch

from tinynet.layers import Identity, Linear, ReLU, Sigmoid, Tanh
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss

torch.set_default_dtype(torch.float64)

_ACT = {Sigmoid: torch.sigmoid, Tanh: torch.tanh, ReLU: torch.relu, Identity: lambda z: z}


def torch_output_fn(net, X):
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))

    def f(theta):
        h = X
        for s, (a, b) in zip(net.layers, net.offsets):
            if isinstance(s, Linear):
                k = s.n_in * s.n_out
                W = theta[a:a + k].reshape(s.n_in, s.n_out).T   # column-major vec(W)
                h = h @ W.T + theta[a + k:b]
            elif type(s) in _ACT:
                h = _ACT[type(s)](h)
            else:
                raise NotImplementedError(f"no torch mirror for {s!r}")
        return h
    return f


def torch_loss_of_output(loss, Y, k):
    """F -> batch-mean loss, for tinynet loss stage `loss`."""
    Yt = torch.as_tensor(np.asarray(loss.prepare_targets(Y, k, np.float64)))

    def L(F):
        if isinstance(loss, MSELoss):
            return ((F - Yt) ** 2).sum(1).mean()
        if isinstance(loss, BCELoss):
            return -(Yt * torch.log(F) + (1 - Yt) * torch.log(1 - F)).sum(1).mean()
        if isinstance(loss, SoftmaxCrossEntropyLoss):
            return -(Yt * torch.log_softmax(F, dim=1)).sum(1).mean()
        raise NotImplementedError(f"no torch mirror for {loss!r}")
    return L


def torch_loss_fn(net, X, Y):
    out = torch_output_fn(net, X)
    L = torch_loss_of_output(net.loss_stage, Y, net.n_out)
    return lambda theta: L(out(theta))


def theta_of(net):
    return torch.tensor(net.get_flat().astype(np.float64))
