"""Amortized covariance preconditioner, ACP (thesis 6.3.2, algorithm 4).

Index legend: n batch, i / o a layer's fan-in / fan-out; H (n, i) its input
rows (tinynet.optim.stats: the batch of a Linear layer, the patch rows of a
Conv2d, whose C is then the patch covariance times the P positions an
example's criterion sums over), B (n, o) = (1/n) grad_a l_i at its pre-activations, mu the
minibatch mean of h, C the input covariance (6.1.1).

Every T updates (amortization, algorithm 4 lines 3-8), per layer, from the
current minibatch: C and inv_C = (C + eps/alpha I)^{-1} (Tikhonov damping
scaled by 1/alpha, end of 6.3.2). alpha: a fixed value, or "heuristic":
alpha = max over the minibatch and outputs of (grad_a l)^2 (6.3.2) plus the
small constant `alpha_floor` added before dividing (6.5.3.3, against the
instability reported there).

Each update (lines 12-14):
  dW = - (lr/alpha) 1/n sum_i grad_a l_i (h_i - mu)^T inv_C   (eq. 6.2.4)
  db = - (lr/alpha) 1/n sum_i grad_a l_i - dW mu               (eq. 6.2.5)
The factor 1/alpha (step_scale="alpha", the default) is algorithm 4 as printed
(lines 13-14, lambda/alpha): it is the inverse of the alpha I_out factor of the
approximate GN (C + eps/alpha I) (x) alpha I_out of 6.3.2. step_scale="none"
drops it: the minimizer of the local criterion of 6.1 with damping eps/alpha,
this module's reading before issue 20. For a fixed alpha the two differ by
the constant lr/alpha; for the heuristic alpha they differ per layer and per
amortization, and only "alpha" leaves the autoencoder's lowest layers (alpha
~1e-6, so damping eps/alpha ~1e4 and a step ~alpha/eps times the centered
gradient under "none") a step of ~lr/eps times it
(benchmarks/results/long_run.md, "The heuristic alpha").
dW^T is computed by the cheaper of two routes (route="auto"), with Hc = H - 1 mu^T:
  "batch":    (Hc inv_C)^T B, inv_C applied to the batch matrix before the
              weight-gradient GEMM, which it replaces: 2n(i^2 + i o) flops;
  "gradient": inv_C (Hc^T B): 2(n i o + i^2 o) flops, cheaper when o < n
              (the CIFAR MLP's 100-unit layers, whose 3072-input first layer
              would cost 2n i^2 = 3.8 GFLOP a step on the batch route).
This is the exact minimizer of the local criterion of 6.1 with eps/alpha in
place of eps when the statistics come from the same minibatch (T = 1).

moments="auto" forms the amortized mu, C and the heuristic alpha where the
network lives (tinynet.optim.device_moments: on device="cuda" only mu and C
come down for the inversion, not the input rows); "host" copies the rows and
forms them in float64 (stats.input_moments), as over MPI, where the reduced
statistics are host sums.

Defaults lr = 0.3, eps = 0.1, alpha = 1: on the MNIST autoencoder (batch 200,
T = 100; benchmarks/chapter6_sweep.py) the ratio lr / (eps / alpha) decides:
about 3 trains well past SGD (loss 10-14 after 1500 updates against SGD's
45), about 10 or more diverges at an inverse refresh, where directions of
low input variance in the new C are amplified by up to alpha / eps (thesis
6.5.3.3), and much less than 1 stays on the mean-image plateau. Even at
ratio 3 this is fragile: (lr 0.1, eps 0.03) and (lr 1, eps 0.3) reached 9.7
and 11.9 in the sweep's minibatch order but diverged in `tinynet train`'s
seeded epochs; (0.3, 0.1) trained in both (14.1 and 10.7). The heuristic alpha is
below the 1e-4 floor for the lowest layers of that net; under
step_scale="none" those layers then barely moved, and no setting of eps
tried there left the plateau without diverging (results/thesis_fig6.md,
measured before step_scale existed).
"""
import numpy as np

from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.device_moments import device_input_moments, device_sq_max, moment_store
from tinynet.optim.stats import (centered_input, damped_inverse, forward_backward_bk,
                                 input_moments, layer_axpy, layer_slot, other_stages_sgd, reduced_covariances,
                                 reduced_means, shares, sum_shares_and_step)


