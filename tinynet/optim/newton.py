"""Newton-family optimizers with dense curvature matrices (thesis chapter 3).

Index legend: p parameters; g (p,) the minibatch gradient; C (p, p) a
curvature matrix (Hessian, Gauss-Newton or Fisher of the minibatch loss);
blocks are the per-stage slices of the flat vector (DESIGN.md layout).

  Newton step (3.1.1):            dx = -C^{-1} g
  Tikhonov damping (3.1.3):       dx = -lr (C + eps I)^{-1} g
  block-diagonal (3.1.5):         dx_l = -lr (C_ll + eps I)^{-1} g_l, each block alone
  C = Hessian, Gauss-Newton (3.1.4, table 3.I) or Fisher (3.2.3, tables 3.II, 3.III),
  the Fisher exact, Monte-Carlo sampled, or empirical (3.2.4).

structure="block" assembles each C_ll exactly by tinynet.curvature.diagonal_blocks
(p_l directions through the passes, rows of block l kept; never the P x P
matrix), so it runs on nets whose full matrix the size guard refuses (cifar-mlp:
hidden blocks of 10,100 parameters, 0.8 GB each). A block that itself exceeds
the guard (cifar-mlp's first layer: 307,300 parameters, 755 GB) is handled by
`large_blocks`: "refuse" (default) raises the guard's error at construction,
with the memory the block would need and the way out; "cg" runs truncated CG
(tinynet.optim.cg, an approximate solve, not the exact block) on
(C_ll + eps I) d_l = -g_l with the block-restricted products (C [v_l; 0])_l of
hvp / gvp / fvp, `cg_iters` products at most, negative curvature stopping it
(metrics: cg_blocks, cg_iters). The mc and empirical
Fisher have no matrix-free product: their large blocks are always refused.

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

from tinynet.backend_base import host_call
from tinynet.optim.base import DirectionOptimizer, check_range

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
            factor = host_call("host.potrf", scipy.linalg.cho_factor, C64 + shift * np.eye(C64.shape[0]),
                               lower=True, check_finite=False, flops=C64.shape[0] ** 3 / 3.0)
            if not np.all(np.diag(factor[0]) > 0):
                raise np.linalg.LinAlgError("zero pivot")
            break
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            if tries == 0:
                info["pd"] = False
                info["min_eig"] = float(host_call("host.eigvalsh", scipy.linalg.eigvalsh, C64,
                                                  flops=4.0 * C64.shape[0] ** 3 / 3.0)[0])
            shift = max(growth * shift, tau)
    else:   # pragma: no cover - needs eps beyond 1e48 * tau
        raise FloatingPointError("newton_direction: no damping made C + eps I positive definite")
    info["eps_used"] = shift
    info["damping_increases"] = tries
    d = -host_call("host.potrs", scipy.linalg.cho_solve, factor, g64, check_finite=False,
                   flops=2.0 * g64.shape[0] ** 2)
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


LARGE_BLOCKS = ("cg", "refuse")


def plan_blocks(net, who, curvature="hessian", fisher_kind="exact", large_blocks="refuse"):
    """(assembled, cg): the block indices (positions in block_slices) whose
    C_ll and its Cholesky factor fit under the size guard, and those that do
    not and are solved by CG (module docstring). Raises ValueError with the
    guard's message (the memory needed) for a large block that cannot be
    solved matrix-free or when large_blocks="refuse"."""
    cv = _curvature()
    check_choice(who, "large_blocks", large_blocks, LARGE_BLOCKS)
    fit, big = [], []
    for l, (i, s) in enumerate(cv.block_slices(net)):
        p = s.stop - s.start
        try:       # the block and its factor: the guard's DENSE_COPIES for one block
            cv.check_dense(net, nbytes=2 * cv.block_bytes(net, 0, l),
                           what=f"{who}'s block {l} (net.layers[{i}], {p:,} x {p:,}, with its Cholesky factor)")
            fit.append(l)
        except cv.DenseTooLarge as e:
            if large_blocks == "refuse":
                raise ValueError(f"{who}: {e} To solve such blocks approximately by CG over "
                                 f"block-restricted products instead, pass large_blocks='cg' "
                                 f"(--large-blocks cg).") from e
            if curvature == "fisher" and fisher_kind != "exact":
                raise ValueError(f"{who}: {e} The {fisher_kind} Fisher has no matrix-free product for "
                                 f"a CG solve of this block; use fisher_kind='exact' or a smaller net.") from e
            big.append(l)
    return fit, big


def _merge(info, bi):
    info["pd"] &= bi["pd"]
    info["eps_used"] = max(info["eps_used"], bi["eps_used"])
    info["damping_increases"] += bi["damping_increases"]
    if bi["min_eig"] is not None:
        info["min_eig"] = bi["min_eig"] if info["min_eig"] is None else min(info["min_eig"], bi["min_eig"])


def assembled_block_direction(net, X, Y, g, plan, curvature, fisher_kind="exact", seed=0, fisher_samples=1,
                              eps=0.0, growth=10.0, scale=1.0, cg_iters=50):
    """Block-diagonal damped Newton direction (thesis 3.1.5), d_l = -(scale C_ll
    + eps I)^{-1} g_l, with each C_ll assembled exactly on its own
    (curvature.diagonal_blocks, one block in memory at a time) for the blocks
    plan[0], and by truncated CG over block-restricted products for plan[1]
    (module docstring). Returns (d, info) as block_newton_direction, plus
    cg_blocks, cg_iters and cg_negative_curvature in info."""
    cv = _curvature()
    g = np.asarray(g)
    d = np.zeros_like(g)
    info = {"pd": True, "eps_used": float(eps), "damping_increases": 0, "min_eig": None,
            "cg_blocks": 0, "cg_iters": 0, "cg_negative_curvature": 0}
    fit, big = plan
    if fit:
        for _, s, C in cv.diagonal_blocks(net, X, Y, curvature, fisher_kind, seed, fisher_samples, blocks=fit):
            if scale != 1.0:
                C *= scale
            d[s], bi = newton_direction(g[s], C, eps, growth)
            _merge(info, bi)
    if big:
        from tinynet.optim.cg import conjugate_gradient
        prod = {"hessian": cv.hvp, "gn": cv.gvp, "fisher": cv.fvp}[curvature]
        slices = cv.block_slices(net)
        for l in big:
            s = slices[l][1]
            full = np.zeros(net.n_params)

            def A(v, s=s, full=full):         # (scale C [v; 0])_l + eps v
                full[s] = v
                return scale * np.asarray(net.bk.to_host(prod(net, X, Y, full)), dtype=np.float64)[s] + eps * v
            r = conjugate_gradient(A, -np.asarray(g[s], dtype=np.float64), max_iters=int(cg_iters), tol=1e-8)
            d[s] = r.x
            info["cg_blocks"] += 1
            info["cg_iters"] += r.iters
            info["cg_negative_curvature"] += int(r.negative_curvature)
    return d, info


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
    fisher_kind="exact", growth=10.0, seed=0, fisher_samples=1, large_blocks="refuse", cg_iters=50)`.

    One step: dx = -lr (C + eps I)^{-1} g (thesis 3.1.3) with C the minibatch
    Hessian, Gauss-Newton matrix (3.1.4) or Fisher (3.2.3-3.2.4) at the current
    parameters, full or block-diagonal per stage (3.1.5). lr 1 and eps 0 give
    the pure Newton step 3.1.1. seed drives the Monte-Carlo Fisher samples
    (fisher_samples draws per example, seed + k at update k). structure="full" refuses networks
    above the dense size guard; "block" assembles one diagonal block at a time (module docstring).
    metrics: pd, eps_used, damping_increases, min_eig (when not PD), step_norm.
    """

    name = "newton"

    def __init__(self, net, lr=1.0, curvature="hessian", structure="full", eps=1e-4,
                 fisher_kind="exact", growth=10.0, seed=0, fisher_samples=1, large_blocks="refuse", cg_iters=50):
        super().__init__(net, lr)
        who = type(self).__name__
        check_choice(who, "curvature", curvature, CURVATURES)
        check_choice(who, "structure", structure, STRUCTURES)
        check_choice(who, "fisher_kind", fisher_kind, FISHER_KINDS)
        check_range(who, "eps", eps, 0)
        check_range(who, "growth", growth, 1, lo_open=True)    # the damping must grow while C + eps I is not PD
        check_range(who, "fisher_samples", fisher_samples, 1, integer=True)
        check_range(who, "cg_iters", cg_iters, 1, integer=True)
        self.curvature, self.structure, self.fisher_kind = curvature, structure, fisher_kind
        self.eps, self.growth, self.seed = float(eps), float(growth), int(seed)
        self.fisher_samples = int(fisher_samples)
        self.cg_iters = int(cg_iters)
        if structure == "block":
            self.plan = plan_blocks(net, who, curvature, fisher_kind, large_blocks)
        else:
            check_dense_or_suggest_hf(net, who)

    def direction(self, X, Y):
        """(loss, g, d): the minibatch loss, gradient (host) and the damped
        Newton direction d (host, before lr), setting `metrics`."""
        loss, gb = self.net.loss_and_gradient(X, Y)
        g = np.array(self.bk.to_host(gb), copy=True)
        seed = self.seed + self.k
        if self.structure == "block":
            d, info = assembled_block_direction(self.net, X, Y, g, self.plan, self.curvature, self.fisher_kind,
                                                seed, self.fisher_samples, self.eps, self.growth,
                                                cg_iters=self.cg_iters)
        else:
            C = dense_curvature(self.net, X, Y, self.curvature, self.fisher_kind, seed, self.fisher_samples)
            d, info = newton_direction(g, C, self.eps, self.growth)
        self._report(info, d)
        return loss, g, d

    def _report(self, info, d):
        self.metrics = {"pd": float(info["pd"]), "eps_used": info["eps_used"],
                        "damping_increases": info["damping_increases"],
                        "step_norm": float(np.linalg.norm(d)) * self.lr}
        if info["min_eig"] is not None:
            self.metrics["min_eig"] = info["min_eig"]
        if info.get("cg_blocks"):
            self.metrics.update(cg_blocks=info["cg_blocks"], cg_iters=info["cg_iters"],
                                cg_negative_curvature=info["cg_negative_curvature"])


class GaussNewton(Newton):
    """`GaussNewton(net, lr=1.0, structure="full", eps=1e-4)`: Newton with the
    Gauss-Newton matrix (thesis 3.1.4) as its curvature; CLI name `gn`."""

    name = "gn"

    def __init__(self, net, lr=1.0, structure="full", eps=1e-4, growth=10.0, seed=0, curvature="gn",
                 fisher_kind="exact", large_blocks="refuse", cg_iters=50):
        if curvature != "gn":
            raise ValueError(f"GaussNewton: curvature is always 'gn', got {curvature!r}; use Newton "
                             "for another curvature")
        super().__init__(net, lr, curvature="gn", structure=structure, eps=eps,
                         fisher_kind=fisher_kind, growth=growth, seed=seed, large_blocks=large_blocks,
                         cg_iters=cg_iters)
