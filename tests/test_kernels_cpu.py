"""CPU kernels against numpy written from the definitions, including the
float32 fast-exp sigmoid's accuracy bound."""
import numpy as np
import pytest

from tinynet.backend import get_backend
from tinynet.kernels import activations as act

rng = np.random.default_rng(11)
bk = get_backend("cpu")


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_transposes(ta, tb, dtype):
    A = rng.standard_normal((7, 5) if not ta else (5, 7)).astype(dtype)
    B = rng.standard_normal((5, 3) if not tb else (3, 5)).astype(dtype)
    ref = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    got = bk.matmul(A, B, ta=ta, tb=tb)
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == np.float32 else 1e-13)
    with pytest.raises(ValueError, match="inner sizes differ"):
        bk.matmul(A, B[:-1] if not tb else B[:, :-1], ta=ta, tb=tb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_acc_accumulates_in_place(ta, tb, dtype):
    """out += alpha op(A) op(B) in the very array given (a view of a flat vector,
    as KFAC passes its slice of theta)."""
    A = rng.standard_normal((5, 7) if ta else (7, 5)).astype(dtype)
    B = rng.standard_normal((4, 5) if tb else (5, 4)).astype(dtype)
    flat = rng.standard_normal(30).astype(dtype)
    out = flat[1:29].reshape(7, 4)
    ref = out.astype(np.float64) - 0.7 * ((A.T if ta else A).astype(np.float64) @ (B.T if tb else B))
    got = bk.matmul_acc(A, B, out, -0.7, ta=ta, tb=tb)
    assert got is out and np.shares_memory(flat, out)
    np.testing.assert_allclose(flat[1:29].reshape(7, 4), ref, rtol=1e-5 if dtype == np.float32 else 1e-13)
    with pytest.raises(ValueError, match="C-contiguous"):
        bk.matmul_acc(A, B, np.zeros((4, 7), dtype).T, 1.0, ta=ta, tb=tb)
    with pytest.raises(ValueError, match="out has shape"):
        bk.matmul_acc(A, B, np.zeros((7, 3), dtype), 1.0, ta=ta, tb=tb)


def test_bias_colsum_axpy():
    A = rng.standard_normal((4, 3))
    b = rng.standard_normal(3)
    np.testing.assert_allclose(bk.add_bias(A.copy(), b), A + b)
    np.testing.assert_allclose(bk.col_sum(A), A.sum(0))
    np.testing.assert_array_equal(bk.append_ones(A), np.hstack([A, np.ones((4, 1))]))
    x, y = rng.standard_normal(9), rng.standard_normal(9)
    np.testing.assert_allclose(bk.axpy(0.3, x, y.copy()), y + 0.3 * x)
    assert bk.dot(x, y) == pytest.approx(x @ y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col_sum_axpy_has_the_bits_of_col_sum_then_axpy(dtype):
    A = rng.standard_normal((37, 11)).astype(dtype)
    y0 = rng.standard_normal(11).astype(dtype)
    out, y = np.full(11, np.nan, dtype), y0.copy()
    bk.col_sum_axpy(-0.37, A, out, y)
    s = bk.col_sum(A)
    np.testing.assert_array_equal(out, s)
    np.testing.assert_array_equal(y, bk.axpy(-0.37, s, y0.copy()))
    np.testing.assert_allclose(y, y0 - 0.37 * A.astype(np.float64).sum(0), rtol=1e-5 if dtype == np.float32 else 1e-13)


DEFS = {
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda s: s * (1 - s), lambda s: s * (1 - s) * (1 - 2 * s)),
    "tanh": (np.tanh, lambda t: 1 - t * t, lambda t: -2 * t * (1 - t * t)),
    "relu": (lambda z: np.maximum(z, 0), lambda r: (r > 0) * 1.0, lambda r: 0 * r),
}


@pytest.mark.parametrize("kind", list(DEFS))
def test_activation_kernels_float64(kind):
    f, d1, d2 = DEFS[kind]
    Z = 4 * rng.standard_normal((5, 7))
    S = bk.act_fwd(kind, Z)
    np.testing.assert_allclose(S, f(Z), rtol=1e-14, atol=1e-300)
    # derivatives are written from the forward output S (as the stages use them)
    G = rng.standard_normal(Z.shape)
    np.testing.assert_allclose(bk.act_mul_d1(kind, S, G), G * d1(S), rtol=1e-13)
    np.testing.assert_allclose(bk.act_d2(kind, S), d2(S), rtol=1e-12, atol=1e-300)


def test_sigmoid_float32_fast_exp_accuracy():
    Z = np.concatenate([np.linspace(-80, 80, 20001), [-1e-30, 0.0, 1e-30]]).astype(np.float32)[None, :]
    ref = 1 / (1 + np.exp(-Z.astype(np.float64)))
    got = np.empty_like(Z)
    act.sigmoid_fwd_f32_cpu(Z, got)
    assert np.max(np.abs(got - ref) / ref) <= 4e-7
    Zx = np.array([[-1e4, -200, -90, 90, 200, 1e4, np.inf, -np.inf]], dtype=np.float32)
    gx = np.empty_like(Zx)
    act.sigmoid_fwd_f32_cpu(Zx, gx)
    np.testing.assert_allclose(gx, 1 / (1 + np.exp(-Zx.astype(np.float64))), atol=1e-38, rtol=0)
