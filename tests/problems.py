"""Small float64 test problems shared by the Newton-family and HF tests."""
import numpy as np

import tinynet as tn


def mse_net(seed=0):
    return tn.Sequential([tn.Linear(3, 4), tn.Tanh(), tn.Linear(4, 2)], tn.MSELoss(),
                         dtype=np.float64, seed=seed)


def ce_net(seed=0):
    return tn.Sequential([tn.Linear(3, 4), tn.Tanh(), tn.Linear(4, 3)], tn.SoftmaxCrossEntropyLoss(),
                         dtype=np.float64, seed=seed)


NETS = {"mse": mse_net, "softmax-ce": ce_net}


def batch(net, n=8, seed=1):
    """Random inputs and targets (real rows for MSE, class ids otherwise)."""
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, net.n_in))
    if isinstance(net.loss_stage, tn.MSELoss):
        Y = r.standard_normal((n, net.n_out))
    else:
        Y = r.integers(0, net.n_out, n)
    return X, Y
