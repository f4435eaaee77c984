"""Adam (Kingma and Ba, 2015): bias-corrected first and second moment
estimates; see tinynet.kernels.optim.adam for the update."""
from tinynet.optim.base import Optimizer, check_range


class Adam(Optimizer):
    name = "adam"
    distributable = True         # its only batch statistic is the gradient

    def __init__(self, net, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(net, lr)
        # beta = 1 would divide by 1 - beta^t = 0; eps = 0 by sqrt(v) = 0 on a zero gradient
        beta1 = check_range("Adam", "beta1", beta1, 0, 1, hi_open=True)
        beta2 = check_range("Adam", "beta2", beta2, 0, 1, hi_open=True)
        eps = check_range("Adam", "eps", eps, 0, lo_open=True)
        self.b1, self.b2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = self.bk.zeros(net.n_params, net.dtype)
        self.v = self.bk.zeros(net.n_params, net.dtype)

    def _vectors(self):
        return {"m": self.m, "v": self.v}

    def step(self, X, Y):
        loss, g = self.net.loss_and_gradient(X, Y)
        t = self.k + 1
        self.bk.adam_update(self.net.theta, self.m, self.v, g, self.lr, self.b1, self.b2,
                            self.eps, 1 - self.b1 ** t, 1 - self.b2 ** t)
        self.k += 1
        return loss
