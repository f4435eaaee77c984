"""UBP (thesis chapter 5, algorithm 2) against an independent dense reference.

The reference below re-implements algorithm 2 in torch (float64) from its
definition: per-example Jacobians J_i = d f / d a_l by torch.func.jacrev of the
sub-network above a_l, D_i and the exact d^2 l_i / d a_l^2 by
torch.func.hessian; it shares no code with tinynet.optim.ubp.
"""
import numpy as np
import pytest
import torch
from torch.func import grad, hessian, jacrev

import tinynet as tn
from tinynet.optim import SGD
from tinynet.optim.ubp import UBP
from torch_ref import torch_loss_fn

torch.set_default_dtype(torch.float64)

_ACT = {tn.Sigmoid: torch.sigmoid, tn.Tanh: torch.tanh, tn.ReLU: torch.relu, tn.Identity: lambda z: z}


# ---------------------------------------------------------------- dense reference
def _ops(net):
    th = torch.tensor(net.get_flat().astype(np.float64))
    ops = []
    for s, (a, b) in zip(net.layers, net.offsets):
        if isinstance(s, tn.Linear):
            k = s.n_in * s.n_out
            ops.append(("linear", th[a:a + k].reshape(s.n_in, s.n_out).T, th[a + k:b]))
        else:
            ops.append(("act", _ACT[type(s)]))
    return ops


def _apply(ops, start, z):
    for op in ops[start:]:
        z = op[1] @ z + op[2] if op[0] == "linear" else op[1](z)
    return z


def _example_loss(loss, y):
    if isinstance(loss, tn.MSELoss):
        return lambda f: ((f - y) ** 2).sum()
    if isinstance(loss, tn.BCELoss):
        return lambda f: -(y * torch.log(f) + (1 - y) * torch.log(1 - f)).sum()
    return lambda f: -(y * torch.log_softmax(f, 0)).sum()


def ubp_reference(net, X, Y, lr, curvature="gn", clip=None, mu=0.0, velocity=None):
    """(new flat parameters, [rho_l]) after one UBP step, algorithm 2 verbatim.
    mu > 0: heavy-ball momentum per layer, velocity[t] = (V_W, V_b) <- mu velocity[t]
    + (grad_W, grad_b), dW = -lr V_W (the dict is updated in place), and the
    correction of line 14 for that dW."""
    ops = _ops(net)
    n = X.shape[0]
    Yt = torch.tensor(net.loss_stage.prepare_targets(Y, net.n_out, np.float64))
    losses = [_example_loss(net.loss_stage, Yt[i]) for i in range(n)]
    Z = [torch.tensor(X)]
    for t in range(len(ops)):
        Z.append(torch.stack([_apply(ops[t:t + 1], 0, z) for z in Z[-1]]))   # stage inputs/outputs
    dh = torch.stack([grad(losses[i])(Z[-1][i]) for i in range(n)])      # dl_i/df
    bottom = min(t for t, op in enumerate(ops) if op[0] == "linear")
    new, rhos = {}, []
    for t in range(len(ops) - 1, bottom - 1, -1):
        op = ops[t]
        if op[0] == "act":
            dh = torch.stack([jacrev(op[1])(Z[t][i]).T @ dh[i] for i in range(n)])
            continue
        W, b, h, da = op[1], op[2], Z[t], dh
        dW = -lr / n * da.T @ h
        db = -lr / n * da.sum(0)
        if mu > 0:
            gW, gb = da.T @ h / n, da.sum(0) / n
            VW, Vb = velocity.get(t, (torch.zeros_like(gW), torch.zeros_like(gb)))
            velocity[t] = (mu * VW + gW, mu * Vb + gb)
            dW, db = -lr * velocity[t][0], -lr * velocity[t][1]
        new[t] = (W + dW, b + db)
        if t == bottom:
            break
        C = []
        for i in range(n):
            up = lambda a: _apply(ops, t + 1, a)       # noqa: E731  a_l -> f, pre-step weights
            if curvature == "gn":
                J = jacrev(up)(Z[t + 1][i])
                H = J.T @ hessian(losses[i])(Z[-1][i]) @ J
            else:
                H = hessian(lambda a: losses[i](up(a)))(Z[t + 1][i])
            C.append(H @ (dW @ h[i] + db))
        C = torch.stack(C)
        rho = (C.norm() / da.norm()).item()
        rhos.append(rho)
        if clip is not None and rho > clip:
            C = C * (clip / rho)
        dh = da @ (W + dW) + C @ W                     # algorithm 2, line 14
    flat = net.get_flat().astype(np.float64)
    for t, (W, b) in new.items():
        a, c = net.offsets[t]
        flat[a:c] = np.concatenate([W.T.reshape(-1).numpy(), b.numpy()])
    return flat, rhos


# ---------------------------------------------------------------- problems


