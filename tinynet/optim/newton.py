"""Newton-family optimizers with dense curvature matrices (thesis chapter 3).

Index legend: p parameters; g (p,) the minibatch gradient; C (p, p) a
curvature matrix (Hessian, Gauss-Newton or Fisher of the minibatch loss);
blocks are the per-stage slices of the flat vector (DESIGN.md layout).

  Newton step (3.1.1):            dx = -C^{-1} g
  Tikhonov damping (3.1.3):       dx = -lr (C + eps I)^{-1} g
  block-diagonal (3.1.5):         dx_l = -lr (C_ll + eps I)^{-1} g_l, each block alone
  C = Hessian, Gauss-Newton (3.1.4, table 3.I) or Fisher (3.2.3, tables 3.II, 3.III),
  the Fisher exact, Monte-Carlo sampled, or empirical (3.2.4).

Saddle points (3.1.1, slides "Practical issues": H can have negative
eigenvalues): C + eps I may be indefinite. `newton_direction` detects it by a
failed Cholesky factorization and then applies the stated fallback rule:
the damping is raised geometrically, eps_k = max(growth * eps_{k-1}, tau)
with tau = 1e-12 * max(1, max|C_ii|), until the factorization succeeds (which
it must once eps_k > -lambda_min(C)). The step then solves with eps_k, and the
optimizer's `metrics` report pd = 0, the damping used and the smallest
eigenvalue of C. The run never stops on it.
"""
import numpy as np
import scipy.linalg

from tinynet.optim.base import DirectionOptimizer

CURVATURES = ("hessian", "gn", "fisher")
STRUCTURES = ("full", "block")
FISHER_KINDS = ("exact", "mc", "empirical")


def newton_direction(g, C, eps=0.0, growth=10.0, max_tries=60):
    """d = -(C + eps I)^{-1} g by a Cholesky solve (thesis 3.1.3), with the
    geometric damping fallback of the module docstring when C + eps I is not
    positive definite.

    g: (p,); C: (p, p) symmetric. Computes in float64; returns (d in g's dtype,
    info) with info = {"pd": C + eps I was positive definite, "eps_used": the
    damping of the solve, "damping_increases": how many times it was raised,
    "min_eig": smallest eigenvalue of C when the fallback ran, else None}.
    """
    g = np.asarray(g)
    C = np.asarray(C)
    if g.ndim != 1 or C.shape != (g.shape[0], g.shape[0]):
        raise ValueError(f"newton_direction: need g (p,) and C (p, p), got {g.shape} and {C.shape}")
    if not eps >= 0:
        raise ValueError(f"newton_direction: eps must be >= 0, got {eps}")
    if not growth > 1:
        raise ValueError(f"newton_direction: growth must be > 1, got {growth}")
    C64 = np.asarray(C, dtype=np.float64)
    g64 = np.asarray(g, dtype=np.float64)
    info = {"pd": True, "eps_used": float(eps), "damping_increases": 0, "min_eig": None}
    if not (np.all(np.isfinite(C64)) and np.all(np.isfinite(g64))):
        # nothing sensible to solve: no step, reported
        info.update(pd=False, eps_used=float("nan"))
        return np.zeros_like(g), info
    tau = 1e-12 * max(1.0, float(np.max(np.abs(np.diag(C64)))) if C64.size else 1.0)
    shift = float(eps)
    for tries in range(max_tries + 1):
        try:
            factor = scipy.linalg.cho_factor(C64 + shift * np.eye(C64.shape[0]), lower=True,
                                             check_finite=False)
            if not np.all(np.diag(factor[0]) > 0):
                raise np.linalg.LinAlgError("zero pivot")
            break
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            if tries == 0:
                info["pd"] = False
                info["min_eig"] = float(scipy.linalg.eigvalsh(C64)[0])
            shift = max(growth * shift, tau)
    else:   # pragma: no cover - needs eps beyond 1e48 * tau
        raise FloatingPointError("newton_direction: no damping made C + eps I positive definite")
    info["eps_used"] = shift
    info["damping_increases"] = tries
    d = -scipy.linalg.cho_solve(factor, g64, check_finite=False)
    return d.astype(g.dtype, copy=False), info


def block_newton_direction(g, C, slices, eps=0.0, growth=10.0):
    """Block-diagonal version (thesis 3.1.5): each block C[s, s] is solved on its
    own with `newton_direction`; coordinates outside every slice get no step.
    Returns (d, info) with pd = all blocks PD, eps_used = the largest damping
    used, damping_increases and min_eig over the blocks."""
    g = np.asarray(g)
    d = np.zeros_like(g)
    info = {"pd": True, "eps_used": float(eps), "damping_increases": 0, "min_eig": None}
    for s in slices:
        d[s], bi = newton_direction(g[s], C[s, s], eps, growth)
        info["pd"] &= bi["pd"]
        info["eps_used"] = max(info["eps_used"], bi["eps_used"])
        info["damping_increases"] += bi["damping_increases"]
        if bi["min_eig"] is not None:
            info["min_eig"] = bi["min_eig"] if info["min_eig"] is None else min(info["min_eig"], bi["min_eig"])
    return d, info


