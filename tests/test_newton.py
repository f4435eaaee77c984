"""Newton-family optimizers (thesis chapter 3) against dense solves of their
definitions, with the curvature matrices built in this file from torch
autograd (float64): Hessian = torch.func.hessian of the batch loss;
GN = mean_i J_i^T D_i J_i with J_i from torch.func.jacrev and D_i = d2l/dF2
written from the loss's formula; exact Fisher = E_{y ~ p(y|x_i)} of the
outer product of d(-log p)/dθ, written as that expectation."""
import numpy as np
import pytest
import torch

import tinynet as tn
from tinynet.models import build_model
from tinynet.optim.natural import NaturalGradient
from tinynet.optim.newton import GaussNewton, Newton, block_newton_direction, newton_direction
from problems import NETS, batch, ce_net, mse_net  # noqa: F401
from torch_ref import theta_of, torch_loss_fn, torch_output_fn


# -- problems --------------------------------------------------------------------------


# -- dense references from the definitions ---------------------------------------------

def ref_grad(net, X, Y):
    th = theta_of(net).requires_grad_(True)
    torch_loss_fn(net, X, Y)(th).backward()
    return th.grad.numpy()


def ref_hessian(net, X, Y):
    return torch.func.hessian(torch_loss_fn(net, X, Y))(theta_of(net)).numpy()


def ref_output_jacobian(net, X):
    return torch.func.jacrev(torch_output_fn(net, X))(theta_of(net)).numpy()      # (n, k, p)


