"""Gauss-Newton, Fisher (exact, Monte-Carlo, empirical), the outer-product matrix
of thesis 3.4, block diagonals, gvp / fvp and the size guard, each against its
definition built here from torch autograd Jacobians (tests/torch_ref.py)."""
import itertools

import numpy as np
import pytest
import torch

from tinynet import curvature as cv
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.models import mlp
from torch_ref import theta_of, torch_loss_fn, torch_loss_of_output, torch_output_fn

TOL = 1e-10


def make(loss, k=3, n=8, depth=3, act="tanh", seed=0):
    cls = {"mse": MSELoss, "bce": BCELoss, "softmax_ce": SoftmaxCrossEntropyLoss}[loss]
    net = mlp([4] + [5] * (depth - 1) + [k], act, cls(), out_activation="sigmoid" if loss == "bce" else None,
              dtype=np.float64, seed=seed, alpha=3.0)
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((n, 4))
    if loss == "softmax_ce":
        Y = rng.integers(0, k, n)
    elif loss == "bce":
        Y = (rng.uniform(size=(n, k)) < 0.5).astype(float)
    else:
        Y = rng.standard_normal((n, k))
    return net, X, Y


def jac(net, X):
    """Autograd J (n, k, P) and outputs F (n, k)."""
    th = theta_of(net)
    out = torch_output_fn(net, X)
    return torch.func.jacrev(out)(th).numpy(), out(th).detach().numpy()


def loss_hessian_wrt_output(net, F, Y):
    """Per-example d2 l_i / dF_i^2 by autograd of the batch-mean loss (x n)."""
    n, k = F.shape
    L = torch_loss_of_output(net.loss_stage, Y, k)
    Hf = torch.func.hessian(L)(torch.tensor(F)).numpy().reshape(n * k, n * k) * n
    return np.stack([Hf[i * k:(i + 1) * k, i * k:(i + 1) * k] for i in range(n)])


def per_example_grads(net, X, Y):
    th = theta_of(net)
    return np.stack([torch.func.grad(torch_loss_fn(net, X[i:i + 1], Y[i:i + 1]))(th).numpy()
                     for i in range(X.shape[0])])


def rel(A, B):
    return np.abs(A - B).max() / np.abs(B).max()


LOSS_IDS = ["mse", "bce", "softmax_ce"]


@pytest.mark.parametrize("loss", LOSS_IDS)
def test_gauss_newton_is_mean_JT_D_J(loss):
    net, X, Y = make(loss)
    J, F = jac(net, X)
    D = loss_hessian_wrt_output(net, F, Y)
    G_ref = np.einsum("nkp,nkj,njq->pq", J, D, J) / X.shape[0]
    G = cv.gauss_newton(net, X, Y)
    assert rel(G, G_ref) <= TOL
    assert rel(cv.output_jacobian(net, X), J) <= TOL


def fisher_definition(net, X):
    """E_x E_{y ~ p(y|x)} [g g^T], g = grad_theta -log p(y|x), the expectation
    over y exact: enumerated for the discrete outputs; for MSE (l = -log N(y; f, I/2)
    + const) E[g g^T] = J^T E[4 (y-f)(y-f)^T] J = J^T (2 I) J."""
    J, F = jac(net, X)
    n, k, P = J.shape
    th = theta_of(net)
    Fm = np.zeros((P, P))
    loss = net.loss_stage
    if isinstance(loss, MSELoss):
        return np.einsum("nkp,nkq->pq", J, J) * 2 / n
    for i in range(n):
        if isinstance(loss, SoftmaxCrossEntropyLoss):
            p = np.exp(F[i] - F[i].max())
            p /= p.sum()
            outcomes = [(np.array([c]), p[c]) for c in range(k)]
        else:   # independent Bernoulli outputs
            outcomes = [(np.array([y], float), np.prod(np.where(np.array(y), F[i], 1 - F[i])))
                        for y in itertools.product([0, 1], repeat=k)]
        for y, prob in outcomes:
            g = torch.func.grad(torch_loss_fn(net, X[i:i + 1], y))(th).numpy()
            Fm += prob * np.outer(g, g)
    return Fm / n


@pytest.mark.parametrize("loss", LOSS_IDS)
def test_exact_fisher_matches_its_definition(loss):
    net, X, _ = make(loss, k=2 if loss == "bce" else 3, n=5)
    F_ref = fisher_definition(net, X)
    assert rel(cv.fisher(net, X, "exact"), F_ref) <= TOL


@pytest.mark.parametrize("loss", LOSS_IDS)
def test_mc_fisher_is_seeded_and_converges(loss):
    net, X, _ = make(loss, n=4)
    F = cv.fisher(net, X, "exact")
    A = cv.fisher(net, X, "mc", n_samples=3, seed=5)
    assert np.array_equal(A, cv.fisher(net, X, "mc", n_samples=3, seed=5))
    assert not np.array_equal(A, cv.fisher(net, X, "mc", n_samples=3, seed=6))
    M = cv.fisher(net, X, "mc", n_samples=4000, seed=0)
    assert rel(M, F) <= 0.1          # Monte-Carlo error ~ 1/sqrt(4000) of the scale