class ACP(Optimizer):
    name = "acp"
    distributable = True     # _step_reduced

    def __init__(self, net, lr=0.3, eps=0.1, T=100, alpha=1.0, alpha_floor=1e-4, route="auto",
                 step_scale="alpha", moments="auto"):
        super().__init__(net, lr)
        self.moments = moment_store("ACP", net, moments)
        if route not in ("auto", "batch", "gradient"):
            raise ValueError(f"ACP: route must be 'auto', 'batch' or 'gradient', got {route!r}")
        if step_scale not in ("alpha", "none"):
            raise ValueError(f"ACP: step_scale (--acp-step-scale) must be 'alpha' (algorithm 4's lr/alpha) "
                             f"or 'none' (the local criterion's lr), got {step_scale!r}")
        self.route, self.step_scale = route, step_scale
        if not (alpha == "heuristic" or (isinstance(alpha, (int, float)) and alpha > 0)):
            try:
                alpha = float(alpha)
            except (TypeError, ValueError):
                raise ValueError(f"ACP: alpha must be a positive number or 'heuristic', got {alpha!r}") from None
            if not alpha > 0:
                raise ValueError(f"ACP: alpha must be positive, got {alpha}")
        check_range("ACP", "eps", eps, 0)
        check_range("ACP", "T", T, 1, integer=True)
        check_range("ACP", "alpha_floor", alpha_floor, 0, lo_open=True)
        if alpha != "heuristic":
            check_range("ACP", "alpha", alpha, 0, lo_open=True)
        self.eps, self.T, self.alpha, self.alpha_floor = float(eps), int(T), alpha, float(alpha_floor)
        self.inv_C = {}
        self.alphas = {}
        self.C = {}              # the (share-scaled) covariance each inv_C was computed from
        self._grad = self.bk.zeros(net.n_params, net.dtype)

    def _step_factor(self, i):
        """lr times what multiplies layer i's update: 1/alpha_i (algorithm 4) or 1."""
        return self.lr / self.alphas[i] if self.step_scale == "alpha" else self.lr

    def _layer_alpha(self, B, share=1):
        """B: the layer's signal rows, a backend array (the max is taken there)."""
        if self.alpha != "heuristic":
            return float(self.alpha)
        n = B.shape[0] // share                                    # examples (B has n * share rows)
        return device_sq_max(self.bk, B, n) + self.alpha_floor     # max (n B)^2 (6.3.2) + (6.5.3.3)

    def last_matrices(self):
        """What the last step applied, host float64 (empty before the first step),
        keyed "block{l}/NAME" (l the block index of curvature.block_slices): C
        (the input covariance of the last amortization, times share for a
        convolution), inv_C = (C + eps/alpha I)^{-1}, alpha and the damping eps/alpha."""
        out = {}
        blocks = {i: l for l, (i, _) in enumerate(self.net.slices())}
        for i, inv in self.inv_C.items():
            key = f"block{blocks[i]}/"
            if i in self.C:
                out[key + "C"] = np.array(self.C[i], dtype=np.float64)
            out[key + "inv_C"] = np.array(self.bk.to_host(inv), dtype=np.float64)
            out[key + "alpha"] = np.array(self.alphas[i])
            out[key + "damping"] = np.array(self.eps / self.alphas[i])
        return out

    def state_dict(self):
        """k, lr, and per layer the damped inverse and alpha (resume bit-for-bit)."""
        st = super().state_dict()
        st["inv_C"] = {str(i): np.array(self.bk.to_host(m)) for i, m in self.inv_C.items()}
        st["alphas"] = {str(i): a for i, a in self.alphas.items()}
        return st

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.inv_C = {int(i): self.bk.asarray(np.asarray(m, dtype=self.net.dtype))
                      for i, m in state.get("inv_C", {}).items()}
        self.alphas = {int(i): float(a) for i, a in state.get("alphas", {}).items()}

    def step(self, X, Y):
        if self.net.comm.size > 1:
            return self._step_reduced(X, Y)
        net, bk = self.net, self.bk
        loss, ctxs, _, Bs = forward_backward_bk(net, X, Y, self._grad)
        centered = {i: centered_input(bk, net.layers[i].kron_rows(ctxs[i])) for i in Bs}
        if self.k % self.T == 0:                                    # amortization
            sh = shares(net)
            moments = (device_input_moments(net, ctxs, centered) if self.moments == "device"
                       else input_moments(net, ctxs))
            for i, (mu, C) in moments.items():
                self.alphas[i] = self._layer_alpha(Bs[i], sh[i])
                # a convolution's criterion sums its positions: C of the patch rows times share
                self.C[i] = sh[i] * C
                inv = damped_inverse(self.C[i], self.eps / self.alphas[i], net.dtype)
                self.inv_C[i] = bk.asarray(inv)
        for i, B in Bs.items():
            mu, Hc = centered[i]
            n, o = B.shape
            if self.route == "batch" or (self.route == "auto" and n < o):
                # inv_C is symmetric: tb=True is the same product on BLAS's faster path
                G = bk.matmul(bk.matmul(Hc, self.inv_C[i], tb=True), B, ta=True)   # (eq. 6.2.4): dW^T = -lr G, (i, o)
            else:
                G = bk.matmul(self.inv_C[i], bk.matmul(Hc, B, ta=True))   # the same, inv_C (Hc^T B)
            db = bk.col_sum(B)
            bk.axpy(-1.0, bk.matmul(mu.reshape(1, -1), G).reshape(-1), db)   # (eq. 6.2.5): - dW mu
            layer_axpy(net, i, -self._step_factor(i), G, db)
        other_stages_sgd(net, self._grad, self.lr)
        self.k += 1
        return loss

    def _step_reduced(self, X, Y):
        """The same update from P ranks' shards (tinynet.distributed). First the
        minibatch mean mu of every layer's input rows, from all-reduced column
        sums ("moments": sum_l i_l numbers, with the loss); at amortization the
        centered second moments (H - 1 mu^T)^T (H - 1 mu^T) ("covariance", sum_l
        i_l (i_l + 1) / 2) and, for the heuristic alpha, the maximum of
        (grad_a l)^2. With that mu, (6.2.4)-(6.2.5) are linear in the rows: each
        rank forms its shard's dW^T and db by the route that is cheaper for its
        rows, writes them where the layer's gradient would be, and one
        all-reduce ("gradient": |theta| numbers) sums them with the plain
        gradient of the other stages."""
        net, bk, comm = self.net, self.bk, self.net.comm
        kron = sorted(shares(net))
        loss, ctxs, lctx, Bs = forward_backward_bk(net, X, Y, self._grad)
        rows = {i: net.layers[i].kron_rows(ctxs[i]) for i in kron}
        mus, loss = reduced_means(net, ctxs, comm, loss, rows)
        if self.k % self.T == 0:                                          # amortization
            self._amortize_reduced(kron, ctxs, mus, Bs)
        for i in kron:
            B = Bs[i]
            out = layer_slot(net, self._grad, i)                           # [dW^T; db^T] of this shard
            mu = bk.asarray(mus[i].astype(net.dtype))
            neg = bk.copy(mu)
            bk.scale(-1.0, neg)
            Hc = bk.add_bias(bk.copy(rows[i]), neg)                        # H - 1 mu^T, the global mu
            n, o = B.shape
            if self.route == "batch" or (self.route == "auto" and n < o):
                bk.matmul(bk.matmul(Hc, self.inv_C[i], tb=True), B, out=out[:-1], ta=True)   # (eq. 6.2.4)
            else:
                bk.matmul(self.inv_C[i], bk.matmul(Hc, B, ta=True), out=out[:-1])
            db = bk.col_sum(B)
            bk.axpy(-1.0, bk.matmul(mu.reshape(1, -1), out[:-1]).reshape(-1), db)       # (eq. 6.2.5)
            bk.copy_into(out[-1], db)
            if self.step_scale == "alpha":                                 # alphas agree on every rank
                bk.scale(1.0 / self.alphas[i], out.reshape(-1))
        sum_shares_and_step(net, self._grad, self.lr, kron)
        self.k += 1
        return loss

    def _amortize_reduced(self, kron, ctxs, mus, Bs):
        net, bk, comm = self.net, self.bk, self.net.comm
        sh = shares(net)
        C = reduced_covariances(net, ctxs, mus, comm)
        if self.alpha == "heuristic":
            alphas = comm.allreduce_max([self._layer_alpha(Bs[i], sh[i]) for i in kron], "alpha")
        else:
            alphas = [float(self.alpha)] * len(kron)
        for j, i in enumerate(kron):
            self.alphas[i] = float(alphas[j])
            self.C[i] = sh[i] * C[i]
            self.inv_C[i] = bk.asarray(damped_inverse(self.C[i], self.eps / self.alphas[i], net.dtype))
