"""Conjugate gradient with its scalars on the device (tinynet.optim.cg_device,
kernels tinynet.kernels.cg) on the CUDA backend: the same iterates as on the
CPU backend, the same result whatever the stop flag's reading interval, and
what comes back to the host: one read at the start, one per check, one at
the end (the host-scalar CG copied back four dot products per iteration)."""
import numpy as np
import pytest

from test_train_cuda import _Transfers
from tinynet.backend import CPUBackend
from tinynet.cuda_backend import CUDABackend
from tinynet.optim.cg_device import conjugate_gradient_device

pytestmark = pytest.mark.cudasim
cpu, gpu = CPUBackend(), CUDABackend()


def _spd(p, seed):
    r = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(r.standard_normal((p, p)))
    return (Q * np.geomspace(1.0, 50.0, p)) @ Q.T


def _solve(bk, A, b, **kw):
    dA = bk.asarray(A)
    p = A.shape[0]

    def op(v):
        return bk.matmul(dA, v.reshape(p, 1)).reshape(p)

    res = conjugate_gradient_device(op, bk.asarray(b), bk, **kw)
    return res, bk.to_host(res.x), [(i, bk.to_host(x)) for i, x in res.iterates]


@pytest.mark.parametrize("case", ["progress", "negative-curvature"])
def test_cuda_equals_cpu_for_any_check_interval(case):
    if case == "progress":
        A, b = _spd(10, 0), np.random.default_rng(1).standard_normal(10)
        kw = dict(x0=0.1 * np.ones(10), max_iters=10, tol=0.0, progress_tol=0.1, min_window=2)
    else:
        A, b = np.diag([1.0, 2.0, -1.0, 3.0]), np.ones(4)
        kw = dict(max_iters=6)
    ref, x_ref, its_ref = _solve(cpu, A, b, keep_iterates=True, **kw)
    assert ref.stop == case.replace("-", "_") and ref.iters < kw["max_iters"]   # a stop before the cap
    for every in (1, 4):
        res, x, its = _solve(gpu, A, b, keep_iterates=True, check_every=every, **kw)
        assert (res.iters, res.stop) == (ref.iters, ref.stop)
        np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=1e-14)
        assert res.phi == pytest.approx(ref.phi, rel=1e-12)
        assert [i for i, _ in its] == [i for i, _ in its_ref]
        for (_, a), (_, c) in zip(its, its_ref):
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("every, reads", [(1, 1 + 4 + 1), (3, 1 + 2 + 1)])
def test_reads_back_one_flag_per_check(monkeypatch, every, reads):
    """5 products (the cap): the warm start's residual, then 4 iterations.
    Reads at the start ([b^T b, x0^T x0]), before iterations i = 0, every,
    2 every, ... < 4, and at the end (the scalar vector); nothing goes to the
    device."""
    A, b = _spd(6, 2), np.ones(6)
    dA, db = gpu.asarray(A), gpu.asarray(b)
    x0 = gpu.asarray(0.1 * np.ones(6))
    t = _Transfers(monkeypatch, type(db))
    res = conjugate_gradient_device(lambda v: gpu.matmul(dA, v.reshape(6, 1)).reshape(6), db, gpu,
                                    x0=x0, max_iters=5, tol=0.0, check_every=every)
    assert (res.iters, res.stop) == (5, "max_iters")
    assert (t.h2d, t.d2h) == (0, reads)
