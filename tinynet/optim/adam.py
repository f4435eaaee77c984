"""Adam (Kingma and Ba, 2015): bias-corrected first and second moment
estimates; see tinynet.kernels.optim.adam for the update."""
from tinynet.optim.base import Optimizer


class Adam(Optimizer):
    name = "adam"

    def __init__(self, net, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(net, lr)
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