def _net(kind, seed=3):
    if kind == "tanh-mse":
        layers, loss = [tn.Linear(4, 5), tn.Tanh(), tn.Linear(5, 4), tn.Tanh(), tn.Linear(4, 3)], tn.MSELoss()
    elif kind == "sigmoid-bce":
        layers = [tn.Linear(4, 5), tn.Sigmoid(), tn.Linear(5, 3), tn.Sigmoid(), tn.Linear(3, 3), tn.Sigmoid()]
        loss = tn.BCELoss()
    elif kind == "tanh-softmax":
        layers = [tn.Linear(4, 6), tn.Tanh(), tn.Linear(6, 5), tn.Tanh(), tn.Linear(5, 4)]
        loss = tn.SoftmaxCrossEntropyLoss()
    elif kind == "relu-identity-mse":
        layers = [tn.Linear(4, 5), tn.ReLU(), tn.Linear(5, 2), tn.Identity(), tn.Linear(2, 5), tn.Sigmoid()]
        loss = tn.MSELoss()
    elif kind == "wide-tanh-mse":          # batch 3: n (i + o) < i o, Linear's Gram forms apply
        layers, loss = [tn.Linear(8, 10), tn.Tanh(), tn.Linear(10, 9), tn.Tanh(), tn.Linear(9, 8)], tn.MSELoss()
    elif kind == "linear-mse":
        layers = [tn.Linear(4, 5), tn.Identity(), tn.Linear(5, 4), tn.Linear(4, 3)]
        loss = tn.MSELoss()
    else:
        raise KeyError(kind)
    return tn.Sequential(layers, loss, dtype=np.float64, seed=seed, alpha=3.0)


def _data(net, n=5, seed=0):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, net.n_in))
    k = net.n_out
    if isinstance(net.loss_stage, tn.SoftmaxCrossEntropyLoss):
        Y = r.integers(0, k, n)
    elif isinstance(net.loss_stage, tn.BCELoss):
        Y = r.uniform(0.05, 0.95, (n, k))
    else:
        Y = r.standard_normal((n, k))
    return X, Y


