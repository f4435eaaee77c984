"""BatchNorm and MeanOnlyBatchNorm stages against torch autograd (float64):
forward, vjp (input and parameter parts), jvp, jac_x, jac_z (eval) and the
coupled jac_z_batch (training), running statistics and modes."""
import numpy as np
import pytest
import torch
from torch.func import jacrev, jvp

from tinynet.backend import get_backend
from tinynet.layers import BatchNorm, Linear, MeanOnlyBatchNorm, Tanh
from tinynet.losses import MSELoss
from tinynet.network import Sequential

EPS = 1e-5


def torch_bn(kind, training, rm, rv):
    """(z, params) -> out, from the definitions."""
    def f(z, p):
        if training:
            mu = z.mean(0)
            var = ((z - mu) ** 2).mean(0)
        else:
            mu, var = torch.as_tensor(rm), torch.as_tensor(rv)
        if kind == "full":
            d = z.shape[1]
            return p[:d] * (z - mu) / torch.sqrt(var + EPS) + p[d:]
        return z - mu + p
    return f


def make_stage(kind, d, rng):
    st = BatchNorm(d, eps=EPS) if kind == "full" else MeanOnlyBatchNorm(d, eps=EPS)
    p = rng.standard_normal(st.n_params)
    st.bind(get_backend("cpu"), p.copy())
    return st, p


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", ["full", "mean-only"])
def test_batchnorm_against_autograd(kind, training):
    rng = np.random.default_rng(0)
    n, d = 6, 4
    st, p = make_stage(kind, d, rng)
    st.running_mean = rng.standard_normal(d)
    st.running_var = rng.random(d) + 0.5
    rm, rv = st.running_mean.copy(), st.running_var.copy()
    st.training = training
    Z = rng.standard_normal((n, d)) * 3 + 1
    out, ctx = st.forward(Z)
    f = torch_bn(kind, training, rm, rv)
    zt, pt = torch.tensor(Z), torch.tensor(p)
    np.testing.assert_allclose(out, f(zt, pt).numpy(), rtol=1e-12, atol=1e-12)
    # vjp: input part and parameter part
    b = rng.standard_normal((n, d))
    zt.requires_grad_(True)
    pt.requires_grad_(True)
    gz, gp = torch.autograd.grad((f(zt, pt) * torch.tensor(b)).sum(), (zt, pt))
    grad = np.zeros(st.n_params)
    b_in = st.vjp(ctx, b, grad)
    np.testing.assert_allclose(b_in, gz.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, gp.numpy(), rtol=1e-10, atol=1e-12)
    # jvp
    dz, dp = rng.standard_normal((n, d)), rng.standard_normal(st.n_params)
    _, ref = jvp(f, (zt.detach(), pt.detach()), (torch.tensor(dz), torch.tensor(dp)))
    np.testing.assert_allclose(st.jvp(ctx, dz, dp), ref.numpy(), rtol=1e-10, atol=1e-12)
    # Jacobians
    Jp = jacrev(f, argnums=1)(zt.detach(), pt.detach()).numpy()          # (n, d, P)
    np.testing.assert_allclose(st.jac_x(ctx), Jp, rtol=1e-10, atol=1e-12)
    Jz = jacrev(f, argnums=0)(zt.detach(), pt.detach()).numpy()          # (n, d, n, d)
    np.testing.assert_allclose(st.jac_z_batch(ctx), Jz, rtol=1e-10, atol=1e-12)
    if training:
        with pytest.raises(NotImplementedError, match="couples the examples"):
            st.jac_z(ctx)
    else:
        np.testing.assert_allclose(st.jac_z(ctx), Jz[np.arange(n), :, np.arange(n), :], rtol=1e-10)


@pytest.mark.parametrize("kind", ["full", "mean-only"])
def test_running_statistics(kind):
    rng = np.random.default_rng(1)
    st, _ = make_stage(kind, 3, rng)
    Z = rng.standard_normal((5, 3))
    st.forward(Z)
    np.testing.assert_allclose(st.running_mean, 0.1 * Z.mean(0))
    if kind == "full":
        np.testing.assert_allclose(st.running_var, 0.9 + 0.1 * Z.var(0, ddof=1))
    st.training = False
    rm = st.running_mean.copy()
    st.forward(Z)
    np.testing.assert_array_equal(st.running_mean, rm)      # eval leaves them alone


def test_batchnorm_in_a_network_gradient():
    """The full gradient of a net with batch norm against torch autograd."""
    rng = np.random.default_rng(2)
    net = Sequential([Linear(3, 4), BatchNorm(4), Tanh(), Linear(4, 2), MeanOnlyBatchNorm(2)],
                     MSELoss(), dtype=np.float64)
    X, Y = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    th = torch.tensor(net.get_flat())
    bn1 = torch_bn("full", True, None, None)
    bn2 = torch_bn("mean-only", True, None, None)

    def L(t):
        h = torch.tensor(X) @ t[:12].reshape(3, 4) + t[12:16]
        h = torch.tanh(bn1(h, t[16:24]))
        h = h @ t[24:32].reshape(4, 2) + t[32:34]
        return ((bn2(h, t[34:36]) - torch.tensor(Y)) ** 2).sum(1).mean()
    np.testing.assert_allclose(net.gradient(X, Y), torch.func.grad(L)(th).numpy(), rtol=1e-10, atol=1e-12)
