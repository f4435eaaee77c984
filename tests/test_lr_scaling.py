"""Seed 003's per-layer stepsizes lr / sqrt(share x fanin) (tinynet.optim.lr_scaling)."""
import math

import numpy as np
import pytest

import tinynet as tn
from tinynet.models import build_model
from tinynet.optim import SGD
from tinynet.optim.lr_scaling import layer_factors


def test_factors_of_the_slides_cnn_equal_their_definition():
    """C6(5x5)-P(2x2)-C16(5x5)-F84-F16-F10 on 3x32x32 (slides' CIFAR-10 CNN):
    conv1 applies each weight at 28x28 positions to 3*5*5 inputs, conv2 at 10x10
    positions to 6*5*5; the dense layers share 1 with fanin 16*10*10, 84, 16."""
    net = build_model("cifar-cnn", dtype=np.float64, seed=0)
    expect = [(28 * 28, 75), (10 * 10, 150), (1, 1600), (1, 84), (1, 16)]
    got = layer_factors(net, "share-fanin")
    assert [f for _, f in got] == pytest.approx([1 / math.sqrt(s * k) for s, k in expect], rel=1e-15)
    sizes = [sl.stop - sl.start for sl, _ in got]
    assert sizes == [6 * 75 + 6, 16 * 150 + 16, 84 * 1600 + 84, 16 * 84 + 16, 10 * 16 + 10]
    assert layer_factors(net, "none") == []
    with pytest.raises(ValueError, match="lr_scaling must be one of"):
        layer_factors(net, "fanin")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_is_per_layer_lr(momentum):
    """Two steps with share-fanin equal SGD written out with lr_l = lr / sqrt(share_l fanin_l)."""
    net = build_model("tiny-cnn", dtype=np.float64, seed=1)
    ref = build_model("tiny-cnn", dtype=np.float64, seed=1)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 49)), rng.integers(0, 10, 16)
    opt = SGD(net, 0.5, momentum=momentum, lr_scaling="share-fanin")
    lr_vec = np.full(net.n_params, 0.5)
    for i, (a, b) in enumerate(net.offsets):
        s = net.layers[i]
        if b > a and hasattr(s, "kron_rows"):
            lr_vec[a:b] = 0.5 / math.sqrt(s.share * s.fan_in)
    theta, v = ref.get_flat(), np.zeros(net.n_params)
    for _ in range(2):
        opt.step(X, y)
        g = ref.gradient(X, y)
        v = momentum * v + (lr_vec / 0.5) * g
        theta = theta - 0.5 * v
        ref.set_flat(theta)
    np.testing.assert_allclose(net.get_flat(), theta, rtol=0, atol=1e-14)
    assert any(f < 0.1 for _, f in opt.factors)


def test_cli_flag(tmp_path):
    from click.testing import CliRunner
    from cli.main import main
    base = ["train", "--model", "tiny-cnn", "--batch-size", "20", "--eval-subset", "100", "--steps", "2", "-q"]
    r = CliRunner().invoke(main, base + ["--lr-scaling", "share-fanin", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, base + ["--optimizer", "adam", "--lr-scaling", "share-fanin",
                                         "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "does not take --lr-scaling" in r.output


@pytest.mark.parametrize("name", ["sgd", "reparam"])
def test_weight_decay_is_the_gradient_of_l2(name):
    """weight_decay w added to the gradient = SG on loss + (wd / 2) ||w||^2."""
    from tinynet.optim import build_optimizer
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((16, 49)), rng.integers(0, 10, 16)
    a = build_model("tiny-mlp", dtype=np.float64, seed=1)
    b = build_model("tiny-mlp", dtype=np.float64, seed=1)
    extra = {} if name == "sgd" else dict(center=False, scale="none", beta="one")
    build_optimizer(name, a, 0.1, weight_decay=0.01, **extra).step(X, y)
    theta = b.get_flat()
    expect = theta - 0.1 * (b.gradient(X, y) + 0.01 * theta)
    np.testing.assert_allclose(a.get_flat(), expect, rtol=0, atol=1e-15)
