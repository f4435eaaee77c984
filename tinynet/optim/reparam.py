"""The zero-overhead quasi-diagonal reparametrization and the whitening
reparametrization (seed 003, slides "Reparametrization" and "Whitening
reparametrization", after Lafond, Vasilache and Bottou).

Each output j of a Linear / Conv2d layer is written

    y_j = beta_j (v_0j + sum_i alpha_i (x_i - mu_i) v_ij)

and trained by SG on v; expressed on the layer's own parameters
(w_ij = beta_j alpha_i v_ij, b_j = beta_j (v_0j - sum_i alpha_i mu_i v_ij))
one SG step on v is, with <.> the minibatch mean and g_j = dl/dy_j:

    delta w_ij = - lr < beta_j^2 g_j alpha_i^2 (x_i - mu_i) >
    delta b_j  = - lr < beta_j^2 g_j >  -  sum_i mu_i delta w_ij

computed without any n x m work beyond the plain gradient's GEMM: with
H' = (H - 1 mu^T) diag(alpha^2) and B' = B diag(beta^2) (B the batch-mean
signal rows), delta W^T = -lr H'^T B' and delta b = -lr (1 - H' mu)^T B'
(O(rows x (n + m)) extra per layer). For a convolution, i runs over the
patch entries (in_channels x kh x kw) and j over the output channels, the
rows over examples and positions.

The statistics move slowly: mu and Var(x) are running averages of the rows'
mean and variance with rate `rate` (the first batch sets them), and
    center:   mu = E[x]           (else mu = 0)
    scale:    "variance": alpha_i^2 = 1 / (Var[x_i] + eps)   (else alpha = 1; eps = 1e-3: an input
              that never varies, as MNIST's border pixels, would get alpha^2 = 1 / eps: with
              eps = 1e-8 the 7x7 MNIST classifier diverges at every lr from 0.05 to 2, with
              1e-3 it reaches 0.40 at lr 0.5 in 200 steps where SGD's best, lr 0.3, is at 0.73)
    beta:     "share-fanin": beta_j^2 = 1 / sqrt(share x fanin)  (else beta = 1)
The defaults are the slides' whitening reparametrization (all three). With
center=False, scale="none", beta="one" it is plain SGD. Stages without
Kronecker rows (BatchNorm) get plain SGD.

The statistics live on the host (float64, O(n + m) per layer); a CUDA run
moves each layer's rows to the host for them.
"""
import math

import numpy as np

from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.newton import check_choice
from tinynet.optim.stats import forward_backward_bk, kron_indices, other_stages_sgd

SCALES = ("variance", "none")
BETAS = ("share-fanin", "one")


class QuasiDiagonal(Optimizer):
    name = "reparam"

    def __init__(self, net, lr=0.01, center=True, scale="variance", beta="share-fanin", rate=0.01, eps=1e-3):
        super().__init__(net, lr)
        check_choice("QuasiDiagonal", "scale", scale, SCALES)
        check_choice("QuasiDiagonal", "beta", beta, BETAS)
        self.rate = check_range("QuasiDiagonal", "rate", rate, 0, 1, lo_open=True)
        self.eps = check_range("QuasiDiagonal", "eps", eps, 0, lo_open=True)
        self.center, self.scale, self.beta = bool(center), scale, beta
        self.kron = kron_indices(net)
        self.stats = {}            # stage index -> {"mu": (n,), "var": (n,)} running averages
        self._grad = self.bk.zeros(net.n_params, net.dtype)

    # -- the three vectors of the reparametrization ------------------------------------------------
    def mu(self, i):
        return self.stats[i]["mu"] if self.center else np.zeros_like(self.stats[i]["mu"])

    def alpha2(self, i):
        v = self.stats[i]["var"]
        return 1.0 / (v + self.eps) if self.scale == "variance" else np.ones_like(v)

    def beta2(self, i):
        s = self.net.layers[i]
        b2 = 1.0 / math.sqrt(int(s.share) * int(s.fan_in)) if self.beta == "share-fanin" else 1.0
        return np.full(s.fan_out, b2)

    def _observe(self, i, H):
        m, v = H.mean(axis=0), H.var(axis=0)
        if i not in self.stats:
            self.stats[i] = {"mu": m, "var": v}
        else:
            st, r = self.stats[i], self.rate
            st["mu"] = (1 - r) * st["mu"] + r * m
            st["var"] = (1 - r) * st["var"] + r * v

    # -- one step ----------------------------------------------------------------------------------
    def layer_update(self, i, H, B):
        """(delta W^T (n, m), delta b (m,)) of stage i from its rows H and signal B (host float64)."""
        mu, a2, b2 = self.mu(i), self.alpha2(i), self.beta2(i)
        Hs = (H - mu) * a2                                   # H' = (H - 1 mu^T) diag(alpha^2)
        Bs = B * b2                                          # B' = B diag(beta^2)
        dWT = -self.lr * (Hs.T @ Bs)
        db = -self.lr * ((1.0 - Hs @ mu) @ Bs)               # -lr (<beta^2 g> - sum_i mu_i <...>)
        return dWT, db

    def step(self, X, Y):
        net, bk = self.net, self.bk
        loss, ctxs, _, Bs = forward_backward_bk(net, X, Y, self._grad)
        for i, B in Bs.items():
            s, (a, b) = net.layers[i], net.offsets[i]
            H = np.asarray(bk.to_host(s.kron_rows(ctxs[i])), dtype=np.float64)
            first = i not in self.stats
            if first:
                self._observe(i, H)                          # the first batch sets the statistics
            dWT, db = self.layer_update(i, H, np.asarray(bk.to_host(B), dtype=np.float64))
            upd = np.concatenate([dWT.reshape(-1), db])      # [vec(dW); db], vec(W) = W^T C-ordered
            bk.axpy(1.0, bk.asarray(upd, net.dtype), net.theta[a:b])
            if not first:
                self._observe(i, H)                          # then this batch moves them slowly
        other_stages_sgd(net, self._grad, self.lr)
        self.k += 1
        return loss

    def state_dict(self):
        st = super().state_dict()
        st["stats"] = {str(i): {k: v.copy() for k, v in d.items()} for i, d in self.stats.items()}
        return st

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stats = {int(i): {k: np.array(v, dtype=np.float64) for k, v in d.items()}
                      for i, d in state.get("stats", {}).items()}
