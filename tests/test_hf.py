"""Truncated CG (tinynet.optim.cg) against dense solves, and Hessian-free
optimization against the dense damped Gauss-Newton / Hessian step computed
from torch autograd in the test (float64)."""
import numpy as np
import pytest
import torch

import tinynet as tn
from tinynet.models import build_model
from tinynet.optim.cg import conjugate_gradient
from tinynet.optim.hessian_precond import HessianPreconditioner
from tinynet.optim.hf import HessianFree
from problems import NETS, batch, ce_net, mse_net  # noqa: F401
from torch_ref import theta_of, torch_loss_fn, torch_output_fn

rng = np.random.default_rng(11)


def spd(p, cond=100.0, seed=0):
    r = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(r.standard_normal((p, p)))
    return (Q * np.geomspace(1.0, cond, p)) @ Q.T


# -- conjugate gradient --------------------------------------------------------------

@pytest.mark.parametrize("p", [1, 5, 30], ids=lambda p: f"p{p}")
def test_cg_solves_spd_system(p):
    A, b = spd(p, seed=p), rng.standard_normal(p)
    res = conjugate_gradient(lambda v: A @ v, b, max_iters=3 * p, tol=1e-14)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-10, atol=1e-12)
    assert res.stop == "tol" and res.iters <= 3 * p
    assert res.phi == pytest.approx(0.5 * res.x @ A @ res.x - b @ res.x, rel=1e-12)


def test_cg_iteration_cap_and_monotone_phi():
    A, b = spd(40, cond=1e4, seed=1), rng.standard_normal(40)
    res = conjugate_gradient(lambda v: A @ v, b, max_iters=7, tol=0.0, keep_iterates=True)
    assert res.iters == 7 and res.stop == "max_iters"
    # kept at ceil(1.3^j): 1, 2, 3, 4, 5, 7 (6 is skipped: ceil(1.3^7) = 7)
    assert [i for i, _ in res.iterates] == [1, 2, 3, 4, 5, 7]
    phis = [0.5 * x @ A @ x - b @ x for _, x in res.iterates]
    assert all(a > c for a, c in zip(phis, phis[1:]))        # CG decreases phi at every iteration


def test_cg_warm_start_at_solution_stops_at_once():
    A, b = spd(10, seed=2), rng.standard_normal(10)
    x = np.linalg.solve(A, b)
    res = conjugate_gradient(lambda v: A @ v, b, x0=x, max_iters=50, tol=1e-8)
    assert res.iters == 1 and res.stop == "tol"                # one product for the residual


def test_cg_stops_on_negative_curvature():
    A = np.diag([1.0, -1.0, 2.0])
    b = np.array([1.0, 1.0, 0.0])
    res = conjugate_gradient(lambda v: A @ v, b, max_iters=10)
    assert res.negative_curvature and res.stop == "negative_curvature"
    assert np.all(np.isfinite(res.x))


def test_cg_progress_criterion_stops_early():
    A, b = spd(200, cond=1e6, seed=3), rng.standard_normal(200)
    full = conjugate_gradient(lambda v: A @ v, b, max_iters=200, tol=0.0)
    early = conjugate_gradient(lambda v: A @ v, b, max_iters=200, tol=0.0, progress_tol=5e-3)
    assert early.stop == "progress" and early.iters < full.iters


def test_cg_checks_shapes():
    with pytest.raises(ValueError, match="b must be a vector"):
        conjugate_gradient(lambda v: v, np.ones((2, 2)))
    with pytest.raises(ValueError, match="A\\(v\\) returned shape"):
        conjugate_gradient(lambda v: v[:1], np.ones(3))


@pytest.mark.parametrize("keep", [False, True])
def test_cg_on_backend_vectors_equals_host_cg(keep):
    """bk=CPU backend: the same iterates as the host path (its dot products
    differ only in summation order, which 12 iterations at condition 100
    amplify to ~1e-11), warm start and kept iterates included."""
    from tinynet.backend import get_backend
    A, b = spd(20, seed=3), np.random.default_rng(4).standard_normal(20)
    x0 = 0.1 * np.ones(20)
    kw = dict(x0=x0, max_iters=12, progress_tol=1e-3, keep_iterates=keep)
    host = conjugate_gradient(lambda v: A @ v, b, **kw)
    dev = conjugate_gradient(lambda v: A @ v, b, bk=get_backend("cpu"), **kw)
    assert (dev.iters, dev.stop) == (host.iters, host.stop)
    np.testing.assert_allclose(dev.x, host.x, rtol=1e-9, atol=1e-12)   # CG amplifies the rounding
    assert dev.phi == pytest.approx(host.phi, rel=1e-10)
    assert [i for i, _ in dev.iterates] == [i for i, _ in host.iterates]


