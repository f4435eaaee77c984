"""The optimizer interface every method shares.

An optimizer is built on a network (`Optimizer(net, lr, ...)`) and exposes
`step(X, Y) -> loss`: one update from the minibatch (X, Y), returning the
minibatch loss at the parameters *before* the update. It owns whatever passes
it needs (forward, backward, curvature products). `state_dict()` /
`load_state_dict()` carry everything needed to resume bit-for-bit (host
arrays and numbers); `metrics` holds optional per-step diagnostics that the
trainer writes next to the loss.
"""
import numpy as np


class Optimizer:
    name = "optimizer"

    def __init__(self, net, lr):
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr}")
        self.net = net
        self.bk = net.bk
        self.lr = float(lr)
        self.k = 0                 # updates done
        self.metrics = {}

    def step(self, X, Y):
        raise NotImplementedError

    def _vectors(self):
        """name -> backend vector of the optimizer's state, for checkpoints."""
        return {}

    def state_dict(self):
        return {"k": self.k, "lr": self.lr,
                **{name: np.array(self.bk.to_host(v)) for name, v in self._vectors().items()}}

    def load_state_dict(self, state):
        self.k = int(state["k"])
        self.lr = float(state["lr"])
        for name, v in self._vectors().items():
            self.bk.copy_into(v, self.bk.asarray(np.asarray(state[name]), v.dtype))


class DirectionOptimizer(Optimizer):
    """An optimizer whose update is x <- x + lr d, with the direction d from
    `direction(X, Y) -> (loss, g, d)` (host arrays): the Newton family, natural
    gradient and the seed-001 preconditioner, which alignment tools also query
    for d without stepping."""

    def direction(self, X, Y):
        raise NotImplementedError

    def step(self, X, Y):
        loss, _, d = self.direction(X, Y)
        self.bk.axpy(self.lr, self.bk.asarray(d, self.net.dtype), self.net.theta)
        self.k += 1
        return loss
