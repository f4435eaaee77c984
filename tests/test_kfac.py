"""KFAC statistics and step (thesis 6.2.2, 6.4.1) against references built from
the definitions with torch autograd Jacobians (float64)."""
import numpy as np
import pytest
import torch
from torch.func import hessian, jacrev

from tinynet.layers import Linear, Sigmoid, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim.kfac import KFAC
from tinynet.optim.stats import forward_backward, kfac_factors, kron_indices
from torch_ref import theta_of, torch_loss_fn, torch_loss_of_output, torch_output_fn


def make_case(name, n, seed=0):
    rng = np.random.default_rng(seed)
    if name == "tanh-mse":
        net = Sequential([Linear(4, 5), Tanh(), Linear(5, 3)], MSELoss(), dtype=np.float64, seed=seed)
        Y = rng.standard_normal((n, 3))
    elif name == "sigmoid-softmax":
        net = Sequential([Linear(4, 6), Sigmoid(), Linear(6, 5), Tanh(), Linear(5, 3)],
                         SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=seed)
        Y = rng.integers(0, 3, n)
    else:
        raise KeyError(name)
    X = rng.standard_normal((n, 4))
    return net, X, Y


CASES = ["tanh-mse", "sigmoid-softmax"]


def references(net, X, Y):
    """Per example: J_theta (n, k, P) of the output, D_n = d2 l_n / dF^2 (n, k, k)
    and g_n = dl_n/dF (n, k), all from torch autograd."""
    th = theta_of(net)
    J = jacrev(torch_output_fn(net, X))(th).numpy()
    F = torch_output_fn(net, X)(th).detach()
    n, k = F.shape
    L = torch_loss_of_output(net.loss_stage, Y, k)
    HF = hessian(L)(F).numpy()                       # (n, k, n, k), block diagonal / n
    D = np.stack([n * HF[i, :, i, :] for i in range(n)])
    g = n * torch.func.grad(L)(F).numpy()
    return J, D, g


def layer_slices(net, i):
    a, c = net.offsets[i]
    s = net.layers[i]
    return a, c, a + s.n_in * s.n_out


def inputs_of(net, X):
    _, ctxs = net.forward_ctx(X)
    return {i: np.asarray(ctxs[i][0]) for i in kron_indices(net)}