def _cg_cases():
    A, b = spd(30, seed=1), rng.standard_normal(30)
    A2, b2 = spd(200, cond=1e6, seed=3), rng.standard_normal(200)
    return {
        "tol": (A, b, dict(max_iters=90, tol=1e-12)),
        "cap": (A, b, dict(max_iters=7, tol=0.0)),
        "warm": (A, b, dict(x0=0.1 * np.ones(30), max_iters=12, progress_tol=1e-3)),
        "at-solution": (A, b, dict(x0=np.linalg.solve(A, b), max_iters=50, tol=1e-8)),
        "zero-x0": (A, b, dict(x0=np.zeros(30), max_iters=20)),
        "zero-rhs": (A, np.zeros(30), dict(max_iters=5)),
        "progress": (A2, b2, dict(max_iters=200, tol=0.0, progress_tol=5e-3)),
        "negative-curvature": (np.diag([1.0, -1.0, 2.0]), np.array([1.0, 1.0, 0.0]), dict(max_iters=10)),
        "nan": (np.full((4, 4), np.nan), np.ones(4), dict(max_iters=10)),
        "tol-at-the-cap": (np.eye(3), np.ones(3), dict(max_iters=1, tol=1e-3)),   # max_iters wins
    }


CG_CASES = _cg_cases()


@pytest.mark.parametrize("check_every", [1, 2, 5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CG_CASES))
def test_device_scalar_cg_has_the_bits_of_host_scalar_cg(case, dtype, check_every):
    """cg_device (alpha, beta, phi and the stopping rules on the backend, the
    stop flag read every check_every iterations) against conjugate_gradient
    with host scalars on the CPU backend: the same x, kept iterates, phi,
    residual, products and stop reason, bit for bit, for every stopping rule;
    products launched after a stop change nothing."""
    from tinynet.backend import get_backend
    from tinynet.optim.cg_device import conjugate_gradient_device
    bk = get_backend("cpu")
    A, b, kw = CG_CASES[case]
    A, b = A.astype(dtype), b.astype(dtype)
    kw = dict(kw, keep_iterates=True)
    if "x0" in kw:
        kw["x0"] = kw["x0"].astype(dtype)
    calls = {"host": 0, "device": 0}

    def op(who):
        def apply(v):
            calls[who] += 1
            return (A @ v).astype(dtype)
        return apply

    host = conjugate_gradient(op("host"), b, bk=bk, **kw)
    dev = conjugate_gradient_device(op("device"), b, bk, check_every=check_every, **kw)
    assert (dev.iters, dev.stop) == (host.iters, host.stop)
    assert calls["host"] == host.iters and host.iters <= calls["device"] <= host.iters + check_every - 1
    np.testing.assert_array_equal(dev.x, host.x)
    assert dev.xx == bk.dot(dev.x, dev.x) and host.xx is None     # x^T x, read back with the scalars
    assert np.array_equal([dev.phi, dev.residual], [host.phi, host.residual], equal_nan=True)
    assert [i for i, _ in dev.iterates] == [i for i, _ in host.iterates]
    for (_, a), (_, c) in zip(dev.iterates, host.iterates):
        np.testing.assert_array_equal(a, c)
    expected = {"tol": "tol", "cap": "max_iters", "progress": "progress", "nan": "negative_curvature",
                "negative-curvature": "negative_curvature", "zero-rhs": "zero_rhs", "at-solution": "tol"}
    if case in expected:                        # each rule is exercised
        assert dev.stop == expected[case]


def test_device_scalar_cg_checks_its_arguments():
    from tinynet.backend import get_backend
    from tinynet.optim.cg_device import conjugate_gradient_device
    bk = get_backend("cpu")
    with pytest.raises(ValueError, match="check_every must be an integer >= 1"):
        conjugate_gradient_device(lambda v: v, np.ones(3), bk, check_every=0)
    with pytest.raises(ValueError, match="b must be a vector"):
        conjugate_gradient_device(lambda v: v, np.ones((2, 2)), bk)
    with pytest.raises(ValueError, match="A\\(v\\) returned shape"):
        conjugate_gradient_device(lambda v: v[:1], np.ones(3), bk)
    with pytest.raises(ValueError, match="x0 has shape"):
        conjugate_gradient_device(lambda v: v, np.ones(3), bk, x0=np.ones(2))


