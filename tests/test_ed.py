"""tinynet.ed (seed 004's eigendecomposition with three backward rules) against
numpy eigh, torch autograd (float64) and finite differences; the hybrid rule's
convergence to the analytic one as K grows, its closed form, the poster's bound
||dL/dM|| <= n K / eps ||dL/dv||, and the numerical hygiene (repeated eigenvalues,
float64 retry, breakdowns: clear errors, never a silent NaN)."""
import numpy as np
import pytest
import torch

from ed_ref import sign_align, torch_ed
from tinynet.backend import get_backend
from tinynet.ed import EDError, SymmetricED, ed_vjp, eigh_desc, hybrid_coefficients
from tinynet.kernels import ed as EK

torch.set_default_dtype(torch.float64)
RULES = [pytest.param(r, id=r) for r in ("svd", "pi", "hybrid")]


def spd(rng, lam):
    """Q diag(lam) Q^T with a random orthogonal Q."""
    lam = np.asarray(lam, dtype=np.float64)
    Q, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    return (Q * lam) @ Q.T


SPECTRA = [   # well separated: lam_{i+1} / lam_i <= 0.5
    pytest.param([8.0, 4.0, 2.0, 1.0], 4, id="d4-r4"),
    pytest.param([9.0, 3.0, 1.5, 0.7, 0.3], 2, id="d5-r2"),
]


def loss_grad_torch(M, rule, K, r, gV, gl, V0, Vsign):
    """dL/dM (symmetric part) of L = <gV, V s> + <gl, lam> through torch_ed, s the
    column signs that align torch's eigenvectors with tinynet's."""
    Mt = torch.tensor(M, requires_grad=True)
    V, lam = torch_ed(Mt, rule, K, r, V0)
    s = np.sign(np.sum(V.detach().numpy() * Vsign, axis=0))
    L = (torch.tensor(gV * s) * V).sum() + (torch.tensor(gl) * lam).sum()
    g, = torch.autograd.grad(L, Mt)
    g = g.numpy()
    return (g + g.T) / 2


@pytest.mark.parametrize("lam, r", SPECTRA)
@pytest.mark.parametrize("rule", RULES)
def test_forward_against_numpy(rule, lam, r):
    rng = np.random.default_rng(0)
    M = np.stack([spd(rng, lam), spd(rng, np.array(lam) * 2)])
    ed = SymmetricED(rule, r, K=200 if rule == "pi" else 19, eps=0.0)
    V, l, _ = ed.forward(get_backend("cpu"), M)
    for g in range(2):
        w, U = np.linalg.eigh(M[g])
        np.testing.assert_allclose(l[g], w[::-1][:r], rtol=1e-12)
        np.testing.assert_allclose(sign_align(V[g], U[:, ::-1][:, :r]), U[:, ::-1][:, :r], atol=1e-10)


