"""Exact curvature blocks without the full matrix (tinynet.curvature.block):
every block H_lk / G_lk / F_lk, diagonal and off-diagonal, equals the same
slice of the dense matrix (itself checked against torch autograd in
test_curvature_hessian.py / test_curvature_gn_fisher.py / test_curvature_cnn.py)
to 1e-10 relative to the dense matrix's largest entry; the block route's memory
stays below the full matrix's; the block index is checked; block Newton / GN /
natural gradient run where the guard refuses the full matrix and equal the
old slice-of-the-dense-matrix route (block_newton_direction)."""
import itertools
import tracemalloc

import numpy as np
import pytest

from test_curvature_cnn import NETS as CNN_NETS
from test_curvature_cnn import make as make_cnn
from tinynet import curvature as cv
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.models import mlp
from tinynet.optim import GaussNewton, NaturalGradient, Newton
from tinynet.optim.newton import block_newton_direction

TOL = 1e-10
BIG = 2**40          # max_bytes for the dense references


def make(depth, act, loss, n=6, seed=0):
    """(net, X, Y): an MLP 4-5-...-3 with `depth` Linear layers, float64."""
    cls = {"mse": MSELoss, "bce": BCELoss, "softmax_ce": SoftmaxCrossEntropyLoss}[loss]
    net = mlp([4] + [5] * (depth - 1) + [3], act, cls(), out_activation="sigmoid" if loss == "bce" else None,
              dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    net.set_flat(net.get_flat() + 0.1 * rng.standard_normal(net.n_params))   # nonzero biases
    X = rng.standard_normal((n, 4))
    if loss == "softmax_ce":
        Y = rng.integers(0, 3, n)
    elif loss == "bce":
        Y = (rng.uniform(size=(n, 3)) < 0.5).astype(float)
    else:
        Y = rng.standard_normal((n, 3))
    return net, X, Y


def assert_blocks_equal_slices(net, block_fn, dense):
    slices = [s for _, s in cv.block_slices(net)]
    scale = np.abs(dense).max()
    for l, k in itertools.product(range(len(slices)), repeat=2):
        B = block_fn(l, k)
        ref = dense[slices[l], slices[k]]
        assert B.shape == ref.shape, (l, k)
        err = np.abs(B - ref).max() / scale
        assert err <= TOL, f"block ({l}, {k}): relative error {err:.2e}"


MLP_CASES = [(d, a, loss) for d in (1, 2, 3, 4) for a in ("tanh", "sigmoid", "relu")
             for loss in ("mse", "softmax_ce", "bce")]
MLP_IDS = [f"depth{d}-{a}-{loss}" for d, a, loss in MLP_CASES]


@pytest.mark.parametrize("depth,act,loss", MLP_CASES, ids=MLP_IDS)
def test_mlp_blocks_equal_dense_slices(depth, act, loss):
    net, X, Y = make(depth, act, loss)
    assert_blocks_equal_slices(net, lambda l, k: cv.hessian_block(net, X, Y, l, k), cv.hessian(net, X, Y))
    assert_blocks_equal_slices(net, lambda l, k: cv.gauss_newton_block(net, X, Y, l, k),
                               cv.gauss_newton(net, X, Y))
    assert_blocks_equal_slices(net, lambda l, k: cv.fisher_block(net, X, l, k), cv.fisher(net, X))


@pytest.mark.parametrize("kind", ["mc", "empirical"])
@pytest.mark.parametrize("loss", ["mse", "softmax_ce", "bce"])
def test_sampled_and_empirical_fisher_blocks(loss, kind):
    net, X, Y = make(3, "tanh", loss)
    dense = cv.fisher(net, X, kind=kind, Y=Y, n_samples=3, seed=5)
    assert_blocks_equal_slices(net, lambda l, k: cv.fisher_block(net, X, l, k, kind=kind, Y=Y, n_samples=3,
                                                                 seed=5), dense)


CNN_CASES = [(a, loss) for a in CNN_NETS for loss in ("softmax_ce", "mse")]


@pytest.mark.parametrize("arch,loss", CNN_CASES, ids=[f"{a}-{loss}" for a, loss in CNN_CASES])
def test_cnn_blocks_equal_dense_slices(arch, loss):
    net, X, Y = make_cnn(arch, loss)
    assert_blocks_equal_slices(net, lambda l, k: cv.hessian_block(net, X, Y, l, k), cv.hessian(net, X, Y))
    assert_blocks_equal_slices(net, lambda l, k: cv.gauss_newton_block(net, X, Y, l, k),
                               cv.gauss_newton(net, X, Y))
    assert_blocks_equal_slices(net, lambda l, k: cv.fisher_block(net, X, l, k), cv.fisher(net, X))


def test_default_k_is_the_diagonal_block_and_negative_indices_count_from_the_end():
    net, X, Y = make(3, "tanh", "softmax_ce")
    np.testing.assert_array_equal(cv.hessian_block(net, X, Y, 1), cv.hessian_block(net, X, Y, 1, 1))
    np.testing.assert_array_equal(cv.hessian_block(net, X, Y, -1, 0), cv.hessian_block(net, X, Y, 2, 0))


@pytest.mark.parametrize("bad,error", [(3, IndexError), (-4, IndexError), (1.0, TypeError), ("0", TypeError)],
                         ids=["past-the-end", "below-minus-B", "float", "str"])
def test_bad_block_index_is_a_clear_error(bad, error):
    net, X, Y = make(3, "tanh", "softmax_ce")          # 3 blocks in net.layers[0], [2], [4]
    with pytest.raises(error, match="block") as e:
        cv.hessian_block(net, X, Y, bad)
    if error is IndexError:
        assert "0..2" in str(e.value) and "net.layers[4]" in str(e.value)


def test_diagonal_blocks_share_one_pass_and_equal_the_dense_diagonal():
    net, X, Y = make(4, "sigmoid", "mse")
    H = cv.hessian(net, X, Y)
    got = list(cv.diagonal_blocks(net, X, Y, "hessian"))
    assert [l for l, _, _ in got] == [0, 1, 2, 3]
    for (l, s, B), ref in zip(got, cv.block_diagonal(H, net)):
        assert np.abs(B - ref).max() <= TOL * np.abs(H).max()


# -- memory ------------------------------------------------------------------------------

def test_block_route_memory_is_below_the_full_matrix():
    """A 30-60-60-60-5 MLP (9,485 params; full H 720 MB) at batch 8: the peak
    traced memory of one 3,660 x 3,660 hidden block (107 MB) stays below the
    full matrix's bytes, and the guard refuses the full H at a limit the block passes."""
    net = mlp([30, 60, 60, 60, 5], "tanh", SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((8, 30)), rng.integers(0, 5, 8)
    P, p = net.n_params, 60 * 60 + 60
    full_bytes, block_bytes = 8 * P * P, 8 * p * p
    limit = 4 * block_bytes
    with pytest.raises(cv.DenseTooLarge, match="needs"):
        cv.hessian(net, X, Y, max_bytes=limit)
    tracemalloc.start()
    B = cv.hessian_block(net, X, Y, 1, max_bytes=limit)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert B.shape == (p, p)
    assert peak < 2 * block_bytes < full_bytes / 3, (peak, block_bytes, full_bytes)


def test_block_guard_refuses_with_the_memory_it_needs():
    net, X, Y = make(3, "tanh", "softmax_ce")        # block 1: 30 x 30 = 7,200 bytes
    with pytest.raises(cv.DenseTooLarge, match=r"Hessian block \(1, 1\) of 30 x 30.*7,200 bytes"):
        cv.hessian_block(net, X, Y, 1, max_bytes=7000)
    assert cv.hessian_block(net, X, Y, 1, max_bytes=7200).shape == (30, 30)


# -- block Newton through the block route ---------------------------------------------------

def slice_route_step(net, X, Y, C, lr, eps):
    """The old route: the dense matrix, each diagonal slice solved alone."""
    g = net.gradient(X, Y)
    d, _ = block_newton_direction(g, C, [s for _, s in net.slices()], eps)
    return lr * d


def taken(opt, X, Y):
    before = opt.net.get_flat().copy()
    opt.step(X, Y)
    return opt.net.get_flat() - before


DENSE = {"hessian": lambda net, X, Y: cv.hessian(net, X, Y, max_bytes=BIG),
         "gn": lambda net, X, Y: cv.gauss_newton(net, X, Y, max_bytes=BIG),
         "fisher": lambda net, X, Y: cv.fisher(net, X, max_bytes=BIG)}


@pytest.mark.parametrize("curvature", ["hessian", "gn", "fisher"])
def test_block_newton_runs_where_the_full_matrix_is_refused(curvature, monkeypatch):
    net, X, Y = make(3, "tanh", "softmax_ce")        # P = 73: full 2 x 42,632 bytes; largest block 30 x 30
    monkeypatch.setenv("TINYNET_DENSE_MAX_BYTES", str(2 * 8 * 30 * 30))
    with pytest.raises(ValueError, match="needs"):
        Newton(net, 1.0, curvature=curvature, structure="full")
    ref_net, _, _ = make(3, "tanh", "softmax_ce")
    eps = 0.5
    expect = slice_route_step(ref_net, X, Y, DENSE[curvature](ref_net, X, Y), 0.7, eps)
    dx = taken(Newton(net, 0.7, curvature=curvature, structure="block", eps=eps), X, Y)
    np.testing.assert_allclose(dx, expect, rtol=1e-10, atol=1e-13)


def test_gauss_newton_and_natural_gradient_block_routes(monkeypatch):
    net, X, Y = make(3, "sigmoid", "mse")
    monkeypatch.setenv("TINYNET_DENSE_MAX_BYTES", str(2 * 8 * 30 * 30))
    ref, _, _ = make(3, "sigmoid", "mse")
    G = DENSE["gn"](ref, X, Y)
    np.testing.assert_allclose(taken(GaussNewton(net, 0.5, structure="block", eps=0.1), X, Y),
                               slice_route_step(ref, X, Y, G, 0.5, 0.1), rtol=1e-10, atol=1e-13)
    net, _, _ = make(3, "sigmoid", "mse")
    lam, eps = 0.3, 0.02                              # natural: -lam (I + (lam/eps) F_ll)^{-1} g_l per block
    F = DENSE["fisher"](ref, X, Y)
    np.testing.assert_allclose(taken(NaturalGradient(net, lam, eps, structure="block"), X, Y),
                               slice_route_step(ref, X, Y, (lam / eps) * F, lam, 1.0), rtol=1e-10, atol=1e-13)


def test_a_block_above_the_guard_is_solved_by_cg_or_refused(monkeypatch):
    """Limit below block 1 (30 x 30) but above blocks 0 and 2: "cg" solves block 1
    with block-restricted gvp (CG's relative residual 1e-8: the same step to
    1e-6 of its largest entry), "refuse"
    names the block and the memory it needs."""
    net, X, Y = make(3, "tanh", "mse")
    monkeypatch.setenv("TINYNET_DENSE_MAX_BYTES", str(2 * 8 * 25 * 25))
    ref, _, _ = make(3, "tanh", "mse")
    expect = slice_route_step(ref, X, Y, DENSE["gn"](ref, X, Y), 1.0, 0.1)
    opt = GaussNewton(net, 1.0, structure="block", eps=0.1, large_blocks="cg", cg_iters=200)
    assert opt.plan == ([0, 2], [1])
    dx = taken(opt, X, Y)
    assert opt.metrics["cg_blocks"] == 1 and opt.metrics["cg_negative_curvature"] == 0
    assert np.abs(dx - expect).max() <= 1e-6 * np.abs(expect).max()
    np.testing.assert_allclose(dx[:16], expect[:16], rtol=1e-10, atol=1e-13)     # block 0: assembled
    with pytest.raises(ValueError, match=r"block 1 \(net.layers\[2\], 30 x 30.*14,400 bytes.*large-blocks cg"):
        GaussNewton(net, 1.0, structure="block")           # refuse is the default
    with pytest.raises(ValueError, match="no matrix-free product"):
        Newton(net, 1.0, curvature="fisher", fisher_kind="empirical", structure="block", large_blocks="cg")
