"""Squared error: l = ||f - y||^2 (sum over outputs, no 1/2; thesis appendix A.1).
dl/df = 2 (f - y);  d^2 l / df^2 = 2 I.
Predictive distribution (Fisher): y ~ N(f, I/2)."""
import numpy as np

from tinynet.losses.base import Loss


class MSELoss(Loss):
    kernel = "mse"

    def hess_f(self, ctx):
        n, k = ctx[0].shape
        return np.broadcast_to(2.0 * np.eye(k, dtype=ctx[0].dtype), (n, k, k)).copy()

    def hess_f_vp(self, ctx, V):
        return 2.0 * self.bk.to_host(V)

    def fisher_f(self, ctx):
        """l = ||f - y||^2 is -log N(y; f, I/2) + const, so D(f) = E[g g^T] with
        g = 2(f - y): 4 * (1/2) I = 2I, the Gauss-Newton D (thesis table 3.II
        with sigma^2 = 1/2 for this unhalved loss)."""
        return self.hess_f(ctx)

    def sample_targets(self, ctx, rng):
        F = np.asarray(self.bk.to_host(ctx[0]), dtype=np.float64)
        return F + np.sqrt(0.5) * rng.standard_normal(F.shape)
