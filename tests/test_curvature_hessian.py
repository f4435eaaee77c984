"""Seed 001's Hessian: tinynet.curvature.matrices(...).H, hessian and hvp against
torch.func.hessian of the same network's batch-mean loss (tests/torch_ref.py, an
independent float64 mirror), plus the structure of M, N and H.

Cases: depths 1-4 (Linear layers), each activation, each loss (BCE behind a
sigmoid output), batch sizes 1 and 16. Relative error = max |A - A_ref| / max |A_ref|.
"""
import numpy as np
import pytest
import torch

from tinynet import curvature as cv
from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.models import mlp
from torch_ref import theta_of, torch_loss_fn

TOL = 1e-9
LOSSES = {"mse": MSELoss, "bce": BCELoss, "softmax_ce": SoftmaxCrossEntropyLoss}


def make_net(depth, act, loss, seed=0):
    k = 2 if loss == "bce" else 3
    sizes = [3] + [4] * (depth - 1) + [k]
    return mlp(sizes, act, LOSSES[loss](), out_activation="sigmoid" if loss == "bce" else None,
               dtype=np.float64, seed=seed, alpha=4.0)


def make_batch(net, loss, n, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, net.n_in))
    if loss == "softmax_ce":
        Y = rng.integers(0, net.n_out, n)
    elif loss == "bce":
        Y = rng.uniform(0, 1, (n, net.n_out))
    else:
        Y = rng.standard_normal((n, net.n_out))
    return X, Y


def torch_hessian(net, X, Y):
    return torch.func.hessian(torch_loss_fn(net, X, Y))(theta_of(net)).numpy()


def rel(A, B):
    return np.abs(A - B).max() / np.abs(B).max()


# depth 1 has no hidden activation: one activation id suffices there
CASES = [(d, a, l, n) for d in (1, 2, 3, 4) for a in (("tanh",) if d == 1 else ("sigmoid", "tanh", "relu"))
         for l in LOSSES for n in (1, 16)]
IDS = [f"depth{d}-{a}-{l}-n{n}" for d, a, l, n in CASES]


@pytest.mark.parametrize("depth,act,loss,n", CASES, ids=IDS)
def test_dense_hessian_and_hvp_match_autograd(depth, act, loss, n):
    net = make_net(depth, act, loss)
    X, Y = make_batch(net, loss, n)
    H_ref = torch_hessian(net, X, Y)
    H = cv.hessian(net, X, Y)
    assert rel(H, H_ref) <= TOL
    # hvp columns: unit vectors of the first and last parameter, and a random direction
    rng = np.random.default_rng(2)
    for j in (0, net.n_params - 1):
        e = np.zeros(net.n_params)
        e[j] = 1.0
        # relative to the whole H: a column can be 0 (a dead ReLU unit)
        assert np.abs(cv.hvp(net, X, Y, e) - H_ref[:, j]).max() <= TOL * np.abs(H_ref).max()
    v = rng.standard_normal(net.n_params)
    assert rel(cv.hvp(net, X, Y, v), H_ref @ v) <= TOL


SEED_CASES = [(d, a, l) for d in (1, 2, 3, 4) for a in (("tanh",) if d == 1 else ("sigmoid", "tanh", "relu"))
              for l in LOSSES]


@pytest.mark.parametrize("depth,act,loss", SEED_CASES, ids=[f"depth{d}-{a}-{l}" for d, a, l in SEED_CASES])
def test_seed_matrices_H_and_gradient(depth, act, loss):
    net = make_net(depth, act, loss)
    X, Y = make_batch(net, loss, 1)
    m = cv.matrices(net, X[0], Y[0])
    assert rel(m.H, torch_hessian(net, X, Y)) <= TOL
    assert rel(m.H, sum(m.terms)) <= 1e-14
    # D_x M^{-1} e_L is backprop's gradient, and the b_l solve M b = e_L
    assert rel(m.gradient, net.gradient(X, Y)) <= 1e-12
    b = np.concatenate(m.b)
    assert np.abs(m.M @ b - m.e_L).max() <= 1e-13 * np.abs(b).max()
    # the cross terms are each other's transpose (H symmetric)
    assert np.abs(m.terms[2] - m.terms[1].T).max() <= 1e-12 * np.abs(m.H).max()


