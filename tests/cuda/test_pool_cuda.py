"""The pooling kernels (tinynet.kernels.pool) under the CUDA simulator equal
their CPU twins through the two backends, and MaxPool2d / AvgPool2d bound to
the CUDA backend give the CPU's forward, vjp and jvp. Tiny shapes (stride equal
to and smaller than the kernel: overlapping windows exercise the gather), float32
and float64. Outputs are pre-filled with NaN so an unwritten entry shows."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backend import CPUBackend
from tinynet.cuda_backend import CUDABackend
from tinynet.kernels import pool as K

cpu, gpu = CPUBackend(), CUDABackend()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
# (C, H, W, kh, kw, sh, sw)
GEOMS = [pytest.param((2, 4, 4, 2, 2, 2, 2), id="2x2-s2"),
         pytest.param((1, 5, 4, 3, 2, 1, 2), id="3x2-s1x2-overlap"),
         pytest.param((3, 3, 5, 1, 3, 1, 1), id="1x3-s1")]


def _geom(g):
    C, H, W, kh, kw, sh, sw = g
    return C, H, W, kh, kw, sh, sw, (H - kh) // sh + 1, (W - kw) // sw + 1


def _both(name, count, host_args, out_idx):
    """Run kernel `name` on both backends; host_args' entries at out_idx are outputs."""
    dev = [gpu.asarray(a) if isinstance(a, np.ndarray) else a for a in host_args]
    cpu.launch(K, name, count, *host_args)
    gpu.launch(K, name, count, *dev)
    return [(host_args[i], gpu.to_host(dev[i])) for i in out_idx]


@pytest.mark.parametrize("g", GEOMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_kernels_equal_cpu(g, dtype):
    geo = _geom(g)
    C, H, W, kh, kw, sh, sw, Ho, Wo = geo
    n, D, Q = 2, C * H * W, C * Ho * Wo
    r = np.random.default_rng(7)
    X = r.permutation(n * D).reshape(n, D).astype(dtype) / (n * D)     # distinct values: no ties
    B = r.standard_normal((n, Q)).astype(dtype)
    nan = lambda s: np.full(s, np.nan, dtype)                           # noqa: E731
    (Yc, Yg), (Ac, Ag) = _both("maxpool_fwd", n * Q, [X, nan((n, Q)), np.full((n, Q), -1, np.int64), *geo], [1, 2])
    np.testing.assert_array_equal(Yg, Yc)
    np.testing.assert_array_equal(Ag, Ac)
    [(dc, dg)] = _both("maxpool_bwd", n * D, [B, Ac, nan((n, D)), *geo], [2])
    np.testing.assert_allclose(dg, dc, rtol=1e-6 if dtype == np.float32 else 1e-14)
    [(jc, jg)] = _both("maxpool_jvp", n * Q, [X, Ac, nan((n, Q))], [2])
    np.testing.assert_array_equal(jg, jc)
    [(ac, ag)] = _both("avgpool_fwd", n * Q, [X, nan((n, Q)), *geo], [1])
    np.testing.assert_allclose(ag, ac, rtol=1e-6 if dtype == np.float32 else 1e-14)
    [(bc, bg)] = _both("avgpool_bwd", n * D, [B, nan((n, D)), *geo], [1])
    np.testing.assert_allclose(bg, bc, rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert not np.isnan(dg).any() and not np.isnan(bg).any()


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_stage_on_cuda_equals_cpu(kind):
    r = np.random.default_rng(3)
    out = {}
    for bk in (cpu, gpu):
        s = (tn.MaxPool2d((2, 3), stride=(1, 2)) if kind == "max" else tn.AvgPool2d((2, 3), stride=(1, 2)))
        s.set_input_shape((2, 4, 5))
        s.bind(bk, None)
        rr = np.random.default_rng(3)
        X = rr.permutation(2 * 40).reshape(2, 40) / 80.0
        B = rr.standard_normal((2, 2 * 3 * 2))
        dZ = rr.standard_normal((2, 40))
        y, ctx = s.forward(bk.asarray(X))
        out[bk.name] = [bk.to_host(y), bk.to_host(s.vjp(ctx, bk.asarray(B))),
                        bk.to_host(s.jvp(ctx, bk.asarray(dZ), None))]
    for c, g in zip(out["cpu"], out["cuda"]):
        np.testing.assert_allclose(g, c, rtol=1e-14)
