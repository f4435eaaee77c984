"""Softmax then multiclass cross-entropy, on logits (thesis appendix A.3, B):
p = softmax(f), l = -sum_j y_j log p_j,
dl/df = p sum_j y_j - y  (= p - y for one-hot y),
d^2 l / df^2 = (sum_j y_j) (diag(p) - p p^T).

Targets: integer class ids (n,) or rows (n, k) (one-hot or soft)."""
import numpy as np

from tinynet.losses.base import Loss


class SoftmaxCrossEntropyLoss(Loss):
    kernel = "softmax_ce"

    def prepare_targets(self, Y, k, dtype):
        Y = np.asarray(Y)
        if Y.ndim == 1 and np.issubdtype(Y.dtype, np.integer):
            if Y.size and (Y.min() < 0 or Y.max() >= k):
                raise ValueError(f"{self!r}: class ids must lie in [0, {k}), got {Y.min()}..{Y.max()}")
            onehot = np.zeros((Y.shape[0], k), dtype=dtype)
            onehot[np.arange(Y.shape[0]), Y] = 1
            return onehot
        return super().prepare_targets(Y, k, dtype)

    def probabilities(self, ctx):
        return self.bk.to_host(self.bk.softmax(ctx[0]))

    def hess_f(self, ctx):
        p = self.probabilities(ctx)
        ys = self.bk.to_host(ctx[1]).sum(axis=1)
        D = -p[:, :, None] * p[:, None, :]
        k = p.shape[1]
        D[:, np.arange(k), np.arange(k)] += p
        return D * ys[:, None, None]

    def hess_f_vp(self, ctx, V):
        p = self.probabilities(ctx)
        V = self.bk.to_host(V)
        ys = self.bk.to_host(ctx[1]).sum(axis=1)
        return (p * V - p * np.sum(p * V, axis=1, keepdims=True)) * ys[:, None]

    def fisher_f(self, ctx):
        """D(f) = diag(p) - p p^T on the logits (appendix B.3, diag(1/p) on the
        probabilities, pulled back through the softmax Jacobian): the
        Gauss-Newton D with sum_j y_j = 1."""
        p = self.probabilities(ctx).astype(np.float64)
        D = -p[:, :, None] * p[:, None, :]
        k = p.shape[1]
        D[:, np.arange(k), np.arange(k)] += p
        return D

    def sample_targets(self, ctx, rng):
        """One-hot rows y ~ Categorical(softmax(f))."""
        p = self.probabilities(ctx).astype(np.float64)
        cdf = np.cumsum(p, axis=1)
        cdf[:, -1] = np.inf                # rounding: the last class closes the interval
        c = (rng.random((p.shape[0], 1)) < cdf).argmax(axis=1)
        Y = np.zeros_like(p)
        Y[np.arange(p.shape[0]), c] = 1.0
        return Y
