"""Natural gradient "with a twist" (seed 003; tinynet.optim.twist)."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.models import build_model, mlp
from tinynet.optim import NaturalTwist, RMSProp
from tinynet.optim.twist import direction_angle


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((32, 49)), rng.integers(0, 10, 32)


def test_identity_metric_per_weight_is_rmsprop():
    """G = I, one block per weight, mu = 0: RMSProp with eps = 0 (1e-300, below
    every sqrt(r) here: RMSProp refuses 0, which divides by zero on a dead unit), step for step."""
    a = build_model("tiny-mlp", dtype=np.float64, seed=2)
    b = build_model("tiny-mlp", dtype=np.float64, seed=2)
    twist = NaturalTwist(a, lr=0.01, metric="identity", normalizer="weight", rho=0.9, mu=0.0)
    rms = RMSProp(b, lr=0.01, rho=0.9, eps=1e-300)
    for k in range(5):
        X, y = _problem(k)
        assert twist.step(X, y) == pytest.approx(rms.step(X, y), rel=1e-14)
        np.testing.assert_allclose(a.get_flat(), b.get_flat(), rtol=0, atol=1e-14)


def test_normalizer_is_the_running_average_of_the_block_quadratic():
    net = build_model("tiny-mlp", dtype=np.float64, seed=2)
    opt = NaturalTwist(net, lr=0.05, metric="identity", normalizer="layer", rho=0.5, mu=1e-3)
    X, y = _problem()
    theta = net.get_flat()
    g = net.gradient(X, y)
    opt.step(X, y)
    expect = theta.copy()
    for i, (a, b) in enumerate(net.offsets):
        if b > a:
            n = 0.5 * float(g[a:b] @ g[a:b])
            expect[a:b] -= 0.05 * g[a:b] / np.sqrt(1e-3 + n)
    np.testing.assert_allclose(net.get_flat(), expect, rtol=0, atol=1e-14)


def test_neuron_metric_divides_each_neurons_weights_by_its_second_moment():
    """metric 'neuron': G_j = E[g_j^2] I with g_j = dl/da_j per example, computed
    here from torch-free per-example pre-activation gradients of a one-layer net."""
    net = mlp([6, 3], "tanh", tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=0)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    W, b = net.layers[0].W.copy(), net.layers[0].b.copy()
    Z = X @ W.T + b
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    D = P.copy()
    D[np.arange(10), y] -= 1                             # dl_i/da_i of softmax cross-entropy
    g2 = 0.5 * np.mean(D ** 2, axis=0)                   # running average after one step, rho = 0.5
    gW, gb = D.T @ X / 10, D.mean(0)
    GgW, Ggb = gW / (g2[:, None] + 1e-8), gb / (g2 + 1e-8)
    norm = 0.5 * (np.sum(gW * GgW) + np.sum(gb * Ggb))  # one block: the layer
    opt = NaturalTwist(net, lr=0.1, metric="neuron", normalizer="layer", rho=0.5, mu=0.0, eps=1e-8)
    opt.step(X, y)
    np.testing.assert_allclose(net.layers[0].W, W - 0.1 * GgW / np.sqrt(norm), rtol=1e-12)
    np.testing.assert_allclose(net.layers[0].b, b - 0.1 * Ggb / np.sqrt(norm), rtol=1e-12)


def test_per_block_normalizer_changes_the_direction():
    """The slides' point: a global normalizer only rescales the (G^-1) gradient,
    a per-layer or per-neuron one turns it. Measured on the tiny MLP."""
    X, y = _problem()
    dirs = {}
    for norm in ("global", "layer", "neuron", "weight"):
        net = build_model("tiny-mlp", dtype=np.float64, seed=2)
        _, dirs[norm] = NaturalTwist(net, lr=0.1, normalizer=norm).direction(X, y)
    g = build_model("tiny-mlp", dtype=np.float64, seed=2).gradient(X, y)
    assert direction_angle(dirs["global"], g) < 1e-5
    for norm in ("layer", "neuron", "weight"):
        assert direction_angle(dirs[norm], dirs["global"]) > 1.0, norm


def test_trains_and_resumes(tmp_path):
    from faults import tiny_data, tiny_run
    data = tiny_data()
    _, _, res = tiny_run(data, tmp_path / "r", 40, "twist", 0.01, dict(metric="neuron", normalizer="neuron"))
    assert res.stop_reason == "steps" and res.train_loss < res.history[0]["train_loss"]
    net_a, _, _ = tiny_run(data, tmp_path / "a", 20, "twist", 0.01, dict(metric="neuron"))
    tiny_run(data, tmp_path / "b", 10, "twist", 0.01, dict(metric="neuron"))
    net_b, _, _ = tiny_run(data, tmp_path / "b", 20, "twist", 0.01, dict(metric="neuron"), resume=True)
    assert np.array_equal(net_a.get_flat(), net_b.get_flat())


def test_bad_settings():
    net = build_model("tiny-mlp", dtype=np.float64, seed=2)
    for kw, msg in ((dict(metric="fisher"), "metric must be one of"), (dict(normalizer="x"), "normalizer"),
                    (dict(rho=1.0), "rho"), (dict(mu=-1), "mu"), (dict(metric="neuron", eps=0), "eps")):
        with pytest.raises(ValueError, match=msg):
            NaturalTwist(net, **kw)