@pytest.mark.parametrize("case", CASES)
def test_A_and_G_equal_their_definitions(case):
    net, X, Y = make_case(case, n=7)
    J, D, _ = references(net, X, Y)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    fac = kfac_factors(net, ctxs, lctx, "gn", exact=True)
    H = inputs_of(net, X)
    for i in kron_indices(net):
        a, c, kb = layer_slices(net, i)
        H1 = np.c_[H[i], np.ones(len(X))]
        A_ref = H1.T @ H1 / len(X)                                  # mean [h h^T, h; h^T, 1]
        Ja = J[:, :, kb:c]                                          # da/db = I, so J_b = J_a
        G_ref = np.mean(np.einsum("nkp,nkj,njq->npq", Ja, D, Ja), axis=0)
        A, G = fac[i]
        np.testing.assert_allclose(A, A_ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(G, G_ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_one_example_gn_block_is_A_kron_G(case):
    """Thesis 6.2.2: for one example the layer's GN block factorizes exactly."""
    net, X, Y = make_case(case, n=1, seed=3)
    J, D, _ = references(net, X, Y)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    fac = kfac_factors(net, ctxs, lctx, "gn", exact=True)
    for i in kron_indices(net):
        a, c, _ = layer_slices(net, i)
        block = J[0, :, a:c].T @ D[0] @ J[0, :, a:c]
        A, G = fac[i]
        np.testing.assert_allclose(np.kron(A, G), block, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_fisher_G_from_sampled_targets(case):
    """Monte-Carlo Fisher: G = mean J_a^T g~ g~^T J_a with g~ = dl/dF at targets
    sampled (same seed) from the predictive distribution."""
    net, X, Y = make_case(case, n=6)
    J, _, _ = references(net, X, Y)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    fac = kfac_factors(net, ctxs, lctx, "fisher", rng=np.random.default_rng(5))
    Ys = net.loss_stage.sample_targets(lctx, np.random.default_rng(5))
    F = torch.tensor(net.forward(X))
    Lt = torch_loss_of_output(net.loss_stage, Ys, net.n_out)
    gs = len(X) * torch.func.grad(Lt)(F).numpy()
    for i in kron_indices(net):
        _, c, kb = layer_slices(net, i)
        b = np.einsum("nkp,nk->np", J[:, :, kb:c], gs)
        np.testing.assert_allclose(fac[i][1], b.T @ b / len(X), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_empirical_G_from_the_minibatch_targets(case):
    """Empirical Fisher (the thesis's cheaper GN, 3.4): G = mean J_a^T g g^T J_a with
    g = dl/dF at the minibatch's own targets, from torch autograd."""
    net, X, Y = make_case(case, n=6)
    J, _, g = references(net, X, Y)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    fac = kfac_factors(net, ctxs, lctx, "empirical")
    for i in kron_indices(net):
        _, c, kb = layer_slices(net, i)
        b = np.einsum("nkp,nk->np", J[:, :, kb:c], g)
        np.testing.assert_allclose(fac[i][1], b.T @ b / len(X), rtol=1e-10, atol=1e-13)


def test_softmax_ce_gn_is_the_exact_fisher_not_the_empirical_one():
    """For the softmax cross-entropy D = diag(p) - p p^T is the Fisher of the predictive
    distribution, so curvature "gn" is the exact Fisher, and "empirical" (the thesis's
    "GN" of 6.5.3.4) differs from it: the thesis's comparison is empirical vs true Fisher."""
    net, X, Y = make_case("sigmoid-softmax", n=6)
    J, D, g = references(net, X, Y)
    F = net.forward(X)
    p = np.exp(F - F.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(D, np.stack([np.diag(q) - np.outer(q, q) for q in p]), atol=1e-12)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    gn = kfac_factors(net, ctxs, lctx, "gn", exact=True)
    emp = kfac_factors(net, ctxs, lctx, "empirical")
    assert all(np.abs(gn[i][1] - emp[i][1]).max() > 0.1 * np.abs(gn[i][1]).max() for i in gn)


def test_sampled_gn_G_is_unbiased():
    """The one-backward-pass GN estimate (rows S eps) averages to the exact G."""
    net, X, Y = make_case("sigmoid-softmax", n=5)
    _, ctxs, lctx, _ = forward_backward(net, X, Y)
    exact = kfac_factors(net, ctxs, lctx, "gn", exact=True)
    rng = np.random.default_rng(0)
    m = 3000
    acc = {i: 0.0 for i in exact}
    for _ in range(m):
        for i, (A, G) in kfac_factors(net, ctxs, lctx, "gn", rng=rng).items():
            acc[i] = acc[i] + G / m
    for i in exact:
        G = exact[i][1]
        assert np.abs(acc[i] - G).max() < 0.1 * np.abs(G).max()


def test_running_factors_are_the_rho_average_of_batch_factors():
    """KFAC's running factors (upper-triangle updates from raw sums, mirrored when
    read) equal R_0 = F_0, R_t = rho R_{t-1} + (1 - rho) F_t of the per-batch
    factors F_t = kfac_factors (the definitions), at the parameters of each step."""
    rho = 0.7
    net, X, Y = make_case("sigmoid-softmax", n=6)
    opt = KFAC(net, 0.05, T=100, stats_every=1, rho=rho, exact=True)
    ref = None
    for t in range(4):
        Xt = X + 0.5 * t
        _, ctxs, lctx, _ = forward_backward(net, Xt, Y)
        fac = kfac_factors(net, ctxs, lctx, "gn", exact=True)
        ref = fac if ref is None else {i: tuple(rho * R + (1 - rho) * F for R, F in zip(ref[i], fac[i]))
                                       for i in fac}
        opt.step(Xt, Y)
        for i, (A, G) in opt.factors.items():
            np.testing.assert_allclose(A, ref[i][0], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(G, ref[i][1], rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(A, A.T)
            np.testing.assert_array_equal(G, G.T)


def dense_kfac_blocks(opt, eps):
    """{Linear index: A_d ⊗ G_d} with the factored damping, built from the factors."""
    out = {}
    for i, (A, G) in opt.factors.items():
        pi = np.sqrt((np.trace(A) / len(A)) / (np.trace(G) / len(G)))
        out[i] = np.kron(A + pi * np.sqrt(eps) * np.eye(len(A)), G + np.sqrt(eps) / pi * np.eye(len(G)))
    return out


@pytest.mark.parametrize("route", ["batch", "gradient"])
@pytest.mark.parametrize("kl_clip", [None, 1e6, 1e-6], ids=["no-clip", "clip-inactive", "clip-active"])
@pytest.mark.parametrize("curvature", ["gn", "fisher", "empirical"])
@pytest.mark.parametrize("case", CASES)
def test_kfac_step_is_dense_kronecker_solve(case, curvature, kl_clip, route):
    """dtheta = -lr nu (A_d ⊗ G_d)^{-1} g per layer, nu = min(1, sqrt(kl_clip / (lr^2 q))),
    q = sum_l g_l^T (A_d ⊗ G_d)^{-1} g_l, all from dense matrices built here."""
    net, X, Y = make_case(case, n=8)
    lr, eps = 0.3, 1e-2
    th0 = net.get_flat()
    grad = torch.func.grad(torch_loss_fn(net, X, Y))(theta_of(net)).numpy()
    opt = KFAC(net, lr, curvature=curvature, eps=eps, T=1, stats_every=1, exact=True, seed=1, kl_clip=kl_clip,
               route=route)
    opt.step(X, Y)
    dtheta = net.get_flat() - th0
    blocks = dense_kfac_blocks(opt, eps)
    sol = {i: np.linalg.solve(M, grad[net.offsets[i][0]:net.offsets[i][1]]) for i, M in blocks.items()}
    q = sum(grad[net.offsets[i][0]:net.offsets[i][1]] @ s for i, s in sol.items())
    nu = 1.0 if kl_clip is None else min(1.0, np.sqrt(kl_clip / (lr ** 2 * q)))
    if kl_clip == 1e-6:
        assert nu < 1e-2                     # the case really clips
    np.testing.assert_allclose(opt.metrics["kl_nu"], nu, rtol=1e-10)
    for i in blocks:
        a, c, _ = layer_slices(net, i)
        np.testing.assert_allclose(dtheta[a:c], -lr * nu * sol[i], rtol=1e-9, atol=1e-14)


def test_layer_q_is_the_dense_quadratic_form():
    """trust_region.layer_q = vec(Gamma)^T (A_d ⊗ G_d)^{-1} vec(Gamma), Gamma = B^T [H 1],
    from random SPD factors, without forming Gamma."""
    from tinynet.backend import get_backend
    from tinynet.optim.trust_region import layer_q
    rng = np.random.default_rng(4)
    n, i, o = 9, 5, 4
    H, B = rng.standard_normal((n, i)), rng.standard_normal((n, o))
    Ra, Rg = rng.standard_normal((i + 1, i + 1)), rng.standard_normal((o, o))
    Ad, Gd = Ra @ Ra.T + np.eye(i + 1), Rg @ Rg.T + np.eye(o)
    H1 = np.c_[H, np.ones(n)]
    gamma = (B.T @ H1).ravel(order="F")                      # vec, column-major: the flat layout
    ref = gamma @ np.linalg.solve(np.kron(Ad, Gd), gamma)
    bk = get_backend("cpu")
    got = layer_q(bk, B, B @ np.linalg.inv(Gd), H1, H1 @ np.linalg.inv(Ad))
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_kfac_rejects_bad_options():
    net, _, _ = make_case("tanh-mse", n=2)
    with pytest.raises(ValueError, match="curvature"):
        KFAC(net, 0.1, curvature="hessian")
    with pytest.raises(ValueError, match="eps"):
        KFAC(net, 0.1, eps=0)
    with pytest.raises(ValueError, match="kl_clip"):
        KFAC(net, 0.1, kl_clip=0)
    with pytest.raises(ValueError, match="route"):
        KFAC(net, 0.1, route="fast")


def test_auto_route_picks_the_cheaper_one():
    """route="auto": the batch route for wide layers (n < i, o), the gradient
    route for narrow ones (the autoencoder's 30-unit code, CIFAR's 100-unit layers)."""
    net, _, _ = make_case("tanh-mse", n=2)
    opt = KFAC(net, 0.1)
    assert opt._route(200, 1000, 500) == "batch"
    assert opt._route(200, 250, 30) == "gradient"
    assert opt._route(200, 3072, 100) == "gradient"


@pytest.mark.parametrize("name", ["acp", "kfac", "nnn", "centered"])
def test_state_dict_resumes_bit_for_bit(name, tmp_path):
    """Checkpoint after 3 steps, resume in a fresh optimizer: the next steps match."""
    from tinynet.optim import OPTIMIZERS
    from tinynet.train import _flatten, _unflatten
    import json
    kw = {"acp": dict(T=2), "kfac": dict(T=2, stats_every=1, curvature="fisher"),
          "nnn": dict(T=2), "centered": {}}[name]
    net, X, Y = make_case("sigmoid-softmax", n=6)
    opt = OPTIMIZERS[name](net, 0.05, **kw)
    for t in range(3):
        opt.step(X + t, Y)
    arrays = {}
    skel = json.loads(json.dumps(_flatten(opt.state_dict(), "opt", arrays)))   # as a checkpoint stores it
    theta = net.get_flat()
    ref = [opt.step(X - t, Y) for t in range(3)]
    net2, _, _ = make_case("sigmoid-softmax", n=6)
    net2.set_flat(theta)
    opt2 = OPTIMIZERS[name](net2, 0.05, **kw)
    opt2.load_state_dict(_unflatten(skel, arrays))
    assert [opt2.step(X - t, Y) for t in range(3)] == ref
    np.testing.assert_array_equal(net2.get_flat(), net.get_flat())


def test_loads_checkpoint_with_split_A_inverse():
    """A checkpoint whose inverses hold A_d^{-1} as (top rows, last row), G_d^{-1}
    (the layout before the two-route step) resumes to the same next step."""
    net, X, Y = make_case("sigmoid-softmax", n=6)
    opt = KFAC(net, 0.05, T=5, stats_every=1)
    opt.step(X, Y)
    st = opt.state_dict()
    theta = net.get_flat()
    ref = opt.step(X - 1, Y)
    old = dict(st, inverses={i: [Ai[:-1], Ai[-1], Gi] for i, (Ai, Gi) in st["inverses"].items()})
    net2, _, _ = make_case("sigmoid-softmax", n=6)
    net2.set_flat(theta)
    opt2 = KFAC(net2, 0.05, T=5, stats_every=1)
    opt2.load_state_dict(old)
    assert opt2.step(X - 1, Y) == ref
    np.testing.assert_array_equal(net2.get_flat(), net.get_flat())


def test_damped_inverse_reads_the_upper_triangle():
    """damped_inverse(M, d) = (M + d I)^{-1} from M's upper triangle alone (the
    lower one as RunningFactors leaves it, stale), exactly symmetric; and the
    eigendecomposition fallback when M + d I is not positive definite."""
    from tinynet.optim.stats import damped_inverse
    rng = np.random.default_rng(7)
    R = rng.standard_normal((9, 6))
    M = R @ R.T                                              # PSD, rank 6
    stale = np.triu(M) + np.tril(rng.standard_normal((9, 9)), -1)
    ref = np.linalg.inv(M + 0.3 * np.eye(9))
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-6)):
        got = damped_inverse(stale, 0.3, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, got.T)
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
    # indefinite (a rounding-level negative eigenvalue, no damping): Cholesky fails,
    # the eigenvalues are floored at max(damping, 1e-12 max |w|)
    w = np.array([2.0, 1.0, -1e-9])
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    M = (Q * w) @ Q.T
    got = damped_inverse(np.triu(M), 0.0)
    floor = 1e-12 * 2.0
    np.testing.assert_allclose(got, (Q / np.maximum(w, floor)) @ Q.T, rtol=1e-6)
    np.testing.assert_array_equal(got, got.T)