@pytest.mark.parametrize("lam, r", SPECTRA)
@pytest.mark.parametrize("rule", RULES)
def test_backward_against_torch_autograd(rule, lam, r):
    """svd vs torch.linalg.eigh's backward; pi vs autograd through the unrolled power
    iterations (same start vectors); hybrid vs the same graph at the eigh vectors."""
    rng = np.random.default_rng(1)
    M = spd(rng, lam)
    d = M.shape[0]
    gV, gl = rng.standard_normal((d, r)), rng.standard_normal(r)
    K = 7
    gM, V, _ = ed_vjp(M, gV, gl, rule=rule, K=K, seed=3)
    V0 = np.random.default_rng(3).standard_normal((1, r, d))[0]
    ref = loss_grad_torch(M, rule, K, r, gV, gl, V0, V)
    np.testing.assert_allclose(gM, ref, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(gM, gM.T, rtol=0, atol=0)


def _fd(fun, M, E, h=1e-5):
    return (fun(M + h * E) - fun(M - h * E)) / (2 * h)


@pytest.mark.parametrize("rule", RULES)
def test_backward_against_finite_differences(rule):
    """<dL/dM, E> against central differences of L along a symmetric E. svd and pi:
    L of their own forward; hybrid (forward eigh, PI gradient) with K = 300, where its
    gradient is the analytic one to round-off on this spectrum."""
    rng = np.random.default_rng(2)
    M = spd(rng, [5.0, 2.0, 1.0, 0.4])
    d, r = 4, 3
    gV, gl = rng.standard_normal((d, r)), rng.standard_normal(r)
    K = 300 if rule == "hybrid" else 9
    gM, V, _ = ed_vjp(M, gV, gl, rule=rule, K=K, seed=5)

    def L(Mp):
        _, Vp, lp = ed_vjp(Mp, gV, gl, rule="pi" if rule == "pi" else "svd", K=K, seed=5)
        if rule != "pi":
            Vp = sign_align(Vp, V)
        return np.sum(gV * Vp) + np.sum(gl * lp)
    for _ in range(3):
        E = rng.standard_normal((d, d))
        E = E + E.T
        np.testing.assert_allclose(np.sum(gM * E), _fd(L, M, E), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("r", [5, 2])
@pytest.mark.parametrize("K", [1, 2, 5, 19, 60])
def test_hybrid_closed_form_equals_the_power_iteration_recursion(K, r):
    """The hybrid as computed (spectral kernel with the hybrid_coefficients C: c_K below
    the diagonal, -c_{K-1} above) = the numpy closed form = the literal recursion, K
    power-iteration steps through the deflation with every iterate the eigh vector
    (the pi_vjp kernel at stationary iterates)."""
    rng = np.random.default_rng(4)
    lam = np.array([6.0, 5.0, 2.0, 1.9, 0.5])
    M = spd(rng, lam)
    gV, gl = rng.standard_normal((5, r)), rng.standard_normal(r)
    gM, _, _ = ed_vjp(M, gV, gl, rule="hybrid", K=K)
    w, U = np.linalg.eigh(M)
    w, U = w[::-1].copy(), U[:, ::-1].copy()
    A = U @ (hybrid_coefficients(w, K)[:, :r] * (U.T @ gV)) @ U[:, :r].T + U[:, :r] @ np.diag(gl) @ U[:, :r].T
    np.testing.assert_allclose(gM, (A + A.T) / 2, rtol=1e-11, atol=1e-12)
    lit = np.full((1, 5, 5), np.nan)
    iters = np.ascontiguousarray(U[:, :r].T[None, :, None, :])
    get_backend("cpu").launch(EK, "pi_vjp", 1, M[None], iters, w[None, :r].copy(), gV[None], gl[None], lit, K,
                              np.zeros((1, 2, 5, 5)), np.zeros((1, 3, 5)))
    np.testing.assert_allclose(lit[0], gM, rtol=1e-10, atol=1e-11)


def test_hybrid_finite_and_bounded_on_a_rank_deficient_float32_covariance():
    """float32, 16 eigenvalues at eps = 1e-4 under large ones (a rank-deficient covariance,
    as after a first convolution): the hybrid's gradient is finite and bounded by
    K / eps ||dL/dV||."""
    rng = np.random.default_rng(11)
    eps, K = 1e-4, 19
    lam = np.concatenate([np.geomspace(300.0, 0.1, 48), np.zeros(16)]) + eps
    M = spd(rng, lam).astype(np.float32)
    gV = rng.standard_normal((64, 64)).astype(np.float32)
    gM, _, _ = ed_vjp(M, gV, rule="hybrid", K=K)
    assert np.all(np.isfinite(gM))
    assert np.linalg.norm(gM.astype(np.float64)) <= K / eps * np.linalg.norm(gV.astype(np.float64)) * 1.01


@pytest.mark.parametrize("rule", [pytest.param("hybrid", id="hybrid"), pytest.param("pi", id="pi")])
@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_pi_gradient_converges_to_analytic(rule, ratio):
    """Error against the analytic gradient falls as K grows, like ratio^K (the geometric
    series of the draft's eq. 6-7), down to round-off."""
    rng = np.random.default_rng(6)
    lam = np.array([1.0, ratio, ratio ** 2, ratio ** 3])
    M = spd(rng, lam)
    gV = rng.standard_normal((4, 1))              # the leading eigenvector's cotangent
    ga, Va, _ = ed_vjp(M, gV, rule="svd")
    errs = []
    Ks = [4, 16, 64, 256] if ratio == 0.5 else [16, 64, 256, 1024]
    for K in Ks:
        _, V, _ = ed_vjp(M, gV, rule=rule, K=K, seed=1)
        s = np.sign(np.sum(V * Va))               # pi's vector may come out as -v
        g, _, _ = ed_vjp(M, gV * s, rule=rule, K=K, seed=1)
        errs.append(np.linalg.norm(g - ga) / np.linalg.norm(ga))
    assert all(b < a for a, b in zip(errs, errs[1:]) if a > 1e-12), errs
    assert errs[0] > 1e-3 and errs[-1] < 1e-10, errs
    if rule == "hybrid":      # leading vector: error = || sum_j ratio_j^K / (l1 - lj) ... || <= 2 ratio^K / (1 - ratio)
        for K, e in zip(Ks, errs):
            assert e <= max(4 * ratio ** K / (1 - ratio), 1e-12), (K, e)


def equal_pair_matrix(rng, d=5, eps=1e-4):
    """M0 + eps I with lam_1 = lam_2 exactly (and a null space: the eps eigenvalue repeated)."""
    lam = np.array([2.0, 2.0, 1.0] + [0.0] * (d - 3))
    return spd(rng, lam) + eps * np.eye(d)


def test_repeated_eigenvalues_svd_refused_pi_hybrid_bounded():
    rng = np.random.default_rng(7)
    eps, K, d = 1e-4, 19, 5
    M = equal_pair_matrix(rng, d, eps)
    gV = rng.standard_normal((d, d))
    with pytest.raises(EDError, match=r"backward='svd'\) refused: group 0 has eigenvalues equal to "
                                      r"working precision .* use backward='hybrid' or 'pi'"):
        ed_vjp(M, gV, rule="svd")
    for rule in ("hybrid", "pi"):
        gM, _, _ = ed_vjp(M, gV, rule=rule, K=K)
        assert np.all(np.isfinite(gM)), rule
        assert np.linalg.norm(gM) <= d * K / eps * np.linalg.norm(gV), rule
    # the poster's statement, for the leading eigenvector alone: ||dL/dM|| <= n K / eps ||dL/dv_1||
    g1 = rng.standard_normal((d, 1))
    for rule in ("hybrid", "pi"):
        gM, _, _ = ed_vjp(M, g1, rule=rule, K=K)
        assert np.linalg.norm(gM, 2) <= d * K / eps * np.linalg.norm(g1), rule
    # the hybrid's tighter form: every coefficient |C_ji| <= K / lam_min, lam_min >= eps
    gM, _, lam = ed_vjp(M, gV, rule="hybrid", K=K)
    assert np.linalg.norm(gM) <= K / lam.min() * np.linalg.norm(gV) * (1 + 1e-9)


def test_near_repeated_eigenvalues_svd_explodes_hybrid_does_not():
    """A gap of 1e-10 relative: the analytic gradient is finite but beyond the bound
    (the overflow of the poster); the hybrid stays under n K / eps."""
    rng = np.random.default_rng(8)
    eps, K = 1e-4, 19
    M = spd(rng, [2.0, 2.0 - 2e-10, 1.0, 0.5]) + eps * np.eye(4)
    gV = rng.standard_normal((4, 4))
    gs, _, _ = ed_vjp(M, gV, rule="svd")
    gh, _, _ = ed_vjp(M, gV, rule="hybrid", K=K)
    bound = 4 * K / eps * np.linalg.norm(gV)
    assert np.isfinite(gs).all() and np.linalg.norm(gs) > 10 * bound
    assert np.linalg.norm(gh) <= bound


def test_float32_hybrid_matches_float64():
    rng = np.random.default_rng(9)
    M = spd(rng, [4.0, 2.0, 1.0, 0.5])
    gV = rng.standard_normal((4, 4))
    g64, _, _ = ed_vjp(M, gV, rule="hybrid")
    g32, _, _ = ed_vjp(M.astype(np.float32), gV.astype(np.float32), rule="hybrid")
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * np.abs(g64).max())


def test_eigh_float32_failure_is_retried_in_float64(monkeypatch):
    rng = np.random.default_rng(10)
    S = np.stack([spd(rng, [3.0, 1.0, 0.5])]).astype(np.float32)
    real = np.linalg.eigh

    def flaky(a, *args, **kw):
        if np.asarray(a).dtype == np.float32:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return real(a, *args, **kw)
    monkeypatch.setattr(np.linalg, "eigh", flaky)
    lam, U, info = eigh_desc(S)
    assert info["retried"] == 1 and lam.dtype == np.float32 and U.dtype == np.float32
    np.testing.assert_allclose(lam[0], [3.0, 1.0, 0.5], rtol=1e-6)


def test_eigh_failure_in_float64_too_is_a_clear_error(monkeypatch):
    def broken(a, *args, **kw):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")
    monkeypatch.setattr(np.linalg, "eigh", broken)
    with pytest.raises(EDError, match=r"failed in float32 and in the float64 retry"):
        eigh_desc(np.eye(3, dtype=np.float32)[None])
    with pytest.raises(EDError, match=r"eigendecomposition failed in float64"):
        eigh_desc(np.eye(3)[None])


def test_eigenvalues_below_the_floor_are_counted():
    S = np.diag([1.0, 1e-6, -1e-7])[None]
    _, _, info = eigh_desc(S, eps=1e-4)
    assert info["floored"] == 2


def test_eigenvalues_below_the_floor_are_raised_and_the_hybrid_stays_bounded():
    """float32 eigh of a large covariance returns eigenvalues below eps, even negative
    (round-off ~1e-7 ||M||, seen on conv features): they are raised to eps, so the
    hybrid's coefficients stay under K / eps instead of overflowing."""
    rng = np.random.default_rng(12)
    eps, K = 1e-4, 19
    M = spd(rng, [5e6, 3.0, 1e-3, -0.1, -0.05]).astype(np.float32)
    gV = rng.standard_normal((1, 5, 5)).astype(np.float32)
    bk = get_backend("cpu")
    ed = SymmetricED("hybrid", 5, K=K, eps=eps)
    V, lam, ctx = ed.forward(bk, M[None])
    assert ed.info["floored"] >= 2 and lam.min() == np.float32(eps)    # (1e-3 is within round-off too)
    gM = ed.vjp(bk, ctx, gV, np.zeros((1, 5), np.float32))
    assert np.all(np.isfinite(gM))
    assert np.linalg.norm(gM.astype(np.float64)) <= K / eps * np.linalg.norm(gV.astype(np.float64)) * 1.01
    ed0 = SymmetricED("hybrid", 5, K=K, eps=0.0)           # no floor: 1/lam_i and (lam_j/lam_i)^k blow up
    V, lam, ctx = ed0.forward(bk, M[None])
    try:
        g = ed0.vjp(bk, ctx, gV, np.zeros((1, 5), np.float32))
        assert np.linalg.norm(g.astype(np.float64)) > 1e3 * K / eps * np.linalg.norm(gV.astype(np.float64))
    except EDError as e:
        assert "ED gradient (backward='hybrid') is not finite in group 0" in str(e)


@pytest.mark.parametrize("bad, match", [
    pytest.param(np.full((1, 3, 3), np.nan), r"matrix 0 of the batch has non-finite entries", id="nan-input"),
])
def test_non_finite_input_is_a_clear_error(bad, match):
    with pytest.raises(EDError, match=match):
        SymmetricED("hybrid", 2).forward(get_backend("cpu"), bad)


def test_power_iteration_breakdown_is_a_clear_error():
    M = np.zeros((2, 3, 3))
    M[0] = np.eye(3)
    with pytest.raises(EDError, match=r"power iteration broke down in group 1"):
        SymmetricED("pi", 2, K=3).forward(get_backend("cpu"), M)


@pytest.mark.parametrize("make, match", [
    pytest.param(lambda: SymmetricED("qr", 2), r"backward must be one of 'svd', 'pi', 'hybrid', got 'qr'", id="rule"),
    pytest.param(lambda: SymmetricED("pi", 2, K=0), r"pi_iters must be a positive integer, got 0", id="K"),
    pytest.param(lambda: SymmetricED("pi", 4).forward(get_backend("cpu"), np.eye(3)[None]),
                 r"cannot keep 4 eigenpairs of 3 x 3 matrices", id="r"),
])
def test_argument_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()