def _curvature():
    try:
        from tinynet import curvature
    except ImportError as e:  # pragma: no cover - during development only
        raise ImportError("tinynet.curvature (dense hessian / gauss_newton / fisher) is needed "
                          "by the Newton-family optimizers") from e
    return curvature


def check_dense_or_suggest_hf(net, who):
    """Refuse a dense curvature method on a network above tinynet.curvature's
    size guard, pointing to the matrix-free `hf` optimizer."""
    try:
        _curvature().check_dense(net)
    except (ValueError, MemoryError) as e:
        raise ValueError(f"{who}: {e} Use the matrix-free Hessian-free optimizer "
                         f"instead (--optimizer hf).") from e


def dense_curvature(net, X, Y, curvature, fisher_kind="exact", seed=0, fisher_samples=1):
    """The dense minibatch curvature matrix C (p, p) named by `curvature`
    ("hessian", "gn", "fisher"; `fisher_kind` exact / mc / empirical, the mc
    one from `fisher_samples` draws per example with the given seed), host array."""
    cv = _curvature()
    if curvature == "hessian":
        return cv.hessian(net, X, Y)
    if curvature == "gn":
        return cv.gauss_newton(net, X, Y)
    if curvature == "fisher":
        if fisher_kind == "mc":
            return cv.fisher(net, X, kind="mc", Y=Y, n_samples=fisher_samples, seed=seed)
        return cv.fisher(net, X, kind=fisher_kind, Y=Y)
    raise ValueError(f"unknown curvature {curvature!r}: choose one of {', '.join(CURVATURES)}")


def check_choice(who, what, value, choices):
    if value not in choices:
        raise ValueError(f"{who}: {what} must be one of {', '.join(choices)}, got {value!r}")


class Newton(DirectionOptimizer):
    """`Newton(net, lr=1.0, curvature="hessian", structure="full", eps=1e-4,
    fisher_kind="exact", growth=10.0, seed=0, fisher_samples=1)`.

    One step: dx = -lr (C + eps I)^{-1} g (thesis 3.1.3) with C the minibatch
    Hessian, Gauss-Newton matrix (3.1.4) or Fisher (3.2.3-3.2.4) at the current
    parameters, full or block-diagonal per stage (3.1.5). lr 1 and eps 0 give
    the pure Newton step 3.1.1. seed drives the Monte-Carlo Fisher samples
    (fisher_samples draws per example, seed + k at update k). Refuses networks above the dense size guard.
    metrics: pd, eps_used, damping_increases, min_eig (when not PD), step_norm.
    """

    name = "newton"

    def __init__(self, net, lr=1.0, curvature="hessian", structure="full", eps=1e-4,
                 fisher_kind="exact", growth=10.0, seed=0, fisher_samples=1):
        super().__init__(net, lr)
        who = type(self).__name__
        check_choice(who, "curvature", curvature, CURVATURES)
        check_choice(who, "structure", structure, STRUCTURES)
        check_choice(who, "fisher_kind", fisher_kind, FISHER_KINDS)
        if not eps >= 0:
            raise ValueError(f"{who}: eps must be >= 0, got {eps}")
        self.curvature, self.structure, self.fisher_kind = curvature, structure, fisher_kind
        self.eps, self.growth, self.seed = float(eps), float(growth), int(seed)
        self.fisher_samples = int(fisher_samples)
        check_dense_or_suggest_hf(net, who)

    def direction(self, X, Y):
        """(loss, g, d): the minibatch loss, gradient (host) and the damped
        Newton direction d (host, before lr), setting `metrics`."""
        loss, gb = self.net.loss_and_gradient(X, Y)
        g = np.array(self.bk.to_host(gb), copy=True)
        C = dense_curvature(self.net, X, Y, self.curvature, self.fisher_kind, self.seed + self.k,
                            self.fisher_samples)
        d, info = self._solve(g, C)
        self._report(info, d)
        return loss, g, d

    def _solve(self, g, C):
        if self.structure == "block":
            return block_newton_direction(g, C, [s for _, s in self.net.slices()], self.eps, self.growth)
        return newton_direction(g, C, self.eps, self.growth)

    def _report(self, info, d):
        self.metrics = {"pd": float(info["pd"]), "eps_used": info["eps_used"],
                        "damping_increases": info["damping_increases"],
                        "step_norm": float(np.linalg.norm(d)) * self.lr}
        if info["min_eig"] is not None:
            self.metrics["min_eig"] = info["min_eig"]


class GaussNewton(Newton):
    """`GaussNewton(net, lr=1.0, structure="full", eps=1e-4)`: Newton with the
    Gauss-Newton matrix (thesis 3.1.4) as its curvature; CLI name `gn`."""

    name = "gn"

    def __init__(self, net, lr=1.0, structure="full", eps=1e-4, growth=10.0, seed=0, curvature="gn",
                 fisher_kind="exact"):
        if curvature != "gn":
            raise ValueError(f"GaussNewton: curvature is always 'gn', got {curvature!r}; use Newton "
                             "for another curvature")
        super().__init__(net, lr, curvature="gn", structure=structure, eps=eps,
                         fisher_kind=fisher_kind, growth=growth, seed=seed)