def _blocks(A, rows, cols):
    ro = np.concatenate([[0], np.cumsum(rows)])
    co = np.concatenate([[0], np.cumsum(cols)])
    return {(i, j): A[ro[i]:ro[i + 1], co[j]:co[j + 1]] for i in range(len(rows)) for j in range(len(cols))}


@pytest.mark.parametrize("loss", list(LOSSES))
def test_structure_of_M_N_and_H(loss):
    net = make_net(3, "tanh", loss)
    X, Y = make_batch(net, loss, 1)
    m = cv.matrices(net, X[0], Y[0])
    L = len(m.p)
    rows, cols, _, _ = m.blocks("M")
    for (i, j), B in _blocks(m.M, rows, cols).items():
        if i == j:
            assert np.array_equal(B, np.eye(rows[i])), "M's diagonal blocks are identities"
        elif j != i + 1:
            assert not B.any(), f"M block ({i}, {j}) off the upper bidiagonal is nonzero"
    rows, cols, _, _ = m.blocks("N")
    for (i, j), B in _blocks(m.N, rows, cols).items():
        if i == j:
            assert np.array_equal(B, np.eye(rows[i]))
        elif j != i - 1:
            assert not B.any(), f"N block ({i}, {j}) off the lower bidiagonal is nonzero"
    # the superdiagonal of M holds -grad_z f_{l+1}: at least one is nonzero
    assert any(_blocks(m.M, rows, cols)[(i, i + 1)].any() for i in range(L - 1))
    H = cv.hessian(net, *make_batch(net, loss, 16))
    assert np.abs(H - H.T).max() <= 1e-12 * np.abs(H).max()
    assert np.abs(m.H - m.H.T).max() <= 1e-12 * np.abs(m.H).max()


def test_hvp_float32_close_to_float64():
    net64 = make_net(3, "sigmoid", "mse")
    net32 = mlp([3, 4, 4, 3], "sigmoid", MSELoss(), dtype=np.float32, seed=0, alpha=4.0)
    net32.set_flat(net64.get_flat())
    X, Y = make_batch(net64, "mse", 16)
    v = np.random.default_rng(3).standard_normal(net64.n_params)
    h64 = cv.hvp(net64, X, Y, v)
    h32 = cv.hvp(net32, X, Y, v.astype(np.float32))
    assert h32.dtype == np.float32
    assert rel(h32, h64) <= 1e-5


def test_hvp_and_matrices_check_their_inputs():
    net = make_net(2, "tanh", "mse")
    X, Y = make_batch(net, "mse", 4)
    with pytest.raises(ValueError, match="flat vector"):
        cv.hvp(net, X, Y, np.zeros(net.n_params + 1))
    with pytest.raises(ValueError, match="inputs must have shape"):
        cv.hvp(net, X[:, :2], Y, np.zeros(net.n_params))
    with pytest.raises(ValueError, match="one input"):
        cv.matrices(net, X[:2], Y[:2])


@pytest.mark.parametrize("what", ["hessian", "gauss_newton", "hvp"])
def test_batch_statistics_stage_is_refused_clearly(what):
    import tinynet as tn
    net = tn.Sequential([tn.Linear(3, 4), tn.BatchNorm(4), tn.Tanh(), tn.Linear(4, 2)], tn.MSELoss(),
                        dtype=np.float64)
    X, Y = np.ones((4, 3)) * np.arange(4)[:, None], np.zeros((4, 2))
    args = (net, X, Y) + ((np.ones(net.n_params),) if what == "hvp" else ())
    with pytest.raises(NotImplementedError, match=r"stage 1 \(BatchNorm\(4\)\).*mixes the examples"):
        getattr(cv, what)(*args)
