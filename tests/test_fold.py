"""fold_batchnorm: the network without its BN stages computes what the
network with them computes in evaluation mode."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.fold import fold_batchnorm
from tinynet.models import build_model, mlp


def _train_a_little(net, X, y, steps=5):
    opt = tn.optim.SGD(net, 0.05)
    for _ in range(steps):
        opt.step(X, y)


@pytest.mark.parametrize("kind", ["full", "mean-only"])
def test_dense(kind):
    rng = np.random.default_rng(0)
    net = mlp([6, 5, 4, 3], "tanh", tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, batchnorm=kind, seed=1)
    X, y = rng.standard_normal((20, 6)) * 2 + 1, rng.integers(0, 3, 20)
    _train_a_little(net, X, y)
    folded = fold_batchnorm(net)
    assert not any("BatchNorm" in type(s).__name__ for s in folded.layers)
    net.train(False)
    np.testing.assert_allclose(folded.forward(X), net.forward(X), rtol=1e-12, atol=1e-12)


def test_cnn():
    rng = np.random.default_rng(1)
    net = build_model("cifar-cnn", dtype=np.float64, batchnorm="full", seed=2)
    X, y = rng.standard_normal((6, 3 * 32 * 32)), rng.integers(0, 10, 6)
    _train_a_little(net, X, y, 3)
    folded = fold_batchnorm(net)
    assert folded.n_params == build_model("cifar-cnn", dtype=np.float64).n_params
    net.train(False)
    np.testing.assert_allclose(folded.forward(X), net.forward(X), rtol=1e-10, atol=1e-10)


def test_refuses_a_bn_that_does_not_follow_a_layer():
    net = tn.Sequential([tn.Linear(3, 3), tn.Tanh(), tn.BatchNorm(3), tn.Linear(3, 2)], tn.MSELoss())
    with pytest.raises(ValueError, match=r"follows Tanh\(\), not a Linear or Conv2d"):
        fold_batchnorm(net)
