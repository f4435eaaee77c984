"""Each stage's vjp, jvp, jac_x, jac_z and each loss against PyTorch autograd
(float64, relative error <= 1e-10), and the network gradient for several
depths, activations and all three losses."""
import numpy as np
import pytest
import torch

import tinynet as tn
from tinynet.backend import get_backend
from torch_ref import theta_of, torch_loss_fn, torch_loss_of_output

RTOL = 1e-10
rng = np.random.default_rng(1234)


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def bound(stage, n_in):
    """Bind a stage to the CPU backend with a random float64 parameter slice."""
    theta = rng.standard_normal(stage.n_params)
    stage.bind(get_backend("cpu"), theta)
    return theta


def torch_stage(stage, theta):
    """(z, x) -> stage output, written from the definitions."""
    if isinstance(stage, tn.Linear):
        k = stage.n_in * stage.n_out
        return lambda z, x: z @ x[:k].reshape(stage.n_in, stage.n_out) + x[k:]
    f = {tn.Sigmoid: torch.sigmoid, tn.Tanh: torch.tanh, tn.ReLU: torch.relu,
         tn.Identity: lambda z: z}[type(stage)]
    return lambda z, x: f(z)


STAGES = {
    "linear": lambda: tn.Linear(5, 3),
    "sigmoid": tn.Sigmoid, "tanh": tn.Tanh, "relu": tn.ReLU, "identity": tn.Identity,
}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_against_autograd(name):
    stage = STAGES[name]()
    n, d_in = 4, 5
    theta = bound(stage, d_in)
    Z = rng.standard_normal((n, d_in))
    out, ctx = stage.forward(Z)
    f = torch_stage(stage, theta)
    zt, xt = torch.tensor(Z), torch.tensor(theta)
    ref = f(zt, xt)
    assert rel(out, ref.detach().numpy()) <= RTOL

    # vjp: b_in and the batch-summed parameter gradient
    B = rng.standard_normal(out.shape)
    grad = np.zeros(stage.n_params)
    b_in = stage.vjp(ctx, B, grad if stage.n_params else None)
    zr, xr = zt.clone().requires_grad_(True), xt.clone().requires_grad_(True)
    (f(zr, xr) * torch.tensor(B)).sum().backward()
    assert rel(b_in, zr.grad.numpy()) <= RTOL
    if stage.n_params:
        assert rel(grad, xr.grad.numpy()) <= RTOL

    # jvp with both input and parameter directions
    dZ = rng.standard_normal(Z.shape)
    dx = rng.standard_normal(stage.n_params)
    got = stage.jvp(ctx, dZ, dx if stage.n_params else None)
    _, ref_jvp = torch.func.jvp(f, (zt, xt), (torch.tensor(dZ), torch.tensor(dx)))
    assert rel(got, ref_jvp.numpy()) <= RTOL

    # per-example Jacobians
    Jz, Jx = stage.jac_z(ctx), stage.jac_x(ctx)
    for i in range(n):
        jz, jx = torch.func.jacrev(f, argnums=(0, 1))(zt[i:i + 1], xt)
        assert rel(Jz[i], jz[0, :, 0, :].numpy()) <= RTOL
        if stage.n_params:
            assert rel(Jx[i], jx[0].numpy()) <= RTOL
        else:
            assert Jx.shape == (n, out.shape[1], 0)