@pytest.mark.parametrize("kind", ["gvp", "hvp", "fvp"])
def test_linearized_product_equals_the_one_shot_product(kind):
    """HF's CG reuses one forward pass for all its products."""
    from tinynet import curvature as cv
    from tinynet.curvature.products import linearized_product
    net = ce_net()
    X, Y = batch(net, 7)
    C = linearized_product(net, X, Y, kind)
    for s in range(3):
        v = np.random.default_rng(s).standard_normal(net.n_params)
        ref = getattr(cv, kind)(net, X, None if kind == "fvp" else Y, v)
        np.testing.assert_allclose(C(v), ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="kind"):
        linearized_product(net, X, Y, "jvp")


@pytest.mark.parametrize("kind", ["gvp", "hvp", "fvp"])
def test_product_at_the_gradients_contexts_equals_the_linearized_product(kind):
    """product_at on Network.loss_gradient_contexts' forward pass (HF's products
    with curvature_fraction 1): the same bits as a fresh forward pass, after
    the backward pass has run on those contexts; the loss and gradient are
    loss_and_gradient's."""
    from tinynet.curvature.products import linearized_product, product_at
    net = ce_net()
    X, Y = batch(net, 7)
    f, g, ctxs, lctx = net.loss_gradient_contexts(X, Y, out=np.zeros(net.n_params))
    f_ref, g_ref = net.loss_and_gradient(X, Y)
    assert f == f_ref
    np.testing.assert_array_equal(g, g_ref)
    C_at = product_at(net, ctxs, lctx, kind)
    C = linearized_product(net, X, Y, kind)
    for s in range(3):
        v = np.random.default_rng(s).standard_normal(net.n_params)
        np.testing.assert_array_equal(C_at(v), C(v))
    with pytest.raises(ValueError, match="product_at: kind must be"):
        product_at(net, ctxs, lctx, "jvp")


# -- Hessian-free ------------------------------------------------------------------------


def ref_grad_hess_gn(net, X, Y):
    """g, H (torch.func.hessian) and GN = mean_i J_i^T D_i J_i, D_i = d2l/dF2
    from autograd of the loss as a function of the outputs."""
    f = torch_loss_fn(net, X, Y)
    th = theta_of(net)
    g = torch.func.grad(f)(th).numpy()
    H = torch.func.hessian(f)(th).numpy()
    J = torch.func.jacrev(torch_output_fn(net, X))(th).numpy()               # (n, k, p)
    F = torch_output_fn(net, X)(th)
    n, k = F.shape
    from torch_ref import torch_loss_of_output
    D = np.empty((n, k, k))
    for i in range(n):        # d2 l_i / dF_i^2: the batch-mean loss of example i alone
        Li = torch_loss_of_output(net.loss_stage, np.asarray(Y)[i:i + 1], k)
        D[i] = torch.func.hessian(Li)(F[i:i + 1].detach())[0, :, 0, :].numpy()
    G = np.einsum("nkp,nkj,njq->pq", J, D, J) / n
    return g, H, G


def exact_hf(net, curvature="gn", damping=0.1, **kw):
    return HessianFree(net, lr=1.0, curvature=curvature, damping=damping, cg_iters=10 * net.n_params,
                       cg_tol=1e-15, progress_tol=None, warm_start=0.0, backtrack=False,
                       line_search=False, adapt_damping=False, **kw)


@pytest.mark.parametrize("netname", list(NETS))
def test_hf_with_enough_cg_equals_dense_damped_gn_step(netname):
    net = NETS[netname]()
    X, Y = batch(net)
    g, _, G = ref_grad_hess_gn(net, X, Y)
    x0 = net.get_flat()
    exact_hf(net, damping=0.1).step(X, Y)
    np.testing.assert_allclose(net.get_flat() - x0, -np.linalg.solve(G + 0.1 * np.eye(len(g)), g),
                               rtol=1e-9, atol=1e-12)


