"""Binary cross-entropy on probabilities (thesis appendix A.2):
l = -sum_j y_j log f_j + (1 - y_j) log(1 - f_j),
dl/df = (f - y) / (f (1 - f)),
d^2 l / df^2 = diag(y / f^2 + (1 - y) / (1 - f)^2).

f is clipped to [eps, 1 - eps] (eps = 1e-7 in float32, 1e-15 in float64) so
that a saturated output gives a large, finite loss instead of inf; inside
(eps, 1 - eps) the formulas are exact."""
import numpy as np

from tinynet.losses.base import Loss


class BCELoss(Loss):
    kernel = "bce"

    def _eps(self, dtype):
        return 1e-15 if np.dtype(dtype) == np.float64 else 1e-7

    def _kernel(self, F, Y, scale):
        return self.bk.loss("bce", F, Y, scale, eps=self._eps(F.dtype))

    def clip_bounds(self, dtype):
        """(eps, 1 - eps) in `dtype`: the interval f is clipped to (module docstring)."""
        e = self._eps(dtype)
        return np.dtype(dtype).type(e), np.dtype(dtype).type(1 - e)

    def _fy(self, ctx):
        F = self.bk.to_host(ctx[0])
        return np.clip(F, *self.clip_bounds(F.dtype)), self.bk.to_host(ctx[1])

    def hess_f(self, ctx):
        f, y = self._fy(ctx)
        d = y / f**2 + (1 - y) / (1 - f) ** 2
        n, k = f.shape
        D = np.zeros((n, k, k), dtype=f.dtype)
        D[:, np.arange(k), np.arange(k)] = d
        return D

    def hess_f_vp(self, ctx, V):
        f, y = self._fy(ctx)
        return (y / f**2 + (1 - y) / (1 - f) ** 2) * self.bk.to_host(V)

    def fisher_f(self, ctx):
        """D(f) = diag(1 / (f (1 - f))) (thesis table 3.II, appendix B.2):
        independent Bernoulli(f_j) outputs."""
        f, _ = self._fy(ctx)
        n, k = f.shape
        D = np.zeros((n, k, k), dtype=np.float64)
        D[:, np.arange(k), np.arange(k)] = 1.0 / (f * (1 - f))
        return D

    def sample_targets(self, ctx, rng):
        f, _ = self._fy(ctx)
        return (rng.random(f.shape) < f).astype(np.float64)
