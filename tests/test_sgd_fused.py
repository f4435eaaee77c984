"""Plain SGD's update fused into the reverse pass (Sequential.loss_and_sgd_update,
Stage.vjp_sgd, Linear's beta = 1 GEMM) against its definition: theta_1 =
theta_0 - alpha grad(theta_0), the gradient from the unfused loss_and_gradient,
on every parametrized stage kind (Linear, Conv2d, BatchNorm, BatchNorm2d) and
parameter-free ones between them."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.distributed.comm import LocalComm
from tinynet.models import build_model
from tinynet.optim import SGD

rng = np.random.default_rng(11)

NETS = {
    "mlp-bn": lambda dt: tn.Sequential([tn.Linear(6, 8), tn.BatchNorm(8), tn.Sigmoid(), tn.Linear(8, 5), tn.Tanh(),
                                        tn.Linear(5, 3)], tn.SoftmaxCrossEntropyLoss(), dtype=dt, seed=2),
    "autoencoder-mse": lambda dt: tn.Sequential([tn.Linear(7, 4), tn.Sigmoid(), tn.Linear(4, 7)], tn.MSELoss(),
                                                dtype=dt, seed=4),
    "cifar-cnn-bn": lambda dt: build_model("cifar-cnn", dtype=dt, seed=1, batchnorm="full"),
    "tiny-cnn-avg": lambda dt: build_model("tiny-cnn", dtype=dt, seed=1, pool="avg"),
}


def batch(net, n=6):
    d = int(np.prod(net.input_shape))
    X = rng.standard_normal((n, d))
    if isinstance(net.loss_stage, tn.MSELoss):
        return X, rng.standard_normal((n, net.n_out))
    return X, rng.integers(0, net.n_out, n)


@pytest.mark.parametrize("name", sorted(NETS))
def test_fused_step_is_theta_minus_alpha_gradient(name):
    net = NETS[name](np.float64)
    X, Y = batch(net)
    theta0 = np.array(net.theta, copy=True)
    loss_ref, g = net.loss_and_gradient(X, Y)
    expected = theta0 - 0.05 * np.array(g, copy=True)
    net.theta[...] = theta0
    loss = net.loss_and_sgd_update(X, Y, 0.05)
    assert loss == loss_ref
    np.testing.assert_allclose(net.theta, expected, rtol=1e-14, atol=1e-16)
    assert not np.array_equal(net.theta, theta0)


def test_sgd_takes_the_fused_path_only_when_plain():
    """The fused path for plain SGD; momentum, weight decay and per-layer
    stepsizes keep the assembled gradient. Each against its own definition."""
    for kw in ({}, {"momentum": 0.5}, {"weight_decay": 0.1}, {"lr_scaling": "share-fanin"}):
        net = NETS["mlp-bn"](np.float64)
        X, Y = batch(net)
        theta0 = np.array(net.theta, copy=True)
        g = np.array(net.loss_and_gradient(X, Y)[1], copy=True)
        net.theta[...] = theta0
        calls = []
        real = net.loss_and_sgd_update
        net.loss_and_sgd_update = lambda *a: calls.append(1) or real(*a)
        SGD(net, 0.1, **kw).step(X, Y)
        assert bool(calls) == (kw == {}), kw
        if kw in ({}, {"momentum": 0.5}):       # the first momentum step is v = g, a plain step
            np.testing.assert_allclose(net.theta, theta0 - 0.1 * g, rtol=1e-14, atol=1e-16)
        if "weight_decay" in kw:
            np.testing.assert_allclose(net.theta, theta0 - 0.1 * (g + 0.1 * theta0), rtol=1e-14, atol=1e-16)


def test_float32_autoencoder_agrees_with_the_unfused_update():
    """float32, the MNIST autoencoder: the beta = 1 GEMM rounds alpha H^T B + W^T
    once where the product and the axpy round twice: a few ulp of theta."""
    a, b = (build_model("mnist-autoencoder", dtype=np.float32, seed=0) for _ in range(2))
    X = rng.uniform(0, 1, (20, 784)).astype(np.float32)
    for _ in range(3):
        a.loss_and_sgd_update(X, X, 0.01)
        g = b.loss_and_gradient(X, X)[1]
        b.theta -= np.float32(0.01) * g
    np.testing.assert_allclose(a.theta, b.theta, rtol=0, atol=4 * np.finfo(np.float32).eps)


def test_refused_across_ranks():
    net = NETS["autoencoder-mse"](np.float64)

    class TwoRanks(LocalComm):
        size = 2
    net.comm = TwoRanks()
    X, Y = batch(net)
    with pytest.raises(ValueError, match="one process.*all-reduces"):
        net.loss_and_sgd_update(X, Y, 0.1)
