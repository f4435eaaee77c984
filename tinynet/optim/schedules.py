"""Stepsize schedules of the slides (seed 003, "stepsize"): the SG algorithm
w_{k+1} = w_k - alpha_k g_k with

  constant:  alpha_k = lr
  inverse:   alpha_k = beta / (gamma + k)               (003, eq. 4.18)
  halving:   alpha_k = lr / 2^floor(k / period)          (the "halving protocol":
             halve the stepsize every `period` updates)

k counts updates from 0. Registry: `SCHEDULES`."""
from tinynet.optim.base import check_range


class Constant:
    def __init__(self, lr):
        self.lr = lr

    def __call__(self, k):
        return self.lr


class Inverse:
    def __init__(self, beta, gamma):
        check_range("inverse schedule", "schedule_gamma", gamma, 0, lo_open=True)
        check_range("inverse schedule", "lr", beta, 0, lo_open=True)
        self.beta, self.gamma = beta, gamma

    def __call__(self, k):
        return self.beta / (self.gamma + k)


class Halving:
    def __init__(self, lr, period):
        check_range("halving schedule", "schedule_period", period, 1, integer=True)
        self.lr, self.period = lr, int(period)

    def __call__(self, k):
        return self.lr / 2.0 ** (k // self.period)


SCHEDULES = {"constant": Constant, "inverse": Inverse, "halving": Halving}


def make_schedule(name, lr, gamma=None, period=None):
    """`inverse` takes beta = lr * gamma so that alpha_0 = lr."""
    if name == "constant":
        return Constant(lr)
    if name == "inverse":
        g = 100.0 if gamma is None else gamma
        return Inverse(lr * g, g)
    if name == "halving":
        return Halving(lr, 1000 if period is None else period)
    raise ValueError(f"unknown schedule {name!r}; available: {', '.join(SCHEDULES)}")
