"""RMSProp (seed 003, "natural gradient with a twist", its G = I case):
r = rho r + (1 - rho) g^2;  w -= lr g / (sqrt(r) + eps)."""
from tinynet.optim.base import Optimizer, check_range


class RMSProp(Optimizer):
    name = "rmsprop"
    distributable = True         # its only batch statistic is the gradient

    def __init__(self, net, lr=1e-3, rho=0.9, eps=1e-8):
        super().__init__(net, lr)
        rho = check_range("RMSProp", "rho", rho, 0, 1, hi_open=True)
        eps = check_range("RMSProp", "eps", eps, 0, lo_open=True)
        self.rho, self.eps = float(rho), float(eps)
        self.r = self.bk.zeros(net.n_params, net.dtype)

    def _vectors(self):
        return {"r": self.r}

    def step(self, X, Y):
        loss, g = self.net.loss_and_gradient(X, Y)
        self.bk.rmsprop_update(self.net.theta, self.r, g, self.lr, self.rho, self.eps)
        self.k += 1
        return loss