NETS = ["tanh-mse", "sigmoid-bce", "tanh-softmax", "relu-identity-mse"]


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("mode", ["matrix_free", "explicit"])
@pytest.mark.parametrize("curvature", ["gn", "exact"])
@pytest.mark.parametrize("kind", NETS)
def test_step_matches_dense_reference(kind, curvature, mode):
    net = _net(kind)
    X, Y = _data(net)
    lr = 0.7
    ref, rhos = ubp_reference(net, X, Y, lr, curvature)
    L = torch_loss_fn(net, X, Y)(torch.tensor(net.get_flat())).item()
    opt = UBP(net, lr, curvature=curvature, mode=mode)
    loss = opt.step(X, Y)
    assert loss == pytest.approx(L, rel=1e-12)
    np.testing.assert_allclose(net.get_flat(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    assert opt.metrics["correction_ratio"] == pytest.approx(max(rhos), rel=1e-9)
    assert max(rhos) > 1e-3          # the correction is not negligible in these cases


@pytest.mark.parametrize("mode", ["matrix_free", "explicit"])
@pytest.mark.parametrize("curvature", ["gn", "exact"])
@pytest.mark.parametrize("kind", ["tanh-mse", "sigmoid-bce", "wide-tanh-mse"])
def test_momentum_matches_reference_over_steps(kind, curvature, mode):
    """Three steps with momentum 0.9 against the reference carrying its own
    velocities: the correction is for the update actually taken (velocity
    included), which the Gram shortcuts of Linear do not compute."""
    net = _net(kind)
    ref_net = _net(kind)
    opt = UBP(net, 0.3, curvature=curvature, mode=mode, momentum=0.9)
    velocity = {}
    n = 3 if kind.startswith("wide") else 5
    for s in range(3):
        X, Y = _data(net, n=n, seed=s)
        ref, _ = ubp_reference(ref_net, X, Y, 0.3, curvature, mu=0.9, velocity=velocity)
        ref_net.set_flat(ref)
        opt.step(X, Y)
        np.testing.assert_allclose(net.get_flat(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    plain = _net(kind)
    for s in range(3):
        X, Y = _data(plain, n=n, seed=s)
        UBP(plain, 0.3, curvature=curvature, mode=mode).step(X, Y)
    assert np.abs(plain.get_flat() - net.get_flat()).max() > 1e-3    # momentum changed the path


def test_momentum_on_one_linear_layer_is_sgd_momentum():
    """No layer above to correct: UBP with momentum is SGD with momentum."""
    a = tn.Sequential([tn.Linear(4, 3)], tn.MSELoss(), dtype=np.float64, seed=1)
    b = tn.Sequential([tn.Linear(4, 3)], tn.MSELoss(), dtype=np.float64, seed=1)
    u, s_ = UBP(a, 0.2, momentum=0.8), SGD(b, 0.2, momentum=0.8)
    for s in range(4):
        X, Y = _data(a, seed=s)
        u.step(X, Y)
        s_.step(X, Y)
    np.testing.assert_allclose(a.get_flat(), b.get_flat(), rtol=0, atol=1e-13)


def test_momentum_state_round_trips_a_checkpoint():
    net, net2 = _net("tanh-mse"), _net("tanh-mse")
    X, Y = _data(net)
    opt = UBP(net, 0.3, momentum=0.9)
    opt.step(X, Y)
    opt2 = UBP(net2, 0.3, momentum=0.9)
    net2.set_flat(net.get_flat())
    opt2.load_state_dict(opt.state_dict())
    X2, Y2 = _data(net, seed=7)
    opt.step(X2, Y2)
    opt2.step(X2, Y2)
    np.testing.assert_array_equal(net.get_flat(), net2.get_flat())


@pytest.mark.parametrize("mode", ["matrix_free", "explicit"])
@pytest.mark.parametrize("clip_factor", [0.0, 0.5], ids=["clip0", "clip-half"])
def test_clip_matches_reference(clip_factor, mode):
    net = _net("tanh-mse")
    X, Y = _data(net)
    _, rhos = ubp_reference(net, X, Y, 0.7)
    clip = clip_factor * max(rhos)
    ref, rhos_clipped = ubp_reference(net, X, Y, 0.7, clip=clip)
    opt = UBP(net, 0.7, clip=clip, mode=mode)
    opt.step(X, Y)
    np.testing.assert_allclose(net.get_flat(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    assert opt.metrics["correction_ratio"] == pytest.approx(max(rhos_clipped), rel=1e-9)   # before clipping


@pytest.mark.parametrize("curvature", ["gn", "exact"])
def test_explicit_equals_matrix_free_over_steps(curvature):
    def autoencoder():
        sizes, layers = [12, 10, 8, 3, 8, 10, 12], []
        for i in range(len(sizes) - 1):
            layers += [tn.Linear(sizes[i], sizes[i + 1]), tn.Identity() if sizes[i + 1] == 3 else tn.Sigmoid()]
        return tn.Sequential(layers, tn.MSELoss(), dtype=np.float64, seed=4)
    nets = [autoencoder(), autoencoder()]
    opts = [UBP(nets[0], 2.0, curvature, "explicit"), UBP(nets[1], 2.0, curvature, "matrix_free")]
    r = np.random.default_rng(2)
    for _ in range(3):
        X = r.uniform(0, 1, (16, 12))
        losses = [o.step(X, X) for o in opts]
        assert losses[0] == pytest.approx(losses[1], rel=1e-13)
    a, b = nets[0].get_flat(), nets[1].get_flat()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_one_linear_layer_is_sgd(loss):
    def make():
        if loss == "bce":
            return tn.Sequential([tn.Linear(4, 3), tn.Sigmoid()], tn.BCELoss(), dtype=np.float64, seed=1)
        return tn.Sequential([tn.Linear(4, 3)], tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=1)
    a, b = make(), make()
    X, Y = _data(a, n=7)
    ubp, sgd = UBP(a, 0.3), SGD(b, 0.3)
    for _ in range(3):
        assert ubp.step(X, Y) == sgd.step(X, Y)
    np.testing.assert_allclose(a.get_flat(), b.get_flat(), rtol=1e-14, atol=1e-15)


def test_explicit_mode_keeps_jacobians_and_hessians():
    net = _net("tanh-softmax")
    X, Y = _data(net, n=3)
    ops = _ops(net)
    Z = [torch.tensor(X)]
    for t in range(len(ops)):
        Z.append(torch.stack([_apply(ops[t:t + 1], 0, z) for z in Z[-1]]))
    Yt = torch.tensor(net.loss_stage.prepare_targets(Y, net.n_out, np.float64))
    gn = UBP(net, 1e-3, mode="explicit")
    gn.step(X, Y)
    ex = UBP(_net("tanh-softmax"), 1e-3, curvature="exact", mode="explicit")
    ex.step(X, Y)
    assert sorted(gn.last_jacobians) == sorted(ex.last_hessians) == [0, 2, 4]
    for t, J in gn.last_jacobians.items():
        up = lambda a: _apply(ops, t + 1, a)           # noqa: E731
        for i in range(3):
            np.testing.assert_allclose(J[i], jacrev(up)(Z[t + 1][i]).numpy(), rtol=1e-12, atol=1e-14)
            Hi = hessian(lambda a: _example_loss(net.loss_stage, Yt[i])(up(a)))(Z[t + 1][i]).numpy()
            np.testing.assert_allclose(ex.last_hessians[t][i], Hi, rtol=1e-10, atol=1e-13)


def test_explicit_mode_refuses_too_big_batch():
    net = _net("tanh-mse")
    X, Y = _data(net, n=50)
    opt = UBP(net, 0.1, mode="explicit", max_jacobian_bytes=1000)
    with pytest.raises(ValueError, match="max_jacobian_bytes.*matrix_free"):
        opt.step(X, Y)
    x0 = net.get_flat()
    UBP(net, 0.1, mode="explicit", max_jacobian_bytes=10**6).step(X, Y)
    assert not np.array_equal(net.get_flat(), x0)


@pytest.mark.parametrize("bad, match", [
    (dict(curvature="fisher"), "curvature"), (dict(mode="dense"), "mode"),
    (dict(clip=-1.0), "clip"), (dict(lr=0.0), "lr"), (dict(momentum=1.0), "momentum")],
    ids=["curvature", "mode", "clip", "lr", "momentum"])
def test_bad_arguments(bad, match):
    kw = dict(lr=0.1, **bad) if "lr" not in bad else bad
    with pytest.raises(ValueError, match=match):
        UBP(_net("tanh-mse"), **kw)


def test_float32_follows_float64():
    n64 = _net("tanh-mse")
    n32 = tn.Sequential([tn.Linear(4, 5), tn.Tanh(), tn.Linear(5, 4), tn.Tanh(), tn.Linear(4, 3)],
                        tn.MSELoss(), dtype=np.float32, seed=3, alpha=3.0)
    X, Y = _data(n64)
    UBP(n64, 0.5).step(X, Y)
    UBP(n32, 0.5).step(X, Y)
    np.testing.assert_allclose(n32.get_flat(), n64.get_flat(), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the first-order claim (5.1-5.2)
def sequential_update(net, X, Y, lr):
    """Layer-wise descent: update the top Linear layer with the exact gradient,
    recompute the gradient, update the next one, ... (torch autograd)."""
    f = torch_loss_fn(net, X, Y)
    th = torch.tensor(net.get_flat())
    for t in sorted(net.slices(), key=lambda p: -p[0]):
        g = grad(f)(th)
        th = th.clone()
        th[t[1]] -= lr * g[t[1]]
    return th.numpy()


def deviations(kind, curvature, lrs, n=6):
    """||UBP - sequential|| and ||SGD - sequential|| for each lr."""
    out = []
    for lr in lrs:
        net = _net(kind)
        X, Y = _data(net, n=n)
        x0 = net.get_flat()
        seq = sequential_update(net, X, Y, lr)
        sgd = x0 - lr * net.gradient(X, Y)
        UBP(net, lr, curvature=curvature).step(X, Y)
        out.append((np.linalg.norm(net.get_flat() - seq), np.linalg.norm(sgd - seq)))
    return np.array(out)


LRS = np.logspace(-4, -2.5, 6)


def _slope(lrs, d):
    return np.polyfit(np.log(lrs), np.log(d), 1)[0]


@pytest.mark.parametrize("kind, curvature", [("linear-mse", "gn"), ("tanh-mse", "exact"),
                                             ("tanh-softmax", "exact")])
def test_first_order_claim_third_order_deviation(kind, curvature):
    d = deviations(kind, curvature, LRS)
    s_ubp, s_sgd = _slope(LRS, d[:, 0]), _slope(LRS, d[:, 1])
    print(f"{kind}/{curvature}: slope UBP {s_ubp:.3f}, SGD {s_sgd:.3f}")
    assert 2.8 < s_ubp < 3.2
    assert 1.8 < s_sgd < 2.2


@pytest.mark.parametrize("kind", ["tanh-mse", "tanh-softmax"])
def test_gauss_newton_on_tanh_is_second_order_with_smaller_constant(kind):
    d = deviations(kind, "gn", LRS)
    s_ubp, s_sgd = _slope(LRS, d[:, 0]), _slope(LRS, d[:, 1])
    ratio = d[:, 0] / d[:, 1]
    print(f"{kind}/gn: slope UBP {s_ubp:.3f}, SGD {s_sgd:.3f}, deviation ratio UBP/SGD {ratio.min():.3f}-{ratio.max():.3f}")
    assert 1.8 < s_ubp < 2.2 and 1.8 < s_sgd < 2.2
    assert ratio.max() < 0.5


def test_build_optimizer_takes_the_cli_spellings():
    from tinynet.optim import build_optimizer
    opt = build_optimizer("ubp", _net("tanh-mse"), 0.1, ubp_mode="explicit", ubp_curvature="exact", ubp_clip=0.5)
    assert (opt.mode, opt.curvature, opt.clip) == ("explicit", "exact", 0.5)
    with pytest.raises(ValueError, match="disagree"):
        UBP(_net("tanh-mse"), 0.1, mode="explicit", ubp_mode="matrix_free")
