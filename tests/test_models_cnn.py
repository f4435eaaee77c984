"""The convolutional models of tinynet.models (issue 11) and their way through
the data readers and the CLI:

  cifar-cnn     parameter count and forward (float64, a few random rows) equal an
                independent torch.nn model of the same architecture with the
                weights copied in (torch_weight = W.reshape(O, C, kh, kw), W the
                (O, K) matrix of the stage's [vec(W) column-major; b] slice), for
                both pooling kinds, one or two poolings, with and without batch norm
  tiny-cnn      small enough for dense matrices; its dense Hessian equals
                torch.func.hessian of the mirror in tests/torch_ref.py
  data          cifar10-standardized: per-channel constants from the training
                split, the same constants on the test split
  CLI           `tinynet train` on both models (architecture recorded in
                config.json), `tinynet inspect` on tiny-cnn, the option errors
"""
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import main
from tinynet import curvature as cv
from tinynet.layers import BatchNorm, BatchNorm2d, Conv2d, Linear
from tinynet.models import MODEL_OPTIONS, build_model, model_options
from torch_ref import theta_of, torch_loss_fn

CIFAR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10"))
needs_cifar = pytest.mark.skipif(
    not os.path.exists(os.path.join(CIFAR, "cifar-10-batches-py", "test_batch")), reason="shared CIFAR-10 not present")

# (pool, second_pool, batchnorm) -> parameter count worked out by hand:
# conv1 6*75+6 = 456, conv2 16*150+16 = 2416, F84 (1600 or 400)*84+84, F16 84*16+16 = 1360, F10 170;
# batch norm adds 2 per channel / feature: 2*(6+16+84+16) = 244
VARIANTS = {
    "max-one-pool": ("max", False, None, 138_886),
    "avg-one-pool": ("avg", False, None, 138_886),
    "max-two-pools": ("max", True, None, 38_086),
    "avg-two-pools": ("avg", True, None, 38_086),
    "max-one-pool-bn": ("max", False, "full", 139_130),
    "avg-two-pools-bn": ("avg", True, "full", 38_330),
}


def torch_cifar_cnn(pool, second_pool, batchnorm):
    """C6(5x5)-P(2x2)-C16(5x5)-F84-F16-F10 with ReLU, written in torch.nn."""
    nn = torch.nn
    P = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    bn = batchnorm == "full"

    def norm(cls, c):
        return [cls(c, eps=1e-5, momentum=0.1)] if bn else []
    layers = [nn.Conv2d(3, 6, 5)] + norm(nn.BatchNorm2d, 6) + [nn.ReLU(), P(2)]
    layers += [nn.Conv2d(6, 16, 5)] + norm(nn.BatchNorm2d, 16) + [nn.ReLU()]
    layers += [P(2)] if second_pool else []
    layers += [nn.Flatten(), nn.Linear(400 if second_pool else 1600, 84)] + norm(nn.BatchNorm1d, 84) + [nn.ReLU()]
    layers += [nn.Linear(84, 16)] + norm(nn.BatchNorm1d, 16) + [nn.ReLU(), nn.Linear(16, 10)]
    return nn.Sequential(*layers).double()


