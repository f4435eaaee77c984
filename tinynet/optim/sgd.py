"""Stochastic gradient descent (seed 003, the generic SG algorithm):
w_{k+1} = w_k - alpha_k g(w_k, xi_k), with alpha_k from a schedule
(tinynet.optim.schedules), optionally with heavy-ball momentum or Nesterov's
variant (v = mu v + g; w -= alpha v, or w -= alpha (g + mu v)).
lr_scaling="share-fanin": each layer's stepsize is alpha / sqrt(share x fanin)
(the slides' per-layer stepsizes, tinynet.optim.lr_scaling). weight_decay:
the gradient of loss + (weight_decay / 2) ||w||^2 (L2 regularization, the
slides' sanity check), g <- g + weight_decay w.
Plain SGD (none of these, one process) takes the same step inside the reverse
pass (Sequential.loss_and_sgd_update): each layer moves as soon as its
gradient is formed, so the flat gradient is never assembled and read back."""
from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.lr_scaling import layer_factors, scale_gradient
from tinynet.optim.schedules import Constant


class SGD(Optimizer):
    name = "sgd"
    distributable = True         # its only batch statistic is the gradient

    def __init__(self, net, lr, momentum=0.0, nesterov=False, schedule=None, lr_scaling="none", weight_decay=0.0):
        super().__init__(net, lr)
        check_range("SGD", "momentum", momentum, 0, 1, hi_open=True)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.schedule = schedule or Constant(self.lr)
        self.v = self.bk.zeros(net.n_params, net.dtype) if momentum > 0 else None
        self.lr_scaling, self.factors = lr_scaling, layer_factors(net, lr_scaling)
        self.weight_decay = check_range("SGD", "weight_decay", weight_decay, 0)

    def _vectors(self):
        return {"v": self.v} if self.v is not None else {}

    def step(self, X, Y):
        alpha = self.schedule(self.k)
        if self.v is None and not self.weight_decay and not self.factors and self.net.comm.size == 1:
            # plain SGD: the update rides in the reverse pass (one pass over theta fewer)
            loss = self.net.loss_and_sgd_update(X, Y, alpha)
        else:
            loss, g = self.net.loss_and_gradient(X, Y)
            if self.weight_decay:
                self.bk.axpy(self.weight_decay, self.net.theta, g)
            scale_gradient(self.bk, g, self.factors)
            if self.v is None:
                self.bk.axpy(-alpha, g, self.net.theta)
            else:
                self.bk.momentum_update(self.net.theta, self.v, g, alpha, self.momentum, self.nesterov)
        self.k += 1
        self.metrics["lr"] = alpha
        return loss
