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

computed from the plain gradient (g_W^T = H^T B, g_b = 1^T B, H the input
rows, B the batch-mean signal rows, both never formed here: the layer's own
gradient kernel gives them) in O(n m), the cost of the SGD update itself:

    delta W^T = -lr diag(alpha^2) (g_W^T - mu g_b^T) diag(beta^2)
    delta b   = -lr beta^2 * g_b - mu^T delta W^T

(since (H - 1 mu^T)^T B = H^T B - mu 1^T B). No per-step work over the rows:
the reparametrized step costs what SGD's does, plus O(n + m) vectors. For a
convolution, i runs over the patch entries (in_channels x kh x kw) and j over
the output channels.

The statistics move slowly: mu and Var(x) are running averages of the input
rows' mean and variance with rate `rate`, updated every `stats_every` steps
(the first batch sets them; the only work over the rows, amortized), and
    center:   mu = E[x]           (else mu = 0)
    scale:    "variance": alpha_i^2 = 1 / (Var[x_i] + eps)   (else alpha = 1; eps = 1e-3: an input
              that never varies, as MNIST's border pixels, would get alpha^2 = 1 / eps: with
              eps = 1e-8 the 7x7 MNIST classifier diverges at every lr from 0.05 to 2, with
              1e-3 it reaches 0.40 at lr 0.5 in 200 steps where SGD's best, lr 0.3, is at 0.73)
    beta:     "share-fanin": beta_j^2 = 1 / sqrt(share x fanin)  (else beta = 1)
The defaults are the slides' whitening reparametrization (all three). With
center=False, scale="none", beta="one" it is plain SGD. Stages without
Kronecker rows (BatchNorm) get plain SGD.

The update runs on the network's backend (tinynet.kernels.reparam: each
layer's gradient slice to its parameters in one pass, no copy to the host).
The statistics live on the host (float64, O(n + m) per layer): a statistics
step (every `stats_every`) copies the layer's rows to the host and the new
mu, alpha^2 back up; other steps copy nothing but the loss.
"""
import math

import numpy as np

from tinynet.kernels import reparam as _K
from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.newton import check_choice
from tinynet.optim.stats import forward_backward_bk, kron_indices, other_stages_sgd

SCALES = ("variance", "none")
BETAS = ("share-fanin", "one")


class QuasiDiagonal(Optimizer):
    name = "reparam"

    def __init__(self, net, lr=0.01, center=True, scale="variance", beta="share-fanin", rate=0.01, eps=1e-3,
                 stats_every=10, weight_decay=0.0):
        super().__init__(net, lr)
        check_choice("QuasiDiagonal", "scale", scale, SCALES)
        check_choice("QuasiDiagonal", "beta", beta, BETAS)
        self.rate = check_range("QuasiDiagonal", "rate", rate, 0, 1, lo_open=True)
        self.eps = check_range("QuasiDiagonal", "eps", eps, 0, lo_open=True)
        self.stats_every = check_range("QuasiDiagonal", "stats_every", stats_every, 1, integer=True)
        # L2 on w (the slides' sanity check): the plain gradient gets + weight_decay w before the reparametrization
        self.weight_decay = check_range("QuasiDiagonal", "weight_decay", weight_decay, 0)
        self.center, self.scale, self.beta = bool(center), scale, beta
        self.kron = kron_indices(net)
        self.stats = {}            # stage index -> {"mu": (n,), "var": (n,)} running averages
        self._grad = self.bk.zeros(net.n_params, net.dtype)
        self._dev = {}             # stage index -> (the stats entry they came from, mu, a2, b2, scratch) on bk

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
        rows = H.shape[0]
        m = np.asarray(H.sum(axis=0), dtype=np.float64) / rows
        v = np.maximum(np.einsum("ri,ri->i", H, H, dtype=np.float64) / rows - m * m, 0.0)   # one pass
        if i not in self.stats:
            self.stats[i] = {"mu": m, "var": v}
        else:
            st, r = self.stats[i], self.rate
            st["mu"] = (1 - r) * st["mu"] + r * m
            st["var"] = (1 - r) * st["var"] + r * v

    # -- one step ----------------------------------------------------------------------------------
    def layer_update(self, i, gWT, gb):
        """(delta W^T (n, m), delta b (m,)) of stage i from its plain gradient (host
        float64): the definition that step's kernel (tinynet.kernels.reparam) is tested against."""
        mu, a2, b2 = self.mu(i), self.alpha2(i), self.beta2(i)
        dWT = -self.lr * (a2[:, None] * (gWT - np.outer(mu, gb)) * b2[None, :])
        db = -self.lr * b2 * gb - mu @ dWT
        return dWT, db

    def _device_vectors(self, i):
        """mu, alpha^2, beta^2 of stage i as float64 backend vectors (and the
        kernel's scratch), uploaded again only when its statistics changed."""
        st, bk = self.stats[i], self.bk
        hit = self._dev.get(i)
        if hit is None or hit[0] is not st or hit[1] is not st["mu"] or hit[2] is not st["var"]:
            vecs = [bk.asarray(np.ascontiguousarray(v, dtype=np.float64))
                    for v in (self.mu(i), self.alpha2(i), self.beta2(i))]
            hit = (st, st["mu"], st["var"], *vecs, bk.zeros(self.net.layers[i].fan_out, np.float64))
            self._dev[i] = hit
        return hit[3:]

    def step(self, X, Y):
        net, bk = self.net, self.bk
        # every stage's plain gradient into _grad (the Kronecker stages by their own kernels)
        loss, ctxs, _, _ = forward_backward_bk(net, X, Y, self._grad, grad_of=self.kron)
        if self.weight_decay:
            bk.axpy(self.weight_decay, net.theta, self._grad)
        for i in self.kron:
            s, (a, b) = net.layers[i], net.offsets[i]
            first = i not in self.stats
            if first:                                        # the first batch sets the statistics
                self._observe(i, np.asarray(bk.to_host(s.kron_rows(ctxs[i]))))
            mu, a2, b2, scratch = self._device_vectors(i)
            bk.launch(_K, "qd_update", s.fan_out, self._grad[a:b], mu, a2, b2, float(self.lr),
                      net.theta[a:b], scratch, nbytes=3 * self._grad[a:b].nbytes)   # = layer_update, in place
            if not first and (self.k + 1) % self.stats_every == 0:
                self._observe(i, np.asarray(bk.to_host(s.kron_rows(ctxs[i]))))   # then they move slowly
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
