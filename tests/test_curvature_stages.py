"""Each stage's second-order pieces (seed 001's grad_xx f, grad_zx f, grad_xz f,
grad_zz f, explicit and contracted with b) against torch autograd of the stage's
own function, written here; and the second-order kernels of the CPU backend."""
import numpy as np
import pytest
import torch

from tinynet.backend import get_backend
from tinynet.layers import Identity, Linear, ReLU, Sigmoid, Tanh
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss

bk = get_backend("cpu")
TOL = 1e-12
TORCH_ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}


def bind_linear(i=3, o=2, seed=0):
    s = Linear(i, o)
    theta = np.random.default_rng(seed).standard_normal(s.n_params)
    s.bind(bk, theta)
    return s, theta


def torch_linear(i, o):
    def f(x, h):                       # x: flat [vec(W) column-major; b]
        W = x[:i * o].reshape(i, o).T
        return W @ h + x[i * o:]
    return f


def second_derivatives(f, x, h):
    """Per output j: d2 f_j / d(x, h)^2 blocks (xx, zx, xz, zz) via autograd."""
    xt, ht = torch.tensor(x), torch.tensor(h)
    Hxx, Hxz = torch.func.hessian(f, argnums=(0, 1))(xt, ht)[0]
    Hzx, Hzz = torch.func.hessian(f, argnums=(0, 1))(xt, ht)[1]
    return Hxx.numpy(), Hxz.numpy(), Hzx.numpy(), Hzz.numpy()


def test_linear_second_order_tensors():
    s, x = bind_linear()
    h = np.random.default_rng(1).standard_normal((2, 3))
    _, ctx = s.forward(h)
    for e in range(2):
        Hxx, Hxh, Hhx, Hhh = second_derivatives(torch_linear(3, 2), x, h[e])
        # seed's grad_zx f: [j, x_i, h_k] = d2 a_j / dx_i dh_k ; grad_xz f: [j, h_m, x_k]
        assert np.array_equal(s.hess_xx(ctx)[e], Hxx)
        assert np.array_equal(s.hess_zx(ctx)[e], Hxh)
        assert np.array_equal(s.hess_xz(ctx)[e], Hhx)
        assert np.array_equal(s.hess_zz(ctx)[e], Hhh)


def test_linear_contracted_products_match_explicit_tensors():
    s, x = bind_linear(4, 3)
    rng = np.random.default_rng(2)
    n = 5
    h, B, dz, dx = rng.standard_normal((n, 4)), rng.standard_normal((n, 3)), \
        rng.standard_normal((n, 4)), rng.standard_normal(s.n_params)
    _, ctx = s.forward(h)
    ref_x = np.einsum("nj,njpk,nk->p", B, s.hess_zx(ctx), dz) + np.einsum("nj,njpk,k->p", B, s.hess_xx(ctx), dx)
    ref_z = np.einsum("nj,njmk,k->nm", B, s.hess_xz(ctx), dx) + np.einsum("nj,njmk,nk->nm", B, s.hess_zz(ctx), dz)
    acc = np.zeros(s.n_params)
    assert np.allclose(s.hvp_x(ctx, B, dz, dx, acc), ref_x, rtol=0, atol=TOL)
    assert np.allclose(s.hvp_z(ctx, B, dz, dx), ref_z, rtol=0, atol=TOL)
    # the many-direction versions, C = 2 directions
    dZ, dX = np.stack([dz, 2 * dz]), np.stack([dx, -dx])
    assert np.allclose(s.hvp_x_many(ctx, B, dZ, dX), np.stack([ref_x, 2 * ref_x]), atol=TOL)
    refs = [np.einsum("nj,njmk,k->nm", B, s.hess_xz(ctx), d) for d in dX]
    assert np.allclose(s.hvp_z_many(ctx, B, dZ, dX), np.stack(refs), atol=TOL)
    assert np.allclose(s.jvp_many(ctx, dZ, dX), np.stack([s.jvp(ctx, z, d) for z, d in zip(dZ, dX)]), atol=TOL)
    Wv = rng.standard_normal((2, n, 3))
    dzin, gX = s.vjp_many(ctx, Wv)
    for c in range(2):
        g = np.zeros(s.n_params)
        assert np.allclose(s.vjp(ctx, Wv[c], g), dzin[c], atol=TOL)
        assert np.allclose(g, gX[c], atol=TOL)