def test_hf_hessian_curvature_equals_dense_damped_hessian_step():
    net = ce_net()
    X, Y = batch(net)
    g, H, _ = ref_grad_hess_gn(net, X, Y)
    lam = 0.1 + 1.1 * max(0.0, -np.linalg.eigvalsh(H)[0])        # damped system positive definite
    x0 = net.get_flat()
    exact_hf(net, curvature="hessian", damping=lam).step(X, Y)
    np.testing.assert_allclose(net.get_flat() - x0, -np.linalg.solve(H + lam * np.eye(len(g)), g),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("damping", [1e-3, 1.0, 100.0], ids=["lam1e-3", "lam1", "lam100"])
def test_hf_levenberg_marquardt_rule(damping):
    """rho = (f(θ+p) - f(θ)) / (g^T p + 1/2 p^T G p); λ *= 3/2 if rho < 1/4, 2/3 if rho > 3/4."""
    net = mse_net()
    X, Y = batch(net)
    g, _, G = ref_grad_hess_gn(net, X, Y)
    opt = HessianFree(net, lr=1.0, damping=damping, cg_iters=10 * net.n_params, cg_tol=1e-15,
                      progress_tol=None, backtrack=False, line_search=False)
    f0 = torch_loss_fn(net, X, Y)(theta_of(net)).item()
    x0 = net.get_flat()
    opt.step(X, Y)
    p = net.get_flat() - x0
    rho = (torch_loss_fn(net, X, Y)(theta_of(net)).item() - f0) / (g @ p + 0.5 * p @ G @ p)
    assert opt.metrics["rho"] == pytest.approx(rho, rel=1e-8)
    factor = 1.5 if rho < 0.25 else (2 / 3 if rho > 0.75 else 1.0)
    assert opt.damping == pytest.approx(damping * factor, rel=1e-14)


def test_hf_negative_curvature_hessian_does_not_crash():
    net = ce_net(seed=3)
    X, Y = batch(net, n=4)
    f0 = net.loss(X, Y)
    opt = HessianFree(net, lr=1.0, curvature="hessian", damping=0.0, cg_iters=50)
    for _ in range(3):
        opt.step(X, Y)
    assert np.all(np.isfinite(net.get_flat())) and net.loss(X, Y) <= f0   # Armijo line search


def test_hf_scales_to_mnist_autoencoder():
    """One HF step on the 2.8M-parameter autoencoder (float32) with a few CG
    iterations: matrix-free, and the line search guarantees no increase."""
    net = build_model("mnist-autoencoder", dtype=np.float32, seed=0)
    X = np.random.default_rng(0).uniform(0, 1, (16, 784)).astype(np.float32)
    f0 = net.loss(X, X)
    opt = HessianFree(net, lr=1.0, damping=10.0, cg_iters=5)
    assert opt.step(X, X) == pytest.approx(f0, rel=1e-6)
    assert net.loss(X, X) < f0 and opt.metrics["cg_iters"] <= 5 and opt.metrics["alpha"] > 0


def test_hf_state_dict_resumes():
    net = mse_net()
    X, Y = batch(net)
    opt = HessianFree(net, lr=1.0, damping=1.0, cg_iters=5)
    opt.step(X, Y)
    state, x = opt.state_dict(), net.get_flat()
    opt.step(X, Y)
    after = net.get_flat()
    net2 = mse_net()
    net2.set_flat(x)
    opt2 = HessianFree(net2, lr=1.0, damping=123.0, cg_iters=5)
    opt2.load_state_dict(state)
    opt2.step(X, Y)
    np.testing.assert_array_equal(net2.get_flat(), after)


# -- the seed-001 Hessian preconditioner -----------------------------------------------

@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_hessian_preconditioner_step(solver):
    """dx = -lr (H + eps I)^{-1} g with H the exact minibatch Hessian."""
    net = mse_net(seed=2)
    X, Y = batch(net)
    g, H, _ = ref_grad_hess_gn(net, X, Y)
    eps = 0.05 + 1.1 * max(0.0, -np.linalg.eigvalsh(H)[0])
    x0 = net.get_flat()
    opt = HessianPreconditioner(net, lr=0.5, eps=eps, solver=solver, cg_iters=10 * net.n_params, cg_tol=1e-15)
    opt.step(X, Y)
    np.testing.assert_allclose(net.get_flat() - x0, -0.5 * np.linalg.solve(H + eps * np.eye(len(g)), g),
                               rtol=1e-9, atol=1e-12)


def test_hessian_preconditioner_auto_picks_cg_for_large_nets():
    assert HessianPreconditioner(build_model("mnist-autoencoder"), 1.0, solver="auto").solver == "cg"
    assert HessianPreconditioner(mse_net(), 1.0, solver="auto").solver == "dense"
    with pytest.raises(ValueError, match="hf"):
        HessianPreconditioner(build_model("mnist-autoencoder"), 1.0, solver="dense")
