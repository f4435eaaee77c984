"""First-order optimizers against torch.optim on the same float64 problem, and
the stepsize schedules of seed 003 against their formulas."""
import numpy as np
import pytest
import torch

import tinynet as tn
from tinynet.optim import SGD, Adam, RMSProp, make_schedule
from tinynet.optim.schedules import Halving, Inverse
from torch_ref import theta_of, torch_loss_fn

rng = np.random.default_rng(5)


def problem():
    net = tn.Sequential([tn.Linear(4, 6), tn.Tanh(), tn.Linear(6, 3)], tn.SoftmaxCrossEntropyLoss(),
                        dtype=np.float64, seed=3)
    batches = [(rng.standard_normal((5, 4)), rng.integers(0, 3, 5)) for _ in range(4)]
    return net, batches


CASES = {
    "sgd": (lambda net: SGD(net, 0.3), lambda p: torch.optim.SGD(p, lr=0.3)),
    "momentum": (lambda net: SGD(net, 0.3, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9)),
    "nesterov": (lambda net: SGD(net, 0.3, momentum=0.9, nesterov=True),
                 lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9, nesterov=True)),
    "rmsprop": (lambda net: RMSProp(net, 0.01, rho=0.9, eps=1e-8),
                lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8)),
    "adam": (lambda net: Adam(net, 0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_optim(name):
    make, make_ref = CASES[name]
    net, batches = problem()
    th = theta_of(net).requires_grad_(True)
    opt, ref = make(net), make_ref([th])
    for X, Y in batches:
        loss = opt.step(X, Y)
        ref.zero_grad()
        L = _ref_loss(net, X, Y, th)
        L.backward()
        ref.step()
        assert abs(loss - L.item()) <= 1e-12 * abs(L.item())
    np.testing.assert_allclose(net.get_flat(), th.detach().numpy(), rtol=1e-10, atol=1e-12)


def _ref_loss(net, X, Y, th):
    return torch_loss_fn(net, X, Y)(th)


def test_schedules():
    assert make_schedule("constant", 0.5)(100) == 0.5
    inv = Inverse(beta=2.0, gamma=10.0)
    assert [inv(k) for k in (0, 10)] == [0.2, 0.1]            # beta / (gamma + k)
    assert make_schedule("inverse", 0.1, gamma=50)(0) == pytest.approx(0.1)
    h = Halving(0.8, period=3)
    assert [h(k) for k in (0, 2, 3, 6, 9)] == [0.8, 0.8, 0.4, 0.2, 0.1]
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("cosine", 0.1)


def test_sgd_uses_schedule():
    net, batches = problem()
    x0 = net.get_flat()
    X, Y = batches[0]
    g = net.gradient(X, Y)
    opt = SGD(net, 1.0, schedule=Inverse(beta=2.0, gamma=4.0))
    opt.step(X, Y)
    np.testing.assert_allclose(net.get_flat(), x0 - 0.5 * g, rtol=1e-12)


def test_state_dict_roundtrip_resumes_exactly():
    net, batches = problem()
    opt = Adam(net, 0.01)
    for X, Y in batches[:2]:
        opt.step(X, Y)
    state, x = opt.state_dict(), net.get_flat()
    for X, Y in batches[2:]:
        opt.step(X, Y)
    final = net.get_flat()
    net2, _ = problem()
    net2.set_flat(x)
    opt2 = Adam(net2, 0.01)
    opt2.load_state_dict(state)
    for X, Y in batches[2:]:
        opt2.step(X, Y)
    assert np.array_equal(net2.get_flat(), final)


def test_bad_hyperparameters():
    net, _ = problem()
    with pytest.raises(ValueError, match=r"lr \(--lr\) must be a number in \(0, inf\)"):
        SGD(net, 0.0)
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        SGD(net, 0.1, nesterov=True)
