"""UBP (thesis chapter 5, algorithm 2) on small CNNs against an independent
dense reference in torch (float64).

Algorithm 2 written for any stage with parameters x_l: the signal da at the
stage's output gives the SGD update dx = -(lr/n) grad_x <f_l(h; x), da>; the
output changes by delta_i = f_l(h_i; x + dx) - f_l(h_i; x) (exact: conv and
linear stages are affine in x); the correction is C_i = H_i delta_i with H_i
the Gauss-Newton (or exact) d^2 l_i / d a_l^2 of the sub-network above, by
torch.func.jacrev / hessian; the signal below is
vjp_h f_l(h; x + dx)(da) + vjp_h f_l(h; x)(C) (line 14). Shares no code with
tinynet.optim.ubp.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacrev, vjp

import tinynet as tn
from tinynet.optim.ubp import UBP

torch.set_default_dtype(torch.float64)


def _stage_fn(s, shape_in):
    """(z (d_in,), x (p,)) -> output (d_out,) of one example, from the definitions."""
    if isinstance(s, tn.Linear):
        k = s.n_in * s.n_out
        return lambda z, x: x[:k].reshape(s.n_in, s.n_out).T @ z + x[k:]
    if isinstance(s, tn.Conv2d):
        C, H, W = shape_in
        K = C * s.kh * s.kw

        def conv(z, x):
            Wt = x[:K * s.out_channels].reshape(K, s.out_channels).T.reshape(s.out_channels, C, s.kh, s.kw)
            out = F.conv2d(z.reshape(1, C, H, W), Wt, x[K * s.out_channels:],
                           stride=(s.sh, s.sw), padding=(s.ph, s.pw))
            return out.reshape(-1)
        return conv
    if isinstance(s, tn.MaxPool2d):
        C, H, W = shape_in
        return lambda z, x: F.max_pool2d(z.reshape(1, C, H, W), (s.kh, s.kw), (s.sh, s.sw)).reshape(-1)
    if isinstance(s, tn.Flatten):
        return lambda z, x: z
    act = {tn.Sigmoid: torch.sigmoid, tn.Tanh: torch.tanh, tn.ReLU: torch.relu}[type(s)]
    return lambda z, x: act(z)


def _example_loss(loss, y):
    if isinstance(loss, tn.MSELoss):
        return lambda f: ((f - y) ** 2).sum()
    return lambda f: -(y * torch.log_softmax(f, 0)).sum()


def ubp_reference(net, X, Y, lr, curvature="gn"):
    th = torch.tensor(net.get_flat().astype(np.float64))
    fs = [_stage_fn(s, net.shapes[t]) for t, s in enumerate(net.layers)]
    xs = [th[a:b] for a, b in net.offsets]
    n = X.shape[0]
    Yt = torch.tensor(net.loss_stage.prepare_targets(Y, net.n_out, np.float64))
    losses = [_example_loss(net.loss_stage, Yt[i]) for i in range(n)]

    def up_from(t):
        def f(a):
            for u in range(t + 1, len(fs)):
                a = fs[u](a, xs[u])
            return a
        return f

    Z = [torch.tensor(X)]
    for t, f in enumerate(fs):
        Z.append(torch.stack([f(z, xs[t]) for z in Z[-1]]))
    da = torch.stack([grad(losses[i])(Z[-1][i]) for i in range(n)])
    bottom = min(t for t, s in enumerate(net.layers) if s.n_params)
    new = {}
    for t in range(len(fs) - 1, bottom - 1, -1):
        f, x, h = fs[t], xs[t], Z[t]
        if net.layers[t].n_params == 0:
            da = torch.stack([vjp(lambda z: f(z, x), h[i])[1](da[i])[0] for i in range(n)])
            continue
        g = sum(vjp(lambda xx: f(h[i], xx), x)[1](da[i])[0] for i in range(n))
        dx = -lr / n * g
        new[t] = x + dx
        if t == bottom:
            break
        C = []
        for i in range(n):
            delta = f(h[i], x + dx) - f(h[i], x)
            up = up_from(t)
            if curvature == "gn":
                J = jacrev(up)(Z[t + 1][i])
                Hi = J.T @ hessian(losses[i])(Z[-1][i]) @ J
            else:
                Hi = hessian(lambda a: losses[i](up(a)))(Z[t + 1][i])
            C.append(Hi @ delta)
        da = torch.stack([vjp(lambda z: f(z, x + dx), h[i])[1](da[i])[0]
                          + vjp(lambda z: f(z, x), h[i])[1](C[i])[0] for i in range(n)])
    flat = net.get_flat().astype(np.float64)
    for t, v in new.items():
        a, c = net.offsets[t]
        flat[a:c] = v.detach().numpy()
    return flat


def _cnn(kind, seed=2):
    if kind == "conv-relu-pool-conv-linear":
        layers = [tn.Conv2d(1, 2, 2), tn.ReLU(), tn.MaxPool2d(2), tn.Conv2d(2, 3, 2), tn.Tanh(),
                  tn.Flatten(), tn.Linear(12, 3)]
        shape, loss = (1, 7, 7), tn.SoftmaxCrossEntropyLoss()
    elif kind == "strided-padded-conv-mse":
        layers = [tn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)), tn.Sigmoid(), tn.Flatten(),
                  tn.Linear(3 * 3 * 4, 2)]
        shape, loss = (2, 5, 5), tn.MSELoss()
    else:
        raise KeyError(kind)
    return tn.Sequential(layers, loss, dtype=np.float64, seed=seed, input_shape=shape)


def _batch(net, n=3, seed=0):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, net.n_in))
    Y = r.standard_normal((n, net.n_out)) if isinstance(net.loss_stage, tn.MSELoss) \
        else r.integers(0, net.n_out, n)
    return X, Y


@pytest.mark.parametrize("mode", ["matrix_free", "explicit"])
@pytest.mark.parametrize("curvature", ["gn", "exact"])
@pytest.mark.parametrize("kind", ["conv-relu-pool-conv-linear", "strided-padded-conv-mse"])
def test_ubp_step_on_cnn_matches_reference(kind, curvature, mode):
    net = _cnn(kind)
    X, Y = _batch(net)
    lr = 0.5
    ref = ubp_reference(net, X, Y, lr, curvature)
    before = net.get_flat().copy()
    UBP(net, lr, curvature=curvature, mode=mode).step(X, Y)
    got = net.get_flat()
    # the step must move every parameter block, and exactly as algorithm 2 says
    assert np.abs(got - before).max() > 1e-3
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_ubp_refuses_batchnorm2d_clearly():
    net = tn.Sequential([tn.Conv2d(1, 2, 2), tn.BatchNorm2d(2), tn.ReLU(), tn.Flatten(), tn.Linear(8, 2)],
                        tn.MSELoss(), dtype=np.float64, input_shape=(1, 3, 3))
    with pytest.raises(TypeError, match=r"BatchNorm2d.*mixes the examples"):
        UBP(net, 0.1)