def ref_D(net, X):
    """Per-example d2l/dF2 (n, k, k): 2I for MSE (l = ||f - y||^2);
    diag(s) - s s^T for softmax cross-entropy (thesis appendix A)."""
    F = torch_output_fn(net, X)(theta_of(net)).numpy()
    n, k = F.shape
    if isinstance(net.loss_stage, tn.MSELoss):
        return np.broadcast_to(2 * np.eye(k), (n, k, k))
    s = np.exp(F - F.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    return np.einsum("nk,kj->nkj", s, np.eye(k)) - np.einsum("nk,nj->nkj", s, s)


def ref_gn(net, X, Y):
    J = ref_output_jacobian(net, X)
    return np.einsum("nkp,nkj,njq->pq", J, ref_D(net, X), J) / len(X)


def ref_fisher(net, X):
    """E_x E_{y~p(y|x)} [u u^T], u = J^T dl/dF the score of -log p(y|x):
    softmax: p = s, dl/dF = s - e_c, expectation as the sum over classes c;
    MSE: l = ||f - y||^2 = -log N(y; f, I/2) + const, dl/dF = 2 (f - y),
    E[4 (f - y)(f - y)^T] = 4 * (1/2) I (the Gaussian's covariance)."""
    J = ref_output_jacobian(net, X)
    n, k, _ = J.shape
    if isinstance(net.loss_stage, tn.MSELoss):
        M = np.broadcast_to(4 * 0.5 * np.eye(k), (n, k, k))
    else:
        F = torch_output_fn(net, X)(theta_of(net)).numpy()
        s = np.exp(F - F.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        M = np.zeros((n, k, k))
        for c in range(k):
            u = s - np.eye(k)[c]
            M += s[:, c, None, None] * np.einsum("nk,nj->nkj", u, u)
    return np.einsum("nkp,nkj,njq->pq", J, M, J) / n


REFS = {"hessian": ref_hessian, "gn": ref_gn, "fisher": lambda net, X, Y: ref_fisher(net, X)}


def taken_step(opt, X, Y):
    x0 = opt.net.get_flat()
    opt.step(X, Y)
    return opt.net.get_flat() - x0


# -- newton_direction -------------------------------------------------------------------

def test_newton_direction_is_damped_solve():
    r = np.random.default_rng(0)
    A = r.standard_normal((6, 6))
    C, g = A @ A.T, r.standard_normal(6)
    d, info = newton_direction(g, C, eps=0.3)
    np.testing.assert_allclose(d, -np.linalg.solve(C + 0.3 * np.eye(6), g), rtol=1e-12)
    assert info["pd"] and info["eps_used"] == 0.3 and info["damping_increases"] == 0


def test_newton_direction_non_pd_raises_damping_geometrically():
    C, g = np.diag([1.0, -2.0, 0.5]), np.array([1.0, 1.0, 1.0])
    d, info = newton_direction(g, C, eps=0.1, growth=10.0)
    # 0.1 -> 1 -> 10: the first damping above 2 = -lambda_min
    assert not info["pd"] and info["eps_used"] == pytest.approx(10.0) and info["damping_increases"] == 2
    assert info["min_eig"] == pytest.approx(-2.0)
    np.testing.assert_allclose(d, -g / (np.diag(C) + 10.0), rtol=1e-12)
    assert g @ d < 0                                          # a descent direction


def test_newton_direction_checks_shapes():
    with pytest.raises(ValueError, match="need g \\(p,\\) and C \\(p, p\\)"):
        newton_direction(np.ones(3), np.eye(2))


def test_block_direction_solves_each_block():
    r = np.random.default_rng(1)
    A = r.standard_normal((7, 7))
    C, g = A @ A.T + np.eye(7), r.standard_normal(7)
    sl = [slice(0, 3), slice(3, 7)]
    d, info = block_newton_direction(g, C, sl, eps=0.2)
    assert info["pd"]
    for s in sl:
        np.testing.assert_allclose(d[s], -np.linalg.solve(C[s, s] + 0.2 * np.eye(s.stop - s.start), g[s]),
                                   rtol=1e-12)


def test_block_direction_damps_only_the_indefinite_block():
    C = np.zeros((4, 4))
    C[:2, :2] = np.diag([2.0, 1.0])
    C[2:, 2:] = np.diag([1.0, -0.5])
    C[0, 3] = C[3, 0] = 5.0                                       # off-block: ignored
    g = np.ones(4)
    d, info = block_newton_direction(g, C, [slice(0, 2), slice(2, 4)], eps=0.1, growth=10.0)
    assert not info["pd"] and info["eps_used"] == pytest.approx(1.0) and info["min_eig"] == pytest.approx(-0.5)
    np.testing.assert_allclose(d[:2], -g[:2] / (np.array([2.0, 1.0]) + 0.1), rtol=1e-12)   # PD block: eps
    np.testing.assert_allclose(d[2:], -g[2:] / (np.array([1.0, -0.5]) + 1.0), rtol=1e-12)  # raised to 1


# -- Newton on a quadratic -------------------------------------------------------------

def test_full_newton_step_lands_on_minimizer_of_quadratic():
    """One Linear layer + MSE: the loss is quadratic in θ; lr 1, eps 0."""
    net = tn.Sequential([tn.Linear(3, 2)], tn.MSELoss(), dtype=np.float64, seed=4)
    r = np.random.default_rng(2)
    X, Y = r.standard_normal((20, 3)), r.standard_normal((20, 2))
    Newton(net, lr=1.0, curvature="hessian", eps=0.0).step(X, Y)
    A = np.hstack([X, np.ones((20, 1))])
    Wb = np.linalg.lstsq(A, Y, rcond=None)[0]                  # (4, 2): rows W^T then b
    x_star = np.concatenate([Wb[:3].T.ravel(order="F"), Wb[3]])
    np.testing.assert_allclose(net.get_flat(), x_star, rtol=1e-10, atol=1e-12)


# -- each step equals a dense solve of its definition -----------------------------------

@pytest.mark.parametrize("structure", ["full", "block"])
@pytest.mark.parametrize("curvature", ["hessian", "gn", "fisher"])
@pytest.mark.parametrize("netname", list(NETS))
def test_newton_step_equals_dense_solve(netname, curvature, structure):
    net = NETS[netname]()
    X, Y = batch(net)
    g, C = ref_grad(net, X, Y), REFS[curvature](net, X, Y)
    C_used = C.copy()
    if structure == "block":
        mask = np.zeros_like(C, dtype=bool)
        for _, s in net.slices():
            mask[s, s] = True
        C_used[~mask] = 0.0                                      # solve each block alone
    # damping above -lambda_min so that the step is the plain solve (the fallback is tested below)
    lr, eps = 0.7, 0.05 + 1.1 * max(0.0, -np.linalg.eigvalsh(C_used)[0])
    opt = Newton(net, lr=lr, curvature=curvature, structure=structure, eps=eps)
    dx = taken_step(opt, X, Y)
    assert opt.metrics["pd"] == 1.0 and opt.metrics["eps_used"] == eps
    expect = -lr * np.linalg.solve(C_used + eps * np.eye(len(g)), g)
    np.testing.assert_allclose(dx, expect, rtol=1e-10, atol=1e-12)


def test_gn_optimizer_is_newton_with_gn():
    net = mse_net()
    X, Y = batch(net)
    g, G = ref_grad(net, X, Y), ref_gn(net, X, Y)
    dx = taken_step(GaussNewton(net, lr=0.5, eps=1e-3), X, Y)
    np.testing.assert_allclose(dx, -0.5 * np.linalg.solve(G + 1e-3 * np.eye(len(g)), g), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("structure", ["full", "block"])
@pytest.mark.parametrize("netname", list(NETS))
def test_natural_gradient_closed_form(netname, structure):
    """Thesis 3.2.2: dθ = -λ (I + (λ/ε) F)^{-1} g."""
    net = NETS[netname]()
    X, Y = batch(net)
    g, F = ref_grad(net, X, Y), ref_fisher(net, X)
    lam, eps = 0.3, 0.02
    if structure == "block":
        mask = np.zeros_like(F, dtype=bool)
        for _, s in net.slices():
            mask[s, s] = True
        F = np.where(mask, F, 0.0)
    dx = taken_step(NaturalGradient(net, lr=lam, eps=eps, structure=structure), X, Y)
    np.testing.assert_allclose(dx, -lam * np.linalg.solve(np.eye(len(g)) + (lam / eps) * F, g),
                               rtol=1e-10, atol=1e-12)


def test_mse_gn_and_fisher_steps_coincide():
    """Thesis 3.3.1, table 3.III: for the squared error D is the same for GN and FIM."""
    X, Y = batch(mse_net())
    steps = []
    for curvature in ("gn", "fisher"):
        net = mse_net()
        steps.append(taken_step(Newton(net, lr=1.0, curvature=curvature, eps=1e-3), X, Y))
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-10, atol=1e-13)


def test_non_pd_hessian_is_reported_and_handled():
    """At a random initialization the cross-entropy Hessian of a tanh net is
    indefinite (3.1.1: saddle points): no crash, pd = 0 reported, the step
    solves with the increased damping, which exceeds -lambda_min."""
    net = ce_net(seed=3)
    X, Y = batch(net, n=4)
    H, g = ref_hessian(net, X, Y), ref_grad(net, X, Y)
    lam_min = np.linalg.eigvalsh(H)[0]
    assert lam_min < 0, "test premise: the Hessian must be indefinite here"
    opt = Newton(net, lr=1.0, curvature="hessian", eps=0.0)
    dx = taken_step(opt, X, Y)
    m = opt.metrics
    assert m["pd"] == 0.0 and m["damping_increases"] > 0
    assert m["min_eig"] == pytest.approx(lam_min, rel=1e-8)
    assert m["eps_used"] > -lam_min
    np.testing.assert_allclose(dx, -np.linalg.solve(H + m["eps_used"] * np.eye(len(g)), g), rtol=1e-10)
    assert np.all(np.isfinite(net.get_flat()))


def test_dense_methods_refuse_large_nets_and_suggest_hf():
    net = build_model("mnist-autoencoder")
    for make in (lambda: Newton(net, 1.0), lambda: NaturalGradient(net, 1.0, 1.0)):
        with pytest.raises(ValueError, match="hf"):
            make()


@pytest.mark.parametrize("bad", [dict(curvature="diag"), dict(structure="kfac"), dict(eps=-1.0),
                                 dict(fisher_kind="true")], ids=lambda d: next(iter(d)))
def test_newton_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        Newton(mse_net(), 1.0, **bad)


def ref_empirical_fisher(net, X, Y):
    """mean_i g_i g_i^T, g_i the gradient of example i's loss (torch, one example at a time)."""
    G = np.stack([ref_grad(net, X[i:i + 1], np.asarray(Y)[i:i + 1]) for i in range(len(X))])
    return G.T @ G / len(X)


@pytest.mark.parametrize("netname", list(NETS))
def test_empirical_fisher_step(netname):
    net = NETS[netname]()
    X, Y = batch(net)
    g, F = ref_grad(net, X, Y), ref_empirical_fisher(net, X, Y)
    dx = taken_step(Newton(net, lr=0.5, curvature="fisher", fisher_kind="empirical", eps=0.01), X, Y)
    np.testing.assert_allclose(dx, -0.5 * np.linalg.solve(F + 0.01 * np.eye(len(g)), g), rtol=1e-10, atol=1e-12)


def test_mc_fisher_step_uses_seed_plus_update_count():
    """The sampled Fisher is tinynet.curvature's (tested there); here: the step
    solves with the matrix drawn with seed + k, k the update count."""
    from tinynet.curvature import fisher
    net = ce_net()
    X, Y = batch(net)
    opt = Newton(net, lr=1.0, curvature="fisher", fisher_kind="mc", eps=0.01, seed=7, fisher_samples=2)
    opt.step(X, Y)
    x1 = net.get_flat()
    g = ref_grad(net, X, Y)
    F = fisher(net, X, kind="mc", n_samples=2, seed=8)
    dx = taken_step(opt, X, Y)
    np.testing.assert_allclose(dx, -np.linalg.solve(F + 0.01 * np.eye(len(g)), g), rtol=1e-10, atol=1e-12)
    assert not np.allclose(F, fisher(net, X, kind="mc", n_samples=2, seed=7))   # a new draw each update
    assert np.all(np.isfinite(x1))
