"""An independent PyTorch (float64) mirror of a tinynet Sequential, for tests.

`torch_loss_fn(net, X, Y)` returns f(theta) -> batch-mean loss, a torch function
of the flat parameter vector written from the DESIGN.md conventions (vec(W)
column-major then b; MSE without 1/2; mean over the batch), not from tinynet's
code. `torch_output_fn(net, X)` returns theta -> network output (n, k).
Use them with torch.func.hessian / jacrev / autograd.
Image stages (Conv2d, Flatten, MaxPool2d, AvgPool2d) reshape the rows to
(n, C, H, W) with net.shapes[l] and call torch.nn.functional (conv2d with
weight = W.reshape(O, C, kh, kw), max_pool2d, avg_pool2d).
"""
import numpy as np
import torch
import torch.nn.functional as F

import tinynet.layers as _layers
from tinynet.layers import Conv2d, Flatten, Identity, Linear, ReLU, Sigmoid, Tanh
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss

torch.set_default_dtype(torch.float64)

_ACT = {Sigmoid: torch.sigmoid, Tanh: torch.tanh, ReLU: torch.relu, Identity: lambda z: z}


def torch_output_fn(net, X):
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))

    def f(theta):
        h = X
        for l, (s, (a, b)) in enumerate(zip(net.layers, net.offsets)):
            if isinstance(s, Linear):
                k = s.n_in * s.n_out
                W = theta[a:a + k].reshape(s.n_in, s.n_out).T   # column-major vec(W)
                h = h @ W.T + theta[a + k:b]
            elif type(s) in _ACT:
                h = _ACT[type(s)](h)
            elif isinstance(s, Flatten):
                pass                                            # rows are already C-major flat
            elif isinstance(s, Conv2d):
                h = _conv2d(s, theta[a:b], h, net.shapes[l])
            elif _POOL.get(type(s)) is not None:
                h = _pool(s, _POOL[type(s)], h, net.shapes[l])
            else:
                raise NotImplementedError(f"no torch mirror for {s!r}")
        return h
    return f


# -- image stages (DESIGN.md, "Images"): rows <-> (n, C, H, W) with net.shapes[l] --------
def _pair(v):
    return tuple(int(t) for t in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _conv2d(s, x, h, in_shape):
    """torch's conv2d with weight = W.reshape(O, C, kh, kw), W (O, C*kh*kw) stored
    column-major in x, then b; output back to C-major rows."""
    O, (C, H, Wd) = s.out_channels, in_shape
    k = O * C * s.kh * s.kw
    W = x[:k].reshape(C * s.kh * s.kw, O).T            # column-major vec(W)
    out = F.conv2d(h.reshape(-1, C, H, Wd), W.reshape(O, C, s.kh, s.kw), x[k:],
                   stride=(s.sh, s.sw), padding=(s.ph, s.pw))
    return out.reshape(h.shape[0], -1)


def _pool(s, fn, h, in_shape):
    """max_pool2d / avg_pool2d with the stage's constructor arguments
    (kernel_size, stride=None: torch's default, the kernel size; no padding)."""
    kernel = _pair(s.kernel_size)
    stride = kernel if s.stride is None else _pair(s.stride)
    out = fn(h.reshape((-1,) + tuple(in_shape)), kernel, stride)
    return out.reshape(h.shape[0], -1)


# the pooling stages are looked up by name, so this mirror imports before they exist
_POOL = {getattr(_layers, name): fn for name, fn in
         (("MaxPool2d", F.max_pool2d), ("AvgPool2d", F.avg_pool2d)) if hasattr(_layers, name)}


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
