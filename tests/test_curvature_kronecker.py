"""The chapter-6 matrices of tinynet.curvature.kronecker (float64): KFAC's A and
G equal the factors the KFAC optimizer builds from the same batch (its first
statistics batch initializes the running averages); A ⊗ G equals the exact
Gauss-Newton block where KFAC is exact (one example; one Linear layer with
MSE for any batch) and differs from it where it is not; the input moments
equal their definition; each of KFAC / ACP / NNN's last_matrices() holds
what it applied (the damped inverses, alpha, the whitening)."""
import numpy as np
import pytest

import tinynet as tn
from test_curvature_cnn import make as make_cnn
from tinynet import curvature as cv
from tinynet.models import mlp
from tinynet.optim import ACP, KFAC, NNN


def make(loss="softmax_ce", n=8, seed=0, sizes=(4, 5, 5, 3)):
    cls = {"mse": tn.MSELoss, "softmax_ce": tn.SoftmaxCrossEntropyLoss}[loss]
    net = mlp(list(sizes), "tanh", cls(), dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((n, sizes[0]))
    Y = rng.integers(0, sizes[-1], n) if loss == "softmax_ce" else rng.standard_normal((n, sizes[-1]))
    return net, X, Y


NETS = {"mlp-4-5-5-3-softmax_ce": lambda: make(),
        "mlp-4-5-5-3-mse": lambda: make("mse"),
        "cnn-conv-relu-maxpool": lambda: make_cnn("conv-relu-maxpool-conv-flatten-linear", "softmax_ce")}
SETTINGS = {"gn-exact": dict(curvature="gn", exact=True), "gn-probe": dict(curvature="gn", exact=False),
            "fisher-sampled": dict(curvature="fisher", exact=False)}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("netname", list(NETS))
def test_kfac_factors_equal_the_optimizers(netname, setting):
    net, X, Y = NETS[netname]()
    kw = SETTINGS[setting]
    ours = cv.kfac_factors(net, X, Y, kw["curvature"], exact=kw["exact"], seed=7)
    opt = KFAC(net, 1.0, curvature=kw["curvature"], exact=kw["exact"], seed=7, T=1, stats_every=1)
    opt.step(X, Y)                           # statistics at the parameters before the update
    blocks = {i: l for l, (i, _) in enumerate(net.slices())}
    theirs = {blocks[i]: AG for i, AG in opt.factors.items()}
    assert sorted(ours) == sorted(theirs) == cv.kron_layers(net)
    for l in ours:
        for mine, used in zip(ours[l], theirs[l]):
            np.testing.assert_allclose(mine, used, rtol=1e-12, atol=1e-14)
    last = opt.last_matrices()
    for l, (A, G) in ours.items():
        dA, dG = last[f"block{l}/damping_A"], last[f"block{l}/damping_G"]
        np.testing.assert_allclose(last[f"block{l}/A_damped_inv"], np.linalg.inv(A + dA * np.eye(len(A))),
                                   rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(last[f"block{l}/G_damped_inv"], np.linalg.inv(G + dG * np.eye(len(G))),
                                   rtol=1e-8, atol=1e-10)
    assert 0 < float(last["kl_nu"]) <= 1


EXACT_CASES = {
    "one-example-one-linear-mse": dict(sizes=(4, 3), loss="mse", n=1),
    "batch-of-8-one-linear-mse": dict(sizes=(4, 3), loss="mse", n=8),        # J_a = I, D = 2I: exact too
    "one-example-3-layers-softmax_ce": dict(sizes=(4, 5, 5, 3), loss="softmax_ce", n=1),
}


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_kronecker_product_equals_the_exact_gn_block_where_kfac_is_exact(case):
    net, X, Y = make(**EXACT_CASES[case])
    for l in cv.kron_layers(net):
        r = cv.kron_vs_exact(net, X, Y, l)
        assert np.abs(r["diff"]).max() <= 1e-12 * np.abs(r["exact"]).max(), (case, l)


def test_kronecker_product_differs_from_the_exact_block_for_a_batch_through_a_deep_net():
    net, X, Y = make(n=8)
    r = cv.kron_vs_exact(net, X, Y, 0)
    assert np.abs(r["diff"]).max() > 1e-3 * np.abs(r["exact"]).max()
    np.testing.assert_allclose(r["kron"] - r["exact"], r["diff"])


def test_input_moments_equal_their_definition():
    net, X, Y = make()
    (mu, C) = cv.input_moments(net, X)[0]
    np.testing.assert_allclose(mu, X.mean(0), rtol=1e-13)
    np.testing.assert_allclose(C, np.cov(X.T, bias=True), rtol=1e-12, atol=1e-14)
    H1 = np.tanh(X @ net.layers[0].W.T + net.layers[0].b)          # the input of block 1
    mu1, C1 = cv.input_moments(net, X)[1]
    np.testing.assert_allclose(mu1, H1.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(C1, np.cov(H1.T, bias=True), rtol=1e-12, atol=1e-14)


def test_acp_and_nnn_last_matrices_are_what_they_applied():
    net, X, Y = make()
    moments = cv.input_moments(net, X)
    acp = ACP(net, 0.1, eps=0.1, alpha=2.0, T=1)
    assert acp.last_matrices() == {}
    acp.step(X, Y)
    last = acp.last_matrices()
    for l, (mu, C) in moments.items():
        np.testing.assert_allclose(last[f"block{l}/C"], C, rtol=1e-12, atol=1e-14)
        assert float(last[f"block{l}/alpha"]) == 2.0 and float(last[f"block{l}/damping"]) == 0.05
        np.testing.assert_allclose(last[f"block{l}/inv_C"], np.linalg.inv(C + 0.05 * np.eye(len(C))),
                                   rtol=1e-8, atol=1e-10)
    net, X, Y = make()
    nnn = NNN(net, 0.01, eps=1e-3, T=100)
    nnn.step(X, Y)
    last = nnn.last_matrices()
    for l, (mu, C) in moments.items():
        w, Q = np.linalg.eigh(C + 1e-3 * np.eye(len(C)))
        np.testing.assert_allclose(last[f"block{l}/U"], (Q / np.sqrt(w)) @ Q.T, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(last[f"block{l}/mu"], mu, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad,error", [(1, ValueError), (9, IndexError)], ids=["batchnorm-block", "past-the-end"])
def test_non_kronecker_or_missing_layer_is_a_clear_error(bad, error):
    net = tn.Sequential([tn.Linear(3, 4), tn.BatchNorm(4), tn.Tanh(), tn.Linear(4, 2)], tn.MSELoss(),
                        dtype=np.float64, seed=0)
    X, Y = np.random.default_rng(0).standard_normal((6, 3)), np.zeros((6, 2))
    with pytest.raises(error, match="Kronecker|block"):
        cv.kron_vs_exact(net, X, Y, bad)
