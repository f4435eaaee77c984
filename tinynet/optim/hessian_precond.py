"""The seed-001 preconditioner built on the stochastic (minibatch) Hessian.

Index legend: p parameters; x (p,) the flat parameters; g = grad F(x) the
minibatch gradient; H (p, p) the exact minibatch Hessian of seed 001,
H = D_b (D_xx + D_zx N^{-1} D_x↘) + D_x M^{-1} B_b (D_xz + D_zz N^{-1} D_x↘).

Seed 001 ("Preconditioning is the process of aligning ∇F with the
minimizer"): change variables x = G(y) and run gradient descent on F(G(y)).
With the linear map G = (H + eps I)^{-1/2} (so that the Hessian in y,
G^T H G, is close to the identity, slides "Second order rescaling":
w_new = H^{1/2} w), one gradient step in y, dy = -lr G^T g, maps back to

    dx = G dy = -lr (H + eps I)^{-1} g

which is what `step` applies; G is rebuilt from the current minibatch at
every step. Two solvers:
  * "dense": H assembled by tinynet.curvature.hessian, Cholesky solve with the
    damping fallback of `newton_direction` when H + eps I is indefinite;
  * "cg": conjugate gradient on (H + eps I) d = -g with the structured
    Hessian-vector product hvp (never forming H), capped at cg_iters. On a
    direction of non-positive curvature CG keeps the iterate before it; if
    that is zero the step is the plain gradient step -lr g.
  * "auto": dense when the network passes the dense size guard, else cg.
Seed 001's test of a good preconditioner — the step points at the minimizer
— is measured by tinynet.alignment.
"""
import numpy as np

from tinynet.optim.base import DirectionOptimizer, check_range
from tinynet.optim.cg import conjugate_gradient
from tinynet.optim.hf import curvature_product
from tinynet.optim.newton import _curvature, check_dense_or_suggest_hf, newton_direction

SOLVERS = ("auto", "dense", "cg")


class HessianPreconditioner(DirectionOptimizer):
    """`HessianPreconditioner(net, lr=1.0, eps=1e-3, solver="auto",
    cg_iters=100, cg_tol=1e-8, growth=10.0)`: dx = -lr (H + eps I)^{-1} g with
    H the exact minibatch Hessian (seed 001). metrics: pd (dense) or
    negative_curvature and cg_iters (cg), eps_used, step_norm."""

    name = "hessian-precond"

    def __init__(self, net, lr=1.0, eps=1e-3, solver="auto", cg_iters=100, cg_tol=1e-8, growth=10.0):
        super().__init__(net, lr)
        if solver not in SOLVERS:
            raise ValueError(f"HessianPreconditioner: solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        check_range("HessianPreconditioner", "eps", eps, 0)
        check_range("HessianPreconditioner", "cg_iters", cg_iters, 1, integer=True)
        check_range("HessianPreconditioner", "cg_tol", cg_tol, 0, lo_open=True)
        check_range("HessianPreconditioner", "growth", growth, 1, lo_open=True)
        if solver == "auto":
            try:
                _curvature().check_dense(net)
                solver = "dense"
            except (ValueError, MemoryError):
                solver = "cg"
        elif solver == "dense":
            check_dense_or_suggest_hf(net, "HessianPreconditioner(solver='dense')")
        self.solver, self.eps, self.growth = solver, float(eps), float(growth)
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)

    def direction(self, X, Y):
        """(loss, g, d): d = -(H + eps I)^{-1} g on the host, before lr."""
        loss, gb = self.net.loss_and_gradient(X, Y)
        g = np.array(self.bk.to_host(gb), copy=True)
        if self.solver == "dense":
            d, info = newton_direction(g, _curvature().hessian(self.net, X, Y), self.eps, self.growth)
            self.metrics = {"pd": float(info["pd"]), "eps_used": info["eps_used"]}
            if info["min_eig"] is not None:
                self.metrics["min_eig"] = info["min_eig"]
        else:
            bk, dt = self.bk, self.net.dtype
            Hv_bk = curvature_product(self.net, X, Y, "hessian")          # backend vectors

            def Hv(v):                                                     # host, as this direction is
                return np.asarray(bk.to_host(Hv_bk(bk.asarray(v, dt))), dtype=v.dtype)
            res = conjugate_gradient(lambda v: Hv(v) + self.eps * v, -g, max_iters=self.cg_iters,
                                     tol=self.cg_tol)
            d = res.x if np.any(res.x) else -g
            self.metrics = {"negative_curvature": float(res.negative_curvature),
                            "cg_iters": res.iters, "eps_used": self.eps}
        self.metrics["step_norm"] = float(np.linalg.norm(d)) * self.lr
        return loss, g, d
