"""Natural gradient "with a twist" (seed 003; tinynet.optim.twist)."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.models import build_model, mlp
from tinynet.optim import NaturalTwist, RMSProp
from tinynet.losses import SoftmaxCrossEntropyLoss
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
    for kw, msg in ((dict(metric="kfac"), "metric must be one of"), (dict(normalizer="x"), "normalizer"),
                    (dict(rho=1.0), "rho"), (dict(mu=-1), "mu"), (dict(metric="neuron", eps=0), "eps")):
        with pytest.raises(ValueError, match=msg):
            NaturalTwist(net, **kw)


# -- G = the exact block-diagonal GN / empirical Fisher ---------------------------------------

def _small_net():
    return mlp([6, 5, 4, 3], "tanh", SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=3)


def _small_batch(k):
    rng = np.random.default_rng(10 + k)
    return rng.standard_normal((16, 6)), rng.integers(0, 3, 16)


def _reference_blocks(net, X, y, metric):
    """The stage blocks of the dense GN / empirical Fisher of the batch (tinynet.curvature.dense)."""
    M = tn.curvature.gauss_newton(net, X, y) if metric == "gn" else tn.curvature.fisher(net, X, kind="empirical", Y=y)
    return {i: M[sl, sl] for i, sl in net.slices()}


@pytest.mark.parametrize("metric", ["gn", "fisher"])
@pytest.mark.parametrize("normalizer", ["global", "layer", "neuron", "weight"])
def test_block_metric_matches_the_formula_from_dense_matrices(metric, normalizer):
    """Three steps of w_B <- w_B - lr / sqrt(mu + E[g_B^T G_B^-1 g_B]) G_B^-1 g_B, with G the
    running average of the batch's block-diagonal GN / empirical Fisher taken from the dense
    matrices and G_B its restriction to B, against NaturalTwist to 1e-12."""
    net, ref = _small_net(), _small_net()
    rho, mu, eps, lr = 0.6, 1e-4, 1e-3, 0.1
    opt = NaturalTwist(net, lr=lr, metric=metric, normalizer=normalizer, rho=rho, mu=mu, eps=eps)
    G = {i: 0.0 for i, _ in ref.slices()}
    norm = np.zeros(opt.n_blocks)
    for k in range(3):
        X, y = _small_batch(k)
        g = ref.gradient(X, y)
        C = _reference_blocks(ref, X, y, metric)
        x = np.empty_like(g)
        for i, sl in ref.slices():
            G[i] = rho * G[i] + (1 - rho) * C[i]
            # the normalizer blocks inside this stage; "global" spans every stage, G block-diagonal
            blocks = [np.arange(sl.stop - sl.start)] if normalizer == "global" else \
                [np.flatnonzero(opt.block_id[sl] == B) for B in np.unique(opt.block_id[sl])]
            for idx in blocks:
                GB = G[i][np.ix_(idx, idx)] + eps * np.eye(len(idx))
                x[sl][idx] = np.linalg.solve(GB, g[sl][idx])
        q = np.bincount(opt.block_id, weights=g * x, minlength=opt.n_blocks)
        norm = rho * norm + (1 - rho) * q
        ref.set_flat(ref.get_flat() - lr * x / np.sqrt(mu + norm)[opt.block_id])
        opt.step(X, y)
        np.testing.assert_allclose(net.get_flat(), ref.get_flat(), rtol=0, atol=1e-12)


def test_block_metric_per_neuron_blocks_are_the_neuron_columns():
    """The per-neuron normalizer's blocks in a Linear stage are the fan_in + 1 entries of one
    output (a column of [W^T; b^T]): the reference above solves over exactly those."""
    net = _small_net()
    opt = NaturalTwist(net, metric="gn", normalizer="neuron")
    i, sl = net.slices()[0]
    ids = opt.block_id[sl].reshape(6 + 1, 5)
    assert all(len(set(ids[:, j])) == 1 for j in range(5)) and len(set(ids[0])) == 5


def test_block_metric_refuses_blocks_over_the_size_guard(monkeypatch):
    monkeypatch.setenv("TINYNET_DENSE_MAX_BYTES", "10000")
    with pytest.raises(tn.curvature.DenseTooLarge, match="exact dense blocks"):
        NaturalTwist(_small_net(), metric="fisher")


def test_block_metric_resumes_exactly():
    a, b = _small_net(), _small_net()
    oa = NaturalTwist(a, lr=0.1, metric="gn", normalizer="layer", eps=1e-3)
    for k in range(4):
        oa.step(*_small_batch(k))
    ob = NaturalTwist(b, lr=0.1, metric="gn", normalizer="layer", eps=1e-3)
    for k in range(2):
        ob.step(*_small_batch(k))
    state, theta = ob.state_dict(), b.get_flat()
    c = _small_net()
    c.set_flat(theta)
    oc = NaturalTwist(c, lr=0.1, metric="gn", normalizer="layer", eps=1e-3)
    oc.load_state_dict(state)
    for k in range(2, 4):
        oc.step(*_small_batch(k))
    np.testing.assert_array_equal(c.get_flat(), a.get_flat())


def test_gn_metric_global_and_per_layer_normalizers_point_differently():
    """The slides' point with G = the block GN: a per-layer normalizer turns the whole update."""
    X, y = _small_batch(0)
    d = {}
    for normalizer in ("global", "layer"):
        opt = NaturalTwist(_small_net(), lr=0.1, metric="gn", normalizer=normalizer, eps=1e-3)
        d[normalizer] = opt.direction(X, y)[1]
    assert direction_angle(d["global"], d["layer"]) > 1.0
    ident = NaturalTwist(_small_net(), lr=0.1, metric="identity", normalizer="layer").direction(X, y)[1]
    assert direction_angle(ident, d["layer"]) > 1.0          # G is not the identity in disguise


