"""PCADenoising: reconstruction from the top-k principal directions of groups of
channels (seed 004, the poster's "PCA Denoising: Z = U_k U_k^T X"; draft 3.2).

`PCADenoising(channels, k, groups=1, eps=1e-4, backward="hybrid", pi_iters=19,
momentum=0.1, seed=0)`: per group of d = channels/groups consecutive channels
(statistics over the batch and the positions), mu = batch mean,
Sigma = 1/m sum (x - mu)(x - mu)^T + eps I (biased), U_k its k leading eigenvectors,

  Z = U_k U_k^T (x - mu) + mu.

The poster writes Z = U_k U_k^T X on centred features; tinynet adds the mean
back, as the issue's convention fixes (docs/errata.md). backward as for
ZCAWhitening ("svd", "pi", "hybrid"; tinynet.ed), with the k leading eigenpairs
only (power iteration deflates k times). The running estimate for evaluation is
that of the projector U_k U_k^T. Everything else: tinynet.layers.grouped_ed.
"""
import numpy as np

from tinynet.layers.grouped_ed import GroupedEDStage


class PCADenoising(GroupedEDStage):
    name = "PCADenoising"
    shift_mean = 1.0

    def __init__(self, channels, k, groups=1, eps=1e-4, backward="hybrid", pi_iters=19, momentum=0.1, seed=0):
        super().__init__(channels, k, groups=groups, eps=eps, backward=backward,
                         pi_iters=pi_iters, momentum=momentum, seed=seed)
        self.k = self.r

    def _extra_repr(self):
        return f", k={self.k}"

    def weights(self, lam):
        """f = 1, f' = 0: the projector does not depend on the eigenvalues."""
        return np.ones_like(lam), np.zeros_like(lam)
