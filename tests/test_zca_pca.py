"""ZCAWhitening and PCADenoising (seed 004) against scipy / numpy (forward) and torch
autograd of the same formula (float64): vjp and jvp for each backward rule, on
vector rows and image rows, the running estimates and evaluation mode, the
Jacobians, a small network that trains, and the errors."""
import numpy as np
import pytest
import scipy.linalg
import torch

from ed_ref import torch_stage
from tinynet.backend import get_backend
from tinynet.ed import EDError
from tinynet.layers import Linear, PCADenoising, Tanh, ZCAWhitening
from tinynet.losses import SoftmaxCrossEntropyLoss
from tinynet.network import Sequential

torch.set_default_dtype(torch.float64)
EPS = 1e-4
SHAPES = [   # (n, C, G, in_shape)
    pytest.param((7, 4, 2, (4,)), id="vec-c4-g2"),
    pytest.param((3, 4, 1, (4, 2, 2)), id="img-c4-g1-2x2"),
]
KINDS = [pytest.param("zca", id="zca"), pytest.param("pca", id="pca")]
RULES = [pytest.param(r, id=r) for r in ("svd", "pi", "hybrid")]


def make(kind, C, G, in_shape, rule="hybrid", K=19, training=True):
    st = ZCAWhitening(C, groups=G, eps=EPS, backward=rule, pi_iters=K) if kind == "zca" else \
        PCADenoising(C, C // G - 1, groups=G, eps=EPS, backward=rule, pi_iters=K)
    st.set_input_shape(in_shape)
    st.bind(get_backend("cpu"), np.zeros(0))
    st.training = training
    return st


def data(rng, n, C, P):
    """Rows with correlated channels and well separated group spectra."""
    A = rng.standard_normal((C, C)) * 0.5 + np.diag(np.linspace(3, 1, C))
    X = rng.standard_normal((n * P, C)) @ A.T + rng.standard_normal(C)
    return X.reshape(n, P, C).transpose(0, 2, 1).reshape(n, C * P)


def group_samples(Z, C, P):
    n = Z.shape[0]
    return Z.reshape(n, C, P).transpose(1, 0, 2).reshape(C, n * P)


@pytest.mark.parametrize("shape", SHAPES)
def test_zca_forward_against_scipy_and_whitens(shape):
    n, C, G, in_shape = shape
    P = int(np.prod(in_shape[1:]))
    rng = np.random.default_rng(0)
    Z = data(rng, n, C, P)
    st = make("zca", C, G, in_shape)
    out, _ = st.forward(Z)
    X, Y = group_samples(Z, C, P), group_samples(out, C, P)
    d = C // G
    for g in range(G):
        x = X[g * d:(g + 1) * d]
        xc = x - x.mean(1, keepdims=True)
        S = xc @ xc.T / xc.shape[1] + EPS * np.eye(d)
        ref = np.real(scipy.linalg.fractional_matrix_power(S, -0.5)) @ xc
        np.testing.assert_allclose(Y[g * d:(g + 1) * d], ref, rtol=1e-9, atol=1e-10)
        y = Y[g * d:(g + 1) * d]
        cov = y @ y.T / y.shape[1]
        np.testing.assert_allclose(cov, np.eye(d) - EPS * np.linalg.inv(S), atol=1e-10)
        assert np.abs(cov - np.eye(d)).max() <= EPS / np.linalg.eigvalsh(S).min()


@pytest.mark.parametrize("shape", SHAPES)
def test_pca_forward_against_numpy(shape):
    n, C, G, in_shape = shape
    P = int(np.prod(in_shape[1:]))
    rng = np.random.default_rng(1)
    Z = data(rng, n, C, P)
    st = make("pca", C, G, in_shape)
    out, _ = st.forward(Z)
    X, Y = group_samples(Z, C, P), group_samples(out, C, P)
    d, k = C // G, C // G - 1
    for g in range(G):
        x = X[g * d:(g + 1) * d]
        mu = x.mean(1, keepdims=True)
        S = (x - mu) @ (x - mu).T / x.shape[1] + EPS * np.eye(d)
        U = np.linalg.eigh(S)[1][:, ::-1][:, :k]
        np.testing.assert_allclose(Y[g * d:(g + 1) * d], U @ U.T @ (x - mu) + mu, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_vjp_jvp_against_torch_autograd(shape, kind, rule):
    n, C, G, in_shape = shape
    P = int(np.prod(in_shape[1:]))
    rng = np.random.default_rng(2)
    Z = data(rng, n, C, P)
    K = 5
    st = make(kind, C, G, in_shape, rule, K)
    V0 = np.random.default_rng(0).standard_normal((G, st.r, C // G))     # the stage's first draw (seed 0)
    out, ctx = st.forward(Z)

    def f(z):
        return torch_stage(z, C, G, P, EPS, kind, rule, K, st.r, V0)
    zt = torch.tensor(Z, requires_grad=True)
    ref = f(zt)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-9, atol=1e-10)
    b = rng.standard_normal(Z.shape)
    gz, = torch.autograd.grad((ref * torch.tensor(b)).sum(), zt)
    np.testing.assert_allclose(st.vjp(ctx, b), gz.numpy(), rtol=1e-8, atol=1e-9)
    assert st.vjp(ctx, b, None, need_b_in=False) is None
    dz = rng.standard_normal(Z.shape)
    _, tang = torch.autograd.functional.jvp(f, (torch.tensor(Z),), (torch.tensor(dz),))   # double-vjp trick
    np.testing.assert_allclose(st.jvp(ctx, dz, None), tang.numpy(), rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(st.jvp(ctx, None, None), np.zeros(Z.shape))


@pytest.mark.parametrize("kind", KINDS)
def test_running_estimates_and_evaluation_mode(kind):
    rng = np.random.default_rng(3)
    n, C, G, in_shape = 5, 4, 2, (4, 1, 2)
    st = make(kind, C, G, in_shape)
    rm, rW = np.zeros(C), np.broadcast_to(np.eye(2), (2, 2, 2)).copy()
    for step in range(3):
        Z = data(rng, n, C, 2) * (step + 1)
        _, ctx = st.forward(Z)
        mu = group_samples(Z, C, 2).mean(1)
        rm = 0.9 * rm + 0.1 * mu
        rW = 0.9 * rW + 0.1 * ctx[2]
    np.testing.assert_allclose(st.running_mean, rm, rtol=1e-13)
    np.testing.assert_allclose(st.running_W, rW, rtol=1e-13)
    st.training = False
    Z = data(rng, 2, C, 2)
    out, ctx = st.forward(Z)
    X = group_samples(Z, C, 2) - rm[:, None]
    ref = np.concatenate([rW[g] @ X[2 * g:2 * g + 2] for g in range(G)])
    if kind == "pca":
        ref = ref + rm[:, None]
    np.testing.assert_allclose(group_samples(out, C, 2), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.running_mean, rm, rtol=1e-13)     # untouched in evaluation
    # evaluation: per-example Jacobian, vjp and jvp are its products
    J = st.jac_z(ctx)
    b = rng.standard_normal(Z.shape)
    np.testing.assert_allclose(st.vjp(ctx, b), np.einsum("nij,ni->nj", J, b), rtol=1e-12)
    np.testing.assert_allclose(st.jvp(ctx, b, None), np.einsum("nij,nj->ni", J, b), rtol=1e-12)
    assert st.jac_x(ctx).shape == (2, 8, 0)


def test_training_mode_jacobians():
    rng = np.random.default_rng(4)
    n, C, G = 4, 4, 2
    st = make("zca", C, G, (C,))
    Z = data(rng, n, C, 1)
    _, ctx = st.forward(Z)
    with pytest.raises(NotImplementedError, match=r"ZCAWhitening\(4, groups=2, backward='hybrid'\) in "
                                                  r"training mode couples the examples"):
        st.jac_z(ctx)
    Jt = torch.autograd.functional.jacobian(
        lambda z: torch_stage(z, C, G, 1, EPS, "zca", "hybrid", 19, 2), torch.tensor(Z)).numpy()
    np.testing.assert_allclose(st.jac_z_batch(ctx), Jt, rtol=1e-8, atol=1e-9)


def test_float32_matches_float64():
    rng = np.random.default_rng(5)
    Z = data(rng, 16, 4, 1)
    b = rng.standard_normal(Z.shape)
    res = []
    for dt in (np.float64, np.float32):
        st = make("zca", 4, 1, (4,))
        out, ctx = st.forward(Z.astype(dt))
        g = st.vjp(ctx, b.astype(dt))
        assert out.dtype == dt and g.dtype == dt
        res.append((out, g))
    np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-3, atol=1e-3 * np.abs(res[0][1]).max())


@pytest.mark.parametrize("stage", [
    pytest.param(lambda: ZCAWhitening(6, groups=2), id="zca"),
    pytest.param(lambda: PCADenoising(6, 2, groups=2), id="pca"),
])
def test_small_network_trains(stage):
    """Linear -> ZCA / PCA -> Tanh -> Linear, softmax cross-entropy, 60 gradient steps."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((64, 4))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 1)
    net = Sequential([Linear(4, 6), stage(), Tanh(), Linear(6, 3)], SoftmaxCrossEntropyLoss(),
                     dtype=np.float64, seed=0)
    first = net.loss(X, y)
    th = net.get_flat()
    for _ in range(60):
        net.set_flat(th)
        th = th - 0.3 * net.gradient(X, y)
    net.set_flat(th)
    last = net.loss(X, y)
    assert np.isfinite(last) and last < 0.6 * first, (first, last)


def test_svd_rule_with_repeated_eigenvalues_is_a_clear_error():
    """A batch with fewer samples than channels: Sigma's eigenvalue eps is repeated, so
    the analytic gradient is refused; the hybrid's is finite."""
    rng = np.random.default_rng(7)
    Z = rng.standard_normal((3, 6))
    b = rng.standard_normal(Z.shape)
    st = make("zca", 6, 1, (6,), "svd")
    _, ctx = st.forward(Z)
    with pytest.raises(EDError, match=r"analytic ED gradient \(backward='svd'\) refused"):
        st.vjp(ctx, b)
    st = make("zca", 6, 1, (6,), "hybrid")
    _, ctx = st.forward(Z)
    assert np.all(np.isfinite(st.vjp(ctx, b)))


@pytest.mark.parametrize("build, match", [
    pytest.param(lambda: ZCAWhitening(6, groups=4), r"groups must be a positive divisor of the 6 channels", id="groups"),
    pytest.param(lambda: ZCAWhitening(0), r"ZCAWhitening\(0\): the number of channels", id="channels"),
    pytest.param(lambda: PCADenoising(6, 4, groups=2), r"k = 4 eigenvectors per group must lie in 1..3", id="k"),
    pytest.param(lambda: ZCAWhitening(4, backward="eig"), r"backward must be one of 'svd', 'pi', 'hybrid'", id="rule"),
    pytest.param(lambda: ZCAWhitening(4).set_input_shape((3, 2, 2)),
                 r"expects 4 channels, receives 3 \(input shape \(3, 2, 2\)\)", id="channel-mismatch"),
    pytest.param(lambda: Sequential([Linear(3, 5), ZCAWhitening(4)], SoftmaxCrossEntropyLoss()),
                 r"stage 1 \(ZCAWhitening\(4, groups=1, backward='hybrid'\)\) cannot take its input", id="in-net"),
])
def test_construction_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_forward_errors():
    st = make("zca", 2, 1, (2,))
    with pytest.raises(ValueError, match=r"input must have shape \(n, 2\)"):
        st.forward(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"at least 2 samples per channel in training mode"):
        st.forward(np.zeros((1, 2)))