# -- the identity and neuron metrics on the backend (tinynet.optim.twist_device) -----------
def _host_twist(net, X, y, state, metric, normalizer, lr, rho, mu, eps, block_id, n_blocks):
    """One step of the module docstring's formulas in host float64 numpy, from
    the engine's gradient and signal rows: the reference for the kernels."""
    from tinynet.optim.stats import forward_backward, kron_indices
    g = net.gradient(X, y)
    Ginv_g = g.copy()
    if metric == "neuron":
        _, _, _, Bs = forward_backward(net, X, y)
        for i in kron_indices(net):
            s, (a, b) = net.layers[i], net.offsets[i]
            B = np.asarray(Bs[i], dtype=np.float64)
            n_ex = B.shape[0] // int(s.share)
            state["g2"][i] = rho * state["g2"].get(i, 0.0) + (1 - rho) * np.mean((n_ex * B) ** 2, axis=0)
            Ginv_g[a:b] = (g[a:b].reshape(s.fan_in + 1, s.fan_out) / (state["g2"][i] + eps)).reshape(-1)
    q = np.bincount(block_id, weights=g * Ginv_g, minlength=n_blocks)
    state["norm"] = rho * state.get("norm", 0.0) + (1 - rho) * q
    return lr * Ginv_g / np.sqrt(mu + state["norm"])[block_id]


def _conv_net(dtype=np.float64):
    return tn.Sequential([tn.Conv2d(1, 2, 3), tn.Tanh(), tn.Flatten(), tn.Linear(2 * 5 * 5, 3)],
                         tn.SoftmaxCrossEntropyLoss(), dtype=dtype, seed=3, input_shape=(1, 7, 7))


@pytest.mark.parametrize("normalizer", ["global", "layer", "neuron", "weight"])
@pytest.mark.parametrize("metric", ["identity", "neuron"])
@pytest.mark.parametrize("chunk", [None, 7], ids=["chunk1024", "chunk7"])
def test_device_metrics_equal_the_host_formulas(metric, normalizer, chunk, monkeypatch):
    """direction() of the kernels against _host_twist over 3 steps of a conv
    net (a Kronecker stage with 16 positions per example), float64; chunk 7
    cuts every block of more than 7 entries into in-order chunk sums."""
    from tinynet.kernels import twist as K
    if chunk:
        monkeypatch.setattr(K, "CHUNK", chunk)
    net, ref = _conv_net(), _conv_net()
    opt = NaturalTwist(net, lr=0.05, metric=metric, normalizer=normalizer, rho=0.8, mu=1e-4, eps=1e-3)
    assert opt._device is not None
    rng = np.random.default_rng(4)
    state = {"g2": {}}
    for _ in range(3):
        X, y = rng.standard_normal((5, 49)), rng.integers(0, 3, 5)
        expect = _host_twist(ref, X, y, state, metric, normalizer, 0.05, 0.8, 1e-4, 1e-3, opt.block_id, opt.n_blocks)
        loss, d = opt.direction(X, y)
        assert loss == pytest.approx(ref.loss(X, y), rel=1e-14)
        np.testing.assert_allclose(d, expect, rtol=1e-11, atol=1e-15)
        net.set_flat(net.get_flat() - d)
        ref.set_flat(ref.get_flat() - expect)
    np.testing.assert_allclose(opt.norm, state["norm"], rtol=1e-11)
    for i, v in state["g2"].items():
        np.testing.assert_allclose(opt.g2[i], v, rtol=1e-12)


def test_device_step_is_direction_applied_in_the_parameters_dtype():
    """step() subtracts the same d from float32 parameters that direction() returns."""
    a, b = build_model("tiny-mlp", dtype=np.float32, seed=2), build_model("tiny-mlp", dtype=np.float32, seed=2)
    oa = NaturalTwist(a, lr=0.02, metric="neuron", normalizer="neuron")
    ob = NaturalTwist(b, lr=0.02, metric="neuron", normalizer="neuron")
    for k in range(3):
        X, y = _problem(k)
        theta = b.get_flat()
        oa.step(X.astype(np.float32), y)
        _, d = ob.direction(X.astype(np.float32), y)
        b.set_flat(theta - d.astype(np.float32))
        np.testing.assert_array_equal(a.get_flat(), b.get_flat())


def test_block_chunks_cover_every_block_in_order():
    from tinynet.optim.twist_device import block_chunks
    block_id = np.array([0, 1, 0, 2, 0, 0, 1, 0, 0])
    perm, cuts, chunk_of = block_chunks(block_id, 3, chunk=2)
    assert perm.tolist() == [0, 2, 4, 5, 7, 8, 1, 6, 3]          # block 0's entries, then 1's, then 2's
    assert cuts.tolist() == [0, 2, 4, 6, 8, 9]                   # block 0 in 3 chunks of 2, then 1, then 2
    assert chunk_of.tolist() == [0, 3, 4, 5]