LOSSES = {
    "mse": (tn.MSELoss, lambda n, k: rng.uniform(0, 1, (n, k)), lambda n, k: rng.standard_normal((n, k))),
    "bce": (tn.BCELoss, lambda n, k: rng.uniform(0, 1, (n, k)), lambda n, k: rng.uniform(0.05, 0.95, (n, k))),
    "softmax_ce_ids": (tn.SoftmaxCrossEntropyLoss, lambda n, k: rng.integers(0, k, n),
                       lambda n, k: 3 * rng.standard_normal((n, k))),
    "softmax_ce_onehot": (tn.SoftmaxCrossEntropyLoss, lambda n, k: np.eye(k)[rng.integers(0, k, n)],
                          lambda n, k: 3 * rng.standard_normal((n, k))),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_against_autograd(name):
    cls, make_y, make_f = LOSSES[name]
    n, k = 6, 4
    loss = cls()
    loss.bind(get_backend("cpu"), None)
    F, Y = make_f(n, k), make_y(n, k)
    Yp = loss.prepare_targets(Y, k, np.float64)
    value, ctx = loss.forward(F, Yp)
    L = torch_loss_of_output(loss, Y, k)
    Ft = torch.tensor(F, requires_grad=True)
    ref = L(Ft)
    ref.backward()
    assert abs(value - ref.item()) <= RTOL * abs(ref.item())
    assert rel(loss.vjp(ctx), Ft.grad.numpy()) <= RTOL            # d(mean loss)/dF
    assert rel(loss.jac_z(ctx)[:, 0, :], n * Ft.grad.numpy()) <= RTOL
    dF = rng.standard_normal(F.shape)
    assert rel(loss.jvp(ctx, dF), n * (Ft.grad.numpy() * dF).sum(1)) <= RTOL
    # D_i = d2 l_i / dF_i^2 and its matrix-free product
    H = torch.autograd.functional.hessian(lambda f: n * L(f), torch.tensor(F)).numpy()
    D = np.stack([H[i, :, i, :] for i in range(n)])
    assert rel(loss.hess_f(ctx), D) <= RTOL
    assert rel(loss.hess_f_vp(ctx, dF), np.einsum("nkj,nj->nk", D, dF)) <= RTOL


def make_net(depth, act, loss, width=6, n_in=5, n_out=4, dtype=np.float64, seed=0):
    Act = {"sigmoid": tn.Sigmoid, "tanh": tn.Tanh, "relu": tn.ReLU}[act]
    sizes = [n_in] + [width] * (depth - 1) + [n_out]
    layers = []
    for i in range(depth):
        layers.append(tn.Linear(sizes[i], sizes[i + 1]))
        if i < depth - 1:
            layers.append(Act())
    if loss == "bce":
        layers.append(tn.Sigmoid())
    L = {"mse": tn.MSELoss, "bce": tn.BCELoss, "ce": tn.SoftmaxCrossEntropyLoss}[loss]()
    return tn.Sequential(layers, L, dtype=dtype, seed=seed)


def targets(loss, n, k):
    return rng.integers(0, k, n) if loss == "ce" else rng.uniform(0, 1, (n, k))


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("loss", ["mse", "bce", "ce"])
def test_network_gradient(depth, act, loss):
    net = make_net(depth, act, loss)
    X, Y = rng.standard_normal((7, 5)), targets(loss, 7, 4)
    f = torch_loss_fn(net, X, Y)
    th = theta_of(net).requires_grad_(True)
    ref = f(th)
    ref.backward()
    assert abs(net.loss(X, Y) - ref.item()) <= RTOL * abs(ref.item())
    assert rel(net.gradient(X, Y), th.grad.numpy()) <= RTOL


def test_network_jvp_is_output_directional_derivative():
    net = make_net(3, "tanh", "mse")
    X = rng.standard_normal((5, 5))
    v = rng.standard_normal(net.n_params)
    _, ctxs = net.forward_ctx(X)
    from torch_ref import torch_output_fn
    _, ref = torch.func.jvp(torch_output_fn(net, X), (theta_of(net),), (torch.tensor(v),))
    assert rel(net.jvp(ctxs, v), ref.numpy()) <= RTOL


def test_flat_layout_is_column_major_vecW_then_b():
    net = make_net(2, "tanh", "mse")
    lin = net.layers[0]
    x = np.arange(net.n_params, dtype=np.float64)
    net.set_flat(x)
    W = x[:30].reshape(6, 5, order="F")
    assert np.array_equal(lin.W, W)
    assert np.array_equal(lin.b, x[30:36])
    assert np.array_equal(net.get_flat(), x)


def test_float32_default_and_seeded_init():
    a = make_net(3, "relu", "ce", dtype=np.float32, seed=7)
    b = make_net(3, "relu", "ce", dtype=np.float32, seed=7)
    c = make_net(3, "relu", "ce", dtype=np.float32, seed=8)
    assert a.get_flat().dtype == np.float32
    assert np.array_equal(a.get_flat(), b.get_flat())
    assert not np.array_equal(a.get_flat(), c.get_flat())
    X = rng.standard_normal((4, 5)).astype(np.float32)
    assert a.gradient(X, np.array([0, 1, 2, 3])).dtype == np.float32


@pytest.mark.parametrize("scheme,var", [("glorot", lambda i, o: 2.0 / (i + o)), ("he", lambda i, o: 2.0 / i)])
def test_init_variance(scheme, var):
    """Thesis 2.4.2: uniform weights with the scheme's variance times alpha; zero biases."""
    alpha = 0.5
    net = tn.Sequential([tn.Linear(400, 300), tn.Tanh(), tn.Linear(300, 2)], tn.MSELoss(),
                        dtype=np.float64, init=scheme, alpha=alpha)
    W = net.layers[0].W
    assert abs(W.var() / (alpha * var(400, 300)) - 1) < 0.02
    assert np.all(net.layers[0].b == 0)


def test_bad_inputs_raise_clear_errors():
    net = make_net(2, "tanh", "ce")
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, 5\)"):
        net.loss(np.zeros((3, 4)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="class ids"):
        net.loss(np.zeros((3, 5)), np.array([0, 1, 9]))
    with pytest.raises(ValueError, match="expected a vector of"):
        net.set_flat(np.zeros(3))
    with pytest.raises(ValueError, match="receives 6 features"):
        tn.Sequential([tn.Linear(5, 6), tn.Linear(7, 2)], tn.MSELoss())
