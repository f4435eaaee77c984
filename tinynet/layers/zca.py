"""ZCAWhitening: ZCA whitening of groups of channels (seed 004, the poster's
"ZCA Whitening: Z = W X = U Lambda^{-1/2} U^T X"; draft algorithm 1).

`ZCAWhitening(channels, groups=1, eps=1e-4, backward="hybrid", pi_iters=19,
momentum=0.1, seed=0)`: per group of d = channels/groups consecutive channels
(or features of a vector row), with statistics over the batch and the positions,

  mu = batch mean,  Sigma = 1/m sum (x - mu)(x - mu)^T + eps I  (biased, as the authors' code),
  Z = Sigma^{-1/2} (x - mu) = U Lambda^{-1/2} U^T (x - mu).

backward: "svd" (analytic ED gradient, Kt_ij = 1/(lam_i - lam_j)), "pi" (power
iteration with deflation, forward and backward), "hybrid" (eigh forward, pi_iters
power-iteration steps started at its eigenvectors backward); see tinynet.ed.
Eigenvalues below eps (float32 round-off; power iteration's Rayleigh quotients)
are floored at eps before lam^{-1/2}. Everything else (modes, running estimates
of mu and Sigma^{-1/2}, Jacobians, kernels): tinynet.layers.grouped_ed.

The output covariance is Sigma^{-1/2} (Sigma - eps I) Sigma^{-1/2} = I - eps Sigma^{-1}:
the identity to within eps / lam_min.
"""
import numpy as np

from tinynet.layers.grouped_ed import GroupedEDStage


class ZCAWhitening(GroupedEDStage):
    name = "ZCAWhitening"
    shift_mean = 0.0

    def __init__(self, channels, groups=1, eps=1e-4, backward="hybrid", pi_iters=19, momentum=0.1, seed=0):
        super().__init__(channels, None, groups=groups, eps=eps, backward=backward,
                         pi_iters=pi_iters, momentum=momentum, seed=seed)

    def weights(self, lam):
        """f = lam^{-1/2}, f' = -1/2 lam^{-3/2}, lam floored at eps (the floor passes
        the gradient through: it only repairs round-off below the exact minimum eps)."""
        lf = np.maximum(lam, self.eps) if self.eps > 0 else lam
        return lf ** -0.5, -0.5 * lf ** -1.5