@pytest.mark.parametrize("loss", LOSS_IDS)
def test_empirical_fisher_and_outer_product_are_mean_g_gT(loss):
    net, X, Y = make(loss)
    g = per_example_grads(net, X, Y)
    ref = g.T @ g / X.shape[0]
    assert rel(cv.outer_product(net, X, Y), ref) <= TOL
    assert rel(cv.fisher(net, X, "empirical", Y=Y), ref) <= TOL
    assert rel(cv.per_example_gradients(net, X, Y), g) <= TOL


def test_outer_product_equals_gn_for_a_probability_output_with_log_loss():
    # one sigmoid output = the probability vector (f, 1-f); BCE on 0/1 targets is
    # -log f_y: thesis 3.4 gives G_i = g_i g_i^T example by example
    net, X, Y = make("bce", k=1, n=6)
    for i in range(6):
        Gi = cv.gauss_newton(net, X[i:i + 1], Y[i:i + 1])
        Oi = cv.outer_product(net, X[i:i + 1], Y[i:i + 1])
        assert rel(Oi, Gi) <= 1e-12
    assert rel(cv.outer_product(net, X, Y), cv.gauss_newton(net, X, Y)) <= 1e-12


@pytest.mark.parametrize("loss,k", [("softmax_ce", 3), ("bce", 3), ("mse", 2)],
                         ids=["through-softmax-logits", "bce-3-outputs", "mse"])
def test_outer_product_differs_from_gn_otherwise(loss, k):
    net, X, Y = make(loss, k=k, n=1)
    G, O = cv.gauss_newton(net, X, Y), cv.outer_product(net, X, Y)
    assert rel(O, G) > 0.05
    # rank: g g^T is rank one, G_i is rank min(k, P) (k-1 through the softmax)
    assert np.linalg.matrix_rank(O, tol=1e-10 * np.abs(O).max()) == 1
    assert np.linalg.matrix_rank(G, tol=1e-10 * np.abs(G).max()) >= 2


@pytest.mark.parametrize("loss", LOSS_IDS)
def test_gvp_fvp_hvp_match_dense(loss):
    net, X, Y = make(loss, n=6)
    rng = np.random.default_rng(0)
    G, F, H = cv.gauss_newton(net, X, Y), cv.fisher(net, X), cv.hessian(net, X, Y)
    for _ in range(3):
        v = rng.standard_normal(net.n_params)
        assert rel(cv.gvp(net, X, Y, v), G @ v) <= TOL
        assert rel(cv.fvp(net, X, None, v), F @ v) <= TOL
        assert rel(cv.hvp(net, X, Y, v), H @ v) <= TOL


def test_block_diagonal_returns_the_layer_blocks():
    net, X, Y = make("mse")
    H = cv.hessian(net, X, Y)
    blocks = cv.block_diagonal(H, net)
    slices = [s for _, s in net.slices()]
    assert len(blocks) == len(slices) == 3
    for B, s in zip(blocks, slices):
        assert np.array_equal(B, H[s, s])
    with pytest.raises(ValueError, match="expected a"):
        cv.block_diagonal(H[:-1, :-1], net)


def test_size_guard_refuses_and_points_to_matrix_free():
    net, X, Y = make("mse")
    P = net.n_params
    assert cv.check_dense(net) == 2 * 8 * P * P
    for fn in (lambda: cv.hessian(net, X, Y, max_bytes=1000),
               lambda: cv.gauss_newton(net, X, Y, max_bytes=1000),
               lambda: cv.fisher(net, X, max_bytes=1000),
               lambda: cv.matrices(net, X[0], Y[0], max_bytes=1000)):
        with pytest.raises(cv.DenseTooLarge, match=rf"{P:,} parameters.*hvp / gvp / fvp"):
            fn()
    big = mlp([784, 1000, 10], "tanh", MSELoss(), dtype=np.float32)
    with pytest.raises(ValueError, match="795,010 parameters"):
        cv.check_dense(big)


def test_size_guard_reads_the_environment(monkeypatch):
    net, _, _ = make("mse")
    monkeypatch.setenv("TINYNET_DENSE_MAX_BYTES", "100")
    with pytest.raises(cv.DenseTooLarge):
        cv.check_dense(net)
    monkeypatch.setenv("TINYNET_DENSE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="number of bytes"):
        cv.check_dense(net)


def test_fisher_checks_its_arguments():
    net, X, Y = make("mse")
    with pytest.raises(ValueError, match="kind must be"):
        cv.fisher(net, X, "diagonal")
    with pytest.raises(ValueError, match="needs the targets"):
        cv.fisher(net, X, "empirical")
    with pytest.raises(ValueError, match="n_samples"):
        cv.fisher(net, X, "mc", n_samples=0)
