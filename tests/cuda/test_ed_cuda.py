"""Seed 004's eigendecomposition kernels (tinynet.kernels.ed): each @cuda.jit twin
against its CPU @njit twin through the two backends (bk.launch), and the ZCA / PCA
stages on CUDABackend against CPUBackend for the three backward rules. Tiny
shapes (2 groups of 2 or 3 channels), float64 and float32.

Tolerances as tests/cuda/test_kernels_cuda.py: float64 1e-12 relative, float32
1e-5 (the twins share their bodies, so only FMA contraction may differ)."""
import numpy as np
import pytest

from tinynet.backend import CPUBackend
from tinynet.cuda_backend import CUDABackend
from tinynet.kernels import ed as K
from tinynet.layers import PCADenoising, ZCAWhitening

cpu = CPUBackend()
gpu = CUDABackend()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def run_both(name, count, *host_args):
    c_args = [a.copy() if isinstance(a, np.ndarray) else a for a in host_args]
    g_args = [gpu.asarray(a) if isinstance(a, np.ndarray) else a for a in host_args]
    cpu.launch(K, name, count, *c_args)
    gpu.launch(K, name, count, *g_args)
    return [(c, gpu.to_host(g)) for c, g in zip(c_args, g_args) if isinstance(c, np.ndarray)]


def check(pairs, dtype):
    for c, g in pairs:
        np.testing.assert_allclose(g, c, **tol(dtype))


def spd_batch(rng, G, d, dtype):
    A = rng.standard_normal((G, d, d))
    return (A @ np.swapaxes(A, 1, 2) + d * np.eye(d)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_data_kernels(dtype):
    rng = np.random.default_rng(0)
    n, C, P, G, d, r = 3, 4, 2, 2, 2, 2
    Z = rng.standard_normal((n, C * P)).astype(dtype)
    mu = rng.standard_normal(C).astype(dtype)
    Wm = rng.standard_normal((G, d, d)).astype(dtype)
    V, dV = rng.standard_normal((G, d, r)).astype(dtype), rng.standard_normal((G, d, r)).astype(dtype)
    f, fp, dl = (rng.standard_normal((G, r)).astype(dtype) for _ in range(3))
    nan = lambda *s: np.full(s, np.nan, dtype)   # noqa: E731
    check(run_both("channel_mean", C, Z, nan(C), P), dtype)
    check(run_both("group_outer", G * d * d, Z, mu, Z, mu, nan(G, d, d), dtype(0.5), dtype(0.1), P), dtype)
    check(run_both("group_sym", G * d * d, Wm, nan(G, d, d)), dtype)
    for acc in (False, True):
        check(run_both("group_apply", Z.size, Z, mu, Wm, mu, Z.copy() if acc else nan(n, C * P),
                       dtype(2), P, acc), dtype)
    check(run_both("assemble", G * d * d, V, f, nan(G, d, d)), dtype)
    check(run_both("weights_vjp", G * r, Wm, V, f, fp, nan(G, d, r), nan(G, r)), dtype)
    check(run_both("weights_jvp", G * d * d, V, dV, f, fp, dl, nan(G, d, d)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ed_kernels(dtype):
    rng = np.random.default_rng(1)
    G, d, r, Kit = 2, 3, 2, 3
    M = spd_batch(rng, G, d, dtype)
    lam, U = np.linalg.eigh(M.astype(np.float64))
    lam, U = lam[:, ::-1].astype(dtype).copy(), U[:, :, ::-1].astype(dtype).copy()
    gV, gl = rng.standard_normal((G, d, r)).astype(dtype), rng.standard_normal((G, r)).astype(dtype)
    dS = spd_batch(rng, G, d, dtype)
    work, vec = np.zeros((G, 2, d, d), dtype), np.zeros((G, 3, d), dtype)
    nan = lambda *s: np.full(s, np.nan, dtype)   # noqa: E731
    for Ks in (0, Kit):          # the analytic and the hybrid coefficients
        check(run_both("spectral_vjp", G, U, lam, gV, gl, nan(G, d, d), work, Ks), dtype)
        check(run_both("spectral_jvp", G, U, lam, dS, nan(G, d, r), nan(G, r), work, Ks), dtype)
    V0 = rng.standard_normal((G, r, d)).astype(dtype)
    pairs = run_both("pi_forward", G, M, V0, nan(G, r, Kit + 1, d), nan(G, d, r), nan(G, r), work,
                     np.full(G, 7, np.int32))
    check(pairs, dtype)
    iters, lam_pi = pairs[2][0], pairs[4][0]
    check(run_both("pi_vjp", G, M, iters, lam_pi, gV, gl, nan(G, d, d), Kit, work, vec), dtype)
    check(run_both("pi_jvp", G, M, iters, lam_pi, dS, nan(G, d, r), nan(G, r), Kit, work, vec), dtype)
    stat = np.ascontiguousarray(np.swapaxes(U[:, :, :r], 1, 2)[:, :, None, :])   # the hybrid's iterates
    check(run_both("pi_vjp", G, M, stat, lam[:, :r].copy(), gV, gl, nan(G, d, d), Kit, work, vec), dtype)


@pytest.mark.parametrize("rule", ["svd", "pi", "hybrid"])
@pytest.mark.parametrize("kind", ["zca", "pca"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_stage_on_cuda_matches_cpu(dtype, kind, rule):
    """Two training forwards (the running estimates), vjp, jvp, then evaluation."""
    rng = np.random.default_rng(2)
    n, C, G, shape = 3, 4, 2, (4, 1, 2)
    A = np.diag([3.0, 1.5, 2.0, 0.7]) + 0.3 * rng.standard_normal((4, 4))
    Z = [(rng.standard_normal((n * 2, C)) @ A.T).reshape(n, 2, C).transpose(0, 2, 1).reshape(n, -1).astype(dtype)
         for _ in range(3)]
    b, dz = rng.standard_normal(Z[0].shape).astype(dtype), rng.standard_normal(Z[0].shape).astype(dtype)
    res = []
    for bk in (cpu, gpu):
        st = ZCAWhitening(C, groups=G, backward=rule, pi_iters=3) if kind == "zca" else \
            PCADenoising(C, 1, groups=G, backward=rule, pi_iters=3)
        st.set_input_shape(shape)
        st.bind(bk, bk.zeros(0, dtype))
        st.forward(bk.asarray(Z[0]))
        out, ctx = st.forward(bk.asarray(Z[1]))
        got = [out, st.vjp(ctx, bk.asarray(b)), st.jvp(ctx, bk.asarray(dz), None)]
        st.training = False
        out_eval, _ = st.forward(bk.asarray(Z[2]))
        res.append([bk.to_host(a) for a in got + [out_eval]] + [st.running_mean, st.running_W])
    t = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    for c, g in zip(*res):
        np.testing.assert_allclose(g, c, **t)
