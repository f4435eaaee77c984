"""Centered gradient descent (thesis 6.3.1, algorithm 3).

Index legend: n batch, i / o a Linear layer's inputs / outputs; H (n, i) its
input batch, B (n, o) = (1/n) grad_a l_i the back-propagated batch-mean gradient
at its pre-activations, mu the minibatch mean of h.

Per layer with Kronecker rows (Linear; Conv2d with its patch rows, mu their mean
over examples and positions) (algorithm 3, lines 5-6, the centered part of eq. 6.2.4):
  b <- b - lr 1/n sum_i grad_a l_i             (= - lr sum_rows B; bias as the thesis writes it)
  W <- W - lr 1/n sum_i grad_a l_i (h_i - mu)^T (= - lr B^T (H - 1 mu^T))
Other stages with parameters get plain SGD.

Data-parallel (net.comm over P ranks): mu is the mean over every rank's rows
(tinynet.optim.stats.reduced_means); with it the update is linear in the rows,
so each rank writes its shard's share where the gradient would be and one
all-reduce sums them ("gradient", |theta| numbers).
"""
from tinynet.optim.base import Optimizer
from tinynet.optim.stats import (centered_input, forward_backward_bk, layer_axpy, layer_slot, other_stages_sgd,
                                 reduced_means, sum_shares_and_step)


class Centered(Optimizer):
    name = "centered"
    distributable = True     # _step_reduced

    def __init__(self, net, lr=0.01):
        super().__init__(net, lr)
        self._grad = self.bk.zeros(net.n_params, net.dtype)

    def step(self, X, Y):
        if self.net.comm.size > 1:
            return self._step_reduced(X, Y)
        bk = self.bk
        loss, ctxs, _, Bs = forward_backward_bk(self.net, X, Y, self._grad)
        for i, B in Bs.items():
            _, Hc = centered_input(bk, self.net.layers[i].kron_rows(ctxs[i]))           # centering (eq. 6.2.4)
            layer_axpy(self.net, i, -self.lr, bk.matmul(Hc, B, ta=True), bk.col_sum(B))
        other_stages_sgd(self.net, self._grad, self.lr)
        self.k += 1
        return loss

    def _step_reduced(self, X, Y):
        net, bk, comm = self.net, self.bk, self.net.comm
        loss, ctxs, _, Bs = forward_backward_bk(net, X, Y, self._grad)
        rows = {i: net.layers[i].kron_rows(ctxs[i]) for i in Bs}
        mus, loss = reduced_means(net, ctxs, comm, loss, rows)
        for i, B in Bs.items():
            out = layer_slot(net, self._grad, i)                           # [dW^T; db^T] of this shard
            neg = bk.asarray((-mus[i]).astype(net.dtype))
            Hc = bk.add_bias(bk.copy(rows[i]), neg)                        # H - 1 mu^T, the global mu
            bk.matmul(Hc, B, out=out[:-1], ta=True)
            bk.copy_into(out[-1], bk.col_sum(B))
        sum_shares_and_step(net, self._grad, self.lr, Bs)
        self.k += 1
        return loss