@pytest.mark.parametrize("cls", [Sigmoid, Tanh, ReLU, Identity], ids=lambda c: c.__name__)
def test_activation_second_order(cls):
    s = cls()
    s.bind(bk, None)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 3))
    _, ctx = s.forward(z)
    f = TORCH_ACT[getattr(s, "kind", None) or "identity"]
    for e in range(4):
        Hzz = torch.func.hessian(f)(torch.tensor(z[e])).numpy()       # [j, m, k]
        assert np.allclose(s.hess_zz(ctx)[e], Hzz, rtol=0, atol=TOL)
    B, dz = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    ref = np.einsum("nj,njmk,nk->nm", B, s.hess_zz(ctx), dz)
    got = s.hvp_z(ctx, B, dz, None)
    assert np.allclose(0 if got is None else got, ref, rtol=0, atol=TOL)
    many = s.hvp_z_many(ctx, B, dz[None], None)
    assert np.allclose(0 if many is None else many[0], ref, rtol=0, atol=TOL)
    assert s.hess_xx(ctx).shape == (4, 3, 0, 0) and s.hess_zx(ctx).shape == (4, 3, 0, 3)


LOSS_CASES = {
    "mse": (MSELoss, lambda F, Y: ((F - Y) ** 2).sum()),
    "bce": (BCELoss, lambda F, Y: -(Y * torch.log(F) + (1 - Y) * torch.log(1 - F)).sum()),
    "softmax_ce": (SoftmaxCrossEntropyLoss, lambda F, Y: -(Y * torch.log_softmax(F, 0)).sum()),
}


@pytest.mark.parametrize("name", list(LOSS_CASES))
@pytest.mark.parametrize("fisher", [False, True], ids=["hessian", "fisher"])
def test_loss_second_order_and_kernel(name, fisher):
    cls, lfun = LOSS_CASES[name]
    s = cls()
    s.bind(bk, None)
    rng = np.random.default_rng(4)
    n, k = 5, 3
    F = rng.uniform(0.1, 0.9, (n, k)) if name == "bce" else rng.standard_normal((n, k))
    Y = rng.uniform(0, 1, (n, k))          # soft targets: sum_j y_j != 1 for softmax-CE
    _, ctx = s.forward(F, Y)
    Hs = np.stack([torch.func.hessian(lfun, argnums=0)(torch.tensor(F[e]), torch.tensor(Y[e])).numpy()
                   for e in range(n)])
    assert np.allclose(s.hess_zz(ctx)[:, 0], Hs, rtol=1e-12, atol=TOL)
    D = s.fisher_f(ctx) if fisher else Hs
    V = rng.standard_normal((n, k))
    ref = 0.7 / n * np.einsum("nkj,nj->nk", D, V)
    assert np.allclose(s.hvp_z(ctx, 0.7, V, fisher=fisher), ref, rtol=1e-12, atol=TOL)
    assert np.allclose(s.hvp_z_many(ctx, 0.7, V[None], fisher=fisher)[0], ref, rtol=1e-12, atol=TOL)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_backend_act_d2_mul(kind, dtype):
    rng = np.random.default_rng(5)
    S = bk.act_fwd(kind, rng.standard_normal((7, 5)).astype(dtype))
    B, V = rng.standard_normal((2, 7, 5)).astype(dtype)
    out = bk.act_d2_mul(kind, S, B, V)
    assert out.dtype == dtype
    ref = bk.act_d2(kind, S).astype(np.float64) * B * V
    assert np.allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-14, atol=1e-7)
    x, y = rng.standard_normal((2, 11)).astype(dtype)
    assert np.array_equal(bk.mul(x, y), x * y)
