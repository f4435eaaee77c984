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

The update and the statistics run on the network's backend
(tinynet.kernels.reparam): each layer's gradient slice goes to its parameters
in one pass, and [mu; Var] is a float64 backend vector per layer updated from
the rows where they are (float64 sums, also for float32 rows), with mu and
alpha^2 formed from it there. No step copies anything but its loss back;
`stats` reads host copies.
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
        self._run = {}             # stage index -> [mu; Var] running averages, float64 on bk (2 fan_in)
        self._dev = {}             # stage index -> (mu, a2, b2, scratch) float64 on bk, formed from _run
        self._grad = self.bk.zeros(net.n_params, net.dtype)

    @property
    def stats(self):
        """{stage index: {"mu": (n,), "var": (n,)}}: host float64 copies of the
        running averages (set them with set_statistics)."""
        return {i: self._stats_of(i) for i in self._run}

    def _stats_of(self, i):
        h = np.array(self.bk.to_host(self._run[i]), dtype=np.float64)
        return {"mu": h[:len(h) // 2], "var": h[len(h) // 2:]}

    def set_statistics(self, i, mu, var):
        """Set stage i's running mean and variance (host arrays of its fan-in)."""
        n = self.net.layers[i].fan_in
        mu, var = np.asarray(mu, dtype=np.float64), np.asarray(var, dtype=np.float64)
        if mu.shape != (n,) or var.shape != (n,):
            raise ValueError(f"QuasiDiagonal: stage {i} takes mu and var of shape ({n},), got "
                             f"{mu.shape} and {var.shape}")
        self._run[i] = self.bk.asarray(np.concatenate([mu, var]))
        self._refresh(i)

    # -- the three vectors of the reparametrization ------------------------------------------------
    def mu(self, i):
        m = self._stats_of(i)["mu"]
        return m if self.center else np.zeros_like(m)

    def alpha2(self, i):
        v = self._stats_of(i)["var"]
        return 1.0 / (v + self.eps) if self.scale == "variance" else np.ones_like(v)

    def beta2(self, i):
        s = self.net.layers[i]
        b2 = 1.0 / math.sqrt(int(s.share) * int(s.fan_in)) if self.beta == "share-fanin" else 1.0
        return np.full(s.fan_out, b2)

    def _observe(self, i, H):
        """Running averages of stage i's rows H (the first batch sets them): qd_observe."""
        first = i not in self._run
        if first:
            self._run[i] = self.bk.zeros(2 * H.shape[1], np.float64)
        self.bk.launch(_K, "qd_observe", H.shape[1], H, self._run[i], float(self.rate), first,
                       nbytes=H.nbytes)
        self._refresh(i)

    def _refresh(self, i):
        """mu, alpha^2 of stage i from its running averages (qd_vectors), beta^2 once."""
        bk, s = self.bk, self.net.layers[i]
        if i not in self._dev:
            b2 = bk.empty(s.fan_out, np.float64)
            bk.fill(b2, float(self.beta2(i)[0]))
            self._dev[i] = (bk.empty(s.fan_in, np.float64), bk.empty(s.fan_in, np.float64), b2,
                            bk.empty(s.fan_out, np.float64))
        mu, a2 = self._dev[i][:2]
        bk.launch(_K, "qd_vectors", s.fan_in, self._run[i], self.center, self.scale == "variance",
                  float(self.eps), mu, a2, nbytes=4 * mu.nbytes)

    # -- one step ----------------------------------------------------------------------------------
    def layer_update(self, i, gWT, gb):
        """(delta W^T (n, m), delta b (m,)) of stage i from its plain gradient (host
        float64): the definition that step's kernel (tinynet.kernels.reparam) is tested against."""
        mu, a2, b2 = self.mu(i), self.alpha2(i), self.beta2(i)
        dWT = -self.lr * (a2[:, None] * (gWT - np.outer(mu, gb)) * b2[None, :])
        db = -self.lr * b2 * gb - mu @ dWT
        return dWT, db

    def step(self, X, Y):
        net, bk = self.net, self.bk
        # every stage's plain gradient into _grad (the Kronecker stages by their own kernels)
        loss, ctxs, _, _ = forward_backward_bk(net, X, Y, self._grad, grad_of=self.kron)
        if self.weight_decay:
            bk.axpy(self.weight_decay, net.theta, self._grad)
        for i in self.kron:
            s, (a, b) = net.layers[i], net.offsets[i]
            first = i not in self._run
            if first:                                        # the first batch sets the statistics
                self._observe(i, s.kron_rows(ctxs[i]))
            mu, a2, b2, scratch = self._dev[i]
            bk.launch(_K, "qd_update", s.fan_out, self._grad[a:b], mu, a2, b2, float(self.lr),
                      net.theta[a:b], scratch, nbytes=3 * self._grad[a:b].nbytes)   # = layer_update, in place
            if not first and (self.k + 1) % self.stats_every == 0:
                self._observe(i, s.kron_rows(ctxs[i]))     # then they move slowly
        other_stages_sgd(net, self._grad, self.lr)
        self.k += 1
        return loss

    def state_dict(self):
        st = super().state_dict()
        st["stats"] = {str(i): {k: v.copy() for k, v in d.items()} for i, d in self.stats.items()}
        return st

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._run, self._dev = {}, {}
        for i, d in state.get("stats", {}).items():
            self.set_statistics(int(i), d["mu"], d["var"])
