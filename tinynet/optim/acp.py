"""Amortized covariance preconditioner, ACP (thesis 6.3.2, algorithm 4).

Index legend: n batch, i / o a Linear layer's inputs / outputs; H (n, i) its
input batch, B (n, o) = (1/n) grad_a l_i at its pre-activations, mu the
minibatch mean of h, C the input covariance (6.1.1).

Every T updates (amortization, algorithm 4 lines 3-8), per layer, from the
current minibatch: C and inv_C = (C + eps/alpha I)^{-1} (Tikhonov damping
scaled by 1/alpha, end of 6.3.2). alpha: a fixed value, or "heuristic":
alpha = max over the minibatch and outputs of (grad_a l)^2 (6.3.2) plus the
small constant `alpha_floor` added before dividing (6.5.3.3, against the
instability reported there).

Each update (lines 12-14):
  dW = - lr 1/n sum_i grad_a l_i (h_i - mu)^T inv_C   (eq. 6.2.4)
     = - lr (B^T ((H - 1 mu^T) inv_C))   -- inv_C applied to the batch matrix
       before the weight-gradient GEMM, so it replaces that GEMM
  db = - lr 1/n sum_i grad_a l_i - dW mu               (eq. 6.2.5)
This is the exact minimizer of the local criterion of 6.1 with eps/alpha in
place of eps when the statistics come from the same minibatch (T = 1).
"""
import numpy as np

from tinynet.optim.base import Optimizer
from tinynet.optim.stats import (centered_input, damped_inverse, forward_backward_bk,
                                 input_moments, layer_axpy, other_stages_sgd)


class ACP(Optimizer):
    name = "acp"

    def __init__(self, net, lr=0.1, eps=1e-2, T=100, alpha=1.0, alpha_floor=1e-4):
        super().__init__(net, lr)
        if not eps >= 0:
            raise ValueError(f"ACP: eps must be >= 0, got {eps}")
        if int(T) < 1:
            raise ValueError(f"ACP: amortization T must be >= 1, got {T}")
        if not (alpha == "heuristic" or (isinstance(alpha, (int, float)) and alpha > 0)):
            try:
                alpha = float(alpha)
            except (TypeError, ValueError):
                raise ValueError(f"ACP: alpha must be a positive number or 'heuristic', got {alpha!r}") from None
            if not alpha > 0:
                raise ValueError(f"ACP: alpha must be positive, got {alpha}")
        self.eps, self.T, self.alpha, self.alpha_floor = float(eps), int(T), alpha, float(alpha_floor)
        self.inv_C = {}
        self.alphas = {}
        self._grad = self.bk.zeros(net.n_params, net.dtype)

    def _layer_alpha(self, B):
        if self.alpha != "heuristic":
            return float(self.alpha)
        n = B.shape[0]
        return float(np.max((n * B) ** 2)) + self.alpha_floor      # (6.3.2) + (6.5.3.3)

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
        net, bk = self.net, self.bk
        loss, ctxs, _, Bs = forward_backward_bk(net, X, Y, self._grad)
        if self.k % self.T == 0:                                    # amortization
            for i, (mu, C) in input_moments(net, ctxs).items():
                self.alphas[i] = self._layer_alpha(np.asarray(bk.to_host(Bs[i])))
                inv = damped_inverse(C, self.eps / self.alphas[i]).astype(net.dtype)
                self.inv_C[i] = bk.asarray(inv)
        for i, B in Bs.items():
            mu, Hc = centered_input(bk, ctxs[i][0])
            G = bk.matmul(bk.matmul(Hc, self.inv_C[i]), B, ta=True)   # (eq. 6.2.4): dW^T = -lr G, (i, o)
            db = bk.col_sum(B)
            bk.axpy(-1.0, bk.matmul(mu.reshape(1, -1), G).reshape(-1), db)   # (eq. 6.2.5): - dW mu
            layer_axpy(net, i, -self.lr, G, db)
        other_stages_sgd(net, self._grad, self.lr)
        self.k += 1
        return loss