def copy_weights(net, model):
    """tinynet's flat vector into the torch modules, stage by stage in order."""
    theta = net.get_flat().astype(np.float64)
    mods = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear,
                                               torch.nn.BatchNorm2d, torch.nn.BatchNorm1d))]
    stages = [(s, net.offsets[i]) for i, s in enumerate(net.layers) if s.n_params]
    assert len(mods) == len(stages)
    with torch.no_grad():
        for m, (s, (a, b)) in zip(mods, stages):
            x = theta[a:b]
            if isinstance(s, (Linear, Conv2d)):
                O = m.weight.shape[0]
                k = m.weight.numel()
                W = x[:k].reshape(O, k // O, order="F")          # vec(W) column-major
                m.weight.copy_(torch.tensor(W.reshape(m.weight.shape)))
                m.bias.copy_(torch.tensor(x[k:]))
            else:
                assert isinstance(s, (BatchNorm, BatchNorm2d))
                c = m.weight.numel()
                m.weight.copy_(torch.tensor(x[:c]))
                m.bias.copy_(torch.tensor(x[c:]))


def cifar_cnn(variant, dtype=np.float64):
    pool, second, bn, _ = VARIANTS[variant]
    opts = {"pool": pool, "second_pool": second} | ({"batchnorm": bn} if bn else {})
    return build_model("cifar-cnn", dtype=dtype, seed=1, **opts)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cifar_cnn_parameter_count(variant):
    pool, second, bn, count = VARIANTS[variant]
    net = cifar_cnn(variant)
    ref = sum(p.numel() for p in torch_cifar_cnn(pool, second, bn).parameters())
    assert net.n_params == ref == count
    assert net.input_shape == (3, 32, 32) and net.n_out == 10
    assert net.shapes[net.layers.index(next(s for s in net.layers if isinstance(s, Linear)))] == \
        ((400,) if second else (1600,))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cifar_cnn_forward_equals_torch(variant):
    """Random rows (n, 3072), C-major like NCHW.reshape(n, -1); batch norm in
    training mode (batch statistics) on both sides."""
    pool, second, bn, _ = VARIANTS[variant]
    net = cifar_cnn(variant)
    model = torch_cifar_cnn(pool, second, bn)
    copy_weights(net, model)
    model.train()
    X = np.random.default_rng(2).standard_normal((5, 3072))
    ref = model(torch.tensor(X).reshape(5, 3, 32, 32)).detach().numpy()
    out = net.forward(X)
    assert np.abs(out - ref).max() <= 1e-12 * np.abs(ref).max()


def test_tiny_cnn_dense_hessian_is_small_and_exact():
    net = build_model("tiny-cnn", dtype=np.float64, seed=0)
    assert net.n_params == 216 and net.input_shape == (1, 7, 7)
    from tinynet.curvature.seed import dense_bytes
    assert dense_bytes(net) < 100 * 2**20                  # the seed-001 arrays: under 100 MiB
    cv.check_dense(net, nbytes=dense_bytes(net))
    X = np.random.default_rng(3).uniform(0, 1, (4, 49))
    Y = np.array([1, 7, 3, 0])
    H = cv.hessian(net, X, Y)
    assert H.shape == (216, 216)
    ref = torch.func.hessian(torch_loss_fn(net, X, Y))(theta_of(net)).numpy()
    assert np.abs(H - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("name,given,message", [
    ("tiny-mlp", {"pool": "max"}, "takes no option 'pool'"),
    ("tiny-cnn", {"second_pool": True}, "takes no option 'second_pool'"),
    ("tiny-cnn", {"batchnorm": "full"}, "takes no option 'batchnorm'"),
    ("cifar-cnn", {"pool": "min"}, "pool must be one of 'max', 'avg'"),
    ("cifar-cnn", {"batchnorm": "mean-only"}, "mean-only batch norm exists for vectors only"),
])
def test_model_option_errors(name, given, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, **given)


def test_model_options_fill_defaults():
    assert model_options("cifar-cnn") == {"batchnorm": None, "pool": "max", "second_pool": False}
    assert model_options("cifar-cnn", pool="avg")["pool"] == "avg"
    assert set(MODEL_OPTIONS["tiny-cnn"]) == {"pool"}


# -- data ---------------------------------------------------------------------------------------
@needs_cifar
@pytest.mark.filterwarnings("ignore:CIFAR-10 in")           # 2 of 5 training batches in shared/data
def test_cifar10_standardized():
    from tinynet import data
    raw_tr, y_tr = data.load_cifar10("train", CIFAR)
    mean, std = data.cifar10_channel_stats(CIFAR)
    sub = raw_tr[::7].reshape(-1, 3, 1024).astype(np.float64)     # every 7th image: a loose check of the constants
    assert np.abs(mean - sub.mean(axis=(0, 2))).max() < 5e-3 and np.abs(std - sub.std(axis=(0, 2))).max() < 5e-3
    Xtr, ytr = data.load_dataset("cifar10-standardized", "train", CIFAR)
    Z = Xtr.reshape(-1, 3, 1024)
    assert np.abs(Z.mean(axis=(0, 2), dtype=np.float64)).max() < 1e-5            # mean 0 per channel
    assert np.abs(Z[::7].astype(np.float64).std(axis=(0, 2)) - 1).max() < 2e-2    # std 1 (on the subset)
    assert np.abs(Z[::7] - (sub - mean[:, None]) / std[:, None]).max() < 1e-5
    assert Xtr.dtype == np.float32 and np.array_equal(ytr, y_tr)
    raw_te, _ = data.load_cifar10("test", CIFAR)
    Xte, _ = data.load_dataset("cifar10-standardized", "test", CIFAR)
    ref = (raw_te.reshape(-1, 3, 1024) - mean[None, :, None]) / std[None, :, None]
    assert np.abs(Xte.reshape(-1, 3, 1024) - ref).max() < 1e-5        # the training constants, not the test split's
    assert np.abs(Xte.reshape(-1, 3, 1024).mean(axis=(0, 2))).max() > 1e-3


# -- CLI ----------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def meta_of(out):
    with open(os.path.join(out, "config.json")) as f:
        return json.load(f)


def test_train_tiny_cnn(tmp_path):
    r = invoke("train", "--model", "tiny-cnn", "--steps", "5", "--eval-subset", "100", "-q", "--out", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    conf = meta_of(tmp_path / "r")
    assert conf["n_params"] == 216
    assert conf["meta"]["dataset"] == "mnist7-labels" and conf["meta"]["model_options"] == {"pool": "max"}


@needs_cifar
@pytest.mark.filterwarnings("ignore:CIFAR-10 in")
@pytest.mark.parametrize("variant,args,n_params", [
    ("default", [], 138_886),
    ("avg-two-pools-bn", ["--pool", "avg", "--second-pool", "--batchnorm", "full"], 38_330),
])
def test_train_cifar_cnn(tmp_path, variant, args, n_params):
    out = str(tmp_path / variant)
    r = invoke("train", "--model", "cifar-cnn", "--steps", "2", "--batch-size", "8", "--data-dir", CIFAR,
               "--eval-subset", "50", "-q", "--out", out, *args)
    assert r.exit_code == 0, r.output
    conf = meta_of(out)
    assert conf["n_params"] == n_params and conf["meta"]["dataset"] == "cifar10-standardized"
    pool, second, bn, _ = VARIANTS["max-one-pool" if variant == "default" else variant]
    assert conf["meta"]["model_options"] == {"batchnorm": bn, "pool": pool, "second_pool": second}


@pytest.mark.parametrize("args,message", [
    (["--model", "tiny-mlp", "--pool", "avg"], "--pool: model tiny-mlp takes no such option"),
    (["--model", "tiny-cnn", "--second-pool"], "--second-pool: model tiny-cnn takes no such option"),
    (["--model", "tiny-cnn", "--batchnorm", "full"], "its architecture options: --pool"),
    (["--model", "cifar-cnn", "--batchnorm", "mean-only"], "mean-only batch norm exists for vectors only"),
])
def test_train_option_errors(tmp_path, args, message):
    r = invoke("train", *args, "--steps", "1", "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_inspect_tiny_cnn_check():
    r = invoke("inspect", "--model", "tiny-cnn", "--check", "--batch", "2")
    assert r.exit_code == 0, r.output
    rels = [float(line.rsplit("relative ", 1)[1].rstrip(")")) for line in r.output.splitlines() if "relative" in line]
    assert len(rels) == 2 and rels[0] < 1e-6 and rels[1] < 1e-12     # finite differences, torch


@pytest.mark.parametrize("name", ["G", "M", "D_xx"])
def test_inspect_tiny_cnn_matrices_name_the_conv_blocks(tmp_path, name):
    out = tmp_path / "m.npz"
    batch = ["--batch", "3"] if name == "G" else []
    r = invoke("inspect", "--model", "tiny-cnn", "--matrix", name, *batch, "--out", str(out))
    assert r.exit_code == 0, r.output
    net = build_model("tiny-cnn", dtype=np.float64, seed=0)
    from tinynet.data import load_dataset
    X, Y = load_dataset("mnist7-labels", "train")
    with np.load(out) as z:
        A, rows, labels = z[name], z["row_blocks"], list(z["row_labels"])
    if name == "G":
        ref = cv.gauss_newton(net, np.asarray(X[:3], np.float64), Y[:3])
        assert labels == ["Conv2d 1 (W)", "Conv2d 1 (b)", "Conv2d 2 (W)", "Conv2d 2 (b)", "Linear 1 (W)",
                          "Linear 1 (b)"]
        assert list(rows) == [8, 2, 32, 4, 160, 10]
    else:
        ref = getattr(cv.matrices(net, np.asarray(X[0], np.float64), Y[0]), name)
        first, third = {"M": ("z1 Conv2d 1", "z3 MaxPool2d 1"),
                        "D_xx": ("vec d∇x f1 Conv2d 1", "vec d∇x f3 MaxPool2d 1")}[name]
        assert labels[0] == first and labels[2] == third and labels[-1].endswith(" loss")
    assert rows.sum() == A.shape[0] and np.array_equal(A, ref)
