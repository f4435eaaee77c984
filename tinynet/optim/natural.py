"""Natural gradient descent in the form of thesis 3.2.2.

Index legend: p parameters; g = grad_theta R (p,); F (p, p) the minibatch
Fisher information matrix (3.2.3; exact, Monte-Carlo or empirical, 3.2.4).

The update solves  argmin_dθ  dθ^T g + 1/(2λ) dθ^T dθ + 1/(2ε) dθ^T F dθ:

    dθ = -λ (I + (λ/ε) F)^{-1} g                                   (3.2.2)

with the thesis's two hyperparameters: λ (`lr`) bounds the change of the
parameters, ε (`eps`) the change of the modelled distribution (KL ≈ dθ^T F dθ).
It equals the damped Newton step -ε (F + (ε/λ) I)^{-1} g, but is computed
from its own closed form: C = (λ/ε) F solved with unit damping by the shared
`newton_direction`, then scaled by λ. Block-diagonal per stage with
structure="block" (3.2.4, first approximation), each F_ll assembled on its
own (tinynet.curvature.diagonal_blocks; see tinynet.optim.newton).
"""
import numpy as np

from tinynet.optim.base import DirectionOptimizer, check_range
from tinynet.optim.newton import (FISHER_KINDS, STRUCTURES, assembled_block_direction, check_choice,
                                  check_dense_or_suggest_hf, dense_curvature, newton_direction, plan_blocks)


class NaturalGradient(DirectionOptimizer):
    """`NaturalGradient(net, lr=1.0, eps=1.0, fisher_kind="exact",
    structure="full", seed=0, fisher_samples=1)`: dθ = -lr (I + (lr/eps) F)^{-1} g (thesis 3.2.2).
    metrics: step_norm, and pd / eps_used as for Newton (I + (λ/ε)F is
    positive definite unless F has round-off negative eigenvalues)."""

    name = "natural"

    def __init__(self, net, lr=1.0, eps=1.0, fisher_kind="exact", structure="full", seed=0, fisher_samples=1,
                 large_blocks="refuse", cg_iters=50):
        super().__init__(net, lr)
        check_choice("NaturalGradient", "fisher_kind", fisher_kind, FISHER_KINDS)
        check_choice("NaturalGradient", "structure", structure, STRUCTURES)
        check_range("NaturalGradient", "eps", eps, 0, lo_open=True)
        check_range("NaturalGradient", "fisher_samples", fisher_samples, 1, integer=True)
        check_range("NaturalGradient", "cg_iters", cg_iters, 1, integer=True)
        self.eps, self.fisher_kind, self.structure, self.seed = float(eps), fisher_kind, structure, int(seed)
        self.fisher_samples = int(fisher_samples)
        self.cg_iters = int(cg_iters)
        if structure == "block":       # one exact F_ll at a time (tinynet.optim.newton, module docstring)
            self.plan = plan_blocks(net, "NaturalGradient", "fisher", fisher_kind, large_blocks)
        else:
            check_dense_or_suggest_hf(net, "NaturalGradient")

    def direction(self, X, Y):
        """(loss, g, d) with d = -(I + (λ/ε) F)^{-1} g (host; the step is λ d)."""
        loss, gb = self.net.loss_and_gradient(X, Y)
        g = np.array(self.bk.to_host(gb), copy=True)
        seed = self.seed + self.k
        if self.structure == "block":
            d, info = assembled_block_direction(self.net, X, Y, g, self.plan, "fisher", self.fisher_kind, seed,
                                                self.fisher_samples, eps=1.0, scale=self.lr / self.eps,
                                                cg_iters=self.cg_iters)
        else:
            F = dense_curvature(self.net, X, Y, "fisher", self.fisher_kind, seed, self.fisher_samples)
            d, info = newton_direction(g, (self.lr / self.eps) * np.asarray(F, dtype=np.float64), 1.0)
        self.metrics = {"pd": float(info["pd"]), "eps_used": info["eps_used"],
                        "step_norm": float(np.linalg.norm(d)) * self.lr}
        return loss, g, d
